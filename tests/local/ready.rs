//! Readiness futures: how they count this node, and how their timeout says what was missing.

use std::sync::Arc;
use std::time::Duration;

use meshbus::prelude::*;
use meshbus::{ErrorKind, HandlerResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.ready.ping", reply = u32)]
struct Ping;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "test.ready.tick")]
struct Tick;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "test.ready.unheard")]
struct Unheard;

#[tokio::test(start_paused = true)]
async fn this_node_counts_alike_for_handlers_and_subscribers_in_every_scope() {
    let bus = Bus::builder()
        .command_handler(|_: Ping, _ctx: Context| async { HandlerResult::Ok(1) })
        .event_handler(|_: Arc<Tick>, _ctx: Context| async { HandlerResult::Ok(()) })
        .start()
        .await
        .unwrap();
    let bound = Duration::from_secs(1);
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        bus.ready()
            .handlers::<Ping>(scope, 1)
            .timeout(bound)
            .await
            .unwrap();
        bus.ready()
            .subscribers::<Tick>(scope, 1)
            .timeout(bound)
            .await
            .unwrap();
        // This node is one node: two are never reached alone.
        let err = bus
            .ready()
            .handlers::<Ping>(scope, 2)
            .timeout(bound)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        let err = bus
            .ready()
            .subscribers::<Tick>(scope, 2)
            .timeout(bound)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }
    // Not a peer of itself.
    bus.ready().peers(0).await;
    let err = bus.ready().peers(1).timeout(bound).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_wait_says_how_many_of_how_many() {
    let bus = Bus::builder()
        .command_handler(|_: Ping, _ctx: Context| async { HandlerResult::Ok(1) })
        .start()
        .await
        .unwrap();
    let bound = Duration::from_millis(50);
    let err = bus
        .ready()
        .handlers::<Ping>(Scope::Cluster, 3)
        .timeout(bound)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.message_name(), Some("test.ready.ping"));
    let detail = err.detail().unwrap();
    assert!(detail.contains("1 of 3"), "{detail}");
    let err = bus
        .ready()
        .subscribers::<Unheard>(Scope::Network, 2)
        .timeout(bound)
        .await
        .unwrap_err();
    assert!(err.detail().unwrap().contains("0 of 2"), "{err}");
    let err = bus.ready().peers(4).timeout(bound).await.unwrap_err();
    assert!(err.to_string().contains("0 of 4 peers"), "{err}");
}
