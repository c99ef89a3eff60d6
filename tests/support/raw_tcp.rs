//! A hand-driven peer over TCP: completes the handshake under an identity the test picks, then
//! writes whatever the test crafts.

use std::time::Duration;

use bytes::BytesMut;
use meshbus::transport::{FrameReader, ReadEvent, StreamFrameReader};
use meshbus_core::wire::control::{ControlMessage, Hello, PeerIdentity, VersionRange, Welcome};
use meshbus_core::wire::FrameCodec;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The bound on the node's answer to a `Hello`.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// An identity in the default network and cluster, on a host of its own.
pub(crate) fn identity(node_id: u128, name: &str, addresses: Vec<String>) -> PeerIdentity {
    PeerIdentity {
        node_id,
        incarnation: 1,
        name: name.to_owned(),
        network: "default".into(),
        cluster: "default".into(),
        host_id: "elsewhere".into(),
        addresses,
    }
}

/// Sends `Hello` as `identity` on `stream` and returns the node's `Welcome`; panics on
/// anything else, or after [`ANSWER_BOUND`].
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    identity: PeerIdentity,
    max_frame_size: u32,
) -> Welcome {
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity,
        max_frame_size,
    };
    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::new();
    codec.encode(&hello.to_frame().unwrap(), &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut reader = StreamFrameReader::new(stream);
    let answer = async {
        loop {
            match reader.read(codec.max_frame_size).await.unwrap() {
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
    Welcome::from_frame(&frame).expect("the node welcomes the raw peer")
}
