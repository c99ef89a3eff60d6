//! Unit tests of the table, and a simulated mesh.

use super::*;

mod sim;

fn t0() -> Instant {
    Instant::now()
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn identity(node: u128, incarnation: u64) -> PeerIdentity {
    PeerIdentity {
        node_id: node,
        incarnation,
        name: format!("node-{node}"),
        network: "default".into(),
        cluster: "shop".into(),
        host_id: format!("host-{node}"),
        addresses: vec![format!("tcp://10.0.0.{node}:7000")],
        public_key: None,
    }
}

pub(crate) fn entry(node: u128, incarnation: u64, state: MemberState) -> GossipEntry {
    GossipEntry::from_identity(&identity(node, incarnation), state)
}

pub(crate) fn delta(entries: Vec<GossipEntry>) -> GossipMessage {
    GossipMessage::Delta(GossipDelta {
        entries,
        want: Vec::new(),
    })
}

pub(crate) fn node(n: u128) -> NodeId {
    NodeId::from_u128(n)
}

/// Gossip over a link that takes the largest frames: only `max_message_size` limits answers.
trait GossipExt {
    fn gossip(&mut self, from: NodeId, msg: GossipMessage, now: Instant) -> Vec<Output>;
}

impl GossipExt for Membership {
    fn gossip(&mut self, from: NodeId, msg: GossipMessage, now: Instant) -> Vec<Output> {
        let out = self.handle_gossip(from, msg, crate::wire::DEFAULT_MAX_FRAME_SIZE, now);
        self.assert_indexes();
        out
    }
}

/// The default configuration, but any number of members may be introduced at once (the
/// tests of that bound set it themselves).
fn config() -> MembershipConfig {
    MembershipConfig {
        max_introductions: 1_000_000,
        ..MembershipConfig::default()
    }
}

fn table(now: Instant) -> Membership {
    Membership::new(identity(1, 1), Vec::new(), config(), now).unwrap()
}

/// As if `m` had sent `from` a digest (so a summary is read) and a summary (so a `want` is
/// served).
fn solicit(m: &mut Membership, from: NodeId) {
    let budget = m.budget(from);
    budget.awaiting_summary = true;
    budget.awaiting_want = true;
}

#[test]
fn gossip_adds_live_members_and_reports_them() {
    let now = t0();
    let mut m = table(now);
    let out = m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
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
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    assert_eq!(m.on_goodbye(node(2), 5, now), vec![Output::Left(node(2))]);
    for incarnation in [5, 4, 0] {
        let out = m.gossip(
            node(9),
            delta(vec![entry(2, incarnation, MemberState::Alive)]),
            now + ms(10),
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Left);
    }
    // A `Dead` of the same incarnation is older news than `Left`.
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Dead)]), now);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Left);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    assert!(m.next_dials(now + ms(20)).is_empty());
}

#[test]
fn a_newer_incarnation_revives_a_tombstone() {
    let now = t0();
    let mut m = table(now);
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    m.on_peer_dead(node(2), 5, now);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Dead);
    let out = m.gossip(node(9), delta(vec![entry(2, 6, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Joined(node(2))]);
    assert_eq!(m.member(node(2)).unwrap().incarnation(), 6);
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Alive);
}

#[test]
fn a_restart_is_reported_as_left_then_joined() {
    let now = t0();
    let mut m = table(now);
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let out = m.gossip(node(9), delta(vec![entry(2, 7, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Left(node(2)), Output::Joined(node(2))]);
}

#[test]
fn tombstones_expire_with_the_senders_remaining_lifetime() {
    let now = t0();
    let mut m = table(now);
    let mut dead = entry(2, 5, MemberState::Dead);
    dead.ttl_ms = 1_000;
    m.gossip(node(9), delta(vec![dead]), now);
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
    let out = m.gossip(
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
    assert!(m.gossip(node(9), delta(vec![other]), now).is_empty());
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
    assert!(m.gossip(node(9), delta(vec![big, long]), now).is_empty());
    assert_eq!(m.members().count(), 1);
}

#[test]
fn the_table_stops_growing_at_max_members() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 10,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let entries = (2..100).map(|n| entry(n, 1, MemberState::Alive)).collect();
    m.gossip(node(9), delta(entries), now);
    assert_eq!(m.members().count(), 10);
}

#[test]
fn news_of_our_own_death_is_refuted_with_a_higher_incarnation() {
    let now = t0();
    let mut m = table(now);
    let out = m.gossip(node(9), delta(vec![entry(1, 1, MemberState::Dead)]), now);
    assert_eq!(out, vec![Output::Refuted { incarnation: 2 }]);
    assert_eq!(m.local_incarnation(), 2);
    // Older news of our death, or news that we are alive, changes nothing.
    assert!(m
        .gossip(node(9), delta(vec![entry(1, 1, MemberState::Left)]), now)
        .is_empty());
    assert!(m
        .gossip(node(9), delta(vec![entry(1, 9, MemberState::Alive)]), now)
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
        ..config()
    };
    let seed_addr = "tcp://seed:7000".to_string();
    let mut m = Membership::new(identity(1, 1), vec![seed_addr.clone()], config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);

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
        ..config()
    };
    let seed_addr = "tcp://seed:7000".to_string();
    let mut m = Membership::new(identity(1, 1), vec![seed_addr.clone()], config, now).unwrap();
    let dials = m.next_dials(now);
    assert_eq!(dials.len(), 1);
    let seed = identity(7, 1);
    m.on_connected(&seed, now);
    m.on_dial_succeeded(&dials[0], node(7), now);
    assert_eq!(m.route(node(7)), Route::Direct);
    assert_eq!(m.member(node(7)).unwrap().learned(), Source::Seed);
    m.on_disconnected(node(7), 1, now);
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
    m.on_goodbye(node(7), 1, clock);
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
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
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
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let entries = (2..20).map(|n| entry(n, 1, MemberState::Alive)).collect();
    m.gossip(node(9), delta(entries), now);
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
        let mut b = Membership::new(identity(2, 1), Vec::new(), config(), now).unwrap();
        a.gossip(node(2), delta(entries.clone()), now);
        b.gossip(node(1), delta(entries), now);
        a.on_connected(&identity(2, 1), now);
        b.on_connected(&identity(1, 1), now);
        let out = a.gossip_round(now);
        let [Output::SendTo(to, msg)] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*to, node(2));
        assert!(matches!(msg, GossipMessage::Digest(_)));
        assert!(b.gossip(node(1), msg.clone(), now).is_empty());
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
    let mut b = Membership::new(identity(2, 1), Vec::new(), config(), now).unwrap();
    let common: Vec<_> = (10..40).map(|i| entry(i, 1, MemberState::Alive)).collect();
    a.gossip(node(2), delta(common.clone()), now);
    b.gossip(node(1), delta(common), now);
    a.gossip(node(9), delta(vec![entry(50, 1, MemberState::Alive)]), now);
    b.gossip(node(9), delta(vec![entry(60, 1, MemberState::Alive)]), now);
    b.on_goodbye(node(10), 1, now);
    a.on_connected(&identity(2, 1), now);
    b.on_connected(&identity(1, 1), now);

    let out = a.gossip_round(now);
    let [Output::SendTo(_, digest)] = &out[..] else {
        panic!("{out:?}")
    };
    let out = b.gossip(node(1), digest.clone(), now);
    let [Output::SendTo(_, summary @ GossipMessage::Summary(_))] = &out[..] else {
        panic!("{out:?}")
    };
    let out = a.gossip(node(2), summary.clone(), now);
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
    let out = b.gossip(node(1), GossipMessage::Delta(push.clone()), now);
    let mut replies = out.iter().filter_map(|o| match o {
        Output::SendTo(_, GossipMessage::Delta(d)) => Some(d.clone()),
        _ => None,
    });
    let reply = replies.next().unwrap();
    assert!(reply.want.is_empty());
    let out = a.gossip(node(2), GossipMessage::Delta(reply), now);
    assert_eq!(out, vec![Output::Left(node(10)), Output::Joined(node(60))]);
    assert_eq!(a.digest(), b.digest());
}

