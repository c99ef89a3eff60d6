//! A simulated mesh: many tables, a fake clock and an in-memory message queue; no sockets, no
//! tokio. Each round advances the clock by one gossip interval, runs every node's timers
//! (gossip rounds and dials; a dial to a running node connects at once), then delivers queued
//! messages, and the answers they cause, until the queue is empty.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::*;

/// Bytes and messages of one round.
#[derive(Debug, Default, Clone, Copy)]
struct RoundStats {
    bytes: usize,
    digests: usize,
    summaries: usize,
    deltas: usize,
}

struct Sim {
    nodes: Vec<Membership>,
    identities: Vec<PeerIdentity>,
    by_addr: HashMap<String, usize>,
    by_id: HashMap<NodeId, usize>,
    /// Connections, as (lower index, higher index).
    links: BTreeSet<(usize, usize)>,
    /// Nodes that are stopped or cut off: no timers, nothing delivered to or from them.
    down: BTreeSet<usize>,
    clock: Instant,
    /// Every `Joined`/`Left` any node reported: (round, reporter, node, joined?).
    events: Vec<(u32, usize, NodeId, bool)>,
    round: u32,
}

const SEED_ADDR: &str = "inmem://node-0";

impl Sim {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let clock = Instant::now();
        let identities: Vec<PeerIdentity> = (0..n)
            .map(|i| PeerIdentity {
                node_id: rng.u128(..),
                incarnation: rng.u64(1..1 << 40),
                name: format!("node-{i}"),
                network: "default".into(),
                cluster: if i % 2 == 0 { "even" } else { "odd" }.into(),
                host_id: format!("host-{}", i / 4),
                addresses: vec![format!("inmem://node-{i}")],
                public_key: None,
            })
            .collect();
        let nodes = (0..n)
            .map(|i| Self::start(&identities[i], seed, i, clock))
            .collect();
        Sim {
            nodes,
            by_addr: (0..n).map(|i| (format!("inmem://node-{i}"), i)).collect(),
            by_id: (0..n)
                .map(|i| (NodeId::from_u128(identities[i].node_id), i))
                .collect(),
            identities,
            links: BTreeSet::new(),
            down: BTreeSet::new(),
            clock,
            events: Vec::new(),
            round: 0,
        }
    }

    /// A node's table at start: it knows only the seed address.
    fn start(identity: &PeerIdentity, seed: u64, i: usize, now: Instant) -> Membership {
        let config = MembershipConfig {
            rng_seed: seed ^ (i as u64).wrapping_mul(0x9e37_79b9),
            ..MembershipConfig::default()
        };
        Membership::new(identity.clone(), vec![SEED_ADDR.to_string()], config, now).unwrap()
    }

    fn id(&self, i: usize) -> NodeId {
        NodeId::from_u128(self.identities[i].node_id)
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    /// One gossip interval, in `STEPS` steps: each runs every node's timers (as the runtime
    /// does whenever one is due: dials are rate limited, so a node makes its dials over the
    /// interval, not all at its first timer), then delivers what they caused.
    fn round(&mut self) -> RoundStats {
        const STEPS: u32 = 10;
        self.round += 1;
        let step = self.nodes[0].config().gossip_interval / STEPS;
        let mut stats = RoundStats::default();
        for _ in 0..STEPS {
            self.clock += step;
            let s = self.step();
            stats.bytes += s.bytes;
            stats.digests += s.digests;
            stats.summaries += s.summaries;
            stats.deltas += s.deltas;
        }
        stats
    }

    fn step(&mut self) -> RoundStats {
        let mut queue = VecDeque::new();
        for i in 0..self.nodes.len() {
            if self.down.contains(&i) {
                continue;
            }
            let outputs = self.nodes[i].handle_timeout(self.clock);
            self.route(i, outputs, &mut queue);
        }
        let mut stats = RoundStats::default();
        let mut delivered = 0;
        while let Some((from, to, msg)) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < 1_000_000, "the exchange does not settle");
            if self.down.contains(&from) || self.down.contains(&to) || !self.linked(from, to) {
                continue;
            }
            stats.bytes += wire_size(&msg);
            match msg {
                GossipMessage::Digest(_) => stats.digests += 1,
                GossipMessage::Summary(_) => stats.summaries += 1,
                GossipMessage::Delta(_) => stats.deltas += 1,
            }
            let from_id = self.id(from);
            let outputs = self.nodes[to].gossip(from_id, msg, self.clock);
            self.route(to, outputs, &mut queue);
        }
        stats
    }

    fn route(
        &mut self,
        i: usize,
        outputs: Vec<Output>,
        queue: &mut VecDeque<(usize, usize, GossipMessage)>,
    ) {
        for output in outputs {
            match output {
                Output::SendTo(peer, msg) => {
                    if let Some(&to) = self.by_id.get(&peer) {
                        queue.push_back((i, to, msg));
                    }
                }
                Output::Dial(dial) => self.dial(i, dial, queue),
                Output::Joined(node) => self.events.push((self.round, i, node, true)),
                Output::Left(node) => self.events.push((self.round, i, node, false)),
                Output::Refuted { incarnation } => self.identities[i].incarnation = incarnation,
            }
        }
    }

    /// A dial connects at once if the node behind the address is running.
    fn dial(
        &mut self,
        i: usize,
        dial: DialRequest,
        queue: &mut VecDeque<(usize, usize, GossipMessage)>,
    ) {
        let now = self.clock;
        match self.by_addr.get(&dial.addr).copied() {
            Some(j) if j != i && !self.down.contains(&j) => {
                if !self.linked(i, j) {
                    self.links.insert((i.min(j), i.max(j)));
                    let (id_i, id_j) = (self.identities[i].clone(), self.identities[j].clone());
                    let out = self.nodes[i].on_connected(&id_j, now);
                    self.route(i, out, queue);
                    let out = self.nodes[j].on_connected(&id_i, now);
                    self.route(j, out, queue);
                }
                let node = self.id(j);
                self.nodes[i].on_dial_succeeded(&dial, node, now);
            }
            _ => self.nodes[i].on_dial_failed(&dial, now),
        }
    }

    /// Node `i` stops; only the nodes in `told` receive its goodbye, the others see the
    /// connection drop.
    fn leave(&mut self, i: usize, told: impl Fn(usize) -> bool) {
        let node = self.id(i);
        let incarnation = self.identities[i].incarnation;
        let now = self.clock;
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.linked(i, j) && !self.down.contains(&j))
            .collect();
        for j in peers {
            let out = if told(j) {
                self.nodes[j].on_goodbye(node, incarnation, now)
            } else {
                self.nodes[j].on_disconnected(node, incarnation, now);
                Vec::new()
            };
            for o in out {
                if let Output::Left(n) = o {
                    self.events.push((self.round, j, n, false));
                }
            }
        }
        self.links.retain(|&(a, b)| a != i && b != i);
        self.down.insert(i);
    }

    /// Whether every running node holds every other running node as live.
    fn all_know_all(&self) -> bool {
        let running = self.nodes.len() - self.down.len();
        (0..self.nodes.len())
            .filter(|i| !self.down.contains(i))
            .all(|i| self.nodes[i].peers().count() == running - 1)
    }

    fn fully_meshed(&self) -> bool {
        let n = self.nodes.len();
        self.links.len() == n * (n - 1) / 2
    }

    fn digests_agree(&mut self) -> bool {
        let digests: BTreeSet<_> = (0..self.nodes.len())
            .filter(|i| !self.down.contains(i))
            .map(|i| {
                let d = self.nodes[i].digest();
                (d.hash, d.count)
            })
            .collect();
        digests.len() == 1
    }

    /// What sending node 0's whole table in one message costs.
    fn full_table_size(&self) -> (usize, usize) {
        let entries: Vec<GossipEntry> = self.nodes[0]
            .members()
            .map(|m| m.entry(self.clock))
            .collect();
        let count = entries.len();
        let size = wire_size(&GossipMessage::Delta(GossipDelta {
            entries,
            want: Vec::new(),
        }));
        (size, count)
    }
}

