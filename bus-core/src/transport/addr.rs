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
    fn only_the_first_separator_splits() {
        let addr: Addr = "ws://h:1/a://b".parse().unwrap();
        assert_eq!(addr.scheme(), "ws");
        assert_eq!(addr.rest(), "h:1/a://b");
    }
}