/// A member we fail to reach, and whose every address is forgotten, is buried as `Dead` at its
/// incarnation: junk a peer gossips cannot hold the table for ever, and a real node joins
/// (found by review: the table stayed full of unreachable `Alive` junk).
#[test]
fn unreachable_junk_is_buried_and_makes_room_for_real_nodes() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 50,
        forget_after_failures: 2,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let junk = (1000..1100)
        .map(|n| entry(n, 1, MemberState::Alive))
        .collect();
    m.gossip(node(9), delta(junk), now);
    assert_eq!(m.members().count(), 50);
    let mut clock = now;
    for _ in 0..20 {
        clock += PAST_ANY_BACKOFF;
        for d in m.next_dials(clock) {
            m.on_dial_failed(&d, clock);
        }
    }
    clock += Duration::from_secs(24 * 3600);
    // Nothing to dial, so burying them is due at once.
    assert!(m.poll_timeout().unwrap() <= clock);
    let out = m.handle_timeout(clock);
    let left = out.iter().filter(|o| matches!(o, Output::Left(_))).count();
    assert_eq!(left, 49, "{out:?}");
    assert_eq!(m.peers().count(), 0);
    for junk in m.members().filter(|x| x.node_id() != node(1)) {
        assert_eq!(junk.state(), MemberState::Dead);
        assert_eq!(junk.incarnation(), 1);
        assert_eq!(junk.expires_at(), Some(clock + m.config().tombstone_ttl));
    }
    let out = m.gossip(node(9), delta(vec![entry(2, 1, MemberState::Alive)]), clock);
    assert_eq!(out, vec![Output::Joined(node(2))]);
    assert_eq!(m.members().count(), 50);
    assert_eq!(m.route(node(2)), Route::Pending);
    // Once the tombstones expire the table is nearly empty again.
    m.handle_timeout(clock + m.config().tombstone_ttl);
    assert_eq!(m.members().count(), 2);
}

/// A member whose seed address is never forgotten is still buried once it has failed every
/// dial for `unreachable_timeout`; a connection in between starts the count again.
#[test]
fn a_member_failing_every_dial_is_buried_after_the_unreachable_timeout() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 1_000,
        unreachable_timeout: Duration::from_secs(60),
        ..config()
    };
    let timeout = config.unreachable_timeout;
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let dials = m.next_dials(now);
    m.on_dial_failed(&dials[0], now);
    assert_eq!(m.member(node(2)).unwrap().unreachable_since(), Some(now));
    // Reached in between: the count starts again at the next failure.
    m.on_connected(&identity(2, 5), now + ms(10));
    assert_eq!(m.member(node(2)).unwrap().unreachable_since(), None);
    m.on_disconnected(node(2), 5, now + ms(20));
    let first_failure = now + ms(30);
    let mut clock = first_failure;
    loop {
        let out = m.handle_timeout(clock);
        if out.contains(&Output::Left(node(2))) {
            break;
        }
        for o in out {
            if let Output::Dial(d) = o {
                m.on_dial_failed(&d, clock);
            }
        }
        assert!(
            clock < first_failure + timeout + PAST_ANY_BACKOFF,
            "never buried"
        );
        let next = m.poll_timeout().unwrap();
        assert!(next > clock, "busy loop at {clock:?}");
        clock = next;
    }
    assert!(clock >= first_failure + timeout, "buried early");
    let member = m.member(node(2)).unwrap();
    assert_eq!(member.state(), MemberState::Dead);
    assert_eq!(member.incarnation(), 5);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    // The tombstone is gossiped like any other.
    let out = m.gossip(
        node(9),
        GossipMessage::Digest(GossipDigest { hash: 0, count: 0 }),
        clock,
    );
    let [Output::SendTo(_, GossipMessage::Delta(d))] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(d
        .entries
        .iter()
        .any(|e| e.node_id == 2 && e.state == MemberState::Dead && e.incarnation == 5));
}

