//! Membership: the peer table, digest-based gossip, tombstones and the redial schedule.
//!
//! [`Membership`] is plain state. The runtime feeds it what happened — a connection came up
//! ([`on_connected`](Membership::on_connected)) or went down, a peer said goodbye or timed out,
//! a dial failed, a gossip message arrived — and the current time, and gets back
//! [`Output`]s: gossip messages to send, nodes that joined or left, dials to start. It never
//! reads a clock: [`poll_timeout`](Membership::poll_timeout) says when it next wants
//! [`handle_timeout`](Membership::handle_timeout). Inputs about a connection carry the
//! incarnation its handshake reached and are ignored if the table holds another run of the
//! node.
//!
//! # The table
//!
//! One [`Member`] per node of our network that we know of, our own node included (so that
//! gossip carries it; it is never dialled). Entries of another network are ignored. A member's
//! news has a version `(incarnation, state rank)`: a higher incarnation is a newer run of the
//! node, and within one incarnation `Alive < Dead < Left`. News is taken only if it is newer
//! than what the table holds, which is what keeps a node that left from being resurrected by
//! stale gossip: its entry stays as a *tombstone* (state `Dead` or `Left`) until it expires.
//! A live member we cannot reach is buried as `Dead` (see Dialling), so stale news that
//! outlives a tombstone, or junk a peer gossips, cannot stay alive in the table for ever; a
//! full table evicts tombstones and unreachable members before it refuses news.
//!
//! # Gossip
//!
//! Every [`gossip_interval`](MembershipConfig::gossip_interval) a node sends a
//! [`GossipDigest`] (a hash of every entry's version and the entry count, 44 bytes with
//! the frame header) to [`gossip_fanout`](MembershipConfig::gossip_fanout) connected peers
//! picked at random. A peer whose table hashes the same answers nothing: that is the steady
//! state. Otherwise it answers with a [`GossipSummary`] (the 64-bit
//! [`entry_hash`] of every entry's version), the opener answers that with a [`GossipDelta`]
//! holding the entries whose version the peer lacks and the hashes it lacks itself, and the
//! peer sends those entries in a last delta. A peer that knows less than half of what we do
//! (a node joining) gets our whole table at once instead of a summary. No message is over
//! [`max_message_size`](MembershipConfig::max_message_size) or the link's send limit: bigger
//! deltas are split.
//!
//! # Dialling
//!
//! A node dials every live member it can reach up to [`max_peers`](MembershipConfig::max_peers)
//! links, and the seed addresses it was given until it knows the node behind them. Failed dials
//! are retried with exponential [`Backoff`] and seeded jitter; an address learned from gossip,
//! discovery or a handshake is forgotten after
//! [`forget_after_failures`](MembershipConfig::forget_after_failures) consecutive failures,
//! a seed address never is, and the node connecting to us or a discovery answer for it brings
//! its advertised addresses back. A member with no address left, or failing every dial for
//! [`unreachable_timeout`](MembershipConfig::unreachable_timeout), is buried as `Dead`. A
//! link that keeps dropping is redialled with a growing backoff (its flap count). Which nodes
//! we link to and how traffic reaches a node is decided in one place, [`Membership::route`],
//! so that relaying can be added there later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

pub use crate::wire::control::MemberState;
use crate::wire::control::{
    entry_hash, GossipDelta, GossipDigest, GossipEntry, GossipMessage, GossipSummary, PeerIdentity,
};
use crate::NodeId;

#[cfg(test)]
mod tests;

/// The most addresses kept for one member; gossip entries with more are ignored (the bound a
/// handshake enforces too).
const MAX_ADDRESSES: usize = PeerIdentity::MAX_ADDRESSES;

/// The longest field kept (the tests build entries at the bound).
#[cfg(test)]
const MAX_FIELD_LEN: usize = PeerIdentity::MAX_FIELD_LEN;

/// The longest duration a setting may have: a day.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The highest [`dial_rate`](MembershipConfig::dial_rate), per second.
pub const MAX_DIAL_RATE: u32 = 10_000;

/// The smallest [`max_message_size`](MembershipConfig::max_message_size): room for the
/// largest entry we keep, several times over.
pub const MIN_MESSAGE_SIZE: usize = 16 * 1024;

/// What a gossip message costs on top of its entries and hashes, at most: the frame prefix and
/// header, the compression prefix and the message's own envelope (variant name, field names,
/// array headers).
const MESSAGE_OVERHEAD: usize = 128;

/// The most an entry hash costs in an encoded list (a MessagePack `uint64`).
const HASH_SIZE: usize = 9;

/// An upper bound of the encoded size of `entry` inside a message: its strings with their
/// longest headers, plus the field names and fixed-size fields (a `u128` id, two `u64`s, the
/// state code) with room to spare.
fn entry_size_bound(entry: &GossipEntry) -> usize {
    const FIXED: usize = 160;
    const STR_HEADER: usize = 5;
    [&entry.name, &entry.network, &entry.cluster, &entry.host_id]
        .into_iter()
        .chain(&entry.addresses)
        .fold(FIXED, |size, s| {
            size.saturating_add(s.len()).saturating_add(STR_HEADER)
        })
}

/// Exponential backoff with jitter: `min(cap, base × 2^attempt)`, then multiplied by a random
/// factor in `[1 − jitter, 1 + jitter]`.
///
/// So a delay is never more than `cap × (1 + jitter)`; at the cap, the jitter still spreads
/// redials of many nodes apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry (attempt 0), before jitter.
    pub base: Duration,
    /// The largest delay before jitter.
    pub cap: Duration,
    /// The jitter fraction, clamped to `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s, ±20 %.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay of retry number `attempt` (0 for the first) before jitter:
    /// `min(cap, base × 2^attempt)`.
    pub fn centre(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay of retry number `attempt`, with jitter drawn from `rng` (one draw per call,
    /// whatever the jitter, so a seeded run replays).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let centre = self.centre(attempt);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (rng.f64() * 2.0 - 1.0);
        Duration::try_from_secs_f64(centre.as_secs_f64() * factor).unwrap_or(centre)
    }
}

/// The knobs of [`Membership`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// The most nodes we keep links to (dialled or being dialled; seeds included). Default 256.
    pub max_peers: usize,
    /// The most entries the table holds, tombstones included. When it is full, news of a
    /// further node first evicts a tombstone or a member we cannot reach, and is dropped if
    /// there is none. Bounds what a peer can make us store. Default 4096.
    pub max_members: usize,
    /// How often a gossip round starts. Default 1 s.
    pub gossip_interval: Duration,
    /// How many connected peers each round's digest goes to. Default 1.
    pub gossip_fanout: usize,
    /// Consecutive failed dials after which an address that is not a seed is forgotten.
    /// Default 5.
    pub forget_after_failures: u32,
    /// The redial schedule.
    pub backoff: Backoff,
    /// How long a tombstone is kept. It must outlive any stale news of the node still
    /// travelling; after it expires, such news brings the node back until it is found
    /// unreachable and buried again. Default 5 min.
    pub tombstone_ttl: Duration,
    /// How long a live member may go on failing every dial (counted from the first failure
    /// since we were last connected to it) before it is buried as `Dead`. A member with no
    /// address left to dial is buried at once. Default 5 min.
    pub unreachable_timeout: Duration,
    /// The largest gossip message we send, in bytes as framed; bigger answers are split.
    /// The runtime passes the send limit of each link to
    /// [`handle_gossip`](Membership::handle_gossip), and the smaller of the two applies.
    /// At least [`MIN_MESSAGE_SIZE`]. Default 512 KiB.
    pub max_message_size: usize,
    /// The seed of the random source (gossip partners, jitter).
    pub rng_seed: u64,
    /// The address schemes we can dial (`"tcp"`, `"ws"`), lower-case; empty means every
    /// scheme. A member none of whose addresses we can dial is never dialled nor buried by
    /// us: it is [`Route::Unreachable`] from here, and stays a member for the nodes that
    /// share a transport with it. Default empty.
    pub schemes: Vec<String>,
    /// Schemes that reach only nodes of our own host id, such as `"unix"` (a socket path means
    /// nothing on another machine). Default `["unix"]`.
    pub same_host_schemes: Vec<String>,
    /// The most dials under way at once (seeds included): a dial is under way from when it
    /// is handed out until it is reported failed or succeeded. Default 8.
    pub max_dials_in_flight: usize,
    /// How many dials may start per second, on average (a token bucket refilled at this
    /// rate). Default 64.
    pub dial_rate: u32,
    /// How many dials may start at once after a quiet spell (the token bucket's size).
    /// Default 8.
    pub dial_burst: u32,
    /// The most nodes new to the table that one peer's gossip may bring in per
    /// [`gossip_interval`](Self::gossip_interval); further new nodes in its deltas are
    /// ignored (news of nodes we hold is not counted). Default 64, the default `dial_rate`
    /// per default interval, so that one peer cannot bring in members faster than we can
    /// try them.
    pub max_introductions: usize,
}

