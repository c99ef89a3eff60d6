//! `unix:///path`: Unix-domain stream sockets, for nodes on one machine.

#[cfg(unix)]
pub(crate) use imp::{dial, listen};

#[cfg(not(unix))]
pub(crate) use unsupported::{dial, listen};

#[cfg(not(unix))]
mod unsupported {
    use std::time::Duration;

    use meshbus_core::{Addr, Connection, Error, Listener};

    use crate::addr::{bad, parse_unix};

    pub(crate) async fn listen(addr: &Addr, _: Duration) -> Result<Box<dyn Listener>, Error> {
        parse_unix(addr)?;
        Err(bad(addr, "Unix-domain sockets need a Unix platform"))
    }

    pub(crate) async fn dial(addr: &Addr, _: Duration) -> Result<Connection, Error> {
        parse_unix(addr)?;
        Err(bad(addr, "Unix-domain sockets need a Unix platform"))
    }
}

#[cfg(unix)]
mod imp {
    use std::fmt;
    use std::io;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use async_trait::async_trait;
    use meshbus_core::transport::{StreamFrameReader, StreamFrameWriter, StreamThrough};
    use meshbus_core::{Addr, Connection, Error, Listener};
    use tokio::net::{UnixListener, UnixStream};

    use crate::addr::{bad, parse_unix, UNIX_SCHEME};
    use crate::transport::{
        accept_error, classify_accept_error, io_error, AcceptFailure, MAX_SKIPPED_ACCEPTS,
    };

