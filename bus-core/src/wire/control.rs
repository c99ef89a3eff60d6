//! Control messages: the bodies of handshake, interest and gossip frames.
//!
//! These are plain data. Every one is a struct encoded with named fields (see
//! [`body`](super::body)), so a later protocol version can add a field: fields marked
//! `#[serde(default)]` may be absent, and unknown fields are ignored. The rules for when each is
//! sent and what the receiver does are specified with the state machines that use them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::body::{decode_body, encode_body};
use super::frame::{Frame, FrameCodec, FrameError, FrameKind};

/// The protocol version this build speaks.
///
/// Version 2 added event credit ([`Credit`]): a version 1 node would send events without it,
/// so the two do not connect. Version 3 added groups ([`GroupInterest`]): a version 2 node
/// would take a group's events as ungrouped, and deliver them to every subscriber.
pub const PROTOCOL_VERSION: u16 = 3;

/// The most names of one kind a decoded [`Interest`] keeps: a peer cannot make us allocate for
/// more. The limit belongs to the message, so the interest state uses this constant.
pub const MAX_NAMES: usize = 16 * 1024;

/// A control message: a body type tied to one frame kind.
pub trait ControlMessage: Serialize + DeserializeOwned {
    /// The kind of the frame that carries this message.
    const KIND: FrameKind;

    /// A frame of [`KIND`](Self::KIND) carrying this message, with no name, request id or
    /// headers.
    ///
    /// # Errors
    ///
    /// [`FrameError::EncodeBody`] if the message does not encode.
    fn to_frame(&self) -> Result<Frame, FrameError> {
        Ok(Frame::new(Self::KIND, encode_body(self)?))
    }

    /// The message carried by `frame`.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] if the frame is of another kind; [`FrameError::DecodeBody`] if
    /// its body is not this message.
    fn from_frame(frame: &Frame) -> Result<Self, FrameError> {
        if frame.kind != Self::KIND {
            return Err(FrameError::Malformed {
                what: "frame kind does not match the control message",
            });
        }
        decode_body(&frame.body)
    }
}

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionRange {
    /// The oldest version supported.
    pub min: u16,
    /// The newest version supported.
    pub max: u16,
}

impl VersionRange {
    /// The versions this build speaks: just [`PROTOCOL_VERSION`].
    pub const CURRENT: VersionRange = VersionRange {
        min: PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// Whether `version` is in the range.
    pub fn contains(self, version: u16) -> bool {
        self.min <= version && version <= self.max
    }

    /// The highest version in both ranges: what the responder to a `Hello` picks. `None` (an
    /// empty or inverted range included) means the responder rejects with
    /// [`RejectReason::VersionMismatch`].
    pub fn highest_common(self, other: VersionRange) -> Option<u16> {
        let low = self.min.max(other.min);
        let high = self.max.min(other.max);
        (low <= high).then_some(high)
    }
}

/// Who a node is, as it tells its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// The 128-bit node id, derived from the node's static key (`NodeId::from_public_key`).
    pub node_id: u128,
    /// Random per start; tells a restarted node from stale news about its previous run.
    pub incarnation: u64,
    /// A human-readable name, for logs.
    #[serde(default)]
    pub name: String,
    /// The network: nodes of another network are never peers.
    pub network: String,
    /// The cluster label, used for scoping.
    pub cluster: String,
    /// Stable per machine; equal host ids mean the same machine (`Machine` scope, `unix://`).
    pub host_id: String,
    /// The addresses peers should dial (advertised, never `0.0.0.0`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The node's static public key, whose hash is its `node_id`; absent in a hand-written
    /// identity. Carried in handshakes, gossip and adverts so that whoever hears of a node
    /// knows its key; an identity whose key does not give its node id is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<crate::trust::PublicKey>,
}

impl PeerIdentity {
    /// The most addresses an identity may advertise. A handshake carrying more is refused, and
    /// a gossiped entry with more is ignored: what one node makes its peers store and dial is
    /// bounded.
    pub const MAX_ADDRESSES: usize = 16;

    /// The longest name, network, cluster, host id or address an identity may carry, in bytes;
    /// enforced as [`MAX_ADDRESSES`](Self::MAX_ADDRESSES) is.
    pub const MAX_FIELD_LEN: usize = 256;

