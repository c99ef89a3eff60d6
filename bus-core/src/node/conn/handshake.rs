//! The connection's handshake, under the handshake's own deadline, with the acceptor's early
//! arbitration against an established connection.

use super::*;

/// A failed handshake: why, and whether the acceptor refused it as a duplicate.
pub(super) struct HandshakeFailed {
    pub(super) error: Error,
    pub(super) duplicate: bool,
}

impl From<Error> for HandshakeFailed {
    fn from(error: Error) -> Self {
        HandshakeFailed {
            error,
            duplicate: false,
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
        }
    }
}

impl From<crate::wire::FrameError> for HandshakeFailed {
    fn from(err: crate::wire::FrameError) -> Self {
        Error::from(err).into()
    }
}

/// Runs the handshake, all of it (our `Hello`, the peer's frame, our answer) within the
/// handshake's own deadline.
pub(super) async fn handshake(
    node: &NodeShared,
    reader: &mut dyn FrameReader,
    writer: &mut dyn FrameWriter,
    side: Side,
) -> Result<Established, HandshakeFailed> {
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
    let exchange = async {
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
                Ok(established)
            }
            Step::Refused { send, reject } => {
                let _ = writer.write_batch(&mut vec![encode(&codec, &send)?]).await;
                Err(Error::new(ErrorKind::Unauthorized)
                    .with_detail(format!(
                        "refused the peer ({}): {}",
                        reject.reason.code(),
                        reject.message
                    ))
                    .into())
            }
        }
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
