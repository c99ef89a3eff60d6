use super::*;

fn identity() -> PeerIdentity {
    PeerIdentity {
        node_id: u128::MAX - 5,
        incarnation: 42,
        name: "node-a".into(),
        network: "default".into(),
        cluster: "shop".into(),
        host_id: "host-1".into(),
        addresses: vec!["tcp://10.0.0.1:7000".into()],
        public_key: None,
    }
}

fn round_trip<M: ControlMessage + PartialEq + std::fmt::Debug>(msg: M) {
    let frame = msg.to_frame().unwrap();
    assert_eq!(frame.kind, M::KIND);
    assert_eq!(M::from_frame(&frame).unwrap(), msg);
}

#[test]
fn an_interest_with_too_many_names_keeps_the_first_ones() {
    let n = super::MAX_NAMES as u32 + 1;
    // Compact form: [seq, snapshot, commands_added] with n names, the last one "x".
    let mut body = vec![0x93, 0x00, 0xc3, 0xdd];
    body.extend_from_slice(&(n + 1).to_be_bytes());
    body.extend(std::iter::repeat_n(0xa0, n as usize));
    body.extend_from_slice(&[0xa1, b'x']);
    let interest = decode_body::<Interest>(&body).unwrap();
    assert_eq!(interest.commands_added.len(), n as usize - 1);
    assert!(interest.commands_added.iter().all(String::is_empty));
    // What follows the ignored entries still decodes.
    let mut then = vec![0x94, 0x00, 0xc3, 0xdd];
    then.extend_from_slice(&n.to_be_bytes());
    then.extend(std::iter::repeat_n(0xa0, n as usize));
    then.extend_from_slice(&[0x91, 0xa1, b'y']);
    let interest = decode_body::<Interest>(&then).unwrap();
    assert_eq!(interest.commands_removed, ["y"]);
    // The bound itself is fine.
    let mut ok = vec![0x93, 0x00, 0xc3, 0xdd];
    ok.extend_from_slice(&(n - 1).to_be_bytes());
    ok.extend(std::iter::repeat_n(0xa0, n as usize - 1));
    assert_eq!(
        decode_body::<Interest>(&ok).unwrap().commands_added.len(),
        n as usize - 1
    );
}

#[test]
fn a_reply_error_carries_its_kind_by_code() {
    let err = ReplyError::new(crate::ErrorKind::HandlerFailed, "out of stock");
    assert_eq!(err.kind, "handler_failed");
    assert_eq!(err.kind(), crate::ErrorKind::HandlerFailed);
    let newer = ReplyError {
        kind: "quota_exceeded".into(),
        message: String::new(),
    };
    assert_eq!(newer.kind(), crate::ErrorKind::HandlerFailed);
}

#[test]
fn every_control_message_round_trips() {
    round_trip(ReplyError::new(
        crate::ErrorKind::Overloaded,
        "too many handlers",
    ));
    round_trip(InterestRequest { have_seq: Some(3) });
    round_trip(Hello {
        versions: VersionRange { min: 1, max: 3 },
        identity: identity(),
        max_frame_size: 16 << 20,
    });
    round_trip(Welcome {
        version: 1,
        identity: identity(),
        max_frame_size: 1 << 20,
    });
    for reason in [
        RejectReason::SelfDial,
        RejectReason::WrongNetwork,
        RejectReason::VersionMismatch,
        RejectReason::Duplicate,
        RejectReason::Unauthorized,
        RejectReason::Other("rate_limited".into()),
    ] {
        round_trip(Reject {
            reason,
            message: "no".into(),
        });
    }
    round_trip(Goodbye {
        reason: GoodbyeReason::Shutdown,
    });
    round_trip(Goodbye {
        reason: GoodbyeReason::Replaced,
    });
    round_trip(Goodbye {
        reason: GoodbyeReason::Other("upgrade".into()),
    });
    round_trip(Interest {
        seq: 9,
        snapshot: false,
        commands_added: vec!["diag.ping".into()],
        commands_removed: vec!["a".into()],
        events_added: vec!["users.created".into()],
        events_removed: vec![],
        groups_added: vec![GroupInterest {
            event: "users.created".into(),
            group: "mailer".into(),
            kind: GroupKind::Exclusive,
            since: 1_700_000_000_000,
        }],
        groups_removed: vec![GroupKey {
            event: "users.created".into(),
            group: "audit".into(),
        }],
    });
    round_trip(GossipMessage::Digest(GossipDigest {
        hash: u64::MAX - 1,
        count: 3,
    }));
    round_trip(GossipMessage::Summary(GossipSummary {
        hash: 5,
        entries: vec![u64::MAX, 0, 7],
    }));
    for (state, ttl_ms) in [
        (MemberState::Alive, 0),
        (MemberState::Dead, 1500),
        (MemberState::Left, 1),
    ] {
        round_trip(GossipMessage::Delta(GossipDelta {
            entries: vec![GossipEntry {
                node_id: 1,
                incarnation: 2,
                name: "n".into(),
                addresses: vec!["tcp://[::1]:1".into()],
                network: "default".into(),
                cluster: "c".into(),
                host_id: "h".into(),
                state,
                ttl_ms,
                public_key: None,
            }],
            want: vec![3, u64::MAX],
        }));
    }
}

