//! The routing snapshot: which peers handle a command or subscribe to an event.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::credit::Credit;
use super::PeerHandle;
use crate::proto::routing::{Candidate, Picker};

/// Rebuilt by the actor whenever a peer or its interest changes, and swapped in as a whole, so
/// senders read it without a lock.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Every connected peer, whatever it handles.
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    pub(crate) commands: FxHashMap<String, CommandRoute>,
    pub(crate) events: FxHashMap<String, Vec<EventRoute>>,
}

/// A peer that subscribes to an event name, with the room it granted us for that name.
#[derive(Debug, Clone)]
pub(crate) struct EventRoute {
    pub(crate) peer: Arc<PeerHandle>,
    pub(crate) credit: Arc<Credit>,
}

impl Candidate for EventRoute {
    fn host_id(&self) -> &str {
        &self.peer.identity.host_id
    }

    fn cluster(&self) -> &str {
        &self.peer.identity.cluster
    }

    fn in_flight(&self) -> usize {
        self.peer.in_flight()
    }

    fn is_available(&self) -> bool {
        self.peer.is_available()
    }
}

/// The peers that handle one command, and whose turn it is among them (per command, so that
/// interleaving commands does not skew any one command's round robin).
#[derive(Debug, Default)]
pub(crate) struct CommandRoute {
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    /// Shared with the snapshots before and after, so the turns go on across changes.
    pub(crate) picker: Arc<Picker>,
}
