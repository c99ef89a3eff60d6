//! The TXT record of a node's advert: its identity as short key/value strings.
//!
//! | key | value |
//! |---|---|
//! | `id` | the node id, 32 lower-case hex digits (also the instance name) |
//! | `inc` | the incarnation, decimal |
//! | `net` | the network |
//! | `cl` | the cluster |
//! | `host` | the host id |
//! | `name` | the node's name, cut to fit |
//! | `v` | the protocol versions spoken, `min-max` |
//! | `a0`, `a1`, ... | the advertised addresses, one per key |
//!
//! DNS-SD puts each `key=value` in a string of at most 255 bytes, so each address gets its
//! own key; the whole record is kept to about one packet.

use meshbus_core::wire::control::{PeerIdentity, VersionRange};
use meshbus_core::NodeId;

/// One TXT string's limit: a length byte counts up to 255 bytes of `key=value`.
const MAX_ENTRY: usize = 255;

/// The most addresses advertised (`a0` to `a15`); gossip keeps no more per member either.
pub(crate) const MAX_ADDRESSES: usize = 16;

/// What all the TXT strings may add up to, so the advert fits in one ordinary packet beside
/// its other records.
const MAX_TOTAL: usize = 1200;

/// Why an identity cannot be advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooLong {
    pub(crate) key: &'static str,
    pub(crate) len: usize,
}

/// The TXT strings advertising `local`, which speaks `versions`.
///
/// The name is cut to fit, and addresses that do not fit are left out (with a warning): a node
/// is still found by the others. A network, cluster or host id that does not fit is an error,
/// since peers would read a different one.
pub(crate) fn encode(
    local: &PeerIdentity,
    versions: VersionRange,
) -> Result<Vec<(String, String)>, TooLong> {
    let mut txt = vec![
        (
            "id".to_owned(),
            NodeId::from_u128(local.node_id).to_string(),
        ),
        ("inc".to_owned(), local.incarnation.to_string()),
        ("v".to_owned(), format!("{}-{}", versions.min, versions.max)),
    ];
    if let Some(key) = &local.public_key {
        txt.push(("pk".to_owned(), key.to_base64()));
    }
    for (key, value) in [
        ("net", &local.network),
        ("cl", &local.cluster),
        ("host", &local.host_id),
    ] {
        if entry_len(key, value) > MAX_ENTRY {
            return Err(TooLong {
                key,
                len: value.len(),
            });
        }
        txt.push((key.to_owned(), value.clone()));
    }
    txt.push((
        "name".to_owned(),
        cut(&local.name, MAX_ENTRY - 5).to_owned(),
    ));
    let mut total: usize = txt.iter().map(|(k, v)| entry_len(k, v) + 1).sum();
    let mut n = 0;
    for addr in &local.addresses {
        if n == MAX_ADDRESSES {
            tracing::warn!(
                kept = MAX_ADDRESSES,
                of = local.addresses.len(),
                "too many addresses for the mDNS advert; the rest are left out"
            );
            break;
        }
        let key = format!("a{n}");
        let len = entry_len(&key, addr);
        if len > MAX_ENTRY || total + len + 1 > MAX_TOTAL {
            tracing::warn!(%addr, "address too long for the mDNS advert; left out");
            continue;
        }
        total += len + 1;
        txt.push((key, addr.clone()));
        n += 1;
    }
    Ok(txt)
}

/// A node's advert, read back from its TXT strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advert {
    pub(crate) identity: PeerIdentity,
    /// The versions it speaks, when it says.
    pub(crate) versions: Option<VersionRange>,
}

/// Reads an advert from `get` (a lookup of one TXT key). `None` when the strings are not a
/// meshbus advert: no valid node id or no network, or a public key (`pk`) that is not one or
/// not the node id's.
pub(crate) fn decode<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Advert> {
    let id = get("id")?;
    if id.is_empty() || id.len() > 32 {
        return None;
    }
    let node_id = u128::from_str_radix(id, 16).ok()?;
    let network = get("net")?.to_owned();
    let incarnation = get("inc").and_then(|s| s.parse().ok()).unwrap_or(0);
    let versions = get("v").and_then(|v| {
        let (min, max) = v.split_once('-')?;
        Some(VersionRange {
            min: min.parse().ok()?,
            max: max.parse().ok()?,
        })
    });
    let public_key = match get("pk") {
        None => None,
        Some(text) => {
            let key = meshbus_core::trust::PublicKey::from_base64(text).ok()?;
            if key.node_id().as_u128() != node_id {
                return None;
            }
            Some(key)
        }
    };
    let addresses = (0..MAX_ADDRESSES)
        .filter_map(|i| get(&format!("a{i}")))
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    Some(Advert {
        identity: PeerIdentity {
            node_id,
            incarnation,
            name: get("name").unwrap_or_default().to_owned(),
            network,
            cluster: get("cl").unwrap_or_default().to_owned(),
            host_id: get("host").unwrap_or_default().to_owned(),
            addresses,
            public_key,
        },
        versions,
    })
}

