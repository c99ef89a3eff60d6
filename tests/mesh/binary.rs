//! Byte payloads (`meshbus::Binary`) in commands, replies and events between nodes, and a
//! field that changes from `Vec<u8>` to `Binary` while nodes of both versions talk.

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::Binary;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.store", reply = Binary)]
struct Store {
    name: String,
    data: Binary,
}

/// `Store` as an older version of the application declares it.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.store", reply = Vec<u8>)]
struct OldStore {
    name: String,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "mesh.stored")]
struct Stored {
    #[serde(with = "meshbus::binary")]
    data: Vec<u8>,
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 5) as u8).collect()
}

#[tokio::test(start_paused = true)]
async fn byte_payloads_cross_the_mesh_in_commands_replies_and_events() {
    let net = InMemNetwork::new(31);
    // b answers with the bytes reversed, so the reply is not the request echoed by mistake.
    let b = node(&net, "b")
        .command_handler(|c: Store, _ctx| async move {
            assert_eq!(c.name, "blob");
            HandlerResult::Ok(c.data.iter().rev().copied().collect::<Binary>())
        })
        .start()
        .await
        .unwrap();
    let mut stored = b.subscribe::<Stored>().unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within(
        "b's handler",
        a.ready().handlers::<Store>(Scope::Cluster, 1),
    )
    .await;
    within(
        "b's subscription",
        a.ready().subscribers::<Stored>(Scope::Cluster, 1),
    )
    .await;

    let data = payload(1024);
    let reversed: Vec<u8> = data.iter().rev().copied().collect();
    let reply = a
        .commands()
        .remote_only()
        .send(Store {
            name: "blob".into(),
            data: Binary::from(data.clone()),
        })
        .await
        .unwrap();
    assert_eq!(reply, reversed);

    // 64 KiB: over the compression threshold and the size decoded off the reader.
    let big = payload(64 * 1024);
    a.events()
        .publish(Stored { data: big.clone() })
        .await
        .unwrap();
    assert_eq!(within("the event", stored.recv()).await.unwrap().data, big);

    // A node still on `Vec<u8>` sends to one on `Binary`, and reads its `bin` reply.
    let old: Vec<u8> = a
        .commands()
        .remote_only()
        .send(OldStore {
            name: "blob".into(),
            data: data.clone(),
        })
        .await
        .unwrap();
    assert_eq!(old, reversed);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
