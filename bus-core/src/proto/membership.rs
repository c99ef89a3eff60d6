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
pub(crate) mod tests;

mod config;
mod dial;
mod gossip;
mod index;
mod member;
mod table;

pub use super::backoff::Backoff;
pub use config::MembershipConfig;
use member::*;
pub use member::{Address, Member, Source};

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
}

/// Whether a gossiped entry is within the sizes we keep.
fn is_valid(entry: &GossipEntry) -> bool {
    entry.within_limits()
}
