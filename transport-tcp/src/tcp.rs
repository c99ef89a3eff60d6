//! `tcp://host:port`: listening, accepting and dialling.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use meshbus_core::transport::{StreamFrameReader, StreamFrameWriter, StreamThrough};
use meshbus_core::{Addr, Connection, Error, Listener};
use tokio::net::{TcpListener, TcpStream};

use crate::addr::{bad, tcp_addr, Host, TcpTarget};
use crate::transport::{
    accept_error, classify_accept_error, io_error, AcceptFailure, MAX_SKIPPED_ACCEPTS,
};

/// How many of a name's addresses a dial tries, in the order the resolver gave them.
const MAX_DIAL_CANDIDATES: usize = 16;

/// Resolves `target` to socket addresses: an IP as it is, a name through the system resolver.
async fn resolve(addr: &Addr, target: &TcpTarget) -> Result<Vec<SocketAddr>, Error> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            let found = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|e| io_error(format!("cannot resolve the host of {addr}"), e))?;
            let found: Vec<SocketAddr> = found.take(MAX_DIAL_CANDIDATES).collect();
            if found.is_empty() {
                return Err(io_error(
                    format!("the host of {addr} resolves to no address"),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            Ok(found)
        }
    }
}

/// Listens on `target`, the parsed form of `addr`, on the first address it resolves to that
/// can be bound; `timeout` bounds the name resolution.
pub(crate) async fn listen(
    addr: &Addr,
    target: &TcpTarget,
    timeout: Duration,
) -> Result<TcpFrameListener, Error> {
    let candidates = tokio::time::timeout(timeout, resolve(addr, target))
        .await
        .map_err(|_| {
            io_error(
                format!("resolving the host of {addr} timed out after {timeout:?}"),
                std::io::ErrorKind::TimedOut.into(),
            )
        })??;
    let mut last = None;
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map_err(|e| io_error(format!("no local address for {addr}"), e))?;
                let addr = tcp_addr(local)?;
                tracing::debug!(%addr, "tcp: listening");
                return Ok(TcpFrameListener { listener, addr });
            }
            Err(e) => last = Some(e),
        }
    }
    let err = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
    Err(io_error(format!("cannot listen on {addr}"), err))
}

/// Dials `target`, the parsed form of `addr`.
pub(crate) async fn dial(
    addr: &Addr,
    target: &TcpTarget,
    timeout: Duration,
) -> Result<Connection, Error> {
    let stream = dial_stream(addr, target, timeout).await?;
    tracing::debug!(%addr, "tcp: connected");
    Ok(connection(stream, addr.clone()))
}

/// Connects to `target`, trying each address it resolves to until one answers, all within
/// `timeout`, and sets `TCP_NODELAY`.
async fn dial_stream(
    addr: &Addr,
    target: &TcpTarget,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    if target.port == 0 {
        return Err(bad(addr, "cannot dial port 0"));
    }
    let connect = async {
        let mut last = None;
        for candidate in resolve(addr, target).await? {
            match TcpStream::connect(candidate).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    tracing::trace!(%addr, %candidate, error = %e, "tcp: connect failed");
                    last = Some(e);
                }
            }
        }
        let err = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
        Err(io_error(format!("cannot connect to {addr}"), err))
    };
    let stream = match tokio::time::timeout(timeout, connect).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(io_error(
                format!("connecting to {addr} timed out after {timeout:?}"),
                std::io::ErrorKind::TimedOut.into(),
            ))
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| io_error(format!("cannot set TCP_NODELAY on the link to {addr}"), e))?;
    Ok(stream)
}

fn connection(stream: TcpStream, remote: Addr) -> Connection {
    // Written to by std's `TcpStream`, as tokio writes (no SIGPIPE on a closed peer).
    #[cfg(unix)]
    let through = crate::transport::through_handle(socket2::SockRef::from(&stream))
        .map(|dup| StreamThrough::new(std::net::TcpStream::from(dup)));
    #[cfg(not(unix))]
    let through: Option<StreamThrough<std::net::TcpStream>> = None;
    let (read, write) = stream.into_split();
    let mut writer = StreamFrameWriter::new(write);
    if let Some(through) = through {
        writer = writer.with_through(through);
    }
    Connection {
        reader: Box::new(StreamFrameReader::new(read)),
        writer: Box::new(writer),
        remote,
    }
}