impl MembershipConfig {
    /// Checks the configuration; [`Membership::new`] calls it.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when `max_peers`, `max_members` (which
    /// counts our own entry), `gossip_fanout` or `forget_after_failures` is zero, a duration
    /// (the gossip interval, the backoff base and cap, the tombstone lifetime, the
    /// unreachable timeout) is zero or over a day, the backoff cap is under its base, the
    /// jitter is not a number in `0.0..=1.0`, `max_message_size` is under
    /// [`MIN_MESSAGE_SIZE`], `max_dials_in_flight`, `dial_rate`, `dial_burst` or
    /// `max_introductions` is zero, or `dial_rate` is over [`MAX_DIAL_RATE`]. A zero interval
    /// or backoff would make [`poll_timeout`](Membership::poll_timeout) always due: a busy
    /// loop; a zero dial rate would never dial.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.max_peers == 0
            || self.max_members < 2
            || self.gossip_fanout == 0
            || self.forget_after_failures == 0
        {
            return Err(crate::Error::config(
                "max_peers, gossip_fanout and forget_after_failures must be above zero, \
                 max_members at least 2",
            ));
        }
        if self.max_dials_in_flight == 0
            || self.dial_rate == 0
            || self.dial_rate > MAX_DIAL_RATE
            || self.dial_burst == 0
            || self.max_introductions == 0
        {
            return Err(crate::Error::config(
                "max_dials_in_flight, dial_burst and max_introductions must be above zero, \
                 dial_rate within 1..=10000 per second",
            ));
        }
        for d in [
            self.gossip_interval,
            self.backoff.base,
            self.backoff.cap,
            self.tombstone_ttl,
            self.unreachable_timeout,
        ] {
            if d.is_zero() || d > MAX_DURATION {
                return Err(crate::Error::config(
                    "membership durations must be above zero and at most a day",
                ));
            }
        }
        if self.backoff.cap < self.backoff.base {
            return Err(crate::Error::config(
                "the backoff cap must not be under its base",
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter) {
            return Err(crate::Error::config(
                "the backoff jitter must be within 0.0..=1.0",
            ));
        }
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return Err(crate::Error::config(
                "max_message_size must be at least 16 KiB",
            ));
        }
        Ok(())
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            max_peers: 256,
            max_members: 4096,
            gossip_interval: Duration::from_secs(1),
            gossip_fanout: 1,
            forget_after_failures: 5,
            backoff: Backoff::default(),
            tombstone_ttl: Duration::from_secs(300),
            unreachable_timeout: Duration::from_secs(300),
            max_message_size: 512 * 1024,
            rng_seed: 0,
            schemes: Vec::new(),
            same_host_schemes: vec!["unix".to_owned()],
            max_dials_in_flight: 8,
            dial_rate: 64,
            dial_burst: 8,
            max_introductions: 64,
        }
    }
}

/// How we learned of a member or of one of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// It is our own node.
    Local,
    /// A seed address given in the configuration.
    Seed,
    /// Gossip from a peer.
    Gossip,
    /// A discovery service (for example mDNS).
    Discovery,
    /// A handshake with the node itself.
    Direct,
}

/// One address of a member and how dialling it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    addr: String,
    source: Source,
    failures: u32,
    forgotten: bool,
    /// Whether we have a transport for it, decided once when it is added (or the member's
    /// host id changes), so that no timer or route question parses addresses.
    dialable: bool,
}

impl Address {
    /// The address (`tcp://host:port`, ...).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How we learned it.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Consecutive failed dials.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether it is no longer dialled, after too many failures.
    pub fn is_forgotten(&self) -> bool {
        self.forgotten
    }

    /// Whether we can dial it: a scheme we have a transport for, and a same-host scheme only
    /// for a node of our host id.
    pub fn is_dialable(&self) -> bool {
        self.dialable
    }
}

/// Which addresses we can dial: our schemes, and the same-host rule.
#[derive(Debug, Clone)]
struct DialRules {
    schemes: Vec<String>,
    same_host_schemes: Vec<String>,
    host_id: String,
}

impl DialRules {
    /// Whether we can dial `addr` of a node on host `host_id`: a scheme we have a transport
    /// for, and a same-host scheme only for a node of our host id.
    fn can_dial(&self, host_id: &str, addr: &str) -> bool {
        let Ok(parsed) = crate::transport::Addr::parse(addr) else {
            return false;
        };
        if parsed.has_unspecified_host() {
            // `0.0.0.0` would reach whatever listens on our own machine.
            return false;
        }
        let scheme = parsed.scheme();
        let ours = self.schemes.is_empty() || self.schemes.iter().any(|s| s == scheme);
        let same_host_only = self.same_host_schemes.iter().any(|s| s == scheme);
        ours && (!same_host_only || host_id == self.host_id)
    }
}

/// Where a member sits in the indexes of [`Membership`]: kept on the member so that a
/// change moves it in O(log n) instead of the table being scanned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Keys {
    /// Its [`entry_hash`], in the table hash.
    hash: u64,
    /// A live member other than ourselves.
    alive: bool,
    /// Counted as a link.
    connected: bool,
    /// A dial of it is under way.
    in_flight: bool,
    /// When it is next due a dial, and whether it is in the probation queue.
    dial: Option<(Instant, bool)>,
    /// When it is to be buried as unreachable.
    burial: Option<Instant>,
    /// When its tombstone expires.
    expiry: Option<Instant>,
    /// It shares no transport with us: when it last changed (the eviction order).
    foreign: Option<Instant>,
}

/// What a peer's gossip has cost us lately, and which answers we expect from it.
#[derive(Debug, Clone, Copy, Default)]
struct PeerGossip {
    /// The start of the current introduction window.
    window: Option<Instant>,
    /// Nodes new to the table it brought in during the window.
    introduced: usize,
    /// When we last answered a digest of it with more than nothing.
    answered: Option<Instant>,
    /// We sent it a digest: one summary in answer is read.
    awaiting_summary: bool,
    /// We sent it a summary: the `want` of one delta in answer is served.
    awaiting_want: bool,
}

/// Dials of one address failed lately, across every member that advertises it.
#[derive(Debug, Clone, Copy)]
struct AddrFailure {
    failures: u32,
    /// Until then, a member due a dial at this address counts a failure without a dial.
    retry_at: Instant,
}

/// When to dial next and how the last dials went.
#[derive(Debug, Clone, Copy)]
struct DialState {
    /// Consecutive failed dials.
    failures: u32,
    /// No dial before this.
    next_attempt: Instant,
    /// A dial was handed out and has not been reported yet.
    in_flight: bool,
}

impl DialState {
    fn new(now: Instant) -> Self {
        DialState {
            failures: 0,
            next_attempt: now,
            in_flight: false,
        }
    }
}

/// One node in the table.
#[derive(Debug, Clone)]
pub struct Member {
    identity: PeerIdentity,
    state: MemberState,
    learned: Source,
    changed_at: Instant,
    expires_at: Option<Instant>,
    connected: bool,
    /// When the current connection came up.
    up_since: Option<Instant>,
    /// When a dial first failed since we were last connected.
    unreachable_since: Option<Instant>,
    /// Connections that dropped before staying up for a backoff cap: the attempt number of
    /// the redial after the next drop.
    flaps: u32,
    addresses: Vec<Address>,
    dial: DialState,
    /// On probation: learned from gossip as a node new to the table, and never linked to
    /// since. Buried at its first failed dial.
    fresh: bool,
    keys: Keys,
    gossip: PeerGossip,
}

impl Member {
    /// A new entry, not yet indexed.
    fn new(identity: PeerIdentity, state: MemberState, learned: Source, now: Instant) -> Self {
        Member {
            identity,
            state,
            learned,
            changed_at: now,
            expires_at: None,
            connected: false,
            up_since: None,
            unreachable_since: None,
            flaps: 0,
            addresses: Vec::new(),
            dial: DialState::new(now),
            fresh: false,
            keys: Keys::default(),
            gossip: PeerGossip::default(),
        }
    }

