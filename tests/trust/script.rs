//! A script that speaks the secure handshake and the frames after it by hand, as
//! PROTOCOL.md describes them, over the in-memory network.

use bytes::{Bytes, BytesMut};
use meshbus::inmem::InMemNetwork;
use meshbus::transport::{
    Addr, FrameReader, FrameWriter, ReadEvent, SealedReader, SealedWriter, Transport,
};
use meshbus::trust::{Identity, PublicKey};
use meshbus_core::proto::noise::{NoiseConfig, Sealer, SecureHandshake, SecureStep, MAX_UNIT};
use meshbus_core::wire::control::{ControlMessage, Hello, PeerIdentity, VersionRange};
use meshbus_core::wire::{Frame, FrameCodec};

use crate::support::within;

/// The halves of one connection.
pub(crate) struct Link {
    pub(crate) reader: Box<dyn FrameReader>,
    pub(crate) writer: Box<dyn FrameWriter>,
}

/// Dials node `to` as node `from`.
pub(crate) async fn dial(net: &InMemNetwork, from: &str, to: &str) -> Link {
    let addr: Addr = format!("inmem://{to}").parse().unwrap();
    let conn = net.transport(from).dial(&addr).await.unwrap();
    Link {
        reader: conn.reader,
        writer: conn.writer,
    }
}

/// The type byte of a handshake unit (`Init` 1, `Response` 2, `Finish` 3, `Refuse` 4).
pub(crate) fn unit_type(unit: &[u8]) -> u8 {
    assert_eq!(&unit[4..8], b"MBN1", "a handshake unit");
    unit[8]
}

/// The next whole frame or unit; `None` once the other end closed.
pub(crate) async fn read(reader: &mut dyn FrameReader, limit: usize) -> Option<Bytes> {
    loop {
        match within("a read", reader.read(limit)).await {
            Ok(ReadEvent::Frame(bytes)) => return Some(bytes),
            Ok(ReadEvent::Partial) => {}
            Ok(_) | Err(_) => return None,
        }
    }
}

pub(crate) async fn write(writer: &mut dyn FrameWriter, bytes: Bytes) {
    let _ = writer.write_batch(&mut vec![bytes]).await;
}

/// What a dialler's secure handshake came to.
pub(crate) enum Secured {
    /// Completed: the halves, sealed, and the acceptor's static key; with the sealer also
    /// handed out raw, for a script that seals records itself.
    Done(Link, PublicKey),
    /// The acceptor answered with this `Refuse` unit (type 4) and closed.
    Refused(Bytes),
}

/// Runs the dialler's side of the secure handshake on `link`.
pub(crate) async fn secure(mut link: Link, config: &NoiseConfig) -> Secured {
    let (mut hs, init) = SecureHandshake::dial(config).unwrap();
    write(&mut *link.writer, init).await;
    loop {
        let unit = read(&mut *link.reader, MAX_UNIT)
            .await
            .expect("an answer to the handshake");
        match hs.on_unit(&unit) {
            Err(_) if unit_type(&unit) == 4 => return Secured::Refused(unit),
            Ok(SecureStep::Send(next)) => write(&mut *link.writer, next).await,
            Ok(SecureStep::Done { send, session }) => {
                let remote = session.remote_key();
                let (sealer, opener) = session.split();
                let link = Link {
                    reader: Box::new(SealedReader::new(link.reader, opener)),
                    writer: Box::new(SealedWriter::new(link.writer, sealer, send)),
                };
                return Secured::Done(link, remote);
            }
            other => panic!("unexpected step {other:?}"),
        }
    }
}

/// Like [`secure`], but hands back the plain halves with the session's sealer and the
/// handshake's last unit, for a script that writes records itself.
pub(crate) async fn secure_raw(mut link: Link, config: &NoiseConfig) -> (Link, Sealer, Bytes) {
    let (mut hs, init) = SecureHandshake::dial(config).unwrap();
    write(&mut *link.writer, init).await;
    let unit = read(&mut *link.reader, MAX_UNIT).await.expect("a Response");
    let Ok(SecureStep::Done {
        send: Some(finish),
        session,
    }) = hs.on_unit(&unit)
    else {
        panic!("the acceptor refused the script");
    };
    let (sealer, opener) = session.split();
    let link = Link {
        reader: Box::new(SealedReader::new(link.reader, opener)),
        writer: link.writer,
    };
    (link, sealer, finish)
}

/// An identity of the default network and cluster for `identity`'s node id.
pub(crate) fn peer_identity(identity: &Identity, name: &str) -> PeerIdentity {
    crate::support::secure::peer_identity(identity, name)
}

/// The encoded `Hello` of `identity`.
pub(crate) fn hello(identity: PeerIdentity) -> Bytes {
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity,
        max_frame_size: 1 << 20,
    };
    encode(&hello.to_frame().unwrap())
}

pub(crate) fn encode(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::new();
    FrameCodec::handshake().encode(frame, &mut buf).unwrap();
    buf.freeze()
}

pub(crate) fn decode(bytes: Bytes) -> Frame {
    FrameCodec::default().decode_frame(bytes).unwrap()
}
