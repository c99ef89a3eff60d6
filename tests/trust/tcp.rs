//! Trust over TCP: a flood of wrong keys, and the refusal to go beyond loopback without one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::transport::{Addr, Transport};
use meshbus::trust::{Identity, NetworkKey};
use meshbus::ErrorKind;
use meshbus_core::proto::noise::{NoiseConfig, SecureHandshake, MAX_UNIT};

use crate::script;
use crate::support::tcp::tcp_node;
use crate::support::within;
use crate::WhoAmI;

fn whoami(builder: meshbus::BusBuilder) -> meshbus::BusBuilder {
    builder.command_handler(|_: WhoAmI, ctx: Context| async move {
        HandlerResult::Ok(ctx.bus().name().to_owned())
    })
}

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// One handshake with a wrong key: the first answer's unit type (`None`: closed at once).
async fn wrong_key_attempt(addr: &Addr, cfg: &NoiseConfig) -> Option<u8> {
    let conn = TcpTransport::new().dial(addr).await.ok()?;
    let mut link = script::Link {
        reader: conn.reader,
        writer: conn.writer,
    };
    let (_, init) = SecureHandshake::dial(cfg).unwrap();
    script::write(&mut *link.writer, init).await;
    let unit = script::read(&mut *link.reader, MAX_UNIT).await?;
    let kind = script::unit_type(&unit);
    // No other key to try: we close, and the node closes after it has counted the refusal.
    let _ = link.writer.close().await;
    assert!(script::read(&mut *link.reader, MAX_UNIT).await.is_none());
    Some(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_key_handshakes_cost_the_node_little_and_its_peers_nothing() {
    let key = NetworkKey::generate();
    let node = whoami(tcp_node("node", "h1", "c", "tcp://127.0.0.1:0"))
        .network_key(key.clone())
        .start()
        .await
        .unwrap();
    let addr = node.listen_addrs()[0].clone();
    let peer = whoami(tcp_node("peer", "h2", "c", "tcp://127.0.0.1:0"))
        .network_key(key.clone())
        .peers([addr.to_string()])
        .start()
        .await
        .unwrap();
    within(
        "the link",
        peer.ready().handlers::<WhoAmI>(Scope::Cluster, 2),
    )
    .await;

    // The peer keeps asking the node while the flood goes on.
    let (stop, answered) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AtomicU64::new(0)),
    );
    let asking = {
        let (peer, stop, answered) = (peer.clone(), Arc::clone(&stop), Arc::clone(&answered));
        tokio::spawn(async move {
            loop {
                let ask = peer.commands().cluster().remote_only().send(WhoAmI);
                tokio::select! {
                    reply = ask => {
                        assert_eq!(reply.expect("the node keeps serving"), "node");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    () = stop.notified() => return,
                }
            }
        })
    };
    let wrong =
        NoiseConfig::new(Identity::generate(), "default").with_keys(vec![NetworkKey::generate()]);
    let mut warm_rss = 0;
    for i in 0..1000 {
        if i == 200 {
            warm_rss = rss();
        }
        let answer = wrong_key_attempt(&addr, &wrong).await;
        // Refused (4) or turned away before any handshake work (closed): never a Response.
        assert!(matches!(answer, None | Some(4)), "attempt {i}: {answer:?}");
    }
    let grown = rss().saturating_sub(warm_rss);
    stop.notify_one();
    within("the asking task", asking).await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 0);

    // Through the node's actor: what it was told before is counted now.
    node.add_peers(Vec::<String>::new()).await.unwrap();
    let stats = node.stats();
    eprintln!(
        "refused {} handshakes, turned {} connections away; rss grew {grown} bytes",
        stats.handshakes_refused, stats.connections_turned_away
    );
    // Every attempt is accounted for, and repeated failures soon cost the host its rate:
    // most never reach the handshake.
    assert_eq!(
        stats.handshakes_refused + stats.connections_turned_away,
        1000
    );
    assert!(stats.handshakes_refused < 250, "{stats:?}");
    assert!(grown < 16 * 1024 * 1024, "memory grew by {grown} bytes");
    // The peer's link never dropped.
    assert_eq!(peer.stats().links_established, 1);
    peer.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn beyond_loopback_without_a_key_is_a_config_error_unless_insecure() {
    let err = tcp_node("open", "h", "c", "tcp://0.0.0.0:0")
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.contains("tcp://0.0.0.0:0 without a network key"),
        "{text}"
    );
    assert!(
        text.contains(".network_key(") && text.contains(".insecure()"),
        "{text}"
    );
    // Dialling beyond loopback too, before any byte is sent.
    let err = tcp_node("open", "h", "c", "tcp://127.0.0.1:0")
        .peers(["tcp://192.0.2.1:7000"])
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let local = tcp_node("local", "h", "c", "tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    assert_eq!(
        local
            .add_peers(["tcp://192.0.2.1:7000"])
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
    assert_eq!(
        local
            .connect("tcp://192.0.2.1:7000")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
    local.shutdown().await.unwrap();
    // With a key, or `insecure`, it runs.
    for builder in [
        tcp_node("keyed", "h", "c", "tcp://0.0.0.0:0").network_key(NetworkKey::generate()),
        tcp_node("insecure", "h", "c", "tcp://0.0.0.0:0").insecure(),
    ] {
        let bus = builder.start().await.unwrap();
        assert_eq!(bus.listen_addrs().len(), 1);
        bus.shutdown().await.unwrap();
    }
}