fn entry_len(key: &str, value: &str) -> usize {
    key.len() + 1 + value.len()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn identity() -> PeerIdentity {
        PeerIdentity {
            node_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            incarnation: 1_700_000_000_000_000,
            name: "orders-1".into(),
            network: "prod".into(),
            cluster: "shop".into(),
            host_id: "4c4c4544-0042".into(),
            addresses: vec!["tcp://0.0.0.0:7000".into(), "ws://[::]:7001/mesh".into()],
            public_key: None,
        }
    }

    fn round_trip(txt: &[(String, String)]) -> Option<Advert> {
        let map: HashMap<&str, &str> = txt.iter().map(|(k, v)| (&**k, &**v)).collect();
        decode(|k| map.get(k).copied())
    }

    #[test]
    fn an_identity_round_trips() {
        let txt = encode(&identity(), VersionRange { min: 1, max: 2 }).unwrap();
        let advert = round_trip(&txt).unwrap();
        assert_eq!(advert.identity, identity());
        assert_eq!(advert.versions, Some(VersionRange { min: 1, max: 2 }));
        let id = txt.iter().find(|(k, _)| k == "id").unwrap();
        assert_eq!(id.1, "0123456789abcdef0011223344556677");
    }

    #[test]
    fn every_entry_fits_a_txt_string_and_the_record_stays_small() {
        let mut local = identity();
        local.name = "é".repeat(300);
        local.addresses = (0..40)
            .map(|i| format!("tcp://host-{i}-{}:7000", "x".repeat(i * 4)))
            .collect();
        let txt = encode(&local, VersionRange::CURRENT).unwrap();
        assert!(txt.iter().all(|(k, v)| entry_len(k, v) <= MAX_ENTRY));
        assert!(txt.iter().map(|(k, v)| entry_len(k, v) + 1).sum::<usize>() <= MAX_TOTAL);
        let advert = round_trip(&txt).unwrap();
        assert!(advert.identity.name.chars().all(|c| c == 'é'));
        // The addresses kept are numbered without gaps, so all of them are read back.
        let kept = txt.iter().filter(|(k, _)| k.starts_with('a')).count();
        assert!(kept > 0);
        assert_eq!(advert.identity.addresses.len(), kept);
        assert!(advert
            .identity
            .addresses
            .iter()
            .all(|a| local.addresses.contains(a)));
    }

    #[test]
    fn the_public_key_travels_and_must_be_the_node_ids() {
        let key = meshbus_core::trust::Identity::generate().public_key();
        let mut local = identity();
        local.node_id = key.node_id().as_u128();
        local.public_key = Some(key);
        let txt = encode(&local, VersionRange::CURRENT).unwrap();
        assert!(txt.iter().any(|(k, v)| k == "pk" && *v == key.to_base64()));
        assert_eq!(round_trip(&txt).unwrap().identity, local);
        // Another node's key beside this id, or a key that is none: not an advert.
        let mut forged = txt.clone();
        for (k, v) in &mut forged {
            if k == "pk" {
                *v = meshbus_core::trust::Identity::generate()
                    .public_key()
                    .to_base64();
            }
        }
        assert!(round_trip(&forged).is_none());
        let mut garbage = txt;
        for (k, v) in &mut garbage {
            if k == "pk" {
                *v = "not a key".into();
            }
        }
        assert!(round_trip(&garbage).is_none());
    }

    #[test]
    fn a_network_that_does_not_fit_is_an_error() {
        let mut local = identity();
        local.network = "n".repeat(300);
        assert_eq!(
            encode(&local, VersionRange::CURRENT),
            Err(TooLong {
                key: "net",
                len: 300
            })
        );
    }

    #[test]
    fn strings_that_are_not_an_advert_are_ignored() {
        let none = |pairs: &[(&'static str, &'static str)]| {
            let map: HashMap<&str, &str> = pairs.iter().copied().collect();
            decode(|k| map.get(k).copied()).is_none()
        };
        assert!(none(&[]));
        assert!(none(&[("net", "prod")]));
        assert!(none(&[("id", "xyz"), ("net", "prod")]));
        assert!(none(&[("id", "f"), ("cl", "shop")]));
        assert!(none(&[
            ("id", "0123456789abcdef0123456789abcdef0"),
            ("net", "p")
        ]));
        // The least an advert needs: an id and a network.
        let map: HashMap<&str, &str> = [("id", "ff"), ("net", "prod"), ("v", "x-1")].into();
        let advert = decode(|k| map.get(k).copied()).unwrap();
        assert_eq!(advert.identity.node_id, 0xff);
        assert_eq!(advert.identity.incarnation, 0);
        assert_eq!(advert.versions, None);
        assert!(advert.identity.addresses.is_empty());
    }
}
