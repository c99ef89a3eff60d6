//! A hand-driven peer over TCP: completes the secure handshake and the `Hello` under an
//! identity the test picks, then writes whatever the test crafts (sealed, so it reaches the
//! node's frame decoder as it is).

use std::time::Duration;

use bytes::BytesMut;
use meshbus::transport::ReadEvent;
use meshbus_core::trust::Identity;
use meshbus_core::wire::control::{ControlMessage, Hello, PeerIdentity, VersionRange, Welcome};
use meshbus_core::wire::FrameCodec;
use tokio::net::TcpStream;

use super::secure::{self, SecureStream};

/// The bound on the node's answer to a `Hello`.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// An identity of node `node_id` in the default network and cluster, on a host of its own,
/// without a public key: one the raw peer gossips about (its own is [`own_identity`]).
pub(crate) fn identity(node_id: u128, name: &str, addresses: Vec<String>) -> PeerIdentity {
    PeerIdentity {
        node_id,
        incarnation: 1,
        name: name.to_owned(),
        network: "default".into(),
        cluster: "default".into(),
        host_id: "elsewhere".into(),
        addresses,
        public_key: None,
    }
}

/// The static key pair from `seed` and the identity its `Hello` carries: node id from the key,
/// and the key.
pub(crate) fn own_identity(seed: u128, name: &str) -> (Identity, PeerIdentity) {
    let key = secure::identity(seed);
    let identity = PeerIdentity {
        public_key: Some(key.public_key()),
        ..identity(key.node_id().as_u128(), name, Vec::new())
    };
    (key, identity)
}

/// Runs the secure handshake on `stream` as `key`, sends `Hello` as `identity` and returns
/// the secure connection and the node's `Welcome`; panics on anything else, or after
/// [`ANSWER_BOUND`].
pub(crate) async fn handshake(
    stream: TcpStream,
    key: &Identity,
    identity: PeerIdentity,
    max_frame_size: u32,
) -> (SecureStream, Welcome) {
    let mut conn = SecureStream::dial(stream, key)
        .await
        .expect("the node completes the secure handshake");
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity,
        max_frame_size,
    };
    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::new();
    codec.encode(&hello.to_frame().unwrap(), &mut buf).unwrap();
    conn.writer.write_all(&buf).await.unwrap();
    let answer = async {
        loop {
            match conn.reader.read(codec.max_frame_size).await.unwrap() {
                ReadEvent::Frame(bytes) => break bytes,
                ReadEvent::Partial => continue,
                other => panic!("expected the welcome, got {other:?}"),
            }
        }
    };
    let bytes = tokio::time::timeout(ANSWER_BOUND, answer)
        .await
        .expect("the node answers the hello");
    let frame = codec.decode_frame(bytes).unwrap();
    let welcome = Welcome::from_frame(&frame).expect("the node welcomes the raw peer");
    assert_eq!(
        welcome.identity.node_id,
        conn.remote.node_id().as_u128(),
        "the node's id is its static key's"
    );
    (conn, welcome)
}
