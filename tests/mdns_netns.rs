//! mDNS discovery across network namespaces: hosts on a bridge, one node process each.
//!
//! Needs root (to make namespaces) and `ip`; otherwise every test says it was skipped and
//! passes, except where `CI` is set, where it fails. mDNS runs only inside the namespaces these
//! tests make (see `support/netns.rs`).
//!
//! The node processes are this test binary, re-run as the `#[ignore]`d `netns_node` test with
//! `MESHBUS_NETNS_NODE` set. They print `@mb ...` lines and read commands on stdin:
//!
//! | mode (`MB_MODE`) | prints | reads |
//! |---|---|---|
//! | `mdns`: only the discovery source | `ready <id>`, `found <name> <id> <net> <addrs,>`, `lost <id>`, `bye` | `quit` |
//! | `bus`: a node over TCP with mDNS | `ready <id>`, `peers <n> <names,>` on every change, `handling hang`, `event <from> <text>`, `reply <tag> ok <value>` / `reply <tag> err <kind>`, `handshake <tag> ok` / `handshake <tag> err <kind>`, `waited`, `published`, `bye` | `send <tag> <scope> probe\|hang`, `publish <scope> <text>`, `wait probe\|note\|peers <scope> <n>`, `handshake <tag> <network> <ip:port>`, `quit` |
//!
//! A `bus` node handles `probe` (answers its name) and `hang` (never answers) when `MB_HANDLES`
//! names them, and every node subscribes to `note` events. `handshake` runs the secure
//! handshake by hand, from the node's namespace, as a new node of `<network>` (its name and
//! key), and tells whether the node at `<ip:port>` completed it. Its environment: `MB_NAME`,
//! `MB_NETWORK`, `MB_CLUSTER`, `MB_HOST_ID` (the lab's per namespace), `MB_LISTEN` (default
//! `tcp://0.0.0.0:0`), `MB_PEERS` (static seeds, comma-separated).

// A binary of its own, not in a suite: its node processes are this binary re-run inside network
// namespaces, and mDNS must not see the suites' nodes.

#![cfg(feature = "mdns")]

#[path = "support/mod.rs"]
mod support;

use support::netns;

use std::time::{Duration, Instant};

use netns::{Lab, Spec};

const ENTRY: &str = "netns_node";

/// Long enough for a slow CI machine; a typical step takes well under a second.
const STEP: Duration = Duration::from_secs(20);

fn mdns_node(network: &str) -> Spec {
    Spec::new(ENTRY)
        .env("MB_MODE", "mdns")
        .env("MB_NETWORK", network)
}

/// The discovery source alone, in five hosts: three of network `a`, two of `b`. Each finds the
/// others of its network, dialable on their namespace's address (the wildcard they listen on
/// rewritten), and none of the other network; a node that stops says goodbye and the others
/// report it lost.
#[test]
fn mdns_finds_the_nodes_of_its_network_and_hears_their_goodbye() {
    if !netns::can_run("mdns_finds_the_nodes_of_its_network_and_hears_their_goodbye") {
        return;
    }
    let mut lab = Lab::new("fd", 5);
    let started = Instant::now();
    let names = ["a1", "a2", "a3", "b1", "b2"];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let k = lab.spawn(i, name, mdns_node(&name[..1]));
        ids.push(lab.node(k).expect_prefix("ready ", STEP));
    }
    // Each node finds the others of its network.
    for (k, name) in names.iter().enumerate() {
        let mut want: Vec<&str> = names
            .iter()
            .filter(|n| n[..1] == name[..1] && *n != name)
            .copied()
            .collect();
        while !want.is_empty() {
            let found = lab.node(k).expect_prefix("found ", STEP);
            let f: Vec<&str> = found.split(' ').collect();
            assert_eq!(
                f[2],
                &name[..1],
                "{name} found a node of another network: {found}"
            );
            let j = names.iter().position(|n| *n == f[0]).unwrap();
            assert_eq!(f[1], ids[j]);
            let addr = format!("tcp://{}:7000", lab.ip(j));
            assert!(f[3].split(',').any(|a| a == addr), "{found}: no {addr}");
            want.retain(|n| *n != f[0]);
        }
    }
    eprintln!(
        "mDNS: every node found its network's others in {:?}",
        started.elapsed()
    );

    // a3 stops: its goodbye makes a1 and a2 drop it, with no timeout to wait for.
    let a3 = 2;
    lab.node(a3).send("quit");
    lab.node(a3).expect_prefix("bye", STEP);
    let goodbye = Instant::now();
    for k in [0, 1] {
        let lost = lab.node(k).expect_prefix("lost ", STEP);
        assert_eq!(lost, ids[a3]);
    }
    eprintln!("mDNS goodbye heard in {:?}", goodbye.elapsed());
    assert!(lab.node(a3).wait_exit(STEP), "a3 did not exit");
}

