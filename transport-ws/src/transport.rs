//! The transport: listening on and dialling `ws://` and `wss://` addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use meshbus_core::proto::backoff::Backoff;
use meshbus_core::transport::Addr;
use meshbus_core::wire::{DEFAULT_MAX_FRAME_SIZE, PREFIX_LEN};
use meshbus_core::{Connection, Error, ErrorKind, Listener, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::addr::Target;
use crate::conn::connection;
use crate::error::{io_error, upgrade_error, ws_error};
use crate::stream::{Counted, Stream};
#[cfg(feature = "tls")]
use crate::tls::{self, TlsClient, TlsServer};

/// The address scheme of plain WebSocket links.
pub const SCHEME: &str = "ws";

/// The address scheme of WebSocket links over TLS, served with the `tls` feature.
pub const TLS_SCHEME: &str = "wss";

/// The default largest WebSocket message accepted: the core's default
/// [`max_frame_size`](meshbus_core::wire::DEFAULT_MAX_FRAME_SIZE) plus its 4-byte length
/// prefix, since each message carries one whole frame.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = DEFAULT_MAX_FRAME_SIZE + PREFIX_LEN;

/// The largest WebSocket frame sent or accepted: a larger message goes out as fragments of this
/// size. tungstenite reserves a frame's whole declared length as soon as it has read the frame's
/// header, so bounding frames (not only messages) keeps what a peer can make us reserve ahead
/// of the bytes it actually sends to 64 KiB.
pub const FRAGMENT_SIZE: usize = 64 * 1024;

/// The default bound on dialling: TCP connect, TLS handshake (`wss://`) and WebSocket upgrade
/// together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default bound on an inbound connection's upgrade, from TCP accept to the upgrade
/// response, TLS handshake (`wss://`) included.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many inbound connections may be in the middle of their upgrade (TLS handshake
/// included) at once; beyond it the listener accepts nothing more until one finishes or times
/// out.
const MAX_PENDING_UPGRADES: usize = 128;

/// How many upgraded connections wait for [`Listener::accept`].
const ACCEPT_QUEUE: usize = 16;

/// The WebSocket transport: binary messages over `ws://host:port/path`, one frame each; with
/// the `tls` feature also over `wss://host:port/path` (see `tls_server` and `tls_client`).
///
/// A cheap, cloneable configuration; every listener and connection it makes takes a copy.
///
/// ```
/// use std::time::Duration;
/// use meshbus_transport_ws::WsTransport;
///
/// let ws = WsTransport::new()
///     .max_message_size(1024 * 1024 + 4)
///     .connect_timeout(Duration::from_secs(3))
///     .upgrade_timeout(Duration::from_secs(2));
/// # drop(ws);
/// ```
#[derive(Debug, Clone)]
pub struct WsTransport {
    max_message_size: usize,
    connect_timeout: Duration,
    upgrade_timeout: Duration,
    #[cfg(feature = "tls")]
    tls_server: Option<TlsServer>,
    #[cfg(feature = "tls")]
    tls_client: Option<TlsClient>,
}

impl Default for WsTransport {
    fn default() -> Self {
        WsTransport {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            #[cfg(feature = "tls")]
            tls_server: None,
            #[cfg(feature = "tls")]
            tls_client: None,
        }
    }
}

impl WsTransport {
    /// A transport with the defaults: [`DEFAULT_MAX_MESSAGE_SIZE`],
    /// [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_UPGRADE_TIMEOUT`].
    pub fn new() -> Self {
        WsTransport::default()
    }

    /// The largest WebSocket message accepted (default [`DEFAULT_MAX_MESSAGE_SIZE`]); a larger
    /// one closes the connection with a [`TooLarge`](ErrorKind::TooLarge) error. A message
    /// holds a frame and its 4-byte prefix, so keep this at least the node's `max_frame_size`
    /// plus 4. A message still grows only with the bytes that arrive
    /// (see [`FRAGMENT_SIZE`]).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// How long a dial may take, TCP connect, TLS handshake (`wss://`) and WebSocket upgrade
    /// together (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an inbound connection may take to complete its WebSocket upgrade, TLS
    /// handshake (`wss://`) included (default [`DEFAULT_UPGRADE_TIMEOUT`]); a client still
    /// short of it then is dropped.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// The certificate and key that listeners on `wss://` present: a [`TlsServer`] (from PEM
    /// files with [`TlsServer::from_pem_files`]) or a rustls
    /// [`ServerConfig`](rustls::ServerConfig). Listening on `wss://` without it is a
    /// [`Config`](ErrorKind::Config) error.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_server(mut self, server: impl Into<TlsServer>) -> Self {
        self.tls_server = Some(server.into());
        self
    }

    /// Which servers a dial to `wss://` trusts: a [`TlsClient`] (trusting the roots of a PEM
    /// file with [`TlsClient::with_roots_pem`]) or a rustls
    /// [`ClientConfig`](rustls::ClientConfig). Dialling `wss://` without it is a
    /// [`Config`](ErrorKind::Config) error.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client(mut self, client: impl Into<TlsClient>) -> Self {
        self.tls_client = Some(client.into());
        self
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(FRAGMENT_SIZE.min(self.max_message_size)))
    }
}

