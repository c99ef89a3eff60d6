//! Dialling: the outcomes of dials, the token bucket, and which dials are due.

use super::*;

impl Membership {
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
    pub(super) fn fail_member(&mut self, node: NodeId, addr: &str, now: Instant) {
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

    pub(super) fn fail_seed(&mut self, addr: &str, now: Instant) {
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
    pub(super) fn note_failed_addr(&mut self, addr: &str, now: Instant) {
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

    pub(super) fn clear_failed_addr(&mut self, addr: &str) {
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
    pub(super) fn refill(&mut self, now: Instant) {
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
    pub(super) fn token_period(&self) -> Duration {
        Duration::from_secs(1) / self.config.dial_rate.max(1)
    }

    /// When a dial token is next in the bucket (in the past if there is one now).
    pub(super) fn token_ready_at(&self) -> Instant {
        if self.tokens > 0 {
            self.refilled_at
        } else {
            self.refilled_at
                .checked_add(self.token_period())
                .unwrap_or(self.refilled_at)
        }
    }

    pub(super) fn seed_dials(&self) -> usize {
        self.seeds.iter().filter(|s| s.dial.in_flight).count()
    }

    /// How many more dials may start now: room under `max_peers` links and under
    /// `max_dials_in_flight`, before tokens.
    pub(super) fn dial_room(&self) -> usize {
        let in_flight = self.dials_in_flight();
        let links = self.connected.len() + in_flight;
        self.config
            .max_peers
            .saturating_sub(links)
            .min(self.config.max_dials_in_flight.saturating_sub(in_flight))
    }

    /// The first member due a dial at or before `now`: nodes we know before those on
    /// probation.
    pub(super) fn first_due(&self, now: Instant) -> Option<NodeId> {
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
}
