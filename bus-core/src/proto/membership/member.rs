//! One node in the table: its addresses, its dial state and where it sits in the indexes.

use super::*;

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
    pub(super) addr: String,
    pub(super) source: Source,
    pub(super) failures: u32,
    pub(super) forgotten: bool,
    /// Whether we have a transport for it, decided once when it is added (or the member's
    /// host id changes), so that no timer or route question parses addresses.
    pub(super) dialable: bool,
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
pub(super) struct DialRules {
    pub(super) schemes: Vec<String>,
    pub(super) same_host_schemes: Vec<String>,
    pub(super) host_id: String,
}

impl DialRules {
    /// Whether we can dial `addr` of a node on host `host_id`: a scheme we have a transport
    /// for, and a same-host scheme only for a node of our host id.
    pub(super) fn can_dial(&self, host_id: &str, addr: &str) -> bool {
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
pub(super) struct Keys {
    /// Its [`entry_hash`], in the table hash.
    pub(super) hash: u64,
    /// A live member other than ourselves.
    pub(super) alive: bool,
    /// Counted as a link.
    pub(super) connected: bool,
    /// A dial of it is under way.
    pub(super) in_flight: bool,
    /// When it is next due a dial, and whether it is in the probation queue.
    pub(super) dial: Option<(Instant, bool)>,
    /// When it is to be buried as unreachable.
    pub(super) burial: Option<Instant>,
    /// When its tombstone expires.
    pub(super) expiry: Option<Instant>,
    /// It shares no transport with us: when it last changed (the eviction order).
    pub(super) foreign: Option<Instant>,
}

/// What a peer's gossip has cost us lately, and which answers we expect from it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PeerGossip {
    /// The start of the current introduction window.
    pub(super) window: Option<Instant>,
    /// Nodes new to the table it brought in during the window.
    pub(super) introduced: usize,
    /// When we last answered a digest of it with more than nothing.
    pub(super) answered: Option<Instant>,
    /// We sent it a digest: one summary in answer is read.
    pub(super) awaiting_summary: bool,
    /// We sent it a summary: the `want` of one delta in answer is served.
    pub(super) awaiting_want: bool,
}

/// Dials of one address failed lately, across every member that advertises it.
#[derive(Debug, Clone, Copy)]
pub(super) struct AddrFailure {
    pub(super) failures: u32,
    /// Until then, a member due a dial at this address counts a failure without a dial.
    pub(super) retry_at: Instant,
}

/// When to dial next and how the last dials went.
#[derive(Debug, Clone, Copy)]
pub(super) struct DialState {
    /// Consecutive failed dials.
    pub(super) failures: u32,
    /// No dial before this.
    pub(super) next_attempt: Instant,
    /// A dial was handed out and has not been reported yet.
    pub(super) in_flight: bool,
}

impl DialState {
    pub(super) fn new(now: Instant) -> Self {
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
    pub(super) identity: PeerIdentity,
    pub(super) state: MemberState,
    pub(super) learned: Source,
    pub(super) changed_at: Instant,
    pub(super) expires_at: Option<Instant>,
    pub(super) connected: bool,
    /// When the current connection came up.
    pub(super) up_since: Option<Instant>,
    /// When a dial first failed since we were last connected.
    pub(super) unreachable_since: Option<Instant>,
    /// Connections that dropped before staying up for a backoff cap: the attempt number of
    /// the redial after the next drop.
    pub(super) flaps: u32,
    pub(super) addresses: Vec<Address>,
    pub(super) dial: DialState,
    /// On probation: learned from gossip as a node new to the table, and never linked to
    /// since. Buried at its first failed dial.
    pub(super) fresh: bool,
    pub(super) keys: Keys,
    pub(super) gossip: PeerGossip,
}

impl Member {
    /// A new entry, not yet indexed.
    pub(super) fn new(
        identity: PeerIdentity,
        state: MemberState,
        learned: Source,
        now: Instant,
    ) -> Self {
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

    pub(super) fn version(&self) -> (u64, u8) {
        (self.identity.incarnation, self.state.rank())
    }

    pub(super) fn hash(&self) -> u64 {
        entry_hash(self.identity.node_id, self.identity.incarnation, self.state)
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Decides again which addresses we can dial, after the host id changed.
    pub(super) fn refresh_dialable(&mut self, rules: &DialRules) {
        for a in &mut self.addresses {
            a.dialable = rules.can_dial(&self.identity.host_id, &a.addr);
        }
    }

    /// The address to dial next: of those we can dial, the one with the fewest failures,
    /// first listed on a tie.
    pub(super) fn dial_address(&self) -> Option<&Address> {
        self.addresses
            .iter()
            .filter(|a| !a.forgotten && a.dialable)
            .min_by_key(|a| a.failures)
    }

    pub(super) fn add_address(&mut self, addr: &str, source: Source, rules: &DialRules) {
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
    pub(super) fn has_address(&self) -> bool {
        self.addresses.iter().any(|a| !a.forgotten)
    }

    pub(super) fn entry(&self, now: Instant) -> GossipEntry {
        let mut entry = GossipEntry::from_identity(&self.identity, self.state);
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now).as_millis();
            entry.ttl_ms = u64::try_from(left).unwrap_or(u64::MAX).max(1);
        }
        entry
    }
}
