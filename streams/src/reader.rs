//! The read path: from the index to the batch, through the cache. Runs on blocking threads.

use std::sync::Arc;

use crate::cache::Batch;
use crate::error::{Error, Result};
use crate::format::SEGMENT_HEADER;
use crate::log::{lock, Shared};
use crate::record::Record;
use crate::segment::{self, Segment};
use crate::storage::StorageFile;

/// What a read needs of a segment, taken under the lock and used without it.
#[derive(Debug)]
struct View {
    base: u64,
    file: Arc<dyn StorageFile>,
    len: u64,
    start: (u64, u64),
}

/// Segments a single read may walk (a read returns what they hold; the caller reads on).
const MAX_VIEWS: usize = 16;

fn view(s: &Segment, start: (u64, u64)) -> View {
    View {
        base: s.base,
        file: s.file.clone(),
        len: s.len,
        start,
    }
}

impl Shared {
    /// Up to `max_records` records from offset `from` (fewer at the tail, none past it), and
    /// at least one if there is one, stopping once `max_bytes` of bodies are reached.
    pub(crate) fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let views = {
            let st = lock(&self.state);
            let first = st.segments.first().map_or(0, |s| s.base);
            if from < first {
                return Err(Error::OffsetGone {
                    stream: self.config.name.clone(),
                    requested: from,
                    earliest: first,
                });
            }
            let i = st
                .segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            st.segments
                .iter()
                .skip(i)
                .take(MAX_VIEWS)
                .enumerate()
                .map(|(k, s)| {
                    view(
                        s,
                        if k == 0 {
                            s.seek(from)
                        } else {
                            (SEGMENT_HEADER, s.base)
                        },
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for v in &views {
            let (mut pos, mut expect) = v.start;
            while pos < v.len {
                if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                    return Ok(out);
                }
                let b = self.batch_at(v, pos, expect)?;
                for r in b.records.iter().filter(|r| r.offset >= from) {
                    if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                        return Ok(out);
                    }
                    bytes += r.body.len();
                    out.push(r.clone());
                }
                pos += b.header.frame_len();
                expect = b.header.end();
            }
        }
        Ok(out)
    }

    /// The offset of the first record whose timestamp is at or after `ts`, if any.
    pub(crate) fn offset_at_time(&self, ts: u64) -> Result<Option<u64>> {
        let views = {
            let st = lock(&self.state);
            st.segments
                .iter()
                .filter(|s| s.records() > 0 && s.max_ts >= ts)
                .take(MAX_VIEWS)
                .map(|s| view(s, s.seek_time(ts)))
                .collect::<Vec<_>>()
        };
        for v in &views {
            let (mut pos, mut expect) = v.start;
            while pos < v.len {
                let b = self.batch_at(v, pos, expect)?;
                if b.header.max_ts >= ts {
                    if let Some(r) = b.records.iter().find(|r| r.timestamp >= ts) {
                        return Ok(Some(r.offset));
                    }
                }
                pos += b.header.frame_len();
                expect = b.header.end();
            }
        }
        Ok(None)
    }

    /// The verified batch at `pos` of a segment, whose first offset must be `expect`.
    fn batch_at(&self, v: &View, pos: u64, expect: u64) -> Result<Arc<Batch>> {
        if let Some(b) = lock(&self.cache).get((v.base, pos)) {
            return Ok(b);
        }
        let stream = self.config.name.as_str();
        let corrupt = || Error::Corrupt {
            stream: stream.to_owned(),
            offset: expect,
        };
        let io = |e| Error::io(stream, e);
        let h = segment::read_header(&*v.file, pos, v.len)
            .map_err(io)?
            .ok_or_else(corrupt)?;
        if h.base != expect {
            return Err(corrupt());
        }
        let (header, records) = segment::read_batch(&*v.file, pos, &h)
            .map_err(io)?
            .ok_or_else(corrupt)?;
        let batch = Arc::new(Batch { header, records });
        lock(&self.cache).insert((v.base, pos), batch.clone());
        Ok(batch)
    }
}
