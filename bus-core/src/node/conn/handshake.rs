//! The connection's handshake, under the handshake's own deadline, with the acceptor's early
//! arbitration against an established connection.

use super::*;
use crate::proto::noise::{
    NoiseConfig, NoiseError, SecureHandshake, SecureStep, Session, MAX_UNIT,
};
use crate::transport::{SealedReader, SealedWriter};
use crate::trust::PublicKey;

/// A failed handshake: why, whether the acceptor refused it as a duplicate, the peer's
/// static key if the secure handshake got that far, and, when this node refused the peer (at
/// the acceptor: a wrong key, garbage), why, for the log and the host's penalty.
pub(super) struct HandshakeFailed {
    pub(super) error: Error,
    pub(super) duplicate: bool,
    pub(super) peer: Option<PublicKey>,
    pub(super) refused: Option<&'static str>,
}

impl HandshakeFailed {
    fn refused(error: Error, why: &'static str) -> Self {
        HandshakeFailed {
            error,
            duplicate: false,
            peer: None,
            refused: Some(why),
        }
    }
}

impl From<Error> for HandshakeFailed {
    fn from(error: Error) -> Self {
        HandshakeFailed {
            error,
            duplicate: false,
            peer: None,
            refused: None,
        }
    }
}

impl From<HandshakeError> for HandshakeFailed {
    fn from(err: HandshakeError) -> Self {
        let duplicate = matches!(
            err,
            HandshakeError::Rejected {
                reason: RejectReason::Duplicate,
                ..
            }
        );
        HandshakeFailed {
            error: err.into(),
            duplicate,
            peer: None,
            refused: None,
        }
    }
}

impl From<crate::wire::FrameError> for HandshakeFailed {
    fn from(err: crate::wire::FrameError) -> Self {
        Error::from(err).into()
    }
}

/// The halves of a connection: plain until the secure handshake completes, sealed after.
pub(super) struct Halves {
    pub(super) reader: Box<dyn FrameReader>,
    pub(super) writer: Box<dyn FrameWriter>,
}

/// Runs the handshake, all of it (the secure handshake, then our `Hello`, the peer's frame,
/// our answer) within the handshake's own deadline. The halves come back sealed once the
/// secure handshake completed, whatever happened next.
pub(super) async fn handshake(
    node: &NodeShared,
    halves: &mut Halves,
    side: Side,
) -> Result<(Established, PublicKey), HandshakeFailed> {
    let codec = FrameCodec::handshake();
    let now = now_std();
    let local = node.local.load();
    let (hs, hello) = match side {
        Side::Outbound => {
            let (hs, hello) = Handshake::dial(&local, now)?;
            (hs, Some(hello))
        }
        Side::Inbound => (Handshake::accept(&local, now)?, None),
    };
    let mut hs = hs.with_wall_clock(crate::node::unix_micros_now());
    let Some(deadline) = hs.deadline() else {
        return Err(HandshakeError::Finished.into());
    };
    let trust = node.trust.load_full();
    let exchange = async {
        let (session, last) = secure(&trust, halves, side).await?;
        let remote = session.remote_key();
        let (sealer, opener) = session.split();
        replace_with(halves, |Halves { reader, writer }| Halves {
            reader: Box::new(SealedReader::new(reader, opener)),
            writer: Box::new(SealedWriter::new(writer, sealer, last)),
        });
        let (reader, writer) = (&mut *halves.reader, &mut *halves.writer);
        hs.expect_peer_key(remote);
        let hello_exchange = async {
            if let Some(hello) = hello {
                writer
                    .write_batch(&mut vec![encode(&codec, &hello)?])
                    .await?;
            }
            let frame = read_frame(reader, &codec).await?;
            let step = hs.on_frame_with(frame, now_std(), |peer| existing_key(node, peer))?;
            match step {
                Step::Established { send, established } => {
                    if let Some(f) = send {
                        writer.write_batch(&mut vec![encode(&codec, &f)?]).await?;
                    }
                    Ok((established, remote))
                }
                Step::Refused { send, reject } => {
                    let _ = writer.write_batch(&mut vec![encode(&codec, &send)?]).await;
                    // An identity that is not the peer's own (another node's id) is an
                    // attempt to impersonate: logged and charged like a wrong key.
                    let refused = (reject.reason == RejectReason::InvalidIdentity)
                        .then_some("its Hello claims an identity not its own, or out of bounds");
                    Err(HandshakeFailed {
                        error: Error::new(ErrorKind::Unauthorized).with_detail(format!(
                            "refused the peer ({}): {}",
                            reject.reason.code(),
                            reject.message
                        )),
                        duplicate: false,
                        peer: None,
                        refused,
                    })
                }
            }
        };
        hello_exchange.await.map_err(|mut failed: HandshakeFailed| {
            failed.peer = Some(remote);
            failed
        })
    };
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), exchange).await {
        Ok(outcome) => outcome,
        // The timer fires at the handshake's deadline, where the handshake has timed out.
        Err(_) => Err(hs
            .poll_timeout(now_std())
            .err()
            .unwrap_or(HandshakeError::TimedOut)
            .into()),
    }
}

