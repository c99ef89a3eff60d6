use super::*;
use crate::wire::control::{Goodbye, GoodbyeReason};
use crate::wire::PROTOCOL_VERSION;
use crate::ErrorKind;

fn identity(node_id: u128, incarnation: u64) -> PeerIdentity {
    PeerIdentity {
        node_id,
        incarnation,
        name: format!("node-{node_id}"),
        network: "default".into(),
        cluster: "shop".into(),
        host_id: "host-1".into(),
        addresses: vec![format!("tcp://10.0.0.{node_id}:7000")],
        public_key: None,
    }
}

fn node(node_id: u128) -> LocalNode {
    LocalNode::new(identity(node_id, 1))
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Sends `frame` through the handshake codec, as a connection would: the real bytes.
fn wire(frame: &Frame) -> Frame {
    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    let decoded = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty());
    decoded
}

/// Runs a whole handshake from `dialler` to `acceptor`: what each end ends up with.
fn connect(dialler: &LocalNode, acceptor: &LocalNode, now: Instant) -> (Established, Established) {
    let (mut d, hello) = Handshake::dial(dialler, now).unwrap();
    let mut a = Handshake::accept(acceptor, now).unwrap();
    let Step::Established {
        send: Some(welcome),
        established: at_acceptor,
    } = a.on_frame(wire(&hello), now).unwrap()
    else {
        panic!("the acceptor should welcome the dialler");
    };
    let Step::Established {
        send: None,
        established: at_dialler,
    } = d.on_frame(wire(&welcome), now).unwrap()
    else {
        panic!("the dialler should be welcomed");
    };
    assert!(a.is_over() && d.is_over());
    (at_dialler, at_acceptor)
}

/// Runs a handshake the acceptor refuses: the acceptor's `Reject`, and the dialler's error.
fn refused(dialler: &LocalNode, acceptor: &LocalNode) -> (Reject, HandshakeError) {
    let t0 = Instant::now();
    let (mut d, hello) = Handshake::dial(dialler, t0).unwrap();
    let mut a = Handshake::accept(acceptor, t0).unwrap();
    let Step::Refused { send, reject } = a.on_frame(wire(&hello), t0).unwrap() else {
        panic!("the acceptor should refuse the dialler");
    };
    assert_eq!(send.kind, FrameKind::Reject);
    let err = d.on_frame(wire(&send), t0).unwrap_err();
    (reject, err)
}

#[test]
fn a_handshake_agrees_on_version_identities_and_limits() {
    let t0 = Instant::now();
    let a = node(1)
        .with_versions(VersionRange { min: 1, max: 3 })
        .with_max_frame_size(1 << 20);
    let b = node(2).with_versions(VersionRange { min: 2, max: 5 });
    let (at_a, at_b) = connect(&a, &b, t0);

    assert_eq!(at_a.peer, identity(2, 1));
    assert_eq!(at_b.peer, identity(1, 1));
    assert_eq!((at_a.version, at_b.version), (3, 3));
    assert_eq!(at_a.direction, Direction::Outbound);
    assert_eq!(at_b.direction, Direction::Inbound);
    assert_eq!(at_a.peer_max_frame_size, DEFAULT_LIMIT);
    assert_eq!(at_b.peer_max_frame_size, 1 << 20);
    // Each side sends at most the smaller limit and reads with its own.
    assert_eq!(at_a.send_limit(), 1 << 20);
    assert_eq!(at_b.send_limit(), 1 << 20);
    assert_eq!(at_a.receive_codec().max_frame_size, 1 << 20);
    assert_eq!(at_b.receive_codec().max_frame_size, DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(at_b.send_codec().max_frame_size, 1 << 20);
}

#[test]
fn the_handshake_codec_is_the_64_kib_one() {
    let (d, _) = Handshake::dial(&node(1), Instant::now()).unwrap();
    assert_eq!(d.codec(), FrameCodec::handshake());
    assert_eq!(d.codec().max_frame_size, 64 * 1024);
}

#[test]
fn a_self_dial_is_rejected() {
    let (reject, err) = refused(&node(1), &node(1));
    assert_eq!(reject.reason, RejectReason::SelfDial);
    assert!(matches!(
        &err,
        HandshakeError::Rejected {
            reason: RejectReason::SelfDial,
            ..
        }
    ));
    assert_eq!(crate::Error::from(err).kind(), ErrorKind::Config);
}

#[test]
fn another_network_is_rejected() {
    let mut other = identity(2, 1);
    other.network = "staging".into();
    let (reject, err) = refused(&LocalNode::new(other), &node(1));
    assert_eq!(reject.reason, RejectReason::WrongNetwork);
    assert!(matches!(
        err,
        HandshakeError::Rejected {
            reason: RejectReason::WrongNetwork,
            ..
        }
    ));
}

#[test]
fn a_dialler_refuses_a_welcome_from_itself_or_another_network() {
    let t0 = Instant::now();
    let mut stranger = identity(2, 1);
    stranger.network = "staging".into();
    for (identity, reason) in [
        (identity(1, 9), RejectReason::SelfDial),
        (stranger, RejectReason::WrongNetwork),
    ] {
        let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            identity,
            max_frame_size: DEFAULT_LIMIT,
        };
        let err = d
            .on_frame(wire(&welcome.to_frame().unwrap()), t0)
            .unwrap_err();
        assert!(
            matches!(&err, HandshakeError::Refused { reason: r } if *r == reason),
            "{err:?}"
        );
    }
}

