//! Unit tests of the table, and a simulated mesh.

use super::*;

mod sim;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn identity(node: u128, incarnation: u64) -> PeerIdentity {
    PeerIdentity {
        node_id: node,
        incarnation,
        name: format!("node-{node}"),
        network: "default".into(),
        cluster: "shop".into(),
        host_id: format!("host-{node}"),
        addresses: vec![format!("tcp://10.0.0.{node}:7000")],
    }
}

fn entry(node: u128, incarnation: u64, state: MemberState) -> GossipEntry {
    GossipEntry::from_identity(&identity(node, incarnation), state)
}

fn delta(entries: Vec<GossipEntry>) -> GossipMessage {
    GossipMessage::Delta(GossipDelta {
        entries,
        want: Vec::new(),
    })
}

fn node(n: u128) -> NodeId {
    NodeId::from_u128(n)
}

fn table(now: Instant) -> Membership {
    Membership::new(identity(1, 1), Vec::new(), MembershipConfig::default(), now)
}

#[test]
fn gossip_adds_live_members_and_reports_them() {
    let now = t0();
    let mut m = table(now);
    let out = m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Joined(node(2))]);
    let member = m.member(node(2)).unwrap();
    assert_eq!(member.state(), MemberState::Alive);
    assert_eq!(member.learned(), Source::Gossip);
    assert_eq!(member.incarnation(), 5);
    assert_eq!(member.addresses()[0].addr(), "tcp://10.0.0.2:7000");
    assert_eq!(m.route(node(2)), Route::Pending);
    // Our own node is in the table but never dialled.
    assert_eq!(m.members().count(), 2);
    assert_eq!(m.route(node(1)), Route::Unreachable);
}

#[test]
fn a_tombstone_is_not_revived_by_equal_or_older_incarnations() {
    let now = t0();
    let mut m = table(now);
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    assert_eq!(m.on_goodbye(node(2), now), vec![Output::Left(node(2))]);
    for incarnation in [5, 4, 0] {
        let out = m.handle_gossip(
            node(9),
            delta(vec![entry(2, incarnation, MemberState::Alive)]),
            now + ms(10),
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Left);
    }
    // A `Dead` of the same incarnation is older news than `Left`.
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Dead)]), now);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Left);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    assert!(m.next_dials(now + ms(20)).is_empty());
}

#[test]
fn a_newer_incarnation_revives_a_tombstone() {
    let now = t0();
    let mut m = table(now);
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    m.on_peer_dead(node(2), now);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Dead);
    let out = m.handle_gossip(node(9), delta(vec![entry(2, 6, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Joined(node(2))]);
    assert_eq!(m.member(node(2)).unwrap().incarnation(), 6);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Alive);
}

#[test]
fn a_restart_is_reported_as_left_then_joined() {
    let now = t0();
    let mut m = table(now);
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let out = m.handle_gossip(node(9), delta(vec![entry(2, 7, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Left(node(2)), Output::Joined(node(2))]);
}

#[test]
fn tombstones_expire_with_the_senders_remaining_lifetime() {
    let now = t0();
    let mut m = table(now);
    let mut dead = entry(2, 5, MemberState::Dead);
    dead.ttl_ms = 1_000;
    m.handle_gossip(node(9), delta(vec![dead]), now);
    assert_eq!(
        m.member(node(2)).unwrap().expires_at(),
        Some(now + ms(1_000))
    );
    assert!(m.poll_timeout().unwrap() <= now + ms(1_000));
    // Still there just before, gone after; then stale news is news again.
    m.next_dials(now + ms(999));
    assert!(m.member(node(2)).is_some());
    m.next_dials(now + ms(1_000));
    assert!(m.member(node(2)).is_none());
    let out = m.handle_gossip(
        node(9),
        delta(vec![entry(2, 5, MemberState::Alive)]),
        now + ms(1_001),
    );
    assert_eq!(out, vec![Output::Joined(node(2))]);
}

#[test]
fn entries_of_another_network_are_ignored() {
    let now = t0();
    let mut m = table(now);
    let mut other = entry(2, 5, MemberState::Alive);
    other.network = "lab".into();
    assert!(m.handle_gossip(node(9), delta(vec![other]), now).is_empty());
    let mut other_identity = identity(3, 1);
    other_identity.network = "lab".into();
    assert!(m.on_connected(&other_identity, now).is_empty());
    assert!(m.on_discovered(&other_identity, now).is_empty());
    assert_eq!(m.members().count(), 1);
}

#[test]
fn oversized_entries_are_ignored() {
    let now = t0();
    let mut m = table(now);
    let mut big = entry(2, 5, MemberState::Alive);
    big.addresses = (0..=MAX_ADDRESSES)
        .map(|i| format!("tcp://h:{i}"))
        .collect();
    let mut long = entry(3, 5, MemberState::Alive);
    long.cluster = "x".repeat(MAX_FIELD_LEN + 1);
    assert!(m
        .handle_gossip(node(9), delta(vec![big, long]), now)
        .is_empty());
    assert_eq!(m.members().count(), 1);
}

#[test]
fn the_table_stops_growing_at_max_members() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 10,
        ..MembershipConfig::default()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now);
    let entries = (2..100).map(|n| entry(n, 1, MemberState::Alive)).collect();
    m.handle_gossip(node(9), delta(entries), now);
    assert_eq!(m.members().count(), 10);
}