#[cfg(feature = "tcp")]
fn bus_node(network: &str, cluster: &str, handles: &str) -> Spec {
    Spec::new(ENTRY)
        .env("MB_MODE", "bus")
        .env("MB_NETWORK", network)
        .env("MB_CLUSTER", cluster)
        .env("MB_HANDLES", handles)
}

/// Reads `peers` lines of node `k` until it has exactly `names` as peers (in any order).
#[cfg(feature = "tcp")]
fn until_peers(lab: &mut Lab, k: usize, names: &[&str]) {
    let mut want: Vec<&str> = names.to_vec();
    want.sort_unstable();
    let want = format!("{} {}", want.len(), want.join(","));
    let want = want.trim_end().to_owned();
    // The view is a state: if its latest line, read while waiting for another line (a reply
    // and a view change race each other in the node), already says so, it is so.
    if lab
        .node(k)
        .last_with_prefix("peers ")
        .is_some_and(|rest| rest.trim_end() == want)
    {
        return;
    }
    lab.node(k).expect(&format!("peers {want}"), STEP, |l| {
        l.strip_prefix("peers ")
            .is_some_and(|rest| rest.trim_end() == want)
    });
}

/// Sends `line` to node `k` and returns what follows `prefix` in its answer.
#[cfg(feature = "tcp")]
fn ask(lab: &mut Lab, k: usize, line: &str, prefix: &str) -> String {
    lab.node(k).send(line);
    lab.node(k).expect_prefix(prefix, STEP)
}

/// Sends command `cmd` from node `k` in `scope`; the reply as `ok <value>` or `err <kind>`.
#[cfg(feature = "tcp")]
fn command(lab: &mut Lab, k: usize, tag: &str, scope: &str, cmd: &str) -> String {
    ask(
        lab,
        k,
        &format!("send {tag} {scope} {cmd}"),
        &format!("reply {tag} "),
    )
}

