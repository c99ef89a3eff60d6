//! Places for inbound handshakes: one among the node's handshakes under way, one among its
//! remote host's.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Actor;

/// How many remote hosts' handshakes under way are tracked at most.
const MAX_HANDSHAKE_HOSTS: usize = 4096;

/// The places an inbound connection holds until its handshake ends: one among the node's
/// handshakes under way, one among its host's.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(super) _node: OwnedSemaphorePermit,
    pub(super) _host: OwnedSemaphorePermit,
}

impl Actor {
    /// A place among `host`'s handshakes under way, if it has one free. A full table first
    /// drops the hosts with none under way; if every one has some, a new host is refused.
    pub(super) fn host_handshake(&mut self, host: &str) -> Option<OwnedSemaphorePermit> {
        let per_host = self
            .node
            .config
            .max_concurrent_handshakes_per_host
            .min(Semaphore::MAX_PERMITS);
        if !self.host_handshakes.contains_key(host)
            && self.host_handshakes.len() >= MAX_HANDSHAKE_HOSTS
        {
            self.host_handshakes
                .retain(|_, slots| slots.available_permits() < per_host);
            if self.host_handshakes.len() >= MAX_HANDSHAKE_HOSTS {
                return None;
            }
        }
        let slots = self
            .host_handshakes
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(per_host)));
        Arc::clone(slots).try_acquire_owned().ok()
    }
}