/// A [`Listener`] on a TCP port.
pub(crate) struct TcpFrameListener {
    listener: TcpListener,
    addr: Addr,
}

impl fmt::Debug for TcpFrameListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpFrameListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Listener for TcpFrameListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// Cancel safe: the only await is tokio's `accept`, which is.
    async fn accept(&mut self) -> Result<Connection, Error> {
        let (stream, remote) = self.accept_stream().await?;
        Ok(connection(stream, remote))
    }
}

impl TcpFrameListener {
    /// Accepts the next connection and sets `TCP_NODELAY`. Failures that concern one incoming
    /// connection are skipped (a bounded number in a row); see [`classify_accept_error`].
    async fn accept_stream(&self) -> Result<(TcpStream, Addr), Error> {
        let mut skipped = 0;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        // Only latency suffers; a broken socket shows up on the first read.
                        tracing::debug!(%peer, error = %e, "tcp: cannot set TCP_NODELAY");
                    }
                    let remote = tcp_addr(peer).unwrap_or_else(|_| self.addr.clone());
                    tracing::debug!(local = %self.addr, %remote, "tcp: accepted");
                    return Ok((stream, remote));
                }
                Err(e) => match classify_accept_error(&e) {
                    AcceptFailure::Skip if skipped < MAX_SKIPPED_ACCEPTS => {
                        tracing::debug!(addr = %self.addr, error = %e, "tcp: skipped a failed accept");
                        skipped += 1;
                    }
                    _ => return Err(accept_error(&self.addr, e)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbus_core::transport::ReadEvent;
    use meshbus_core::{ErrorKind, Transport};

    use crate::addr::parse_tcp;
    use crate::TcpTransport;

    fn addr(text: &str) -> Addr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn port_zero_reports_the_port_the_system_chose() {
        crate::bounded(async {
            let t = TcpTransport::new();
            let mut listener = t.listen(&addr("tcp://127.0.0.1:0")).await.unwrap();
            let local = listener.local_addr().clone();
            assert!(local.as_str().starts_with("tcp://127.0.0.1:"), "{local}");
            let port = crate::addr::parse_tcp(&local).unwrap().port;
            assert_ne!(port, 0);

            let mut dialled = t.dial(&local).await.unwrap();
            assert_eq!(dialled.remote, local);
            let mut accepted = listener.accept().await.unwrap();
            assert!(accepted.remote.as_str().starts_with("tcp://127.0.0.1:"));
            assert_ne!(accepted.remote, local);

            let frame = bytes::Bytes::from_static(&[0, 0, 0, 24, 1, 2, 3]);
            let mut frames = vec![frame.clone(); 2];
            dialled.writer.write_batch(&mut frames).await.unwrap();
            assert!(frames.is_empty());
            dialled.writer.close().await.unwrap();
            // Two prefixes promising 24 bytes and only 3 of each: 6 bytes, not one whole frame.
            let mut buffered = Vec::new();
            let end = loop {
                match accepted.reader.read(1 << 16).await {
                    Ok(ReadEvent::Partial) => buffered.push(()),
                    other => break other,
                }
            };
            assert!(!buffered.is_empty());
            assert_eq!(end.unwrap_err().kind(), ErrorKind::Io);
        })
        .await;
    }

    #[tokio::test]
    async fn nodelay_is_set_on_dialled_and_accepted_sockets() {
        crate::bounded(async {
            let local = addr("tcp://127.0.0.1:0");
            let l = listen(&local, &parse_tcp(&local).unwrap(), Duration::from_secs(5))
                .await
                .unwrap();
            let target = parse_tcp(&l.addr).unwrap();
            let (d, a) = tokio::join!(
                dial_stream(&l.addr, &target, Duration::from_secs(5)),
                l.accept_stream()
            );
            let (d, (a, _)) = (d.unwrap(), a.unwrap());
            assert!(d.nodelay().unwrap());
            assert!(a.nodelay().unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn ipv6_loopback_when_the_machine_has_it() {
        crate::bounded(async {
            let t = TcpTransport::new();
            let mut listener = match t.listen(&addr("tcp://[::1]:0")).await {
                Ok(listener) => listener,
                Err(e) => {
                    // Where CI runs, the machine is meant to have it: a skip would pass silently.
                    assert!(
                        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                        "CI is set, and ::1 cannot be bound here ({e})"
                    );
                    eprintln!("skipped: ::1 cannot be bound on this machine ({e})");
                    return;
                }
            };
            let local = listener.local_addr().clone();
            assert!(local.as_str().starts_with("tcp://[::1]:"), "{local}");
            let (d, a) = tokio::join!(t.dial(&local), listener.accept());
            d.unwrap();
            assert!(a.unwrap().remote.as_str().starts_with("tcp://[::1]:"));
        })
        .await;
    }

    #[tokio::test]
    async fn host_names_resolve_on_dial_and_listen() {
        crate::bounded(async {
            let t = TcpTransport::new();
            let mut listener = t.listen(&addr("tcp://localhost:0")).await.unwrap();
            let local = listener.local_addr().clone();
            let target = crate::addr::parse_tcp(&local).unwrap();
            assert!(
                matches!(target.host, Host::Ip(ip) if ip.is_loopback()),
                "{local}"
            );
            // Dial by name: localhost resolves to the loopback address the listener took (or to
            // another loopback address first, which refuses, and then this one).
            let by_name = addr(&format!("tcp://localhost:{}", target.port));
            let (d, a) = tokio::join!(t.dial(&by_name), listener.accept());
            assert_eq!(d.unwrap().remote, by_name);
            a.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn refused_and_malformed_dials_are_io_and_config_errors() {
        crate::bounded(async {
            let t = TcpTransport::new();
            // A port that was just free: nothing listens there now.
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = free.local_addr().unwrap().port();
            drop(free);
            let err = t
                .dial(&addr(&format!("tcp://127.0.0.1:{port}")))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            let source = std::error::Error::source(&err).expect("the system's error");
            let io = source.downcast_ref::<std::io::Error>().unwrap();
            assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

            for bad in ["tcp://127.0.0.1:0", "tcp://h", "tcp://::1:7"] {
                let err = t.dial(&addr(bad)).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            }
            let err = t.listen(&addr("tcp://h:x")).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        })
        .await;
    }

    #[tokio::test]
    async fn a_taken_port_is_an_io_error() {
        crate::bounded(async {
            let t = TcpTransport::new();
            let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = held.local_addr().unwrap().port();
            let err = t
                .listen(&addr(&format!("tcp://127.0.0.1:{port}")))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert!(std::error::Error::source(&err).is_some());
        })
        .await;
    }

    /// A listener whose accept queue is full drops new SYNs (Linux), so a connect to it hangs
    /// like one to a black-holed address, on loopback: the dial must give up at the timeout.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_dial_nobody_answers_gives_up_at_the_connect_timeout() {
        crate::bounded(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let full = socket.listen(0).unwrap(); // never accepts
            let local = tcp_addr(full.local_addr().unwrap()).unwrap();
            let t = TcpTransport::new().connect_timeout(Duration::from_millis(200));
            let mut held = Vec::new();
            let mut timed_out = None;
            // The queue holds a connection or two; the one after hangs.
            for _ in 0..16 {
                let t0 = tokio::time::Instant::now();
                match t.dial(&local).await {
                    Ok(c) => held.push(c),
                    Err(e) => {
                        timed_out = Some((e, t0.elapsed()));
                        break;
                    }
                }
            }
            let (err, took) = timed_out.expect("a dial to a full accept queue hangs");
            assert_eq!(err.kind(), ErrorKind::Io);
            assert!(err.to_string().contains("timed out"), "{err}");
            assert!(took >= Duration::from_millis(200), "{took:?}");
            assert!(took < Duration::from_secs(5), "{took:?}");
        })
        .await;
    }
}
