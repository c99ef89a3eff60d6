//! Transport addresses: `scheme://rest`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::Error;

/// A parsed transport address, `scheme://rest`: `inmem://name`, `tcp://host:port`,
/// `unix:///path`, `ws://host:port/path`.
///
/// The scheme picks the [`Transport`](super::Transport); the rest is that transport's business.
/// Parsing checks only the shape: a scheme of ASCII letters, digits, `+`, `-` or `.` starting
/// with a letter (stored lower-case), then `://`, then a non-empty rest without whitespace or
/// control characters. Cloning is cheap (one reference count).
///
/// ```
/// use meshbus_core::transport::Addr;
///
/// # fn main() -> Result<(), meshbus_core::Error> {
/// let addr: Addr = "TCP://127.0.0.1:7000".parse()?;
/// assert_eq!(addr.scheme(), "tcp");
/// assert_eq!(addr.rest(), "127.0.0.1:7000");
/// assert_eq!(addr.to_string(), "tcp://127.0.0.1:7000");
/// assert!("127.0.0.1:7000".parse::<Addr>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    text: Arc<str>,
    scheme_len: usize,
}

const SEPARATOR: &str = "://";

impl Addr {
    /// Parses `text`; the same as `text.parse()`.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error that says what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::config(format!("bad transport address {text:?}: {why}"));
        let Some((scheme, rest)) = text.split_once(SEPARATOR) else {
            return Err(bad("expected scheme://address"));
        };
        let mut chars = scheme.chars();
        match chars.next() {
            None => return Err(bad("empty scheme")),
            Some(c) if !c.is_ascii_alphabetic() => {
                return Err(bad("the scheme must start with a letter"))
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
            return Err(bad(
                "the scheme may hold only ASCII letters, digits, '+', '-' and '.'",
            ));
        }
        if rest.is_empty() {
            return Err(bad("nothing after the scheme"));
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("whitespace or a control character in the address"));
        }
        let text = format!("{}{SEPARATOR}{rest}", scheme.to_ascii_lowercase());
        Ok(Addr {
            text: text.into(),
            scheme_len: scheme.len(),
        })
    }

    /// The scheme, lower-case, without `://` (`"tcp"`).
    pub fn scheme(&self) -> &str {
        self.text.get(..self.scheme_len).unwrap_or_default()
    }

    /// What follows `://` (`"127.0.0.1:7000"`, `"/run/app.sock"`, `"name"`).
    pub fn rest(&self) -> &str {
        self.text
            .get(self.scheme_len + SEPARATOR.len()..)
            .unwrap_or_default()
    }

    /// The whole address (`"tcp://127.0.0.1:7000"`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host of a network address shaped `scheme://host:port[/path]` (`"127.0.0.1"`,
    /// `"[::1]"` with its brackets, `"example.org"`); `None` for a path (`unix:///x`) or a
    /// rest without a port.
    ///
    /// ```
    /// use meshbus_core::transport::Addr;
    ///
    /// # fn main() -> Result<(), meshbus_core::Error> {
    /// assert_eq!(Addr::parse("ws://[::1]:80/mesh")?.host(), Some("[::1]"));
    /// assert_eq!(Addr::parse("tcp://10.0.0.1:7000")?.host(), Some("10.0.0.1"));
    /// assert_eq!(Addr::parse("unix:///run/a.sock")?.host(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn host(&self) -> Option<&str> {
        let (host, _) = self.split_host()?;
        Some(host)
    }

    /// Splits the rest into the host and what follows it (`":port/path"`).
    fn split_host(&self) -> Option<(&str, &str)> {
        let rest = self.rest();
        let authority = rest.split('/').next().unwrap_or_default();
        let colon = if authority.starts_with('[') {
            let close = authority.find(']')?;
            (authority.as_bytes().get(close + 1) == Some(&b':')).then_some(close + 1)?
        } else {
            authority.rfind(':')?
        };
        let host = rest.get(..colon)?;
        (!host.is_empty()).then_some((host, rest.get(colon..)?))
    }

    /// Whether the host is the unspecified address (`0.0.0.0` or `[::]`): listening there
    /// means every interface, and it is no address to dial.
    pub fn has_unspecified_host(&self) -> bool {
        matches!(self.host(), Some("0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]"))
    }

    /// Whether the address stays on this machine: no host (in-memory, Unix sockets), a
    /// loopback IP address (`127.0.0.0/8`, `::1`) or `localhost`. An unspecified host
    /// (`0.0.0.0`, `[::]`: every interface) is not.
    pub fn is_local(&self) -> bool {
        let Some(host) = self.host() else {
            return true;
        };
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }

    /// The same address with another host (`host` as [`host`](Self::host) returns it, IPv6
    /// in brackets); `None` if this address has no host.
    pub fn with_host(&self, host: &str) -> Option<Addr> {
        let (_, tail) = self.split_host()?;
        Addr::parse(&format!("{}{SEPARATOR}{host}{tail}", self.scheme())).ok()
    }
}

