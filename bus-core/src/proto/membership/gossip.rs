//! The gossip exchange: rounds, what a peer's messages may cost us, and the answers.

use super::*;

impl Membership {
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
    pub(super) fn may_answer_digest(&mut self, from: NodeId, now: Instant) -> bool {
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
    pub(super) fn budget(&mut self, from: NodeId) -> &mut PeerGossip {
        match self.table.get_mut(&from) {
            Some(m) => &mut m.gossip,
            None => &mut self.strangers,
        }
    }

    /// Whether `from` may bring one more node new to the table into it now, counting it.
    pub(super) fn may_introduce(&mut self, from: NodeId, now: Instant) -> bool {
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
}

/// Queues `entries` and `want` for `to` as [`GossipDelta`]s of at most `budget` bytes each as
/// frames: `want` (as much of it as fits) in the first, entries in order after it. An entry
/// that does not fit in a message of its own is left out; nothing is queued for nothing.
pub(super) fn send_deltas(
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