#[test]
fn disjoint_version_ranges_are_a_version_mismatch_on_both_sides() {
    let old = node(1).with_versions(VersionRange { min: 1, max: 1 });
    let new = node(2).with_versions(VersionRange { min: 2, max: 3 });
    for (dialler, acceptor) in [(&old, &new), (&new, &old)] {
        let (reject, err) = refused(dialler, acceptor);
        assert_eq!(reject.reason, RejectReason::VersionMismatch);
        let at_acceptor = crate::Error::from(HandshakeError::Refused {
            reason: reject.reason,
        });
        assert_eq!(at_acceptor.kind(), ErrorKind::VersionMismatch);
        assert_eq!(crate::Error::from(err).kind(), ErrorKind::VersionMismatch);
    }
}

#[test]
fn a_welcome_with_a_version_we_did_not_offer_is_a_protocol_error() {
    let t0 = Instant::now();
    let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
    let welcome = Welcome {
        version: PROTOCOL_VERSION + 1,
        identity: identity(2, 1),
        max_frame_size: DEFAULT_LIMIT,
    };
    let err = d
        .on_frame(wire(&welcome.to_frame().unwrap()), t0)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
    assert_eq!(crate::Error::from(err).kind(), ErrorKind::Decode);
}

#[test]
fn a_peer_limit_under_the_handshake_limit_is_a_protocol_error() {
    let t0 = Instant::now();
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity: identity(2, 1),
        max_frame_size: MIN_MAX_FRAME_SIZE - 1,
    };
    let mut a = Handshake::accept(&node(1), t0).unwrap();
    let err = a
        .on_frame(wire(&hello.to_frame().unwrap()), t0)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");

    let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        identity: identity(2, 1),
        max_frame_size: 0,
    };
    let err = d
        .on_frame(wire(&welcome.to_frame().unwrap()), t0)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
}

fn frame_of(kind: FrameKind) -> Frame {
    match kind {
        FrameKind::Goodbye => Goodbye {
            reason: GoodbyeReason::Shutdown,
        }
        .to_frame()
        .unwrap(),
        FrameKind::Hello => node(3).hello().to_frame().unwrap(),
        _ => Frame::new(kind, bytes::Bytes::new()),
    }
}

#[test]
fn any_other_frame_kind_during_the_handshake_is_an_error() {
    let t0 = Instant::now();
    for kind in FrameKind::ALL {
        if kind != FrameKind::Hello {
            let mut a = Handshake::accept(&node(1), t0).unwrap();
            let err = a.on_frame(wire(&frame_of(kind)), t0).unwrap_err();
            assert!(
                matches!(err, HandshakeError::UnexpectedFrame { got, .. } if got == kind),
                "acceptor, {kind}: {err:?}"
            );
            assert!(a.is_over());
        }
        if !matches!(kind, FrameKind::Welcome | FrameKind::Reject) {
            let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
            let err = d.on_frame(wire(&frame_of(kind)), t0).unwrap_err();
            assert!(
                matches!(err, HandshakeError::UnexpectedFrame { got, .. } if got == kind),
                "dialler, {kind}: {err:?}"
            );
            assert_eq!(crate::Error::from(err).kind(), ErrorKind::Decode);
        }
    }
}

