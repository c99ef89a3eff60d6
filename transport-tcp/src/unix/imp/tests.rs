use std::io::Write;

use meshbus_core::transport::ReadEvent;
use meshbus_core::{ErrorKind, Transport};

use super::*;
use crate::TcpTransport;

fn sock_addr(dir: &tempfile::TempDir, name: &str) -> (Addr, PathBuf) {
    let path = dir.path().join(name);
    let addr = Addr::parse(&format!("unix://{}", path.display())).unwrap();
    (addr, path)
}

fn io_kind(err: &Error) -> Option<io::ErrorKind> {
    std::error::Error::source(err)?
        .downcast_ref::<io::Error>()
        .map(io::Error::kind)
}

#[tokio::test]
async fn frames_cross_and_dropping_the_listener_removes_its_socket_file() {
    crate::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, path) = sock_addr(&dir, "a.sock");
        let t = TcpTransport::new();
        let mut listener = t.listen(&addr).await.unwrap();
        assert_eq!(listener.local_addr(), &addr);
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());

        let (d, a) = tokio::join!(t.dial(&addr), listener.accept());
        let (mut d, mut a) = (d.unwrap(), a.unwrap());
        assert_eq!(d.remote, addr);
        assert_eq!(
            a.remote, addr,
            "an unnamed client is described by the listener's path"
        );
        let frame = bytes::Bytes::from_static(&[
            0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ]);
        d.writer
            .write_batch(&mut vec![frame.clone()])
            .await
            .unwrap();
        let got = loop {
            match a.reader.read(1 << 16).await.unwrap() {
                ReadEvent::Frame(f) => break f,
                ReadEvent::Partial => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        };
        assert_eq!(got, frame);

        drop(listener);
        assert!(
            !path.exists(),
            "the socket file is removed with the listener"
        );
    })
    .await;
}

#[tokio::test]
async fn a_stale_socket_file_of_a_dead_listener_is_reclaimed() {
    crate::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, path) = sock_addr(&dir, "stale.sock");
        // A listener that "died": std's does not remove its file, so the file stays behind and
        // nobody answers on it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let t = TcpTransport::new();
        let mut listener = t.listen(&addr).await.unwrap();
        let (d, a) = tokio::join!(t.dial(&addr), listener.accept());
        d.unwrap();
        a.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_live_listener_is_never_displaced() {
    crate::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, path) = sock_addr(&dir, "live.sock");
        let t = TcpTransport::new();
        let mut first = t.listen(&addr).await.unwrap();
        let err = t.listen(&addr).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(io_kind(&err), Some(io::ErrorKind::AddrInUse));
        assert!(
            err.to_string().contains("another listener answers"),
            "{err}"
        );
        // The first still owns the path and serves.
        assert!(path.exists());
        let (d, a) = tokio::join!(t.dial(&addr), first.accept());
        d.unwrap();
        a.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_removed() {
    crate::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, path) = sock_addr(&dir, "precious.txt");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"keep me")
            .unwrap();
        let err = TcpTransport::new().listen(&addr).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");

        // Nor is a symbolic link, even one to a stale socket.
        let (link_addr, link) = sock_addr(&dir, "link.sock");
        let target = dir.path().join("target.sock");
        drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = TcpTransport::new().listen(&link_addr).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert!(target.exists());
    })
    .await;
}

#[tokio::test]
async fn dropping_a_listener_leaves_a_successors_socket_alone() {
    crate::bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, path) = sock_addr(&dir, "moved.sock");
        let old = TcpTransport::new().listen(&addr).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let successor = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(old);
        assert!(path.exists(), "the successor's socket file is still there");
        drop(successor);
    })
    .await;
}

#[tokio::test]
async fn bad_paths_are_config_errors_and_missing_ones_io_errors() {
    crate::bounded(async {
        let t = TcpTransport::new();
        let err = t
            .listen(&"unix://a.sock".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let long: Addr = format!("unix:///tmp/{}.sock", "x".repeat(200))
            .parse()
            .unwrap();
        let err = t.listen(&long).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("socket path"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let (addr, _) = sock_addr(&dir, "nobody.sock");
        let err = t.dial(&addr).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(io_kind(&err), Some(io::ErrorKind::NotFound));
    })
    .await;
}
