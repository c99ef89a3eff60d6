//! Durable streams for meshbus: the log.
#![doc = "TODO"]

mod cache;
mod config;
mod crc;
mod error;
mod format;
mod log;
mod reader;
mod record;
mod recovery;
mod segment;
mod storage;
mod writer;

pub use config::{FsyncPolicy, LogConfig, Retention};
pub use error::{Error, Result};
pub use log::{Log, LogInfo};
pub use record::{Appended, NewRecord, Record};
pub use storage::{FaultStorage, FsStorage, Storage, StorageFile};
