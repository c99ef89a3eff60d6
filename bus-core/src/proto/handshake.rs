//! The handshake of a new connection, and which of two connections to one peer survives.
//!
//! The dialling side sends `Hello`; the accepting side answers `Welcome` or `Reject`; that is the
//! whole exchange, one frame each way. Until it completes both sides read and write with
//! [`FrameCodec::handshake()`] (64 KiB); afterwards each side decodes with its own
//! `max_frame_size` and encodes with [`Established::send_limit`], the smaller of the two limits.
//!
//! ```
//! use std::time::Instant;
//! use meshbus_core::proto::handshake::{Handshake, LocalNode, Step};
//! use meshbus_core::wire::control::PeerIdentity;
//!
//! # fn main() -> Result<(), meshbus_core::proto::handshake::HandshakeError> {
//! let node = |node_id| PeerIdentity {
//!     node_id,
//!     incarnation: 1,
//!     name: String::new(),
//!     network: "default".into(),
//!     cluster: "shop".into(),
//!     host_id: "host-1".into(),
//!     addresses: Vec::new(),
//!     public_key: None,
//! };
//! let now = Instant::now();
//! let (mut dialler, hello) = Handshake::dial(&LocalNode::new(node(1)), now)?;
//! let mut acceptor = Handshake::accept(&LocalNode::new(node(2)), now)?;
//!
//! let Step::Established { send: Some(welcome), established: at_acceptor } =
//!     acceptor.on_frame(hello, now)?
//! else {
//!     panic!("node 2 accepts node 1");
//! };
//! let Step::Established { established: at_dialler, .. } = dialler.on_frame(welcome, now)? else {
//!     panic!("node 1 is welcomed");
//! };
//! assert_eq!(at_acceptor.peer.node_id, 1);
//! assert_eq!(at_dialler.peer.node_id, 2);
//! assert_eq!(at_dialler.version, at_acceptor.version);
//! # Ok(())
//! # }
//! ```
//!
//! # Connection arbitration
//!
//! Two nodes that dial each other at once end up with two connections, and a node that restarts
//! may dial a peer that still holds the old, half-open connection. [`arbitrate`] decides which
//! connection survives, from facts both ends know, so that each end reaches the same decision
//! without another message. A replaced connection is not cut: it drains. Both ends fence it
//! with `Goodbye { replaced }`, finish what is already under way on it (within a bound), then
//! close it; new work goes to the survivor. So nothing queued is lost or sent twice.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::wire::control::{
    ControlMessage, Hello, PeerIdentity, Reject, RejectReason, VersionRange, Welcome,
};
use crate::wire::HANDSHAKE_MAX_FRAME_SIZE;
use crate::wire::{Frame, FrameCodec, FrameError, FrameKind, DEFAULT_MAX_FRAME_SIZE};

/// How long a handshake may take by default: 10 s from dialling or accepting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest `max_frame_size` a node may announce: the handshake limit, 64 KiB. Every node
/// reads frames of that size before the handshake, so none may ask for less after it.
pub const MIN_MAX_FRAME_SIZE: u32 = HANDSHAKE_MAX_FRAME_SIZE as u32;

const DEFAULT_LIMIT: u32 = DEFAULT_MAX_FRAME_SIZE as u32;
const _: () = assert!(DEFAULT_MAX_FRAME_SIZE <= u32::MAX as usize);
const _: () = assert!(HANDSHAKE_MAX_FRAME_SIZE <= u32::MAX as usize);

/// How far ahead of this node's wall clock a peer's incarnation may be: a day.
///
/// An incarnation is the microsecond its run started ([`PeerIdentity::incarnation`]), plus one
/// per refutation of a rumour of its death, so a genuine one is at most the peer's clock (plus
/// a few microseconds). Clocks of machines in one mesh disagree by far less than a day, even one
/// set to local time instead of UTC (at most 14 hours off), and no node refutes billions of
/// times; an incarnation beyond that was made up. Refusing it matters because incarnations only
/// grow: one pushed towards `u64::MAX` could never be superseded by the node's real next run.
pub const MAX_INCARNATION_LEAD: Duration = Duration::from_secs(24 * 60 * 60);

const MAX_INCARNATION_LEAD_MICROS: u64 = MAX_INCARNATION_LEAD.as_micros() as u64;

