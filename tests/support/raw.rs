//! A hand-driven peer: speaks the wire protocol with `meshbus_core::wire` and
//! `meshbus_core::proto::handshake` over an in-memory connection, inside the secure channel
//! ([`secure`](super::secure)), so a test decides exactly which connection carries what.

use bytes::{Bytes, BytesMut};
use meshbus::inmem::InMemNetwork;
use meshbus::transport::{FrameReader, FrameWriter, ReadEvent, Transport};
use meshbus::{Addr, NodeId};
use meshbus_core::proto::handshake::{Established, Handshake, LocalNode, Step};
use meshbus_core::trust::Identity;
use meshbus_core::wire::body::{decode_body, encode_body};
use meshbus_core::wire::control::{
    ControlMessage, Goodbye, GoodbyeReason, Hello, Interest, PeerIdentity, VersionRange,
};
use meshbus_core::wire::{Frame, FrameCodec, FrameKind, FrameName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{secure, within};

/// A peer with a fixed identity that dials nodes by hand.
pub(crate) struct RawPeer {
    /// What its `Hello` says; its node id is its static key's.
    pub(crate) identity: PeerIdentity,
    /// Its static key pair, from the seed it was made with.
    pub(crate) key: Identity,
    net: InMemNetwork,
    name: String,
}

impl RawPeer {
    /// Node `name` on `net`, in the default network and cluster, on `host-1`, advertising no
    /// address (so no node dials it: every connection is one the test opens). Its static key
    /// (so its node id) comes from `seed` ([`secure::identity`]).
    pub(crate) fn new(net: &InMemNetwork, name: &str, seed: u128) -> Self {
        let key = secure::identity(seed);
        RawPeer {
            identity: secure::peer_identity(&key, name),
            key,
            net: net.clone(),
            name: name.to_owned(),
        }
    }

    /// Dials `addr` and completes the secure handshake (without a network key, as the nodes
    /// of these tests): the sealed halves.
    async fn dial(&self, addr: &str) -> (Box<dyn FrameReader>, Box<dyn FrameWriter>) {
        let addr: Addr = addr.parse().unwrap();
        let conn = self.net.transport(&self.name).dial(&addr).await.unwrap();
        let secured = secure::dial(
            conn.reader,
            conn.writer,
            &self.key,
            secure::DEFAULT_NETWORK,
            Vec::new(),
        )
        .await
        .expect("the node completes the secure handshake");
        (secured.reader, secured.writer)
    }

    pub(crate) fn node_id(&self) -> NodeId {
        NodeId::from_u128(self.identity.node_id)
    }

    /// Dials `addr` and sends `hello` as it is (no check of ours on what it carries); the
    /// node's answer, or `Got::Closed` if it closed the connection without one.
    pub(crate) async fn hello_answer(&self, addr: &str, hello: &Hello) -> Got {
        self.hello_exchange(addr, hello).await.0
    }

    /// Dials `addr`, sends `hello` as it is, and expects a refusal: the frame the node
    /// answers with, after which it closes the connection (checked).
    pub(crate) async fn hello_refused(&self, addr: &str, hello: &Hello) -> Frame {
        let (got, mut reader) = self.hello_exchange(addr, hello).await;
        let Got::Frame(answer) = got else {
            panic!("the node closed without an answer");
        };
        loop {
            match within("the close after a refusal", reader.read(1 << 16)).await {
                Ok(ReadEvent::Closed) | Err(_) => return answer,
                Ok(ReadEvent::Frame(bytes)) => panic!("a frame after the refusal: {bytes:?}"),
                Ok(_) => {}
            }
        }
    }

    /// The answer to `hello` sent on a new connection to `addr`, and the connection's reader.
    async fn hello_exchange(&self, addr: &str, hello: &Hello) -> (Got, Box<dyn FrameReader>) {
        let (mut reader, mut writer) = self.dial(addr).await;
        let codec = FrameCodec::handshake();
        let frame = hello.to_frame().unwrap();
        let _ = writer.write_batch(&mut vec![encode(&codec, &frame)]).await;
        loop {
            match within("the answer to a Hello", reader.read(codec.max_frame_size)).await {
                Ok(ReadEvent::Frame(bytes)) => return (Got::Frame(decode(&codec, bytes)), reader),
                Ok(ReadEvent::Closed) | Err(_) => return (Got::Closed, reader),
                Ok(_) => {}
            }
        }
    }

    /// This peer's `Hello`, to change before [`hello_answer`](Self::hello_answer).
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            versions: VersionRange::CURRENT,
            identity: self.identity.clone(),
            max_frame_size: 1 << 20,
        }
    }

    /// Dials `addr` and completes the handshake; the connection reads from the start.
    pub(crate) async fn connect(&self, addr: &str) -> RawConn {
        self.connect_with(addr, true).await
    }

    /// Dials `addr` and completes the handshake; with `reading == false` nothing more is read
    /// from the connection until [`RawConn::resume_reading`], so the node's writer stalls
    /// once the link is full.
    pub(crate) async fn connect_with(&self, addr: &str, reading: bool) -> RawConn {
        let (mut reader, mut writer) = self.dial(addr).await;
        let now = tokio::time::Instant::now().into_std();
        let local = LocalNode::new(self.identity.clone());
        let (mut hs, hello) = Handshake::dial(&local, now).unwrap();
        let codec = FrameCodec::handshake();
        writer
            .write_batch(&mut vec![encode(&codec, &hello)])
            .await
            .unwrap();
        let ReadEvent::Frame(bytes) = reader.read(codec.max_frame_size).await.unwrap() else {
            panic!("no welcome");
        };
        let welcome = decode(&codec, bytes);
        let now = tokio::time::Instant::now().into_std();
        let Step::Established { established, .. } = hs.on_frame(welcome, now).unwrap() else {
            panic!("refused");
        };
        let (out_tx, out_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(256);
        let (reading_tx, reading_rx) = watch::channel(reading);
        let task = tokio::spawn(pump(
            reader,
            writer,
            established.clone(),
            out_rx,
            in_tx,
            reading_rx,
        ));
        RawConn {
            established,
            out: out_tx,
            inbox: in_rx,
            reading: reading_tx,
            next_id: 1_000,
            _task: AbortOnDrop(task),
        }
    }
}