#[test]
fn news_of_our_own_death_is_refuted_with_a_higher_incarnation() {
    let now = t0();
    let mut m = table(now);
    let out = m.handle_gossip(node(9), delta(vec![entry(1, 1, MemberState::Dead)]), now);
    assert_eq!(out, vec![Output::Refuted { incarnation: 2 }]);
    assert_eq!(m.local_incarnation(), 2);
    // Older news of our death, or news that we are alive, changes nothing.
    assert!(m
        .handle_gossip(node(9), delta(vec![entry(1, 1, MemberState::Left)]), now)
        .is_empty());
    assert!(m
        .handle_gossip(node(9), delta(vec![entry(1, 9, MemberState::Alive)]), now)
        .is_empty());
    assert_eq!(m.local_incarnation(), 2);
}

/// Longer than any backoff delay with the default schedule (30 s × 1.2).
const PAST_ANY_BACKOFF: Duration = Duration::from_secs(40);

#[test]
fn gossip_learned_addresses_are_forgotten_after_failed_dials_seeds_are_not() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 3,
        ..MembershipConfig::default()
    };
    let seed_addr = "tcp://seed:7000".to_string();
    let mut m = Membership::new(identity(1, 1), vec![seed_addr.clone()], config, now);
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);

    let mut clock = now;
    for attempt in 1..=3 {
        let dials = m.next_dials(clock);
        assert_eq!(dials.len(), 2, "attempt {attempt}: {dials:?}");
        for dial in &dials {
            m.on_dial_failed(dial, clock);
        }
        // Nothing is handed out again before the backoff has passed.
        assert!(m.next_dials(clock).is_empty());
        clock += PAST_ANY_BACKOFF;
    }
    let member = m.member(node(2)).unwrap();
    assert!(member.addresses()[0].is_forgotten());
    assert_eq!(member.dial_failures(), 3);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    // Only the seed is still dialled, however often it fails.
    for _ in 0..10 {
        clock += PAST_ANY_BACKOFF;
        let dials = m.next_dials(clock);
        assert_eq!(
            dials,
            vec![DialRequest {
                node: None,
                addr: seed_addr.clone()
            }]
        );
        m.on_dial_failed(&dials[0], clock);
    }
}

#[test]
fn a_seed_address_found_to_be_a_node_is_never_forgotten() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 2,
        ..MembershipConfig::default()
    };
    let seed_addr = "tcp://seed:7000".to_string();
    let mut m = Membership::new(identity(1, 1), vec![seed_addr.clone()], config, now);
    let dials = m.next_dials(now);
    assert_eq!(dials.len(), 1);
    let seed = identity(7, 1);
    m.on_connected(&seed, now);
    m.on_dial_succeeded(&dials[0], node(7), now);
    assert_eq!(m.route(node(7)), Route::Direct);
    assert_eq!(m.member(node(7)).unwrap().learned(), Source::Seed);
    m.on_disconnected(node(7), now);
    let mut clock = now;
    for _ in 0..6 {
        clock += PAST_ANY_BACKOFF;
        for dial in m.next_dials(clock) {
            assert_eq!(dial.node, Some(node(7)), "the seed is dialled as its node");
            m.on_dial_failed(&dial, clock);
        }
    }
    let member = m.member(node(7)).unwrap();
    let by_addr = |a: &str| member.addresses().iter().find(|x| x.addr() == a).unwrap();
    assert!(by_addr("tcp://10.0.0.7:7000").is_forgotten());
    assert!(!by_addr(&seed_addr).is_forgotten());
    assert_eq!(by_addr(&seed_addr).source(), Source::Seed);
    assert_eq!(m.route(node(7)), Route::Pending);
    // When the node behind the seed leaves, the seed address is dialled as a seed again.
    m.on_goodbye(node(7), clock);
    assert_eq!(
        m.next_dials(clock),
        vec![DialRequest {
            node: None,
            addr: seed_addr
        }]
    );
}

