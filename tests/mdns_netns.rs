//! mDNS discovery across network namespaces: hosts on a bridge, one node process each.
//!
//! Needs root (to make namespaces) and `ip`; otherwise every test says it was skipped and
//! passes. mDNS runs only inside the namespaces these tests make (see `netns/mod.rs`).
//!
//! The node processes are this test binary, re-run as the `#[ignore]`d `netns_node` test with
//! `MESHBUS_NETNS_NODE` set. They print `@mb ...` lines and read commands on stdin:
//!
//! | mode (`MB_MODE`) | prints | reads |
//! |---|---|---|
//! | `mdns`: only the discovery source | `ready <id>`, `found <name> <id> <net> <addrs,>`, `lost <id>`, `bye` | `quit` |

#![cfg(feature = "mdns")]

mod netns;

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
            other => panic!("unknown MB_MODE `{other}`"),
        }
    });
}

mod node {
    //! The node side of the line protocol.

    use std::hash::{BuildHasher, Hasher};

    use meshbus::discovery::{Discovery, DiscoveryEvent};
    use meshbus::mdns::Mdns;
    use meshbus::wire::control::PeerIdentity;
    use meshbus::NodeId;
    use tokio::io::{AsyncBufReadExt, BufReader};

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
}
