//! Who gets in: the network key, the network name, the version range, a relay, a forged id.

use bytes::Bytes;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::transport::Transport;
use meshbus::trust::{Identity, NetworkKey};
use meshbus::ErrorKind;
use meshbus_core::proto::noise::{NoiseConfig, MAX_UNIT};
use meshbus_core::wire::control::{ControlMessage, Reject, RejectReason};
use meshbus_core::wire::FrameKind;

use crate::script::{self, Link, Secured};
use crate::support::{until_view, within};
use crate::{keyed, until_stats, WhoAmI};

fn config(network: &str, keys: &[&NetworkKey]) -> NoiseConfig {
    NoiseConfig::new(Identity::generate(), network)
        .with_keys(keys.iter().map(|k| (*k).clone()).collect())
}

#[tokio::test(start_paused = true)]
async fn a_wrong_or_missing_key_or_another_network_is_unauthorized_and_nothing_crosses() {
    let net = InMemNetwork::new(17);
    let (k1, k2) = (NetworkKey::generate(), NetworkKey::generate());
    let a = keyed(&net, "a", &[&k1]).start().await.unwrap();
    let wrong = keyed(&net, "wrong", &[&k2]).start().await.unwrap();
    let keyless = keyed(&net, "keyless", &[]).start().await.unwrap();
    let other = keyed(&net, "other", &[&k1])
        .network("staging")
        .start()
        .await
        .unwrap();
    for dialler in [&wrong, &keyless, &other] {
        let err = dialler.connect("inmem://a").await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Unauthorized,
            "{}: {err}",
            dialler.name()
        );
        // Nothing crossed: no link, so no handler to send to.
        let sent = dialler
            .commands()
            .cluster()
            .remote_only()
            .send(WhoAmI)
            .await;
        assert!(sent.is_err(), "{}", dialler.name());
    }
    // A keyed node does not dial a keyless one either.
    let err = a.connect("inmem://keyless").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    until_stats(&a, |s| s.handshakes_refused == 3).await;
    assert_eq!(a.stats().links_established, 0);
    assert!(a.membership().borrow().peers.is_empty());

    // By hand: the acceptor answers a wrong key, or the right key from another network, or a
    // downgraded version range, with a Refuse and closes: never its first handshake message.
    let mut downgraded = config("default", &[&k1]);
    downgraded =
        downgraded.with_versions(meshbus_core::wire::control::VersionRange { min: 0, max: 0 });
    for (what, cfg) in [
        ("a wrong key", config("default", &[&k2])),
        ("no key", config("default", &[])),
        ("another network", config("staging", &[&k1])),
    ] {
        let link = script::dial(&net, "script", "a").await;
        let Secured::Refused(unit) = script::secure(link, &cfg).await else {
            panic!("{what} completed a handshake");
        };
        assert_eq!(script::unit_type(&unit), 4, "{what}");
    }
    // The clear header changed on the way: the Init's version range rewritten.
    let mut link = script::dial(&net, "script", "a").await;
    let (_, init) = meshbus_core::proto::noise::SecureHandshake::dial(&downgraded).unwrap();
    let mut tampered = init.to_vec();
    tampered[17..21].copy_from_slice(&[0, 1, 0, 1]);
    script::write(&mut *link.writer, Bytes::from(tampered)).await;
    let unit = script::read(&mut *link.reader, MAX_UNIT).await.unwrap();
    assert_eq!(script::unit_type(&unit), 4);
    assert!(script::read(&mut *link.reader, MAX_UNIT).await.is_none());
    drop(link);
    until_stats(&a, |s| s.handshakes_refused == 7).await;
    assert_eq!(a.stats().links_established, 0);
    for bus in [a, wrong, keyless, other] {
        bus.shutdown().await.unwrap();
    }
}

