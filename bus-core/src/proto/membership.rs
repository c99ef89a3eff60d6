//! Membership: the peer table, digest-based gossip, tombstones and the redial schedule.
//!
//! [`Membership`] is plain state. The runtime feeds it what happened — a connection came up
//! ([`on_connected`](Membership::on_connected)) or went down, a peer said goodbye or timed out,
//! a dial failed, a gossip message arrived — and the current time, and gets back
//! [`Output`]s: gossip messages to send, nodes that joined or left, dials to start. It never
//! reads a clock: [`poll_timeout`](Membership::poll_timeout) says when it next wants
//! [`handle_timeout`](Membership::handle_timeout).
//!
//! # The table
//!
//! One [`Member`] per node of our network that we know of, our own node included (so that
//! gossip carries it; it is never dialled). Entries of another network are ignored. A member's
//! news has a version `(incarnation, state rank)`: a higher incarnation is a newer run of the
//! node, and within one incarnation `Alive < Dead < Left`. News is taken only if it is newer
//! than what the table holds, which is what keeps a node that left from being resurrected by
//! stale gossip: its entry stays as a *tombstone* (state `Dead` or `Left`) until it expires.
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
//! (a node joining) gets our whole table at once instead of a summary.
//!
//! # Dialling
//!
//! A node dials every live member it can reach up to [`max_peers`](MembershipConfig::max_peers)
//! links, and the seed addresses it was given until it knows the node behind them. Failed dials
//! are retried with exponential [`Backoff`] and seeded jitter; an address learned from gossip,
//! discovery or a handshake is forgotten after
//! [`forget_after_failures`](MembershipConfig::forget_after_failures) consecutive failures,
//! a seed address never is. Which nodes we link to and how traffic reaches a node is decided
//! in one place, [`Membership::route`], so that relaying can be added there later.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub use crate::wire::control::MemberState;
use crate::wire::control::{
    entry_hash, GossipDelta, GossipDigest, GossipEntry, GossipMessage, GossipSummary, PeerIdentity,
};
use crate::NodeId;

#[cfg(test)]
mod tests;

/// The most addresses kept for one member; gossip entries with more are ignored.
const MAX_ADDRESSES: usize = 16;

