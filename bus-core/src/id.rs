//! Node identity.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A node's 128-bit identifier, derived from its static public key
/// ([`NodeId::from_public_key`]): new at every start unless the node keeps its key
/// ([`BusBuilder::identity_file`](crate::BusBuilder::identity_file)), and impossible to claim
/// without the private half.
///
/// Displayed as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u128);

impl NodeId {
    /// A node id from its raw value.
    pub const fn from_u128(raw: u128) -> Self {
        NodeId(raw)
    }

    /// The raw value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 digits are enough to tell nodes apart in logs.
        write!(f, "NodeId({:08x})", (self.0 >> 96) as u32)
    }
}

/// Message ids: unique in this process (so per node), without a shared atomic per message.
///
/// Each thread claims a 24-bit prefix once and counts the low 40 bits itself; a thread that
/// uses up its 2^40 ids claims a new prefix. Ids are unique, not ordered.
pub(crate) fn next_message_id() -> u64 {
    const LOW_BITS: u32 = 40;
    static NEXT_PREFIX: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    NEXT.with(|next| {
        let mut id = next.get();
        if id & ((1 << LOW_BITS) - 1) == 0 {
            // First use on this thread, or the block is used up. Prefixes wrap after 2^24
            // threads' worth of blocks; by then the earliest ids are long gone.
            let prefix = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed) & ((1 << 24) - 1);
            id = prefix.max(1) << LOW_BITS;
        }
        next.set(id + 1);
        id
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn message_ids_are_unique_across_threads() {
        let ids: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..10_000).map(|_| next_message_id()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 40_000);
        assert!(!ids.contains(&0));
    }
}
