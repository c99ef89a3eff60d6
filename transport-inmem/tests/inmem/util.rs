use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use meshbus_core::wire::{Frame, FrameCodec, FrameKind};
use meshbus_core::{Connection, Listener, ReadEvent, Transport};
use meshbus_transport_inmem::InMemNetwork;

pub(crate) const LIMIT: usize = meshbus_core::wire::DEFAULT_MAX_FRAME_SIZE;

/// An encoded `Event` frame whose request id is `id`.
pub(crate) fn frame(id: u64) -> Bytes {
    let mut f = Frame::new(FrameKind::Event, Bytes::from(id.to_be_bytes().to_vec()));
    f.request_id = id;
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&f, &mut buf).unwrap();
    buf.freeze()
}

pub(crate) fn frames(ids: impl IntoIterator<Item = u64>) -> Vec<Bytes> {
    ids.into_iter().map(frame).collect()
}

pub(crate) fn id_of(bytes: &Bytes) -> u64 {
    FrameCodec::default()
        .decode(&mut BytesMut::from(&bytes[..]))
        .unwrap()
        .unwrap()
        .request_id
}

/// Node `listener` listens on `inmem://<listener>`.
pub(crate) async fn listen(net: &InMemNetwork, node: &str) -> Box<dyn Listener> {
    net.transport(node)
        .listen(&format!("inmem://{node}").parse().unwrap())
        .await
        .unwrap()
}

/// `dialler` dials `listener`'s listener; returns (dialler's end, listener's end).
pub(crate) async fn connect(
    net: &InMemNetwork,
    dialler: &str,
    listener: &mut Box<dyn Listener>,
) -> (Connection, Connection) {
    let a = net
        .transport(dialler)
        .dial(listener.local_addr())
        .await
        .unwrap();
    let b = listener.accept().await.unwrap();
    (a, b)
}

/// A connection between fresh nodes `a` (dialler) and `b` (listener).
pub(crate) async fn pair(net: &InMemNetwork, a: &str, b: &str) -> (Connection, Connection) {
    let mut l = listen(net, b).await;
    connect(net, a, &mut l).await
}

pub(crate) async fn send(conn: &mut Connection, ids: impl IntoIterator<Item = u64>) {
    let mut batch = frames(ids);
    conn.writer.write_batch(&mut batch).await.unwrap();
    assert!(batch.is_empty());
}

/// The ids of every frame readable without waiting.
pub(crate) fn ready_ids(conn: &mut Connection) -> Vec<u64> {
    let mut ids = Vec::new();
    // Unconstrained: tokio's co-operative budget would make a long run of ready reads pend.
    while let Some(event) = tokio::task::unconstrained(conn.reader.read(LIMIT)).now_or_never() {
        match event.unwrap() {
            ReadEvent::Frame(f) => ids.push(id_of(&f)),
            other => panic!("expected a frame, got {other:?}"),
        }
    }
    ids
}

pub(crate) async fn read_id(conn: &mut Connection) -> u64 {
    match conn.reader.read(LIMIT).await.unwrap() {
        ReadEvent::Frame(f) => id_of(&f),
        other => panic!("expected a frame, got {other:?}"),
    }
}
