//! An in-memory storage that injects faults: power cuts, a full disk, flipped bytes.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Storage, StorageFile};

/// In-memory [`Storage`] for tests, with faults on demand.
///
/// Each file keeps what was written and what was last synced. [`power_cut`](Self::power_cut)
/// throws away everything not synced (keeping a random part of the unsynced tail, as a torn
/// write would) and makes every open handle fail, like a machine that lost power: the log must
/// then be opened again. Created and removed names are durable at once.
///
/// Clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct FaultStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    gate: Condvar,
    syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Arc<Mutex<Data>>>,
    epoch: u64,
    space: Option<u64>,
    syncs_held: bool,
    syncs_waiting: u64,
}

#[derive(Debug, Default)]
struct Data {
    written: Vec<u8>,
    synced: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses everything not synced, keeping a random prefix (chosen by `seed`) of each file's
    /// unsynced appended tail; every handle opened before fails from now on.
    pub fn power_cut(&self, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut st = lock(&self.inner.state);
        st.epoch += 1;
        for data in st.files.values() {
            let mut d = lock(data);
            let Data { written, synced } = &mut *d;
            let keep = if written.len() > synced.len() && written.starts_with(synced) {
                rng.usize(0..=written.len() - synced.len())
            } else {
                0
            };
            let tail = written
                .get(synced.len()..synced.len() + keep)
                .unwrap_or(&[])
                .to_vec();
            *written = synced.clone();
            written.extend_from_slice(&tail);
            *synced = written.clone();
        }
    }

    /// Limits the total bytes of all files: appends beyond fail with `StorageFull` after
    /// writing what fits. `None` lifts the limit.
    pub fn set_space(&self, bytes: Option<u64>) {
        lock(&self.inner.state).space = bytes;
    }

    /// Flips the bits of `mask` in byte `pos` of file `name` (written and synced copies).
    /// Returns false if there is no such byte.
    pub fn flip(&self, name: &str, pos: u64, mask: u8) -> bool {
        let st = lock(&self.inner.state);
        let Some(data) = st.files.get(name) else {
            return false;
        };
        let mut guard = lock(data);
        let d = &mut *guard;
        let Ok(p) = usize::try_from(pos) else {
            return false;
        };
        let mut hit = false;
        for buf in [&mut d.written, &mut d.synced] {
            if let Some(b) = buf.get_mut(p) {
                *b ^= mask;
                hit = true;
            }
        }
        hit
    }

    /// Cuts file `name` to `len` bytes, as if it were torn there (and durably so).
    pub fn tear(&self, name: &str, len: u64) {
        let st = lock(&self.inner.state);
        if let Some(data) = st.files.get(name) {
            let mut d = lock(data);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            d.written.truncate(len);
            d.synced.truncate(len);
        }
    }

    /// The length of file `name` (what was written), if it exists.
    pub fn file_len(&self, name: &str) -> Option<u64> {
        let st = lock(&self.inner.state);
        st.files.get(name).map(|d| lock(d).written.len() as u64)
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        let st = lock(&self.inner.state);
        st.files
            .values()
            .map(|d| lock(d).written.len() as u64)
            .sum()
    }

    /// Syncs done so far.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    /// While held, every sync blocks (before taking effect) until [`release_syncs`](Self::release_syncs).
    pub fn hold_syncs(&self) {
        lock(&self.inner.state).syncs_held = true;
    }

    /// Lets held syncs go on.
    pub fn release_syncs(&self) {
        lock(&self.inner.state).syncs_held = false;
        self.inner.gate.notify_all();
    }

    /// Blocks until `n` syncs are waiting at the hold; false if that takes longer than
    /// `limit` (a bound so that a broken test fails instead of hanging).
    pub fn wait_for_held_syncs(&self, n: u64, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut st = lock(&self.inner.state);
        while st.syncs_waiting < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .inner
                .gate
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Storage for FaultStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = lock(&self.inner.state);
        let epoch = st.epoch;
        let data = match st.files.get(name) {
            Some(d) => d.clone(),
            None if create => st.files.entry(name.to_owned()).or_default().clone(),
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(Arc::new(FaultFile {
            storage: self.clone(),
            data,
            epoch,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match lock(&self.inner.state).files.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.inner.state).files.keys().cloned().collect())
    }
}

#[derive(Debug)]
struct FaultFile {
    storage: FaultStorage,
    data: Arc<Mutex<Data>>,
    epoch: u64,
}

impl FaultFile {
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.storage.inner.state);
        if st.epoch == self.epoch {
            Ok(st)
        } else {
            Err(io::Error::other("power cut"))
        }
    }
}

impl StorageFile for FaultFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let st = self.live()?;
        let used: u64 = st
            .files
            .values()
            .filter(|d| !Arc::ptr_eq(d, &self.data))
            .map(|d| lock(d).written.len() as u64)
            .sum();
        let mut d = lock(&self.data);
        if let Some(space) = st.space {
            let room = space.saturating_sub(used + d.written.len() as u64);
            if (buf.len() as u64) > room {
                let fits = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
                d.written.extend_from_slice(&buf[..fits]);
                return Err(io::ErrorKind::StorageFull.into());
            }
        }
        d.written.extend_from_slice(buf);
        Ok(())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        // Reads work after a cut on purpose: a removed or old file's bytes stay readable
        // through an open handle, as on a real file system.
        let d = lock(&self.data);
        let start =
            usize::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = d
            .written
            .get(start..start.saturating_add(buf.len()))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.live()?;
        if st.syncs_held {
            st.syncs_waiting += 1;
            self.storage.inner.gate.notify_all();
            while st.syncs_held {
                st = self
                    .storage
                    .inner
                    .gate
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
            st.syncs_waiting -= 1;
            if st.epoch != self.epoch {
                return Err(io::Error::other("power cut"));
            }
        }
        let mut d = lock(&self.data);
        d.synced = d.written.clone();
        self.storage.inner.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let _st = self.live()?;
        let mut d = lock(&self.data);
        d.written
            .truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).written.len() as u64)
    }
}