/// What a [`RawConn`] received, Ping, Pong and Gossip left out (Pings are answered).
#[derive(Debug)]
pub(crate) enum Got {
    Frame(Frame),
    /// The node closed the connection.
    Closed,
}

/// One connection of a [`RawPeer`].
pub(crate) struct RawConn {
    pub(crate) established: Established,
    out: mpsc::Sender<Out>,
    inbox: mpsc::Receiver<Got>,
    reading: watch::Sender<bool>,
    next_id: u64,
    _task: AbortOnDrop,
}

enum Out {
    Frame(Frame),
    /// Bytes written as they are (inside the secure channel, like every frame).
    Bytes(Bytes),
    Flush(oneshot::Sender<()>),
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RawConn {
    /// Queues `frame` for writing; lost, as on a closed socket, once the node has closed the
    /// connection.
    pub(crate) async fn send(&self, frame: Frame) {
        let _ = self.out.send(Out::Frame(frame)).await;
    }

    /// Queues `bytes` for writing as they are, not as a frame (sealed like everything else):
    /// what the node's frame decoder reads next.
    pub(crate) async fn send_bytes(&self, bytes: Bytes) {
        let _ = self.out.send(Out::Bytes(bytes)).await;
    }

    /// Waits until every frame queued before has been handed to the link (which waits for
    /// room: the node has taken all but the link's capacity of them).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.out.send(Out::Flush(tx)).await.unwrap();
        within("a flush", rx).await.unwrap();
    }

    /// Says what a node says on a connection it replaced: nothing new comes on it.
    pub(crate) async fn send_replaced(&self) {
        let notice = Goodbye {
            reason: GoodbyeReason::Replaced,
        };
        self.send(notice.to_frame().unwrap()).await;
    }

    /// Waits for the node's notice that it replaced this connection.
    pub(crate) async fn recv_replaced(&mut self) {
        let frame = self
            .recv_where("a replaced notice", |f| f.kind == FrameKind::Goodbye)
            .await;
        let notice = Goodbye::from_frame(&frame).unwrap();
        assert_eq!(notice.reason, GoodbyeReason::Replaced);
    }

    /// Tells the node what this peer handles: an interest snapshot.
    pub(crate) async fn send_interest(&self, seq: u64, commands: &[&str], events: &[&str]) {
        let interest = Interest {
            seq,
            snapshot: true,
            commands_added: commands.iter().map(|c| (*c).to_owned()).collect(),
            events_added: events.iter().map(|e| (*e).to_owned()).collect(),
            ..Interest::default()
        };
        self.send(interest.to_frame().unwrap()).await;
    }

    /// Sends command `C` under a fresh request id; returns the id.
    pub(crate) async fn send_command<C: meshbus::Command>(&mut self, cmd: &C) -> u64 {
        self.next_id += 1;
        let mut frame = Frame::new(FrameKind::Command, encode_body(cmd).unwrap());
        frame.request_id = self.next_id;
        frame.name = Some(FrameName::inline(C::NAME));
        self.send(frame).await;
        self.next_id
    }

