//! Host memory while a slow reader replays a 1 GiB stream: the host runs in a child process
//! (this program with `host memory <dir>`), whose VmRSS the parent samples while its reader reads.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meshbus_streams::StreamsExt;

use crate::{bounded, client_of, rss_of, runtime};

/// Records of 1 KiB: 1 GiB of bodies.
const RECORDS: u64 = 1 << 20;
const BODY: usize = 1024;
/// Records the reader asks for per fetch (the reader's default).
const BATCH: u32 = 256;
/// The reader sleeps this long after each batch of records.
const NAP: Duration = Duration::from_millis(5);
/// The reader stops after this long, finished or not.
const CAP: Duration = Duration::from_secs(120);
/// Free space needed in the temporary directory before 1 GiB is written.
const NEED_FREE: u64 = 4 << 30;

/// Bytes free in the file system of `dir`, from `df -Pk`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let kb: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 20 ms on a thread of its own until stopped: the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_of(&pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub(crate) fn run() {
    let dir = crate::temp_dir("memory");
    let free = free_bytes(&dir).unwrap_or(0);
    if free < NEED_FREE {
        println!(
            "memory: only {:.1} GiB free in {}; skipped (needs 4 GiB)",
            free as f64 / (1u64 << 30) as f64,
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let rt = runtime();
    let t = Instant::now();
    rt.block_on(crate::replay::write(&dir, "big", BODY, RECORDS));
    let file_bytes = crate::segment_bytes(&dir);
    println!(
        "memory: wrote {RECORDS} records of {BODY} B ({:.2} GiB of segment files, {} files) in {:.1} s; {:.1} GiB were free",
        file_bytes as f64 / (1u64 << 30) as f64,
        crate::segment_files(&dir).len(),
        t.elapsed().as_secs_f64(),
        free as f64 / (1u64 << 30) as f64,
    );

    let host = crate::child::HostChild::spawn("memory", &dir);
    let (addr, pid) = (host.addr.clone(), host.pid.clone());

    let (rss_start, peak, rss_end, read, elapsed, client_rss) = rt.block_on(async {
        let client = client_of(&addr, "big").await;
        let rss_start = rss_of(&pid);
        let client_start = rss_of("self");
        let sampler = Sampler::start(pid.clone());
        let mut reader = client.streams().read_raw("big").batch(BATCH);
        let mut read = 0u64;
        let start = Instant::now();
        while read < RECORDS && start.elapsed() < CAP {
            let record = bounded("a record", reader.next())
                .await
                .expect("the reader goes on")
                .expect("a record");
            assert_eq!(record.offset, read, "records come in order");
            read += 1;
            if read % u64::from(BATCH) == 0 {
                tokio::time::sleep(NAP).await;
            }
            if read % (RECORDS / 8) == 0 {
                println!(
                    "memory: {:>4} MiB read after {:>5.1} s, host RSS {:.1} MiB",
                    (read * BODY as u64) >> 20,
                    start.elapsed().as_secs_f64(),
                    mib(rss_of(&pid))
                );
            }
        }
        let elapsed = start.elapsed();
        drop(reader);
        let peak = sampler.finish();
        let rss_end = rss_of(&pid);
        let client_rss = (client_start, rss_of("self"));
        let _ = client.shutdown().await;
        (rss_start, peak, rss_end, read, elapsed, client_rss)
    });
    host.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let growth = peak.saturating_sub(rss_start);
    println!(
        "memory: slow reader (batch {BATCH}, {} ms nap per batch) read {read} of {RECORDS} records ({:.2} GiB) in {:.1} s{} = {:.1} MB/s; host RSS {:.1} MiB before, peak {:.1} MiB, {:.1} MiB at the end: growth {:.1} MiB (target <= 64 MiB: {}); client process RSS {:.1} -> {:.1} MiB",
        NAP.as_millis(),
        (read * BODY as u64) as f64 / (1u64 << 30) as f64,
        elapsed.as_secs_f64(),
        if read < RECORDS { " (NOT FINISHED: capped)" } else { "" },
        (read * BODY as u64) as f64 / elapsed.as_secs_f64() / 1e6,
        mib(rss_start),
        mib(peak),
        mib(rss_end),
        mib(growth),
        if growth <= 64 << 20 { "met" } else { "NOT met" },
        mib(client_rss.0),
        mib(client_rss.1),
    );
}
