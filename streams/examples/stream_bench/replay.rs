//! Replay: `Log::read_bytes` from offset 0 to the end against a raw sequential read of the same
//! segment files, then a bus `Reader` over TCP loopback.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meshbus_streams::{
    FsyncPolicy, Log, LogConfig, NewRecord, StreamConfig, StreamsBuilderExt, StreamsExt,
};

use crate::{bodies, bounded, client_of, listening, mb_per_sec, node, per_sec, runtime};

/// Rounds of each measurement, interleaved.
const ROUNDS: usize = 3;
/// Bytes a fetch or a log read may gather (the host's own cap per fetch).
const MAX_BYTES: usize = 4 << 20;

/// Writes `n` records of `body` bytes (256 per append, 16 appends in flight), as the host
/// stores an event: with its name in the `$event` header.
pub(crate) async fn write(dir: &Path, stream: &str, body: usize, n: u64) {
    let log = Log::open(dir, LogConfig::new(stream).fsync(FsyncPolicy::Never))
        .await
        .expect("open");
    let pool = bodies(body, 4096);
    let mut pending = std::collections::VecDeque::new();
    for first in (0..n).step_by(256) {
        if pending.len() == 16 {
            if let Some(f) = pending.pop_front() {
                let done: meshbus_streams::Result<_> = f.await;
                done.expect("append");
            }
        }
        let records = (first..(first + 256).min(n))
            .map(|k| {
                NewRecord::new(k, pool[k as usize % pool.len()].clone())
                    .header(crate::EVENT_HEADER, "bench.blob")
            })
            .collect();
        pending.push_back(Box::pin(log.append(records)));
    }
    for f in pending {
        let done: meshbus_streams::Result<_> = f.await;
        done.expect("append");
    }
    log.close().await.expect("close");
}

/// Reads the segment files one after the other in 1 MiB chunks, parsing nothing.
fn raw_read(files: &[PathBuf]) -> (Duration, u64) {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let start = Instant::now();
    for path in files {
        let mut f = File::open(path).expect("open segment");
        loop {
            let got = f.read(&mut buf).expect("read segment");
            if got == 0 {
                break;
            }
            total += got as u64;
        }
    }
    (start.elapsed(), total)
}

