//! Turning an advert into addresses another node can dial.
//!
//! A node advertises the addresses it listens on. One that listens on every interface
//! (`tcp://0.0.0.0:7000`, `tcp://[::]:7000`) cannot say which of its addresses a peer reaches;
//! the mDNS answer can, since its address records come from the interface the answer left on.
//! So an unspecified host is replaced by each address the answer resolved, in this order:
//! IPv4, global IPv6, link-local IPv6 (with its interface as the scope, `[fe80::1%3]`, since a
//! link-local address means nothing without one), loopback last. An IPv4 wildcard is replaced
//! only by IPv4 addresses (such a socket takes no IPv6); an IPv6 wildcard by both (Linux sockets
//! on `[::]` take IPv4 too unless told otherwise). Every other address is kept as advertised.

use std::net::{IpAddr, Ipv6Addr};

use meshbus_core::Addr;

/// An address from an mDNS answer, with the interface it was seen on when it needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) ip: IpAddr,
    /// The index of our interface the answer came in on; used for link-local IPv6 only.
    pub(crate) scope: u32,
}

/// Where a node that advertised `advertised` can be dialled, given the addresses its answer
/// resolved. Empty when nothing is dialable yet (say the only address resolved so far is IPv6
/// and the node listens on IPv4): mdns-sd answers again as more address records arrive.
pub(crate) fn dialable(advertised: &[String], resolved: &[Resolved]) -> Vec<String> {
    let mut ips: Vec<Resolved> = resolved
        .iter()
        .filter(|r| !r.ip.is_unspecified() && !r.ip.is_multicast())
        .copied()
        .collect();
    ips.sort_by_key(|r| rank(r.ip));
    ips.dedup_by_key(|r| r.ip);
    let mut out: Vec<String> = Vec::new();
    for text in advertised {
        let addr = match Addr::parse(text) {
            Ok(addr) if addr.has_unspecified_host() => addr,
            _ => {
                push_new(&mut out, text.clone());
                continue;
            }
        };
        let takes_v6 = addr.host().is_some_and(|h| h.starts_with('['));
        for r in &ips {
            let host = match r.ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(_) if !takes_v6 => continue,
                IpAddr::V6(v6) if is_unicast_link_local(v6) => format!("[{v6}%{}]", r.scope),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            if let Some(dialable) = addr.with_host(&host) {
                push_new(&mut out, dialable.as_str().to_owned());
            }
        }
    }
    out
}

/// Order of preference: IPv4, global IPv6, link-local IPv6, loopback.
fn rank(ip: IpAddr) -> u8 {
    match ip {
        _ if ip.is_loopback() => 3,
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if is_unicast_link_local(v6) => 2,
        IpAddr::V6(_) => 1,
    }
}

fn is_unicast_link_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

fn push_new(out: &mut Vec<String>, addr: String) {
    if !out.contains(&addr) {
        out.push(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ip: &str, scope: u32) -> Resolved {
        Resolved {
            ip: ip.parse().unwrap(),
            scope,
        }
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn concrete_addresses_are_kept_as_advertised() {
        let adv = strings(&[
            "tcp://10.77.0.1:7000",
            "ws://[2001:db8::1]:7001/mesh",
            "unix:///run/meshbus.sock",
            "inmem://a",
        ]);
        assert_eq!(dialable(&adv, &[r("10.77.0.9", 2)]), adv);
        assert_eq!(dialable(&adv, &[]), adv);
    }

    #[test]
    fn an_ipv4_wildcard_becomes_each_resolved_ipv4_address() {
        let adv = strings(&["tcp://0.0.0.0:7000", "ws://0.0.0.0:7001/mesh"]);
        let resolved = [
            r("fe80::1", 3),
            r("127.0.0.1", 1),
            r("10.77.0.2", 3),
            r("192.168.1.5", 4),
        ];
        assert_eq!(
            dialable(&adv, &resolved),
            strings(&[
                "tcp://10.77.0.2:7000",
                "tcp://192.168.1.5:7000",
                "tcp://127.0.0.1:7000",
                "ws://10.77.0.2:7001/mesh",
                "ws://192.168.1.5:7001/mesh",
                "ws://127.0.0.1:7001/mesh",
            ])
        );
    }

    #[test]
    fn an_ipv6_wildcard_takes_both_families_and_scopes_link_local_addresses() {
        let adv = strings(&["tcp://[::]:7000"]);
        let resolved = [r("fe80::1", 3), r("2001:db8::7", 3), r("10.77.0.2", 3)];
        let out = dialable(&adv, &resolved);
        assert_eq!(
            out,
            strings(&[
                "tcp://10.77.0.2:7000",
                "tcp://[2001:db8::7]:7000",
                "tcp://[fe80::1%3]:7000",
            ])
        );
        // What a dialler does with it: the scope makes the link-local address usable.
        let sock: std::net::SocketAddr = out[2].trim_start_matches("tcp://").parse().unwrap();
        match sock {
            std::net::SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 3),
            other => panic!("not IPv6: {other}"),
        }
    }

    #[test]
    fn a_first_answer_with_only_a_link_local_ipv6_address_gives_nothing_for_an_ipv4_listener() {
        let adv = strings(&["tcp://0.0.0.0:7000"]);
        assert!(dialable(&adv, &[r("fe80::1", 3)]).is_empty());
        // The later answer with the A record does.
        assert_eq!(
            dialable(&adv, &[r("fe80::1", 3), r("10.77.0.2", 3)]),
            strings(&["tcp://10.77.0.2:7000"])
        );
    }

    #[test]
    fn duplicates_are_dropped() {
        let adv = strings(&["tcp://0.0.0.0:7000", "tcp://10.77.0.2:7000"]);
        let resolved = [r("10.77.0.2", 3), r("10.77.0.2", 4)];
        assert_eq!(
            dialable(&adv, &resolved),
            strings(&["tcp://10.77.0.2:7000"])
        );
    }

    #[test]
    fn odd_addresses_pass_through_untouched() {
        for a in [
            "tcp://",
            "tcp://:7000",
            "tcp://[::",
            "tcp://[::]7000",
            "nonsense",
        ] {
            assert_eq!(dialable(&strings(&[a]), &[r("10.0.0.1", 1)]), strings(&[a]));
        }
    }
}
