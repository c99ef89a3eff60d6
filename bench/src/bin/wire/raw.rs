//! The baselines: plain tokio sockets (length-prefixed frames) and plain tokio-tungstenite.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::msg::Wire;

/// The largest frame the baselines accept.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// How many frames the coalescing writer takes for one write at most (as meshbus's writer).
const BATCH: usize = 256;

/// A listener of any of the three wires.
pub(crate) enum RawListener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl RawListener {
    pub(crate) async fn bind(wire: Wire) -> io::Result<RawListener> {
        match wire {
            Wire::Tcp | Wire::Ws => Ok(RawListener::Tcp(TcpListener::bind("127.0.0.1:0").await?)),
            Wire::Unix => {
                let path = crate::msg::socket_path("raw");
                Ok(RawListener::Unix(UnixListener::bind(&path)?, path))
            }
        }
    }

    /// What a client passes to [`EchoClient::connect`]: `host:port` or a path.
    pub(crate) fn addr(&self) -> String {
        match self {
            RawListener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            RawListener::Unix(_, p) => p.display().to_string(),
        }
    }
}

impl Drop for RawListener {
    fn drop(&mut self) {
        if let RawListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads length-prefixed frames with as few system calls as the bytes allow.
pub(crate) struct FrameBuf {
    buf: BytesMut,
}

impl FrameBuf {
    fn new() -> Self {
        FrameBuf {
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next frame's body, or `None` at a clean end of stream.
    async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> io::Result<Option<Bytes>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "frame too large",
                    ));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

fn frame(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + body.len());
    b.put_u32(body.len() as u32);
    b.extend_from_slice(body);
    b.freeze()
}

// ---------------------------------------------------------------- round trip

/// Echoes every frame back, on every connection, until the listener is dropped.
pub(crate) async fn echo_server(listener: RawListener, wire: Wire) {
    loop {
        match (&listener, wire) {
            (RawListener::Tcp(l), Wire::Ws) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        let echoed = match m {
                            Message::Binary(b) => ws.send(Message::Binary(b)).await.is_ok(),
                            Message::Close(_) => false,
                            _ => true,
                        };
                        if !echoed {
                            return;
                        }
                    }
                });
            }
            (RawListener::Tcp(l), _) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(echo_stream(s));
            }
            (RawListener::Unix(l, _), _) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(echo_stream(s));
            }
        }
    }
}

async fn echo_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut reader = FrameBuf::new();
    let mut out = BytesMut::new();
    while let Ok(Some(body)) = reader.next(&mut s).await {
        out.clear();
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A round-trip client of one of the wires.
pub(crate) enum EchoClient {
    Tcp(TcpStream, FrameBuf),
    Unix(UnixStream, FrameBuf),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl EchoClient {
    pub(crate) async fn connect(wire: Wire, addr: &str) -> io::Result<EchoClient> {
        match wire {
            Wire::Tcp => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(EchoClient::Tcp(s, FrameBuf::new()))
            }
            Wire::Unix => Ok(EchoClient::Unix(
                UnixStream::connect(addr).await?,
                FrameBuf::new(),
            )),
            Wire::Ws => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), s)
                    .await
                    .map_err(io::Error::other)?;
                Ok(EchoClient::Ws(Box::new(ws)))
            }
        }
    }

    /// Sends `frame` (a length-prefixed frame for the streams, the body for WebSocket) and
    /// waits for the echo.
    pub(crate) async fn round_trip(&mut self, frame: &Bytes, body: &Bytes) -> io::Result<()> {
        let got = match self {
            EchoClient::Tcp(s, r) => {
                s.write_all(frame).await?;
                r.next(s).await?
            }
            EchoClient::Unix(s, r) => {
                s.write_all(frame).await?;
                r.next(s).await?
            }
            EchoClient::Ws(ws) => {
                ws.send(Message::Binary(body.clone()))
                    .await
                    .map_err(io::Error::other)?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => break Some(b),
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(io::Error::other(e)),
                    }
                }
            }
        };
        match got {
            Some(b) if b.len() == body.len() => Ok(()),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "echo of another size",
            )),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    /// A length-prefixed frame of `body`, for [`round_trip`](Self::round_trip).
    pub(crate) fn frame(body: &[u8]) -> Bytes {
        frame(body)
    }
}

// ---------------------------------------------------------------- throughput

/// Counts the frames of every connection; an empty frame ends a run and is answered with the
/// count and the nanoseconds from the first frame to the last (two big-endian u64).
pub(crate) async fn count_server(listener: RawListener, wire: Wire) {
    loop {
        match (&listener, wire) {
            (RawListener::Tcp(l), Wire::Ws) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    let mut count = Counter::new();
                    while let Some(Ok(m)) = ws.next().await {
                        match m {
                            Message::Binary(b) if b.is_empty() => {
                                let report = count.take();
                                if ws.send(Message::Binary(report)).await.is_err() {
                                    return;
                                }
                            }
                            Message::Binary(_) => count.hit(),
                            Message::Close(_) => return,
                            _ => {}
                        }
                    }
                });
            }
            (RawListener::Tcp(l), _) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(count_stream(s));
            }
            (RawListener::Unix(l, _), _) => {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(count_stream(s));
            }
        }
    }
}