    /// Whether the identity is within [`MAX_ADDRESSES`](Self::MAX_ADDRESSES) and
    /// [`MAX_FIELD_LEN`](Self::MAX_FIELD_LEN): what a handshake and gossip accept.
    pub fn within_limits(&self) -> bool {
        within_limits(
            [&self.name, &self.network, &self.cluster, &self.host_id],
            &self.addresses,
        ) && key_matches(self.node_id, self.public_key.as_ref())
    }
}

/// Whether `key`, if there is one, is the key of node `node_id`.
fn key_matches(node_id: u128, key: Option<&crate::trust::PublicKey>) -> bool {
    key.is_none_or(|k| k.node_id().as_u128() == node_id)
}

/// The one check behind [`PeerIdentity::within_limits`] and [`GossipEntry::within_limits`], so
/// a handshake and gossip accept the same identities.
fn within_limits(fields: [&String; 4], addresses: &[String]) -> bool {
    fields
        .iter()
        .all(|s| s.len() <= PeerIdentity::MAX_FIELD_LEN)
        && addresses.len() <= PeerIdentity::MAX_ADDRESSES
        && addresses
            .iter()
            .all(|a| a.len() <= PeerIdentity::MAX_FIELD_LEN)
}

/// The dialling side's opening of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the dialler speaks.
    pub versions: VersionRange,
    /// The dialler.
    pub identity: PeerIdentity,
    /// The largest frame the dialler accepts after the handshake.
    pub max_frame_size: u32,
}

impl ControlMessage for Hello {
    const KIND: FrameKind = FrameKind::Hello;
}

/// The accepting side's acceptance of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version chosen: the highest both sides speak.
    pub version: u16,
    /// The accepting node.
    pub identity: PeerIdentity,
    /// The largest frame the accepting node accepts after the handshake.
    pub max_frame_size: u32,
}

impl ControlMessage for Welcome {
    const KIND: FrameKind = FrameKind::Welcome;
}

/// Why a handshake was refused.
///
/// On the wire it is a short string code (`"self_dial"`, `"wrong_network"`,
/// `"version_mismatch"`, `"duplicate"`, `"unauthorized"`, `"invalid_identity"`), so a node can read reasons added by
/// later versions: it gets them as [`Other`](RejectReason::Other) with the code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The node dialled itself.
    SelfDial,
    /// The dialler belongs to another network.
    WrongNetwork,
    /// The two nodes share no protocol version.
    VersionMismatch,
    /// A connection to this node already exists and wins over this one.
    Duplicate,
    /// The dialler's credentials were refused.
    Unauthorized,
    /// The dialler's identity is out of bounds: more than
    /// [`PeerIdentity::MAX_ADDRESSES`] addresses, a field over
    /// [`PeerIdentity::MAX_FIELD_LEN`] bytes, or an incarnation far ahead of the acceptor's
    /// clock.
    InvalidIdentity,
    /// A reason code this version does not know.
    Other(String),
}

impl RejectReason {
    /// The code on the wire.
    pub fn code(&self) -> &str {
        match self {
            RejectReason::SelfDial => "self_dial",
            RejectReason::WrongNetwork => "wrong_network",
            RejectReason::VersionMismatch => "version_mismatch",
            RejectReason::Duplicate => "duplicate",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::InvalidIdentity => "invalid_identity",
            RejectReason::Other(code) => code,
        }
    }

    /// The reason of a wire code.
    pub fn from_code(code: &str) -> Self {
        match code {
            "self_dial" => RejectReason::SelfDial,
            "wrong_network" => RejectReason::WrongNetwork,
            "version_mismatch" => RejectReason::VersionMismatch,
            "duplicate" => RejectReason::Duplicate,
            "unauthorized" => RejectReason::Unauthorized,
            "invalid_identity" => RejectReason::InvalidIdentity,
            other => RejectReason::Other(other.to_owned()),
        }
    }
}

impl Serialize for RejectReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Ok(RejectReason::from_code(&code))
    }
}

/// The accepting side's refusal of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Why, as a value.
    pub reason: RejectReason,
    /// Why, for humans.
    #[serde(default)]
    pub message: String,
}

impl ControlMessage for Reject {
    const KIND: FrameKind = FrameKind::Reject;
}

