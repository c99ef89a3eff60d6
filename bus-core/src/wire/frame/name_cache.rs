//! The names a connection has seen, so that repeated names decode without allocating.

use super::*;

/// The inline names a connection has seen, so that a name a peer repeats (every event of a
/// type carries its name) decodes without an allocation. See
/// [`FrameCodec::decode_frame_cached`].
///
/// Bounded whatever the peer sends: at most [`NameCache::ENTRIES`] names of at most
/// [`NameCache::MAX_NAME_LEN`] bytes; a longer name is allocated each time, and a new name
/// beyond the bound takes the place of an older one in turn.
#[derive(Debug, Default)]
pub struct NameCache {
    pub(super) names: Vec<Arc<str>>,
    /// The entry the next new name replaces once the cache is full.
    pub(super) next: usize,
}

impl NameCache {
    /// How many names a cache holds at most.
    pub const ENTRIES: usize = 32;
    /// The longest name a cache keeps.
    pub const MAX_NAME_LEN: usize = 128;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name whose UTF-8 is `bytes`: a cached one is found by its bytes, without checking
    /// them again; anything else is checked, then made and cached as [`get`](Self::get) does.
    pub(super) fn get_utf8(&mut self, bytes: &[u8]) -> Result<Arc<str>, FrameError> {
        if let Some(cached) = self.find(bytes) {
            return Ok(cached);
        }
        match std::str::from_utf8(bytes) {
            Ok(name) => Ok(self.insert(name)),
            Err(_) => Err(FrameError::BadUtf8 { what: "name" }),
        }
    }

    /// `name` as an `Arc<str>`: the cached one if `name` is cached, else a new one, which is
    /// cached if it is short enough.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        match self.find(name.as_bytes()) {
            Some(cached) => cached,
            None => self.insert(name),
        }
    }

    pub(super) fn find(&self, bytes: &[u8]) -> Option<Arc<str>> {
        self.names
            .iter()
            .find(|n| n.as_bytes() == bytes)
            .map(Arc::clone)
    }

    /// A new `Arc<str>` of `name`, cached if it is short enough.
    pub(super) fn insert(&mut self, name: &str) -> Arc<str> {
        let fresh: Arc<str> = Arc::from(name);
        if name.len() <= Self::MAX_NAME_LEN {
            if self.names.len() < Self::ENTRIES {
                self.names.push(Arc::clone(&fresh));
            } else if let Some(slot) = self.names.get_mut(self.next) {
                *slot = Arc::clone(&fresh);
                self.next = (self.next + 1) % Self::ENTRIES;
            }
        }
        fresh
    }
}
