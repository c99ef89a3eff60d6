//! [`TcpTransport`]: the handle a bus is given, serving `tcp://` and `unix://`.

use std::time::Duration;

use async_trait::async_trait;
use meshbus_core::{Addr, Connection, Error, ErrorKind, Listener, Transport};

use crate::addr::{bad, parse_tcp, TCP_SCHEME, UNIX_SCHEME};

/// The [`Transport`] for `tcp://host:port` and `unix:///path`.
///
/// - **`tcp://host:port`**: the host is an IPv4 address, an IPv6 address in brackets
///   (`tcp://[::1]:7000`) or a name, resolved when dialling (every address it resolves to is
///   tried in turn) and when listening (the first one is bound). Listening on port 0 binds a
///   port the system picks; the listener's [`local_addr`](Listener::local_addr), and so
///   [`Bus::listen_addrs`](meshbus_core::Bus::listen_addrs), report it. Every socket, dialled or
///   accepted, has `TCP_NODELAY` set: the bus batches frames itself and an idle link must send
///   at once.
/// - **`unix:///path`**: a Unix-domain stream socket at an absolute path, for nodes on one
///   machine (on other platforms, a [`Config`](ErrorKind::Config) error). Listening where a
///   socket file is left over from a process that died removes that file first, but only once
///   a connection to it is refused: a live listener is never displaced, and a file that is not
///   a socket is never removed. The listener removes its socket file when it is dropped (if
///   the file is still the one it made).
///
/// Frames travel as they are encoded, each behind its 4-byte length prefix, and a batch of
/// frames goes out in one write
/// ([`StreamFrameWriter`](meshbus_core::transport::StreamFrameWriter)).
///
/// A dial gives up after the [connect timeout](Self::connect_timeout) (default
/// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)), name resolution included, so
/// an address that swallows packets does not hold a dial for minutes. The same bound applies
/// to resolving a host name to listen on, and to the probe of a Unix socket file found in
/// the way.
///
/// A listener's `accept` skips failures that concern one incoming connection (aborted or
/// reset before it was taken), returns an [`Io`](ErrorKind::Io) error for those that concern
/// the process (out of file descriptors or memory), after which the bus backs off and
/// accepts again, and returns [`Closed`](ErrorKind::Closed) only when the listening socket
/// itself can no longer accept.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use meshbus_core::Bus;
/// use meshbus_transport_tcp::TcpTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .transport(TcpTransport::new().connect_timeout(Duration::from_secs(2)))
///     .listen("tcp://127.0.0.1:0")
///     .start()
///     .await?;
/// let addr = &bus.listen_addrs()[0];
/// assert!(addr.as_str().starts_with("tcp://127.0.0.1:"));
/// assert!(!addr.as_str().ends_with(":0"));
/// # bus.shutdown().await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TcpTransport {
    connect_timeout: Duration,
}

impl TcpTransport {
    /// The default [connect timeout](Self::connect_timeout): 5 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The shortest connect timeout: a zero timeout is raised to this.
    const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(1);

    /// A transport with the default settings.
    pub fn new() -> Self {
        TcpTransport {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// How long a dial may take, from resolving the host name to the connected socket
    /// (default [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)). A zero timeout is
    /// raised to 1 ms.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Self::MIN_CONNECT_TIMEOUT);
        self
    }
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport::new()
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn schemes(&self) -> &'static [&'static str] {
        &[TCP_SCHEME, UNIX_SCHEME]
    }

    /// Listens on `tcp://host:port` or `unix:///path`.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed address (saying why) or a Unix
    /// socket path the system refuses (too long); an [`Io`](ErrorKind::Io) error when the
    /// address is taken (for a Unix socket: a live listener answers on it, or the path is a
    /// file that is not a socket) or cannot be bound.
    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        match addr.scheme() {
            TCP_SCHEME => {
                let target = parse_tcp(addr)?;
                let listener = crate::tcp::listen(addr, &target, self.connect_timeout).await?;
                Ok(Box::new(listener))
            }
            UNIX_SCHEME => crate::unix::listen(addr, self.connect_timeout).await,
            _ => Err(bad(
                addr,
                "the tcp transport serves only tcp:// and unix://",
            )),
        }
    }

    /// Dials `tcp://host:port` or `unix:///path`.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed address or port 0; an
    /// [`Io`](ErrorKind::Io) error, with the system's error as its source, when the name does
    /// not resolve, the connection is refused or unreachable, or the connect timeout passes.
    async fn dial(&self, addr: &Addr) -> Result<Connection, Error> {
        match addr.scheme() {
            TCP_SCHEME => crate::tcp::dial(addr, &parse_tcp(addr)?, self.connect_timeout).await,
            UNIX_SCHEME => crate::unix::dial(addr, self.connect_timeout).await,
            _ => Err(bad(
                addr,
                "the tcp transport serves only tcp:// and unix://",
            )),
        }
    }
}

