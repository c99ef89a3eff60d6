//! Appends with `Never` against a raw buffered write of the same framed bytes, and `Always`
//! with 64 concurrent appenders against a raw write + fdatasync loop, in the same run.
//!
//! `cargo run --release -p meshbus-streams --example log_bench -- [never] [always]` (no case:
//! both). Replay is measured by the `stream_bench` example (`replay` / `replay-log`).
//!
//! Bounded: a fixed number of records per case; files go to a temporary directory (removed).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus_streams::{FsStorage, FsyncPolicy, Log, LogConfig, NewRecord, Storage, StorageFile};

/// `FsStorage` counting fsyncs.
#[derive(Debug)]
struct Counting {
    inner: FsStorage,
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn StorageFile>,
    syncs: Arc<AtomicU64>,
}

impl Storage for Counting {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(name, create)?;
        Ok(Arc::new(CountingFile {
            inner,
            syncs: self.syncs.clone(),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
}

impl StorageFile for CountingFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.inner.append(buf)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(pos, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Appends `n` records of `body` bytes, `per` records per append call, with up to `window`
/// appends in flight from one task; returns the elapsed time and the segment's bytes.
async fn log_appends(
    dir: &Path,
    body: usize,
    n: u64,
    per: u64,
    window: usize,
) -> (Duration, Vec<u8>) {
    let config = LogConfig::new("bench")
        .fsync(FsyncPolicy::Never)
        .segment_bytes(1 << 30);
    let log = Log::open(dir, config).await.expect("open");
    let payload = bytes::Bytes::from(vec![0x5au8; body]);
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for i in (0..n).step_by(per as usize) {
        if pending.len() == window {
            if let Some(f) = pending.pop_front() {
                let appended: meshbus_streams::Result<_> = f.await;
                appended.expect("append");
            }
        }
        let records = (i..(i + per).min(n))
            .map(|k| NewRecord::new(k, payload.clone()))
            .collect();
        pending.push_back(Box::pin(log.append(records)));
    }
    for f in pending {
        let appended: meshbus_streams::Result<_> = f.await;
        appended.expect("append");
    }
    let elapsed = start.elapsed();
    log.close().await.expect("close");
    let mut bytes = Vec::new();
    File::open(dir.join("00000000000000000000.log"))
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read segment");
    (elapsed, bytes)
}

/// Writes `bytes` through a `BufWriter`, one `write_all` per record frame of `frame` bytes.
fn raw_buffered(path: &Path, bytes: &[u8], frame: usize) -> Duration {
    let start = Instant::now();
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("raw");
    let mut w = BufWriter::with_capacity(64 << 10, file);
    for chunk in bytes.chunks(frame) {
        w.write_all(chunk).expect("write");
    }
    w.flush().expect("flush");
    start.elapsed()
}

async fn always_concurrent(dir: &Path, appenders: u64, per: u64) -> (Duration, u64) {
    let syncs = Arc::new(AtomicU64::new(0));
    let storage = Counting {
        inner: FsStorage::new(dir).expect("dir"),
        syncs: syncs.clone(),
    };
    let config = LogConfig::new("bench").fsync(FsyncPolicy::Always);
    let log = Log::open_with(Arc::new(storage), config)
        .await
        .expect("open");
    let before = syncs.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per {
                let r = NewRecord::new(t * per + k, vec![0x33u8; 64]);
                log.append(vec![r]).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed();
    let n = syncs.load(Ordering::Relaxed) - before;
    log.close().await.expect("close");
    (elapsed, n)
}

/// One 114-byte write (a framed 64 B record) and one fdatasync per record.
fn raw_fdatasync(path: &Path, n: u64) -> Duration {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("raw");
    let rec = [0x33u8; 64 + 36 + 14];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&rec).expect("write");
        f.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(bad) = args.iter().find(|a| *a != "never" && *a != "always") {
        eprintln!("log_bench: unknown case `{bad}` (never, always)");
        std::process::exit(2);
    }
    let case = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let root = std::env::temp_dir().join(format!("meshbus-log-bench-{}", std::process::id()));
    for (body, n) in [(64usize, 300_000u64), (1024, 100_000)]
        .into_iter()
        .filter(|_| case("never"))
    {
        for (per, window) in [(1u64, 1usize), (1, 256), (64, 1), (64, 16)] {
            let dir = root.join(format!("never-{body}-{per}-{window}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let (t_log, bytes) = rt.block_on(log_appends(&dir, body, n, per, window));
            // The baseline writes the same bytes in pieces of one record's share of them.
            let frame = (bytes.len() - 16) / n as usize;
            let t_raw = raw_buffered(&root.join("raw.bin"), &bytes, frame);
            println!(
                "never body={body:>4} B records/append={per:>2} in-flight={window:>3}: log {:>9.0} rec/s, raw buffered {:>9.0} rec/s, log/raw {:.2}",
                per_sec(n, t_log),
                per_sec(n, t_raw),
                t_raw.as_secs_f64() / t_log.as_secs_f64(),
            );
        }
    }
    if !case("always") {
        let _ = std::fs::remove_dir_all(&root);
        return;
    }
    let (appenders, per) = (64u64, 40u64);
    let dir = root.join("always");
    std::fs::create_dir_all(&dir).expect("dir");
    let (t_log, syncs) = rt.block_on(always_concurrent(&dir, appenders, per));
    let n = appenders * per;
    let raw_n = 400;
    let t_raw = raw_fdatasync(&root.join("raw-sync.bin"), raw_n);
    println!(
        "always {appenders} appenders x {per} (64 B): log {:>8.0} rec/s, {syncs} fsyncs = {:.1} records per fsync; raw write+fdatasync loop {:>8.0} rec/s; log/raw {:.2}",
        per_sec(n, t_log),
        n as f64 / syncs.max(1) as f64,
        per_sec(raw_n, t_raw),
        per_sec(n, t_log) / per_sec(raw_n, t_raw)
    );
    let _ = std::fs::remove_dir_all(&root);
}
