//! What a node refuses of a peer, over the in-memory transport with a hand-driven peer: a
//! `Hello` out of bounds, a stale incarnation of a connected peer, a `Hello` claiming another
//! node's id, request id 0 and interest beyond the bounds. Each time the node refuses exactly
//! that and keeps serving.

use crate::support::raw::{Got, RawConn, RawPeer};
use crate::support::*;
use bytes::Bytes;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{MembershipView, PeerInfo};
use meshbus_core::proto::interest::{MAX_NAMES, MAX_NAME_LEN};
use meshbus_core::wire::control::{ControlMessage, Interest, PeerIdentity, Reject, RejectReason};
use meshbus_core::wire::{Frame, FrameKind};
use serde::{Deserialize, Serialize};

/// Handled by the node under test.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "hs.echo", reply = u32)]
struct Echo(u32);

/// The seed of the raw peer's static key (so of its node id).
const X_SEED: u128 = 0xA11CE;

/// A change to an identity, to make it out of bounds.
type Change<'a> = Box<dyn Fn(&mut PeerIdentity) + 'a>;

fn x_in(v: &MembershipView) -> Option<&PeerInfo> {
    v.peer(crate::support::secure::identity(X_SEED).node_id())
}

async fn echo_server(net: &InMemNetwork) -> Bus {
    node(net, "b")
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .unwrap()
}

/// The connection answers commands: the node still serves it.
async fn still_answers(conn: &mut RawConn, n: u32) {
    let id = conn.send_command(&Echo(n)).await;
    assert_eq!(conn.recv_reply::<u32>(id).await, n);
}