struct Counter {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    cpu_first: u64,
}

impl Counter {
    fn new() -> Self {
        Counter {
            count: 0,
            first: None,
            last: None,
            cpu_first: 0,
        }
    }

    fn hit(&mut self) {
        let now = Instant::now();
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(now);
            self.cpu_first = crate::msg::cpu_ns();
        }
        self.last = Some(now);
    }

    /// The report (count, nanos), and a fresh start.
    fn take(&mut self) -> Bytes {
        let nanos = match (self.first, self.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_nanos() as u64,
            _ => 0,
        };
        let mut b = BytesMut::with_capacity(24);
        b.put_u64(self.count);
        b.put_u64(nanos);
        b.put_u64(crate::msg::cpu_ns().saturating_sub(self.cpu_first));
        *self = Counter::new();
        b.freeze()
    }
}

async fn count_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut reader = FrameBuf::new();
    let mut count = Counter::new();
    while let Ok(Some(body)) = reader.next(&mut s).await {
        if body.is_empty() {
            let report = frame(&count.take());
            if s.write_all(&report).await.is_err() {
                return;
            }
        } else {
            count.hit();
        }
    }
}

/// What one throughput run did, at both ends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunReport {
    pub(crate) sent: u64,
    pub(crate) count: u64,
    pub(crate) nanos: u64,
    pub(crate) dropped: u64,
    pub(crate) pub_cpu: u64,
    pub(crate) sub_cpu: u64,
}

/// One raw throughput run: frames of `payload` go through a bounded channel to a writer task
/// that coalesces everything queued (up to [`BATCH`] frames) into one write, for `secs` or
/// `max` frames.
pub(crate) async fn blast(
    wire: Wire,
    addr: &str,
    payload: &[u8],
    secs: Duration,
    max: u64,
) -> io::Result<RunReport> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let (report_tx, report_rx) = tokio::sync::oneshot::channel::<io::Result<Bytes>>();
    let wire_addr = addr.to_owned();
    let writer = tokio::spawn(async move {
        let result = async {
            match wire {
                Wire::Tcp => {
                    let s = TcpStream::connect(&wire_addr).await?;
                    s.set_nodelay(true)?;
                    coalesce_stream(s, &mut rx).await
                }
                Wire::Unix => {
                    coalesce_stream(UnixStream::connect(&wire_addr).await?, &mut rx).await
                }
                Wire::Ws => coalesce_ws(&wire_addr, &mut rx).await,
            }
        }
        .await;
        let _ = report_tx.send(result);
    });
    let start = Instant::now();
    let cpu = crate::msg::cpu_ns();
    let mut sent = 0u64;
    while sent < max {
        // The producer pays what an application pays to make a message: one allocation and
        // one copy.
        let msg = match wire {
            Wire::Ws => Bytes::copy_from_slice(payload),
            _ => frame(payload),
        };
        if tx.send(msg).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 1024 == 0 && start.elapsed() >= secs {
            break;
        }
    }
    // The end marker.
    let end = match wire {
        Wire::Ws => Bytes::new(),
        _ => frame(&[]),
    };
    let _ = tx.send(end).await;
    drop(tx);
    let report = report_rx
        .await
        .map_err(|_| io::Error::other("raw writer gone"))??;
    let _ = writer.await;
    let pub_cpu = crate::msg::cpu_ns().saturating_sub(cpu);
    let mut r = report;
    if r.len() < 24 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short report"));
    }
    Ok(RunReport {
        sent,
        count: r.get_u64(),
        nanos: r.get_u64(),
        dropped: 0,
        pub_cpu,
        sub_cpu: r.get_u64(),
    })
}

async fn coalesce_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
) -> io::Result<Bytes> {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        let mut n = 1;
        while n < BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    batch.extend_from_slice(&b);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        s.write_all(&batch).await?;
    }
    let mut reader = FrameBuf::new();
    reader
        .next(&mut s)
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

async fn coalesce_ws(addr: &str, rx: &mut tokio::sync::mpsc::Receiver<Bytes>) -> io::Result<Bytes> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), s)
        .await
        .map_err(io::Error::other)?;
    while let Some(first) = rx.recv().await {
        ws.feed(Message::Binary(first))
            .await
            .map_err(io::Error::other)?;
        let mut n = 1;
        while n < BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    ws.feed(Message::Binary(b))
                        .await
                        .map_err(io::Error::other)?;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        ws.flush().await.map_err(io::Error::other)?;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}
