//! The routing snapshot: which peers handle a command or subscribe to an event.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::PeerHandle;
use crate::proto::routing::Picker;

/// Rebuilt by the actor whenever a peer or its interest changes, and swapped in as a whole, so
/// senders read it without a lock.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Every connected peer, whatever it handles.
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    pub(crate) commands: FxHashMap<String, CommandRoute>,
    pub(crate) events: FxHashMap<String, Vec<Arc<PeerHandle>>>,
}

/// The peers that handle one command, and whose turn it is among them (per command, so that
/// interleaving commands does not skew any one command's round robin).
#[derive(Debug, Default)]
pub(crate) struct CommandRoute {
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    /// Shared with the snapshots before and after, so the turns go on across changes.
    pub(crate) picker: Arc<Picker>,
}