#[test]
fn fields_are_named_on_the_wire() {
    let body = encode_body(&Goodbye {
        reason: GoodbyeReason::Shutdown,
    })
    .unwrap();
    // fixmap(1) "reason" "shutdown"
    let mut expected = vec![0x81, 0xa6];
    expected.extend_from_slice(b"reason");
    expected.push(0xa8);
    expected.extend_from_slice(b"shutdown");
    assert_eq!(&body[..], &expected[..]);
}

#[test]
fn a_gossip_digest_is_a_few_dozen_bytes() {
    let msg = GossipMessage::Digest(GossipDigest {
        hash: u64::MAX,
        count: u32::MAX,
    });
    let body = encode_body(&msg).unwrap();
    // fixmap(1) "Digest" → fixmap(2) "hash" u64 "count" u32
    assert_eq!(
        &body[..8],
        &[0x81, 0xa6, b'D', b'i', b'g', b'e', b's', b't']
    );
    assert!(body.len() <= 40, "{} bytes", body.len());
    // A summary costs at most 9 bytes per entry.
    let summary = GossipMessage::Summary(GossipSummary {
        hash: u64::MAX,
        entries: vec![u64::MAX; 100],
    });
    let body = encode_body(&summary).unwrap();
    assert!(body.len() <= 40 + 9 * 100, "{} bytes", body.len());
}

#[test]
fn entry_hashes_are_fixed_and_tell_versions_apart() {
    // Pinned (values computed apart from this code): every node must compute the same
    // hashes, whatever its build.
    assert_eq!(entry_hash(0, 0, MemberState::Alive), 0x2130_748a_aac8_0268);
    assert_eq!(
        entry_hash(u128::MAX - 5, 42, MemberState::Dead),
        0xad0b_5b0c_7205_6663
    );
    let h = entry_hash(u128::MAX - 5, 42, MemberState::Alive);
    assert_ne!(h, entry_hash(u128::MAX - 5, 43, MemberState::Alive));
    assert_ne!(h, entry_hash(u128::MAX - 5, 42, MemberState::Dead));
    assert_ne!(h, entry_hash(u128::MAX - 4, 42, MemberState::Alive));
    assert_ne!(h, entry_hash((u128::MAX - 5) >> 64, 42, MemberState::Alive));
}

