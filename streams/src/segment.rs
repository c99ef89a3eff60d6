//! One segment file: its in-memory index and the scan that rebuilds it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::format::{self, BatchHeader, IndexEntry, IndexSummary, BATCH_HEADER, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};

/// The log file name of the segment with base offset `base`.
pub(crate) fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The index file name of the segment with base offset `base`.
pub(crate) fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}

/// The name of the floor file of a purge up to `floor`.
pub(crate) fn floor_name(floor: u64) -> String {
    format!("{floor:020}.purged")
}

/// The floor a floor file name stands for, if `name` is one.
pub(crate) fn parse_floor_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(".purged")?)
}

/// The base offset of a segment log file name, if `name` is one.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(".log")?)
}

/// The base offset of a segment index file name, if `name` is one.
pub(crate) fn parse_index_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(".index")?)
}

fn parse_digits(digits: &str) -> Option<u64> {
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A segment as the log knows it.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) file: Arc<dyn StorageFile>,
    /// Bytes readers may read (whole batches only).
    pub(crate) len: u64,
    /// Offset after the segment's last record.
    pub(crate) next_offset: u64,
    pub(crate) index: Vec<IndexEntry>,
    /// Largest record timestamp in the segment (0 if empty).
    pub(crate) max_ts: u64,
    /// When this process opened or created it (segments roll by age from here).
    pub(crate) opened: Instant,
}

impl Segment {
    /// Records in the segment.
    pub(crate) fn records(&self) -> u64 {
        self.next_offset - self.base
    }

    /// Where to start reading for `offset`: the last index entry at or before it.
    pub(crate) fn seek(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.pos, e.offset),
            None => (SEGMENT_HEADER, self.base),
        }
    }

    /// Where to start looking for the first record at or after `ts`.
    pub(crate) fn seek_time(&self, ts: u64) -> (u64, u64) {
        // max_ts_before never decreases, so everything before the last entry whose
        // max_ts_before < ts is older than ts.
        let i = self.index.partition_point(|e| e.max_ts_before < ts);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.pos, e.offset),
            None => (SEGMENT_HEADER, self.base),
        }
    }

    /// Records a batch just appended at `pos` in the index.
    pub(crate) fn note_batch(&mut self, pos: u64, h: &BatchHeader, interval: u64) {
        let due = match self.index.last() {
            None => true,
            Some(e) => pos - e.pos >= interval,
        };
        if due {
            self.index.push(IndexEntry {
                offset: h.base,
                pos,
                max_ts_before: self.max_ts,
            });
        }
        self.max_ts = self.max_ts.max(h.max_ts);
        self.next_offset = h.end();
        self.len = pos + h.frame_len();
    }

    /// The summary to persist with the index when the segment is sealed.
    pub(crate) fn summary(&self) -> IndexSummary {
        IndexSummary {
            max_ts: self.max_ts,
            end_pos: self.len,
            next_offset: self.next_offset,
        }
    }
}

/// Reads the batch header at `pos`; `None` if it is cut short or impossible.
pub(crate) fn read_header(
    file: &dyn StorageFile,
    pos: u64,
    file_len: u64,
) -> std::io::Result<Option<BatchHeader>> {
    if file_len.saturating_sub(pos) < BATCH_HEADER as u64 {
        return Ok(None);
    }
    let mut h = [0u8; BATCH_HEADER];
    file.read_at(pos, &mut h)?;
    Ok(format::parse_batch_header(&h).filter(|h| pos.saturating_add(h.frame_len()) <= file_len))
}