/// Three namespaces, one node each, no seeds: mDNS finds the nodes, they form a full mesh over
/// TCP, and a command and an event cross namespaces. Each namespace has its own host id, so a
/// `Machine` command finds no handler in the others, while `Cluster` and `Network` cross; a
/// second node in the first namespace shares its host id and does answer `Machine`.
#[cfg(feature = "tcp")]
#[test]
fn mdns_three_namespaces_form_a_mesh_and_serve_across_it() {
    if !netns::can_run("mdns_three_namespaces_form_a_mesh_and_serve_across_it") {
        return;
    }
    let mut lab = Lab::new("mesh", 3);
    let started = Instant::now();
    let names = ["n1", "n2", "n3"];
    for (i, name) in names.iter().enumerate() {
        let handles = if i == 0 { "" } else { "probe" };
        let k = lab.spawn(i, name, bus_node("default", "shop", handles));
        lab.node(k).expect_prefix("ready ", STEP);
    }
    for (k, name) in names.iter().enumerate() {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        until_peers(&mut lab, k, &others);
    }
    let took = started.elapsed();
    eprintln!("mDNS + TCP: full mesh of 3 namespaces in {took:?}");
    assert!(took < Duration::from_secs(20), "the mesh took {took:?}");

    // A command and an event cross namespaces over TCP.
    ask(&mut lab, 0, "wait probe cluster 2", "waited");
    let reply = command(&mut lab, 0, "c1", "cluster", "probe");
    assert!(reply == "ok n2" || reply == "ok n3", "{reply}");
    ask(&mut lab, 0, "wait note cluster 3", "waited");
    ask(&mut lab, 0, "publish cluster hello", "published");
    for k in [1, 2] {
        lab.node(k)
            .expect("the event", STEP, |l| l == "event n1 hello");
    }

    // Host ids: no node of another namespace answers `Machine`; `Cluster` and `Network` cross.
    assert_eq!(
        command(&mut lab, 0, "m1", "machine", "probe"),
        "err NoHandler"
    );
    assert!(command(&mut lab, 0, "k1", "cluster", "probe").starts_with("ok n"));
    assert!(command(&mut lab, 0, "w1", "network", "probe").starts_with("ok n"));
    // A second node in n1's namespace has n1's host id: it answers `Machine`.
    let n1b = lab.spawn(0, "n1b", bus_node("default", "shop", "probe"));
    lab.node(n1b).expect_prefix("ready ", STEP);
    ask(&mut lab, 0, "wait probe machine 1", "waited");
    assert_eq!(command(&mut lab, 0, "m2", "machine", "probe"), "ok n1b");
    let reply = command(&mut lab, 1, "m3", "machine", "probe");
    assert_eq!(
        reply, "ok n2",
        "n2 answers its own machine's command itself"
    );
}

/// A node's process is killed: the request in flight to it fails with `PeerLost`, the others
/// drop it, and later requests get `NoHandler` at once. A node whose host is unplugged falls
/// silent instead: its peers declare it dead after the (short) peer timeout, with the same
/// outcome. A node that stops gracefully is dropped at once, through its goodbye.
#[cfg(feature = "tcp")]
#[test]
fn mdns_a_killed_node_is_dropped_and_its_requests_fail() {
    if !netns::can_run("mdns_a_killed_node_is_dropped_and_its_requests_fail") {
        return;
    }
    let mut lab = Lab::new("kill", 4);
    let names = ["k1", "k2", "k3", "k4"];
    for (i, name) in names.iter().enumerate() {
        let handles = if i >= 2 { "probe,hang" } else { "" };
        let k = lab.spawn(i, name, bus_node("default", "shop", handles));
        lab.node(k).expect_prefix("ready ", STEP);
    }
    for (k, name) in names.iter().enumerate() {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        until_peers(&mut lab, k, &others);
    }
    ask(&mut lab, 0, "wait probe cluster 2", "waited");
    // Round robin: two hangs, one on each of k3 and k4.
    lab.node(0).send("send h1 cluster hang");
    lab.node(0).send("send h2 cluster hang");
    lab.node(2)
        .expect("the hanging handler", STEP, |l| l == "handling hang");
    lab.node(3)
        .expect("the hanging handler", STEP, |l| l == "handling hang");

    // Killed: the kernel closes its connections, so its peers see it go at once.
    lab.node(2).kill();
    let killed = Instant::now();
    let reply = lab.node(0).expect_prefix("reply h", STEP);
    assert_eq!(reply[1..].trim(), "err PeerLost", "{reply}");
    let lost_after = killed.elapsed();
    until_peers(&mut lab, 0, &["k2", "k4"]);
    until_peers(&mut lab, 1, &["k1", "k4"]);
    let dropped_after = killed.elapsed();
    eprintln!("killed: PeerLost after {lost_after:?}, dropped by both after {dropped_after:?}");
    // Unplugged: nothing closes, the heartbeats stop; the peer timeout (1 s) decides.
    lab.unplug(3);
    let unplugged = Instant::now();
    let reply = lab.node(0).expect_prefix("reply h", STEP);
    assert_eq!(reply[1..].trim(), "err PeerLost", "{reply}");
    let lost_after = unplugged.elapsed();
    until_peers(&mut lab, 0, &["k2"]);
    until_peers(&mut lab, 1, &["k1"]);
    let dropped_after = unplugged.elapsed();
    eprintln!("unplugged: PeerLost after {lost_after:?}, dropped by both after {dropped_after:?}");
    assert!(
        lost_after >= Duration::from_millis(500),
        "dead before the timeout"
    );
    // Allow for a loaded machine, never for a hang.
    assert!(dropped_after < Duration::from_secs(10), "{dropped_after:?}");
    assert_eq!(
        command(&mut lab, 0, "p1", "cluster", "probe"),
        "err NoHandler"
    );
    assert_eq!(
        command(&mut lab, 1, "p2", "network", "probe"),
        "err NoHandler"
    );

    // A graceful stop: k2's goodbye makes k1 drop it without waiting for the timeout.
    lab.node(1).send("quit");
    let quit = Instant::now();
    until_peers(&mut lab, 0, &[]);
    eprintln!("goodbye: k1 dropped k2 after {:?}", quit.elapsed());
    lab.node(1).expect_prefix("bye", STEP);
    assert!(lab.node(1).wait_exit(STEP), "k2 did not exit");
}