/// The TLS configurations of a build without the `tls` feature: none can exist.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
enum NoTls {}

#[cfg(not(feature = "tls"))]
type TlsServer = NoTls;

#[cfg(not(feature = "tls"))]
type TlsClient = NoTls;

impl WsTransport {
    /// What a listener on `target` runs its TLS handshakes with: nothing for `ws://`.
    #[cfg(feature = "tls")]
    fn acceptor(&self, target: &Target, addr: &Addr) -> Result<Option<TlsServer>, Error> {
        if !target.tls {
            return Ok(None);
        }
        match &self.tls_server {
            Some(server) => Ok(Some(server.clone())),
            None => Err(Error::new(ErrorKind::Config).with_detail(format!(
                "listening on {addr} needs a TLS certificate: set WsTransport::tls_server, \
                 for example to TlsServer::from_pem_files(cert_chain, key)"
            ))),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn acceptor(&self, _target: &Target, _addr: &Addr) -> Result<Option<TlsServer>, Error> {
        Ok(None)
    }

    /// What a dial to `target` runs its TLS handshake with: nothing for `ws://`.
    #[cfg(feature = "tls")]
    fn connector(&self, target: &Target, addr: &Addr) -> Result<Option<&TlsClient>, Error> {
        if !target.tls {
            return Ok(None);
        }
        match &self.tls_client {
            Some(client) => Ok(Some(client)),
            None => Err(Error::new(ErrorKind::Config).with_detail(format!(
                "dialling {addr} needs the roots to trust: set WsTransport::tls_client, \
                 for example to TlsClient::with_roots_pem(ca_file)"
            ))),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn connector(&self, _target: &Target, _addr: &Addr) -> Result<Option<&TlsClient>, Error> {
        Ok(None)
    }
}

/// Sets `TCP_NODELAY`: frames are batched by the writer, never by the kernel.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

fn remote_addr(scheme: &str, peer: SocketAddr) -> Option<Addr> {
    Addr::parse(&format!("{scheme}://{peer}")).ok()
}

#[async_trait]
impl Transport for WsTransport {
    /// `["ws"]`, and `["ws", "wss"]` once a TLS configuration is set (`tls_client` or
    /// `tls_server`, feature `tls`): a node that cannot dial `wss://` then dials a peer on
    /// its `ws://` address rather than on a `wss://` one it would fail.
    fn schemes(&self) -> &'static [&'static str] {
        #[cfg(feature = "tls")]
        if self.tls_client.is_some() || self.tls_server.is_some() {
            return &[SCHEME, TLS_SCHEME];
        }
        &[SCHEME]
    }

    /// Listens on `ws://host:port/path`, or `wss://host:port/path` with a TLS server
    /// configuration (`tls_server`, feature `tls`).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed address or a `wss://` one
    /// without a TLS server configuration; an [`Io`](ErrorKind::Io) error when the address
    /// is taken or unusable.
    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        let target = Target::parse(addr)?;
        let tls = self.acceptor(&target, addr)?;
        let listener = TcpListener::bind(&target.authority)
            .await
            .map_err(|e| io_error("could not listen", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| io_error("no local address", e))?;
        let local = Addr::parse(&format!("{}://{local}{}", target.scheme(), target.path))?;
        let (tx, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let upgrade = Upgrade {
            scheme: target.scheme(),
            tls,
            path: target.path.into(),
            config: self.ws_config(),
            timeout: self.upgrade_timeout,
        };
        let mut driver = JoinSet::new();
        driver.spawn(accept_loop(listener, upgrade, tx));
        Ok(Box::new(WsListener {
            local,
            incoming,
            _driver: driver,
        }))
    }

    /// Dials `ws://host:port/path`, or `wss://host:port/path` with a TLS client
    /// configuration (`tls_client`, feature `tls`), checking the server's certificate against
    /// the address's host.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for a malformed address or a `wss://` one
    /// without a TLS client configuration; [`Unauthorized`](ErrorKind::Unauthorized) when
    /// the server's certificate is refused (or it refuses ours); an [`Io`](ErrorKind::Io)
    /// error when nobody answers (refused, unreachable, not TLS, timed out).
    async fn dial(&self, addr: &Addr) -> Result<Connection, Error> {
        let target = Target::parse(addr)?;
        let tls = self.connector(&target, addr)?;
        let config = self.ws_config();
        let dial = async {
            let stream = TcpStream::connect(&target.authority)
                .await
                .map_err(|e| io_error("could not connect", e))?;
            no_delay(&stream);
            let (stream, arrived) = Counted::new(stream);
            let stream = match tls {
                #[cfg(feature = "tls")]
                Some(client) => tls::connect(client, &target.host, stream, addr).await?,
                _ => Stream::Plain(stream),
            };
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(target.uri(), stream, Some(config))
                    .await
                    .map_err(upgrade_error)?;
            Ok::<_, Error>(connection(ws, arrived, addr.clone()))
        };
        tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| {
                Error::new(ErrorKind::Io).with_detail(format!(
                    "connecting to {addr} took longer than {:?}",
                    self.connect_timeout
                ))
            })?
    }
}

/// What an inbound connection's upgrade needs.
#[derive(Debug, Clone)]
struct Upgrade {
    /// The listener's scheme, for the remote addresses of what it accepts.
    scheme: &'static str,
    /// `wss://`: the TLS handshake that comes before the upgrade.
    tls: Option<TlsServer>,
    path: Arc<str>,
    config: WebSocketConfig,
    timeout: Duration,
}

impl Upgrade {
    /// Upgrades one accepted socket and hands the connection over; a failed or slow upgrade
    /// drops the socket.
    async fn run(self, stream: TcpStream, peer: SocketAddr, tx: mpsc::Sender<Accepted>) {
        let Upgrade {
            scheme,
            tls,
            path,
            config,
            timeout,
        } = self;
        no_delay(&stream);
        let (stream, arrived) = Counted::new(stream);
        // tungstenite's `Callback` fixes the error type.
        #[allow(clippy::result_large_err)]
        let check = move |request: &Request, response: Response| {
            if request.uri().path() == &*path {
                Ok(response)
            } else {
                let mut refused = ErrorResponse::new(Some(format!(
                    "no meshbus endpoint at {}",
                    request.uri().path()
                )));
                *refused.status_mut() = StatusCode::NOT_FOUND;
                Err(refused)
            }
        };
        let upgrade = async {
            let stream = match &tls {
                #[cfg(feature = "tls")]
                Some(server) => tls::accept(server, stream).await?,
                _ => Stream::Plain(stream),
            };
            tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
                .await
                .map_err(|e| ws_error("upgrade", e))
        };
        let ws = match tokio::time::timeout(timeout, upgrade).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "WebSocket upgrade refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "WebSocket upgrade timed out");
                return;
            }
        };
        let Some(remote) = remote_addr(scheme, peer) else {
            return;
        };
        let _ = tx.send(Ok(connection(ws, arrived, remote))).await;
    }
}

/// Accepts TCP connections and upgrades several at once, so a slow client does not hold up
/// the others. Ends when the listener is dropped (it owns this task).
async fn accept_loop(listener: TcpListener, upgrade: Upgrade, tx: mpsc::Sender<Accepted>) {
    let mut upgrades = JoinSet::new();
    let mut rng = fastrand::Rng::new();
    let mut failures = 0;
    loop {
        let room = upgrades.len() < MAX_PENDING_UPGRADES;
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    upgrades.spawn(upgrade.clone().run(stream, peer, tx.clone()));
                }
                Err(e) => {
                    // Often transient (out of file descriptors): report, then back off.
                    if tx.send(Err(io_error("accept failed", e))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF.delay(failures, &mut rng)).await;
                    failures = failures.saturating_add(1);
                }
            },
            Some(_) = upgrades.join_next() => {}
            () = tx.closed() => return,
        }
    }
}

type Accepted = Result<Connection, Error>;

/// How long a failed accept waits before the next: 10 ms doubling up to 1 s, ±20 %.
const ACCEPT_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(10),
    cap: Duration::from_secs(1),
    jitter: 0.2,
};

/// Listens on a `ws://` address. Dropping it stops listening and drops the connections still
/// in their upgrade.
#[derive(Debug)]
pub struct WsListener {
    local: Addr,
    incoming: mpsc::Receiver<Accepted>,
    /// The accept loop and, inside it, the upgrades in progress.
    _driver: JoinSet<()>,
}

#[async_trait]
impl Listener for WsListener {
    fn local_addr(&self) -> &Addr {
        &self.local
    }

    /// Cancel safe: upgraded connections wait in a queue.
    async fn accept(&mut self) -> Result<Connection, Error> {
        self.incoming.recv().await.unwrap_or_else(|| {
            Err(Error::new(ErrorKind::Closed).with_detail("the WebSocket listener stopped"))
        })
    }
}
