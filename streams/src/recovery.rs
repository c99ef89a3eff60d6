//! Opening a log: finding its segments and purge floor, loading or rebuilding indexes,
//! cutting a torn tail.

use std::io;
use std::time::Instant;

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::format::{check_segment_header, segment_header, SEGMENT_HEADER};
use crate::segment::{
    self, floor_is_valid, floor_name, index_name, log_name, parse_floor_name, parse_index_name,
    parse_log_name, Segment,
};
use crate::storage::Storage;

/// What open found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The segments, oldest first, never empty.
    pub(crate) segments: Vec<Segment>,
    /// The purge floor: no offset below it is readable (0 if the log was never purged).
    pub(crate) floor: u64,
}

/// Opens every segment of the log in `storage`, recovering the last one.
pub(crate) fn recover(storage: &dyn Storage, config: &LogConfig) -> Result<Recovered> {
    let stream = config.name.as_str();
    let io = |e: io::Error| Error::io(stream, e);
    let names = storage.list().map_err(io)?;
    let floor = load_floor(storage, &names, stream);
    let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_log_name(n)).collect();
    bases.sort_unstable();
    // Segments wholly below the floor: a purge made its floor durable, then crashed before
    // deleting them. Readers can no longer see them; finish the job.
    let dead = bases.windows(2).take_while(|w| w[1] <= floor).count();
    for base in bases.drain(..dead) {
        remove(storage, &log_name(base), stream);
    }
    for name in &names {
        // An index whose segment is gone (retention or a purge crashed half way) is of no use.
        let orphan = parse_index_name(name).is_some_and(|b| bases.binary_search(&b).is_err());
        if orphan {
            let _ = storage.remove(name);
        }
    }
    if bases.is_empty() {
        return Ok(Recovered {
            segments: vec![create_segment(storage, floor).map_err(io)?],
            floor,
        });
    }
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let file = storage.open(&log_name(base), false).map_err(io)?;
        let file_len = file.len().map_err(io)?;
        let mut head = [0u8; SEGMENT_HEADER as usize];
        let head_ok = file_len >= SEGMENT_HEADER
            && file.read_at(0, &mut head).is_ok()
            && check_segment_header(&head, base);
        let Some(next_base) = next_base else {
            // The active segment: always scanned, torn tail cut.
            if !head_ok {
                tracing::warn!(
                    stream,
                    base,
                    "active segment has no valid header; starting it again"
                );
                segments.push(create_segment(storage, base).map_err(io)?);
                break;
            }
            let scan = segment::scan(&*file, base, config.index_interval).map_err(io)?;
            if scan.good_len < scan.file_len {
                tracing::warn!(
                    stream,
                    base,
                    kept = scan.good_len,
                    cut = scan.file_len - scan.good_len,
                    next_offset = scan.next_offset,
                    "truncating a torn or damaged tail"
                );
                file.truncate(scan.good_len).map_err(io)?;
                file.sync().map_err(io)?;
            }
            // A leftover index of the active segment (a crash during a roll) would go stale.
            let _ = storage.remove(&index_name(base));
            segments.push(Segment {
                base,
                file,
                len: scan.good_len,
                next_offset: scan.next_offset,
                index: scan.index,
                max_ts: scan.max_ts,
                opened: Instant::now(),
            });
            break;
        };
        // A sealed segment: its persisted index if whole, else a scan (then persisted).
        let seg = if let Some((index, s)) = segment::load_index(storage, base, file_len) {
            Segment {
                base,
                file,
                len: s.end_pos,
                next_offset: s.next_offset,
                index,
                max_ts: s.max_ts,
                opened: Instant::now(),
            }
        } else {
            let scan = segment::scan(&*file, base, config.index_interval).map_err(io)?;
            let clean = head_ok && scan.good_len == scan.file_len && scan.next_offset == next_base;
            let seg = Segment {
                base,
                file,
                // Damage stays in place: reading into it is an error naming the offset.
                len: scan.file_len,
                next_offset: if clean {
                    scan.next_offset
                } else {
                    next_base.max(base)
                },
                index: if head_ok { scan.index } else { Vec::new() },
                max_ts: scan.max_ts,
                opened: Instant::now(),
            };
            if clean {
                if let Err(e) = segment::save_index(storage, &seg) {
                    tracing::warn!(stream, base, error = %e, "could not save a rebuilt index");
                }
            } else {
                tracing::warn!(
                    stream,
                    base,
                    "sealed segment is damaged after offset {}",
                    scan.next_offset
                );
            }
            seg
        };
        segments.push(seg);
    }
    if segments.last().is_some_and(|s| s.next_offset < floor) {
        // Every record is below the floor (the files lost a tail the purge had seen, or a
        // delete crashed): start again at the floor, so that no offset is ever given twice.
        tracing::warn!(stream, floor, "every segment is below the purge floor");
        let fresh = create_segment(storage, floor).map_err(io)?;
        for s in segments.drain(..) {
            remove(storage, &log_name(s.base), stream);
            remove(storage, &index_name(s.base), stream);
        }
        segments.push(fresh);
    }
    Ok(Recovered { segments, floor })
}

/// The highest floor whose file is whole; removes the others (older floors, and a torn
/// newer one whose purge never took effect).
fn load_floor(storage: &dyn Storage, names: &[String], stream: &str) -> u64 {
    let mut floors: Vec<u64> = names.iter().filter_map(|n| parse_floor_name(n)).collect();
    floors.sort_unstable();
    let floor = floors
        .iter()
        .rev()
        .copied()
        .find(|&f| floor_is_valid(storage, f));
    for &f in &floors {
        if Some(f) != floor {
            remove(storage, &floor_name(f), stream);
        }
    }
    floor.unwrap_or(0)
}

/// Removes file `name`; a file already gone is fine, another error is logged (the file is
/// then found, and dealt with, again at the next open).
pub(crate) fn remove(storage: &dyn Storage, name: &str, stream: &str) {
    if let Err(e) = storage.remove(name) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(stream, file = name, error = %e, "could not remove");
        }
    }
}

/// Creates (or empties) the segment file with base offset `base` and writes its header.
pub(crate) fn create_segment(storage: &dyn Storage, base: u64) -> io::Result<Segment> {
    let file = storage.open(&log_name(base), true)?;
    file.truncate(0)?;
    file.append(&segment_header(base))?;
    file.sync()?;
    Ok(Segment {
        base,
        file,
        len: SEGMENT_HEADER,
        next_offset: base,
        index: Vec::new(),
        max_ts: 0,
        opened: Instant::now(),
    })
}