    /// Answers request `id` with `reply`.
    pub(crate) async fn reply<R: Serialize>(&self, id: u64, reply: &R) {
        let mut frame = Frame::new(FrameKind::Reply, encode_body(reply).unwrap());
        frame.request_id = id;
        self.send(frame).await;
    }

    /// The next frame or the close, within a minute.
    pub(crate) async fn recv(&mut self) -> Got {
        within("a frame from the node", self.inbox.recv())
            .await
            .unwrap_or(Got::Closed)
    }

    /// What has arrived already, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Got> {
        self.inbox.try_recv().ok()
    }

    /// The next frame that `keep` accepts, skipping others; panics on a close.
    pub(crate) async fn recv_where(&mut self, what: &str, keep: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            match self.recv().await {
                Got::Frame(f) if keep(&f) => return f,
                Got::Frame(_) => {}
                Got::Closed => panic!("closed while waiting for {what}"),
            }
        }
    }

    /// The next command frame named `C::NAME`: its request id and body.
    pub(crate) async fn recv_command<C: meshbus::Command + DeserializeOwned>(
        &mut self,
    ) -> (u64, C) {
        let f = self
            .recv_where(C::NAME, |f| {
                f.kind == FrameKind::Command
                    && matches!(&f.name, Some(FrameName::Inline(n)) if &**n == C::NAME)
            })
            .await;
        (f.request_id, decode_body(&f.body).unwrap())
    }

    /// The reply to request `id`.
    pub(crate) async fn recv_reply<R: DeserializeOwned>(&mut self, id: u64) -> R {
        let f = self
            .recv_where("a reply", |f| {
                matches!(f.kind, FrameKind::Reply | FrameKind::ReplyError) && f.request_id == id
            })
            .await;
        assert_eq!(f.kind, FrameKind::Reply, "{f:?}");
        decode_body(&f.body).unwrap()
    }

    /// The next interest message.
    pub(crate) async fn recv_interest(&mut self) -> Interest {
        let f = self
            .recv_where("interest", |f| f.kind == FrameKind::Interest)
            .await;
        Interest::from_frame(&f).unwrap()
    }

    /// Waits until the node closes the connection, skipping frames.
    pub(crate) async fn closed(&mut self) {
        while let Got::Frame(_) = self.recv().await {}
    }

    /// Starts reading a connection opened with `reading == false`.
    pub(crate) fn resume_reading(&self) {
        self.reading.send_replace(true);
    }
}

async fn pump(
    mut reader: Box<dyn FrameReader>,
    mut writer: Box<dyn FrameWriter>,
    established: Established,
    mut out: mpsc::Receiver<Out>,
    inbox: mpsc::Sender<Got>,
    mut reading: watch::Receiver<bool>,
) {
    let (send, receive) = (established.send_codec(), established.receive_codec());
    loop {
        let is_reading = *reading.borrow_and_update();
        tokio::select! {
            read = reader.read(receive.max_frame_size), if is_reading => {
                let frame = match read {
                    Ok(ReadEvent::Frame(bytes)) => decode(&receive, bytes),
                    Ok(ReadEvent::Closed) | Err(_) => {
                        let _ = inbox.send(Got::Closed).await;
                        return;
                    }
                    Ok(_) => continue,
                };
                match frame.kind {
                    FrameKind::Ping => {
                        let mut pong = Frame::new(FrameKind::Pong, Bytes::new());
                        pong.request_id = frame.request_id;
                        let _ = writer.write_batch(&mut vec![encode(&send, &pong)]).await;
                    }
                    FrameKind::Pong | FrameKind::Gossip => {}
                    _ => {
                        if inbox.send(Got::Frame(frame)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            out = out.recv() => match out {
                Some(Out::Frame(frame)) => {
                    let _ = writer.write_batch(&mut vec![encode(&send, &frame)]).await;
                }
                Some(Out::Bytes(bytes)) => {
                    let _ = writer.write_batch(&mut vec![bytes]).await;
                }
                Some(Out::Flush(done)) => {
                    let _ = done.send(());
                }
                None => return,
            },
            changed = reading.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// A Ping frame, for a peer that proves it is alive without reading.
pub(crate) fn ping() -> Frame {
    Frame::new(FrameKind::Ping, Bytes::new())
}

fn encode(codec: &FrameCodec, frame: &Frame) -> Bytes {
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    buf.freeze()
}

fn decode(codec: &FrameCodec, bytes: Bytes) -> Frame {
    codec
        .decode(&mut BytesMut::from(&bytes[..]))
        .unwrap()
        .unwrap()
}