    /// Whether it is on probation: learned from gossip as a node new to us and never linked
    /// to since, so buried at its first failed dial.
    pub fn is_on_probation(&self) -> bool {
        self.fresh
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_u128(self.identity.node_id)
    }

    /// The incarnation we know of.
    pub fn incarnation(&self) -> u64 {
        self.identity.incarnation
    }

    /// The node's identity as last heard (name, cluster, host id, advertised addresses).
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Alive, or a tombstone.
    pub fn state(&self) -> MemberState {
        self.state
    }

    /// How we learned of this incarnation.
    pub fn learned(&self) -> Source {
        self.learned
    }

    /// When the entry last changed version.
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }

    /// When a tombstone expires; `None` for a live member.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether the runtime reported a connection to the incarnation we hold that has not gone
    /// down since (news of a newer incarnation ends it: that link is to the old run).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The addresses we may dial it at, with how dialling them went.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The consecutive failed dials of the node, across its addresses.
    pub fn dial_failures(&self) -> u32 {
        self.dial.failures
    }

    /// When it may next be dialled.
    pub fn next_dial(&self) -> Instant {
        self.dial.next_attempt
    }

    /// Connections to it that dropped soon after coming up, recently: the backoff attempt of
    /// the redial after the next drop. Back to 0 once a connection stays up for a backoff cap.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// When a dial of it first failed since we were last connected; `None` while reachable.
    pub fn unreachable_since(&self) -> Option<Instant> {
        self.unreachable_since
    }

    fn version(&self) -> (u64, u8) {
        (self.identity.incarnation, self.state.rank())
    }

    fn hash(&self) -> u64 {
        entry_hash(self.identity.node_id, self.identity.incarnation, self.state)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Decides again which addresses we can dial, after the host id changed.
    fn refresh_dialable(&mut self, rules: &DialRules) {
        for a in &mut self.addresses {
            a.dialable = rules.can_dial(&self.identity.host_id, &a.addr);
        }
    }

    /// The address to dial next: of those we can dial, the one with the fewest failures,
    /// first listed on a tie.
    fn dial_address(&self) -> Option<&Address> {
        self.addresses
            .iter()
            .filter(|a| !a.forgotten && a.dialable)
            .min_by_key(|a| a.failures)
    }

    fn add_address(&mut self, addr: &str, source: Source, rules: &DialRules) {
        if let Some(known) = self.addresses.iter_mut().find(|a| a.addr == addr) {
            // A seed address stays a seed address, whoever else tells us of it.
            if source == Source::Seed {
                known.source = Source::Seed;
                known.forgotten = false;
            }
            // The node itself, or a discovery service that just heard from it, vouches for
            // the address: whatever failed before (a partition, a restart) is over.
            if matches!(source, Source::Seed | Source::Direct | Source::Discovery) {
                known.forgotten = false;
                known.failures = 0;
            }
            return;
        }
        if self.addresses.len() < MAX_ADDRESSES {
            let dialable = rules.can_dial(&self.identity.host_id, addr);
            self.addresses.push(Address {
                addr: addr.to_owned(),
                source,
                failures: 0,
                forgotten: false,
                dialable,
            });
        }
    }

    /// Whether any address is left that is not forgotten (usable by us or not).
    fn has_address(&self) -> bool {
        self.addresses.iter().any(|a| !a.forgotten)
    }

    fn entry(&self, now: Instant) -> GossipEntry {
        let mut entry = GossipEntry::from_identity(&self.identity, self.state);
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now).as_millis();
            entry.ttl_ms = u64::try_from(left).unwrap_or(u64::MAX).max(1);
        }
        entry
    }
}

/// A dial for the runtime to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRequest {
    /// The node expected at the address; `None` for a seed address whose node is not known.
    pub node: Option<NodeId>,
    /// The address to dial.
    pub addr: String,
}

/// How traffic reaches a node: the answer of [`Membership::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Over our own link to it.
    Direct,
    /// Not now, but we mean to link to it: a dial is scheduled or under way.
    Pending,
    /// Not at all: unknown, a tombstone, ourselves, or no address left to dial.
    Unreachable,
}

/// What [`Membership`] asks the runtime to do or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send this gossip message to that connected peer (in a [`Gossip`] frame).
    ///
    /// [`Gossip`]: crate::wire::FrameKind::Gossip
    SendTo(NodeId, GossipMessage),
    /// Dial this address.
    Dial(DialRequest),
    /// A node is now a live member (new, revived by a newer incarnation, or restarted).
    Joined(NodeId),
    /// A node is no longer a live member (goodbye, declared dead, or replaced by a newer
    /// incarnation, which is then reported as [`Joined`](Output::Joined)).
    Left(NodeId),
    /// Gossip said we are dead or gone; we took a higher incarnation to refute it. The runtime
    /// uses it in handshakes from now on.
    Refuted {
        /// Our new incarnation.
        incarnation: u64,
    },
}

/// A configured seed address and what we know of the node behind it.
#[derive(Debug, Clone)]
struct Seed {
    addr: String,
    /// The live node last found there; while it is live, it is dialled as a member instead.
    node: Option<NodeId>,
    dial: DialState,
}

/// The peer table of one node, with gossip, tombstones and the redial schedule. See the
/// [module docs](self).
///
/// Every question the timer asks is answered from indexes kept as the table changes (the
/// table hash, the links and dials under way, the next dial, burial and tombstone expiry,
/// the members sharing no transport with us), so an event costs O(log n), not a scan.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: NodeId,
    network: String,
    rules: DialRules,
    table: BTreeMap<NodeId, Member>,
    seeds: Vec<Seed>,
    rng: fastrand::Rng,
    /// The wrapping sum of every entry's hash.
    hash: u64,
    /// Live members other than ourselves.
    alive: usize,
    /// Members counted as links.
    connected: BTreeSet<NodeId>,
    /// Dials of members under way (seeds are counted apart).
    member_dials: usize,
    /// Members due a dial that we have been linked to, or learned otherwise than by gossip.
    dial_due: BTreeSet<(Instant, NodeId)>,
    /// Members on probation due a dial: tried after `dial_due`, so junk waits behind the
    /// nodes we know.
    probation_due: BTreeSet<(Instant, NodeId)>,
    burials: BTreeSet<(Instant, NodeId)>,
    expiries: BTreeSet<(Instant, NodeId)>,
    foreign: BTreeSet<(Instant, NodeId)>,
    /// Bumped whenever the set of foreign members changes.
    foreign_generation: u64,
    /// Dial tokens in the bucket, and when it was last refilled.
    tokens: u32,
    refilled_at: Instant,
    /// Addresses whose dials failed lately, with their order by `retry_at` (bounded by
    /// `max_members`, oldest dropped first).
    failed_addrs: HashMap<String, AddrFailure>,
    failed_order: BTreeSet<(Instant, String)>,
    /// Addresses a dial of a member is under way to: other members due at one wait for its
    /// outcome instead of dialling it again.
    dialling: HashSet<String>,
    /// The gossip budget shared by every peer not in the table (a full table may not hold
    /// each peer we are linked to).
    strangers: PeerGossip,
    next_gossip: Instant,
}

/// The highest node id: the end of a `(Instant, NodeId)` range.
const LAST_NODE: NodeId = NodeId::from_u128(u128::MAX);

/// Most members one call settles without dialling (a failure of their address counted for
/// them): bounds the work of one timer turn.
const MAX_SETTLED_PER_CALL: usize = 1024;

impl Membership {
    /// The table of the node `local`, which dials `seeds` until it knows the nodes behind them.
    ///
    /// A seed equal to one of our own advertised addresses is skipped.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error if the configuration does not
    /// [validate](MembershipConfig::validate).
    pub fn new(
        local: PeerIdentity,
        seeds: impl IntoIterator<Item = String>,
        config: MembershipConfig,
        now: Instant,
    ) -> Result<Self, crate::Error> {
        config.validate()?;
        let me = NodeId::from_u128(local.node_id);
        let network = local.network.clone();
        let rules = DialRules {
            schemes: config.schemes.clone(),
            same_host_schemes: config.same_host_schemes.clone(),
            host_id: local.host_id.clone(),
        };
        let mut membership = Membership::empty(config, me, network, rules, now);
        let own = Member::new(local, MemberState::Alive, Source::Local, now);
        membership.insert_member(me, own);
        membership.add_seeds(seeds, now);
        Ok(membership)
    }

