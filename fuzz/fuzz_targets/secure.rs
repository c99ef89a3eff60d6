//! Feeds arbitrary units to an accepting and a dialling `SecureHandshake`, and arbitrary
//! records to the `Opener` of a real session: none may panic, and no garbage opens.
//!
//! The input is cut into units by its own length prefixes where it has them (so the real unit
//! path is exercised), and is also given whole, after a valid magic and a type byte taken from
//! its first byte (so the Noise messages are reached without the fuzzer finding the magic).

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshbus_core::proto::noise::{NoiseConfig, Opener, SecureHandshake, SecureStep};
use meshbus_core::trust::{Identity, NetworkKey};

fn config() -> &'static NoiseConfig {
    static CONFIG: OnceLock<NoiseConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        NoiseConfig::new(Identity::from_secret([7; 32]), "fuzz")
            .with_keys(vec![NetworkKey::from_bytes([1; 32])])
    })
}

/// A real session's opener: the acceptor's end of a completed handshake.
fn opener() -> Opener {
    let Ok((mut dialler, init)) = SecureHandshake::dial(config()) else {
        panic!("the fuzz configuration is valid");
    };
    let mut acceptor = SecureHandshake::accept(config());
    let Ok(SecureStep::Send(response)) = acceptor.on_unit(&init) else {
        panic!("the acceptor answers");
    };
    let Ok(SecureStep::Done {
        send: Some(finish), ..
    }) = dialler.on_unit(&response)
    else {
        panic!("the dialler completes");
    };
    let Ok(SecureStep::Done { session, .. }) = acceptor.on_unit(&finish) else {
        panic!("the acceptor completes");
    };
    session.split().1
}

fn units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(unit) = rest.get(..4 + len.min(1024)) else {
            break;
        };
        out.push(unit.to_vec());
        rest = &rest[unit.len()..];
    }
    out
}

fn feed(units: &[Vec<u8>]) {
    let Ok((mut dialler, _init)) = SecureHandshake::dial(config()) else {
        panic!("the fuzz configuration is valid");
    };
    let mut acceptor = SecureHandshake::accept(config());
    for unit in units {
        let _ = dialler.on_unit(unit);
        let _ = acceptor.on_unit(unit);
    }
}

fuzz_target!(|data: &[u8]| {
    feed(&units(data));
    if let Some((&kind, body)) = data.split_first() {
        let mut unit = Vec::with_capacity(9 + body.len());
        unit.extend_from_slice(&((5 + body.len()) as u32).to_be_bytes());
        unit.extend_from_slice(b"MBN1");
        unit.push(kind % 5);
        unit.extend_from_slice(body);
        feed(&[unit]);
    }
    let mut open = opener();
    let mut plain = BytesMut::new();
    for record in units(data) {
        // Nothing the fuzzer makes is a record of this session.
        assert!(open.open(&record, &mut plain).is_err());
        assert!(plain.is_empty());
    }
});