/// Why a node says goodbye.
///
/// On the wire it is a string code (`"shutdown"`); unknown codes arrive as
/// [`Other`](GoodbyeReason::Other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoodbyeReason {
    /// The node is shutting down.
    Shutdown,
    /// Not the end of the node: another connection between the two nodes replaced this one,
    /// and the sender will send nothing new on it (replies to what it received still come).
    /// Each end closes a replaced connection once it has this notice from the other end and
    /// its own work on the connection is done, so nothing either end sent before learning of
    /// the replacement is lost.
    Replaced,
    /// A reason code this version does not know.
    Other(String),
}

impl GoodbyeReason {
    /// The code on the wire.
    pub fn code(&self) -> &str {
        match self {
            GoodbyeReason::Shutdown => "shutdown",
            GoodbyeReason::Replaced => "replaced",
            GoodbyeReason::Other(code) => code,
        }
    }

    /// The reason of a wire code.
    pub fn from_code(code: &str) -> Self {
        match code {
            "shutdown" => GoodbyeReason::Shutdown,
            "replaced" => GoodbyeReason::Replaced,
            other => GoodbyeReason::Other(other.to_owned()),
        }
    }
}

impl Serialize for GoodbyeReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for GoodbyeReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Ok(GoodbyeReason::from_code(&code))
    }
}

/// A node leaving on purpose, so that peers drop it at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
}

impl ControlMessage for Goodbye {
    const KIND: FrameKind = FrameKind::Goodbye;
}

/// The command names a node handles and the event names it subscribes to.
///
/// A snapshot (`snapshot: true`) lists everything in the `*_added` fields and leaves the
/// `*_removed` fields empty; a delta lists changes since the previous sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// The sender's interest sequence number; consecutive deltas differ by one.
    pub seq: u64,
    /// Whether this is a full snapshot rather than a delta.
    pub snapshot: bool,
    /// Command names now handled.
    #[serde(default, deserialize_with = "names")]
    pub commands_added: Vec<String>,
    /// Command names no longer handled.
    #[serde(default, deserialize_with = "names")]
    pub commands_removed: Vec<String>,
    /// Event names now subscribed to.
    #[serde(default, deserialize_with = "names")]
    pub events_added: Vec<String>,
    /// Event names no longer subscribed to.
    #[serde(default, deserialize_with = "names")]
    pub events_removed: Vec<String>,
    /// Groups now joined, or whose membership changed (its `since`).
    #[serde(default, deserialize_with = "groups")]
    pub groups_added: Vec<GroupInterest>,
    /// Groups left.
    #[serde(default, deserialize_with = "group_keys")]
    pub groups_removed: Vec<GroupKey>,
}

/// Groups: the first [`MAX_NAMES`] are kept, the rest ignored.
fn groups<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<GroupInterest>, D::Error> {
    super::body::first_n::<D, GroupInterest, MAX_NAMES>(d)
}

/// Groups left: the first [`MAX_NAMES`] are kept, the rest ignored.
fn group_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<GroupKey>, D::Error> {
    super::body::first_n::<D, GroupKey, MAX_NAMES>(d)
}

/// A list of message names: the first [`MAX_NAMES`] are kept, the rest ignored.
fn names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    super::body::first_n::<D, String, MAX_NAMES>(d)
}

impl ControlMessage for Interest {
    const KIND: FrameKind = FrameKind::Interest;
}

/// The body of a `ReplyError` frame: why a command got no reply from the node it was sent to.
///
/// `kind` is an [`ErrorKind::code`](crate::ErrorKind::code); a code the receiver does not know
/// reads as `handler_failed`, so newer nodes can add kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// The error kind's code: `handler_failed`, `overloaded`, `no_handler`, `decode`, ...
    pub kind: String,
    /// For `handler_failed`, the handler's own message (its `Err` text or panic message);
    /// otherwise a human-readable detail.
    #[serde(default)]
    pub message: String,
}

impl ReplyError {
    /// A reply error of `kind` with `message`.
    pub fn new(kind: crate::ErrorKind, message: impl Into<String>) -> Self {
        ReplyError {
            kind: kind.code().to_owned(),
            message: message.into(),
        }
    }

    /// The error kind it carries.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::from_code(&self.kind)
    }
}

impl ControlMessage for ReplyError {
    const KIND: FrameKind = FrameKind::ReplyError;
}

