//! Crash-safe storage of every durable consumer of one stream: a redb file beside the log.
//!
//! # Layout (format version 1)
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"version"` | `1` |
//! | `consumer_config` | name | [`ConsumerConfig`], MessagePack with field names |
//! | `consumer_state` | name | cursor and counters (floor, position, acked, delivered, redelivered, dead_lettered, gone), MessagePack with field names |
//! | `consumer_pending` | (name, offset) | delivery count (`u32`) |
//! | `consumer_acked` | (name, first offset) | end offset (exclusive) of a run of done offsets above the floor |
//!
//! A commit writes the consumer's one state row plus the pending and done-range rows that
//! changed, so its cost follows the change, not the number of pending records. Fields added
//! later to a MessagePack value take their default when an older file is read.
//!
//! Each [`commit`](ConsumerStore::commit) is one redb write transaction with redb's default
//! durability: when it returns, the changes are on stable storage, and a crash at any point
//! leaves either all of them or none.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableTable, TableDefinition};

use super::config::ConsumerConfig;
use super::state::{Change, ConsumerChanges, PersistedState, StateRow};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_config");
const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_state");
const PENDING: TableDefinition<(&str, u64), u32> = TableDefinition::new("consumer_pending");
const ACKED: TableDefinition<(&str, u64), u64> = TableDefinition::new("consumer_acked");

const VERSION: u64 = 1;

/// A failure of the consumer store; the message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// redb could not open, read or write the file.
    #[error("consumer store {}: {op}: {source}", path.display())]
    Db {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// redb's error (boxed: it is large, and errors are rare).
        #[source]
        source: Box<redb::Error>,
    },
    /// redb panicked (it asserts on some damaged files, a truncated one for instance). The
    /// store refuses every later call; reopen it to try again.
    #[error("consumer store {}: {op}: the database failed on this file ({message}); reopen it", path.display())]
    Failed {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The file opened but holds something this version cannot use.
    #[error("consumer store {}: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the consumer where there is one.
        what: String,
    },
}

impl StoreError {
    /// The crate's error for stream `stream`: a full disk is [`Error::DiskFull`](crate::Error::DiskFull),
    /// anything else an [`Error::Io`](crate::Error::Io) whose source is this error.
    pub(crate) fn into_error(self, stream: &str) -> crate::Error {
        let kind = match &self {
            StoreError::Db { source, .. } => match &**source {
                redb::Error::Io(e) => e.kind(),
                redb::Error::Corrupted(_) => io::ErrorKind::InvalidData,
                _ => io::ErrorKind::Other,
            },
            StoreError::Corrupt { .. } | StoreError::Failed { .. } => io::ErrorKind::InvalidData,
        };
        crate::Error::io(stream, io::Error::new(kind, self))
    }
}

/// One consumer as loaded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// Its name.
    pub(crate) name: String,
    /// Its configuration.
    pub(crate) config: ConsumerConfig,
    /// Its state, validated.
    pub(crate) state: PersistedState,
}

/// The durable consumers of one stream, in a redb file. Every method blocks on disk I/O:
/// call it from the blocking pool or a thread of its own.
#[derive(Debug)]
pub(crate) struct ConsumerStore {
    db: Database,
    path: PathBuf,
    /// Set once redb panicked: its in-memory state is then not to be trusted.
    failed: AtomicBool,
}

impl ConsumerStore {
    /// The store's file name in the stream's directory.
    pub(crate) const FILE_NAME: &'static str = "consumers.redb";

    /// Opens the store at `path`, creating it if it does not exist.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created, is not a redb file, is damaged, is open
    /// elsewhere, or was written by a newer format version.
    pub(crate) fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let opened = catch_unwind(AssertUnwindSafe(|| Database::create(&path)));
        let db = match opened {
            Ok(db) => db.map_err(|e| db_err(&path, "open", e))?,
            Err(panic) => return Err(failed(&path, "open", &*panic)),
        };
        let store = Self {
            db,
            path,
            failed: AtomicBool::new(false),
        };
        store.guard("open", || store.init())?;
        Ok(store)
    }

    /// Opens the store of the stream in directory `dir`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub(crate) fn open_in(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(dir.as_ref().join(Self::FILE_NAME))
    }

    /// The store's file.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err("open meta", e))?;
            let stored = meta
                .get("version")
                .map_err(|e| self.err("read version", e))?
                .map(|v| v.value());
            match stored {
                Some(v) if v > VERSION => {
                    return Err(self.corrupt(format!(
                        "format version {v} is newer than this build's {VERSION}"
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("version", VERSION)
                        .map_err(|e| self.err("write version", e))?;
                }
            }
            // Create every table now, so readers never meet a missing one.
            txn.open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            txn.open_table(STATES)
                .map_err(|e| self.err("open table", e))?;
            txn.open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            txn.open_table(ACKED)
                .map_err(|e| self.err("open table", e))?;
        }
        txn.commit().map_err(|e| self.err("commit", e))
    }

    /// Every stored consumer, by name, each validated.
    ///
    /// # Errors
    ///
    /// A read fails, or a consumer's stored values cannot be decoded or contradict each
    /// other (the error names the consumer).
    pub(crate) fn load_all(&self) -> Result<Vec<Loaded>, StoreError> {
        self.guard("load", || self.read_all())
    }

    fn read_all(&self) -> Result<Vec<Loaded>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let configs = txn
            .open_table(CONFIGS)
            .map_err(|e| self.err("open table", e))?;
        let states = txn
            .open_table(STATES)
            .map_err(|e| self.err("open table", e))?;
        let pending = txn
            .open_table(PENDING)
            .map_err(|e| self.err("open table", e))?;
        let acked = txn
            .open_table(ACKED)
            .map_err(|e| self.err("open table", e))?;
        let mut out = Vec::new();
        for entry in configs.iter().map_err(|e| self.err("read", e))? {
            let (name, config) = entry.map_err(|e| self.err("read", e))?;
            let name = name.value().to_owned();
            let config: ConsumerConfig = rmp_serde::from_slice(config.value())
                .map_err(|e| self.corrupt(format!("consumer {name}: configuration: {e}")))?;
            let row: StateRow = match states.get(name.as_str()).map_err(|e| self.err("read", e))? {
                Some(v) => rmp_serde::from_slice(v.value())
                    .map_err(|e| self.corrupt(format!("consumer {name}: state: {e}")))?,
                None => return Err(self.corrupt(format!("consumer {name}: no state row"))),
            };
            let range = (name.as_str(), 0)..=(name.as_str(), u64::MAX);
            let mut state = PersistedState {
                row,
                ..PersistedState::default()
            };
            for e in pending
                .range(range.clone())
                .map_err(|e| self.err("read", e))?
            {
                let (k, v) = e.map_err(|e| self.err("read", e))?;
                state.pending.push((k.value().1, v.value()));
            }
            for e in acked.range(range).map_err(|e| self.err("read", e))? {
                let (k, v) = e.map_err(|e| self.err("read", e))?;
                state.acked.push((k.value().1, v.value()));
            }
            state
                .validate()
                .map_err(|what| self.corrupt(format!("consumer {name}: {what}")))?;
            out.push(Loaded {
                name,
                config,
                state,
            });
        }
        Ok(out)
    }

    /// Writes `changes` in one transaction: all or nothing, on stable storage when this
    /// returns. Group many consumers' changes (and many acks) into one call to share the
    /// fsync.
    ///
    /// # Errors
    ///
    /// The transaction fails; nothing of it was stored.
    pub(crate) fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.guard("commit", || self.write_all(changes))
    }

    fn write_all(&self, changes: &[Change]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut configs = txn
                .open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            let mut states = txn
                .open_table(STATES)
                .map_err(|e| self.err("open table", e))?;
            let mut pending = txn
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            let mut acked = txn
                .open_table(ACKED)
                .map_err(|e| self.err("open table", e))?;
            for change in changes {
                match change {
                    Change::Update(c) => {
                        self.write(c, &mut configs, &mut states, &mut pending, &mut acked)?;
                    }
                    Change::Delete(name) => {
                        configs
                            .remove(name.as_str())
                            .map_err(|e| self.err("delete", e))?;
                        states
                            .remove(name.as_str())
                            .map_err(|e| self.err("delete", e))?;
                        clear(&mut pending, name).map_err(|e| self.err("delete", e))?;
                        clear(&mut acked, name).map_err(|e| self.err("delete", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err("commit", e))
    }

    /// Deletes consumer `name` and everything stored for it; `false` if there was none.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.guard("delete", || {
            let txn = self.db.begin_read().map_err(|e| self.err("begin", e))?;
            let configs = txn
                .open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            let found = configs.get(name).map_err(|e| self.err("read", e))?;
            Ok(found.is_some())
        })?;
        if existed {
            self.commit(&[Change::Delete(name.to_owned())])?;
        }
        Ok(existed)
    }

    fn write(
        &self,
        c: &ConsumerChanges,
        configs: &mut redb::Table<'_, &'static str, &'static [u8]>,
        states: &mut redb::Table<'_, &'static str, &'static [u8]>,
        pending: &mut redb::Table<'_, (&'static str, u64), u32>,
        acked: &mut redb::Table<'_, (&'static str, u64), u64>,
    ) -> Result<(), StoreError> {
        let name = c.name.as_str();
        if let Some(config) = &c.config {
            let bytes = rmp_serde::to_vec_named(config)
                .map_err(|e| self.corrupt(format!("consumer {name}: encode configuration: {e}")))?;
            configs
                .insert(name, bytes.as_slice())
                .map_err(|e| self.err("write", e))?;
        }
        let row = rmp_serde::to_vec_named(&c.row)
            .map_err(|e| self.corrupt(format!("consumer {name}: encode state: {e}")))?;
        states
            .insert(name, row.as_slice())
            .map_err(|e| self.err("write", e))?;
        if c.clear {
            clear(pending, name).map_err(|e| self.err("write", e))?;
            clear(acked, name).map_err(|e| self.err("write", e))?;
        }
        for &(offset, deliveries) in &c.pending {
            match deliveries {
                Some(d) => pending.insert((name, offset), d).map(drop),
                None => pending.remove((name, offset)).map(drop),
            }
            .map_err(|e| self.err("write", e))?;
        }
        for &(start, end) in &c.acked {
            match end {
                Some(end) => acked.insert((name, start), end).map(drop),
                None => acked.remove((name, start)).map(drop),
            }
            .map_err(|e| self.err("write", e))?;
        }
        Ok(())
    }

    /// Runs `f` unless an earlier call panicked, turning a panic inside redb into an error.
    fn guard<T>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed {
                path: self.path.clone(),
                op,
                message: "an earlier call failed".to_owned(),
            });
        }
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            self.failed.store(true, Ordering::Release);
            Err(failed(&self.path, op, &*panic))
        })
    }

    fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, op, e)
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }
}

fn db_err(path: &Path, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        op,
        source: Box::new(e.into()),
    }
}

fn failed(path: &Path, op: &'static str, panic: &(dyn std::any::Any + Send)) -> StoreError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    StoreError::Failed {
        path: path.to_path_buf(),
        op,
        message,
    }
}

/// Deletes every row of consumer `name` from a table keyed by (name, offset).
fn clear<V: redb::Value + 'static>(
    table: &mut redb::Table<'_, (&'static str, u64), V>,
    name: &str,
) -> Result<(), redb::StorageError> {
    table.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)
}

// The host shares one store between blocking tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ConsumerStore>();
    assert_send_sync::<StoreError>();
};
