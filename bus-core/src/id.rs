//! Node identity.

use std::fmt;

/// A node's random 128-bit identifier, new for every `Bus` instance.
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

    pub(crate) fn random(rng: &mut fastrand::Rng) -> Self {
        NodeId(rng.u128(..))
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
