//! What a browsing node makes of the answers it hears: which are nodes to report, and which
//! node a withdrawn advert was.

use std::collections::HashMap;

use meshbus_core::discovery::DiscoveryEvent;
use meshbus_core::wire::control::{PeerIdentity, VersionRange};
use meshbus_core::NodeId;

use crate::addr::{dialable, Resolved};
use crate::txt;

/// The browsing state of one node, without sockets.
#[derive(Debug)]
pub(crate) struct Browser {
    me: u128,
    network: String,
    /// Our own instance's full name (lower-case), once we advertise.
    registered: Option<String>,
    /// The nodes reported found, by instance full name (lower-case), so that a removal can say
    /// which node it was.
    found: HashMap<String, NodeId>,
}

impl Browser {
    pub(crate) fn new(local: &PeerIdentity) -> Self {
        Browser {
            me: local.node_id,
            network: local.network.clone(),
            registered: None,
            found: HashMap::new(),
        }
    }

    /// We advertise ourselves as `fullname`.
    pub(crate) fn registered(&mut self, fullname: String) {
        self.registered = Some(fullname.to_lowercase());
    }

    /// An answer for the instance `fullname`, with TXT lookup `get` and the addresses it
    /// resolved: the node to report found, or `None` for our own advert, a node of another
    /// network or of no common protocol version, strings that are no advert, and an answer with
    /// no address to dial yet.
    pub(crate) fn on_answer<'a>(
        &mut self,
        fullname: &str,
        get: impl Fn(&str) -> Option<&'a str>,
        resolved: &[Resolved],
    ) -> Option<DiscoveryEvent> {
        let fullname = fullname.to_lowercase();
        let Some(advert) = txt::decode(get) else {
            tracing::trace!(%fullname, "ignoring an answer that is no meshbus advert");
            return None;
        };
        let identity = advert.identity;
        let node = NodeId::from_u128(identity.node_id);
        if identity.node_id == self.me || self.registered.as_ref() == Some(&fullname) {
            return None;
        }
        if identity.network != self.network {
            tracing::trace!(%node, network = %identity.network, "ignoring a node of another network");
            return None;
        }
        if let Some(v) = advert.versions {
            if VersionRange::CURRENT.highest_common(v).is_none() {
                tracing::debug!(
                    %node,
                    min = v.min,
                    max = v.max,
                    "ignoring a node that speaks no protocol version of ours"
                );
                return None;
            }
        }
        let addresses = dialable(&identity.addresses, resolved);
        if addresses.is_empty() {
            tracing::debug!(%node, ?resolved, "no dialable address in this answer yet");
            return None;
        }
        tracing::debug!(%node, ?addresses, "found by mDNS");
        self.found.insert(fullname, node);
        Some(DiscoveryEvent::Found(PeerIdentity {
            addresses,
            ..identity
        }))
    }

    /// The advert of instance `fullname` was withdrawn (a goodbye, or its records expired):
    /// the node to report lost, if we had reported it found.
    pub(crate) fn on_removed(&mut self, fullname: &str) -> Option<DiscoveryEvent> {
        let node = self.found.remove(&fullname.to_lowercase())?;
        tracing::debug!(%node, "mDNS advert withdrawn");
        Some(DiscoveryEvent::Lost(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TYPE: &str = "._meshbus._tcp.local.";

    fn identity(node_id: u128, network: &str) -> PeerIdentity {
        PeerIdentity {
            node_id,
            incarnation: 3,
            name: format!("n{node_id}"),
            network: network.into(),
            cluster: "shop".into(),
            host_id: "h".into(),
            addresses: vec!["tcp://0.0.0.0:7000".into()],
            public_key: None,
        }
    }

    /// What node `node_id` of `network` would answer, speaking `versions`.
    fn answer(
        node_id: u128,
        network: &str,
        versions: VersionRange,
    ) -> (String, HashMap<String, String>) {
        let txt = txt::encode(&identity(node_id, network), versions).unwrap();
        let fullname = format!("{}{TYPE}", NodeId::from_u128(node_id));
        (fullname, txt.into_iter().collect())
    }

    fn hear(
        b: &mut Browser,
        node_id: u128,
        network: &str,
        versions: VersionRange,
    ) -> Option<DiscoveryEvent> {
        let (fullname, txt) = answer(node_id, network, versions);
        let resolved = [Resolved {
            ip: "10.77.0.2".parse().unwrap(),
            scope: 2,
        }];
        b.on_answer(&fullname, |k| txt.get(k).map(String::as_str), &resolved)
    }

    #[test]
    fn a_node_of_our_network_is_found_with_dialable_addresses_and_lost_by_its_name() {
        let mut b = Browser::new(&identity(1, "a"));
        let Some(DiscoveryEvent::Found(p)) = hear(&mut b, 2, "a", VersionRange::CURRENT) else {
            panic!("not found");
        };
        assert_eq!(p.node_id, 2);
        assert_eq!(p.incarnation, 3);
        assert_eq!(p.cluster, "shop");
        assert_eq!(p.addresses, ["tcp://10.77.0.2:7000"]);
        // Names compare without case, as DNS does.
        let name = format!("{}{TYPE}", NodeId::from_u128(2)).to_uppercase();
        assert_eq!(
            b.on_removed(&name),
            Some(DiscoveryEvent::Lost(NodeId::from_u128(2)))
        );
        assert_eq!(b.on_removed(&name), None, "lost once");
    }

    #[test]
    fn our_own_advert_another_network_and_foreign_versions_are_ignored() {
        let mut b = Browser::new(&identity(1, "a"));
        b.registered(format!("{}{TYPE}", NodeId::from_u128(1)));
        assert_eq!(hear(&mut b, 1, "a", VersionRange::CURRENT), None);
        assert_eq!(hear(&mut b, 2, "b", VersionRange::CURRENT), None);
        let future = VersionRange {
            min: VersionRange::CURRENT.max + 1,
            max: VersionRange::CURRENT.max + 5,
        };
        assert_eq!(hear(&mut b, 3, "a", future), None);
        // Removals of what was never reported say nothing.
        assert_eq!(
            b.on_removed(&format!("{}{TYPE}", NodeId::from_u128(2))),
            None
        );
        assert_eq!(b.on_removed("stranger._meshbus._tcp.local."), None);
    }

    #[test]
    fn an_answer_without_a_dialable_address_waits_for_the_next() {
        let mut b = Browser::new(&identity(1, "a"));
        let (fullname, txt) = answer(2, "a", VersionRange::CURRENT);
        let get = |k: &str| txt.get(k).map(String::as_str);
        let link_local = Resolved {
            ip: "fe80::2".parse().unwrap(),
            scope: 2,
        };
        assert_eq!(b.on_answer(&fullname, get, &[link_local]), None);
        assert_eq!(b.on_removed(&fullname), None, "not reported, so not lost");
        let v4 = Resolved {
            ip: "10.77.0.2".parse().unwrap(),
            scope: 2,
        };
        assert!(matches!(
            b.on_answer(&fullname, get, &[link_local, v4]),
            Some(DiscoveryEvent::Found(_))
        ));
    }
}
