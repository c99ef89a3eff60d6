use super::*;

fn config(network: &str, keys: &[&NetworkKey]) -> NoiseConfig {
    NoiseConfig::new(Identity::generate(), network)
        .with_keys(keys.iter().map(|k| (*k).clone()).collect())
}

/// Runs a whole handshake; the sessions of dialler and acceptor.
fn connect(dialler: &NoiseConfig, acceptor: &NoiseConfig) -> Result<(Session, Session), String> {
    let (mut d, mut unit) = SecureHandshake::dial(dialler).map_err(|e| e.to_string())?;
    let mut a = SecureHandshake::accept(acceptor);
    loop {
        match a.on_unit(&unit).map_err(|e| format!("acceptor: {e}"))? {
            SecureStep::Send(answer) => match d.on_unit(&answer) {
                Ok(SecureStep::Send(next)) => unit = next,
                Ok(SecureStep::Done {
                    send: Some(finish),
                    session: at_dialler,
                }) => {
                    let SecureStep::Done {
                        session: at_acceptor,
                        ..
                    } = a.on_unit(&finish).map_err(|e| format!("acceptor: {e}"))?
                    else {
                        return Err("the acceptor refused the Finish".into());
                    };
                    return Ok((at_dialler, at_acceptor));
                }
                Ok(other) => return Err(format!("dialler: {other:?}")),
                Err(e) => return Err(format!("dialler: {e}")),
            },
            SecureStep::Refuse { why, .. } => return Err(format!("refused: {why}")),
            SecureStep::Done { .. } => return Err("the acceptor completed early".into()),
        }
    }
}

#[test]
fn nodes_sharing_a_key_complete_and_learn_each_others_static_key() {
    let k = NetworkKey::generate();
    let (a, b) = (config("prod", &[&k]), config("prod", &[&k]));
    let (at_a, at_b) = connect(&a, &b).unwrap();
    assert_eq!(at_a.remote_key(), b.identity().public_key());
    assert_eq!(at_b.remote_key(), a.identity().public_key());
    assert_eq!(at_a.key_id(), k.id());
    // Keyless nodes run the same handshake under the open key.
    let (x, y) = (config("prod", &[]), config("prod", &[]));
    assert_eq!(connect(&x, &y).unwrap().0.key_id(), NetworkKey::open().id());
}

#[test]
fn the_dialler_picks_the_cipher_and_the_acceptor_follows() {
    let k = NetworkKey::generate();
    let aes = config("prod", &[&k]).with_cipher(Cipher::AesGcm);
    let (at_d, at_a) = connect(&aes, &config("prod", &[&k])).unwrap();
    let (mut seal, _) = at_d.split();
    let (_, mut open) = at_a.split();
    let (mut records, mut plain) = (Vec::new(), BytesMut::new());
    seal.seal_frames(&[frame(100, 3)], &mut records, &mut Vec::new())
        .unwrap();
    open.open(&records[0], &mut plain).unwrap();
    assert_eq!(plain.len(), PREFIX_LEN + 100);
    // The cipher is in the clear header, bound by the prologue: changed on the way, it fails.
    let (_, init) = SecureHandshake::dial(&aes).unwrap();
    let mut tampered = init.to_vec();
    tampered[PREFIX_LEN + INIT_HEADER_LEN - 1] = 1;
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    assert!(matches!(
        a.on_unit(&tampered).unwrap(),
        SecureStep::Refuse { .. }
    ));
    tampered[PREFIX_LEN + INIT_HEADER_LEN - 1] = 9;
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    assert!(matches!(
        a.on_unit(&tampered),
        Err(NoiseError::Malformed(_))
    ));
}

#[test]
fn a_wrong_or_missing_key_is_refused_before_any_handshake_message() {
    let (k1, k2) = (NetworkKey::generate(), NetworkKey::generate());
    for (dialler, acceptor) in [
        (config("prod", &[&k2]), config("prod", &[&k1])),
        (config("prod", &[]), config("prod", &[&k1])),
        (config("prod", &[&k1]), config("prod", &[])),
    ] {
        let (mut d, init) = SecureHandshake::dial(&dialler).unwrap();
        let mut a = SecureHandshake::accept(&acceptor);
        assert!(!a.refused_a_key());
        let SecureStep::Send(refusal) = a.on_unit(&init).unwrap() else {
            panic!("an unknown key id is answered with a refusal");
        };
        assert_eq!(parse_unit(&refusal).unwrap().0, REFUSE);
        assert!(a.refused_a_key());
        let err = d.on_unit(&refusal).unwrap_err();
        assert!(
            matches!(err, NoiseError::Refused(Refusal::UnknownKey)),
            "{err}"
        );
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::Unauthorized
        );
    }
}