/// Reads and verifies the whole batch at `pos` whose header is `h`.
pub(crate) fn read_batch(
    file: &dyn StorageFile,
    pos: u64,
    h: &BatchHeader,
) -> std::io::Result<Option<(BatchHeader, Vec<crate::Record>)>> {
    let len = usize::try_from(h.frame_len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut buf = vec![0u8; len];
    file.read_at(pos, &mut buf)?;
    Ok(format::decode_batch(Bytes::from(buf)))
}

/// What a scan of a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// End of the last good batch.
    pub(crate) good_len: u64,
    /// The file's length (more than `good_len` if the scan stopped at damage).
    pub(crate) file_len: u64,
    pub(crate) next_offset: u64,
    pub(crate) index: Vec<IndexEntry>,
    pub(crate) max_ts: u64,
}

/// Scans a segment from its header, verifying every batch, until the end or the first batch
/// with a bad length, checksum or offset.
pub(crate) fn scan(file: &dyn StorageFile, base: u64, interval: u64) -> std::io::Result<Scan> {
    let file_len = file.len()?;
    let mut seg_index = Vec::new();
    let (mut pos, mut next, mut max_ts) = (SEGMENT_HEADER, base, 0u64);
    let mut last_entry: Option<u64> = None;
    while let Some(h) = read_header(file, pos, file_len)? {
        if h.base != next {
            break;
        }
        match read_batch(file, pos, &h)? {
            Some((h, _)) => {
                if last_entry.is_none_or(|p| pos - p >= interval) {
                    seg_index.push(IndexEntry {
                        offset: h.base,
                        pos,
                        max_ts_before: max_ts,
                    });
                    last_entry = Some(pos);
                }
                max_ts = max_ts.max(h.max_ts);
                next = h.end();
                pos += h.frame_len();
            }
            None => break,
        }
    }
    Ok(Scan {
        good_len: pos.min(file_len),
        file_len,
        next_offset: next,
        index: seg_index,
        max_ts,
    })
}

/// Loads the persisted index of a sealed segment if it is whole and matches the file.
pub(crate) fn load_index(
    storage: &dyn Storage,
    base: u64,
    file_len: u64,
) -> Option<(Vec<IndexEntry>, IndexSummary)> {
    let f = storage.open(&index_name(base), false).ok()?;
    let len = usize::try_from(f.len().ok()?).ok()?;
    if len > (64 << 20) {
        return None;
    }
    let mut buf = vec![0u8; len];
    f.read_at(0, &mut buf).ok()?;
    format::decode_index(&buf, base).filter(|(_, s)| s.end_pos == file_len)
}

/// Writes (or rewrites) the index of a sealed segment and syncs it.
pub(crate) fn save_index(storage: &dyn Storage, seg: &Segment) -> std::io::Result<()> {
    let f = storage.open(&index_name(seg.base), true)?;
    f.truncate(0)?;
    f.append(&format::encode_index(seg.base, &seg.index, seg.summary()))?;
    f.sync()
}

/// Makes `floor` durable: writes and syncs its floor file. The name is made durable when the
/// file is created; a crash before the sync leaves a torn file, which open ignores.
pub(crate) fn save_floor(storage: &dyn Storage, floor: u64) -> std::io::Result<()> {
    let f = storage.open(&floor_name(floor), true)?;
    f.truncate(0)?;
    f.append(&format::encode_floor(floor))?;
    f.sync()
}

/// Whether the floor file for `floor` is whole.
pub(crate) fn floor_is_valid(storage: &dyn Storage, floor: u64) -> bool {
    let Ok(f) = storage.open(&floor_name(floor), false) else {
        return false;
    };
    let mut buf = [0u8; format::FLOOR_FILE];
    f.len().ok() == Some(format::FLOOR_FILE as u64)
        && f.read_at(0, &mut buf).is_ok()
        && format::check_floor(&buf, floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(log_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_name("99999999999999999999.log"), None);
        assert_eq!(floor_name(7), "00000000000000000007.purged");
        assert_eq!(parse_floor_name("00000000000000000007.purged"), Some(7));
        assert_eq!(parse_floor_name("00000000000000000007.log"), None);
        assert_eq!(parse_index_name("00000000000000000042.index"), Some(42));
    }
}