/// The longest name, network, cluster, host id or address kept, in bytes; gossip entries with
/// a longer one are ignored.
const MAX_FIELD_LEN: usize = 256;

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
    /// The most entries the table holds, tombstones included; news of further nodes is
    /// dropped. Bounds what a peer can make us store. Default 4096.
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
    /// travelling; after it expires, such news would bring the node back. Default 5 min.
    pub tombstone_ttl: Duration,
    /// The seed of the random source (gossip partners, jitter).
    pub rng_seed: u64,
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
            rng_seed: 0,
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

    /// Whether the runtime reported a connection to it that has not gone down since.
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

    /// The address to dial next: the one with the fewest failures, first listed on a tie.
    fn dial_address(&self) -> Option<&Address> {
        self.addresses
            .iter()
            .filter(|a| !a.forgotten)
            .min_by_key(|a| a.failures)
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
    pub fn new(
        local: PeerIdentity,
        seeds: impl IntoIterator<Item = String>,
        config: MembershipConfig,
        now: Instant,
    ) -> Self {
        let me = NodeId::from_u128(local.node_id);
        let network = local.network.clone();
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
                addresses: Vec::new(),
                dial: DialState::new(now),
            },
        );
        let rng = fastrand::Rng::with_seed(config.rng_seed);
        Membership {
            config,
            me,
            network,
            table,
            seeds: seed_list,
            rng,
            digest: GossipDigest::default(),
            dirty: true,
            next_gossip: now,
        }
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
    /// and it can [refute](Output::Refuted)).
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
        if let Some(m) = self.table.get_mut(&node) {
            m.connected = true;
            m.dial.in_flight = false;
            m.dial.failures = 0;
            if m.identity.incarnation == identity.incarnation {
                for addr in identity.addresses.iter().take(MAX_ADDRESSES) {
                    m.add_address(addr, Source::Direct);
                }
            }
        }
        out
    }

    /// The connection to `node` went down without a goodbye. It stays a member and is
    /// redialled after a backoff.
    pub fn on_disconnected(&mut self, node: NodeId, now: Instant) {
        let delay = self.config.backoff.delay(0, &mut self.rng);
        if let Some(m) = self.table.get_mut(&node) {
            m.connected = false;
            m.dial.next_attempt = now.checked_add(delay).unwrap_or(now);
        }
    }

    /// `node` said goodbye: it becomes a `Left` tombstone.
    pub fn on_goodbye(&mut self, node: NodeId, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.bury(node, MemberState::Left, now, &mut out);
        out
    }

    /// `node` was silent past the peer timeout: it becomes a `Dead` tombstone, gossiped like
    /// any news. If it is in fact alive it hears of it and refutes with a higher incarnation.
    pub fn on_peer_dead(&mut self, node: NodeId, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.bury(node, MemberState::Dead, now, &mut out);
        out
    }

    /// A node found by discovery (for example an mDNS answer). Its addresses are forgotten
    /// after failed dials like gossiped ones.
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
    pub fn on_dial_failed(&mut self, dial: &DialRequest, now: Instant) {
        let forget_after = self.config.forget_after_failures;
        match dial.node {
            Some(node) => {
                let Some(m) = self.table.get_mut(&node) else {
                    return;
                };
                m.dial.in_flight = false;
                m.dial.failures = m.dial.failures.saturating_add(1);
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
                seed.dial = DialState::new(now);
                if node == self.me {
                    // We are behind this seed address ourselves: never dial it again.
                    seed.node = Some(node);
                    return;
                }
                if let Some(m) = self.table.get_mut(&node) {
                    if m.state == MemberState::Alive {
                        seed.node = Some(node);
                        m.add_address(&dial.addr, Source::Seed);
                        if m.learned == Source::Direct {
                            m.learned = Source::Seed;
                        }
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
            if let Some(m) = self.table.get_mut(&node) {
                if let Some(addr) = m.dial_address().map(|a| a.addr.clone()) {
                    m.dial.in_flight = true;
                    dials.push(DialRequest {
                        node: Some(node),
                        addr,
                    });
                }
            }
        }
        dials
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do: the next
    /// gossip round, dial or tombstone expiry. Always `Some` for now; `None` is kept for a
    /// table with nothing scheduled.
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
        }
        Some(next)
    }

    /// Does what is due at `now`: expires tombstones, starts a gossip round if one is due and
    /// hands out the dials that are due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = if now >= self.next_gossip {
            self.gossip_round(now)
        } else {
            Vec::new()
        };
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

    /// A gossip message from the connected peer `from`.
    pub fn handle_gossip(&mut self, from: NodeId, msg: GossipMessage, now: Instant) -> Vec<Output> {
        self.purge(now);
        let mut out = Vec::new();
        match msg {
            GossipMessage::Digest(theirs) => {
                let ours = self.digest();
                if theirs == ours {
                    return out;
                }
                if u64::from(theirs.count) * 2 < u64::from(ours.count) {
                    // The peer knows less than half of what we do (it is joining): our whole
                    // table costs about what a summary would, and saves a round trip. What it
                    // knows and we do not reaches us in a later round.
                    let entries = self.table.values().map(|m| m.entry(now)).collect();
                    out.push(Output::SendTo(
                        from,
                        GossipMessage::Delta(GossipDelta {
                            entries,
                            want: Vec::new(),
                        }),
                    ));
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
                let theirs: BTreeSet<u64> = summary
                    .entries
                    .into_iter()
                    .take(self.config.max_members)
                    .collect();
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
                if !entries.is_empty() || !want.is_empty() {
                    out.push(Output::SendTo(
                        from,
                        GossipMessage::Delta(GossipDelta { entries, want }),
                    ));
                }
            }
            GossipMessage::Delta(delta) => {
                for entry in delta.entries.into_iter().take(self.config.max_members) {
                    self.apply(entry, Source::Gossip, now, &mut out);
                }
                let want: BTreeSet<u64> = delta
                    .want
                    .into_iter()
                    .take(self.config.max_members)
                    .collect();
                let entries: Vec<GossipEntry> = if want.is_empty() {
                    Vec::new()
                } else {
                    self.table
                        .values()
                        .filter(|m| want.contains(&m.hash()))
                        .map(|m| m.entry(now))
                        .collect()
                };
                if !entries.is_empty() {
                    out.push(Output::SendTo(
                        from,
                        GossipMessage::Delta(GossipDelta {
                            entries,
                            want: Vec::new(),
                        }),
                    ));
                }
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
    /// we hold.
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
        match self.table.get_mut(&node) {
            None => {
                if self.table.len() >= self.config.max_members {
                    return;
                }
                let mut member = Member {
                    identity: entry.identity(),
                    state: entry.state,
                    learned: source,
                    changed_at: now,
                    expires_at,
                    connected: false,
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
                    return;
                }
                let was_alive = m.state == MemberState::Alive && !expired;
                let new_incarnation = expired || entry.incarnation != m.identity.incarnation;
                if new_incarnation {
                    // A new run of the node: new addresses, fresh dial state; seed addresses
                    // stay.
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

    /// News that we are dead or gone, of our incarnation or a later one: we take a higher
    /// incarnation, which beats it everywhere.
    fn refute(&mut self, entry: &GossipEntry, now: Instant, out: &mut Vec<Output>) {
        let Some(me) = self.table.get_mut(&self.me) else {
            return;
        };
        if entry.state.is_tombstone() && entry.incarnation >= me.identity.incarnation {
            let incarnation = entry.incarnation.saturating_add(1);
            me.identity.incarnation = incarnation;
            me.changed_at = now;
            self.dirty = true;
            out.push(Output::Refuted { incarnation });
        }
    }
}

/// Whether a gossiped entry is within the sizes we keep.
fn is_valid(entry: &GossipEntry) -> bool {
    [&entry.name, &entry.network, &entry.cluster, &entry.host_id]
        .iter()
        .all(|s| s.len() <= MAX_FIELD_LEN)
        && entry.addresses.len() <= MAX_ADDRESSES
        && entry.addresses.iter().all(|a| a.len() <= MAX_FIELD_LEN)
}