fn reject_of(got: Got) -> Reject {
    match got {
        Got::Frame(f) if f.kind == FrameKind::Reject => Reject::from_frame(&f).unwrap(),
        other => panic!("expected a Reject, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_older_incarnation_of_a_connected_peer_gets_reject_duplicate() {
    let net = InMemNetwork::new(70);
    let b = echo_server(&net).await;
    let mut x = RawPeer::new(&net, "x", X_SEED);
    x.identity.incarnation = 10;
    let mut live = x.connect("inmem://b").await;
    until_view(&b, |v| x_in(v).is_some()).await;

    // A Hello speaking for an older run of x: refused before any Welcome.
    let mut stale = x.hello();
    stale.identity.incarnation = 9;
    let reject = reject_of(x.hello_answer("inmem://b", &stale).await);
    assert_eq!(reject.reason, RejectReason::Duplicate);
    // The established connection is untouched.
    still_answers(&mut live, 1).await;

    // A newer run is welcomed and replaces it.
    x.identity.incarnation = 11;
    let mut newer = x.connect("inmem://b").await;
    still_answers(&mut newer, 2).await;
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hello_over_the_limits_is_rejected_and_the_node_serves_on() {
    let net = InMemNetwork::new(71);
    let b = echo_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);

    let many_addresses: Vec<String> = (0..1000).map(|i| format!("tcp://10.0.0.1:{i}")).collect();
    let bad: [(&str, Change<'_>); 4] = [
        (
            "1,000 addresses",
            Box::new(|id| id.addresses.clone_from(&many_addresses)),
        ),
        (
            "17 addresses",
            Box::new(|id| {
                id.addresses = many_addresses[..PeerIdentity::MAX_ADDRESSES + 1].to_vec()
            }),
        ),
        (
            "a long host id",
            Box::new(|id| id.host_id = "h".repeat(PeerIdentity::MAX_FIELD_LEN + 1)),
        ),
        (
            "incarnation u64::MAX",
            Box::new(|id| id.incarnation = u64::MAX),
        ),
    ];
    for (what, change) in bad {
        let mut hello = x.hello();
        change(&mut hello.identity);
        let reject = reject_of(x.hello_answer("inmem://b", &hello).await);
        assert_eq!(reject.reason, RejectReason::InvalidIdentity, "{what}");
        let view = b.membership().borrow().clone();
        assert!(x_in(&view).is_none(), "{what}: {view:?}");
    }
    // Within the limits, the same peer is welcomed and served.
    let mut hello = x.hello();
    hello.identity.addresses = many_addresses[..PeerIdentity::MAX_ADDRESSES].to_vec();
    let Got::Frame(welcome) = x.hello_answer("inmem://b", &hello).await else {
        panic!("closed");
    };
    assert_eq!(welcome.kind, FrameKind::Welcome);
    let mut conn = x.connect("inmem://b").await;
    still_answers(&mut conn, 3).await;
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn request_id_0_closes_the_connection() {
    let net = InMemNetwork::new(72);
    let b = echo_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);
    let echo = meshbus_core::wire::body::encode_body(&Echo(5)).unwrap();
    let mut command = Frame::new(FrameKind::Command, echo);
    command.name = Some(meshbus_core::wire::FrameName::inline(Echo::NAME));
    let frames = [
        command,
        Frame::new(FrameKind::Reply, Bytes::new()),
        Frame::new(FrameKind::Cancel, Bytes::new()),
    ];
    for frame in frames {
        let kind = frame.kind;
        let mut conn = x.connect("inmem://b").await;
        still_answers(&mut conn, 1).await;
        assert_eq!(frame.request_id, 0);
        conn.send(frame).await;
        // Closed, and nothing answered first: a reply to id 0 would come before the close.
        loop {
            match conn.recv().await {
                Got::Closed => break,
                Got::Frame(f) => assert!(
                    !matches!(f.kind, FrameKind::Reply | FrameKind::ReplyError),
                    "{kind:?} with id 0 was answered: {f:?}"
                ),
            }
        }
        until_view(&b, |v| x_in(v).is_none()).await;
    }
    // The node serves the peer again on a new connection.
    let mut conn = x.connect("inmem://b").await;
    still_answers(&mut conn, 2).await;
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn interest_beyond_the_bounds_is_ignored_and_the_link_kept() {
    let net = InMemNetwork::new(73);
    let b = echo_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);
    let mut conn = x.connect("inmem://b").await;

    // More command names than a node holds, and one name too long among them.
    let mut commands: Vec<String> = (0..=MAX_NAMES).map(|i| format!("c{i:05}")).collect();
    commands.insert(0, "x".repeat(MAX_NAME_LEN + 1));
    let interest = Interest {
        seq: 0,
        snapshot: true,
        commands_added: commands,
        events_added: vec!["e".repeat(MAX_NAME_LEN + 1), "hs.news".into()],
        ..Interest::default()
    };
    conn.send(interest.to_frame().unwrap()).await;
    until_view(&b, |v| {
        x_in(v).is_some_and(|p| p.commands.len() == MAX_NAMES - 1 && p.events == ["hs.news"])
    })
    .await;
    // MAX_NAMES entries kept on decode, the long one among them ignored.
    let view = b.membership().borrow().clone();
    let p = x_in(&view).unwrap();
    assert_eq!(p.commands.first().map(String::as_str), Some("c00000"));
    assert!(p.commands.iter().all(|c| c.len() <= MAX_NAME_LEN));
    // The link is kept.
    still_answers(&mut conn, 4).await;
    b.shutdown().await.unwrap();
}

/// Node ids come from static keys: a peer whose `Hello` claims the id of another node (one
/// linked to the node under test) is refused, and that node's link and traffic are untouched.
#[tokio::test(start_paused = true)]
async fn a_hello_claiming_another_nodes_id_is_rejected_and_that_node_untouched() {
    let net = InMemNetwork::new(74);
    let b = echo_server(&net).await;
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
    let x = RawPeer::new(&net, "x", X_SEED);

    // An old run of a, and a run newer than any (which would replace a's link, were the id
    // believed).
    for (n, incarnation) in [(1, 1), (2, u64::MAX - 1)] {
        let mut hello = x.hello();
        hello.identity.node_id = a.node_id().as_u128();
        hello.identity.name = "a".into();
        hello.identity.incarnation = incarnation;
        let reject = reject_of(x.hello_answer("inmem://b", &hello).await);
        assert_eq!(reject.reason, RejectReason::InvalidIdentity);
        let view = b.membership().borrow().clone();
        assert!(x_in(&view).is_none(), "{view:?}");
        let a_in_b = view.peer(a.node_id()).expect("a is still b's peer");
        assert_eq!(a_in_b.name, "a");
        assert_eq!(a.commands().send(Echo(n)).await.unwrap(), n);
    }
    // Under its own id, x is welcomed.
    let mut conn = x.connect("inmem://b").await;
    still_answers(&mut conn, 5).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