#[test]
fn backoff_grows_exponentially_and_is_capped() {
    let backoff = Backoff {
        base: ms(100),
        cap: ms(5_000),
        jitter: 0.0,
    };
    let mut rng = fastrand::Rng::with_seed(1);
    let delays: Vec<_> = (0..10).map(|a| backoff.delay(a, &mut rng)).collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000, 5_000].map(ms)
    );
    assert_eq!(backoff.delay(u32::MAX, &mut rng), ms(5_000));
}

#[test]
fn jitter_is_within_bounds_deterministic_per_seed_and_differs_between_seeds() {
    let backoff = Backoff {
        base: ms(100),
        cap: ms(5_000),
        jitter: 0.25,
    };
    let run = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..20)
            .map(|a| backoff.delay(a, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    for (attempt, delay) in (0u32..).zip(run(7)) {
        let centre = backoff.centre(attempt).as_secs_f64();
        let d = delay.as_secs_f64();
        assert!(
            d >= centre * 0.75 - 1e-9 && d <= centre * 1.25 + 1e-9,
            "{attempt}: {d}"
        );
    }
    assert_ne!(run(7)[10], ms(5_000), "jitter still applies at the cap");
}

#[test]
fn redials_of_a_member_back_off_exponentially() {
    let now = t0();
    let config = MembershipConfig {
        backoff: Backoff {
            base: ms(100),
            cap: ms(1_000),
            jitter: 0.0,
        },
        forget_after_failures: 100,
        ..MembershipConfig::default()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now);
    m.handle_gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let mut clock = now;
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let dials = m.next_dials(clock);
        assert_eq!(dials.len(), 1);
        m.on_dial_failed(&dials[0], clock);
        let next = m.member(node(2)).unwrap().next_dial();
        gaps.push(next - clock);
        clock = next;
    }
    assert_eq!(gaps, [100, 200, 400, 800, 1_000, 1_000].map(ms));
    // A success resets the schedule.
    let dials = m.next_dials(clock);
    m.on_connected(&identity(2, 5), clock);
    m.on_dial_succeeded(&dials[0], node(2), clock);
    assert_eq!(m.member(node(2)).unwrap().dial_failures(), 0);
}

#[test]
fn max_peers_caps_the_dials() {
    let now = t0();
    let config = MembershipConfig {
        max_peers: 3,
        ..MembershipConfig::default()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now);
    let entries = (2..20).map(|n| entry(n, 1, MemberState::Alive)).collect();
    m.handle_gossip(node(9), delta(entries), now);
    let dials = m.next_dials(now);
    assert_eq!(dials.len(), 3);
    assert!(m.next_dials(now).is_empty(), "three dials are under way");
    m.on_connected(&identity(2, 1), now);
    m.on_dial_succeeded(&dials[0], node(2), now);
    m.on_dial_failed(&dials[1], now);
    // One link up, one dial under way, one slot free; the failed node waits for its backoff.
    let next = m.next_dials(now);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].node, dials[1].node);
}

/// The size of a gossip message as sent: a whole frame, prefix and header included.
pub(super) fn wire_size(msg: &GossipMessage) -> usize {
    use crate::wire::control::ControlMessage;
    let frame = msg.to_frame().unwrap();
    let mut buf = bytes::BytesMut::new();
    crate::wire::FrameCodec::default()
        .encode(&frame, &mut buf)
        .unwrap();
    buf.len()
}