#[test]
fn another_network_or_a_changed_header_fails_the_first_message() {
    let k = NetworkKey::generate();
    // Another network name: the prologues differ.
    let (mut d, init) = SecureHandshake::dial(&config("staging", &[&k])).unwrap();
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    let SecureStep::Refuse { send, .. } = a.on_unit(&init).unwrap() else {
        panic!("another network is refused");
    };
    assert!(matches!(
        d.on_unit(&send).unwrap_err(),
        NoiseError::Refused(Refusal::Unauthorized)
    ));
    assert!(a.is_over());
    // A version range changed on the way (a downgrade): the same.
    let (_, init) = SecureHandshake::dial(&config("prod", &[&k])).unwrap();
    let mut tampered = init.to_vec();
    tampered[PREFIX_LEN + 13..PREFIX_LEN + 15].copy_from_slice(&0u16.to_be_bytes());
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    assert!(matches!(
        a.on_unit(&tampered).unwrap(),
        SecureStep::Refuse { .. }
    ));
    // Any bit of the Noise message flipped: the same.
    let mut flipped = init.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    assert!(matches!(
        a.on_unit(&flipped).unwrap(),
        SecureStep::Refuse { .. }
    ));
}

#[test]
fn a_dialler_rotating_keys_finds_the_one_the_acceptor_has() {
    let (k1, k2) = (NetworkKey::generate(), NetworkKey::generate());
    let both = config("prod", &[&k2, &k1]);
    let (at_d, _) = connect(&both, &config("prod", &[&k1])).unwrap();
    assert_eq!(at_d.key_id(), k1.id());
    let (at_d, _) = connect(&both, &config("prod", &[&k2])).unwrap();
    assert_eq!(at_d.key_id(), k2.id());
    let (at_d, _) = connect(&config("prod", &[&k1]), &config("prod", &[&k2, &k1])).unwrap();
    assert_eq!(at_d.key_id(), k1.id());
    let err = connect(&config("prod", &[&k1]), &config("prod", &[&k2])).unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn pinned_peers_only() {
    let k = NetworkKey::generate();
    let (a, b, c) = (
        config("prod", &[&k]),
        config("prod", &[&k]),
        config("prod", &[&k]),
    );
    let pin_b = |cfg: &NoiseConfig| {
        cfg.clone()
            .with_allowed(Some(vec![b.identity().public_key()]))
    };
    connect(&pin_b(&a), &b).unwrap();
    connect(&b, &pin_b(&a)).unwrap();
    // The dialler meets a key it does not allow.
    let err = connect(&pin_b(&a), &c).unwrap_err();
    assert!(err.contains("not in this node's allowed peers"), "{err}");
    // The acceptor refuses a dialler it does not allow, after its last message.
    let err = connect(&c, &pin_b(&a)).unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn a_replayed_first_message_never_completes() {
    let k = NetworkKey::generate();
    let (a, b) = (config("prod", &[&k]), config("prod", &[&k]));
    let (mut d, init) = SecureHandshake::dial(&a).unwrap();
    let mut real = SecureHandshake::accept(&b);
    let SecureStep::Send(response) = real.on_unit(&init).unwrap() else {
        panic!()
    };
    let SecureStep::Done {
        send: Some(finish), ..
    } = d.on_unit(&response).unwrap()
    else {
        panic!()
    };
    // An eavesdropper replays the Init to the same node, then the real Finish.
    let mut replayed = SecureHandshake::accept(&b);
    assert!(matches!(
        replayed.on_unit(&init).unwrap(),
        SecureStep::Send(_)
    ));
    assert!(matches!(
        replayed.on_unit(&finish).unwrap(),
        SecureStep::Refuse { .. }
    ));
    assert!(replayed.is_over());
    assert!(matches!(
        replayed.on_unit(&finish),
        Err(NoiseError::Finished)
    ));
}

#[test]
fn garbage_is_malformed_and_an_endless_stream_of_unknown_keys_ends() {
    let k = NetworkKey::generate();
    let mut a = SecureHandshake::accept(&config("prod", &[&k]));
    for bad in [&b""[..], b"\0\0\0\x05hello", b"\0\0\0\x0aMBN1\x03xxxxx"] {
        let mut a = SecureHandshake::accept(&config("prod", &[&k]));
        assert!(matches!(a.on_unit(bad), Err(NoiseError::Malformed(_))));
    }
    let other = NetworkKey::generate();
    let (_, init) = SecureHandshake::dial(&config("prod", &[&other])).unwrap();
    let mut answered = 0;
    while let Ok(SecureStep::Send(_)) = a.on_unit(&init) {
        answered += 1;
        assert!(answered < 100);
    }
    assert_eq!(answered, MAX_NETWORK_KEYS - 1);
}

fn frame(len: usize, fill: u8) -> Bytes {
    let mut f = BytesMut::with_capacity(PREFIX_LEN + len);
    f.put_u32(len as u32);
    f.put_bytes(fill, len);
    f.freeze()
}

fn sessions() -> (Sealer, Opener) {
    let k = NetworkKey::generate();
    let (at_a, at_b) = connect(&config("prod", &[&k]), &config("prod", &[&k])).unwrap();
    (at_a.split().0, at_b.split().1)
}

#[test]
fn records_carry_any_mix_of_frames_in_order() {
    let (mut seal, mut open) = sessions();
    let frames: Vec<Bytes> = [
        10,
        64,
        1,
        MAX_PLAIN - 4,
        MAX_PLAIN,
        3 * MAX_PLAIN + 7,
        20,
        0,
    ]
    .iter()
    .enumerate()
    .map(|(i, &len)| frame(len, i as u8))
    .collect();
    let (mut records, mut ends) = (Vec::new(), Vec::new());
    seal.seal_frames(&frames, &mut records, &mut ends).unwrap();
    assert_eq!(ends.len(), frames.len());
    assert_eq!(*ends.last().unwrap(), records.len());
    assert!(ends.windows(2).all(|w| w[0] <= w[1]));
    let mut plain = BytesMut::new();
    for (n, record) in records.iter().enumerate() {
        assert!(record.len() <= PREFIX_LEN + MAX_RECORD);
        open.open(record, &mut plain).unwrap();
        // Every frame whose `end` is this record is whole now.
        let whole: usize = frames
            .iter()
            .zip(&ends)
            .filter(|(_, &e)| e <= n + 1)
            .map(|(f, _)| f.len())
            .sum();
        assert!(plain.len() >= whole);
    }
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(&plain[..], &joined[..]);
    assert_eq!(seal.sealed(), records.len() as u64);
}

#[test]
fn a_lone_frame_sealed_alone_opens_like_one_of_a_batch() {
    let (mut seal, mut open) = sessions();
    let lone = seal.seal_frame(&frame(30, 1)).unwrap();
    let (mut records, mut ends) = (Vec::new(), Vec::new());
    seal.seal_frames(&[frame(30, 2)], &mut records, &mut ends)
        .unwrap();
    let mut plain = BytesMut::new();
    open.open(&lone, &mut plain).unwrap();
    open.open(&records[0], &mut plain).unwrap();
    assert_eq!(
        &plain[..],
        &[&frame(30, 1)[..], &frame(30, 2)[..]].concat()[..]
    );
    assert!(seal.seal_frame(&vec![0; MAX_PLAIN + 1]).is_err());
}

#[test]
fn a_changed_replayed_reordered_or_cut_record_fails() {
    let (mut seal, mut open) = sessions();
    let (mut records, mut ends) = (Vec::new(), Vec::new());
    for i in 0..3 {
        seal.seal_frames(&[frame(100, i)], &mut records, &mut ends)
            .unwrap();
    }
    let mut plain = BytesMut::new();
    open.open(&records[0], &mut plain).unwrap();
    let before = plain.len();
    let mut flipped = records[1].to_vec();
    flipped[PREFIX_LEN + 5] ^= 0x40;
    let cut = &records[1][..records[1].len() - 1];
    for bad in [
        &records[0][..],
        &records[2][..],
        &flipped[..],
        cut,
        &records[1][..3],
    ] {
        assert!(open.open(bad, &mut plain).is_err());
        assert_eq!(plain.len(), before, "nothing of a failed record is kept");
    }
    open.open(&records[1], &mut plain).unwrap();
}
