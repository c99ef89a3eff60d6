//! Sealed records: the frames of one direction, joined, cut into ChaCha20-Poly1305 records.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::NoiseError;
use crate::wire::PREFIX_LEN;

/// The largest ciphertext of a record (a Noise message), tag included.
pub const MAX_RECORD: usize = 65535;

/// The authentication tag at the end of every record.
pub const TAG_LEN: usize = 16;

/// The most plaintext one record carries.
pub const MAX_PLAIN: usize = MAX_RECORD - TAG_LEN;

/// Seals one direction's frames into records; nonces count from 0.
pub struct Sealer {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
    scratch: Vec<u8>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(super) fn new(state: Arc<snow::StatelessTransportState>) -> Self {
        Sealer {
            state,
            nonce: 0,
            scratch: Vec::new(),
        }
    }

    /// How many records this direction has sealed.
    pub fn sealed(&self) -> u64 {
        self.nonce
    }

    /// Takes back the records sealed since [`sealed`](Self::sealed) was `count`: their nonces
    /// are used again. Only for records none of whose bytes left this node (a write the
    /// transport did not take): a nonce must never seal two plaintexts that both get out.
    pub(crate) fn rewind_to(&mut self, count: u64) {
        self.nonce = self.nonce.min(count);
    }

    /// Seals `frames` (whole encoded frames, joined in order) into records, each a transport
    /// frame (length prefix, ciphertext), appended to `records`. For each frame, pushes to
    /// `ends` how many of the new records must reach the peer for that frame to be whole.
    ///
    /// Small frames share a record; a frame over [`MAX_PLAIN`] spans several. A frame that
    /// fills a record on its own is sealed from where it is, without a copy.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Record`] when the nonces are used up (2^64 - 1 records): the link must
    /// close. Records already appended stay valid.
    pub fn seal_frames(
        &mut self,
        frames: &[Bytes],
        records: &mut Vec<Bytes>,
        ends: &mut Vec<usize>,
    ) -> Result<(), NoiseError> {
        let total: usize = frames.iter().map(Bytes::len).sum();
        let count = total / MAX_PLAIN + frames.len().min(2);
        let mut out = BytesMut::with_capacity(total + count * (PREFIX_LEN + TAG_LEN));
        let mut plain = std::mem::take(&mut self.scratch);
        plain.clear();
        let first = records.len();
        let last = frames.len().saturating_sub(1);
        for (i, frame) in frames.iter().enumerate() {
            let mut rest = &frame[..];
            while !rest.is_empty() {
                if plain.is_empty() && (rest.len() >= MAX_PLAIN || i == last) {
                    let take = rest.len().min(MAX_PLAIN);
                    self.seal_one(&rest[..take], &mut out)?;
                    records.push(out.split().freeze());
                    rest = &rest[take..];
                    continue;
                }
                let take = (MAX_PLAIN - plain.len()).min(rest.len());
                plain.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if plain.len() == MAX_PLAIN {
                    self.seal_one(&plain, &mut out)?;
                    records.push(out.split().freeze());
                    plain.clear();
                }
            }
            ends.push(records.len() - first + usize::from(!plain.is_empty()));
        }
        if !plain.is_empty() {
            self.seal_one(&plain, &mut out)?;
            records.push(out.split().freeze());
        }
        self.scratch = plain;
        Ok(())
    }

    /// Seals `frame`, at most [`MAX_PLAIN`] bytes, as one record: a lone frame's way, with
    /// one allocation.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Record`] for a frame over [`MAX_PLAIN`], or when the nonces are used up.
    pub fn seal_frame(&mut self, frame: &[u8]) -> Result<Bytes, NoiseError> {
        if frame.len() > MAX_PLAIN {
            return Err(NoiseError::Record("a frame over one record"));
        }
        let mut out = BytesMut::with_capacity(PREFIX_LEN + frame.len() + TAG_LEN);
        self.seal_one(frame, &mut out)?;
        Ok(out.freeze())
    }

    /// Seals one plaintext of at most [`MAX_PLAIN`] bytes as a record appended to `out`.
    fn seal_one(&mut self, plain: &[u8], out: &mut BytesMut) -> Result<(), NoiseError> {
        if self.nonce == u64::MAX {
            return Err(NoiseError::Record("the link has used up its nonces"));
        }
        let len = plain.len() + TAG_LEN;
        out.put_u32(len as u32);
        let start = out.len();
        out.resize(start + len, 0);
        let written = self
            .state
            .write_message(self.nonce, plain, &mut out[start..])
            .map_err(|_| NoiseError::Record("a record did not seal"))?;
        out.truncate(start + written);
        self.nonce += 1;
        Ok(())
    }
}

/// Opens one direction's records, in order; nonces count from 0.
pub struct Opener {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub(super) fn new(state: Arc<snow::StatelessTransportState>) -> Self {
        Opener { state, nonce: 0 }
    }

    /// Opens `record` (a transport frame: length prefix, ciphertext) and appends its
    /// plaintext to `plain`.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Record`] for a record that is too short or too long, or that fails
    /// authentication (changed, cut, replayed, reordered or from another link): the link
    /// must close. `plain` is left as it was.
    pub fn open(&mut self, record: &[u8], plain: &mut BytesMut) -> Result<(), NoiseError> {
        let ciphertext = record
            .get(PREFIX_LEN..)
            .filter(|c| c.len() >= TAG_LEN && c.len() <= MAX_RECORD)
            .ok_or(NoiseError::Record("a record of impossible length"))?;
        if self.nonce == u64::MAX {
            return Err(NoiseError::Record("the link has used up its nonces"));
        }
        let start = plain.len();
        plain.resize(start + ciphertext.len(), 0);
        match self
            .state
            .read_message(self.nonce, ciphertext, &mut plain[start..])
        {
            Ok(n) => {
                plain.truncate(start + n);
                self.nonce += 1;
                Ok(())
            }
            Err(_) => {
                plain.truncate(start);
                Err(NoiseError::Record("a record failed authentication"))
            }
        }
    }
}