/// A full table makes room for news by evicting the tombstone that expires first, then a
/// member we fail to reach; with only live linked members it refuses the news.
#[test]
fn a_full_table_evicts_tombstones_then_unreachable_members_before_refusing_news() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 4,
        forget_after_failures: 100,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let mut soon = entry(2, 1, MemberState::Dead);
    soon.ttl_ms = 1_000;
    let mut later = entry(3, 1, MemberState::Left);
    later.ttl_ms = 2_000;
    m.gossip(node(9), delta(vec![later, soon]), now);
    m.on_connected(&identity(4, 1), now);
    assert_eq!(m.members().count(), 4);
    m.gossip(node(4), delta(vec![entry(5, 1, MemberState::Alive)]), now);
    assert!(
        m.member(node(2)).is_none(),
        "the tombstone expiring first goes"
    );
    m.gossip(node(4), delta(vec![entry(6, 1, MemberState::Alive)]), now);
    assert!(m.member(node(3)).is_none());
    // Node 5 fails a dial: unreachable, so it goes before news is refused.
    let dials = m.next_dials(now);
    let to_5 = dials.iter().find(|d| d.node == Some(node(5))).unwrap();
    m.on_dial_failed(to_5, now);
    let out = m.gossip(node(4), delta(vec![entry(7, 1, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Left(node(5)), Output::Joined(node(7))]);
    // Left: ourselves, 4 (connected), 6 and 7 (being dialled): nothing can go.
    let out = m.gossip(node(4), delta(vec![entry(8, 1, MemberState::Alive)]), now);
    assert!(out.is_empty(), "{out:?}");
    assert!(m.member(node(8)).is_none());
    assert_eq!(m.members().count(), 4);
}

/// A seed bound to a member that is evicted is dialled as a seed again: the seed is never
/// left bound to a node the table no longer holds.
#[test]
fn a_seed_bound_to_an_evicted_member_is_dialled_again() {
    let now = t0();
    let seed = "tcp://seed:1".to_string();
    let config = MembershipConfig {
        max_members: 3,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), vec![seed.clone()], config, now).unwrap();
    let dials = m.next_dials(now);
    m.on_connected(&identity(7, 1), now);
    m.on_dial_succeeded(&dials[0], node(7), now);
    m.on_disconnected(node(7), 1, now);
    let clock = now + PAST_ANY_BACKOFF;
    let dials = m.next_dials(clock);
    assert_eq!(dials.len(), 1);
    assert_eq!(
        dials[0].node,
        Some(node(7)),
        "the seed is dialled as its node"
    );
    for d in &dials {
        m.on_dial_failed(d, clock);
    }
    m.gossip(node(9), delta(vec![entry(2, 1, MemberState::Alive)]), clock);
    let out = m.gossip(node(9), delta(vec![entry(3, 1, MemberState::Alive)]), clock);
    assert_eq!(out, vec![Output::Left(node(7)), Output::Joined(node(3))]);
    let dials = m.next_dials(clock);
    assert!(
        dials.contains(&DialRequest {
            node: None,
            addr: seed
        }),
        "{dials:?}"
    );
}

/// Stale gossip after the tombstone expired brings a node that left back as alive; being
/// unreachable, it is buried again instead of staying alive for ever (found by review).
#[test]
fn a_node_resurrected_after_its_tombstone_expired_is_buried_again() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 2,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    m.on_goodbye(node(2), 5, now);
    let mut clock = now + Duration::from_secs(301);
    m.handle_timeout(clock);
    assert!(m.member(node(2)).is_none());
    // A peer partitioned for longer than the tombstone lifetime gossips what it holds.
    let out = m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), clock);
    assert_eq!(out, vec![Output::Joined(node(2))]);
    let mut buried = false;
    for _ in 0..20 {
        clock += PAST_ANY_BACKOFF;
        for o in m.handle_timeout(clock) {
            match o {
                Output::Dial(d) => m.on_dial_failed(&d, clock),
                Output::Left(n) if n == node(2) => buried = true,
                _ => {}
            }
        }
    }
    assert!(buried);
    clock += Duration::from_secs(24 * 3600);
    m.handle_timeout(clock);
    let state = m.member(node(2)).map(|x| x.state());
    assert_ne!(
        state,
        Some(MemberState::Alive),
        "the left node is alive for ever"
    );
    assert_eq!(m.route(node(2)), Route::Unreachable);
}

/// Addresses forgotten during a partition come back when the node connects to us itself:
/// after that connection drops it is redialled (found by review).
#[test]
fn a_direct_connection_unforgets_the_addresses_the_node_advertises() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 3,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let mut clock = now;
    for _ in 0..3 {
        for d in m.next_dials(clock) {
            m.on_dial_failed(&d, clock);
        }
        clock += PAST_ANY_BACKOFF;
    }
    assert_eq!(m.route(node(2)), Route::Unreachable);
    // The partition heals: node 2 dials us, advertising the same address.
    m.on_connected(&identity(2, 5), clock);
    assert_eq!(m.route(node(2)), Route::Direct);
    let addr = &m.member(node(2)).unwrap().addresses()[0];
    assert!(!addr.is_forgotten());
    assert_eq!(addr.failures(), 0);
    m.on_disconnected(node(2), 5, clock);
    clock += PAST_ANY_BACKOFF;
    assert_eq!(
        m.route(node(2)),
        Route::Pending,
        "node 2 is never redialled"
    );
    assert_eq!(m.next_dials(clock).len(), 1);
}

/// A discovery answer from the node vouches for its addresses the same way.
#[test]
fn discovery_unforgets_the_addresses_the_node_advertises() {
    let now = t0();
    let config = MembershipConfig {
        forget_after_failures: 1,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    let dials = m.next_dials(now);
    m.on_dial_failed(&dials[0], now);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    // Gossip of the same run does not vouch for anything.
    m.gossip(node(9), delta(vec![entry(2, 5, MemberState::Alive)]), now);
    assert_eq!(m.route(node(2)), Route::Unreachable);
    assert!(m.on_discovered(&identity(2, 5), now).is_empty());
    assert_eq!(m.route(node(2)), Route::Pending);
    assert_eq!(m.member(node(2)).unwrap().addresses()[0].failures(), 0);
}

/// Inputs about a connection carry the incarnation it reached: when gossip brings a
/// restarted node's new run, the old run's link no longer counts, and its death, drop or
/// goodbye leaves the new run alone (found by review: the new run was buried).
#[test]
fn the_end_of_an_old_runs_link_leaves_the_new_run_alone() {
    let now = t0();
    let mut m = table(now);
    m.on_connected(&identity(2, 5), now);
    assert_eq!(m.route(node(2)), Route::Direct);
    // Node 2 restarted; gossip brings incarnation 6 while we still hold the old link.
    let out = m.gossip(node(9), delta(vec![entry(2, 6, MemberState::Alive)]), now);
    assert_eq!(out, vec![Output::Left(node(2)), Output::Joined(node(2))]);
    assert!(!m.member(node(2)).unwrap().is_connected());
    assert_eq!(m.route(node(2)), Route::Pending, "we must dial the new run");
    let next_dial = m.member(node(2)).unwrap().next_dial();
    // The old connection's liveness fires, it drops, it said goodbye: none is about run 6.
    assert!(m.on_peer_dead(node(2), 5, now + ms(5_000)).is_empty());
    m.on_disconnected(node(2), 5, now + ms(5_000));
    assert!(m.on_goodbye(node(2), 5, now + ms(5_000)).is_empty());
    let member = m.member(node(2)).unwrap();
    assert_eq!(
        member.state(),
        MemberState::Alive,
        "run 6 buried by run 5's death"
    );
    assert_eq!(member.incarnation(), 6);
    assert_eq!(member.next_dial(), next_dial);
    // A link to the old run coming up late is not a link to the node either.
    m.on_connected(&identity(2, 5), now + ms(6_000));
    assert_eq!(m.route(node(2)), Route::Pending);
    // The new run's own death does count.
    let out = m.on_peer_dead(node(2), 6, now + ms(7_000));
    assert_eq!(out, vec![Output::Left(node(2))]);
}

/// A seed behind a node we hold a tombstone of is redialled with backoff, not at once
/// (found by review: a hot dial loop).
#[test]
fn a_seed_behind_a_tombstoned_node_is_redialled_with_backoff() {
    let now = t0();
    let seed = "tcp://seed:1".to_string();
    let mut m = Membership::new(
        identity(1, 1),
        vec![seed.clone()],
        MembershipConfig::default(),
        now,
    )
    .unwrap();
    m.gossip(node(9), delta(vec![entry(7, 1, MemberState::Dead)]), now);
    let mut n = 0;
    for i in 0..5 {
        let t = now + ms(i);
        for d in m.next_dials(t) {
            assert_eq!(d.node, None);
            n += 1;
            m.on_connected(&identity(7, 1), t);
            m.on_dial_succeeded(&d, node(7), t);
            m.on_disconnected(node(7), 1, t);
        }
    }
    assert_eq!(n, 1, "hot redial loop");
    // Redialled, later, with a growing delay.
    let mut clock = now;
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let mut next = clock;
        let dials = loop {
            next += ms(10);
            assert!(next < clock + PAST_ANY_BACKOFF, "never redialled");
            let dials = m.next_dials(next);
            if !dials.is_empty() {
                break dials;
            }
        };
        assert_eq!(dials.len(), 1, "{dials:?}");
        m.on_dial_succeeded(&dials[0], node(7), next);
        gaps.push(next - clock);
        clock = next;
    }
    assert!(
        gaps[0] >= ms(200) && gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "{gaps:?}"
    );
}

