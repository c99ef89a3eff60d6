//! `wss://` over real sockets on 127.0.0.1, with certificates made here by rcgen: the
//! conformance suite, a two-node mesh, refused certificates, clients that do not speak TLS,
//! configuration errors.

#![cfg(feature = "tls")]

use std::future::{Future, IntoFuture};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use meshbus_core::test_util::check_transport;
use meshbus_core::transport::{Addr, ThroughWrite};
use meshbus_core::{
    Bus, Command, Connection, Context, ErrorKind, Event, HandlerError, Listener, ReadEvent, Scope,
    Transport,
};
use meshbus_transport_ws::{TlsClient, TlsServer, WsTransport};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(10);
const LIMIT: usize = meshbus_core::wire::DEFAULT_MAX_FRAME_SIZE;

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {BOUND:?}"))
}

/// A certificate authority and a server certificate it issued for 127.0.0.1 and localhost,
/// all PEM.
struct Pki {
    ca: String,
    chain: String,
    key: String,
}

fn pki(name: &str) -> Pki {
    pki_for(name, &["127.0.0.1", "localhost"])
}

/// As [`pki`], the server certificate naming `names`.
fn pki_for(name: &str, names: &[&str]) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        chain: leaf.pem(),
        key: key.serialize_pem(),
    }
}

fn server(pki: &Pki) -> TlsServer {
    TlsServer::from_pem_bytes(pki.chain.as_bytes(), pki.key.as_bytes()).unwrap()
}

fn client(pki: &Pki) -> TlsClient {
    TlsClient::with_roots_pem_bytes(pki.ca.as_bytes()).unwrap()
}

/// A transport that listens with `pki`'s certificate and trusts `pki`'s CA.
fn wss(pki: &Pki) -> WsTransport {
    WsTransport::new()
        .tls_server(server(pki))
        .tls_client(client(pki))
}

fn listen_addr() -> Addr {
    "wss://127.0.0.1:0/meshbus".parse().unwrap()
}

/// An encoded frame of `len` body bytes.
fn frame(id: u8, len: usize) -> Bytes {
    let mut buf = BytesMut::new();
    let body = vec![id; len];
    let codec = meshbus_core::wire::FrameCodec {
        compress_threshold: usize::MAX,
        ..Default::default()
    };
    let frame =
        meshbus_core::wire::Frame::new(meshbus_core::wire::FrameKind::Event, Bytes::from(body));
    codec.encode(&frame, &mut buf).unwrap();
    buf.freeze()
}

