//! The routing snapshot: which peers handle a command or subscribe to an event.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::PeerHandle;

/// Rebuilt by the actor whenever a peer or its interest changes, and swapped in as a whole, so
/// senders read it without a lock.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) commands: FxHashMap<String, Vec<Arc<PeerHandle>>>,
    pub(crate) events: FxHashMap<String, Vec<Arc<PeerHandle>>>,
}