#[test]
fn fifty_nodes_join_through_one_seed() {
    const N: usize = 50;
    let mut sim = Sim::new(N, 42);
    let mut total_bytes = 0;
    let mut knows_all = None;
    let mut meshed = None;
    while meshed.is_none() {
        assert!(sim.round < 30, "no convergence after 30 rounds");
        let stats = sim.round();
        total_bytes += stats.bytes;
        eprintln!(
            "round {:2}: {:6} bytes ({} per node), {} digests, {} summaries, {} deltas, {} links",
            sim.round,
            stats.bytes,
            stats.bytes / N,
            stats.digests,
            stats.summaries,
            stats.deltas,
            sim.links.len()
        );
        if knows_all.is_none() && sim.all_know_all() {
            knows_all = Some(sim.round);
        }
        if sim.all_know_all() && sim.fully_meshed() && sim.digests_agree() {
            meshed = Some(sim.round);
        }
    }
    let (knows_all, meshed) = (knows_all.unwrap(), meshed.unwrap());
    let (table_bytes, entries) = sim.full_table_size();
    let entry_bytes = table_bytes / entries;
    let naive = N * N * entry_bytes;
    eprintln!(
        "{N} nodes: every node knows the other {} after {knows_all} rounds, full mesh with \
         equal digests after {meshed}; {total_bytes} bytes of gossip until then \
         ({:.2} × N² × {entry_bytes}-byte entries = {naive}); whole table = {table_bytes} bytes",
        N - 1,
        total_bytes as f64 / naive as f64,
    );
    assert!(knows_all <= 10, "{knows_all} rounds");
    assert!(meshed <= 10, "{meshed} rounds");
    // Every node must receive N − 1 entries at least once: N² entries is the floor. The
    // digests and summaries on top of that stay within the same order.
    assert!(
        2 * total_bytes < 3 * naive,
        "{total_bytes} bytes vs {naive}"
    );
    assert!(
        sim.events.iter().all(|&(_, _, _, joined)| joined),
        "nobody left"
    );

    // Steady state: one digest per node and round, nothing else.
    let mut steady = RoundStats::default();
    const STEADY_ROUNDS: usize = 10;
    for _ in 0..STEADY_ROUNDS {
        let stats = sim.round();
        steady.bytes += stats.bytes;
        steady.digests += stats.digests;
        steady.summaries += stats.summaries;
        steady.deltas += stats.deltas;
    }
    let per_node_round = steady.bytes / (N * STEADY_ROUNDS);
    eprintln!(
        "steady state: {per_node_round} bytes per node per round ({:.2}% of the whole table); \
         {steady:?}",
        100.0 * per_node_round as f64 / table_bytes as f64
    );
    assert_eq!(steady.digests, N * STEADY_ROUNDS);
    assert_eq!(steady.summaries + steady.deltas, 0);
    assert!(
        per_node_round * 10 < table_bytes,
        "{per_node_round} vs {table_bytes}"
    );
    assert!(per_node_round <= 64, "{per_node_round}");
}

