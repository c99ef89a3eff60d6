//! The on-disk layout: segment headers, batches, records and index files.
//!
//! Everything is little-endian. See the crate docs for the specification.

use bytes::Bytes;

use crate::crc::crc32c;
use crate::record::{NewRecord, Record};

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 6] = b"MBSLOG";
/// Magic at the start of every index file.
pub(crate) const INDEX_MAGIC: &[u8; 6] = b"MBSIDX";
/// Magic at the start of every floor (`.purged`) file.
pub(crate) const FLOOR_MAGIC: &[u8; 6] = b"MBSPRG";
/// Bytes of a floor file: magic, version, floor, crc.
pub(crate) const FLOOR_FILE: usize = 20;
/// Version of the segment and index formats.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Bytes of a segment header: magic, version, base offset.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// Bytes of a batch header: length, crc, base offset, count, first and max timestamp.
pub(crate) const BATCH_HEADER: usize = 36;
/// Smallest valid value of a batch's length field (the header after the length).
const MIN_LENGTH: u32 = (BATCH_HEADER - 4) as u32;
/// Bytes of one index entry.
const INDEX_ENTRY: usize = 24;
/// Bytes of an index file's fixed part before the entries.
const INDEX_HEAD: usize = 20;
/// Bytes of an index file's trailer (max timestamp, end position, next offset, crc).
const INDEX_TAIL: usize = 28;

/// The header of a segment file.
pub(crate) fn segment_header(base: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..6].copy_from_slice(SEGMENT_MAGIC);
    h[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base.to_le_bytes());
    h
}

/// Whether `h` is a valid header of the segment with base offset `base`.
pub(crate) fn check_segment_header(h: &[u8], base: u64) -> bool {
    h.len() == SEGMENT_HEADER as usize
        && &h[..6] == SEGMENT_MAGIC
        && h[6..8] == FORMAT_VERSION.to_le_bytes()
        && h[8..16] == base.to_le_bytes()
}

/// Encoded size of one record.
pub(crate) fn record_size(r: &NewRecord) -> usize {
    let headers: usize = r.headers.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    8 + 2 + headers + 4 + r.body.len()
}

/// Encoded size of a batch holding `records`.
pub(crate) fn batch_size<'a>(records: impl IntoIterator<Item = &'a NewRecord>) -> usize {
    BATCH_HEADER + records.into_iter().map(record_size).sum::<usize>()
}

/// Appends one framed batch of `records` with base offset `base` to `out`.
///
/// The caller has checked the sizes: header keys below 64 KiB, values and bodies below 4 GiB,
/// at most `u16::MAX` headers and a batch below 4 GiB (`Log` enforces a far lower limit).
pub(crate) fn encode_batch<'a>(
    out: &mut Vec<u8>,
    base: u64,
    records: impl Iterator<Item = &'a NewRecord> + Clone,
) {
    let start = out.len();
    let (mut count, mut first, mut max) = (0u32, None, 0u64);
    for r in records.clone() {
        count += 1;
        first.get_or_insert(r.timestamp);
        max = max.max(r.timestamp);
    }
    out.extend_from_slice(&[0u8; 8]); // length and crc, filled in below
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&first.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.timestamp.to_le_bytes());
        out.extend_from_slice(&(r.headers.len() as u16).to_le_bytes());
        for (k, v) in &r.headers {
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.body);
    }
    let length = (out.len() - start - 4) as u32;
    let crc = crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed header of a batch, as read from disk (not yet verified by its crc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchHeader {
    /// The length field: bytes after it.
    pub(crate) length: u32,
    pub(crate) crc: u32,
    pub(crate) base: u64,
    pub(crate) count: u32,
    pub(crate) max_ts: u64,
}

impl BatchHeader {
    /// Bytes of the whole frame, length field included.
    pub(crate) fn frame_len(&self) -> u64 {
        4 + u64::from(self.length)
    }

    /// Offset after the batch's last record.
    pub(crate) fn end(&self) -> u64 {
        self.base.saturating_add(u64::from(self.count))
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a batch header; `None` if its length field is impossible.
pub(crate) fn parse_batch_header(h: &[u8]) -> Option<BatchHeader> {
    let header = BatchHeader {
        length: u32_at(h, 0)?,
        crc: u32_at(h, 4)?,
        base: u64_at(h, 8)?,
        count: u32_at(h, 16)?,
        max_ts: u64_at(h, 28)?,
    };
    (header.length >= MIN_LENGTH && header.count > 0).then_some(header)
}

/// Verifies a whole frame (header included) against its crc; decodes its records.
///
/// `None` if the crc does not match or the records do not fill the frame exactly.
pub(crate) fn decode_batch(frame: Bytes) -> Option<(BatchHeader, Vec<Record>)> {
    let header = parse_batch_header(&frame)?;
    if frame.len() as u64 != header.frame_len() || crc32c(&frame[8..]) != header.crc {
        return None;
    }
    let mut records = Vec::with_capacity(header.count.min(65_536) as usize);
    let mut at = BATCH_HEADER;
    for i in 0..header.count {
        let timestamp = u64_at(&frame, at)?;
        let n = usize::from(u16_at(&frame, at + 8)?);
        at += 10;
        let mut headers = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let klen = usize::from(u16_at(&frame, at)?);
            let key = frame.get(at + 2..at + 2 + klen)?;
            let key = std::str::from_utf8(key).ok()?.to_owned();
            at += 2 + klen;
            let vlen = u32_at(&frame, at)? as usize;
            let end = at.checked_add(4 + vlen).filter(|&e| e <= frame.len())?;
            headers.push((key, frame.slice(at + 4..end)));
            at = end;
        }
        let blen = u32_at(&frame, at)? as usize;
        let end = at.checked_add(4 + blen).filter(|&e| e <= frame.len())?;
        let body = frame.slice(at + 4..end);
        at = end;
        records.push(Record {
            offset: header.base + u64::from(i),
            timestamp,
            headers,
            body,
        });
    }
    (at == frame.len()).then_some((header, records))
}

/// One entry of a segment's sparse index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch.
    pub(crate) offset: u64,
    /// Position of the batch in the segment file.
    pub(crate) pos: u64,
    /// Largest timestamp of every record before this batch in the segment (0 if none).
    pub(crate) max_ts_before: u64,
}

/// What an index file holds besides its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexSummary {
    pub(crate) max_ts: u64,
    pub(crate) end_pos: u64,
    pub(crate) next_offset: u64,
}

