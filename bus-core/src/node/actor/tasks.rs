//! The tasks the actor starts beside itself (accepting, dialling, discovery), and how it tells
//! that the node is cut off.

use super::*;

/// How long a node may look for its first peer before it warns that it has none.
pub(super) const ALONE_WARNING_AFTER: Duration = Duration::from_secs(10);

/// Since when a node has had no peer while it has somewhere to look for one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Alone {
    pub(super) since: Option<std::time::Instant>,
    pub(super) warned: bool,
}

impl Alone {
    /// Says so in the logs, once.
    pub(super) fn warn(self, membership: &Membership) -> Self {
        if !self.warned {
            tracing::warn!(
                seeds = membership.seed_count(),
                "no peer: this node is cut off from the mesh; it keeps redialling its seeds and \
                 the members it knows with backoff (more addresses: `Bus::add_peers`)"
            );
        }
        Alone {
            warned: true,
            ..self
        }
    }
}

/// Accepts connections and hands them to the actor.
pub(super) async fn accept_loop(mut listener: Box<dyn Listener>, inbox: mpsc::Sender<ActorMsg>) {
    // Failed accepts are often transient (out of file descriptors): retry soon, then less often.
    let backoff = crate::proto::backoff::Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_secs(1),
        jitter: 0.2,
    };
    let mut rng = fastrand::Rng::new();
    let mut failures = 0;
    loop {
        match listener.accept().await {
            Ok(c) => {
                failures = 0;
                if inbox.send(ActorMsg::Inbound(c)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == crate::ErrorKind::Closed => return,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff.delay(failures, &mut rng)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// Makes one dial that membership asked for and runs the connection it opens; a failure is
/// reported back, a success is reported by the connection's handshake.
pub(super) async fn dial_task(
    node: Arc<NodeShared>,
    dispatch: Weak<dyn Dispatch>,
    dial: DialRequest,
) {
    let addr = match Addr::parse(&dial.addr) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = node.inbox.send(ActorMsg::DialFailed(dial)).await;
            return;
        }
    };
    if node.local_only && !addr.is_local() {
        // Gossip or discovery named an address beyond this machine; a node without a
        // network key does not go there.
        tracing::debug!(%addr, "not dialled: this node has no network key and keeps to local addresses");
        let _ = node.inbox.send(ActorMsg::DialFailed(dial)).await;
        return;
    }
    let stopping = node.stopping.clone();
    let dialled = tokio::select! {
        d = node.config.transports.dial(&addr) => d,
        () = stopping.cancelled() => return,
    };
    let reached = match dialled {
        Ok(c) => {
            conn::run(
                Arc::clone(&node),
                dispatch,
                c,
                Side::Outbound,
                Some(dial.clone()),
                None,
                None,
            )
            .await
        }
        Err(e) => {
            tracing::debug!(%addr, error = %e, "dial failed");
            Reached::Nothing
        }
    };
    let msg = match reached {
        Reached::Node(_) => return,
        Reached::Linked(_) => ActorMsg::DialLinked(dial),
        Reached::Nothing => ActorMsg::DialFailed(dial),
    };
    let _ = node.inbox.send(msg).await;
}

/// Dials `addr` once for `Bus::connect` and runs the connection it opens; `reply` learns
/// whom the handshake reached, or why it failed.
pub(super) async fn connect_task(
    node: Arc<NodeShared>,
    dispatch: Weak<dyn Dispatch>,
    addr: Addr,
    reply: oneshot::Sender<Result<NodeId, crate::Error>>,
) {
    let stopping = node.stopping.clone();
    let dialled = tokio::select! {
        d = node.config.transports.dial(&addr) => d,
        () = stopping.cancelled() => return,
    };
    match dialled {
        Ok(c) => {
            let _ = conn::run(node, dispatch, c, Side::Outbound, None, None, Some(reply)).await;
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// Hands what a discovery mechanism reports to the actor, until it ends.
pub(super) async fn discovery_loop(source: &mut dyn Discovery, inbox: mpsc::Sender<ActorMsg>) {
    while let Some(event) = source.next().await {
        if inbox.send(ActorMsg::Discovered(event)).await.is_err() {
            return;
        }
    }
}