    /// Listens on the socket path of `addr`, reclaiming it from a dead process if need be.
    /// `probe_timeout` bounds the connect that tells a live listener from a stale file.
    pub(crate) async fn listen(
        addr: &Addr,
        probe_timeout: Duration,
    ) -> Result<Box<dyn Listener>, Error> {
        let path = parse_unix(addr)?;
        let listener = match bind(addr, &path) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                reclaim_stale(addr, &path, probe_timeout).await?;
                bind(addr, &path).map_err(|e| bind_error(addr, e))?
            }
            other => other.map_err(|e| bind_error(addr, e))?,
        };
        // Remember which file we made, so that drop never removes a successor's socket.
        let made = tokio::fs::symlink_metadata(&path)
            .await
            .ok()
            .map(|m| (m.dev(), m.ino()));
        tracing::debug!(%addr, "unix: listening");
        Ok(Box::new(UnixFrameListener {
            listener,
            addr: addr.clone(),
            path,
            made,
        }))
    }

    fn bind(addr: &Addr, path: &Path) -> io::Result<UnixListener> {
        tracing::trace!(%addr, "unix: binding");
        UnixListener::bind(path)
    }

    fn bind_error(addr: &Addr, err: io::Error) -> Error {
        if err.kind() == io::ErrorKind::InvalidInput {
            // A path over the platform's limit (108 bytes on Linux) or with a NUL byte.
            return bad(addr, "the system refuses this socket path (too long?)").with_source(err);
        }
        io_error(format!("cannot listen on {addr}"), err)
    }

    /// The path is taken. If it is a socket nobody answers on (connect refused), it was left by
    /// a process that died: remove it. Anything else is the caller's error.
    async fn reclaim_stale(addr: &Addr, path: &Path, probe_timeout: Duration) -> Result<(), Error> {
        let in_use = |why: &str| {
            io_error(
                format!("cannot listen on {addr}: {why}"),
                io::ErrorKind::AddrInUse.into(),
            )
        };
        let meta = tokio::fs::symlink_metadata(path)
            .await
            .map_err(|e| io_error(format!("cannot listen on {addr}"), e))?;
        if !meta.file_type().is_socket() {
            return Err(in_use(
                "the path exists and is not a socket; it is left alone",
            ));
        }
        match tokio::time::timeout(probe_timeout, UnixStream::connect(path)).await {
            Ok(Ok(_live)) => Err(in_use("another listener answers on it")),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match tokio::fs::remove_file(path).await {
                    Ok(()) => {
                        tracing::info!(%addr, "unix: removed a stale socket file left by a dead listener");
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_error(
                        format!("cannot remove the stale socket file of {addr}"),
                        e,
                    )),
                }
            }
            Ok(Err(e)) => Err(io_error(
                format!("cannot listen on {addr}: cannot tell whether the socket file is in use"),
                e,
            )),
            // A listener too busy to take a connection is alive.
            Err(_) => Err(in_use("a listener holds it but does not accept")),
        }
    }

    /// Dials the socket path of `addr` within `timeout`.
    pub(crate) async fn dial(addr: &Addr, timeout: Duration) -> Result<Connection, Error> {
        let path = parse_unix(addr)?;
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(&path)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(io_error(format!("cannot connect to {addr}"), e)),
            Err(_) => {
                return Err(io_error(
                    format!("connecting to {addr} timed out after {timeout:?}"),
                    io::ErrorKind::TimedOut.into(),
                ))
            }
        };
        tracing::debug!(%addr, "unix: connected");
        Ok(connection(stream, addr.clone()))
    }

    /// How many bytes a Unix socket holds unread before its writer waits: 1 MiB where the
    /// system allows it (the kernel caps it at `net.core.wmem_max`). The default, about
    /// 208 KiB, makes a writer of a burst wait for its reader every two hundred frames of
    /// 1 KiB, where TCP on loopback grows its buffers by itself.
    const SEND_BUFFER: usize = 1 << 20;

    fn connection(stream: UnixStream, remote: Addr) -> Connection {
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(%remote, error = %e, "unix: the send buffer keeps its default size");
        }
        let through = crate::transport::through_handle(socket2::SockRef::from(&stream))
            .map(|dup| StreamThrough::new(std::os::unix::net::UnixStream::from(dup)));
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

    /// A [`Listener`] on a Unix socket path; dropping it removes the socket file it made.
    pub(crate) struct UnixFrameListener {
        listener: UnixListener,
        addr: Addr,
        path: PathBuf,
        /// Device and inode of the socket file bound, if they could be read.
        made: Option<(u64, u64)>,
    }

    impl fmt::Debug for UnixFrameListener {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UnixFrameListener")
                .field("addr", &self.addr)
                .finish_non_exhaustive()
        }
    }

    #[async_trait]
    impl Listener for UnixFrameListener {
        fn local_addr(&self) -> &Addr {
            &self.addr
        }

        /// Cancel safe: the only await is tokio's `accept`, which is.
        async fn accept(&mut self) -> Result<Connection, Error> {
            let mut skipped = 0;
            loop {
                match self.listener.accept().await {
                    Ok((stream, peer)) => {
                        // Clients rarely bind a path; then the socket we listen on is the best
                        // description of the link.
                        let remote = peer
                            .as_pathname()
                            .and_then(|p| p.to_str())
                            .and_then(|p| Addr::parse(&format!("{UNIX_SCHEME}://{p}")).ok())
                            .unwrap_or_else(|| self.addr.clone());
                        tracing::debug!(local = %self.addr, %remote, "unix: accepted");
                        return Ok(connection(stream, remote));
                    }
                    Err(e) => match classify_accept_error(&e) {
                        AcceptFailure::Skip if skipped < MAX_SKIPPED_ACCEPTS => {
                            tracing::debug!(addr = %self.addr, error = %e, "unix: skipped a failed accept");
                            skipped += 1;
                        }
                        _ => return Err(accept_error(&self.addr, e)),
                    },
                }
            }
        }
    }

    impl Drop for UnixFrameListener {
        fn drop(&mut self) {
            let ours = std::fs::symlink_metadata(&self.path)
                .is_ok_and(|m| m.file_type().is_socket() && Some((m.dev(), m.ino())) == self.made);
            if ours {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::debug!(addr = %self.addr, error = %e, "unix: cannot remove the socket file");
                }
            }
        }
    }

    #[cfg(test)]
    mod tests;
}
