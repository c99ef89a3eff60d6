//! What a handler knows about the message it handles.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::bus::Bus;
use crate::id::NodeId;
use crate::scope::Scope;

/// The context of one command or event delivery, given to every handler.
///
/// Cloning is cheap (a few reference counts).
#[derive(Clone)]
pub struct Context {
    pub(crate) message_id: u64,
    pub(crate) correlation_id: Option<Arc<str>>,
    pub(crate) sender: NodeId,
    pub(crate) scope: Scope,
    pub(crate) deadline: Deadline,
    pub(crate) headers: Headers,
    pub(crate) cancel: Option<CancelSignal>,
    pub(crate) bus: Bus,
}

impl Context {
    /// A context as a local caller of `bus` would make it, with no deadline: for calling a
    /// handler directly, in a unit test or a benchmark.
    ///
    /// ```
    /// use meshbus_core::{Bus, Context, Scope};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = Bus::builder().start().await?;
    /// let ctx = Context::local(&bus);
    /// assert_eq!(ctx.sender(), bus.node_id());
    /// assert_eq!(ctx.scope(), Scope::Local);
    /// # Ok(())
    /// # }
    /// ```
    pub fn local(bus: &Bus) -> Self {
        Context::new(
            crate::id::next_message_id(),
            bus.node_id(),
            Scope::Local,
            bus.handler_handle(),
        )
    }

    /// The one constructor: message `message_id` from `sender` in `scope`, with no correlation
    /// id, deadline, headers or cancellation; callers set those they have.
    pub(crate) fn new(message_id: u64, sender: NodeId, scope: Scope, bus: Bus) -> Self {
        Context {
            message_id,
            correlation_id: None,
            sender,
            scope,
            deadline: Deadline::None,
            headers: Headers::new(),
            cancel: None,
            bus,
        }
    }

    /// This delivery's id, unique among the messages handled in this process: it is given here
    /// when the message arrives (ids do not travel), so two nodes may give the same id to
    /// different messages, and a retried request gets a new one. To recognise a retry, use
    /// [`idempotency_key`](Context::idempotency_key); to follow a message across nodes,
    /// [`correlation_id`](Context::correlation_id).
    pub fn message_id(&self) -> u64 {
        self.message_id
    }

    /// The correlation id the sender attached, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The node that sent the message.
    pub fn sender(&self) -> NodeId {
        self.sender
    }

    /// The scope of the message as this node sees it: for a local caller, the scope it sent
    /// in; for a peer's message, the narrowest scope the sender shares with this node
    /// (`Machine`, then `Cluster`, else `Network`).
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// When the caller stops waiting for the reply, if it has a timeout.
    ///
    /// For a local command the deadline is fixed the first time it is read or the handler first
    /// waits, so a handler that finishes at once never reads the clock.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// The headers the sender attached.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The idempotency key the sender attached, if any: a caller that retries after
    /// [`Timeout`](crate::ErrorKind::Timeout) or [`PeerLost`](crate::ErrorKind::PeerLost) sends
    /// the same key, so a handler can tell a retry from a new request.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.headers.get(Headers::IDEMPOTENCY_KEY)
    }

    /// The bus this handler runs on, to send commands or publish events from inside a handler.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Whether the caller has given up on this request (it was dropped, or timed out across the
    /// network).
    ///
    /// A local command runs on the caller's task, so a local caller that gives up drops the
    /// handler's future at its next `.await` instead; this is then always `false`.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    /// Resolves when the caller gives up on this request; never resolves if it cannot.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: use it in `tokio::select!` beside the handler's work.
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// Tells a peer's command that its caller gave up (a `Cancel` frame, or the connection's end).
///
/// One per inbound command, so it is kept cheap: one allocation, a clone is a reference
/// count, a check is an atomic load; no tree of children and no lock, as a
/// `CancellationToken` has.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelSignal(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    /// Wakes those waiting in [`CancelSignal::cancelled`].
    notify: Notify,
}

impl CancelSignal {
    /// Not cancelled yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Cancels: every clone reads `is_cancelled` from now on, and every wait ends.
    pub(crate) fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called on this signal or a clone.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn cancelled(&self) {
        let notified = self.0.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a `cancel` after the read wakes it.
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

/// A request's deadline, read from the clock only when someone needs it.
///
/// A local handler runs inside its caller's future, which fixes its own deadline the first time
/// the handler waits; the two may differ by the handler's first synchronous stretch, which is
/// harmless: when the caller gives up, the local handler is dropped whatever it believes.
#[derive(Debug, Clone)]
pub(crate) enum Deadline {
    None,
    /// `timeout` from the first time the deadline is read.
    After {
        timeout: Duration,
        at: OnceLock<Instant>,
    },
}

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        match timeout {
            Some(timeout) => Deadline::After {
                timeout,
                at: OnceLock::new(),
            },
            None => Deadline::None,
        }
    }

    pub(crate) fn get(&self) -> Option<Instant> {
        match self {
            Deadline::None => None,
            Deadline::After { timeout, at } => Some(*at.get_or_init(|| Instant::now() + *timeout)),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("message_id", &self.message_id)
            .field("correlation_id", &self.correlation_id)
            .field("sender", &self.sender)
            .field("scope", &self.scope)
            .field("deadline", &self.deadline)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Key/value headers carried with a message (copy on write: cloning is a reference count).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Option<Arc<Vec<(String, String)>>>,
}

impl Headers {
    /// The header that carries an idempotency key.
    pub const IDEMPOTENCY_KEY: &'static str = "idempotency-key";

    /// No headers.
    pub const fn new() -> Self {
        Headers { entries: None }
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        let entries = Arc::make_mut(self.entries.get_or_insert_with(Default::default));
        match entries.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => entries.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every header, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .flat_map(|e| e.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many headers are set.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_signal_reaches_every_clone_and_every_waiter() {
        let signal = CancelSignal::new();
        let clone = signal.clone();
        assert!(!clone.is_cancelled());
        let waiting = tokio::spawn({
            let clone = clone.clone();
            async move { clone.cancelled().await }
        });
        // The waiter registers before it is cancelled (it yields at its first poll).
        tokio::task::yield_now().await;
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut early = std::pin::pin!(clone.cancelled());
        assert!(early.as_mut().poll(&mut cx).is_pending());
        signal.cancel();
        signal.cancel();
        assert!(clone.is_cancelled());
        assert!(early.as_mut().poll(&mut cx).is_ready());
        waiting.await.unwrap();
        // A wait that starts after the cancel ends at once.
        clone.cancelled().await;
    }

    #[test]
    fn headers_replace_and_copy_on_write() {
        let mut a = Headers::new();
        a.insert("k", "1");
        let b = a.clone();
        a.insert("k", "2");
        a.insert("j", "3");
        assert_eq!(a.get("k"), Some("2"));
        assert_eq!(b.get("k"), Some("1"));
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 1);
        assert!(Headers::new().is_empty());
    }
}
