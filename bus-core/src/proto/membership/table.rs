//! How the table changes: news taken in, members buried and evicted, tombstones purged, rumours
//! of our death refuted.

use super::*;

impl Membership {
    /// Drops expired tombstones.
    pub(super) fn purge(&mut self, now: Instant) {
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
    pub(super) fn burial_due(&self, node: NodeId, m: &Member) -> Option<Instant> {
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
    pub(super) fn bury_unreachable(&mut self, now: Instant, out: &mut Vec<Output>) {
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
    pub(super) fn evict_one(&mut self, now: Instant, out: &mut Vec<Output>) -> bool {
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
    pub(super) fn bury(
        &mut self,
        node: NodeId,
        state: MemberState,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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
    pub(super) fn unbind_seeds(&mut self, node: NodeId, now: Instant) {
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
    pub(super) fn apply(
        &mut self,
        entry: GossipEntry,
        source: Source,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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
    pub(super) fn refute(&mut self, entry: &GossipEntry, now: Instant, out: &mut Vec<Output>) {
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
