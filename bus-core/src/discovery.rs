//! Discovery: how a node learns of nodes it was not told about.
//!
//! Static seeds (`BusBuilder::peers`) and gossip through peers are built in. A [`Discovery`]
//! adds another source, such as mDNS on the local link: the node hands it its own identity to
//! advertise, then reads [`DiscoveryEvent`]s from it. A node found is dialled like one learned
//! from gossip (its addresses are forgotten after repeated failed dials).
//!
//! ```
//! use meshbus_core::discovery::{Discovery, DiscoveryEvent};
//! use meshbus_core::wire::control::PeerIdentity;
//! use meshbus_core::{async_trait, Bus, Error, ErrorKind};
//!
//! /// Finds the nodes of a fixed list once, then nothing more.
//! #[derive(Debug)]
//! struct Fixed(Vec<PeerIdentity>);
//!
//! #[async_trait]
//! impl Discovery for Fixed {
//!     async fn advertise(&mut self, _local: &PeerIdentity) -> Result<(), Error> {
//!         Ok(())
//!     }
//!     async fn next(&mut self) -> Option<DiscoveryEvent> {
//!         self.0.pop().map(DiscoveryEvent::Found)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Discovery finds nodes to dial, so it needs a transport to dial them with.
//! let err = Bus::builder().discovery(Fixed(Vec::new())).start().await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Config);
//! # }
//! ```

use std::fmt;

use async_trait::async_trait;

use crate::id::NodeId;
use crate::wire::control::PeerIdentity;
use crate::Error;

/// What a [`Discovery`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A node of some network was found: who it says it is and where to dial it. Nodes of
    /// another network are ignored.
    Found(PeerIdentity),
    /// A node stopped being advertised. Only a hint: whether a node is alive is decided by its
    /// link (heartbeats, goodbye), so a connected node stays.
    Lost(NodeId),
}

/// A source of nodes to dial, beside seeds and gossip.
#[async_trait]
pub trait Discovery: Send + fmt::Debug + 'static {
    /// Starts advertising this node (what it advertises is up to the mechanism; one that only
    /// finds does nothing). Called once, when the bus starts, before [`next`](Self::next).
    ///
    /// # Errors
    ///
    /// Any error makes [`BusBuilder::start`](crate::BusBuilder::start) fail with it.
    async fn advertise(&mut self, local: &PeerIdentity) -> Result<(), Error>;

    /// The next node found or lost; `None` when the source has ended.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: the node drops the future at shutdown.
    async fn next(&mut self) -> Option<DiscoveryEvent>;

    /// Stops advertising (for mDNS: announces a goodbye, so others forget this node at once)
    /// and releases what the source holds. Called once when the bus shuts down, after the last
    /// [`next`](Self::next); a source that ended earlier is kept until then, so its advert
    /// stays up as long as the node runs. The node bounds the wait (about a second), so a
    /// source must not rely on this being awaited to the end: a bus dropped without
    /// `shutdown()` never calls it, and `Drop` should release the source's resources too.
    ///
    /// The default does nothing.
    async fn shutdown(&mut self) {}
}