#[test]
fn a_garbage_body_is_malformed() {
    let t0 = Instant::now();
    let garbage = bytes::Bytes::from_static(&[0xc1, 0xff, 0x00]);
    let mut a = Handshake::accept(&node(1), t0).unwrap();
    let err = a
        .on_frame(wire(&Frame::new(FrameKind::Hello, garbage.clone())), t0)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Malformed(_)), "{err:?}");
    for kind in [FrameKind::Welcome, FrameKind::Reject] {
        let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
        let err = d
            .on_frame(wire(&Frame::new(kind, garbage.clone())), t0)
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(_)), "{err:?}");
    }
}

#[test]
fn a_second_frame_finds_the_handshake_over() {
    let t0 = Instant::now();
    let (_, hello) = Handshake::dial(&node(2), t0).unwrap();
    let mut a = Handshake::accept(&node(1), t0).unwrap();
    assert!(matches!(
        a.on_frame(hello.clone(), t0),
        Ok(Step::Established { .. })
    ));
    assert!(matches!(
        a.on_frame(hello, t0),
        Err(HandshakeError::Finished)
    ));
    assert_eq!(a.deadline(), None);
}

#[test]
fn a_handshake_times_out_at_its_deadline_and_not_before() {
    let t0 = Instant::now();
    let local = node(1).with_handshake_timeout(Duration::from_secs(3));
    let deadline = at(t0, 3_000);
    let just_before = deadline - Duration::from_micros(1);

    let (mut d, _) = Handshake::dial(&local, t0).unwrap();
    let mut a = Handshake::accept(&local, t0).unwrap();
    for h in [&mut d, &mut a] {
        assert_eq!(h.deadline(), Some(deadline));
        h.poll_timeout(t0).unwrap();
        h.poll_timeout(just_before).unwrap();
        assert!(!h.is_over());
        assert!(matches!(
            h.poll_timeout(deadline),
            Err(HandshakeError::TimedOut)
        ));
        assert!(h.is_over());
        assert_eq!(h.deadline(), None);
        // Once over, the timer has nothing left to report.
        h.poll_timeout(at(t0, 9_000)).unwrap();
    }
    let err: crate::Error = HandshakeError::TimedOut.into();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[test]
fn a_frame_at_the_deadline_is_too_late_and_one_before_it_is_not() {
    let t0 = Instant::now();
    let local = node(1).with_handshake_timeout(Duration::from_secs(3));
    let (_, hello) = Handshake::dial(&node(2), t0).unwrap();

    let mut late = Handshake::accept(&local, t0).unwrap();
    assert!(matches!(
        late.on_frame(hello.clone(), at(t0, 3_000)),
        Err(HandshakeError::TimedOut)
    ));
    let mut in_time = Handshake::accept(&local, t0).unwrap();
    let just_before = at(t0, 3_000) - Duration::from_micros(1);
    assert!(matches!(
        in_time.on_frame(hello, just_before),
        Ok(Step::Established { .. })
    ));
    // A completed handshake never times out.
    in_time.poll_timeout(at(t0, 60_000)).unwrap();
}

#[test]
fn bad_configuration_is_refused_up_front() {
    let t0 = Instant::now();
    let mut huge = identity(1, 1);
    huge.addresses = vec!["x".repeat(1000); 100];
    let bad = [
        node(1).with_max_frame_size(MIN_MAX_FRAME_SIZE - 1),
        node(1).with_versions(VersionRange { min: 2, max: 1 }),
        node(1).with_handshake_timeout(Duration::ZERO),
        node(1).with_handshake_timeout(Duration::MAX),
        LocalNode::new(huge),
    ];
    for local in bad {
        let err = Handshake::accept(&local, t0).unwrap_err();
        assert!(matches!(err, HandshakeError::Config(_)), "{err:?}");
        assert!(Handshake::dial(&local, t0).is_err());
        assert_eq!(crate::Error::from(err).kind(), ErrorKind::Config);
    }
    node(1)
        .with_max_frame_size(MIN_MAX_FRAME_SIZE)
        .validate()
        .unwrap();
}

// ---- arbitration ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Dialled by A.
    FromA,
    /// Dialled by B.
    FromB,
}

