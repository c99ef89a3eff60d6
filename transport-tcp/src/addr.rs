//! Parsing `tcp://host:port` and `unix:///path`: pure, no sockets.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use meshbus_core::{Addr, Error, ErrorKind};

/// The scheme of TCP addresses: `tcp://host:port`.
pub const TCP_SCHEME: &str = "tcp";

/// The scheme of Unix-domain socket addresses: `unix:///path`.
pub const UNIX_SCHEME: &str = "unix";

/// The host of a `tcp://` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IPv4 or IPv6 address, used as it is.
    Ip(IpAddr),
    /// A name, resolved when dialling or listening.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A parsed `tcp://` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcpTarget {
    pub(crate) host: Host,
    pub(crate) port: u16,
}

/// A config error about `addr`, saying why.
pub(crate) fn bad(addr: &Addr, why: &str) -> Error {
    Error::new(ErrorKind::Config)
        .with_detail(format!("bad {} address {addr}: {why}", addr.scheme()))
}

/// Parses the `host:port` of a `tcp://` address: an IPv4 address, an IPv6 address in brackets
/// (`[::1]:7000`) or a host name, then a port from 0 to 65535.
pub(crate) fn parse_tcp(addr: &Addr) -> Result<TcpTarget, Error> {
    if addr.scheme() != TCP_SCHEME {
        return Err(bad(addr, "not a tcp:// address"));
    }
    let rest = addr.rest();
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return Ok(TcpTarget {
            host: Host::Ip(sa.ip()),
            port: sa.port(),
        });
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad(addr, "a tcp address is host:port, with no path"));
    }
    let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
        let Some((ip, port)) = after_bracket.split_once(']') else {
            return Err(bad(addr, "an IPv6 address opened with '[' is not closed"));
        };
        let Ok(ip) = ip.parse::<Ipv6Addr>() else {
            return Err(bad(addr, "not an IPv6 address between the brackets"));
        };
        let Some(port) = port.strip_prefix(':') else {
            return Err(bad(addr, "expected :port after the IPv6 address"));
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(bad(addr, "expected host:port"));
        };
        if host.contains(':') {
            return Err(bad(
                addr,
                "an IPv6 address needs brackets, as in tcp://[::1]:7000",
            ));
        }
        (parse_host(addr, host)?, port)
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(bad(addr, "the port must be a number from 0 to 65535"));
    };
    Ok(TcpTarget { host, port })
}

fn parse_host(addr: &Addr, host: &str) -> Result<Host, Error> {
    if host.is_empty() {
        return Err(bad(addr, "no host before the port"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    let last = name.rsplit('.').next().unwrap_or_default();
    if !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(
            addr,
            "the host looks like an IP address but is not a valid one",
        ));
    }
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad(
            addr,
            "the host is neither an IP address nor a DNS name (letters, digits, '-', '_', dots)",
        ));
    }
    Ok(Host::Name(host.to_owned()))
}

/// Parses the path of a `unix://` address: absolute, so that the address means the same to
/// every process (`unix:///run/app.sock`).
pub(crate) fn parse_unix(addr: &Addr) -> Result<PathBuf, Error> {
    if addr.scheme() != UNIX_SCHEME {
        return Err(bad(addr, "not a unix:// address"));
    }
    let path = addr.rest();
    if !path.starts_with('/') {
        return Err(bad(
            addr,
            "a unix address needs an absolute path, as in unix:///run/app.sock",
        ));
    }
    if path.ends_with('/') {
        return Err(bad(addr, "the path names a directory, not a socket"));
    }
    Ok(PathBuf::from(path))
}

/// The address for a socket address: `tcp://127.0.0.1:7000`, `tcp://[::1]:7000`.
pub(crate) fn tcp_addr(sa: SocketAddr) -> Result<Addr, Error> {
    Addr::parse(&format!("{TCP_SCHEME}://{sa}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Addr {
        text.parse().unwrap()
    }

    fn tcp(text: &str) -> Result<TcpTarget, Error> {
        parse_tcp(&addr(text))
    }

    #[test]
    fn tcp_addresses_parse() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        let name = |s: &str| Host::Name(s.to_owned());
        for (text, host, port) in [
            ("tcp://127.0.0.1:0", ip("127.0.0.1"), 0),
            ("tcp://0.0.0.0:7000", ip("0.0.0.0"), 7000),
            ("tcp://[::1]:65535", ip("::1"), 65535),
            ("tcp://[::]:1", ip("::"), 1),
            ("tcp://[::ffff:127.0.0.1]:9", ip("::ffff:127.0.0.1"), 9),
            ("tcp://localhost:80", name("localhost"), 80),
            (
                "tcp://node-1.mesh.example.:7",
                name("node-1.mesh.example."),
                7,
            ),
            ("tcp://my_host:7", name("my_host"), 7),
        ] {
            let target = tcp(text).unwrap();
            assert_eq!(target, TcpTarget { host, port }, "{text}");
        }
        assert_eq!(tcp("tcp://[::1]:7").unwrap().host.to_string(), "[::1]");
    }

    #[test]
    fn bad_tcp_addresses_say_why() {
        for (text, why) in [
            ("tcp://127.0.0.1", "expected host:port"),
            ("tcp://localhost", "expected host:port"),
            ("tcp://:7000", "no host"),
            ("tcp://h:", "the port must be a number"),
            ("tcp://h:70000", "the port must be a number"),
            ("tcp://h:-1", "the port must be a number"),
            ("tcp://h:http", "the port must be a number"),
            ("tcp://::1:7000", "needs brackets"),
            ("tcp://[::1:7000", "not closed"),
            ("tcp://[::1]7000", "expected :port"),
            ("tcp://[1.2.3.4]:7000", "not an IPv6 address"),
            ("tcp://h:1/path", "no path"),
            ("tcp://h:1?x", "no path"),
            ("tcp://ho$t:1", "neither an IP address nor a DNS name"),
            ("tcp://a..b:1", "neither an IP address nor a DNS name"),
            ("tcp://999.1.1.1:1", "not a valid one"),
            ("tcp://1.2.3:1", "not a valid one"),
        ] {
            let err = tcp(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
            let msg = err.to_string();
            assert!(msg.contains(why), "{text}: {msg}");
            assert!(msg.contains(text), "{text}: {msg}");
        }
        let long = format!("tcp://{}:1", "a".repeat(64));
        assert_eq!(tcp(&long).unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(tcp("unix:///x").unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn unix_addresses_need_an_absolute_socket_path() {
        assert_eq!(
            parse_unix(&addr("unix:///run/meshbus/a.sock")).unwrap(),
            PathBuf::from("/run/meshbus/a.sock")
        );
        for (text, why) in [
            ("unix://a.sock", "absolute path"),
            ("unix://run/a.sock", "absolute path"),
            ("unix:///run/", "directory"),
            ("tcp://h:1", "not a unix:// address"),
        ] {
            let err = parse_unix(&addr(text)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn socket_addresses_print_as_tcp_addresses() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(tcp_addr(v4).unwrap().as_str(), "tcp://127.0.0.1:7000");
        assert_eq!(tcp_addr(v6).unwrap().as_str(), "tcp://[::1]:7000");
        assert_eq!(parse_tcp(&tcp_addr(v6).unwrap()).unwrap().port, 7000);
    }
}
