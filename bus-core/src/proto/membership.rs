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

use std::collections::{BTreeMap, BTreeSet};
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
    /// jitter is not a number in `0.0..=1.0`, or `max_message_size` is under
    /// [`MIN_MESSAGE_SIZE`]. A zero interval or backoff would make
    /// [`poll_timeout`](Membership::poll_timeout) always due: a busy loop.
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
}

impl Member {
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

    fn add_address(&mut self, addr: &str, source: Source) {
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
            self.addresses.push(Address {
                addr: addr.to_owned(),
                source,
                failures: 0,
                forgotten: false,
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
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: NodeId,
    network: String,
    /// Our host id: same-host schemes dial only nodes with it.
    host_id: String,
    table: BTreeMap<NodeId, Member>,
    seeds: Vec<Seed>,
    rng: fastrand::Rng,
    /// The table digest, recomputed when `dirty`.
    digest: GossipDigest,
    dirty: bool,
    next_gossip: Instant,
}

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
        let host_id = local.host_id.clone();
        let mut seed_list: Vec<Seed> = Vec::new();
        for addr in seeds {
            if local.addresses.contains(&addr) || seed_list.iter().any(|s| s.addr == addr) {
                continue;
            }
            seed_list.push(Seed {
                addr,
                node: None,
                dial: DialState::new(now),
            });
        }
        let mut table = BTreeMap::new();
        table.insert(
            me,
            Member {
                identity: local,
                state: MemberState::Alive,
                learned: Source::Local,
                changed_at: now,
                expires_at: None,
                connected: false,
                up_since: None,
                unreachable_since: None,
                flaps: 0,
                addresses: Vec::new(),
                dial: DialState::new(now),
            },
        );
        let rng = fastrand::Rng::with_seed(config.rng_seed);
        Ok(Membership {
            config,
            me,
            network,
            host_id,
            table,
            seeds: seed_list,
            rng,
            digest: GossipDigest::default(),
            dirty: true,
            next_gossip: now,
        })
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
        !self.seeds.is_empty() || self.peers().next().is_some()
    }

    /// Whether we can dial `addr` of member `m`: a scheme we have a transport for, and a
    /// same-host scheme only for a node of our host id.
    fn can_dial(&self, m: &Member, addr: &str) -> bool {
        let Ok(parsed) = crate::transport::Addr::parse(addr) else {
            return false;
        };
        if parsed.has_unspecified_host() {
            // `0.0.0.0` would reach whatever listens on our own machine.
            return false;
        }
        let scheme = parsed.scheme();
        let ours =
            self.config.schemes.is_empty() || self.config.schemes.iter().any(|s| s == scheme);
        let same_host_only = self.config.same_host_schemes.iter().any(|s| s == scheme);
        ours && (!same_host_only || m.identity.host_id == self.host_id)
    }

    /// The address of `m` to dial next: of those we can dial, the one with the fewest
    /// failures, first listed on a tie.
    fn dial_address<'m>(&self, m: &'m Member) -> Option<&'m Address> {
        m.addresses
            .iter()
            .filter(|a| !a.forgotten && self.can_dial(m, &a.addr))
            .min_by_key(|a| a.failures)
    }

    /// Whether `node` is a live member that advertises addresses, none of which we can dial
    /// (it shares no transport with us). Such a node is reachable only by others.
    pub fn is_foreign(&self, node: NodeId) -> bool {
        self.table.get(&node).is_some_and(|m| {
            node != self.me
                && m.state == MemberState::Alive
                && !m.connected
                && m.has_address()
                && self.dial_address(m).is_none()
        })
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
        if self.dirty {
            let mut hash = 0u64;
            for m in self.table.values() {
                hash = hash.wrapping_add(m.hash());
            }
            self.digest = GossipDigest {
                hash,
                count: u32::try_from(self.table.len()).unwrap_or(u32::MAX),
            };
            self.dirty = false;
        }
        self.digest
    }

    /// How traffic reaches `node`, and whether we want a link to it. The one place that
    /// decides both, so that relaying ("send via peer X") can be added here.
    pub fn route(&self, node: NodeId) -> Route {
        match self.table.get(&node) {
            Some(m) if node != self.me && m.state == MemberState::Alive => {
                if m.connected {
                    Route::Direct
                } else if self.dial_address(m).is_some() {
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
            m.up_since = Some(now);
            m.unreachable_since = None;
            m.dial.in_flight = false;
            m.dial.failures = 0;
            for addr in identity.addresses.iter().take(MAX_ADDRESSES) {
                m.add_address(addr, Source::Direct);
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
    /// A member whose last address this forgets is buried by the next
    /// [`handle_timeout`](Self::handle_timeout), which [`poll_timeout`](Self::poll_timeout)
    /// then says is due.
    pub fn on_dial_failed(&mut self, dial: &DialRequest, now: Instant) {
        let forget_after = self.config.forget_after_failures;
        match dial.node {
            Some(node) => {
                let Some(m) = self.table.get_mut(&node) else {
                    return;
                };
                m.dial.in_flight = false;
                m.dial.failures = m.dial.failures.saturating_add(1);
                m.unreachable_since.get_or_insert(now);
                if let Some(a) = m.addresses.iter_mut().find(|a| a.addr == dial.addr) {
                    a.failures = a.failures.saturating_add(1);
                    if a.source != Source::Seed && a.failures >= forget_after {
                        a.forgotten = true;
                    }
                }
                let attempt = m.dial.failures.saturating_sub(1);
                let delay = self.config.backoff.delay(attempt, &mut self.rng);
                if let Some(m) = self.table.get_mut(&node) {
                    m.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
                }
            }
            None => {
                let Some(seed) = self.seeds.iter_mut().find(|s| s.addr == dial.addr) else {
                    return;
                };
                seed.dial.in_flight = false;
                seed.dial.failures = seed.dial.failures.saturating_add(1);
                let attempt = seed.dial.failures.saturating_sub(1);
                let delay = self.config.backoff.delay(attempt, &mut self.rng);
                if let Some(seed) = self.seeds.iter_mut().find(|s| s.addr == dial.addr) {
                    seed.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
                }
            }
        }
    }

    /// A dial from [`next_dials`](Self::next_dials) reached `node` (call it after
    /// [`on_connected`](Self::on_connected)). A seed address is from now on an address of that
    /// node, never forgotten. If `node` is not the node the dial expected, the dial counts as
    /// failed for the expected one.
    pub fn on_dial_succeeded(&mut self, dial: &DialRequest, node: NodeId, now: Instant) {
        match dial.node {
            Some(expected) if expected != node => self.on_dial_failed(dial, now),
            Some(_) => {
                if let Some(m) = self.table.get_mut(&node) {
                    m.dial = DialState::new(now);
                    if let Some(a) = m.addresses.iter_mut().find(|a| a.addr == dial.addr) {
                        a.failures = 0;
                    }
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
                match self.table.get_mut(&node) {
                    Some(m) if m.state == MemberState::Alive => {
                        seed.dial = DialState::new(now);
                        seed.node = Some(node);
                        m.add_address(&dial.addr, Source::Seed);
                        if m.learned == Source::Direct {
                            m.learned = Source::Seed;
                        }
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

    /// The dials to start now: unbound seeds, then live members we have no link to, whose
    /// backoff has passed, up to [`max_peers`](MembershipConfig::max_peers) links. Each is
    /// marked under way until reported with [`on_dial_failed`](Self::on_dial_failed) or
    /// [`on_dial_succeeded`](Self::on_dial_succeeded).
    pub fn next_dials(&mut self, now: Instant) -> Vec<DialRequest> {
        self.purge(now);
        let mut budget = self.config.max_peers.saturating_sub(self.links());
        let mut dials = Vec::new();
        for seed in &mut self.seeds {
            if budget == 0 {
                return dials;
            }
            if seed.node.is_none() && !seed.dial.in_flight && seed.dial.next_attempt <= now {
                seed.dial.in_flight = true;
                budget -= 1;
                dials.push(DialRequest {
                    node: None,
                    addr: seed.addr.clone(),
                });
            }
        }
        let due: Vec<NodeId> = self
            .table
            .iter()
            .filter(|(id, m)| {
                self.route(**id) == Route::Pending
                    && !m.dial.in_flight
                    && m.dial.next_attempt <= now
            })
            .map(|(id, _)| *id)
            .take(budget)
            .collect();
        for node in due {
            let addr = self
                .table
                .get(&node)
                .and_then(|m| self.dial_address(m))
                .map(|a| a.addr.clone());
            if let (Some(m), Some(addr)) = (self.table.get_mut(&node), addr) {
                m.dial.in_flight = true;
                dials.push(DialRequest {
                    node: Some(node),
                    addr,
                });
            }
        }
        dials
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do: the next
    /// gossip round, dial, burial of an unreachable member or tombstone expiry. Always `Some`
    /// for now; `None` is kept for a table with nothing scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_gossip;
        let room = self.links() < self.config.max_peers;
        if room {
            for seed in &self.seeds {
                if seed.node.is_none() && !seed.dial.in_flight {
                    next = next.min(seed.dial.next_attempt);
                }
            }
        }
        for (id, m) in &self.table {
            if room && !m.dial.in_flight && self.route(*id) == Route::Pending {
                next = next.min(m.dial.next_attempt);
            }
            if let Some(at) = m.expires_at {
                next = next.min(at);
            }
            if let Some(at) = self.burial_due(m) {
                next = next.min(at);
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
        out
    }

    /// Starts a gossip round now: our digest to up to
    /// [`gossip_fanout`](MembershipConfig::gossip_fanout) connected peers picked at random.
    /// The next round is due a [`gossip_interval`](MembershipConfig::gossip_interval) later.
    pub fn gossip_round(&mut self, now: Instant) -> Vec<Output> {
        self.purge(now);
        self.next_gossip = now.checked_add(self.config.gossip_interval).unwrap_or(now);
        let mut candidates: Vec<NodeId> = self
            .table
            .values()
            .filter(|m| m.connected)
            .map(Member::node_id)
            .collect();
        let digest = self.digest();
        let mut out = Vec::new();
        for _ in 0..self.config.gossip_fanout {
            if candidates.is_empty() {
                break;
            }
            let pick = self.rng.usize(..candidates.len());
            let peer = candidates.swap_remove(pick);
            out.push(Output::SendTo(peer, GossipMessage::Digest(digest)));
        }
        out
    }

    /// A gossip message from the connected peer `from`, whose link takes frames of up to
    /// `send_limit` bytes (the runtime's send limit of that connection).
    ///
    /// Every answer goes to `from` and is at most the smaller of `send_limit` and
    /// [`max_message_size`](MembershipConfig::max_message_size) as a frame: a difference too
    /// big for one message is split into several; an entry too big for any message is left
    /// out. Of a message's `entries` and `want`, at most
    /// [`max_members`](MembershipConfig::max_members) are read; the rest is ignored.
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
                if theirs == ours {
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
                    self.apply(entry, Source::Gossip, now, &mut out);
                }
                let want: BTreeSet<u64> = delta.want.into_iter().take(limit).collect();
                let entries: Vec<GossipEntry> = if want.is_empty() {
                    Vec::new()
                } else {
                    self.table
                        .values()
                        .filter(|m| want.contains(&m.hash()))
                        .map(|m| m.entry(now))
                        .collect()
                };
                send_deltas(from, entries, Vec::new(), budget, &mut out);
            }
        }
        out
    }

    /// Links we hold or are making: connected members, dials under way, seeds being dialled.
    fn links(&self) -> usize {
        let members = self
            .table
            .values()
            .filter(|m| m.connected || m.dial.in_flight)
            .count();
        let seeds = self.seeds.iter().filter(|s| s.dial.in_flight).count();
        members + seeds
    }

    /// Drops expired tombstones.
    fn purge(&mut self, now: Instant) {
        let before = self.table.len();
        self.table.retain(|_, m| !m.expired(now));
        if self.table.len() != before {
            self.dirty = true;
        }
    }

    /// When the live member `m` is to be buried as unreachable: at once if it has no address
    /// left to dial, else [`unreachable_timeout`](MembershipConfig::unreachable_timeout)
    /// after a dial of it first failed. `None` for ourselves, a tombstone, a connected member,
    /// one being dialled, and one we have not failed to reach.
    fn burial_due(&self, m: &Member) -> Option<Instant> {
        if m.node_id() == self.me
            || m.state != MemberState::Alive
            || m.connected
            || m.dial.in_flight
        {
            return None;
        }
        if !m.has_address() {
            return Some(m.unreachable_since.unwrap_or(m.changed_at));
        }
        // One that shares no transport with us is reached by others: we do not judge it.
        self.dial_address(m)?;
        m.unreachable_since?
            .checked_add(self.config.unreachable_timeout)
    }

    /// Buries, as `Dead` at its incarnation, every member whose burial is due: it cannot hold
    /// a table slot, nor be gossiped as alive, for ever.
    fn bury_unreachable(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due: Vec<NodeId> = self
            .table
            .iter()
            .filter(|(_, m)| self.burial_due(m).is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
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
        let tombstone = self
            .table
            .iter()
            .filter(|(id, m)| **id != self.me && m.state.is_tombstone())
            .min_by_key(|(_, m)| m.expires_at)
            .map(|(id, _)| *id);
        let victim = tombstone
            .or_else(|| {
                self.table
                    .iter()
                    .filter_map(|(id, m)| self.burial_due(m).map(|at| (at, *id)))
                    .min()
                    .map(|(_, id)| id)
            })
            .or_else(|| {
                // One that shares no transport with us is not ours to bury, but it need not
                // hold a slot either: it is forgotten here (no tombstone; gossip may bring it
                // back), or junk nobody can dial would keep real nodes out for ever.
                self.table
                    .iter()
                    .filter(|(id, _)| self.is_foreign(**id))
                    .min_by_key(|(_, m)| m.changed_at)
                    .map(|(id, _)| *id)
            });
        let Some(node) = victim else {
            return false;
        };
        if let Some(m) = self.table.remove(&node) {
            self.dirty = true;
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
            return;
        }
        let was_alive = m.state == MemberState::Alive;
        m.state = state;
        m.changed_at = now;
        m.expires_at = Some(now.checked_add(ttl).unwrap_or(now));
        self.dirty = true;
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
        match self.table.get_mut(&node) {
            None => {
                let mut member = Member {
                    identity: entry.identity(),
                    state: entry.state,
                    learned: source,
                    changed_at: now,
                    expires_at,
                    connected: false,
                    up_since: None,
                    unreachable_since: None,
                    flaps: 0,
                    addresses: Vec::new(),
                    dial: DialState::new(now),
                };
                for addr in &entry.addresses {
                    member.add_address(addr, source);
                }
                if entry.state == MemberState::Alive {
                    out.push(Output::Joined(node));
                }
                self.table.insert(node, member);
                self.dirty = true;
            }
            Some(m) => {
                let expired = m.expired(now);
                if !expired && entry.version() <= m.version() {
                    let vouched = matches!(source, Source::Direct | Source::Discovery);
                    if vouched && entry.incarnation == m.identity.incarnation {
                        for addr in &entry.addresses {
                            m.add_address(addr, source);
                        }
                    }
                    return;
                }
                let was_alive = m.state == MemberState::Alive && !expired;
                let new_incarnation = expired || entry.incarnation != m.identity.incarnation;
                if new_incarnation {
                    // A new run of the node: new addresses, fresh dial state; seed addresses
                    // stay. A link we hold is to the old run (`on_connected` marks a link to
                    // the new run after this).
                    m.addresses.retain(|a| a.source == Source::Seed);
                    for a in &mut m.addresses {
                        a.failures = 0;
                    }
                    for addr in &entry.addresses {
                        m.add_address(addr, source);
                    }
                    m.dial.failures = 0;
                    m.dial.next_attempt = now;
                    m.learned = source;
                    m.connected = false;
                    m.up_since = None;
                    m.unreachable_since = None;
                    m.flaps = 0;
                }
                m.identity = entry.identity();
                m.state = entry.state;
                m.changed_at = now;
                m.expires_at = expires_at;
                self.dirty = true;
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
        self.dirty = true;
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