    /// Adds seed addresses at run time (for example when every configured seed is gone for
    /// good): each is dialled at once, then with backoff like any seed until it reaches a
    /// node, and never forgotten. A seed already known is dialled again now if it is waiting
    /// out a backoff; one of our own addresses is skipped.
    pub fn add_seeds(&mut self, addrs: impl IntoIterator<Item = String>, now: Instant) {
        let own = self
            .table
            .get(&self.me)
            .map(|m| m.identity.addresses.clone())
            .unwrap_or_default();
        for addr in addrs {
            if own.contains(&addr) {
                continue;
            }
            match self.seeds.iter_mut().find(|s| s.addr == addr) {
                Some(seed) => {
                    if !seed.dial.in_flight {
                        seed.dial.next_attempt = now;
                    }
                }
                None => self.seeds.push(Seed {
                    addr,
                    node: None,
                    dial: DialState::new(now),
                }),
            }
        }
    }

    /// How many seed addresses we dial (configured and added).
    pub fn seed_count(&self) -> usize {
        self.seeds.len()
    }

    /// Whether we have anywhere to look for peers: a seed address, or a live member other than
    /// ourselves. A node with neither (the first of a mesh) waits to be dialled.
    pub fn has_somewhere_to_look(&self) -> bool {
        !self.seeds.is_empty() || self.live_members() > 0
    }

    /// A table with nothing in it, not even ourselves, its indexes empty.
    fn empty(
        config: MembershipConfig,
        me: NodeId,
        network: String,
        rules: DialRules,
        now: Instant,
    ) -> Self {
        Membership {
            rng: fastrand::Rng::with_seed(config.rng_seed),
            tokens: config.dial_burst,
            config,
            me,
            network,
            rules,
            table: BTreeMap::new(),
            seeds: Vec::new(),
            hash: 0,
            alive: 0,
            connected: BTreeSet::new(),
            member_dials: 0,
            dial_due: BTreeSet::new(),
            probation_due: BTreeSet::new(),
            burials: BTreeSet::new(),
            expiries: BTreeSet::new(),
            foreign: BTreeSet::new(),
            foreign_generation: 0,
            refilled_at: now,
            failed_addrs: HashMap::new(),
            failed_order: BTreeSet::new(),
            dialling: HashSet::new(),
            strangers: PeerGossip::default(),
            next_gossip: now,
        }
    }

    /// Where `m` belongs in the indexes.
    fn keys(&self, node: NodeId, m: &Member) -> Keys {
        let hash = m.hash();
        if node == self.me {
            return Keys {
                hash,
                ..Keys::default()
            };
        }
        let alive = m.state == MemberState::Alive;
        let dialable = m.dial_address().is_some();
        let pending = alive && !m.connected && dialable;
        Keys {
            hash,
            alive,
            connected: m.connected,
            in_flight: m.dial.in_flight,
            dial: (pending && !m.dial.in_flight).then_some((m.dial.next_attempt, m.fresh)),
            burial: self.burial_due(node, m),
            expiry: m.expires_at,
            foreign: (alive && !m.connected && m.has_address() && !dialable)
                .then_some(m.changed_at),
        }
    }

    /// Moves `node` from the index places `old` to `new`.
    fn move_keys(&mut self, node: NodeId, old: &Keys, new: &Keys) {
        self.hash = self.hash.wrapping_sub(old.hash).wrapping_add(new.hash);
        if old.alive != new.alive {
            if new.alive {
                self.alive += 1;
            } else {
                self.alive = self.alive.saturating_sub(1);
            }
        }
        if old.connected != new.connected {
            if new.connected {
                self.connected.insert(node);
            } else {
                self.connected.remove(&node);
            }
        }
        if old.in_flight != new.in_flight {
            if new.in_flight {
                self.member_dials += 1;
            } else {
                self.member_dials = self.member_dials.saturating_sub(1);
            }
        }
        if old.dial != new.dial {
            if let Some((at, probation)) = old.dial {
                let queue = if probation {
                    &mut self.probation_due
                } else {
                    &mut self.dial_due
                };
                queue.remove(&(at, node));
            }
            if let Some((at, probation)) = new.dial {
                let queue = if probation {
                    &mut self.probation_due
                } else {
                    &mut self.dial_due
                };
                queue.insert((at, node));
            }
        }
        for (set, old, new) in [
            (&mut self.burials, old.burial, new.burial),
            (&mut self.expiries, old.expiry, new.expiry),
        ] {
            if old != new {
                if let Some(at) = old {
                    set.remove(&(at, node));
                }
                if let Some(at) = new {
                    set.insert((at, node));
                }
            }
        }
        if old.foreign != new.foreign {
            if let Some(at) = old.foreign {
                self.foreign.remove(&(at, node));
            }
            if let Some(at) = new.foreign {
                self.foreign.insert((at, node));
            }
            if old.foreign.is_some() != new.foreign.is_some() {
                self.foreign_generation = self.foreign_generation.wrapping_add(1);
            }
        }
    }

    /// Puts `node` back in its index places after its entry changed.
    fn reindex(&mut self, node: NodeId) {
        let Some(m) = self.table.get(&node) else {
            return;
        };
        let (old, new) = (m.keys, self.keys(node, m));
        if old == new {
            return;
        }
        self.move_keys(node, &old, &new);
        if let Some(m) = self.table.get_mut(&node) {
            m.keys = new;
        }
    }

    fn insert_member(&mut self, node: NodeId, mut m: Member) {
        let new = self.keys(node, &m);
        m.keys = new;
        if let Some(old) = self.table.insert(node, m) {
            // Not expected: callers insert only ids the table lacks.
            self.move_keys(node, &old.keys, &Keys::default());
        }
        self.move_keys(node, &Keys::default(), &new);
    }

    fn remove_member(&mut self, node: NodeId) -> Option<Member> {
        let m = self.table.remove(&node)?;
        self.move_keys(node, &m.keys, &Keys::default());
        Some(m)
    }

    /// Every index rebuilt from the table equals the one kept: what the tests check after
    /// every step.
    #[cfg(test)]
    pub(crate) fn assert_indexes(&self) {
        let mut fresh = Membership::empty(
            self.config.clone(),
            self.me,
            self.network.clone(),
            self.rules.clone(),
            self.refilled_at,
        );
        for (id, m) in &self.table {
            assert_eq!(m.keys, self.keys(*id, m), "stale index keys of {id}");
            fresh.insert_member(*id, m.clone());
        }
        assert_eq!(fresh.hash, self.hash);
        assert_eq!(fresh.alive, self.alive);
        assert_eq!(fresh.connected, self.connected);
        assert_eq!(fresh.member_dials, self.member_dials);
        assert_eq!(fresh.dial_due, self.dial_due);
        assert_eq!(fresh.probation_due, self.probation_due);
        assert_eq!(fresh.burials, self.burials);
        assert_eq!(fresh.expiries, self.expiries);
        assert_eq!(fresh.foreign, self.foreign);
        assert_eq!(self.failed_addrs.len(), self.failed_order.len());
        assert!(self.failed_addrs.len() <= self.config.max_members);
    }

    /// Whether `node` is a live member that advertises addresses, none of which we can dial
    /// (it shares no transport with us). Such a node is reachable only by others.
    pub fn is_foreign(&self, node: NodeId) -> bool {
        self.table
            .get(&node)
            .is_some_and(|m| m.keys.foreign.is_some())
    }

    /// The live members that share no transport with us (see
    /// [`is_foreign`](Self::is_foreign)), in no particular order.
    pub fn foreign(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.foreign.iter().map(|(_, id)| *id)
    }

    /// A number that changes whenever the set of [`foreign`](Self::foreign) members does, so
    /// a caller can tell without comparing the sets.
    pub fn foreign_generation(&self) -> u64 {
        self.foreign_generation
    }

    /// Dials handed out and not yet reported, seeds included: never over
    /// [`max_dials_in_flight`](MembershipConfig::max_dials_in_flight).
    pub fn dials_in_flight(&self) -> usize {
        self.member_dials + self.seed_dials()
    }

    /// The live members other than ourselves.
    pub fn live_members(&self) -> usize {
        self.alive
    }

    /// Our own node id.
    pub fn local_id(&self) -> NodeId {
        self.me
    }

    /// Our own incarnation (higher than at start once we have [refuted](Output::Refuted)).
    pub fn local_incarnation(&self) -> u64 {
        self.table
            .get(&self.me)
            .map_or(0, |m| m.identity.incarnation)
    }