/// Relays node `b`'s connection to `inmem://m` on to node `a`, handshake units and all,
/// flipping one bit of the acceptor's answer; returns once both sides have closed.
async fn flipping_relay(net: &InMemNetwork) -> tokio::task::JoinHandle<(bool, bool)> {
    let mut listener = net
        .transport("m")
        .listen(&"inmem://m".parse().unwrap())
        .await
        .unwrap();
    let net = net.clone();
    tokio::spawn(async move {
        let conn = listener.accept().await.unwrap();
        let mut from_b = Link {
            reader: conn.reader,
            writer: conn.writer,
        };
        let mut to_a = script::dial(&net, "m", "a").await;
        let init = script::read(&mut *from_b.reader, MAX_UNIT).await.unwrap();
        script::write(&mut *to_a.writer, init).await;
        let answer = script::read(&mut *to_a.reader, MAX_UNIT).await.unwrap();
        let mut flipped = answer.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        script::write(&mut *from_b.writer, Bytes::from(flipped)).await;
        // Neither side says anything more that completes a link: both close.
        let b_closed = script::read(&mut *from_b.reader, MAX_UNIT).await.is_none();
        drop(to_a.writer);
        let a_closed = script::read(&mut *to_a.reader, MAX_UNIT).await.is_none();
        drop(listener);
        (b_closed, a_closed)
    })
}