#[test]
fn a_node_that_left_stays_gone_despite_stale_gossip_and_may_restart() {
    const N: usize = 20;
    let (leaver, lagger) = (7, 13);
    let mut sim = Sim::new(N, 7);
    while !(sim.all_know_all() && sim.fully_meshed() && sim.digests_agree()) {
        assert!(sim.round < 20, "no convergence");
        sim.round();
    }
    let gone = sim.id(leaver);
    let incarnation = sim.identities[leaver].incarnation;
    // What the lagging node would gossip about the leaver, captured while it was alive.
    let stale = GossipMessage::Delta(GossipDelta {
        entries: vec![sim.nodes[lagger].member(gone).unwrap().entry(sim.clock)],
        want: Vec::new(),
    });

    // The lagging node is cut off; the leaver says goodbye to a third of its peers only.
    sim.down.insert(lagger);
    sim.leave(leaver, |j| j % 3 == 0);
    let left_at = sim.round;
    let mut rounds = 0;
    while !(0..N)
        .filter(|i| !sim.down.contains(i))
        .all(|i| sim.nodes[i].member(gone).unwrap().state() == MemberState::Left)
    {
        rounds += 1;
        assert!(rounds <= 10, "the goodbye does not spread");
        sim.round();
    }
    eprintln!("the goodbye reached every running node in {rounds} rounds");

    // Stale news of the leaver, replayed to everyone, changes nothing.
    let lagger_id = sim.id(lagger);
    for i in (0..N).filter(|i| !sim.down.contains(i)) {
        let out = sim.nodes[i].gossip(lagger_id, stale.clone(), sim.clock);
        assert!(out.is_empty(), "node {i}: {out:?}");
    }

    // The lagging node comes back, still holding the leaver as alive, and is told.
    sim.down.remove(&lagger);
    let mut rounds = 0;
    while sim.nodes[lagger].member(gone).unwrap().state() != MemberState::Left {
        rounds += 1;
        assert!(rounds <= 10, "the lagging node is never told");
        sim.round();
    }
    for _ in 0..5 {
        sim.round();
    }
    eprintln!("the lagging node learned of the goodbye in {rounds} rounds");
    assert!(sim.digests_agree());
    for i in (0..N).filter(|&i| i != leaver) {
        let member = sim.nodes[i].member(gone).unwrap();
        assert_eq!(member.state(), MemberState::Left, "node {i}");
        assert_eq!(member.incarnation(), incarnation);
        assert_eq!(sim.nodes[i].route(gone), Route::Unreachable);
    }
    let revived = sim
        .events
        .iter()
        // Events of the round the leaver left in came before it left.
        .any(|&(round, _, node, joined)| round > left_at && node == gone && joined);
    assert!(!revived, "the leaver came back: {:?}", sim.events);

    // The same node id with a newer incarnation is a new live member.
    sim.identities[leaver].incarnation = incarnation + 1;
    sim.nodes[leaver] = Sim::start(&sim.identities[leaver], 99, leaver, sim.clock);
    sim.down.remove(&leaver);
    let mut rounds = 0;
    while !sim.all_know_all() {
        rounds += 1;
        assert!(rounds <= 10, "the restarted node is not taken back");
        sim.round();
    }
    eprintln!("the restarted node was known to all again after {rounds} rounds");
    for i in (0..N).filter(|&i| i != leaver) {
        let member = sim.nodes[i].member(gone).unwrap();
        assert_eq!(member.state(), MemberState::Alive);
        assert_eq!(member.incarnation(), incarnation + 1);
    }
}