/// One node's view: it holds `first` and `second` completes. Returns the connection it keeps.
fn keep(
    local: u128,
    (first, first_est): (Conn, &Established),
    (second, second_est): (Conn, &Established),
) -> Conn {
    assert_eq!(first_est.peer.node_id, second_est.peer.node_id);
    match arbitrate(
        local,
        first_est.peer.node_id,
        first_est.key(),
        second_est.key(),
    ) {
        Arbitration::KeepExisting => first,
        Arbitration::ReplaceWithNew => second,
        Arbitration::RejectNew { .. } => panic!("a simultaneous dial rejects nothing"),
    }
}

/// A and B dial each other at once; whatever order the handshakes complete in at each node,
/// both keep the same connection: the one dialled by the smaller node id.
fn simultaneous_dial(a_id: u128, b_id: u128) {
    let t0 = Instant::now();
    let (a, b) = (node(a_id), node(b_id));
    let (a_on_from_a, b_on_from_a) = connect(&a, &b, t0);
    let (b_on_from_b, a_on_from_b) = connect(&b, &a, t0);
    let expected = if a_id < b_id {
        Conn::FromA
    } else {
        Conn::FromB
    };

    for a_first in [true, false] {
        for b_first in [true, false] {
            let (x, y) = ((Conn::FromA, &a_on_from_a), (Conn::FromB, &a_on_from_b));
            let at_a = if a_first {
                keep(a_id, x, y)
            } else {
                keep(a_id, y, x)
            };
            let (x, y) = ((Conn::FromA, &b_on_from_a), (Conn::FromB, &b_on_from_b));
            let at_b = if b_first {
                keep(b_id, x, y)
            } else {
                keep(b_id, y, x)
            };
            assert_eq!(at_a, at_b, "A first: {a_first}, B first: {b_first}");
            assert_eq!(at_a, expected);
        }
    }
}

#[test]
fn a_simultaneous_dial_keeps_one_connection_on_both_sides() {
    simultaneous_dial(1, 2);
    simultaneous_dial(2, 1);
    simultaneous_dial(u128::MAX, 0);
}

#[test]
fn a_reconnect_with_a_newer_incarnation_replaces_the_old_connection() {
    let t0 = Instant::now();
    let a = node(1);
    let b_old = LocalNode::new(identity(2, 10));
    let b_new = LocalNode::new(identity(2, 11));
    // A holds a half-open connection to B's old run, in either direction.
    let (old_outbound, _) = connect(&a, &b_old, t0);
    let (_, old_inbound) = connect(&b_old, &a, t0);
    // B restarted (same node id, newer incarnation) and dials A, or A redials B.
    let (_, new_inbound) = connect(&b_new, &a, at(t0, 5));
    let (new_outbound, _) = connect(&a, &b_new, at(t0, 5));
    for existing in [&old_outbound, &old_inbound] {
        for new in [&new_inbound, &new_outbound] {
            assert_eq!(
                arbitrate(1, 2, existing.key(), new.key()),
                Arbitration::ReplaceWithNew
            );
        }
    }
}

#[test]
fn an_older_incarnation_is_rejected_as_a_duplicate() {
    let t0 = Instant::now();
    let a = node(1);
    let (existing, _) = connect(&a, &LocalNode::new(identity(2, 11)), t0);
    let stale = LocalNode::new(identity(2, 10));

    // The stale dialler's Hello arrives; the acceptor arbitrates before writing its Welcome.
    let (mut d, hello) = Handshake::dial(&stale, t0).unwrap();
    let mut acc = Handshake::accept(&a, t0).unwrap();
    let Step::Established {
        established: new, ..
    } = acc.on_frame(wire(&hello), t0).unwrap()
    else {
        panic!("the handshake itself succeeds");
    };
    let Arbitration::RejectNew { reason } = arbitrate(1, 2, existing.key(), new.key()) else {
        panic!("an older incarnation must be rejected");
    };
    assert_eq!(reason, RejectReason::Duplicate);

    let reject = Reject {
        reason,
        message: String::new(),
    };
    let err = d
        .on_frame(wire(&reject.to_frame().unwrap()), t0)
        .unwrap_err();
    assert!(matches!(
        err,
        HandshakeError::Rejected {
            reason: RejectReason::Duplicate,
            ..
        }
    ));
}

