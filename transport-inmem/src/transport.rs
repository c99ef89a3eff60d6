//! The transport of one node, and its listener.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::conn::{InMemReader, InMemWriter};
use crate::network::InMemNetwork;
use meshbus_core::{Addr, Connection, Error, ErrorKind, Listener, Transport};

/// The scheme of in-memory addresses: `inmem://name`.
pub const SCHEME: &str = "inmem";

fn io(detail: &'static str) -> Error {
    Error::new(ErrorKind::Io).with_detail(detail)
}

/// The [`Transport`] of one node of an [`InMemNetwork`], from
/// [`InMemNetwork::transport`]: listens on and dials `inmem://name`.
///
/// A dial to a name nobody listens on, or across a cut link, fails at once with an
/// [`Io`](ErrorKind::Io) error. The accepting side sees the dialler as `inmem://<node name>`.
#[derive(Clone)]
pub struct InMemTransport {
    net: InMemNetwork,
    node: Arc<str>,
    generation: u64,
}

impl InMemTransport {
    pub(crate) fn new(net: InMemNetwork, node: Arc<str>, generation: u64) -> Self {
        InMemTransport {
            net,
            node,
            generation,
        }
    }

    /// The name of the node this transport belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The network.
    pub fn network(&self) -> &InMemNetwork {
        &self.net
    }

    fn check(&self, addr: &Addr) -> Result<(), Error> {
        if addr.scheme() != SCHEME {
            return Err(Error::new(ErrorKind::Config)
                .with_detail(format!("the in-memory transport cannot serve {addr}")));
        }
        if !self.net.is_current(&self.node, self.generation) {
            return Err(io("this node was killed"));
        }
        Ok(())
    }
}

impl fmt::Debug for InMemTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for InMemTransport {
    fn schemes(&self) -> &'static [&'static str] {
        &[SCHEME]
    }

    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        self.check(addr)?;
        let name = addr.rest();
        let Some((id, backlog)) = self.net.register_listener(name, &self.node) else {
            return Err(Error::new(ErrorKind::Io).with_detail(format!("address in use: {addr}")));
        };
        tracing::debug!(node = &*self.node, %addr, "inmem: listening");
        Ok(Box::new(InMemListener {
            net: self.net.clone(),
            addr: addr.clone(),
            id,
            backlog,
        }))
    }

    async fn dial(&self, addr: &Addr) -> Result<Connection, Error> {
        self.check(addr)?;
        let me: Addr = format!("{SCHEME}://{}", self.node).parse()?;
        let (owner, backlog, conn) = self.net.connect(&self.node, addr.rest()).map_err(io)?;
        let (up_tx, up_rx) = conn.up;
        let (down_tx, down_rx) = conn.down;
        let server = Connection {
            reader: Box::new(InMemReader::new(
                self.net.clone(),
                self.node.clone(),
                owner.clone(),
                up_rx,
                conn.shared.clone(),
            )),
            writer: Box::new(InMemWriter::new(
                self.net.clone(),
                owner.clone(),
                self.node.clone(),
                down_tx,
                conn.shared.clone(),
            )),
            remote: me,
        };
        if backlog.try_send(server).is_err() {
            // Full, or the listener went away after the lookup.
            return Err(io("connection refused: the listener is not accepting"));
        }
        tracing::debug!(from = &*self.node, to = &*owner, %addr, "inmem: connected");
        Ok(Connection {
            reader: Box::new(InMemReader::new(
                self.net.clone(),
                owner.clone(),
                self.node.clone(),
                down_rx,
                conn.shared.clone(),
            )),
            writer: Box::new(InMemWriter::new(
                self.net.clone(),
                self.node.clone(),
                owner,
                up_tx,
                conn.shared,
            )),
            remote: addr.clone(),
        })
    }
}

/// A [`Listener`] on `inmem://name`. Dropping it frees the name.
pub struct InMemListener {
    net: InMemNetwork,
    addr: Addr,
    id: u64,
    backlog: mpsc::Receiver<Connection>,
}

impl fmt::Debug for InMemListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Listener for InMemListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// Cancel safe. Returns [`Closed`](ErrorKind::Closed) once its node was killed and every
    /// connection dialled before has been accepted.
    async fn accept(&mut self) -> Result<Connection, Error> {
        self.backlog.recv().await.ok_or_else(|| {
            Error::new(ErrorKind::Closed).with_detail("the listener's node was killed")
        })
    }
}

impl Drop for InMemListener {
    fn drop(&mut self) {
        self.net.unregister_listener(self.addr.rest(), self.id);
    }
}
