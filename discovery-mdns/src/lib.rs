//! Zero-configuration discovery on the local link (mDNS / DNS-SD) for
//! [meshbus](https://docs.rs/meshbus).
//!
//! Give a node [`Mdns`] and it finds the other nodes of its network on the same link, with no
//! seed addresses: each node advertises itself as a `_meshbus._tcp.local.` service and browses
//! for the others; a node found is dialled like one learned from gossip, and gossip then
//! spreads the rest of the mesh. Static seeds ([`peers`](meshbus_core::BusBuilder::peers)) and
//! other discovery sources work beside it.
//!
//! ```no_run
//! use meshbus_core::{Bus, Scope, Transport};
//! use meshbus_discovery_mdns::Mdns;
//! # use meshbus_core::Command;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
//! # impl Command for Ping { const NAME: &'static str = "ping"; type Reply = (); }
//!
//! // `tcp`: the TCP transport (`meshbus::tcp` with the facade's `tcp` feature).
//! pub async fn run(tcp: impl Transport) -> Result<(), meshbus_core::Error> {
//!     // This sends multicast on every interface that is up: run it on a LAN you own, or in a
//!     // network namespace (see the README's "Discovery on a LAN (mDNS)").
//!     let bus = Bus::builder()
//!         .network("shop-prod")
//!         .transport(tcp)
//!         .listen("tcp://0.0.0.0:0") // dialled on the addresses mDNS resolves
//!         .discovery(Mdns::new())
//!         .start()
//!         .await?;
//!     bus.ready().handlers::<Ping>(Scope::Cluster, 1).await; // a node found by mDNS
//!     bus.commands().cluster().send(Ping).await?;
//!     bus.shutdown().await // an mDNS goodbye: the others forget this node at once
//! }
//! # fn main() {}
//! ```
//!
//! # The advert
//!
//! The instance is named by the node id (32 hex digits). Its TXT record:
//!
//! | key | value |
//! |---|---|
//! | `id` | the node id |
//! | `inc` | the incarnation (which run of the node) |
//! | `pk` | the node's static public key, base64 (an advert whose key is not the id's is ignored) |
//! | `net` | the network: nodes of another network ignore the advert |
//! | `cl` | the cluster |
//! | `host` | the host id (for the `Machine` scope) |
//! | `name` | the node's name, cut to fit |
//! | `v` | the protocol versions it speaks, `min-max` |
//! | `a0`, `a1`, ... | the addresses to dial it on, one per key (a TXT string holds 255 bytes) |
//!
//! An address whose host is a wildcard (`tcp://0.0.0.0:7000`) is dialled on the addresses the
//! mDNS answer resolved for the node: IPv4 first, then global IPv6, then link-local IPv6 with the
//! interface it was seen on as its scope (`tcp://[fe80::1%2]:7000`). An answer that so far
//! carries no usable address (say only a link-local IPv6 one, for a node listening on IPv4) is
//! reported once a later answer does.
//!
//! # Safety on shared networks
//!
//! mDNS is multicast on the local link: every host there sees the adverts. Use a
//! [`network`](meshbus_core::BusBuilder::network) name per deployment, and
//! [`Mdns::interface`] to keep it to the interfaces you mean. The crate's own tests run only
//! inside network namespaces they create.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod addr;
mod browse;
mod mdns;
mod txt;

pub use mdns::Mdns;
