//! Purging and deleting, on the writer thread so that both are ordered with appends.

use std::sync::atomic::Ordering;

use super::Writer;
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER;
use crate::log::{lock, Purged};
use crate::recovery::remove;
use crate::segment::{self, parse_floor_name, parse_index_name, parse_log_name};

impl Writer {
    /// Removes the records below `up_to` (everything with `None`).
    ///
    /// The steps, each safe to crash after: (1) fsync what was written, so the floor never
    /// lies above what a power cut keeps; (2) purging everything, seal a non-empty active
    /// segment and start an empty one at the next offset; (3) write and fsync the floor file:
    /// from here the purge holds, whatever follows; (4) delete the segments wholly below the
    /// floor, oldest first (open finishes this if a crash interrupts it); (5) remove older
    /// floor files.
    pub(crate) fn purge(&mut self, up_to: Option<u64>) -> Result<Purged> {
        if self.failed {
            return Err(Error::Failed {
                stream: self.stream().to_owned(),
            });
        }
        self.sync()?;
        let first = lock(&self.shared.state).first_offset();
        let floor = up_to.map_or(self.next, |n| n.min(self.next));
        if floor <= first {
            return Ok(Purged {
                removed: 0,
                first_offset: first,
            });
        }
        if floor == self.next && self.len > SEGMENT_HEADER {
            self.roll()?;
        }
        segment::save_floor(&*self.shared.storage, floor)
            .map_err(|e| Error::io(self.stream(), e))?;
        let dead: Vec<u64> = {
            let mut st = lock(&self.shared.state);
            st.floor = floor;
            let n = st
                .segments
                .windows(2)
                .take_while(|w| w[1].base <= floor)
                .count();
            st.segments.drain(..n).map(|s| s.base).collect()
        };
        for &base in &dead {
            self.remove_segment(base);
        }
        match self.shared.storage.list() {
            Ok(names) => {
                let old = names
                    .iter()
                    .filter(|n| parse_floor_name(n).is_some_and(|f| f < floor));
                for name in old {
                    remove(&*self.shared.storage, name, self.stream());
                }
            }
            Err(e) => {
                tracing::warn!(stream = self.stream(), error = %e, "could not list old floor files");
            }
        }
        tracing::debug!(
            stream = self.stream(),
            floor,
            segments = dead.len(),
            "purged"
        );
        Ok(Purged {
            removed: floor - first,
            first_offset: floor,
        })
    }

    /// Removes every file of the log, then its directory if empty; the writer stops after.
    ///
    /// First a floor at the next offset is made durable, as a purge of everything would;
    /// then segments go oldest first and floor files last. So a crash half way leaves either
    /// the whole log (before the floor) or an empty log that goes on at the next offset, and
    /// never a record that a purge removed.
    pub(crate) fn delete(&mut self) -> Result<()> {
        self.shared.deleted.store(true, Ordering::Release);
        let next = self.next;
        let floor = lock(&self.shared.state).floor;
        if next > floor {
            // Best effort: a log whose fsync failed is deleted all the same.
            let durable = self.sync().and_then(|()| {
                segment::save_floor(&*self.shared.storage, next)
                    .map_err(|e| Error::io(self.stream(), e))
            });
            if let Err(e) = durable {
                tracing::warn!(stream = self.stream(), error = %e, "deleting a log whose floor could not be written");
            }
        }
        self.unpublished.clear();
        let storage = &*self.shared.storage;
        let names = storage.list().map_err(|e| Error::io(self.stream(), e))?;
        let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_log_name(n)).collect();
        bases.sort_unstable();
        let mut first_error = None;
        let mut rm = |name: &str| {
            if let Err(e) = storage.remove(name) {
                if e.kind() != std::io::ErrorKind::NotFound && first_error.is_none() {
                    first_error = Some(e);
                }
            }
        };
        for &base in &bases {
            rm(&segment::log_name(base));
            rm(&segment::index_name(base));
        }
        let rest = names
            .iter()
            .filter(|n| parse_index_name(n).is_some() || parse_floor_name(n).is_some());
        for name in rest {
            rm(name);
        }
        let mut cache = lock(&self.shared.cache);
        for &base in &bases {
            cache.drop_segment(base);
        }
        drop(cache);
        if let Some(e) = first_error {
            return Err(Error::io(self.stream(), e));
        }
        if let Some(dir) = &self.shared.dir {
            // Fails if something else lives there, which then stays.
            if std::fs::remove_dir(dir).is_ok() {
                tracing::debug!(stream = self.stream(), "log directory removed");
            }
        }
        Ok(())
    }
}