/// The encoded answer to request `id`: a `Reply` carrying `outcome`'s body, or a `ReplyError`.
/// A reply `codec` refuses (over the peer's frame limit) is answered with a `TooLarge` error
/// instead; `None` only if even that does not encode.
pub fn encode_answer(
    codec: &FrameCodec,
    id: u64,
    outcome: Result<bytes::Bytes, ReplyError>,
) -> Option<bytes::Bytes> {
    let mut frame = match outcome {
        Ok(body) => Frame::new(FrameKind::Reply, body),
        Err(e) => e.to_frame().ok()?,
    };
    frame.request_id = id;
    match codec.encode_to_bytes(&frame) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            let mut err = ReplyError::new(crate::ErrorKind::TooLarge, e.to_string())
                .to_frame()
                .ok()?;
            err.request_id = id;
            codec.encode_to_bytes(&err).ok()
        }
    }
}

/// Asks the peer for a fresh [`Interest`] snapshot, after a gap in its delta sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestRequest {
    /// The last sequence number the asker applied, if any.
    #[serde(default)]
    pub have_seq: Option<u64>,
}

impl ControlMessage for InterestRequest {
    const KIND: FrameKind = FrameKind::InterestRequest;
}

/// Room for events: how many events of each name the receiver of this message may send on this
/// connection, counted from its start.
///
/// A node sends one for every event name it subscribes to when it announces its interest on a
/// connection, then again as its subscriptions take those events off their queues. Limits are
/// cumulative (the total allowed since the connection began, not an increment), so a newer
/// `Credit` replaces an older one for the same name and a lower limit than one already received
/// changes nothing. A node that sends events of a name beyond the limit it was given breaks the
/// protocol: the connection is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// One entry per event name; at most [`MAX_NAMES`] are read.
    #[serde(default, deserialize_with = "grants")]
    pub grants: Vec<Grant>,
}

/// The room granted for one event name: see [`Credit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The event name.
    pub name: String,
    /// How many events of this name may be sent on this connection in all, from its start.
    pub limit: u64,
    /// What the sender of events does when it has sent `limit` of them: `true`, wait for more
    /// room (the subscriptions use [`FullPolicy::Wait`](crate::FullPolicy::Wait)); `false`,
    /// drop the event before sending it (they all use `DropNewest`).
    pub wait: bool,
    /// The grant's number, rising with every grant the sender makes for this name on this
    /// connection: `wait` is read only from a grant newer than any seen (grants may overtake
    /// each other on the way). 0: unnumbered.
    #[serde(default)]
    pub seq: u64,
    /// The window the limit was reckoned with (`limit` = consumed + `window`): what the sender
    /// of events may take as consumed when the grant was made. 0: not said.
    #[serde(default)]
    pub window: u32,
}

fn grants<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Grant>, D::Error> {
    super::body::first_n::<D, Grant, MAX_NAMES>(d)
}

impl ControlMessage for Credit {
    const KIND: FrameKind = FrameKind::Credit;
}

/// The state of a member of the mesh, as gossiped.
///
/// On the wire it is a string code in a [`GossipEntry`] (`"alive"`, `"dead"`, `"left"`); its
/// rank (`0`, `1`, `2`) goes into the [`entry_hash`]. For one incarnation the states only move
/// forward in rank order, so a higher rank is newer news about the same incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// The node is running.
    Alive,
    /// The node was declared dead (silent past the peer timeout): a tombstone.
    Dead,
    /// The node said goodbye: a tombstone.
    Left,
}

impl MemberState {
    /// The rank of the state: news of one incarnation with a higher rank supersedes news with
    /// a lower one.
    pub const fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Dead => 1,
            MemberState::Left => 2,
        }
    }

    /// Whether the state is a tombstone (`Dead` or `Left`).
    pub const fn is_tombstone(self) -> bool {
        !matches!(self, MemberState::Alive)
    }
}