/// A table too big for one message goes out in several, each within the budget, together
/// holding every entry (found by review: one 20 MB delta that no frame could carry).
#[test]
fn a_table_too_big_for_one_message_is_split_under_the_budget() {
    let mut now = t0();
    let mut m = table(now);
    let big = |n: u128| {
        let mut e = entry(n, 1, MemberState::Alive);
        e.name = "n".repeat(MAX_FIELD_LEN);
        e.cluster = "c".repeat(MAX_FIELD_LEN);
        e.host_id = "h".repeat(MAX_FIELD_LEN);
        e.addresses = (0..MAX_ADDRESSES).map(|i| format!("{i:0>256}")).collect();
        e
    };
    for chunk in (2..4097u128).collect::<Vec<_>>().chunks(64) {
        m.gossip(node(9), delta(chunk.iter().map(|&n| big(n)).collect()), now);
    }
    assert_eq!(m.members().count(), 4096);
    let joiner = GossipMessage::Digest(GossipDigest { hash: 0, count: 1 });
    for (send_limit, budget) in [
        (
            crate::wire::DEFAULT_MAX_FRAME_SIZE,
            m.config().max_message_size,
        ),
        (64 * 1024, 64 * 1024),
    ] {
        // A digest is answered at most once per half interval.
        now += m.config().gossip_interval;
        let out = m.handle_gossip(node(3000), joiner.clone(), send_limit, now);
        assert!(out.len() > 1);
        let mut sent = BTreeSet::new();
        for o in &out {
            let Output::SendTo(to, msg @ GossipMessage::Delta(d)) = o else {
                panic!("{o:?}")
            };
            assert_eq!(*to, node(3000));
            let size = wire_size(msg);
            assert!(size <= budget, "{size} > {budget}");
            for e in &d.entries {
                assert!(sent.insert(e.node_id), "sent twice");
            }
        }
        assert_eq!(sent.len(), 4096, "every entry once");
    }
}

/// The same holds for a difference with a `want`, and a summary that would not fit is
/// replaced by the table in deltas.
#[test]
fn differences_and_summaries_stay_within_a_small_budget() {
    let now = t0();
    let mut a = table(now);
    let entries: Vec<_> = (10..2_010)
        .map(|i| entry(i, 1, MemberState::Alive))
        .collect();
    a.gossip(node(9), delta(entries), now);
    let budget = MIN_MESSAGE_SIZE;
    // 2001 hashes are over 16 KiB: no summary, but the table in deltas.
    let digest = GossipMessage::Digest(GossipDigest {
        hash: 0,
        count: 2_000,
    });
    let out = a.handle_gossip(node(2), digest, budget, now);
    assert!(out.len() > 1);
    let mut sent = 0;
    for o in &out {
        let Output::SendTo(_, msg @ GossipMessage::Delta(d)) = o else {
            panic!("{o:?}")
        };
        assert!(wire_size(msg) <= budget);
        sent += d.entries.len();
    }
    assert_eq!(sent, 2_001);
    // An answer to a summary: the want in the first message, cut to what fits.
    let summary = GossipMessage::Summary(GossipSummary {
        hash: 0,
        entries: (0..3_000u64).collect(),
    });
    solicit(&mut a, node(2));
    let out = a.handle_gossip(node(2), summary, budget, now);
    let mut wanted = 0;
    for o in &out {
        let Output::SendTo(_, msg @ GossipMessage::Delta(d)) = o else {
            panic!("{o:?}")
        };
        assert!(wire_size(msg) <= budget, "{}", wire_size(msg));
        wanted += d.want.len();
    }
    assert!(wanted > 1_000 && wanted < 3_000, "{wanted}");
}

/// Whatever a message holds, only `max_members` of its `entries` and `want` are read.
#[test]
fn a_message_is_read_up_to_max_members_hashes() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 10,
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let summary = GossipMessage::Summary(GossipSummary {
        hash: 0,
        entries: (0..10_000u64).collect(),
    });
    solicit(&mut m, node(2));
    let out = m.gossip(node(2), summary, now);
    let [Output::SendTo(_, GossipMessage::Delta(d))] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(d.want.len(), 10);
}

/// The bound used to split messages is never under the real encoding, for the smallest and
/// largest entries we keep, and a whole message stays within its parts plus the overhead.
#[test]
fn the_entry_size_bound_covers_the_encoding() {
    let mut small = entry(0, 0, MemberState::Alive);
    small.name = String::new();
    small.addresses.clear();
    let mut large = entry(u128::MAX, u64::MAX, MemberState::Left);
    large.ttl_ms = u64::MAX;
    large.name = "n".repeat(MAX_FIELD_LEN);
    large.network = "w".repeat(MAX_FIELD_LEN);
    large.cluster = "c".repeat(MAX_FIELD_LEN);
    large.host_id = "h".repeat(MAX_FIELD_LEN);
    large.addresses = (0..MAX_ADDRESSES).map(|i| format!("{i:0>256}")).collect();
    for e in [small, entry(7, 9, MemberState::Dead), large] {
        let encoded = crate::wire::body::encode_body(&e).unwrap().len();
        let bound = entry_size_bound(&e);
        assert!(encoded <= bound, "{encoded} > {bound}");
        assert!(
            bound <= encoded + 160,
            "a loose bound: {encoded} vs {bound}"
        );
        let want: Vec<u64> = (0..50).map(|i| u64::MAX - i).collect();
        let msg = GossipMessage::Delta(GossipDelta {
            entries: vec![e.clone(), e.clone()],
            want,
        });
        assert!(wire_size(&msg) <= MESSAGE_OVERHEAD + 2 * bound + 50 * HASH_SIZE);
    }
}