/// An [`Io`](ErrorKind::Io) error with `detail` and the system's error as its source.
pub(crate) fn io_error(detail: String, source: std::io::Error) -> Error {
    Error::new(ErrorKind::Io)
        .with_detail(detail)
        .with_source(source)
}

/// What to do with a failed `accept`.
pub(crate) enum AcceptFailure {
    /// It concerned one incoming connection (aborted or reset before it was accepted): accept
    /// the next one at once.
    Skip,
    /// The listener is fine but the process is short of something (file descriptors, memory):
    /// the caller backs off and retries.
    Transient,
    /// The listening socket itself is unusable: it can never accept again.
    Fatal,
}

pub(crate) fn classify_accept_error(err: &std::io::Error) -> AcceptFailure {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted => {
            AcceptFailure::Skip
        }
        // EINVAL: the socket is not listening (any more).
        K::InvalidInput => AcceptFailure::Fatal,
        // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: keep the listener, back off.
        _ => AcceptFailure::Transient,
    }
}

/// How many per-connection accept failures in a row `accept` skips before it reports one, so
/// that one call is bounded and the caller gets to log and back off.
pub(crate) const MAX_SKIPPED_ACCEPTS: usize = 64;

/// Turns the last of a run of accept failures into the error `Listener::accept` returns.
pub(crate) fn accept_error(addr: &Addr, err: std::io::Error) -> Error {
    match classify_accept_error(&err) {
        AcceptFailure::Fatal => Error::new(ErrorKind::Closed)
            .with_detail(format!("the listener on {addr} can no longer accept"))
            .with_source(err),
        AcceptFailure::Skip | AcceptFailure::Transient => {
            io_error(format!("accept on {addr} failed"), err)
        }
    }
}

/// A second, non-blocking handle of `socket` (a duplicate of its descriptor) for writing lone
/// frames through ([`StreamThrough`](meshbus_core::transport::StreamThrough)); `None` when the
/// system gives none (out of descriptors): the connection then works without write-through.
#[cfg(unix)]
pub(crate) fn through_handle(socket: socket2::SockRef<'_>) -> Option<socket2::Socket> {
    let dup = socket.try_clone().ok()?;
    // Shared with the original (one open file), already so under tokio; made sure of, since a
    // blocking write would stall the sender's executor thread.
    dup.set_nonblocking(true).ok()?;
    Some(dup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_timeout_is_a_builder_knob() {
        let t = TcpTransport::default();
        assert_eq!(t.connect_timeout, TcpTransport::DEFAULT_CONNECT_TIMEOUT);
        let t = t.connect_timeout(Duration::from_millis(250));
        assert_eq!(t.connect_timeout, Duration::from_millis(250));
        let t = t.connect_timeout(Duration::ZERO);
        assert_eq!(t.connect_timeout, Duration::from_millis(1));
        assert_eq!(t.schemes(), ["tcp", "unix"]);
    }

    #[test]
    fn accept_errors_are_sorted_by_what_they_break() {
        use std::io::{Error as IoError, ErrorKind as K};
        let addr: Addr = "tcp://127.0.0.1:1".parse().unwrap();
        for kind in [K::ConnectionAborted, K::ConnectionReset, K::Interrupted] {
            assert!(matches!(
                classify_accept_error(&kind.into()),
                AcceptFailure::Skip
            ));
        }
        // EMFILE: out of file descriptors, which a later accept may have again.
        let emfile = IoError::from_raw_os_error(24);
        assert!(matches!(
            classify_accept_error(&emfile),
            AcceptFailure::Transient
        ));
        assert_eq!(accept_error(&addr, emfile).kind(), ErrorKind::Io);
        let einval = IoError::from(K::InvalidInput);
        assert_eq!(accept_error(&addr, einval).kind(), ErrorKind::Closed);
    }

    #[tokio::test]
    async fn other_schemes_are_config_errors() {
        crate::bounded(async {
            let t = TcpTransport::new();
            let ws: Addr = "ws://127.0.0.1:1/".parse().unwrap();
            assert_eq!(t.dial(&ws).await.unwrap_err().kind(), ErrorKind::Config);
            assert_eq!(t.listen(&ws).await.unwrap_err().kind(), ErrorKind::Config);
        })
        .await;
    }
}