#[tokio::test(start_paused = true)]
async fn a_relay_in_the_middle_fails_on_both_sides() {
    let net = InMemNetwork::new(18);
    let k1 = NetworkKey::generate();
    let a = keyed(&net, "a", &[&k1]).start().await.unwrap();
    let b = keyed(&net, "b", &[&k1]).start().await.unwrap();

    // A relay holding another key, ending the handshake on each side itself.
    let mut listener = net
        .transport("m")
        .listen(&"inmem://m".parse().unwrap())
        .await
        .unwrap();
    let relay_cfg = config("default", &[&NetworkKey::generate()]);
    let relay = {
        let net = net.clone();
        let relay_cfg = relay_cfg.clone();
        tokio::spawn(async move {
            let towards_a = script::secure(script::dial(&net, "m", "a").await, &relay_cfg).await;
            let conn = listener.accept().await.unwrap();
            let mut from_b = Link {
                reader: conn.reader,
                writer: conn.writer,
            };
            let mut acceptor = meshbus_core::proto::noise::SecureHandshake::accept(&relay_cfg);
            let init = script::read(&mut *from_b.reader, MAX_UNIT).await.unwrap();
            let answer = acceptor.on_unit(&init);
            // The relay holds no key of the id b used: all it can tell b is so.
            if let Ok(meshbus_core::proto::noise::SecureStep::Send(unit)) = &answer {
                script::write(&mut *from_b.writer, unit.clone()).await;
            }
            (
                matches!(towards_a, Secured::Refused(_)),
                format!("{answer:?}"),
            )
        })
    };
    let err = b.connect("inmem://m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let (refused_by_a, answer_to_b) = within("the relay", relay).await.unwrap();
    assert!(refused_by_a, "a let in a relay without the key");
    assert!(answer_to_b.contains("Send"), "{answer_to_b}"); // an unknown-key refusal

    // A relay passing the units on, one bit of the answer changed: both ends fail.
    let relay = flipping_relay(&net).await;
    let err = b.connect("inmem://m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let (b_closed, a_closed) = within("the relay", relay).await.unwrap();
    assert!(b_closed && a_closed);
    assert_eq!(a.stats().links_established, 0);
    assert_eq!(b.stats().links_established, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_node_claiming_another_nodes_id_is_refused_and_the_real_one_is_untouched() {
    let net = InMemNetwork::new(19);
    let k1 = NetworkKey::generate();
    let a = keyed(&net, "a", &[&k1]).start().await.unwrap();
    let victim = keyed(&net, "victim", &[&k1])
        .peers(["inmem://a"])
        .start()
        .await
        .unwrap();
    within(
        "the link",
        victim.ready().handlers::<WhoAmI>(Scope::Cluster, 2),
    )
    .await;
    let links = a.stats().links_established;

    // The script holds the network key but not the victim's static key.
    let mallory = Identity::generate();
    let cfg = NoiseConfig::new(mallory.clone(), "default").with_keys(vec![k1.clone()]);
    let Secured::Done(mut link, a_key) =
        script::secure(script::dial(&net, "mallory", "a").await, &cfg).await
    else {
        panic!("the script holds the key");
    };
    assert_eq!(a_key, a.public_key());
    assert_eq!(a_key.node_id(), a.node_id());
    // It copies the victim's public identity: its id and its public key.
    let mut claim = script::peer_identity(&mallory, "victim");
    claim.node_id = victim.node_id().as_u128();
    claim.public_key = Some(victim.public_key());
    script::write(&mut *link.writer, script::hello(claim)).await;
    let answer = script::decode(script::read(&mut *link.reader, 1 << 16).await.unwrap());
    assert_eq!(answer.kind, FrameKind::Reject);
    let reject = Reject::from_frame(&answer).unwrap();
    assert_eq!(reject.reason, RejectReason::InvalidIdentity, "{reject:?}");
    assert!(script::read(&mut *link.reader, 1 << 16).await.is_none());
    // Counted and charged as a refused handshake.
    until_stats(&a, |s| s.handshakes_refused == 1).await;

    // The real victim's link and traffic are untouched.
    assert_eq!(a.stats().links_established, links);
    let view = a.membership().borrow().clone();
    assert!(view
        .peer(victim.node_id())
        .is_some_and(|p| p.name == "victim"));
    for _ in 0..3 {
        let name = victim
            .commands()
            .cluster()
            .remote_only()
            .send(WhoAmI)
            .await
            .unwrap();
        assert_eq!(name, "a");
    }
    // The same script under its own id is let in.
    let Secured::Done(mut link, _) =
        script::secure(script::dial(&net, "mallory", "a").await, &cfg).await
    else {
        panic!("the script holds the key");
    };
    script::write(
        &mut *link.writer,
        script::hello(script::peer_identity(&mallory, "mallory")),
    )
    .await;
    let answer = script::decode(script::read(&mut *link.reader, 1 << 16).await.unwrap());
    assert_eq!(answer.kind, FrameKind::Welcome);
    until_view(&a, |v| v.peer(mallory.node_id()).is_some()).await;
    a.shutdown().await.unwrap();
    victim.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_replayed_handshake_never_completes() {
    let net = InMemNetwork::new(20);
    let k1 = NetworkKey::generate();
    let a = keyed(&net, "a", &[&k1]).start().await.unwrap();
    let cfg = config("default", &[&k1]);
    // An eavesdropper records a real handshake: its Init and its Finish.
    let mut first = script::dial(&net, "s", "a").await;
    let (mut dialler, init) = meshbus_core::proto::noise::SecureHandshake::dial(&cfg).unwrap();
    script::write(&mut *first.writer, init.clone()).await;
    let response = script::read(&mut *first.reader, MAX_UNIT).await.unwrap();
    let Ok(meshbus_core::proto::noise::SecureStep::Done {
        send: Some(finish), ..
    }) = dialler.on_unit(&response)
    else {
        panic!("the real handshake completes");
    };
    script::write(&mut *first.writer, finish.clone()).await;

    // Replayed on a new connection, the Init gets an answer (under fresh keys of the node's),
    // but the recorded Finish does not complete it.
    let mut replay = script::dial(&net, "eve", "a").await;
    script::write(&mut *replay.writer, init).await;
    let answer = script::read(&mut *replay.reader, MAX_UNIT).await.unwrap();
    assert_eq!(script::unit_type(&answer), 2);
    assert_ne!(
        answer, response,
        "the node answers with a fresh ephemeral key"
    );
    script::write(&mut *replay.writer, finish).await;
    let refusal = script::read(&mut *replay.reader, MAX_UNIT).await.unwrap();
    assert_eq!(script::unit_type(&refusal), 4);
    assert!(script::read(&mut *replay.reader, MAX_UNIT).await.is_none());
    until_stats(&a, |s| s.handshakes_refused == 1).await;
    assert_eq!(a.stats().links_established, 0);
    drop(first);
    a.shutdown().await.unwrap();
}
