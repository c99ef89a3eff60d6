//! Byte payloads in a message body: a `Vec<u8>` field (a MessagePack array of integers)
//! against a `meshbus::Binary` field (one `bin` value), encoded and decoded as the bus does.
//!
//! `cargo bench -p meshbus-bench --bench binary_body`

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshbus::Binary;
use meshbus_core::wire::body::{decode_body, encode_body};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct AsVec {
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct AsBinary {
    data: Binary,
}

/// Bytes over the whole range: half of them take two bytes as MessagePack integers.
fn payload(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn bodies(c: &mut Criterion) {
    for len in [64usize, 1024, 64 * 1024] {
        let data = payload(len);
        let vec = AsVec { data: data.clone() };
        let bin = AsBinary {
            data: Binary::from(data),
        };
        let vec_body = encode_body(&vec).unwrap();
        let bin_body = encode_body(&bin).unwrap();
        println!(
            "binary_body/{len}: body of Vec<u8> {} bytes, of Binary {} bytes",
            vec_body.len(),
            bin_body.len()
        );

        let mut g = c.benchmark_group("binary_body");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("encode_vec", len), &vec, |b, m| {
            b.iter(|| encode_body(black_box(m)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("encode_binary", len), &bin, |b, m| {
            b.iter(|| encode_body(black_box(m)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decode_vec", len), &vec_body, |b, body| {
            b.iter(|| decode_body::<AsVec>(black_box(body)).unwrap())
        });
        g.bench_with_input(
            BenchmarkId::new("decode_binary", len),
            &bin_body,
            |b, body| b.iter(|| decode_body::<AsBinary>(black_box(body)).unwrap()),
        );
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bodies
}
criterion_main!(benches);