/// What a node knows of one member, as gossiped: its identity and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The member's node id.
    pub node_id: u128,
    /// The member's incarnation; a higher one supersedes news of a lower one.
    pub incarnation: u64,
    /// A human-readable name, for logs.
    #[serde(default)]
    pub name: String,
    /// Its network.
    pub network: String,
    /// Its cluster.
    pub cluster: String,
    /// Its host id.
    pub host_id: String,
    /// The addresses it advertises.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Alive, or a tombstone for this incarnation.
    pub state: MemberState,
    /// For a tombstone, how long the sender will still keep it, in milliseconds; 0 (or absent)
    /// means "use your own default". Relative, so clocks need not agree.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl_ms: u64,
    /// The member's static public key, if the sender knows it (see
    /// [`PeerIdentity::public_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<crate::trust::PublicKey>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl GossipEntry {
    /// The entry of an identity in `state`, with no tombstone lifetime.
    pub fn from_identity(identity: &PeerIdentity, state: MemberState) -> Self {
        GossipEntry {
            node_id: identity.node_id,
            incarnation: identity.incarnation,
            name: identity.name.clone(),
            network: identity.network.clone(),
            cluster: identity.cluster.clone(),
            host_id: identity.host_id.clone(),
            addresses: identity.addresses.clone(),
            state,
            ttl_ms: 0,
            public_key: identity.public_key,
        }
    }

    /// The identity part of the entry.
    pub fn identity(&self) -> PeerIdentity {
        PeerIdentity {
            node_id: self.node_id,
            incarnation: self.incarnation,
            name: self.name.clone(),
            network: self.network.clone(),
            cluster: self.cluster.clone(),
            host_id: self.host_id.clone(),
            addresses: self.addresses.clone(),
            public_key: self.public_key,
        }
    }

    /// Whether the entry's identity is within the limits a handshake accepts
    /// ([`PeerIdentity::within_limits`]).
    pub fn within_limits(&self) -> bool {
        within_limits(
            [&self.name, &self.network, &self.cluster, &self.host_id],
            &self.addresses,
        ) && key_matches(self.node_id, self.public_key.as_ref())
    }

    /// The version of the entry's news, `(incarnation, state rank)`: higher is newer.
    pub const fn version(&self) -> (u64, u8) {
        (self.incarnation, self.state.rank())
    }

    /// The [`entry_hash`] of the entry.
    pub fn hash(&self) -> u64 {
        entry_hash(self.node_id, self.incarnation, self.state)
    }
}

/// The hash of one entry's version, `(node id, incarnation, state rank)`: what a
/// [`GossipSummary`] lists and a [`GossipDelta`] wants, and what the table hash in a
/// [`GossipDigest`] sums.
///
/// Fixed so every build of every node agrees: splitmix64's finalizer `mix`, applied as
/// `mix(mix(mix(mix(low 64 bits of the id) ^ high 64 bits) ^ incarnation) ^ rank)`.
pub fn entry_hash(node_id: u128, incarnation: u64, state: MemberState) -> u64 {
    let mut h = mix(node_id as u64);
    h = mix(h ^ (node_id >> 64) as u64);
    h = mix(h ^ incarnation);
    mix(h ^ u64::from(state.rank()))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The opening of a gossip round: a digest of the sender's whole table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// The wrapping sum of the [`entry_hash`] of every entry (so order does not matter).
    pub hash: u64,
    /// The number of entries.
    pub count: u32,
}

/// The answer to a [`GossipDigest`] that does not match: the [`entry_hash`] of every entry
/// the sender holds (9 bytes each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipSummary {
    /// The sender's table hash, for logs and checks.
    pub hash: u64,
    /// One [`entry_hash`] per entry.
    #[serde(default)]
    pub entries: Vec<u64>,
}

/// The difference: entries the receiver lacks or holds older versions of, and the entries
/// of the receiver's summary the sender wants in return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDelta {
    /// Entries newer than (or missing from) the receiver's table.
    #[serde(default)]
    pub entries: Vec<GossipEntry>,
    /// [`entry_hash`]es from the receiver's [`GossipSummary`] that the sender does not hold
    /// (it lacks the node or holds another version); the receiver answers with a delta of the
    /// entries that still have these hashes (and an empty `want`).
    #[serde(default)]
    pub want: Vec<u64>,
}

/// The body of a [`Gossip`](FrameKind::Gossip) frame.
///
/// Encoded as a one-entry map from the variant name to its body (`{"Digest": {..}}`). A round
/// is `Digest` → (on mismatch) `Summary` → `Delta` → (if it wanted something) `Delta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GossipMessage {
    /// The opening of a round.
    Digest(GossipDigest),
    /// The answer to a digest that does not match.
    Summary(GossipSummary),
    /// The difference.
    Delta(GossipDelta),
}

impl ControlMessage for GossipMessage {
    const KIND: FrameKind = FrameKind::Gossip;
}

mod groups;

pub use groups::{
    group_channel, split_group_channel, GroupInterest, GroupKey, GroupKind, GROUP_SEPARATOR,
};

#[cfg(test)]
mod tests;