/// The longest handshake timeout accepted: a day. Bounding it keeps `now + timeout` from
/// overflowing `Instant`.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Which end of a connection this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node dialled: it sent `Hello`.
    Outbound,
    /// The peer dialled: this node answered its `Hello`.
    Inbound,
}

/// What the handshake agreed: the connection is ready for traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Established {
    /// Who the peer is.
    pub peer: PeerIdentity,
    /// The protocol version chosen for the connection.
    pub version: u16,
    /// The largest frame the peer accepts.
    pub peer_max_frame_size: u32,
    /// The largest frame this node accepts (what it announced).
    pub local_max_frame_size: u32,
    /// Which end dialled.
    pub direction: Direction,
}

impl Established {
    /// The largest frame this node sends on the connection: the smaller of the two limits.
    pub fn send_limit(&self) -> usize {
        limit(self.peer_max_frame_size.min(self.local_max_frame_size))
    }

    /// The codec for frames this node sends: limited by [`send_limit`](Self::send_limit).
    pub fn send_codec(&self) -> FrameCodec {
        FrameCodec::with_max_frame_size(self.send_limit())
    }

    /// The codec for frames this node receives: limited by its own `max_frame_size`.
    pub fn receive_codec(&self) -> FrameCodec {
        FrameCodec::with_max_frame_size(limit(self.local_max_frame_size))
    }

    /// What [`arbitrate`] needs to know about this connection.
    pub fn key(&self) -> ConnectionKey {
        ConnectionKey {
            direction: self.direction,
            peer_incarnation: self.peer.incarnation,
        }
    }
}

fn limit(bytes: u32) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// What to do after [`Handshake::on_frame`].
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// The handshake completed. Write `send` first if there is one (the acceptor's `Welcome`,
    /// or a `Reject` of its own if [`arbitrate`] refuses the connection), then switch to the
    /// codecs of `established`.
    Established {
        /// The frame to write: `Some(Welcome)` at the acceptor, `None` at the dialler.
        send: Option<Frame>,
        /// What was agreed.
        established: Established,
    },
    /// This node, the acceptor, refuses the dialler: write `send` (the `Reject` frame), then
    /// close the connection.
    Refused {
        /// The `Reject` frame.
        send: Frame,
        /// What it says.
        reject: Reject,
    },
}