async fn next_frame(conn: &mut Connection) -> Bytes {
    within("a frame", async {
        loop {
            match conn.reader.read(LIMIT).await.unwrap() {
                ReadEvent::Frame(f) => return f,
                ReadEvent::Partial => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    })
    .await
}

/// Dials `listener` with `transport` and checks that a frame goes each way.
async fn a_good_client_is_served(transport: &WsTransport, listener: &mut Box<dyn Listener>) {
    let addr = listener.local_addr().clone();
    let (dialled, accepted) = within("a dial and an accept", async {
        tokio::join!(transport.dial(&addr), listener.accept())
    })
    .await;
    let (mut a, mut b) = (dialled.unwrap(), accepted.unwrap());
    a.writer.write_batch(&mut vec![frame(1, 10)]).await.unwrap();
    assert_eq!(next_frame(&mut b).await, frame(1, 10));
    b.writer.write_batch(&mut vec![frame(2, 10)]).await.unwrap();
    assert_eq!(next_frame(&mut a).await, frame(2, 10));
}

#[tokio::test]
async fn wss_passes_the_conformance_suite() {
    check_transport(&wss(&pki("conformance")), &listen_addr()).await;
}

#[tokio::test]
async fn wss_is_served_with_ws_and_keeps_the_scheme_and_path() {
    let pki = pki("scheme");
    let t = wss(&pki);
    assert_eq!(t.schemes(), ["ws", "wss"]);
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let local = listener.local_addr().clone();
    assert_eq!(local.scheme(), "wss");
    assert!(local.as_str().ends_with("/meshbus"), "{local}");
    assert!(!local.as_str().contains(":0/"), "{local}: port 0 resolved");
    let (dialled, accepted) = within("dial and accept", async {
        tokio::join!(t.dial(&local), listener.accept())
    })
    .await;
    assert_eq!(dialled.unwrap().remote, local);
    assert_eq!(accepted.unwrap().remote.scheme(), "wss");
}

/// The writer's write-through works over TLS: a lone frame written from the caller's call
/// arrives.
#[tokio::test]
async fn a_frame_written_through_crosses_tls() {
    let pki = pki("through");
    let t = wss(&pki);
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let addr = listener.local_addr().clone();
    let (dialled, accepted) = within("dial and accept", async {
        tokio::join!(t.dial(&addr), listener.accept())
    })
    .await;
    let (mut a, mut b) = (dialled.unwrap(), accepted.unwrap());
    let through = a
        .writer
        .write_through()
        .expect("wss offers a write-through");
    match through.try_write(frame(7, 100)) {
        ThroughWrite::Written => {}
        // Taken but not all out: the writer's flush finishes it.
        ThroughWrite::Unflushed => a.writer.write_batch(&mut Vec::new()).await.unwrap(),
        other => panic!("an idle link did not take a small frame: {other:?}"),
    }
    assert_eq!(next_frame(&mut b).await, frame(7, 100));
}

#[tokio::test]
async fn a_dialler_trusting_another_ca_is_refused_and_the_listener_serves_on() {
    let good = pki("good");
    let other = pki("other");
    let t = wss(&good);
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let addr = listener.local_addr().clone();

    let stranger = WsTransport::new().tls_client(client(&other));
    let err = within("the refused dial", stranger.dial(&addr))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("TLS handshake") && text.contains(addr.as_str()),
        "{text}"
    );
    assert!(text.contains("certificate"), "{text}");

    a_good_client_is_served(&t, &mut listener).await;
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    // A certificate for localhost only, dialled by IP address: the address's host is the
    // name checked.
    let named = pki_for("named", &["localhost"]);
    let t = wss(&named);
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let addr = listener.local_addr().clone();
    let err = within("the refused dial", t.dial(&addr)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let by_name: Addr = addr
        .as_str()
        .replacen("127.0.0.1", "localhost", 1)
        .parse()
        .unwrap();
    let (dialled, accepted) = within("a dial by name", async {
        tokio::join!(t.dial(&by_name), listener.accept())
    })
    .await;
    dialled.unwrap();
    accepted.unwrap();
}

#[tokio::test]
async fn plain_clients_and_garbage_are_dropped_and_the_listener_serves_on() {
    let pki = pki("plain");
    let t = wss(&pki).upgrade_timeout(Duration::from_secs(5));
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let addr = listener.local_addr().clone();

    // A plain WebSocket dial: its upgrade request is no TLS record.
    let plain: Addr = addr
        .as_str()
        .replacen("wss://", "ws://", 1)
        .parse()
        .unwrap();
    let err = within("a plain dial", WsTransport::new().dial(&plain))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");

    // Garbage: the listener closes the socket.
    let port: u16 = addr
        .as_str()
        .trim_end_matches("/meshbus")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut junk = BytesMut::new();
    for i in 0..4096u32 {
        junk.put_u32(i.wrapping_mul(2_654_435_761));
    }
    tcp.write_all(&junk).await.unwrap();
    let mut buf = [0u8; 1024];
    within("the listener to close the garbage", async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // an alert
            }
        }
    })
    .await;

    a_good_client_is_served(&t, &mut listener).await;
}

/// A client that opens a socket and says nothing is dropped once the upgrade timeout (which
/// bounds the TLS handshake too) has passed.
#[tokio::test]
async fn a_client_silent_in_the_tls_handshake_is_dropped() {
    let pki = pki("silent");
    let t = wss(&pki).upgrade_timeout(Duration::from_millis(200));
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    let port: u16 = listener
        .local_addr()
        .as_str()
        .trim_end_matches("/meshbus")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 16];
    let read = within("the listener to drop a silent client", tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    a_good_client_is_served(&t, &mut listener).await;
}

