//! Feeds arbitrary frames to an accepting and a dialling `Handshake`: neither may panic.
//!
//! The input is used twice: decoded as a stream of frames by the handshake codec (so the real
//! byte path is exercised), and read as one frame built directly from a kind byte and a body
//! (so MessagePack bodies of every handshake message are reached without the fuzzer having to
//! find a valid frame header first). A completed handshake's result is put through
//! arbitration and its codecs.

#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use meshbus_core::proto::handshake::{
    arbitrate, ConnectionKey, Direction, Handshake, LocalNode, Step,
};
use meshbus_core::wire::control::PeerIdentity;
use meshbus_core::wire::{Frame, FrameCodec, FrameKind};

fn local() -> LocalNode {
    LocalNode::new(PeerIdentity {
        node_id: 7,
        incarnation: 3,
        name: "fuzz".into(),
        network: "default".into(),
        cluster: "c".into(),
        host_id: "h".into(),
        addresses: vec!["tcp://127.0.0.1:1".into()],
        public_key: None,
    })
}

fn feed(local: &LocalNode, t0: Instant, frames: &[Frame]) {
    let Ok((dialler, _hello)) = Handshake::dial(local, t0) else {
        panic!("the fuzz node's configuration is valid");
    };
    let Ok(acceptor) = Handshake::accept(local, t0) else {
        panic!("the fuzz node's configuration is valid");
    };
    // A wall clock, so the incarnation bound is reached too.
    let (mut dialler, mut acceptor) = (
        dialler.with_wall_clock(1_700_000_000_000_000),
        acceptor.with_wall_clock(1_700_000_000_000_000),
    );
    for (i, frame) in frames.iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 700);
        for h in [&mut dialler, &mut acceptor] {
            let _ = h.poll_timeout(now);
            // An established connection to every node, so the acceptor arbitrates each Hello.
            let existing = |_| {
                Some(ConnectionKey {
                    direction: Direction::Outbound,
                    peer_incarnation: i as u64,
                })
            };
            if let Ok(Step::Established { established, .. }) =
                h.on_frame_with(frame.clone(), now, existing)
            {
                let _ = established.send_codec();
                let _ = established.receive_codec();
                let key = established.key();
                let _ = arbitrate(7, established.peer.node_id, key, key);
            }
            let _ = h.deadline();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let local = local();
    let t0 = Instant::now();

    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        frames.push(frame);
    }
    feed(&local, t0, &frames);

    if let Some((&kind, body)) = data.split_first() {
        // Map the byte onto the three handshake kinds most of the time, any kind otherwise.
        let kind = match kind % 4 {
            0 => FrameKind::Hello,
            1 => FrameKind::Welcome,
            2 => FrameKind::Reject,
            _ => FrameKind::ALL[usize::from(kind) % FrameKind::ALL.len()],
        };
        feed(
            &local,
            t0,
            &[Frame::new(kind, Bytes::copy_from_slice(body))],
        );
    }
});