impl FromStr for Addr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Addr::parse(text)
    }
}

impl TryFrom<&str> for Addr {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self, Error> {
        Addr::parse(text)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({:?})", &*self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_design_schemes_parse() {
        for (text, scheme, rest) in [
            ("inmem://a", "inmem", "a"),
            ("tcp://127.0.0.1:0", "tcp", "127.0.0.1:0"),
            ("tcp://[::1]:7000", "tcp", "[::1]:7000"),
            ("unix:///run/meshbus.sock", "unix", "/run/meshbus.sock"),
            ("ws://host:80/mesh", "ws", "host:80/mesh"),
            ("Ws+TLS://h:1", "ws+tls", "h:1"),
        ] {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.scheme(), scheme, "{text}");
            assert_eq!(addr.rest(), rest, "{text}");
            assert_eq!(addr.as_str(), format!("{scheme}://{rest}"));
            assert_eq!(addr.to_string().parse::<Addr>().unwrap(), addr);
        }
    }

    #[test]
    fn malformed_addresses_are_config_errors() {
        for text in [
            "",
            "inmem",
            "inmem:/a",
            "://a",
            "inmem://",
            "1tcp://h:1",
            "t_cp://h:1",
            "tcp://h :1",
            "tcp://h\n:1",
        ] {
            let err = text.parse::<Addr>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
            assert!(err.to_string().contains("bad transport address"), "{err}");
        }
    }

    #[test]
    fn hosts_are_found_and_replaced() {
        for (text, host, replaced) in [
            ("tcp://0.0.0.0:7000", Some("0.0.0.0"), "tcp://10.1.2.3:7000"),
            ("ws://[::]:80/mesh", Some("[::]"), "ws://10.1.2.3:80/mesh"),
            (
                "tcp://name.example:1",
                Some("name.example"),
                "tcp://10.1.2.3:1",
            ),
        ] {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.host(), host, "{text}");
            assert_eq!(addr.with_host("10.1.2.3").unwrap().as_str(), replaced);
        }
        for text in [
            "unix:///run/a.sock",
            "inmem://a",
            "tcp://:7000",
            "tcp://[::1]",
        ] {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.host(), None, "{text}");
            assert!(addr.with_host("h").is_none());
        }
        assert!(Addr::parse("tcp://0.0.0.0:1")
            .unwrap()
            .has_unspecified_host());
        assert!(Addr::parse("ws://[::]:1/m").unwrap().has_unspecified_host());
        assert!(!Addr::parse("tcp://127.0.0.1:1")
            .unwrap()
            .has_unspecified_host());
    }

    #[test]
    fn local_addresses_are_loopback_unix_and_in_memory() {
        for local in [
            "tcp://127.0.0.1:1",
            "tcp://127.9.0.1:1",
            "tcp://[::1]:1",
            "ws://localhost:80/m",
            "unix:///run/a.sock",
            "inmem://a",
        ] {
            assert!(Addr::parse(local).unwrap().is_local(), "{local}");
        }
        for remote in [
            "tcp://0.0.0.0:1",
            "tcp://[::]:1",
            "tcp://10.0.0.1:1",
            "ws://example.com:80/m",
            "tcp://[fe80::1]:1",
        ] {
            assert!(!Addr::parse(remote).unwrap().is_local(), "{remote}");
        }
    }

    #[test]
    fn only_the_first_separator_splits() {
        let addr: Addr = "ws://h:1/a://b".parse().unwrap();
        assert_eq!(addr.scheme(), "ws");
        assert_eq!(addr.rest(), "h:1/a://b");
    }
}