#[tokio::test]
async fn wss_without_its_configuration_is_a_config_error_that_says_what_to_set() {
    let plain = WsTransport::new();
    // Not offered either: a peer's `wss://` address is not one this transport can dial.
    assert_eq!(plain.schemes(), ["ws"]);
    let err = plain.listen(&listen_addr()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("tls_server"), "{err}");
    let err = plain
        .dial(&"wss://127.0.0.1:1/meshbus".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("tls_client"), "{err}");
}

#[tokio::test]
async fn pem_files_load_and_their_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = pki("files");
    let b = pki("mismatch");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let chain = write("chain.pem", &a.chain);
    let key = write("key.pem", &a.key);
    let ca = write("ca.pem", &a.ca);
    let other_key = write("other-key.pem", &b.key);
    let empty = write("empty.pem", "");
    let broken = write("broken.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let missing = dir.path().join("missing.pem");

    let t = WsTransport::new()
        .tls_server(TlsServer::from_pem_files(&chain, &key).unwrap())
        .tls_client(TlsClient::with_roots_pem(&ca).unwrap());
    let mut listener = t.listen(&listen_addr()).await.unwrap();
    a_good_client_is_served(&t, &mut listener).await;

    let config_error = |result: Result<(), meshbus_core::Error>, needles: &[&str]| {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        for needle in needles {
            assert!(err.to_string().contains(needle), "{needle:?} not in: {err}");
        }
    };
    let server = |c, k| TlsServer::from_pem_files(c, k).map(drop);
    let roots = |r| TlsClient::with_roots_pem(r).map(drop);
    config_error(server(&missing, &key), &["missing.pem", "could not read"]);
    config_error(server(&chain, &missing), &["missing.pem", "private key"]);
    config_error(server(&empty, &key), &["empty.pem", "no certificate"]);
    config_error(server(&chain, &empty), &["empty.pem", "no private key"]);
    config_error(
        server(&broken, &key),
        &["broken.pem", "not valid PEM", "-----END CERTIFICATE-----"],
    );
    config_error(
        server(&chain, &other_key),
        &["other-key.pem", "chain.pem", "does not belong"],
    );
    // A key file is no root certificate.
    config_error(roots(&key), &["key.pem", "no certificate"]);
    config_error(roots(&missing), &["missing.pem"]);
}

#[derive(Serialize, Deserialize)]
struct Echo(String);

impl Command for Echo {
    const NAME: &'static str = "wss.echo";
    type Reply = String;
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Note(u32);

impl Event for Note {
    const NAME: &'static str = "wss.note";
}

async fn echo(e: Echo, _ctx: Context) -> Result<String, HandlerError> {
    Ok(format!("echo {}", e.0))
}

#[tokio::test]
async fn a_two_node_mesh_over_wss_answers_commands_and_delivers_events() {
    let pki = pki("mesh");
    let node = |name: &str| {
        Bus::builder()
            .name(name)
            .transport(wss(&pki))
            .listen("wss://127.0.0.1:0/meshbus")
    };
    let a = node("a").command_handler(echo).start().await.unwrap();
    let a_addr = a.listen_addrs()[0].to_string();
    assert!(a_addr.starts_with("wss://127.0.0.1:"), "{a_addr}");
    let mut notes = a.subscribe::<Note>().unwrap();
    let b = node("b").peers([a_addr]).start().await.unwrap();

    within("a's handler", b.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
    let reply = within(
        "a reply",
        b.commands().cluster().send(Echo("hi".into())).into_future(),
    )
    .await;
    assert_eq!(reply.unwrap(), "echo hi");

    within(
        "a's subscription",
        b.ready().subscribers::<Note>(Scope::Cluster, 1),
    )
    .await;
    b.events().cluster().publish(Note(42)).await.unwrap();
    let note = within("the event", notes.recv()).await.unwrap();
    assert_eq!(*note, Note(42));

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
