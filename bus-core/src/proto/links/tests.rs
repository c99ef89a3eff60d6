//! The link table driven with a fake clock against a real `Membership`.

use super::*;
use crate::proto::membership::tests::{delta, entry, identity, ms, node};
use crate::proto::membership::MembershipConfig;

fn membership(now: Instant) -> Membership {
    let config = MembershipConfig {
        schemes: vec!["tcp".into()],
        ..MembershipConfig::default()
    };
    Membership::new(identity(1, 1), Vec::new(), config, now).unwrap()
}

/// Gossip from `from` saying `about` is in `state` at `incarnation`.
fn gossip(
    m: &mut Membership,
    from: u128,
    about: u128,
    incarnation: u64,
    state: MemberState,
    now: Instant,
) -> Vec<Output> {
    let msg = delta(vec![entry(about, incarnation, state)]);
    m.handle_gossip(node(from), msg, crate::wire::DEFAULT_MAX_FRAME_SIZE, now)
}

/// A table with a link to node 2 at incarnation 1, counted by membership.
fn linked(now: Instant) -> (Links, Membership) {
    let mut m = membership(now);
    let mut links = Links::new();
    m.on_connected(&identity(2, 1), now);
    links.insert(identity(2, 1), false);
    (links, m)
}

fn dial_of(n: u128) -> DialRequest {
    DialRequest {
        node: Some(node(n)),
        addr: format!("tcp://10.0.0.{n}:7000"),
    }
}

#[test]
fn a_dial_of_an_unlinked_node_is_left_to_be_made() {
    let t0 = Instant::now();
    let (mut links, mut m) = linked(t0);
    assert!(links.settle_linked(&dial_of(3), &mut m, t0).is_none());
    let seed = DialRequest {
        node: None,
        addr: "tcp://10.0.0.9:7000".into(),
    };
    assert!(links.settle_linked(&seed, &mut m, t0).is_none());
}

#[test]
fn a_dial_of_a_linked_node_by_id_or_by_address_is_settled() {
    let t0 = Instant::now();
    let (mut links, mut m) = linked(t0);
    assert!(links.settle_linked(&dial_of(2), &mut m, t0).is_some());
    // A seed address the linked node advertises: its node is not known to the dial.
    let seed = DialRequest {
        node: None,
        addr: "tcp://10.0.0.2:7000".into(),
    };
    assert!(links.settle_linked(&seed, &mut m, t0 + ms(1)).is_some());
    let member = m.member(node(2)).unwrap();
    assert_eq!(member.state(), MemberState::Alive);
    assert!(member.is_connected());
    assert_eq!(links.incarnation(node(2)), Some(1));
}

#[test]
fn a_linked_node_that_refutes_its_death_is_counted_again_at_the_new_incarnation() {
    let t0 = Instant::now();
    let (mut links, mut m) = linked(t0);
    // A rumour of its death: membership no longer counts the link.
    gossip(&mut m, 3, 2, 1, MemberState::Dead, t0 + ms(10));
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Dead);
    assert!(links.relink_refuted(&mut m, t0 + ms(10)).is_empty());
    assert_eq!(links.incarnation(node(2)), Some(1));
    // Its refutation arrives as gossip, not as a new handshake.
    gossip(&mut m, 2, 2, 2, MemberState::Alive, t0 + ms(20));
    assert!(!m.member(node(2)).unwrap().is_connected());
    links.relink_refuted(&mut m, t0 + ms(20));
    let member = m.member(node(2)).unwrap();
    assert!(member.is_connected());
    assert_eq!(member.incarnation(), 2);
    assert_eq!(links.incarnation(node(2)), Some(2));
    // The end of the link reports the run it reached by then.
    assert_eq!(links.remove(node(2)), Some(2));
    assert_eq!(links.remove(node(2)), None);
}

#[test]
fn a_dial_behind_a_tombstone_of_a_linked_node_backs_off_and_is_not_a_success() {
    let t0 = Instant::now();
    let (mut links, mut m) = linked(t0);
    gossip(&mut m, 3, 2, 1, MemberState::Dead, t0 + ms(10));
    let settled = links.settle_linked(&dial_of(2), &mut m, t0 + ms(10));
    assert!(settled.is_some());
    // Membership still holds the tombstone (the node refutes over the link); the link keeps
    // the incarnation it reached.
    assert_eq!(m.member(node(2)).unwrap().state(), MemberState::Dead);
    assert_eq!(links.incarnation(node(2)), Some(1));
    assert!(!m.next_dials(t0 + ms(10)).contains(&dial_of(2)));
}

#[test]
fn owed_interest_stays_owed_until_a_snapshot_goes_out() {
    let t0 = Instant::now();
    let (mut links, _m) = linked(t0);
    links.insert(identity(3, 1), true);
    assert_eq!(links.owed(), vec![node(3)]);
    assert!(!links.owes_interest(node(2)));
    // A delta that did not fit leaves a snapshot owed; one that fit pays nothing.
    links.interest_sent(node(2), false);
    links.interest_sent(node(2), true);
    assert!(links.owes_interest(node(2)));
    let mut owed = links.owed();
    owed.sort_unstable();
    assert_eq!(owed, vec![node(2), node(3)]);
    links.paid(node(2), false);
    links.paid(node(3), true);
    assert_eq!(links.owed(), vec![node(2)]);
    links.paid(node(2), true);
    assert!(links.owed().is_empty());
    // A gone link owes nothing, and news about it changes nothing.
    links.remove(node(3));
    links.interest_sent(node(3), false);
    assert!(!links.owes_interest(node(3)));
}