/// Replaces the halves through `f`, which takes them by value.
fn replace_with(halves: &mut Halves, f: impl FnOnce(Halves) -> Halves) {
    let taken = std::mem::replace(
        halves,
        Halves {
            reader: Box::new(Gone),
            writer: Box::new(Gone),
        },
    );
    *halves = f(taken);
}

/// The secure handshake: units in clear until both ends hold the session's keys. Returns the
/// session and, for the dialler, its last unit, still to be written (with the `Hello`).
async fn secure(
    trust: &NoiseConfig,
    halves: &mut Halves,
    side: Side,
) -> Result<(Session, Option<Bytes>), HandshakeFailed> {
    let (reader, writer) = (&mut *halves.reader, &mut *halves.writer);
    let (mut hs, mut send) = match side {
        Side::Outbound => {
            let (hs, init) = SecureHandshake::dial(trust).map_err(Error::from)?;
            (hs, Some(init))
        }
        Side::Inbound => (SecureHandshake::accept(trust), None),
    };
    loop {
        if let Some(unit) = send.take() {
            writer.write_batch(&mut vec![unit]).await?;
        }
        let unit = loop {
            match reader.read(MAX_UNIT - crate::wire::PREFIX_LEN).await {
                Ok(ReadEvent::Frame(bytes)) => break bytes,
                Ok(ReadEvent::Partial) => {}
                // The dialler gave up after we refused its key: that is a refusal. Any
                // other close is not one (an acceptor that turns a connection away before its
                // handshake, busy or holding its host to a rate, closes it unanswered).
                Ok(_) if hs.refused_a_key() => {
                    let why = "it holds none of this node's network keys";
                    return Err(HandshakeFailed::refused(
                        Error::new(ErrorKind::Unauthorized).with_detail(why),
                        why,
                    ));
                }
                Ok(_) => {
                    return Err(Error::new(ErrorKind::Io)
                        .with_detail(
                            "the connection closed before the secure handshake completed \
                             (the other node may be busy, or holding this host to its handshake rate)",
                        )
                        .into())
                }
                // A link that failed (reset, broken) is no fault of the dialler's.
                Err(e) if e.kind() == ErrorKind::Io => return Err(e.into()),
                Err(e) => {
                    return Err(HandshakeFailed::refused(
                        e,
                        "it sent what is not a handshake unit",
                    ))
                }
            }
        };
        match hs.on_unit(&unit) {
            Ok(SecureStep::Send(unit)) => send = Some(unit),
            // The dialler's `Finish` goes out with its `Hello`; the acceptor has none.
            Ok(SecureStep::Done { send, session }) => return Ok((session, send)),
            Ok(SecureStep::Refuse { send, why }) => {
                let _ = writer.write_batch(&mut vec![send]).await;
                return Err(HandshakeFailed::refused(
                    Error::new(ErrorKind::Unauthorized)
                        .with_detail(format!("refused the peer: {why}")),
                    why,
                ));
            }
            Err(e) => {
                let why = match e {
                    NoiseError::Malformed(why) => why,
                    _ => "its handshake failed",
                };
                return Err(HandshakeFailed::refused(e.into(), why));
            }
        }
    }
}

/// A stand-in for halves being replaced.
#[derive(Debug)]
struct Gone;

#[async_trait::async_trait]
impl FrameReader for Gone {
    async fn read(&mut self, _limit: usize) -> Result<ReadEvent, Error> {
        Err(Error::closed())
    }
}

#[async_trait::async_trait]
impl FrameWriter for Gone {
    async fn write_batch(&mut self, _frames: &mut Vec<Bytes>) -> Result<(), Error> {
        Err(Error::closed())
    }
    async fn close(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// The key of our established connection to node `peer`, read from the routing snapshot
/// (no lock): what the acceptor arbitrates against before it answers a `Hello`.
pub(super) fn existing_key(node: &NodeShared, peer: u128) -> Option<ConnectionKey> {
    let routes = node.routes.load();
    routes
        .peers
        .iter()
        // A connection already failing or replaced is not one to keep over the new one.
        .find(|p| p.identity.node_id == peer && p.is_available())
        .map(|p| p.key)
}

/// Reads one whole frame (partial reads are skipped: the handshake has its own deadline).
pub(super) async fn read_frame(
    reader: &mut dyn FrameReader,
    codec: &FrameCodec,
) -> Result<Frame, Error> {
    loop {
        match reader.read(codec.max_frame_size).await? {
            ReadEvent::Frame(bytes) => return decode(codec, bytes),
            ReadEvent::Closed => {
                return Err(Error::new(ErrorKind::Io).with_detail("closed during the handshake"))
            }
            _ => {}
        }
    }
}

pub(super) fn decode(codec: &FrameCodec, bytes: Bytes) -> Result<Frame, Error> {
    Ok(codec.decode_frame(bytes)?)
}