    /// The configuration.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Every entry, ours and tombstones included, in node id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table.values()
    }

    /// The live members other than ourselves.
    pub fn peers(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table
            .values()
            .filter(move |m| m.state == MemberState::Alive && m.node_id() != self.me)
    }

    /// The entry of `node`.
    pub fn member(&self, node: NodeId) -> Option<&Member> {
        self.table.get(&node)
    }

    /// The digest our next gossip round would open with.
    pub fn digest(&mut self) -> GossipDigest {
        GossipDigest {
            hash: self.hash,
            count: u32::try_from(self.table.len()).unwrap_or(u32::MAX),
        }
    }

    /// How traffic reaches `node`, and whether we want a link to it. The one place that
    /// decides both, so that relaying ("send via peer X") can be added here.
    pub fn route(&self, node: NodeId) -> Route {
        match self.table.get(&node) {
            Some(m) if node != self.me && m.state == MemberState::Alive => {
                if m.connected {
                    Route::Direct
                } else if m.dial_address().is_some() {
                    Route::Pending
                } else {
                    Route::Unreachable
                }
            }
            _ => Route::Unreachable,
        }
    }

    /// A connection to `identity`'s node is up (dialled or accepted), handshake done.
    ///
    /// A node of another network, or ourselves, is ignored. A node we hold a tombstone of for
    /// the same or a newer incarnation stays a tombstone (it is connected, so gossip tells it
    /// and it can [refute](Output::Refuted)). A connection to an older incarnation than the
    /// table's is not counted as a link to the node. The addresses the node advertises are
    /// dialled again even if they were forgotten, and the identity we gossip takes the link's
    /// addresses.
    pub fn on_connected(&mut self, identity: &PeerIdentity, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let node = NodeId::from_u128(identity.node_id);
        if identity.network != self.network || node == self.me {
            return out;
        }
        self.apply(
            GossipEntry::from_identity(identity, MemberState::Alive),
            Source::Direct,
            now,
            &mut out,
        );
        let valid = is_valid(&GossipEntry::from_identity(identity, MemberState::Alive));
        let rules = &self.rules;
        if let Some(m) = self.table.get_mut(&node) {
            if m.identity.incarnation != identity.incarnation {
                return out;
            }
            // The link's word on where the node can be reached wins over gossip of the same
            // run: the runtime resolved what the node itself advertises (`0.0.0.0` becomes the
            // host the link uses), and that is what we gossip on.
            if valid && m.identity.addresses != identity.addresses {
                m.identity.addresses.clone_from(&identity.addresses);
            }
            m.connected = true;
            m.fresh = false;
            m.up_since = Some(now);
            m.unreachable_since = None;
            m.dial.in_flight = false;
            m.dial.failures = 0;
            for addr in identity.addresses.iter().take(MAX_ADDRESSES) {
                m.add_address(addr, Source::Direct, rules);
            }
            self.reindex(node);
        }
        if valid {
            for addr in identity.addresses.iter().take(MAX_ADDRESSES) {
                self.clear_failed_addr(addr);
            }
        }
        out
    }

    /// The connection to `incarnation` of `node` went down without a goodbye. It stays a
    /// member and is redialled after a backoff whose attempt number is the member's
    /// [flap count](Member::flaps): a link that keeps dropping soon after coming up is
    /// redialled less and less often. Ignored if the table holds another incarnation of the
    /// node (the connection belonged to an older run) or no connection to it.
    pub fn on_disconnected(&mut self, node: NodeId, incarnation: u64, now: Instant) {
        let cap = self.config.backoff.cap;
        let Some(m) = self.table.get_mut(&node) else {
            return;
        };
        if m.identity.incarnation != incarnation || !m.connected {
            return;
        }
        let stable = m
            .up_since
            .is_some_and(|at| now.saturating_duration_since(at) >= cap);
        if stable {
            m.flaps = 0;
        }
        let attempt = m.flaps;
        m.flaps = m.flaps.saturating_add(1);
        m.connected = false;
        m.up_since = None;
        let delay = self.config.backoff.delay(attempt, &mut self.rng);
        m.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
        self.reindex(node);
    }

    /// `incarnation` of `node` said goodbye: it becomes a `Left` tombstone. Ignored if the
    /// table holds another incarnation of the node.
    pub fn on_goodbye(&mut self, node: NodeId, incarnation: u64, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.holds(node, incarnation) {
            self.bury(node, MemberState::Left, now, &mut out);
        }
        out
    }

    /// The connection to `incarnation` of `node` was silent past the peer timeout: the node
    /// becomes a `Dead` tombstone, gossiped like any news. If it is in fact alive it hears of
    /// it and refutes with a higher incarnation. Ignored if the table holds another
    /// incarnation of the node: the death of an old run's link says nothing of a new run.
    pub fn on_peer_dead(&mut self, node: NodeId, incarnation: u64, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.holds(node, incarnation) {
            self.bury(node, MemberState::Dead, now, &mut out);
        }
        out
    }

    /// Whether the table's entry of `node` is of `incarnation`.
    fn holds(&self, node: NodeId, incarnation: u64) -> bool {
        self.table
            .get(&node)
            .is_some_and(|m| m.identity.incarnation == incarnation)
    }

    /// A node found by discovery (for example an mDNS answer). Its addresses are forgotten
    /// after failed dials like gossiped ones; an answer for the incarnation we hold brings
    /// forgotten ones back.
    pub fn on_discovered(&mut self, identity: &PeerIdentity, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if identity.node_id != self.me.as_u128() {
            self.apply(
                GossipEntry::from_identity(identity, MemberState::Alive),
                Source::Discovery,
                now,
                &mut out,
            );
        }
        out
    }

    /// A dial from [`next_dials`](Self::next_dials) failed (no connection, or no handshake).
    /// The failure also counts for the address itself: until its own backoff has passed,
    /// other members due a dial at it count a failure without a dial. A member whose last
    /// address this forgets, or one on probation, is buried by the next
    /// [`handle_timeout`](Self::handle_timeout), which [`poll_timeout`](Self::poll_timeout)
    /// then says is due.
    pub fn on_dial_failed(&mut self, dial: &DialRequest, now: Instant) {
        if dial.node.is_some() {
            self.dialling.remove(&dial.addr);
        }
        match dial.node {
            Some(node) => {
                if self.table.get(&node).is_some_and(|m| m.dial.in_flight) {
                    self.note_failed_addr(&dial.addr, now);
                }
                self.fail_member(node, &dial.addr, now);
            }
            None => self.fail_seed(&dial.addr, now),
        }
    }

    /// A dial from [`next_dials`](Self::next_dials) that the runtime did not make (it holds
    /// a link to the node already, which membership does not count): it counts as failed for
    /// the member, so it is asked for again only after a backoff, but says nothing of the
    /// address.
    ///
    /// The node answered (or is linked already), so it is not unreachable: this neither
    /// starts its unreachable clock (which would bury a member on probation) nor counts
    /// against its address.
    pub fn on_dial_not_made(&mut self, dial: &DialRequest, now: Instant) {
        let Some(node) = dial.node else {
            return self.fail_seed(&dial.addr, now);
        };
        self.dialling.remove(&dial.addr);
        let Some(m) = self.table.get_mut(&node) else {
            return;
        };
        m.dial.in_flight = false;
        m.dial.failures = m.dial.failures.saturating_add(1);
        let attempt = m.dial.failures.saturating_sub(1);
        let delay = self.config.backoff.delay(attempt, &mut self.rng);
        m.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
        self.reindex(node);
    }

    /// Counts a failed dial of `node` at `addr`, and schedules its next one.
    fn fail_member(&mut self, node: NodeId, addr: &str, now: Instant) {
        let forget_after = self.config.forget_after_failures;
        let Some(m) = self.table.get_mut(&node) else {
            return;
        };
        m.dial.in_flight = false;
        m.dial.failures = m.dial.failures.saturating_add(1);
        m.unreachable_since.get_or_insert(now);
        if let Some(a) = m.addresses.iter_mut().find(|a| a.addr == addr) {
            a.failures = a.failures.saturating_add(1);
            if a.source != Source::Seed && a.failures >= forget_after {
                a.forgotten = true;
            }
        }
        let attempt = m.dial.failures.saturating_sub(1);
        let delay = self.config.backoff.delay(attempt, &mut self.rng);
        m.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
        self.reindex(node);
    }

    fn fail_seed(&mut self, addr: &str, now: Instant) {
        let Some(seed) = self.seeds.iter_mut().find(|s| s.addr == addr) else {
            return;
        };
        seed.dial.in_flight = false;
        seed.dial.failures = seed.dial.failures.saturating_add(1);
        let attempt = seed.dial.failures.saturating_sub(1);
        seed.dial.next_attempt = now
            .checked_add(self.config.backoff.delay(attempt, &mut self.rng))
            .unwrap_or(now);
    }

    /// A dial of `addr` found nobody: members due a dial at it before its own backoff has
    /// passed count a failure without one.
    fn note_failed_addr(&mut self, addr: &str, now: Instant) {
        let failures = match self.failed_addrs.get(addr) {
            Some(f) => {
                self.failed_order.remove(&(f.retry_at, addr.to_owned()));
                f.failures.saturating_add(1)
            }
            None => 1,
        };
        let delay = self
            .config
            .backoff
            .delay(failures.saturating_sub(1), &mut self.rng);
        let retry_at = now.checked_add(delay).unwrap_or(now);
        self.failed_addrs
            .insert(addr.to_owned(), AddrFailure { failures, retry_at });
        self.failed_order.insert((retry_at, addr.to_owned()));
        while self.failed_addrs.len() > self.config.max_members {
            let Some((_, oldest)) = self.failed_order.pop_first() else {
                break;
            };
            self.failed_addrs.remove(&oldest);
        }
    }

    fn clear_failed_addr(&mut self, addr: &str) {
        if let Some(f) = self.failed_addrs.remove(addr) {
            self.failed_order.remove(&(f.retry_at, addr.to_owned()));
        }
    }

    /// A dial from [`next_dials`](Self::next_dials) reached `node` (call it after
    /// [`on_connected`](Self::on_connected)). A seed address is from now on an address of that
    /// node, never forgotten. If `node` is not the node the dial expected, the dial counts as
    /// failed for the expected one (not for the address, which answered).
    pub fn on_dial_succeeded(&mut self, dial: &DialRequest, node: NodeId, now: Instant) {
        self.clear_failed_addr(&dial.addr);
        if dial.node.is_some() {
            self.dialling.remove(&dial.addr);
        }
        match dial.node {
            Some(expected) if expected != node => self.fail_member(expected, &dial.addr, now),
            Some(_) => {
                if let Some(m) = self.table.get_mut(&node) {
                    m.dial = DialState::new(now);
                    if let Some(a) = m.addresses.iter_mut().find(|a| a.addr == dial.addr) {
                        a.failures = 0;
                    }
                    self.reindex(node);
                }
            }
            None => {
                let Some(seed) = self.seeds.iter_mut().find(|s| s.addr == dial.addr) else {
                    return;
                };
                if node == self.me {
                    // We are behind this seed address ourselves: never dial it again.
                    seed.dial = DialState::new(now);
                    seed.node = Some(node);
                    return;
                }
                let rules = &self.rules;
                match self.table.get_mut(&node) {
                    Some(m) if m.state == MemberState::Alive => {
                        seed.dial = DialState::new(now);
                        seed.node = Some(node);
                        m.add_address(&dial.addr, Source::Seed, rules);
                        if m.learned == Source::Direct {
                            m.learned = Source::Seed;
                        }
                        self.reindex(node);
                    }
                    _ => {
                        // A node we hold a tombstone of (it will refute over the connection,
                        // and a later dial binds the seed) or could not take in: the seed stays
                        // unbound, and is redialled with backoff, not at once.
                        seed.dial.in_flight = false;
                        seed.dial.failures = seed.dial.failures.saturating_add(1);
                        let attempt = seed.dial.failures.saturating_sub(1);
                        let delay = self.config.backoff.delay(attempt, &mut self.rng);
                        seed.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
                    }
                }
            }
        }
    }

    /// Adds dial tokens for the time passed since the last refill, up to the burst.
    fn refill(&mut self, now: Instant) {
        let burst = self.config.dial_burst;
        if self.tokens >= burst {
            self.refilled_at = now;
            return;
        }
        let per_token = self.token_period();
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = elapsed.as_nanos() / per_token.as_nanos().max(1);
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(earned).min(burst);
        if self.tokens >= burst {
            self.refilled_at = now;
        } else {
            let spent = per_token.saturating_mul(earned);
            self.refilled_at = self.refilled_at.checked_add(spent).unwrap_or(now);
        }
    }

    /// The time one dial token takes to come back.
    fn token_period(&self) -> Duration {
        Duration::from_secs(1) / self.config.dial_rate.max(1)
    }

    /// When a dial token is next in the bucket (in the past if there is one now).
    fn token_ready_at(&self) -> Instant {
        if self.tokens > 0 {
            self.refilled_at
        } else {
            self.refilled_at
                .checked_add(self.token_period())
                .unwrap_or(self.refilled_at)
        }
    }

    fn seed_dials(&self) -> usize {
        self.seeds.iter().filter(|s| s.dial.in_flight).count()
    }

    /// How many more dials may start now: room under `max_peers` links and under
    /// `max_dials_in_flight`, before tokens.
    fn dial_room(&self) -> usize {
        let in_flight = self.dials_in_flight();
        let links = self.connected.len() + in_flight;
        self.config
            .max_peers
            .saturating_sub(links)
            .min(self.config.max_dials_in_flight.saturating_sub(in_flight))
    }

    /// The first member due a dial at or before `now`: nodes we know before those on
    /// probation.
    fn first_due(&self, now: Instant) -> Option<NodeId> {
        [&self.dial_due, &self.probation_due]
            .into_iter()
            .find_map(|queue| {
                queue
                    .first()
                    .filter(|(at, _)| *at <= now)
                    .map(|(_, id)| *id)
            })
    }

    /// The dials to start now: unbound seeds, then live members we have no link to, whose
    /// backoff has passed (members we know before those on probation), up to
    /// [`max_peers`](MembershipConfig::max_peers) links,
    /// [`max_dials_in_flight`](MembershipConfig::max_dials_in_flight) dials under way and
    /// the tokens of the [`dial_rate`](MembershipConfig::dial_rate) bucket. A member due at
    /// an address that failed lately counts a failure without a dial. Each dial is marked
    /// under way until reported with [`on_dial_failed`](Self::on_dial_failed) or
    /// [`on_dial_succeeded`](Self::on_dial_succeeded).
    pub fn next_dials(&mut self, now: Instant) -> Vec<DialRequest> {
        self.purge(now);
        self.refill(now);
        let mut budget = self
            .dial_room()
            .min(usize::try_from(self.tokens).unwrap_or(usize::MAX));
        let mut dials = Vec::new();
        for seed in &mut self.seeds {
            if budget == 0 {
                break;
            }
            if seed.node.is_none() && !seed.dial.in_flight && seed.dial.next_attempt <= now {
                seed.dial.in_flight = true;
                budget -= 1;
                self.tokens = self.tokens.saturating_sub(1);
                dials.push(DialRequest {
                    node: None,
                    addr: seed.addr.clone(),
                });
            }
        }
        let mut settled = 0;
        while budget > 0 && settled < MAX_SETTLED_PER_CALL {
            let Some(node) = self.first_due(now) else {
                break;
            };
            let addr = self
                .table
                .get(&node)
                .and_then(Member::dial_address)
                .map(|a| a.addr.clone());
            let Some(addr) = addr else {
                // Not expected: an indexed dial has an address. Re-indexing drops it.
                self.reindex(node);
                settled += 1;
                continue;
            };
            if self
                .failed_addrs
                .get(&addr)
                .is_some_and(|f| f.retry_at > now)
            {
                // The address failed lately for another member: one failed dial settles
                // every member that advertises it.
                self.fail_member(node, &addr, now);
                settled += 1;
                continue;
            }
            if self.dialling.contains(&addr) {
                // A dial of the address is under way for another member: wait for it.
                let later = now.checked_add(self.config.backoff.base).unwrap_or(now);
                if let Some(m) = self.table.get_mut(&node) {
                    m.dial.next_attempt = later;
                }
                self.reindex(node);
                settled += 1;
                continue;
            }
            if let Some(m) = self.table.get_mut(&node) {
                m.dial.in_flight = true;
            }
            self.dialling.insert(addr.clone());
            self.reindex(node);
            budget -= 1;
            self.tokens = self.tokens.saturating_sub(1);
            dials.push(DialRequest {
                node: Some(node),
                addr,
            });
        }
        dials
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do: the next
    /// gossip round, dial (when a token and room for it are there), burial of an unreachable
    /// member or tombstone expiry. Always `Some` for now; `None` is kept for a table with
    /// nothing scheduled. O(seeds + log n): it is asked on every turn of the runtime.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_gossip;
        for queue in [&self.expiries, &self.burials] {
            if let Some((at, _)) = queue.first() {
                next = next.min(*at);
            }
        }
        if self.dial_room() > 0 {
            let members = [&self.dial_due, &self.probation_due]
                .into_iter()
                .filter_map(|queue| queue.first().map(|(at, _)| *at));
            let seeds = self
                .seeds
                .iter()
                .filter(|s| s.node.is_none() && !s.dial.in_flight)
                .map(|s| s.dial.next_attempt);
            if let Some(due) = members.chain(seeds).min() {
                next = next.min(due.max(self.token_ready_at()));
            }
        }
        Some(next)
    }

    /// Does what is due at `now`: expires tombstones, buries members we cannot reach, starts
    /// a gossip round if one is due and hands out the dials that are due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        self.purge(now);
        let mut out = Vec::new();
        self.bury_unreachable(now, &mut out);
        if now >= self.next_gossip {
            out.extend(self.gossip_round(now));
        }
        out.extend(self.next_dials(now).into_iter().map(Output::Dial));
        // Members settled without a dial may be due a burial now.
        self.bury_unreachable(now, &mut out);
        out
    }

    /// Starts a gossip round now: our digest to up to
    /// [`gossip_fanout`](MembershipConfig::gossip_fanout) connected peers picked at random.
    /// The next round is due a [`gossip_interval`](MembershipConfig::gossip_interval) later.
    pub fn gossip_round(&mut self, now: Instant) -> Vec<Output> {
        self.purge(now);
        self.next_gossip = now.checked_add(self.config.gossip_interval).unwrap_or(now);
        let mut candidates: Vec<NodeId> = self.connected.iter().copied().collect();
        let digest = self.digest();
        let mut out = Vec::new();
        for _ in 0..self.config.gossip_fanout {
            if candidates.is_empty() {
                break;
            }
            let pick = self.rng.usize(..candidates.len());
            let peer = candidates.swap_remove(pick);
            if let Some(m) = self.table.get_mut(&peer) {
                m.gossip.awaiting_summary = true;
            }
            out.push(Output::SendTo(peer, GossipMessage::Digest(digest)));
        }
        out
    }

    /// Whether a digest of `from` is answered now: a peer gets an answer other than nothing at
    /// most once per half [`gossip_interval`](MembershipConfig::gossip_interval) (peers not
    /// in the table share one such allowance), so digests claiming a small table cannot buy
    /// our whole table again and again.
    fn may_answer_digest(&mut self, from: NodeId, now: Instant) -> bool {
        let gap = self.config.gossip_interval / 2;
        let g = self.budget(from);
        let due = g
            .answered
            .is_none_or(|at| now.saturating_duration_since(at) >= gap);
        if due {
            g.answered = Some(now);
        }
        due
    }

    /// The gossip budget of `from`: its own if it is in the table, else the one every peer
    /// not in the table shares.
    fn budget(&mut self, from: NodeId) -> &mut PeerGossip {
        match self.table.get_mut(&from) {
            Some(m) => &mut m.gossip,
            None => &mut self.strangers,
        }
    }

    /// Whether `from` may bring one more node new to the table into it now, counting it.
    fn may_introduce(&mut self, from: NodeId, now: Instant) -> bool {
        let interval = self.config.gossip_interval;
        let limit = self.config.max_introductions;
        let g = self.budget(from);
        if g.window
            .is_none_or(|start| now.saturating_duration_since(start) >= interval)
        {
            g.window = Some(now);
            g.introduced = 0;
        }
        if g.introduced >= limit {
            return false;
        }
        g.introduced += 1;
        true
    }

    /// A gossip message from the connected peer `from`, whose link takes frames of up to
    /// `send_limit` bytes (the runtime's send limit of that connection).
    ///
    /// Every answer goes to `from` and is at most the smaller of `send_limit` and
    /// [`max_message_size`](MembershipConfig::max_message_size) as a frame: a difference too
    /// big for one message is split into several; an entry too big for any message is left
    /// out. Of a message's `entries` and `want`, at most
    /// [`max_members`](MembershipConfig::max_members) are read; the rest is ignored. What a
    /// peer can make us send is bounded: a digest is answered at most once per half gossip
    /// interval, a summary only in answer to our digest, a `want` only in answer to our
    /// summary; of a delta's entries, at most
    /// [`max_introductions`](MembershipConfig::max_introductions) nodes new to the table
    /// per interval are taken from one peer.
    pub fn handle_gossip(
        &mut self,
        from: NodeId,
        msg: GossipMessage,
        send_limit: usize,
        now: Instant,
    ) -> Vec<Output> {
        self.purge(now);
        let budget = send_limit.min(self.config.max_message_size);
        let limit = self.config.max_members;
        let mut out = Vec::new();
        match msg {
            GossipMessage::Digest(theirs) => {
                let ours = self.digest();
                if theirs == ours || !self.may_answer_digest(from, now) {
                    return out;
                }
                let summary_size = self
                    .table
                    .len()
                    .saturating_mul(HASH_SIZE)
                    .saturating_add(MESSAGE_OVERHEAD);
                if u64::from(theirs.count) * 2 < u64::from(ours.count) || summary_size > budget {
                    // The peer knows less than half of what we do (it is joining): our whole
                    // table costs about what a summary would, and saves a round trip. What it
                    // knows and we do not reaches us in a later round. A summary that does not
                    // fit in one message is replaced the same way.
                    let entries: Vec<GossipEntry> =
                        self.table.values().map(|m| m.entry(now)).collect();
                    send_deltas(from, entries, Vec::new(), budget, &mut out);
                } else {
                    let entries = self.table.values().map(Member::hash).collect();
                    self.budget(from).awaiting_want = true;
                    out.push(Output::SendTo(
                        from,
                        GossipMessage::Summary(GossipSummary {
                            hash: ours.hash,
                            entries,
                        }),
                    ));
                }
            }
            GossipMessage::Summary(summary) => {
                let solicited = std::mem::take(&mut self.budget(from).awaiting_summary);
                if !solicited {
                    return out;
                }
                let theirs: BTreeSet<u64> = summary.entries.into_iter().take(limit).collect();
                let ours: BTreeSet<u64> = self.table.values().map(Member::hash).collect();
                // Entries whose version they do not hold: they lack the node or hold another
                // version of it. Where theirs is newer, they ignore ours and we want theirs.
                let entries: Vec<GossipEntry> = self
                    .table
                    .values()
                    .filter(|m| !theirs.contains(&m.hash()))
                    .map(|m| m.entry(now))
                    .collect();
                let want: Vec<u64> = theirs.difference(&ours).copied().collect();
                send_deltas(from, entries, want, budget, &mut out);
            }
            GossipMessage::Delta(delta) => {
                for entry in delta.entries.into_iter().take(limit) {
                    let node = NodeId::from_u128(entry.node_id);
                    if !self.table.contains_key(&node)
                        && entry.network == self.network
                        && !self.may_introduce(from, now)
                    {
                        // Over this peer's introductions for the interval: the rest of the
                        // delta's new nodes are ignored, the link kept; gossip brings them
                        // again in a later round.
                        continue;
                    }
                    self.apply(entry, Source::Gossip, now, &mut out);
                }
                let solicited = std::mem::take(&mut self.budget(from).awaiting_want);
                if !solicited || delta.want.is_empty() {
                    return out;
                }
                let want: BTreeSet<u64> = delta.want.into_iter().take(limit).collect();
                let entries: Vec<GossipEntry> = self
                    .table
                    .values()
                    .filter(|m| want.contains(&m.hash()))
                    .map(|m| m.entry(now))
                    .collect();
                send_deltas(from, entries, Vec::new(), budget, &mut out);
            }
        }
        out
    }

    /// Drops expired tombstones.
    fn purge(&mut self, now: Instant) {
        while let Some(&(at, node)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.remove_member(node);
        }
    }

    /// When the live member `m` is to be buried as unreachable: at once if it has no address
    /// left to dial, at its first failed dial if it is on probation, else
    /// [`unreachable_timeout`](MembershipConfig::unreachable_timeout) after a dial of it first
    /// failed. `None` for ourselves, a tombstone, a connected member, one being dialled, and
    /// one we have not failed to reach.
    fn burial_due(&self, node: NodeId, m: &Member) -> Option<Instant> {
        if node == self.me || m.state != MemberState::Alive || m.connected || m.dial.in_flight {
            return None;
        }
        if !m.has_address() {
            return Some(m.unreachable_since.unwrap_or(m.changed_at));
        }
        // One that shares no transport with us is reached by others: we do not judge it.
        m.dial_address()?;
        let since = m.unreachable_since?;
        if m.fresh {
            return Some(since);
        }
        since.checked_add(self.config.unreachable_timeout)
    }

    /// Buries, as `Dead` at its incarnation, every member whose burial is due: it cannot hold
    /// a table slot, nor be gossiped as alive, for ever.
    fn bury_unreachable(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due: Vec<NodeId> = self
            .burials
            .range(..=(now, LAST_NODE))
            .map(|(_, id)| *id)
            .collect();
        for node in due {
            self.bury(node, MemberState::Dead, now, out);
        }
    }

    /// Makes room for one more entry in a full table: drops the tombstone that expires first,
    /// or else the member we have failed to reach the longest (reporting it
    /// [`Left`](Output::Left)). False if every entry is a live member we are linked to, or
    /// have not failed to reach yet.
    fn evict_one(&mut self, now: Instant, out: &mut Vec<Output>) -> bool {
        // One that shares no transport with us is not ours to bury, but it need not hold a
        // slot either: it is forgotten here (no tombstone; gossip may bring it back), or junk
        // nobody can dial would keep real nodes out for ever.
        let victim = [&self.expiries, &self.burials, &self.foreign]
            .into_iter()
            .find_map(|queue| queue.first().map(|(_, id)| *id));
        let Some(node) = victim else {
            return false;
        };
        if let Some(m) = self.remove_member(node) {
            if m.state == MemberState::Alive {
                out.push(Output::Left(node));
                self.unbind_seeds(node, now);
            }
        }
        true
    }

    /// Turns the live entry of `node` into a tombstone of its current incarnation.
    fn bury(&mut self, node: NodeId, state: MemberState, now: Instant, out: &mut Vec<Output>) {
        if node == self.me {
            return;
        }
        let ttl = self.config.tombstone_ttl;
        let Some(m) = self.table.get_mut(&node) else {
            return;
        };
        m.connected = false;
        m.up_since = None;
        if m.state.rank() >= state.rank() {
            self.reindex(node);
            return;
        }
        let was_alive = m.state == MemberState::Alive;
        m.state = state;
        m.changed_at = now;
        m.expires_at = Some(now.checked_add(ttl).unwrap_or(now));
        self.reindex(node);
        if was_alive {
            out.push(Output::Left(node));
        }
        self.unbind_seeds(node, now);
    }

    /// Seeds whose node is gone are dialled again (the process behind them may restart).
    fn unbind_seeds(&mut self, node: NodeId, now: Instant) {
        for seed in &mut self.seeds {
            if seed.node == Some(node) {
                seed.node = None;
                seed.dial = DialState::new(now);
            }
        }
    }

    /// Takes `entry` into the table if it is news: of our network, valid, and newer than what
    /// we hold. News that is not newer, from the node itself or a discovery service, still
    /// brings back the addresses it advertises.
    fn apply(&mut self, entry: GossipEntry, source: Source, now: Instant, out: &mut Vec<Output>) {
        if entry.network != self.network || !is_valid(&entry) {
            return;
        }
        let node = NodeId::from_u128(entry.node_id);
        if node == self.me {
            self.refute(&entry, now, out);
            return;
        }
        let ttl = match entry.ttl_ms {
            0 => self.config.tombstone_ttl,
            ms => Duration::from_millis(ms).min(self.config.tombstone_ttl),
        };
        let expires_at = entry
            .state
            .is_tombstone()
            .then(|| now.checked_add(ttl).unwrap_or(now));
        if !self.table.contains_key(&node)
            && self.table.len() >= self.config.max_members
            && !self.evict_one(now, out)
        {
            return;
        }
        let rules = &self.rules;
        match self.table.get_mut(&node) {
            None => {
                let mut member = Member::new(entry.identity(), entry.state, source, now);
                member.expires_at = expires_at;
                member.fresh = source == Source::Gossip;
                for addr in &entry.addresses {
                    member.add_address(addr, source, rules);
                }
                if entry.state == MemberState::Alive {
                    out.push(Output::Joined(node));
                }
                self.insert_member(node, member);
            }
            Some(m) => {
                let expired = m.expired(now);
                if !expired && entry.version() <= m.version() {
                    let vouched = matches!(source, Source::Direct | Source::Discovery);
                    if vouched && entry.incarnation == m.identity.incarnation {
                        for addr in &entry.addresses {
                            m.add_address(addr, source, rules);
                        }
                        self.reindex(node);
                    }
                    return;
                }
                let was_alive = m.state == MemberState::Alive && !expired;
                let new_incarnation = expired || entry.incarnation != m.identity.incarnation;
                let host_changed = m.identity.host_id != entry.host_id;
                m.identity = entry.identity();
                if host_changed {
                    m.refresh_dialable(rules);
                }
                if new_incarnation {
                    // A new run of the node: new addresses, fresh dial state; seed addresses
                    // stay. A link we hold is to the old run (`on_connected` marks a link to
                    // the new run after this).
                    m.addresses.retain(|a| a.source == Source::Seed);
                    for a in &mut m.addresses {
                        a.failures = 0;
                    }
                    for addr in &entry.addresses {
                        m.add_address(addr, source, rules);
                    }
                    m.dial.failures = 0;
                    m.dial.next_attempt = now;
                    m.learned = source;
                    m.connected = false;
                    m.up_since = None;
                    m.unreachable_since = None;
                    m.flaps = 0;
                    // A node we held already is not on probation: a run we buried that
                    // refuted is dialled by the usual schedule, not buried at once again.
                    m.fresh = false;
                }
                m.state = entry.state;
                m.changed_at = now;
                m.expires_at = expires_at;
                self.reindex(node);
                let alive = entry.state == MemberState::Alive;
                if was_alive && (!alive || new_incarnation) {
                    out.push(Output::Left(node));
                }
                if alive {
                    out.push(Output::Joined(node));
                } else {
                    self.unbind_seeds(node, now);
                }
            }
        }
    }

    /// News that we are dead or gone, of exactly our incarnation: we take the next one,
    /// which beats it everywhere. A tombstone of a later incarnation than ours is not of
    /// us (we never ran it) and is ignored: taking it would let a peer push our incarnation
    /// anywhere, up to `u64::MAX` where no refutation can win. It expires where it is held,
    /// and our entry wins there again. At `u64::MAX` itself we cannot refute.
    fn refute(&mut self, entry: &GossipEntry, now: Instant, out: &mut Vec<Output>) {
        let Some(me) = self.table.get_mut(&self.me) else {
            return;
        };
        if !entry.state.is_tombstone() || entry.incarnation != me.identity.incarnation {
            return;
        }
        let Some(incarnation) = entry.incarnation.checked_add(1) else {
            return;
        };
        me.identity.incarnation = incarnation;
        me.changed_at = now;
        self.reindex(self.me);
        out.push(Output::Refuted { incarnation });
    }
}

