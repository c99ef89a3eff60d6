//! What crosses a link: only records sealed in order under its keys.

use bytes::{Bytes, BytesMut};
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::trust::{Identity, NetworkKey};
use meshbus_core::proto::noise::{NoiseConfig, Sealer};
use meshbus_core::wire::body::encode_body;
use meshbus_core::wire::{FrameKind, FrameName};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::script::{self, Link};
use crate::support::{node, within};

/// Handled by node `a`: each value handled goes to the test.
#[derive(Debug, Serialize, Deserialize, Command)]
#[meshbus(name = "trust.tally", reply = u32)]
struct Tally(u32);

/// Node `a` holding `key`, handling [`Tally`]; the values it handled.
async fn tally_node(net: &InMemNetwork, key: &NetworkKey) -> (Bus, mpsc::UnboundedReceiver<u32>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let a = node(net, "a")
        .network_key(key.clone())
        .command_handler(move |t: Tally, _ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(t.0);
                HandlerResult::Ok(t.0)
            }
        })
        .start()
        .await
        .unwrap();
    (a, rx)
}

fn tally(n: u32) -> Bytes {
    let mut frame =
        meshbus_core::wire::Frame::new(FrameKind::Command, encode_body(&Tally(n)).unwrap());
    frame.request_id = u64::from(n);
    frame.name = Some(FrameName::inline(Tally::NAME));
    script::encode(&frame)
}

fn seal(sealer: &mut Sealer, frame: Bytes) -> Bytes {
    let mut records = Vec::new();
    sealer
        .seal_frames(&[frame], &mut records, &mut Vec::new())
        .unwrap();
    assert_eq!(records.len(), 1);
    records.remove(0)
}

/// Reads frames until one of `kind`; `None` once the node closed the link.
async fn until(link: &mut Link, kind: FrameKind) -> Option<meshbus_core::wire::Frame> {
    loop {
        let frame = script::decode(script::read(&mut *link.reader, 1 << 20).await?);
        if frame.kind == kind {
            return Some(frame);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Replayed,
    Reordered,
    Cut,
    Flipped,
}

#[tokio::test(start_paused = true)]
async fn replayed_reordered_cut_or_flipped_records_close_the_link_and_deliver_nothing() {
    let net = InMemNetwork::new(21);
    let key = NetworkKey::generate();
    let (a, mut handled) = tally_node(&net, &key).await;
    let identity = Identity::generate();
    let cfg = NoiseConfig::new(identity.clone(), "default").with_keys(vec![key.clone()]);
    for fault in [
        Fault::Replayed,
        Fault::Reordered,
        Fault::Cut,
        Fault::Flipped,
    ] {
        let (mut link, mut sealer, finish) =
            script::secure_raw(script::dial(&net, "script", "a").await, &cfg).await;
        let hello = seal(
            &mut sealer,
            script::hello(script::peer_identity(&identity, "script")),
        );
        link.writer
            .write_batch(&mut vec![finish, hello])
            .await
            .unwrap();
        until(&mut link, FrameKind::Welcome)
            .await
            .expect("welcomed");
        // One good record: handled and answered.
        let first = seal(&mut sealer, tally(1));
        script::write(&mut *link.writer, first.clone()).await;
        let reply = until(&mut link, FrameKind::Reply).await.expect("a reply");
        assert_eq!(reply.request_id, 1);
        assert_eq!(within("the handler", handled.recv()).await, Some(1));
        let (second, third) = (seal(&mut sealer, tally(2)), seal(&mut sealer, tally(3)));
        let bad: Vec<Bytes> = match fault {
            Fault::Replayed => vec![first],
            Fault::Reordered => vec![third, second],
            Fault::Cut => {
                let mut cut = BytesMut::from(&second[..second.len() - 1]);
                let len = (cut.len() - 4) as u32;
                cut[..4].copy_from_slice(&len.to_be_bytes());
                vec![cut.freeze(), third]
            }
            Fault::Flipped => {
                let mut flipped = second.to_vec();
                flipped[10] ^= 0x20;
                vec![Bytes::from(flipped), third]
            }
        };
        let _ = link.writer.write_batch(&mut bad.clone()).await;
        assert!(
            until(&mut link, FrameKind::Reply).await.is_none(),
            "{fault:?}: the link stays open or answers"
        );
        assert!(handled.try_recv().is_err(), "{fault:?} delivered something");
    }
    assert_eq!(a.stats().links_established, 4);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bytes_injected_into_a_link_close_it_and_the_nodes_link_again() {
    let net = InMemNetwork::new(22);
    let key = NetworkKey::generate();
    let (a, mut handled) = tally_node(&net, &key).await;
    let b = node(&net, "b")
        .network_key(key.clone())
        .peers(["inmem://a"])
        .start()
        .await
        .unwrap();
    within("the link", b.ready().handlers::<Tally>(Scope::Cluster, 1)).await;
    assert_eq!(b.commands().send(Tally(1)).await.unwrap(), 1);
    assert_eq!(handled.recv().await, Some(1));
    let before = a.stats().links_established;
    // A record-shaped forgery: a length, then bytes that are no ciphertext of this link.
    let mut forged = BytesMut::new();
    forged.extend_from_slice(&64u32.to_be_bytes());
    forged.extend_from_slice(&[0x5a; 64]);
    assert_eq!(net.inject("b", "a", forged.freeze()), 1);
    let mut stats = a.membership();
    within("the link closed and made again", async {
        while a.stats().links_established == before {
            stats.changed().await.unwrap();
        }
    })
    .await;
    within(
        "the link back",
        b.ready().handlers::<Tally>(Scope::Cluster, 1),
    )
    .await;
    assert_eq!(b.commands().send(Tally(2)).await.unwrap(), 2);
    assert_eq!(handled.recv().await, Some(2));
    assert!(handled.try_recv().is_err());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