/// Encodes the index file of a sealed segment.
pub(crate) fn encode_index(base: u64, entries: &[IndexEntry], s: IndexSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEAD + entries.len() * INDEX_ENTRY + INDEX_TAIL);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.pos.to_le_bytes());
        out.extend_from_slice(&e.max_ts_before.to_le_bytes());
    }
    out.extend_from_slice(&s.max_ts.to_le_bytes());
    out.extend_from_slice(&s.end_pos.to_le_bytes());
    out.extend_from_slice(&s.next_offset.to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes an index file; `None` if it is torn, damaged or for another segment.
pub(crate) fn decode_index(b: &[u8], base: u64) -> Option<(Vec<IndexEntry>, IndexSummary)> {
    if b.len() < INDEX_HEAD + INDEX_TAIL || b.get(..6)? != INDEX_MAGIC {
        return None;
    }
    if u16_at(b, 6)? != FORMAT_VERSION || u64_at(b, 8)? != base {
        return None;
    }
    let n = u32_at(b, 16)? as usize;
    if b.len() != INDEX_HEAD + n.checked_mul(INDEX_ENTRY)? + INDEX_TAIL {
        return None;
    }
    let crc_at = b.len() - 4;
    if crc32c(&b[..crc_at]) != u32_at(b, crc_at)? {
        return None;
    }
    let entries = (0..n)
        .map(|i| {
            let at = INDEX_HEAD + i * INDEX_ENTRY;
            Some(IndexEntry {
                offset: u64_at(b, at)?,
                pos: u64_at(b, at + 8)?,
                max_ts_before: u64_at(b, at + 16)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let t = INDEX_HEAD + n * INDEX_ENTRY;
    let summary = IndexSummary {
        max_ts: u64_at(b, t)?,
        end_pos: u64_at(b, t + 8)?,
        next_offset: u64_at(b, t + 16)?,
    };
    Some((entries, summary))
}

/// Encodes the floor file of a purge up to `floor`.
pub(crate) fn encode_floor(floor: u64) -> [u8; FLOOR_FILE] {
    let mut out = [0u8; FLOOR_FILE];
    out[..6].copy_from_slice(FLOOR_MAGIC);
    out[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&floor.to_le_bytes());
    let crc = crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Whether `b` is a whole floor file for `floor` (a torn or damaged one is not).
pub(crate) fn check_floor(b: &[u8], floor: u64) -> bool {
    b.len() == FLOOR_FILE
        && &b[..6] == FLOOR_MAGIC
        && u16_at(b, 6) == Some(FORMAT_VERSION)
        && u64_at(b, 8) == Some(floor)
        && u32_at(b, 16) == Some(crc32c(&b[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, body: &'static [u8]) -> NewRecord {
        NewRecord::new(ts, Bytes::from_static(body)).header("k", Bytes::from_static(b"v"))
    }

    #[test]
    fn batch_round_trip_and_damage() {
        let recs = [rec(5, b"hello"), rec(3, b""), rec(9, b"world!")];
        let mut out = Vec::new();
        encode_batch(&mut out, 42, recs.iter());
        assert_eq!(out.len(), batch_size(recs.iter()));
        let (h, got) = decode_batch(Bytes::from(out.clone())).expect("decodes");
        assert_eq!((h.base, h.count, h.max_ts), (42, 3, 9));
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].offset, 44);
        assert_eq!(&got[0].body[..], b"hello");
        assert_eq!(got[1].timestamp, 3);
        assert_eq!(got[0].headers[0].0, "k");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_batch(Bytes::from(bad)).is_none(),
                "flip at {i} went unseen"
            );
        }
    }

    #[test]
    fn index_round_trip_and_damage() {
        let e = [IndexEntry {
            offset: 7,
            pos: 16,
            max_ts_before: 0,
        }];
        let s = IndexSummary {
            max_ts: 10,
            end_pos: 99,
            next_offset: 12,
        };
        let b = encode_index(7, &e, s);
        assert_eq!(decode_index(&b, 7), Some((e.to_vec(), s)));
        assert!(decode_index(&b, 8).is_none());
        assert!(decode_index(&b[..b.len() - 1], 7).is_none());
        let mut bad = b.clone();
        bad[25] ^= 1;
        assert!(decode_index(&bad, 7).is_none());
    }

    #[test]
    fn floor_round_trip_and_damage() {
        let b = encode_floor(1234);
        assert!(check_floor(&b, 1234));
        assert!(!check_floor(&b, 1235));
        assert!(!check_floor(&b[..FLOOR_FILE - 1], 1234));
        assert!(!check_floor(&[], 1234));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x04;
            assert!(!check_floor(&bad, 1234), "flip at {i} went unseen");
        }
    }
}