#[test]
fn a_redial_by_the_same_end_replaces_the_half_open_connection() {
    for direction in [Direction::Outbound, Direction::Inbound] {
        let key = ConnectionKey {
            direction,
            peer_incarnation: 7,
        };
        assert_eq!(arbitrate(1, 2, key, key), Arbitration::ReplaceWithNew);
    }
}

/// The acceptor's answer to `hello` when it already holds `existing` to the dialler.
fn accept_with(acceptor: &LocalNode, hello: &Frame, existing: Option<ConnectionKey>) -> Step {
    let t0 = Instant::now();
    let mut a = Handshake::accept(acceptor, t0).unwrap();
    let step = a.on_frame_with(wire(hello), t0, |id| {
        assert_eq!(id, 2, "asked for the dialler's connection");
        existing
    });
    step.unwrap()
}

fn reject_of(step: Step) -> Reject {
    match step {
        Step::Refused { send, reject } => {
            assert_eq!(Reject::from_frame(&wire(&send)).unwrap(), reject);
            reject
        }
        Step::Established { .. } => panic!("the acceptor should refuse"),
    }
}

#[test]
fn an_older_incarnation_of_a_connected_peer_gets_reject_duplicate_not_welcome() {
    let a = node(1);
    let (_, hello) = Handshake::dial(&LocalNode::new(identity(2, 10)), Instant::now()).unwrap();
    let existing = |direction, peer_incarnation| {
        Some(ConnectionKey {
            direction,
            peer_incarnation,
        })
    };
    // Connected to the peer's newer run: the older one is refused before any Welcome.
    for direction in [Direction::Outbound, Direction::Inbound] {
        let reject = reject_of(accept_with(&a, &hello, existing(direction, 11)));
        assert_eq!(reject.reason, RejectReason::Duplicate);
    }
    // A simultaneous dial the existing connection wins (it was dialled by node 1, the
    // smaller id): refused too, as the runtime would close it after a Welcome.
    let reject = reject_of(accept_with(&a, &hello, existing(Direction::Outbound, 10)));
    assert_eq!(reject.reason, RejectReason::Duplicate);
    // What arbitration lets replace the existing connection is welcomed: a newer run, a redial
    // by the same end, and no connection at all.
    for old in [
        existing(Direction::Inbound, 9),
        existing(Direction::Outbound, 9),
        existing(Direction::Inbound, 10),
        None,
    ] {
        assert!(
            matches!(
                accept_with(&a, &hello, old),
                Step::Established { send: Some(_), .. }
            ),
            "{old:?}"
        );
    }
    // Where node 2 holds the smaller id, the new connection (dialled by it) wins the
    // simultaneous dial.
    let (_, hello) = Handshake::dial(&LocalNode::new(identity(2, 10)), Instant::now()).unwrap();
    let b = node(3);
    let mut acc = Handshake::accept(&b, Instant::now()).unwrap();
    let step = acc
        .on_frame_with(wire(&hello), Instant::now(), |_| {
            existing(Direction::Outbound, 10)
        })
        .unwrap();
    assert!(matches!(step, Step::Established { .. }));
}

/// `identity(2, 1)` changed by `f`.
fn odd_identity(f: impl FnOnce(&mut PeerIdentity)) -> PeerIdentity {
    let mut id = identity(2, 1);
    f(&mut id);
    id
}

/// A `Hello` carrying `identity` as the dialler's, bypassing the dialler's own validation.
fn hello_of(identity: PeerIdentity) -> Frame {
    Hello {
        versions: VersionRange::CURRENT,
        identity,
        max_frame_size: DEFAULT_LIMIT,
    }
    .to_frame()
    .unwrap()
}