/// A later version's `Hello` with an extra field, and without the optional ones.
#[test]
fn unknown_fields_are_ignored_and_optional_ones_default() {
    #[derive(Serialize)]
    struct FutureIdentity {
        node_id: u128,
        incarnation: u64,
        network: String,
        cluster: String,
        host_id: String,
        zone: String,
    }
    #[derive(Serialize)]
    struct FutureHello {
        versions: VersionRange,
        identity: FutureIdentity,
        max_frame_size: u32,
        auth_proof: Vec<u8>,
    }
    let body = encode_body(&FutureHello {
        versions: VersionRange { min: 1, max: 4 },
        identity: FutureIdentity {
            node_id: 7,
            incarnation: 1,
            network: "n".into(),
            cluster: "c".into(),
            host_id: "h".into(),
            zone: "eu".into(),
        },
        max_frame_size: 100,
        auth_proof: vec![1, 2, 3],
    })
    .unwrap();
    let hello: Hello = decode_body(&body).unwrap();
    assert_eq!(hello.identity.node_id, 7);
    assert_eq!(hello.identity.name, "");
    assert!(hello.identity.addresses.is_empty());
    assert_eq!(
        hello.versions.highest_common(VersionRange::CURRENT),
        Some(PROTOCOL_VERSION)
    );
}

#[test]
fn a_frame_of_another_kind_is_refused() {
    let frame = Goodbye {
        reason: GoodbyeReason::Shutdown,
    }
    .to_frame()
    .unwrap();
    assert!(matches!(
        Hello::from_frame(&frame),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn version_negotiation_picks_the_highest_common_version() {
    let r = |min, max| VersionRange { min, max };
    assert_eq!(r(1, 3).highest_common(r(2, 5)), Some(3));
    assert_eq!(r(2, 5).highest_common(r(1, 3)), Some(3));
    assert_eq!(r(1, 1).highest_common(r(1, 1)), Some(1));
    assert_eq!(r(1, 2).highest_common(r(3, 4)), None);
    assert_eq!(r(3, 1).highest_common(r(1, 3)), None);
    assert!(r(1, 3).contains(2));
    assert!(!r(1, 3).contains(4));
}

#[test]
fn credit_round_trips_and_reads_at_most_max_names_grants() {
    let msg = Credit {
        grants: vec![
            Grant {
                name: "orders.placed".into(),
                limit: 1_024,
                wait: true,
                seq: 3,
                window: 0,
            },
            Grant {
                name: "ticks".into(),
                limit: u64::MAX,
                wait: false,
                seq: 0,
                window: 0,
            },
        ],
    };
    let frame = msg.to_frame().unwrap();
    assert_eq!(frame.kind, FrameKind::Credit);
    assert_eq!(Credit::from_frame(&frame).unwrap(), msg);

    // A peer cannot make us hold more grants than names an interest may hold.
    let many = Credit {
        grants: (0..MAX_NAMES + 10)
            .map(|i| Grant {
                name: i.to_string(),
                limit: 1,
                wait: true,
                seq: 1,
                window: 0,
            })
            .collect(),
    };
    let read = Credit::from_frame(&many.to_frame().unwrap()).unwrap();
    assert_eq!(read.grants.len(), MAX_NAMES);

    // Not a credit message: an error, not a panic.
    let mut bad = frame.clone();
    bad.body = bytes::Bytes::from_static(&[0x92, 0xc1, 0xff]);
    assert!(Credit::from_frame(&bad).is_err());
}

#[test]
fn an_identity_or_entry_whose_key_is_not_its_node_ids_is_out_of_bounds() {
    let key = crate::trust::Identity::generate().public_key();
    let mut id = identity();
    assert!(id.within_limits(), "no key: only the id is known");
    id.public_key = Some(key);
    assert!(!id.within_limits(), "a key that does not give the id");
    id.node_id = key.node_id().as_u128();
    assert!(id.within_limits());
    let entry = GossipEntry::from_identity(&id, MemberState::Alive);
    assert_eq!(entry.public_key, Some(key));
    assert_eq!(entry.identity(), id);
    // The key travels in gossip, as bytes, and comes back the same.
    let msg = GossipMessage::Delta(GossipDelta {
        entries: vec![entry.clone()],
        want: Vec::new(),
    });
    let back = GossipMessage::from_frame(&msg.to_frame().unwrap()).unwrap();
    assert_eq!(back, msg);
    let mut forged = entry;
    forged.public_key = Some(crate::trust::Identity::generate().public_key());
    assert!(!forged.within_limits());
}
