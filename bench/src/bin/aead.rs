//! `aead`: how fast ring seals and opens records of the sizes sealed links carry, with the
//! cipher links use (ChaCha20-Poly1305) and the one the issue names as an option (AES-256-GCM).
//! Issue 17's 1 KiB event target depends on it.
//!
//! ```sh
//! cargo run --release -p meshbus-bench --features trust --bin aead
//! ```
//!
//! Seal: `seal_in_place_separate_tag` over one buffer, a new nonce each time. Open: a copy of
//! one sealed record, then `open_in_place` on the copy (the reader owns its buffer). Best of 5
//! passes of about 200 MB each.

use std::time::Instant;

use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

const SIZES: [usize; 5] = [100, 1100, 4096, 16384, 65519];

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Nanoseconds per seal and per open of `size`-byte records, best of 5 passes.
fn measure(alg: &'static Algorithm, size: usize) -> Result<(f64, f64), String> {
    let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).map_err(|e| e.to_string())?);
    let n = (200_000_000 / (size + 200)).max(1000) as u64;
    let (mut seal, mut open) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let mut buf = vec![1u8; size];
        let t = Instant::now();
        for i in 0..n {
            let tag = key
                .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut buf)
                .map_err(|e| e.to_string())?;
            let _ = std::hint::black_box(tag);
        }
        seal = seal.min(t.elapsed().as_nanos() as f64 / n as f64);
        let mut record = vec![1u8; size];
        key.seal_in_place_append_tag(nonce(0), Aad::empty(), &mut record)
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        for _ in 0..n {
            let mut r = record.clone();
            let plain = key
                .open_in_place(nonce(0), Aad::empty(), &mut r)
                .map_err(|e| e.to_string())?;
            let _ = std::hint::black_box(plain);
        }
        open = open.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    Ok((seal, open))
}

fn main() -> Result<(), String> {
    println!("| cipher | record | seal | seal GB/s | open (with a copy) | open GB/s |");
    println!("|---|---|---|---|---|---|");
    for (name, alg) in [
        ("ChaCha20-Poly1305", &CHACHA20_POLY1305),
        ("AES-256-GCM", &AES_256_GCM),
    ] {
        for size in SIZES {
            let (seal, open) = measure(alg, size)?;
            println!(
                "| {name} | {size} B | {seal:.0} ns | {:.2} | {open:.0} ns | {:.2} |",
                size as f64 / seal,
                size as f64 / open
            );
        }
    }
    Ok(())
}