/// Five namespaces: network `a` with clusters `x` (a1, a2) and `y` (a3), network `b` (b1, b2).
/// Each network meshes on its own, whatever the other's adverts; the node of cluster `y` is a
/// peer of `x`'s nodes and gets only their `Network` traffic. b1 has a static seed beside mDNS.
/// The networks have keys of their own: a node of `b` that dials one of `a` is refused in the
/// secure handshake (`Unauthorized`), where one of `a` from the same host gets in.
#[cfg(feature = "tcp")]
#[test]
fn mdns_networks_stay_apart_and_clusters_share_only_network_scope() {
    if !netns::can_run("mdns_networks_stay_apart_and_clusters_share_only_network_scope") {
        return;
    }
    let mut lab = Lab::new("nets", 5);
    // (name, network, cluster, handles)
    let nodes = [
        ("a1", "a", "x", ""),
        ("a2", "a", "x", "probe"),
        ("a3", "a", "y", "probe"),
        ("b1", "b", "x", ""),
        ("b2", "b", "x", "probe"),
    ];
    for (i, (name, net, cluster, handles)) in nodes.iter().enumerate() {
        let mut spec = bus_node(net, cluster, handles);
        // b1 also has b2 as a static seed: the seed and mDNS lead to the same single link.
        if *name == "b2" {
            spec = spec.env("MB_LISTEN", "tcp://0.0.0.0:7700");
        }
        // a1 on a known port, for the handshakes across networks below.
        if *name == "a1" {
            spec = spec.env("MB_LISTEN", "tcp://0.0.0.0:7701");
        }
        if *name == "b1" {
            spec = spec.env("MB_PEERS", format!("tcp://{}:7700", lab.ip(4)));
        }
        let k = lab.spawn(i, name, spec);
        lab.node(k).expect_prefix("ready ", STEP);
    }
    for (k, (name, net, ..)) in nodes.iter().enumerate() {
        let others: Vec<&str> = nodes
            .iter()
            .filter(|(n, m, ..)| m == net && n != name)
            .map(|(n, ..)| *n)
            .collect();
        until_peers(&mut lab, k, &others);
    }
    // Cluster: only a2 of a1's cluster answers; Network: a3 too, and never a node of `b`.
    ask(&mut lab, 0, "wait probe network 2", "waited");
    for i in 0..4 {
        let c = command(&mut lab, 0, &format!("c{i}"), "cluster", "probe");
        assert_eq!(c, "ok a2");
    }
    // (Sent one after another, not interleaved with the cluster ones: the turn of the round
    // robin is shared by the scopes, so alternating scopes would skew it.)
    let mut network = Vec::new();
    for i in 0..4 {
        network.push(command(&mut lab, 0, &format!("n{i}"), "network", "probe"));
    }
    network.sort_unstable();
    network.dedup();
    assert_eq!(
        network,
        ["ok a2", "ok a3"],
        "round robin over both clusters"
    );
    for i in 0..3 {
        let reply = command(&mut lab, 3, &format!("b{i}"), "network", "probe");
        assert_eq!(reply, "ok b2");
    }
    // Events: a3 gets the network-scoped one and not the cluster-scoped one published before
    // it (events from one publisher arrive in order, so it would have come first).
    ask(&mut lab, 0, "wait note network 3", "waited");
    ask(&mut lab, 0, "publish cluster only-x", "published");
    ask(&mut lab, 0, "publish network everyone", "published");
    lab.node(1)
        .expect("the cluster event", STEP, |l| l == "event a1 only-x");
    lab.node(1)
        .expect("the network event", STEP, |l| l == "event a1 everyone");
    let first = lab.node(2).expect_prefix("event ", STEP);
    assert_eq!(first, "a1 everyone");

    // Across networks, the secure handshake refuses: from b1's host, a node of `b` is refused
    // by a1; one of `a`, from a2's host, gets in (so a1 is reachable and answers handshakes).
    let a1 = format!("{}:7701", lab.ip(0));
    let refused = ask(
        &mut lab,
        3,
        &format!("handshake x1 b {a1}"),
        "handshake x1 ",
    );
    assert_eq!(refused, "err Unauthorized", "a node of b dialling a1");
    let admitted = ask(
        &mut lab,
        1,
        &format!("handshake x2 a {a1}"),
        "handshake x2 ",
    );
    assert_eq!(admitted, "ok", "a node of a dialling a1");
    // Neither network took in a node of the other meanwhile.
    for (k, (name, net, ..)) in nodes.iter().enumerate() {
        let others: Vec<&str> = nodes
            .iter()
            .filter(|(n, m, ..)| m == net && n != name)
            .map(|(n, ..)| *n)
            .collect();
        until_peers(&mut lab, k, &others);
    }
}