/// Two tables that agree: a round costs one digest, whatever their size.
#[test]
fn a_steady_state_round_sends_only_the_digest() {
    let now = t0();
    let mut sizes = Vec::new();
    for n in [2u128, 20, 200] {
        let entries: Vec<_> = (3..3 + n)
            .map(|i| entry(i, 1, MemberState::Alive))
            .collect();
        let mut a = table(now);
        let mut b = Membership::new(identity(2, 1), Vec::new(), MembershipConfig::default(), now);
        a.handle_gossip(node(2), delta(entries.clone()), now);
        b.handle_gossip(node(1), delta(entries), now);
        a.on_connected(&identity(2, 1), now);
        b.on_connected(&identity(1, 1), now);
        let out = a.gossip_round(now);
        let [Output::SendTo(to, msg)] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*to, node(2));
        assert!(matches!(msg, GossipMessage::Digest(_)));
        assert!(b.handle_gossip(node(1), msg.clone(), now).is_empty());
        sizes.push(wire_size(msg));
    }
    eprintln!("steady-state round, bytes for tables of 4, 22, 202 entries: {sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 64), "{sizes:?}");
    assert!(
        sizes.windows(2).all(|w| w[0].abs_diff(w[1]) <= 2),
        "{sizes:?}"
    );
}

/// Two tables that differ: the round moves exactly the difference.
#[test]
fn a_round_between_differing_tables_moves_only_the_difference() {
    let now = t0();
    let mut a = table(now);
    let mut b = Membership::new(identity(2, 1), Vec::new(), MembershipConfig::default(), now);
    let common: Vec<_> = (10..40).map(|i| entry(i, 1, MemberState::Alive)).collect();
    a.handle_gossip(node(2), delta(common.clone()), now);
    b.handle_gossip(node(1), delta(common), now);
    a.handle_gossip(node(9), delta(vec![entry(50, 1, MemberState::Alive)]), now);
    b.handle_gossip(node(9), delta(vec![entry(60, 1, MemberState::Alive)]), now);
    b.on_goodbye(node(10), now);
    a.on_connected(&identity(2, 1), now);
    b.on_connected(&identity(1, 1), now);

    let out = a.gossip_round(now);
    let [Output::SendTo(_, digest)] = &out[..] else {
        panic!("{out:?}")
    };
    let out = b.handle_gossip(node(1), digest.clone(), now);
    let [Output::SendTo(_, summary @ GossipMessage::Summary(_))] = &out[..] else {
        panic!("{out:?}")
    };
    let out = a.handle_gossip(node(2), summary.clone(), now);
    let [Output::SendTo(_, GossipMessage::Delta(push))] = &out[..] else {
        panic!("{out:?}")
    };
    let pushed: Vec<u128> = push.entries.iter().map(|e| e.node_id).collect();
    // What b lacks (50), and a's version of 10, which b holds another version of: hashes
    // do not say which is newer, so a sends its own and b keeps the newer one.
    assert_eq!(pushed, vec![10, 50], "only entries whose version b lacks");
    let mut wanted: Vec<u128> = b
        .members()
        .filter(|m| push.want.contains(&m.hash()))
        .map(|m| m.identity().node_id)
        .collect();
    wanted.sort_unstable();
    assert_eq!(push.want.len(), 2);
    assert_eq!(wanted, vec![10, 60], "only what a lacks or has older");
    let out = b.handle_gossip(node(1), GossipMessage::Delta(push.clone()), now);
    let mut replies = out.iter().filter_map(|o| match o {
        Output::SendTo(_, GossipMessage::Delta(d)) => Some(d.clone()),
        _ => None,
    });
    let reply = replies.next().unwrap();
    assert!(reply.want.is_empty());
    let out = a.handle_gossip(node(2), GossipMessage::Delta(reply), now);
    assert_eq!(out, vec![Output::Left(node(10)), Output::Joined(node(60))]);
    assert_eq!(a.digest(), b.digest());
}

mod props {
    use super::*;
    use crate::wire::control::entry_hash;
    use proptest::prelude::*;

    fn arb_state() -> impl Strategy<Value = MemberState> {
        prop_oneof![
            Just(MemberState::Alive),
            Just(MemberState::Dead),
            Just(MemberState::Left)
        ]
    }