/// Nodes join in waves while gossip is under way, so tables differ in every way and rounds
/// go through summaries and deltas rather than a newcomer's full pull.
#[test]
fn fifty_nodes_joining_in_waves_converge_with_bounded_traffic() {
    const N: usize = 50;
    const WAVE: usize = 5;
    let mut sim = Sim::new(N, 1234);
    sim.down = (WAVE..N).collect();
    let mut total = RoundStats::default();
    let mut next = WAVE;
    while next < N || !(sim.all_know_all() && sim.fully_meshed() && sim.digests_agree()) {
        assert!(sim.round < 40, "no convergence after 40 rounds");
        for i in next..(next + WAVE).min(N) {
            sim.nodes[i] = Sim::start(&sim.identities[i], 1234, i, sim.clock);
            sim.down.remove(&i);
        }
        next = (next + WAVE).min(N);
        let stats = sim.round();
        total.bytes += stats.bytes;
        total.digests += stats.digests;
        total.summaries += stats.summaries;
        total.deltas += stats.deltas;
    }
    let last_join = (N / WAVE) as u32;
    let (table_bytes, entries) = sim.full_table_size();
    let naive = N * N * (table_bytes / entries);
    eprintln!(
        "{N} nodes in waves of {WAVE}: converged {} rounds after the last wave joined; \
         {} bytes ({:.2} × N² × entry), {total:?}",
        sim.round - last_join,
        total.bytes,
        total.bytes as f64 / naive as f64
    );
    assert!(sim.round - last_join <= 10);
    assert!(total.bytes < 3 * naive, "{} vs {naive}", total.bytes);
    assert!(
        sim.events.iter().all(|&(_, _, _, joined)| joined),
        "nobody left"
    );
}