/// News of our death at a later incarnation than ours is not about us: it neither moves our
/// incarnation nor beats us for ever. Where a peer holds it, our entry wins once it expires
/// (found by review: a tombstone at `u64::MAX` could never be refuted).
#[test]
fn a_tombstone_of_ourselves_above_our_incarnation_is_ignored() {
    let now = t0();
    let mut m = table(now);
    for incarnation in [u64::MAX, 2, 500] {
        let out = m.gossip(
            node(9),
            delta(vec![entry(1, incarnation, MemberState::Dead)]),
            now,
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(m.local_incarnation(), 1, "a peer pushed our incarnation");
    }
    // Our own incarnation is refuted by exactly the next one.
    let out = m.gossip(node(9), delta(vec![entry(1, 1, MemberState::Dead)]), now);
    assert_eq!(out, vec![Output::Refuted { incarnation: 2 }]);
    let mine = m.member(node(1)).unwrap();
    assert!(mine.version() > entry(1, 1, MemberState::Dead).version());
    // A peer holding the forged tombstone takes our entry back once it expires.
    let mut b = Membership::new(identity(2, 1), Vec::new(), config(), now).unwrap();
    let mut forged = entry(1, u64::MAX, MemberState::Dead);
    forged.ttl_ms = 1_000;
    b.gossip(node(9), delta(vec![forged]), now);
    let ours = m.member(node(1)).unwrap().entry(now);
    assert!(b.gossip(node(1), delta(vec![ours.clone()]), now).is_empty());
    let out = b.gossip(node(1), delta(vec![ours]), now + ms(1_000));
    assert_eq!(out, vec![Output::Joined(node(1))]);
    // At the last incarnation there is nothing to refute with, and nothing breaks.
    let mut last = Membership::new(
        identity(3, u64::MAX),
        Vec::new(),
        MembershipConfig::default(),
        now,
    )
    .unwrap();
    let out = last.gossip(
        node(9),
        delta(vec![entry(3, u64::MAX, MemberState::Dead)]),
        now,
    );
    assert!(out.is_empty());
    assert_eq!(last.local_incarnation(), u64::MAX);
}

/// A configuration that would make the table spin or hold nothing is refused.
#[test]
fn an_invalid_config_is_refused() {
    let now = t0();
    MembershipConfig::default().validate().unwrap();
    let bad: Vec<(&str, MembershipConfig)> = vec![
        (
            "gossip_interval 0",
            MembershipConfig {
                gossip_interval: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "backoff base 0",
            MembershipConfig {
                backoff: Backoff {
                    base: Duration::ZERO,
                    ..Backoff::default()
                },
                ..Default::default()
            },
        ),
        (
            "cap under base",
            MembershipConfig {
                backoff: Backoff {
                    base: ms(500),
                    cap: ms(100),
                    jitter: 0.0,
                },
                ..Default::default()
            },
        ),
        (
            "jitter NaN",
            MembershipConfig {
                backoff: Backoff {
                    jitter: f64::NAN,
                    ..Backoff::default()
                },
                ..Default::default()
            },
        ),
        (
            "ttl 0",
            MembershipConfig {
                tombstone_ttl: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "unreachable over a day",
            MembershipConfig {
                unreachable_timeout: Duration::from_secs(90_000),
                ..Default::default()
            },
        ),
        (
            "max_members 1",
            MembershipConfig {
                max_members: 1,
                ..Default::default()
            },
        ),
        (
            "max_peers 0",
            MembershipConfig {
                max_peers: 0,
                ..Default::default()
            },
        ),
        (
            "fanout 0",
            MembershipConfig {
                gossip_fanout: 0,
                ..Default::default()
            },
        ),
        (
            "forget 0",
            MembershipConfig {
                forget_after_failures: 0,
                ..Default::default()
            },
        ),
        (
            "small messages",
            MembershipConfig {
                max_message_size: MIN_MESSAGE_SIZE - 1,
                ..Default::default()
            },
        ),
    ];
    for (what, config) in bad {
        let err = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{what}");
    }
}

/// With a valid configuration, handling what is due never leaves it due: no busy loop. (A
/// failed dial that forgets the last address makes a burial due at once; the next call does
/// it.)
#[test]
fn after_handle_timeout_nothing_is_due_at_once() {
    let now = t0();
    let mut m = Membership::new(
        identity(1, 1),
        vec!["tcp://seed:1".into()],
        MembershipConfig::default(),
        now,
    )
    .unwrap();
    m.gossip(node(9), delta(vec![entry(2, 1, MemberState::Alive)]), now);
    m.on_connected(&identity(3, 1), now);
    let mut clock = now;
    let mut buried = false;
    for _ in 0..50 {
        let mut calls = 0;
        while m.poll_timeout().unwrap() <= clock {
            calls += 1;
            assert!(calls <= 2, "due again at once");
            for o in m.handle_timeout(clock) {
                match o {
                    Output::Dial(d) => m.on_dial_failed(&d, clock),
                    Output::Left(n) => buried |= n == node(2),
                    _ => {}
                }
            }
        }
        clock = m.poll_timeout().unwrap();
    }
    assert!(buried);
}

/// A link that keeps dropping soon after coming up is redialled with a growing delay; once
/// one stays up for a backoff cap, the next drop is redialled quickly again (found by review:
/// every 250 ms for ever).
#[test]
fn a_flapping_link_is_redialled_less_and_less_often() {
    let now = t0();
    let config = MembershipConfig {
        backoff: Backoff {
            base: ms(100),
            cap: ms(1_000),
            jitter: 0.0,
        },
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let mut clock = now;
    let mut gaps = Vec::new();
    for _ in 0..6 {
        m.on_connected(&identity(2, 5), clock);
        m.on_disconnected(node(2), 5, clock + ms(10));
        let next = m.member(node(2)).unwrap().next_dial();
        gaps.push(next - (clock + ms(10)));
        clock = next;
    }
    assert_eq!(gaps, [100, 200, 400, 800, 1_000, 1_000].map(ms));
    assert_eq!(m.member(node(2)).unwrap().flaps(), 6);
    // Up for a whole cap: a stable link, whose drop is redialled at the base delay.
    m.on_connected(&identity(2, 5), clock);
    m.on_disconnected(node(2), 5, clock + ms(1_000));
    assert_eq!(m.member(node(2)).unwrap().next_dial(), clock + ms(1_100));
    assert_eq!(m.member(node(2)).unwrap().flaps(), 1);
    // A drop we are not connected for changes nothing.
    m.on_disconnected(node(2), 5, clock + ms(1_050));
    assert_eq!(m.member(node(2)).unwrap().flaps(), 1);
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
        Goodbye(u128, u64),
        Dead(u128, u64),
        Connected(u128, u64),
        Disconnected(u128, u64),
        /// The clock moves on: by a few milliseconds (gossiped `ttl_ms` of 1–2 ms expire) or
        /// past the tombstone lifetime and the unreachable timeout.
        Advance(u64),
        /// `handle_timeout` at the current time: expiry, burials, a gossip round, dials.
        Timeout,
        /// Every dial handed out so far fails.
        DialsFail,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => arb_message().prop_map(Step::Gossip),
            1 => (1u128..6, 0u64..4).prop_map(|(n, i)| Step::Goodbye(n, i)),
            1 => (1u128..6, 0u64..4).prop_map(|(n, i)| Step::Dead(n, i)),
            1 => (1u128..6, 0u64..4).prop_map(|(n, i)| Step::Connected(n, i)),
            1 => (1u128..6, 0u64..4).prop_map(|(n, i)| Step::Disconnected(n, i)),
            2 => prop_oneof![3 => 0u64..4, 1 => 250_000u64..400_000].prop_map(Step::Advance),
            1 => Just(Step::Timeout),
            1 => Just(Step::DialsFail),
        ]
    }

    proptest! {
        /// Whatever arrives, while time passes: no entry's version ever goes down and no entry
        /// disappears unless it was a tombstone past its expiry, our own entry stays alive and
        /// moves only by refutation, answers go to the sender (a round's digest to a connected
        /// peer), and `Joined`/`Left` report exactly the changes of who is alive.
        #[test]
        fn versions_never_go_back(steps in prop::collection::vec(arb_step(), 1..60)) {
            let start = t0();
            let mut clock = start;
            let mut m = table(start);
            let mut dials: Vec<DialRequest> = Vec::new();
            type Snapshot = BTreeMap<NodeId, ((u64, u8), Option<Instant>)>;
            let snapshot = |m: &Membership| -> Snapshot {
                m.members().map(|x| (x.node_id(), (x.version(), x.expires_at()))).collect()
            };
            for step in steps {
                let before = snapshot(&m);
                let my_incarnation = m.local_incarnation();
                let from_timer = matches!(step, Step::Timeout);
                let out = match step {
                    Step::Gossip(msg) => m.gossip(node(9), msg, clock),
                    Step::Goodbye(n, i) => m.on_goodbye(node(n), i, clock),
                    Step::Dead(n, i) => m.on_peer_dead(node(n), i, clock),
                    Step::Connected(n, i) => m.on_connected(&identity(n, i), clock),
                    Step::Disconnected(n, i) => {
                        m.on_disconnected(node(n), i, clock);
                        Vec::new()
                    }
                    Step::Advance(ms) => {
                        clock += Duration::from_millis(ms);
                        Vec::new()
                    }
                    Step::Timeout => m.handle_timeout(clock),
                    Step::DialsFail => {
                        for d in dials.drain(..) {
                            m.on_dial_failed(&d, clock);
                        }
                        Vec::new()
                    }
                };
                m.assert_indexes();
                prop_assert!(m.dials_in_flight() <= m.config().max_dials_in_flight);
                let after = snapshot(&m);
                for (id, (v, expires)) in &before {
                    if expires.is_some_and(|at| at <= clock) {
                        continue;
                    }
                    let now_v = after.get(id).map(|a| a.0);
                    prop_assert!(now_v.is_some_and(|a| a >= *v), "{id:?}: {v:?} -> {now_v:?}");
                }
                let me = m.member(node(1)).unwrap();
                prop_assert_eq!(me.state(), MemberState::Alive);
                // Replaying `Joined`/`Left` in order over the states before gives the states
                // after: they alternate and end where the table is.
                let mut alive: BTreeMap<NodeId, bool> = before
                    .iter()
                    .map(|(id, (v, expires))| {
                        (*id, v.1 == 0 && !expires.is_some_and(|at| at <= clock))
                    })
                    .collect();
                // Each refutation takes the next incarnation, nothing else moves ours.
                let mut incarnation_now = my_incarnation;
                for o in &out {
                    match o {
                        Output::SendTo(to, msg) => {
                            if from_timer {
                                prop_assert!(matches!(msg, GossipMessage::Digest(_)));
                                prop_assert!(m.member(*to).is_some_and(Member::is_connected));
                            } else {
                                prop_assert_eq!(*to, node(9));
                            }
                        }
                        Output::Joined(n) => {
                            prop_assert!(!alive.get(n).copied().unwrap_or(false), "{n:?}");
                            alive.insert(*n, true);
                        }
                        Output::Left(n) => {
                            prop_assert!(alive.get(n).copied().unwrap_or(false), "{n:?}");
                            alive.insert(*n, false);
                        }
                        Output::Refuted { incarnation } => {
                            prop_assert_eq!(*incarnation, incarnation_now + 1);
                            incarnation_now = *incarnation;
                        }
                        Output::Dial(d) => {
                            prop_assert!(from_timer, "inputs never dial");
                            dials.push(d.clone());
                        }
                    }
                }
                prop_assert_eq!(me.incarnation(), incarnation_now);
                for (id, (v, _)) in &after {
                    prop_assert_eq!(alive.get(id).copied().unwrap_or(false), v.1 == 0, "{:?}", id);
                }
                prop_assert!(m.members().all(|x| x.identity().network == "default"));
            }
        }
    }
}

fn with_addresses(node: u128, host: &str, addresses: &[&str]) -> GossipEntry {
    let mut id = identity(node, 1);
    id.host_id = host.into();
    id.addresses = addresses.iter().map(|a| (*a).to_owned()).collect();
    GossipEntry::from_identity(&id, MemberState::Alive)
}

#[test]
fn a_member_is_dialled_on_its_first_address_we_have_a_transport_for() {
    let now = t0();
    let config = MembershipConfig {
        schemes: vec!["tcp".into(), "ws".into()],
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let addrs = ["quic://10.0.0.2:1", "ws://10.0.0.2:2/m", "tcp://10.0.0.2:3"];
    m.gossip(node(9), delta(vec![with_addresses(2, "h2", &addrs)]), now);
    let dials = m.next_dials(now);
    assert_eq!(dials.len(), 1);
    assert_eq!(dials[0].addr, "ws://10.0.0.2:2/m");
    // A failure moves on to the next usable address, never to the unusable one.
    m.on_dial_failed(&dials[0], now);
    let dials = m.next_dials(now + PAST_ANY_BACKOFF);
    assert_eq!(dials[0].addr, "tcp://10.0.0.2:3");
}

#[test]
fn unix_sockets_are_dialled_only_on_our_own_host() {
    let now = t0();
    let mut local = identity(1, 1);
    local.host_id = "here".into();
    let mut m = Membership::new(local, Vec::new(), MembershipConfig::default(), now).unwrap();
    let addrs = ["unix:///run/a.sock", "tcp://10.0.0.9:1"];
    m.gossip(
        node(9),
        delta(vec![
            with_addresses(2, "here", &addrs),
            with_addresses(3, "elsewhere", &addrs),
        ]),
        now,
    );
    let mut dials = m.next_dials(now);
    dials.sort_by_key(|d| d.node);
    assert_eq!(dials[0].addr, "unix:///run/a.sock", "same host: the socket");
    assert_eq!(
        dials[1].addr, "tcp://10.0.0.9:1",
        "another host: never the socket"
    );
}

#[test]
fn a_member_sharing_no_transport_is_neither_dialled_nor_buried() {
    let now = t0();
    let config = MembershipConfig {
        schemes: vec!["tcp".into()],
        unreachable_timeout: ms(1_000),
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let remote = with_addresses(2, "h2", &["ws://10.0.0.2:2/m", "unix:///x.sock"]);
    m.gossip(node(9), delta(vec![remote]), now);
    assert!(m.is_foreign(node(2)));
    assert_eq!(m.route(node(2)), Route::Unreachable);
    // Long after any burial would be due: no dial asked for, and still a live member, so we
    // never gossip a death that the nodes that can reach it would have to refute.
    let mut clock = now;
    for _ in 0..20 {
        clock += PAST_ANY_BACKOFF;
        assert!(m.next_dials(clock).is_empty());
        m.handle_timeout(clock);
    }
    let member = m.member(node(2)).unwrap();
    assert_eq!(member.state(), MemberState::Alive);
    // A member with no address at all is still buried at once, as before.
    m.gossip(node(9), delta(vec![with_addresses(3, "h3", &[])]), clock);
    m.handle_timeout(clock);
    assert_ne!(m.member(node(3)).unwrap().state(), MemberState::Alive);
    assert!(!m.is_foreign(node(3)));
}

#[test]
fn an_unspecified_host_is_never_dialled() {
    let now = t0();
    let mut m = table(now);
    let addrs = [
        "tcp://0.0.0.0:7000",
        "ws://[::]:80/m",
        "tcp://10.0.0.2:7000",
    ];
    m.gossip(node(9), delta(vec![with_addresses(2, "h2", &addrs)]), now);
    let dials = m.next_dials(now);
    assert_eq!(dials.len(), 1);
    assert_eq!(dials[0].addr, "tcp://10.0.0.2:7000");
}

/// Junk a peer gossips whose addresses nobody can dial (an unspecified host, text that is no
/// address, a scheme we have no transport for) is "foreign", so it is never buried and never
/// evicted: it holds the table for ever and a real node is refused. The same property as
/// `unreachable_junk_is_buried_and_makes_room_for_real_nodes`, lost for such addresses.
#[test]
fn foreign_junk_does_not_hold_a_full_table_for_ever() {
    let now = t0();
    let config = MembershipConfig {
        max_members: 50,
        forget_after_failures: 2,
        schemes: vec!["tcp".into()],
        ..config()
    };
    let mut m = Membership::new(identity(1, 1), Vec::new(), config, now).unwrap();
    let kinds = ["tcp://0.0.0.0:7000", "not an address", "quic://10.9.9.9:1"];
    let junk = (1000..1100u128)
        .map(|n| with_addresses(n, "h", &[kinds[(n % 3) as usize]]))
        .collect();
    m.gossip(node(9), delta(junk), now);
    assert_eq!(m.members().count(), 50);
    let mut clock = now;
    for _ in 0..20 {
        clock += PAST_ANY_BACKOFF;
        for d in m.next_dials(clock) {
            m.on_dial_failed(&d, clock);
        }
        m.handle_timeout(clock);
    }
    clock += Duration::from_secs(24 * 3600);
    m.handle_timeout(clock);
    let out = m.gossip(node(9), delta(vec![entry(2, 1, MemberState::Alive)]), clock);
    assert_eq!(
        m.route(node(2)),
        Route::Pending,
        "a real node was refused by a table full of undialable junk: {out:?}"
    );
}

#[test]
fn a_linked_node_that_refutes_is_gossiped_at_the_addresses_its_link_resolved() {
    let now = t0();
    let mut m = table(now);
    let mut linked = identity(2, 1);
    linked.addresses = vec!["tcp://10.0.0.2:7000".into()];
    m.on_connected(&linked, now);
    // Its own refutation, gossiped by itself, still says where it listens: on every interface.
    let mut refuted = identity(2, 2);
    refuted.addresses = vec!["tcp://0.0.0.0:7000".into()];
    m.gossip(
        node(2),
        delta(vec![GossipEntry::from_identity(
            &refuted,
            MemberState::Alive,
        )]),
        now,
    );
    assert_eq!(
        m.member(node(2)).unwrap().identity().addresses,
        refuted.addresses
    );
    // The runtime counts the link again at the new incarnation, with the resolved address.
    let mut relinked = refuted.clone();
    relinked.addresses = linked.addresses.clone();
    m.on_connected(&relinked, now);
    let member = m.member(node(2)).unwrap();
    assert!(member.is_connected());
    assert_eq!(member.identity().addresses, linked.addresses);
}

/// Issue 12: a digest claiming no members bought our whole table (22 bytes in, the table
/// out), again and again. A peer's digests get an answer at most once per half interval.
#[test]
fn a_digest_claiming_no_members_buys_the_table_at_most_once_per_half_interval() {
    let now = t0();
    let mut m = table(now);
    let entries = (10..210).map(|i| entry(i, 1, MemberState::Alive)).collect();
    m.gossip(node(9), delta(entries), now);
    m.on_connected(&identity(2, 1), now);
    let liar = GossipMessage::Digest(GossipDigest { hash: 0, count: 0 });
    let answered = |out: &[Output]| -> usize {
        out.iter()
            .map(|o| match o {
                Output::SendTo(_, msg) => wire_size(msg),
                _ => 0,
            })
            .sum()
    };
    let first = answered(&m.gossip(node(2), liar.clone(), now));
    assert!(
        first > 2_000,
        "the joiner's answer is the table: {first} bytes"
    );
    let mut again = 0;
    for i in 1..100 {
        again += answered(&m.gossip(node(2), liar.clone(), now + ms(i)));
    }
    assert_eq!(
        again, 0,
        "99 more digests within half an interval bought {again} bytes"
    );
    // A peer not in the table shares one allowance with every other such peer.
    let strangers: usize = (0..100u128)
        .map(|i| answered(&m.gossip(node(5000 + i), liar.clone(), now + ms(1))))
        .sum();
    assert!(strangers <= first, "{strangers} bytes to 100 strangers");
    // Gossip goes on: half an interval later the peer is answered again.
    let later = now + m.config().gossip_interval / 2;
    assert_eq!(answered(&m.gossip(node(2), liar, later)), first);
}

/// A summary is read only in answer to our digest, a `want` served only in answer to our
/// summary: neither can be sent to make us send the table.
#[test]
fn unsolicited_summaries_and_wants_are_not_answered() {
    let now = t0();
    let mut m = table(now);
    let entries = (10..60).map(|i| entry(i, 1, MemberState::Alive)).collect();
    m.gossip(node(9), delta(entries), now);
    m.on_connected(&identity(2, 1), now);
    let empty_summary = GossipMessage::Summary(GossipSummary {
        hash: 0,
        entries: Vec::new(),
    });
    assert!(m.gossip(node(2), empty_summary.clone(), now).is_empty());
    let hashes: Vec<u64> = m.members().map(Member::hash).collect();
    let want = GossipMessage::Delta(GossipDelta {
        entries: Vec::new(),
        want: hashes,
    });
    assert!(m.gossip(node(2), want.clone(), now).is_empty());
    // Our round opens the exchange: its summary is read once.
    let out = m.gossip_round(now);
    assert!(matches!(&out[..], [Output::SendTo(to, GossipMessage::Digest(_))] if *to == node(2)));
    assert!(!m.gossip(node(2), empty_summary.clone(), now).is_empty());
    assert!(m.gossip(node(2), empty_summary, now).is_empty());
}

/// A delta naming 10,000 nodes new to us brings in `max_introductions` of them per interval;
/// news of nodes we hold is not counted, and the link is not at stake.
#[test]
fn one_peer_introduces_at_most_max_introductions_per_interval() {
    let now = t0();
    let mut m =
        Membership::new(identity(1, 1), Vec::new(), MembershipConfig::default(), now).unwrap();
    m.on_connected(&identity(2, 1), now);
    let k = m.config().max_introductions;
    let flood: Vec<_> = (10..10_010)
        .map(|i| entry(i, 1, MemberState::Alive))
        .collect();
    m.gossip(node(2), delta(flood.clone()), now);
    assert_eq!(m.live_members(), 1 + k);
    // The same interval: nothing new, but news of a node we hold (a goodbye) is taken.
    let mut news = flood.clone();
    news.insert(0, entry(10, 1, MemberState::Left));
    m.gossip(node(2), delta(news), now + ms(500));
    assert_eq!(m.live_members(), k);
    assert_eq!(m.member(node(10)).unwrap().state(), MemberState::Left);
    // Another peer has its own allowance; the next interval brings `k` more from the first.
    m.on_connected(&identity(3, 1), now);
    m.gossip(node(3), delta(flood.clone()), now + ms(500));
    assert_eq!(m.live_members(), 1 + 2 * k);
    m.gossip(node(2), delta(flood), now + m.config().gossip_interval);
    assert_eq!(m.live_members(), 1 + 3 * k);
    m.assert_indexes();
}

/// At most `max_dials_in_flight` dials are under way, and they start at the token bucket's
/// rate after its burst; the timer says when the next token comes.
#[test]
fn dials_are_bounded_in_flight_and_in_rate() {
    let now = t0();
    let mut m = table(now);
    let entries = (10..110).map(|i| entry(i, 1, MemberState::Alive)).collect();
    m.gossip(node(9), delta(entries), now);
    let burst = m.config().dial_burst as usize;
    let first = m.next_dials(now);
    assert_eq!(first.len(), burst.min(m.config().max_dials_in_flight));
    assert_eq!(m.dials_in_flight(), first.len());
    // None reported: no more.
    assert!(m.next_dials(now).is_empty());
    for d in &first {
        m.on_dial_failed(d, now);
    }
    m.assert_indexes();
    // The members that failed are buried; the others are due, but the bucket is empty.
    let out = m.handle_timeout(now);
    assert!(!out.iter().any(|o| matches!(o, Output::Dial(_))), "{out:?}");
    let token = Duration::from_secs(1) / m.config().dial_rate;
    assert_eq!(m.poll_timeout(), Some(now + token));
    let mut dialled = 0;
    let mut clock = now;
    while clock < now + Duration::from_secs(1) {
        clock += ms(1);
        for d in m.next_dials(clock) {
            dialled += 1;
            m.on_dial_failed(&d, clock);
        }
    }
    let rate = m.config().dial_rate as usize;
    assert!(
        dialled <= rate && dialled >= rate - 2,
        "{dialled} dials in a second"
    );
    m.assert_indexes();
}

/// Many members advertising one dead address are settled by one failed dial of it.
#[test]
fn one_failed_address_settles_every_member_that_advertises_it() {
    let now = t0();
    let mut m = table(now);
    let junk = (10..60)
        .map(|n| with_addresses(n, "h", &["tcp://10.9.9.9:1"]))
        .collect();
    m.gossip(node(9), delta(junk), now);
    let mut dials = 0;
    let mut left = 0;
    let mut clock = now;
    for _ in 0..100 {
        let out = m.handle_timeout(clock);
        for o in out {
            match o {
                Output::Dial(d) => {
                    dials += 1;
                    m.on_dial_failed(&d, clock);
                }
                Output::Left(_) => left += 1,
                _ => {}
            }
        }
        clock += ms(10);
    }
    assert_eq!(left, 50);
    assert_eq!(dials, 1, "one dial settles the address for all");
    assert_eq!(m.live_members(), 0);
    m.assert_indexes();
}

/// A node new to us, learned from gossip and never reached, is buried at its first failed
/// dial; one we were linked to is buried only after the unreachable timeout.
#[test]
fn a_member_on_probation_is_buried_at_its_first_failed_dial() {
    let now = t0();
    let mut m = table(now);
    m.gossip(node(9), delta(vec![entry(2, 1, MemberState::Alive)]), now);
    m.on_connected(&identity(3, 1), now);
    m.on_disconnected(node(3), 1, now);
    assert!(m.member(node(2)).unwrap().is_on_probation());
    assert!(!m.member(node(3)).unwrap().is_on_probation());
    let later = now + Duration::from_secs(60);
    let dials = m.next_dials(later);
    assert_eq!(dials.len(), 2);
    for d in &dials {
        m.on_dial_failed(d, later);
    }
    let out = m.handle_timeout(later);
    assert!(out.contains(&Output::Left(node(2))), "{out:?}");
    assert!(!out.contains(&Output::Left(node(3))), "{out:?}");
    assert_eq!(m.member(node(3)).unwrap().state(), MemberState::Alive);
}