    /// Entries about a few nodes (1 is the table's own), some of another network.
    fn arb_entry() -> impl Strategy<Value = GossipEntry> {
        (
            1u128..6,
            0u64..4,
            arb_state(),
            0u64..3,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(node, incarnation, state, ttl_ms, foreign)| {
                let mut e = entry(node, incarnation, state);
                e.ttl_ms = ttl_ms;
                if foreign {
                    e.network = "other".into();
                }
                e
            })
    }

    fn arb_message() -> impl Strategy<Value = GossipMessage> {
        let hash = (1u128..6, 0u64..4, arb_state()).prop_map(|(n, i, s)| entry_hash(n, i, s));
        let hashes = prop::collection::vec(prop_oneof![hash, any::<u64>()], 0..8);
        prop_oneof![
            (any::<u64>(), 0u32..10)
                .prop_map(|(hash, count)| GossipMessage::Digest(GossipDigest { hash, count })),
            (any::<u64>(), hashes.clone()).prop_map(|(hash, entries)| GossipMessage::Summary(
                GossipSummary { hash, entries }
            )),
            (prop::collection::vec(arb_entry(), 0..6), hashes)
                .prop_map(|(entries, want)| GossipMessage::Delta(GossipDelta { entries, want })),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Gossip(GossipMessage),
        Goodbye(u128),
        Dead(u128),
        Connected(u128, u64),
        Disconnected(u128),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => arb_message().prop_map(Step::Gossip),
            1 => (1u128..6).prop_map(Step::Goodbye),
            1 => (1u128..6).prop_map(Step::Dead),
            1 => (1u128..6, 0u64..4).prop_map(|(n, i)| Step::Connected(n, i)),
            1 => (1u128..6).prop_map(Step::Disconnected),
        ]
    }

    proptest! {
        /// Whatever arrives, at one instant (so no tombstone expires): no entry's version ever
        /// goes down and no entry disappears, our own entry stays alive, answers go to the
        /// sender, and `Joined`/`Left` report exactly the changes of who is alive.
        #[test]
        fn versions_never_go_back(steps in prop::collection::vec(arb_step(), 1..40)) {
            let now = t0();
            let mut m = table(now);
            let snapshot = |m: &Membership| -> BTreeMap<NodeId, (u64, u8)> {
                m.members().map(|x| (x.node_id(), x.version())).collect()
            };
            for step in steps {
                let before = snapshot(&m);
                let out = match step {
                    Step::Gossip(msg) => m.handle_gossip(node(9), msg, now),
                    Step::Goodbye(n) => m.on_goodbye(node(n), now),
                    Step::Dead(n) => m.on_peer_dead(node(n), now),
                    Step::Connected(n, i) => m.on_connected(&identity(n, i), now),
                    Step::Disconnected(n) => {
                        m.on_disconnected(node(n), now);
                        Vec::new()
                    }
                };
                let after = snapshot(&m);
                for (id, v) in &before {
                    let now_v = after.get(id);
                    prop_assert!(now_v.is_some_and(|a| a >= v), "{id:?}: {v:?} -> {now_v:?}");
                }
                let me = m.member(node(1)).unwrap();
                prop_assert_eq!(me.state(), MemberState::Alive);
                // Replaying `Joined`/`Left` in order over the states before gives the states
                // after: they alternate and end where the table is.
                let mut alive: BTreeMap<NodeId, bool> =
                    before.iter().map(|(id, v)| (*id, v.1 == 0)).collect();
                for o in &out {
                    match o {
                        Output::SendTo(to, _) => prop_assert_eq!(*to, node(9)),
                        Output::Joined(n) => {
                            prop_assert!(!alive.get(n).copied().unwrap_or(false), "{n:?}");
                            alive.insert(*n, true);
                        }
                        Output::Left(n) => {
                            prop_assert!(alive.get(n).copied().unwrap_or(false), "{n:?}");
                            alive.insert(*n, false);
                        }
                        Output::Refuted { incarnation } => {
                            prop_assert!(*incarnation <= me.incarnation());
                        }
                        Output::Dial(_) => prop_assert!(false, "inputs never dial"),
                    }
                }
                for (id, v) in &after {
                    prop_assert_eq!(alive.get(id).copied().unwrap_or(false), v.1 == 0, "{:?}", id);
                }
                prop_assert!(m.members().all(|x| x.identity().network == "default"));
            }
        }
    }
}