/// Queues `entries` and `want` for `to` as [`GossipDelta`]s of at most `budget` bytes each as
/// frames: `want` (as much of it as fits) in the first, entries in order after it. An entry
/// that does not fit in a message of its own is left out; nothing is queued for nothing.
fn send_deltas(
    to: NodeId,
    entries: Vec<GossipEntry>,
    mut want: Vec<u64>,
    budget: usize,
    out: &mut Vec<Output>,
) {
    let room = budget.saturating_sub(MESSAGE_OVERHEAD);
    want.truncate(room / HASH_SIZE);
    let mut size = want.len().saturating_mul(HASH_SIZE);
    let mut delta = GossipDelta {
        entries: Vec::new(),
        want,
    };
    for entry in entries {
        let cost = entry_size_bound(&entry);
        if cost > room {
            continue;
        }
        if size.saturating_add(cost) > room {
            let full = std::mem::take(&mut delta);
            out.push(Output::SendTo(to, GossipMessage::Delta(full)));
            size = 0;
        }
        size = size.saturating_add(cost);
        delta.entries.push(entry);
    }
    if !delta.entries.is_empty() || !delta.want.is_empty() {
        out.push(Output::SendTo(to, GossipMessage::Delta(delta)));
    }
}

/// Whether a gossiped entry is within the sizes we keep.
fn is_valid(entry: &GossipEntry) -> bool {
    entry.within_limits()
}