/// Why a handshake failed. Every error ends the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not complete by its deadline.
    #[error("the handshake timed out")]
    TimedOut,
    /// The peer answered our `Hello` with `Reject`.
    #[error("the peer rejected the handshake ({}): {message}", reason.code())]
    Rejected {
        /// Why, as the peer said.
        reason: RejectReason,
        /// The peer's explanation, for humans.
        message: String,
    },
    /// We refused the peer's `Welcome`: it came from this node's own id, or from another
    /// network.
    #[error("refused the peer's welcome ({})", reason.code())]
    Refused {
        /// Why.
        reason: RejectReason,
    },
    /// A frame of a kind the handshake does not expect at this point.
    #[error("expected {expected} during the handshake, got {got}")]
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        got: FrameKind,
    },
    /// The peer broke a rule of the handshake.
    #[error("handshake protocol violation: {0}")]
    Protocol(&'static str),
    /// A handshake frame's body is not the message its kind says.
    #[error("malformed handshake message")]
    Malformed(#[source] FrameError),
    /// A handshake message of ours did not encode.
    #[error("handshake message does not encode")]
    Encode(#[source] FrameError),
    /// The local configuration is unusable.
    #[error("invalid handshake configuration: {0}")]
    Config(&'static str),
    /// A frame was fed to a handshake that has already completed or failed.
    #[error("the handshake is over")]
    Finished,
}

impl From<HandshakeError> for crate::Error {
    fn from(err: HandshakeError) -> Self {
        use crate::ErrorKind;
        let reason_kind = |reason: &RejectReason| match reason {
            RejectReason::VersionMismatch => ErrorKind::VersionMismatch,
            RejectReason::Unauthorized => ErrorKind::Unauthorized,
            // Our identity is out of the bounds peers accept: too many listen addresses, or a
            // clock far off.
            RejectReason::SelfDial | RejectReason::WrongNetwork | RejectReason::InvalidIdentity => {
                ErrorKind::Config
            }
            // Duplicate: the other connection to that peer lives on; unknown codes: the peer
            // hung up for a reason we cannot name.
            _ => ErrorKind::Closed,
        };
        let kind = match &err {
            HandshakeError::TimedOut => ErrorKind::Timeout,
            HandshakeError::Rejected { reason, .. } | HandshakeError::Refused { reason } => {
                reason_kind(reason)
            }
            HandshakeError::UnexpectedFrame { .. }
            | HandshakeError::Protocol(_)
            | HandshakeError::Malformed(_)
            | HandshakeError::Encode(_) => ErrorKind::Decode,
            HandshakeError::Config(_) => ErrorKind::Config,
            HandshakeError::Finished => ErrorKind::Closed,
        };
        crate::Error::new(kind)
            .with_detail(err.to_string())
            .with_source(err)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's one frame.
    Waiting,
    /// Completed, refused or failed: nothing more to do.
    Over,
}

/// The handshake of one connection, from either end.
///
/// Feed it every frame read before the handshake completes (decoded with
/// [`codec`](Self::codec)) and arm a timer for [`deadline`](Self::deadline).
#[derive(Debug)]
pub struct Handshake {
    local: LocalNode,
    direction: Direction,
    deadline: Instant,
    state: State,
    /// This node's wall clock in microseconds since the UNIX epoch, if the runtime gave it.
    wall_clock_micros: Option<u64>,
    /// The peer's static key, proven by the secure handshake: its node id must be this key's.
    peer_key: Option<crate::trust::PublicKey>,
}

impl Handshake {
    /// Starts dialling: returns the handshake and the `Hello` frame to write.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Config`] when [`LocalNode::validate`] fails.
    pub fn dial(local: &LocalNode, now: Instant) -> Result<(Handshake, Frame), HandshakeError> {
        let handshake = Handshake::new(local, Direction::Outbound, now)?;
        let hello = local.hello().to_frame().map_err(HandshakeError::Encode)?;
        Ok((handshake, hello))
    }

    /// Starts accepting a connection: waits for the dialler's `Hello`.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Config`] when [`LocalNode::validate`] fails.
    pub fn accept(local: &LocalNode, now: Instant) -> Result<Handshake, HandshakeError> {
        Handshake::new(local, Direction::Inbound, now)
    }

    fn new(local: &LocalNode, direction: Direction, now: Instant) -> Result<Self, HandshakeError> {
        local.validate()?;
        let deadline = now
            .checked_add(local.handshake_timeout)
            .ok_or(HandshakeError::Config("the handshake deadline overflows"))?;
        Ok(Handshake {
            local: local.clone(),
            direction,
            deadline,
            state: State::Waiting,
            wall_clock_micros: None,
            peer_key: None,
        })
    }

    /// Gives the handshake this node's wall clock, in microseconds since the UNIX epoch, so
    /// that a peer's incarnation more than [`MAX_INCARNATION_LEAD`] ahead of it is refused.
    ///
    /// The handshake reads no clock itself (it is sans-io); the runtime reads the wall clock
    /// when the connection opens, which is near enough for a tolerance of a day. Without it
    /// (tests, fuzzing) incarnations are not checked against a clock; every other limit is.
    pub fn with_wall_clock(mut self, micros_since_epoch: u64) -> Self {
        self.wall_clock_micros = Some(micros_since_epoch);
        self
    }

    /// Gives the handshake the static key the secure handshake proved the peer holds: a
    /// `Hello` or `Welcome` whose node id is not [that key's](crate::NodeId::from_public_key)
    /// is refused (`InvalidIdentity` at the acceptor, a protocol error at the dialler), so no
    /// node can claim another's id. Without it (tests, fuzzing) node ids are not checked.
    pub fn expect_peer_key(&mut self, key: crate::trust::PublicKey) {
        self.peer_key = Some(key);
    }

    /// The codec to read and write with until the handshake completes: 64 KiB frames.
    pub fn codec(&self) -> FrameCodec {
        FrameCodec::handshake()
    }

    /// Which end of the connection this node is.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// When the handshake times out, while it is waiting for the peer; `None` once it is over.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state == State::Waiting).then_some(self.deadline)
    }

    /// Whether the handshake has completed, been refused or failed.
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    /// Checks the deadline.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::TimedOut`] when the handshake is still waiting and `now` is at or past
    /// its [`deadline`](Self::deadline); the handshake is then over.
    pub fn poll_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if self.state == State::Waiting && now >= self.deadline {
            self.state = State::Over;
            return Err(HandshakeError::TimedOut);
        }
        Ok(())
    }

    /// Handles the peer's frame: `Hello` at the acceptor, `Welcome` or `Reject` at the
    /// dialler. The same as [`on_frame_with`](Self::on_frame_with) for a node with no
    /// connection to the peer.
    ///
    /// # Errors
    ///
    /// As [`on_frame_with`](Self::on_frame_with).
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<Step, HandshakeError> {
        self.on_frame_with(frame, now, |_| None)
    }

    /// Handles the peer's frame: `Hello` at the acceptor, `Welcome` or `Reject` at the
    /// dialler.
    ///
    /// The acceptor refuses a `Hello` from its own node id (`SelfDial`), from another network
    /// (`WrongNetwork`), with no version in common (`VersionMismatch`) or with an identity out
    /// of bounds (`InvalidIdentity`: more than [`PeerIdentity::MAX_ADDRESSES`] addresses, a
    /// field over [`PeerIdentity::MAX_FIELD_LEN`] bytes, or an incarnation more than
    /// [`MAX_INCARNATION_LEAD`] ahead of the [wall clock](Self::with_wall_clock)), answering
    /// with a `Reject` ([`Step::Refused`]). It then asks `existing` for the key of this node's
    /// established connection to the dialler's node id, if there is one, and refuses with
    /// `Reject { reason: Duplicate }` when [`arbitrate`] would keep that connection or refuse
    /// the new one: the dialler learns it at once, instead of being welcomed and then
    /// dropped. (The runtime still arbitrates when the connection completes; a connection
    /// established meanwhile is settled there.) The dialler does not call `existing`.
    /// Whatever the outcome, the handshake is over afterwards.
    ///
    /// # Errors
    ///
    /// - [`HandshakeError::Rejected`]: the acceptor sent `Reject`.
    /// - [`HandshakeError::Refused`]: a `Welcome` from our own node id or another network.
    /// - [`HandshakeError::Protocol`]: a `Welcome` whose identity is out of bounds (as above).
    /// - [`HandshakeError::UnexpectedFrame`]: any other kind of frame.
    /// - [`HandshakeError::Malformed`]: the body is not the message of its kind.
    /// - [`HandshakeError::Protocol`]: a `Welcome` choosing a version we did not offer, or a
    ///   peer announcing a `max_frame_size` under [`MIN_MAX_FRAME_SIZE`].
    /// - [`HandshakeError::TimedOut`]: `now` is at or past the deadline.
    /// - [`HandshakeError::Finished`]: the handshake was already over.
    pub fn on_frame_with(
        &mut self,
        frame: Frame,
        now: Instant,
        existing: impl FnOnce(u128) -> Option<ConnectionKey>,
    ) -> Result<Step, HandshakeError> {
        if self.state == State::Over {
            return Err(HandshakeError::Finished);
        }
        // One frame each way: whatever this one is, the handshake ends with it.
        self.state = State::Over;
        if now >= self.deadline {
            return Err(HandshakeError::TimedOut);
        }
        match self.direction {
            Direction::Inbound => self.on_hello(&frame, existing),
            Direction::Outbound => self.on_answer(&frame),
        }
    }

    fn on_hello(
        &self,
        frame: &Frame,
        existing: impl FnOnce(u128) -> Option<ConnectionKey>,
    ) -> Result<Step, HandshakeError> {
        if frame.kind != FrameKind::Hello {
            return Err(HandshakeError::UnexpectedFrame {
                expected: "Hello",
                got: frame.kind,
            });
        }
        let hello = Hello::from_frame(frame).map_err(HandshakeError::Malformed)?;
        let ours = &self.local.identity;
        if hello.identity.node_id == ours.node_id {
            return refuse(RejectReason::SelfDial, "this is the dialler's own node id");
        }
        if hello.identity.network != ours.network {
            return refuse(
                RejectReason::WrongNetwork,
                "this node is in another network",
            );
        }
        let Some(version) = self.local.versions.highest_common(hello.versions) else {
            let VersionRange { min, max } = self.local.versions;
            return refuse(
                RejectReason::VersionMismatch,
                format!("this node speaks protocol versions {min} to {max}"),
            );
        };
        if let Err(why) = self.check_identity(&hello.identity) {
            return refuse(RejectReason::InvalidIdentity, why);
        }
        check_peer_limit(hello.max_frame_size)?;
        let new = ConnectionKey {
            direction: Direction::Inbound,
            peer_incarnation: hello.identity.incarnation,
        };
        if let Some(old) = existing(hello.identity.node_id) {
            match arbitrate(ours.node_id, hello.identity.node_id, old, new) {
                Arbitration::ReplaceWithNew => {}
                Arbitration::KeepExisting | Arbitration::RejectNew { .. } => {
                    return refuse(
                        RejectReason::Duplicate,
                        "this node keeps its established connection to the dialler",
                    );
                }
            }
        }
        let welcome = Welcome {
            version,
            identity: ours.clone(),
            max_frame_size: self.local.max_frame_size,
        }
        .to_frame()
        .map_err(HandshakeError::Encode)?;
        Ok(Step::Established {
            send: Some(welcome),
            established: Established {
                peer: hello.identity,
                version,
                peer_max_frame_size: hello.max_frame_size,
                local_max_frame_size: self.local.max_frame_size,
                direction: Direction::Inbound,
            },
        })
    }

    fn on_answer(&self, frame: &Frame) -> Result<Step, HandshakeError> {
        match frame.kind {
            FrameKind::Welcome => {}
            FrameKind::Reject => {
                let reject = Reject::from_frame(frame).map_err(HandshakeError::Malformed)?;
                return Err(HandshakeError::Rejected {
                    reason: reject.reason,
                    message: reject.message,
                });
            }
            got => {
                return Err(HandshakeError::UnexpectedFrame {
                    expected: "Welcome or Reject",
                    got,
                })
            }
        }
        let welcome = Welcome::from_frame(frame).map_err(HandshakeError::Malformed)?;
        if !self.local.versions.contains(welcome.version) {
            return Err(HandshakeError::Protocol(
                "Welcome chose a version the Hello did not offer",
            ));
        }
        // The acceptor should have refused these; a dialler does not rely on it.
        let ours = &self.local.identity;
        if welcome.identity.node_id == ours.node_id {
            return Err(HandshakeError::Refused {
                reason: RejectReason::SelfDial,
            });
        }
        if welcome.identity.network != ours.network {
            return Err(HandshakeError::Refused {
                reason: RejectReason::WrongNetwork,
            });
        }
        if let Err(why) = self.check_identity(&welcome.identity) {
            return Err(HandshakeError::Protocol(why));
        }
        check_peer_limit(welcome.max_frame_size)?;
        Ok(Step::Established {
            send: None,
            established: Established {
                peer: welcome.identity,
                version: welcome.version,
                peer_max_frame_size: welcome.max_frame_size,
                local_max_frame_size: self.local.max_frame_size,
                direction: Direction::Outbound,
            },
        })
    }
}

impl Handshake {
    /// Whether a peer's identity is one this node takes: within the sizes gossip keeps, and
    /// with an incarnation not far ahead of our clock. `Err` says why not.
    fn check_identity(&self, identity: &PeerIdentity) -> Result<(), &'static str> {
        if !identity.within_limits() {
            return Err("the identity has more than 16 addresses, a field over 256 bytes, or a public key that is not its node id's");
        }
        if let Some(key) = &self.peer_key {
            if crate::NodeId::from_public_key(key).as_u128() != identity.node_id {
                return Err(
                    "the node id is not the one of the static key the peer proved it holds",
                );
            }
            if identity.public_key.is_some_and(|k| k != *key) {
                return Err("the public key is not the static key the peer proved it holds");
            }
        }
        if let Some(wall) = self.wall_clock_micros {
            if identity.incarnation > wall.saturating_add(MAX_INCARNATION_LEAD_MICROS) {
                return Err("the incarnation is more than a day ahead of this node's clock");
            }
        }
        Ok(())
    }
}

fn refuse(reason: RejectReason, message: impl Into<String>) -> Result<Step, HandshakeError> {
    let reject = Reject {
        reason,
        message: message.into(),
    };
    let send = reject.to_frame().map_err(HandshakeError::Encode)?;
    Ok(Step::Refused { send, reject })
}

fn check_peer_limit(max_frame_size: u32) -> Result<(), HandshakeError> {
    if max_frame_size < MIN_MAX_FRAME_SIZE {
        return Err(HandshakeError::Protocol(
            "the peer's max_frame_size is under the 64 KiB handshake limit",
        ));
    }
    Ok(())
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        })
    }
}

mod arbitrate;
mod local;

pub use arbitrate::{arbitrate, Arbitration, ConnectionKey};
pub use local::LocalNode;

#[cfg(test)]
mod tests;
