//! `ws://host:port/path` and `wss://host:port/path` addresses.

use meshbus_core::transport::Addr;
use meshbus_core::{Error, ErrorKind};

use crate::{SCHEME, TLS_SCHEME};

/// A `ws://` or `wss://` address taken apart: what to connect to, whether over TLS, and the
/// path of the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `wss://`: TLS under the WebSocket.
    pub(crate) tls: bool,
    /// `host:port`, as `TcpListener::bind` and `TcpStream::connect` take it.
    pub(crate) authority: String,
    /// The host without the brackets of an IPv6 address: the name a TLS client checks the
    /// server's certificate against.
    pub(crate) host: String,
    /// The request path, starting with `/` (`/` when the address has none).
    pub(crate) path: String,
}

impl Target {
    /// Parses `addr`, which must be `ws://host:port` or `ws://host:port/path`, or the same
    /// with `wss://` when the `tls` feature is on.
    pub(crate) fn parse(addr: &Addr) -> Result<Target, Error> {
        let bad = |why: &str| {
            Error::new(ErrorKind::Config)
                .with_detail(format!("bad WebSocket address {addr}: {why}"))
        };
        let tls = match addr.scheme() {
            SCHEME => false,
            TLS_SCHEME if cfg!(feature = "tls") => true,
            TLS_SCHEME => {
                return Err(bad(
                    "wss:// needs the `tls` feature of meshbus-transport-ws (meshbus: `tls`)",
                ))
            }
            _ => return Err(bad("the WebSocket transport serves only ws:// and wss://")),
        };
        let rest = addr.rest();
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let Some((host, port)) = authority.rsplit_once(':') else {
            return Err(bad("expected host:port"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("expected host:port with a port number"));
        }
        if host.contains(['@', '/', '?', '#']) {
            return Err(bad("the host may not hold '@', '/', '?' or '#'"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("the path may not hold a query or a fragment"));
        }
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        Ok(Target {
            tls,
            authority: authority.to_owned(),
            host: bare.unwrap_or(host).to_owned(),
            path: path.to_owned(),
        })
    }

    /// The address's scheme.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls {
            TLS_SCHEME
        } else {
            SCHEME
        }
    }

    /// The URI of the upgrade request.
    pub(crate) fn uri(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Target, Error> {
        Target::parse(&text.parse().unwrap())
    }

    #[test]
    fn host_port_and_path() {
        for (text, authority, path) in [
            ("ws://127.0.0.1:0/meshbus", "127.0.0.1:0", "/meshbus"),
            ("ws://127.0.0.1:7000", "127.0.0.1:7000", "/"),
            ("ws://[::1]:80/a/b", "[::1]:80", "/a/b"),
            ("ws://localhost:1/", "localhost:1", "/"),
        ] {
            let t = parse(text).unwrap();
            assert_eq!((t.authority.as_str(), t.path.as_str()), (authority, path));
            assert!(!t.tls, "{text}");
        }
        assert_eq!(parse("ws://[::1]:80/a").unwrap().host, "::1", "no brackets");
        assert_eq!(parse("ws://localhost:80").unwrap().host, "localhost");
        assert_eq!(
            parse("ws://h:1/x").unwrap().uri(),
            "ws://h:1/x",
            "the URI is the address"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn wss_is_tls() {
        let t = parse("wss://example.org:443/mesh").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.path.as_str()), ("example.org", "/mesh"));
        assert_eq!(t.uri(), "wss://example.org:443/mesh");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn wss_without_the_feature_says_which_feature() {
        let err = parse("wss://127.0.0.1:1/x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[test]
    fn malformed_are_config_errors() {
        for text in [
            "tcp://127.0.0.1:1",
            "ws://127.0.0.1",
            "ws://:80/x",
            "ws://h:port/x",
            "ws://h:70000",
            "ws://[::1]/x",
            "ws://u@h:1/x",
            "ws://h:1/x?y",
            "ws://h:1/x#y",
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        }
    }
}