#[test]
fn a_hello_over_the_gossip_limits_is_rejected_as_an_invalid_identity() {
    let max = PeerIdentity::MAX_FIELD_LEN;
    let too_many = (0..=PeerIdentity::MAX_ADDRESSES)
        .map(|i| format!("tcp://10.0.0.1:{i}"))
        .collect::<Vec<_>>();
    let bad = [
        odd_identity(|id| id.addresses.clone_from(&too_many)),
        odd_identity(|id| id.addresses = (0..1000).map(|i| format!("tcp://h:{i}")).collect()),
        odd_identity(|id| id.addresses = vec!["a".repeat(max + 1)]),
        odd_identity(|id| id.name = "n".repeat(max + 1)),
        odd_identity(|id| id.cluster = "c".repeat(max + 1)),
        odd_identity(|id| id.host_id = "h".repeat(max + 1)),
    ];
    for identity in bad {
        let reject = reject_of(accept_with(&node(1), &hello_of(identity), None));
        assert_eq!(reject.reason, RejectReason::InvalidIdentity);
    }
    // At the limits exactly: welcome.
    let at_limits = odd_identity(|id| {
        id.addresses = too_many[..PeerIdentity::MAX_ADDRESSES].to_vec();
        id.name = "n".repeat(max);
        id.host_id = "h".repeat(max);
    });
    assert!(matches!(
        accept_with(&node(1), &hello_of(at_limits), None),
        Step::Established { .. }
    ));
}

#[test]
fn an_incarnation_far_ahead_of_the_clock_is_refused_on_both_sides() {
    let t0 = Instant::now();
    let wall: u64 = 1_700_000_000_000_000;
    let day = MAX_INCARNATION_LEAD.as_micros() as u64;
    for (incarnation, ok) in [
        (1, true),
        (wall, true),
        (wall + day, true),
        (wall + day + 1, false),
        (u64::MAX, false),
    ] {
        let peer = odd_identity(|id| id.incarnation = incarnation);
        // The acceptor, given the wall clock.
        let mut acc = Handshake::accept(&node(1), t0)
            .unwrap()
            .with_wall_clock(wall);
        let step = acc.on_frame(wire(&hello_of(peer.clone())), t0).unwrap();
        match step {
            Step::Established { .. } => assert!(ok, "{incarnation} welcomed"),
            Step::Refused { reject, .. } => {
                assert!(!ok, "{incarnation} refused");
                assert_eq!(reject.reason, RejectReason::InvalidIdentity);
            }
        }
        // The dialler refuses such a Welcome.
        let (d, _) = Handshake::dial(&node(1), t0).unwrap();
        let mut d = d.with_wall_clock(wall);
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            identity: peer,
            max_frame_size: DEFAULT_LIMIT,
        };
        let got = d.on_frame(wire(&welcome.to_frame().unwrap()), t0);
        if ok {
            assert!(got.is_ok(), "{got:?}");
        } else {
            let err = got.unwrap_err();
            assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
            assert_eq!(crate::Error::from(err).kind(), ErrorKind::Decode);
        }
    }
}

#[test]
fn a_dialler_refuses_a_welcome_over_the_limits() {
    let t0 = Instant::now();
    let (mut d, _) = Handshake::dial(&node(1), t0).unwrap();
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        identity: odd_identity(|id| id.addresses = vec!["tcp://h:1".into(); 17]),
        max_frame_size: DEFAULT_LIMIT,
    };
    let err = d
        .on_frame(wire(&welcome.to_frame().unwrap()), t0)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
}

#[test]
fn an_invalid_identity_rejection_is_our_configuration_and_round_trips() {
    let mine = LocalNode::new(odd_identity(|id| {
        id.addresses = vec!["tcp://h:1".into(); 17];
    }));
    // This node would be refused by every peer: `start()` refuses it first.
    assert!(matches!(mine.validate(), Err(HandshakeError::Config(_))));
    let reject = Reject {
        reason: RejectReason::InvalidIdentity,
        message: "no".into(),
    };
    let back = Reject::from_frame(&wire(&reject.to_frame().unwrap())).unwrap();
    assert_eq!(back.reason.code(), "invalid_identity");
    assert_eq!(back, reject);
    let (mut d, _) = Handshake::dial(&node(1), Instant::now()).unwrap();
    let err = d
        .on_frame(wire(&reject.to_frame().unwrap()), Instant::now())
        .unwrap_err();
    assert_eq!(crate::Error::from(err).kind(), ErrorKind::Config);
}