/// A new `Log` on `dir` (its cache empty), read from 0 to the end with `read_bytes` of up to
/// `batch` records; the open is not timed.
async fn log_read(dir: &Path, batch: usize) -> (Duration, u64, u64) {
    let log = Log::open(dir, LogConfig::new("replay").fsync(FsyncPolicy::Never))
        .await
        .expect("open");
    let end = log.info().next_offset;
    let (mut from, mut records, mut bytes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while from < end {
        let got = log.read_bytes(from, batch, MAX_BYTES).await.expect("read");
        let Some(last) = got.last() else { break };
        from = last.offset + 1;
        records += got.len() as u64;
        bytes += got.iter().map(|r| r.body.len() as u64).sum::<u64>();
    }
    let elapsed = start.elapsed();
    log.close().await.expect("close");
    (elapsed, records, bytes)
}

/// Drops the page cache of `files` (written back first), with `sync` and `dd iflag=nocache`
/// (posix_fadvise DONTNEED on these files only). Returns whether it worked.
fn drop_cache(files: &[PathBuf]) -> bool {
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    files.iter().all(|f| {
        ok(Command::new("sync").arg(f))
            && ok(Command::new("dd").arg(format!("if={}", f.display())).args([
                "iflag=nocache",
                "count=0",
                "status=none",
            ]))
    })
}

/// A host of the stream in `dir` and a client over TCP; the client's `Reader` (raw records,
/// `batch` per fetch) reads from the start to the end.
async fn bus_read(dir: &Path, n: u64, batch: u32) -> (Duration, u64, u64) {
    let host = node("host")
        .stream(
            StreamConfig::new("replay")
                .dir(dir)
                .fsync(FsyncPolicy::Never),
        )
        .start()
        .await
        .expect("host starts");
    let client = client_of(&listening(&host), "replay").await;
    let mut reader = client.streams().read_raw("replay").batch(batch);
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    while records < n && Instant::now() < deadline {
        let record = bounded("a record", reader.next())
            .await
            .expect("the reader goes on")
            .expect("a record");
        records += 1;
        bytes += record.body.len() as u64;
    }
    let elapsed = start.elapsed();
    drop(reader);
    let _ = client.shutdown().await;
    let _ = host.shutdown().await;
    (elapsed, records, bytes)
}

/// `log`: the `Log` replay rows (warm and dropped page cache); `bus`: the reader over TCP.
pub(crate) fn run(log: bool, bus: bool) {
    let rt = runtime();
    for (body, n) in [(64usize, 1_000_000u64), (1024, 200_000)] {
        let dir = crate::temp_dir(&format!("replay-{body}"));
        rt.block_on(write(&dir, "replay", body, n));
        let files = crate::segment_files(&dir);
        let file_bytes = crate::segment_bytes(&dir);
        println!(
            "replay body={body} B: {n} records, {} segment files, {:.1} MB",
            files.len(),
            file_bytes as f64 / 1e6
        );
        // Warm: the files were just written, so the page cache holds them (for both sides).
        for round in (1..=ROUNDS).filter(|_| log) {
            let (t_raw, raw_bytes) = raw_read(&files);
            assert_eq!(raw_bytes, file_bytes);
            for batch in [256usize, 4096] {
                let (t_log, records, _) = rt.block_on(log_read(&dir, batch));
                assert_eq!(records, n, "the log replays every record");
                println!(
                    "replay body={body:>4} B page-cache=warm round={round} batch={batch:>4}: log {:>9.0} rec/s {:>7.1} MB/s (files), raw read {:>7.1} MB/s, log/raw {:.2}",
                    per_sec(records, t_log),
                    mb_per_sec(file_bytes, t_log),
                    mb_per_sec(file_bytes, t_raw),
                    t_raw.as_secs_f64() / t_log.as_secs_f64(),
                );
            }
        }
        // Cold: these files' pages dropped before each side reads (a real disk read).
        if !log {
        } else if drop_cache(&files) {
            let (t_raw, _) = raw_read(&files);
            drop_cache(&files);
            let (t_log, records, _) = rt.block_on(log_read(&dir, 4096));
            println!(
                "replay body={body:>4} B page-cache=dropped round=1 batch=4096: log {:>9.0} rec/s {:>7.1} MB/s (files), raw read {:>7.1} MB/s, log/raw {:.2}",
                per_sec(records, t_log),
                mb_per_sec(file_bytes, t_log),
                mb_per_sec(file_bytes, t_raw),
                t_raw.as_secs_f64() / t_log.as_secs_f64(),
            );
        } else {
            println!("replay body={body} B: could not drop the page cache (sync/dd); no cold row");
        }
        // Through the bus: a reader on a client node, the host in this process (another Bus).
        for round in (1..=ROUNDS).filter(|_| bus) {
            let (t_raw, _) = raw_read(&files);
            let batch = meshbus_streams::DEFAULT_BATCH;
            let (t_bus, records, body_bytes) = rt.block_on(bus_read(&dir, n, batch));
            println!(
                "replay body={body:>4} B bus over TCP round={round} batch={batch}: reader {:>9.0} rec/s {:>7.1} MB/s (bodies) {:>7.1} MB/s (files){}; raw read {:>7.1} MB/s; bus/raw {:.2}",
                per_sec(records, t_bus),
                mb_per_sec(body_bytes, t_bus),
                mb_per_sec(file_bytes, t_bus),
                if records < n { " NOT FINISHED in 120 s" } else { "" },
                mb_per_sec(file_bytes, t_raw),
                t_raw.as_secs_f64() / t_bus.as_secs_f64(),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