/// Runs a node when the lab starts this binary with `MESHBUS_NETNS_NODE` set; otherwise
/// (an ordinary `--ignored` run) does nothing.
#[test]
#[ignore = "a node process of the namespace tests, started by them"]
fn netns_node() {
    if std::env::var_os(netns::NODE_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mode = std::env::var("MB_MODE").unwrap_or_default();
    rt.block_on(async {
        match mode.as_str() {
            "mdns" => node::mdns_only().await,
            #[cfg(feature = "tcp")]
            "bus" => node::bus().await,
            other => panic!("unknown MB_MODE `{other}`"),
        }
    });
}

mod node {
    //! The node side of the line protocol.

    use std::hash::{BuildHasher, Hasher};

    use meshbus::discovery::{Discovery, DiscoveryEvent};
    use meshbus::mdns::Mdns;
    use meshbus::NodeId;
    use meshbus_core::wire::control::PeerIdentity;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn network_key(network: &str) -> meshbus::trust::NetworkKey {
        let mut key = [0; 32];
        for (k, b) in key.iter_mut().zip(network.bytes()) {
            *k = b;
        }
        meshbus::trust::NetworkKey::from_bytes(key)
    }

    fn env(key: &str, default: &str) -> String {
        std::env::var(key).unwrap_or_else(|_| default.to_owned())
    }

    /// Prints one protocol line.
    fn say(line: &str) {
        println!("{}{line}", super::netns::LINE);
    }

    fn random_u64() -> u64 {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    /// Only the discovery source: advertises a made-up node listening on `0.0.0.0:7000` and
    /// prints what it finds and loses, until `quit` (or the end of stdin).
    pub(super) async fn mdns_only() {
        let node_id = (u128::from(random_u64()) << 64) | u128::from(random_u64());
        let local = PeerIdentity {
            node_id,
            incarnation: 1,
            name: env("MB_NAME", "node"),
            network: env("MB_NETWORK", "default"),
            cluster: env("MB_CLUSTER", "default"),
            host_id: env("MB_HOST_ID", "host"),
            addresses: vec!["tcp://0.0.0.0:7000".to_owned()],
            public_key: None,
        };
        let mut mdns = Mdns::new();
        mdns.advertise(&local).await.expect("advertise");
        say(&format!("ready {}", NodeId::from_u128(node_id)));
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                event = mdns.next() => match event {
                    Some(DiscoveryEvent::Found(p)) => say(&format!(
                        "found {} {} {} {}",
                        p.name,
                        NodeId::from_u128(p.node_id),
                        p.network,
                        p.addresses.join(","),
                    )),
                    Some(DiscoveryEvent::Lost(id)) => say(&format!("lost {id}")),
                    Some(other) => say(&format!("other {other:?}")),
                    None => break,
                },
                line = stdin.next_line() => match line {
                    Ok(Some(l)) if l.trim() == "quit" => break,
                    Ok(Some(_)) => {}
                    _ => break,
                },
            }
        }
        mdns.shutdown().await;
        say("bye");
    }
    /// A probe: answered with the name of the node that handled it.
    #[cfg(feature = "tcp")]
    #[derive(serde::Serialize, serde::Deserialize, meshbus::Command)]
    #[meshbus(name = "netns.probe", reply = String)]
    struct Probe;

    /// Never answered.
    #[cfg(feature = "tcp")]
    #[derive(serde::Serialize, serde::Deserialize, meshbus::Command)]
    #[meshbus(name = "netns.hang")]
    struct Hang;

    #[cfg(feature = "tcp")]
    #[derive(serde::Serialize, serde::Deserialize, meshbus::Event)]
    #[meshbus(name = "netns.note")]
    struct Note {
        from: String,
        text: String,
    }

    #[cfg(feature = "tcp")]
    fn scope(s: &str) -> Option<meshbus::Scope> {
        use meshbus::Scope;
        Some(match s {
            "local" => Scope::Local,
            "machine" => Scope::Machine,
            "cluster" => Scope::Cluster,
            "network" => Scope::Network,
            _ => return None,
        })
    }

    /// A node over TCP, found by mDNS, listening on every interface of its namespace.
    #[cfg(feature = "tcp")]
    pub(super) async fn bus() {
        use std::sync::Arc;
        use std::time::Duration;

        use meshbus::prelude::*;
        use meshbus::tcp::TcpTransport;

        use crate::support::secure::SecureStream;

        let name = env("MB_NAME", "node");
        let handles = env("MB_HANDLES", "");
        let seeds = env("MB_PEERS", "");
        let mut builder = Bus::builder()
            .name(name.clone())
            .network(env("MB_NETWORK", "default"))
            .cluster(env("MB_CLUSTER", "default"))
            .host_id(env("MB_HOST_ID", "host"))
            .heartbeat_interval(Duration::from_millis(200))
            .peer_timeout(Duration::from_secs(1))
            .request_timeout(Some(Duration::from_secs(15)))
            .shutdown_timeout(Duration::from_secs(2))
            .transport(TcpTransport::new())
            // A key per network (its name, padded): these hosts are beyond loopback.
            .network_key(network_key(&env("MB_NETWORK", "default")))
            .listen(env("MB_LISTEN", "tcp://0.0.0.0:0"))
            .discovery(Mdns::new())
            .peers(seeds.split(',').filter(|s| !s.is_empty()))
            .event_handler(|e: Arc<Note>, _ctx: Context| async move {
                say(&format!("event {} {}", e.from, e.text));
                HandlerResult::Ok(())
            });
        if handles.split(',').any(|h| h == "probe") {
            builder = builder.command_handler(|_: Probe, ctx: Context| async move {
                HandlerResult::Ok(ctx.bus().name().to_owned())
            });
        }
        if handles.split(',').any(|h| h == "hang") {
            builder = builder.command_handler(|_: Hang, _ctx| async move {
                say("handling hang");
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            });
        }
        let bus = builder.start().await.expect("the bus starts");
        say(&format!("ready {}", bus.node_id()));

        let mut tasks = tokio::task::JoinSet::new();
        let mut view = bus.membership();
        tasks.spawn(async move {
            loop {
                let mut names: Vec<String> = view
                    .borrow_and_update()
                    .peers
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                names.sort_unstable();
                say(&format!("peers {} {}", names.len(), names.join(",")));
                if view.changed().await.is_err() {
                    return;
                }
            }
        });
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["send", tag, s, cmd] => {
                    let (tag, bus, cmd) = ((*tag).to_owned(), bus.clone(), (*cmd).to_owned());
                    let Some(s) = scope(words[2]) else {
                        say(&format!("reply {tag} err bad-scope {s}"));
                        continue;
                    };
                    tasks.spawn(async move {
                        let sent = bus.commands().scope(s);
                        let r = match cmd.as_str() {
                            "probe" => sent.send(Probe).await,
                            _ => sent.send(Hang).await.map(|()| "()".to_owned()),
                        };
                        match r {
                            Ok(v) => say(&format!("reply {tag} ok {v}")),
                            Err(e) => say(&format!("reply {tag} err {:?}", e.kind())),
                        }
                    });
                }
                ["publish", s, text] => {
                    let Some(s) = scope(s) else { continue };
                    let note = Note {
                        from: name.clone(),
                        text: (*text).to_owned(),
                    };
                    match bus.events().scope(s).publish(note).await {
                        Ok(()) => say("published"),
                        Err(e) => say(&format!("publish-failed {:?}", e.kind())),
                    }
                }
                ["wait", what, s, n] => {
                    let (Some(s), Ok(n)) = (scope(s), n.parse::<usize>()) else {
                        continue;
                    };
                    let ready = bus.ready();
                    let waited = tokio::time::timeout(Duration::from_secs(15), async {
                        match *what {
                            "probe" => ready.handlers::<Probe>(s, n).await,
                            "note" => ready.subscribers::<Note>(s, n).await,
                            _ => ready.peers(n).await,
                        }
                    })
                    .await;
                    say(if waited.is_ok() {
                        "waited"
                    } else {
                        "wait-timed-out"
                    });
                }
                ["handshake", tag, network, addr] => {
                    let (tag, network) = ((*tag).to_owned(), (*network).to_owned());
                    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
                        say(&format!("handshake {tag} err bad-address"));
                        continue;
                    };
                    tasks.spawn(async move {
                        let key = vec![network_key(&network)];
                        let identity = meshbus::trust::Identity::generate();
                        let dialled = match tokio::net::TcpStream::connect(addr).await {
                            Ok(stream) => {
                                SecureStream::dial_in(stream, &identity, &network, key).await
                            }
                            Err(e) => Err(meshbus::Error::new(meshbus::ErrorKind::Io)
                                .with_detail(e.to_string())),
                        };
                        match dialled {
                            Ok(_) => say(&format!("handshake {tag} ok")),
                            Err(e) => say(&format!("handshake {tag} err {:?}", e.kind())),
                        }
                    });
                }
                ["quit"] => break,
                _ => say(&format!("unknown {line}")),
            }
        }
        let _ = bus.shutdown().await;
        tasks.abort_all();
        say("bye");
    }
}