/// The lagging node is cut off for longer than the tombstone lifetime: every other node has
/// dropped the leaver's tombstone when the lagger comes back still holding the leaver alive,
/// so its stale news brings the leaver back. Nobody can reach it, so it is buried again as
/// `Dead` at its old incarnation, everywhere, and finally forgotten.
#[test]
fn a_node_resurrected_by_a_lagger_cut_off_past_the_tombstone_ttl_is_buried_again() {
    const N: usize = 12;
    let (leaver, lagger) = (3, 8);
    let mut sim = Sim::new(N, 11);
    while !(sim.all_know_all() && sim.fully_meshed() && sim.digests_agree()) {
        assert!(sim.round < 20, "no convergence");
        sim.round();
    }
    let gone = sim.id(leaver);
    let incarnation = sim.identities[leaver].incarnation;
    let ttl = sim.nodes[0].config().tombstone_ttl;
    let running = |sim: &Sim| (0..N).filter(|i| !sim.down.contains(i)).collect::<Vec<_>>();

    sim.down.insert(lagger);
    sim.leave(leaver, |_| true);
    for _ in 0..5 {
        sim.round();
    }
    for i in running(&sim) {
        assert_eq!(
            sim.nodes[i].member(gone).unwrap().state(),
            MemberState::Left
        );
    }
    // Longer than the tombstone lifetime: the tombstones expire everywhere.
    sim.clock += ttl;
    sim.round();
    for i in running(&sim) {
        assert!(sim.nodes[i].member(gone).is_none(), "node {i}");
    }

    // The lagger comes back with the leaver alive: the stale news spreads.
    sim.down.remove(&lagger);
    let back_at = sim.round;
    let mut resurrected = false;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 60, "the resurrected node is never buried");
        sim.round();
        let alive = running(&sim)
            .into_iter()
            .filter(|&i| {
                sim.nodes[i]
                    .member(gone)
                    .is_some_and(|m| m.state() == MemberState::Alive)
            })
            .count();
        // Buried within the round it came back in, by its first failed dial: the events
        // say it was taken back.
        resurrected |= alive > 1
            || sim
                .events
                .iter()
                .any(|e| e.0 > back_at && e.1 != lagger && e.2 == gone && e.3);
        if alive == 0 {
            break;
        }
    }
    assert!(resurrected, "the scenario did not resurrect the leaver");
    eprintln!(
        "the resurrected node was buried everywhere {rounds} rounds after the lagger came back"
    );
    for _ in 0..10 {
        sim.round();
    }
    for i in running(&sim) {
        let member = sim.nodes[i].member(gone).unwrap();
        assert_eq!(member.state(), MemberState::Dead, "node {i}");
        assert_eq!(member.incarnation(), incarnation);
        assert_eq!(sim.nodes[i].route(gone), Route::Unreachable);
    }
    assert!(sim.digests_agree());
    // Each other node took it back at most once and buried it as often (a node that heard
    // of the burial first never took it back); the lagger only buried it.
    for i in running(&sim) {
        let count = |joined: bool| {
            sim.events
                .iter()
                .filter(|e| e.0 > back_at && e.1 == i && e.2 == gone && e.3 == joined)
                .count()
        };
        if i == lagger {
            assert_eq!((count(true), count(false)), (0, 1), "node {i}");
        } else {
            assert!(count(true) <= 1, "node {i}");
            assert_eq!(count(true), count(false), "node {i}");
        }
    }
    // Once those tombstones expire too, the node is gone for good: no one gossips it alive.
    sim.clock += ttl;
    for _ in 0..3 {
        sim.round();
    }
    for i in running(&sim) {
        assert!(sim.nodes[i].member(gone).is_none(), "node {i}");
    }
}
