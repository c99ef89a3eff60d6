//! `ws://host:port/path` addresses.

use meshbus_core::transport::Addr;
use meshbus_core::{Error, ErrorKind};

use crate::SCHEME;

/// A `ws://` address taken apart: what to connect to and the path of the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`, as `TcpListener::bind` and `TcpStream::connect` take it.
    pub(crate) authority: String,
    /// The request path, starting with `/` (`/` when the address has none).
    pub(crate) path: String,
}

impl Target {
    /// Parses `addr`, which must be `ws://host:port` or `ws://host:port/path`.
    pub(crate) fn parse(addr: &Addr) -> Result<Target, Error> {
        let bad = |why: &str| {
            Error::new(ErrorKind::Config)
                .with_detail(format!("bad WebSocket address {addr}: {why}"))
        };
        if addr.scheme() != SCHEME {
            return Err(bad("the WebSocket transport serves only ws://"));
        }
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
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The URI of the upgrade request.
    pub(crate) fn uri(&self) -> String {
        format!("{SCHEME}://{}{}", self.authority, self.path)
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
        }
        assert_eq!(
            parse("ws://h:1/x").unwrap().uri(),
            "ws://h:1/x",
            "the URI is the address"
        );
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
