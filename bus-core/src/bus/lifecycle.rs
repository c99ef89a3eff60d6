//! A bus's life: the guards that keep shutdown waiting while handlers run, the drain and seal
//! of a graceful shutdown, and stopping the tasks when the application's last handle goes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{Bus, BusInner, EventTable};
use crate::error::{Error, ErrorKind};

/// Stops the bus's tasks when the application's last handle is dropped.
pub(super) struct Owner(pub(super) Weak<BusInner>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.abort_tasks();
        }
    }
}

impl BusInner {
    /// Counts a handler in flight until the guard drops.
    ///
    /// Callers take the guard *before* checking [`Bus::refuses_work`]: with both sides `SeqCst`,
    /// either the caller sees the flag, or shutdown sees the count and waits for it.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// As [`enter`](Self::enter), for a handler that runs in a task of its own.
    pub(crate) fn enter_owned(self: &Arc<Self>) -> InFlightOwned {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightOwned(Arc::clone(self))
    }

    /// Resolves once no handler is in flight. Only meaningful after `closed` is set.
    async fn wait_in_flight(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes every subscription queue: workers handle what is queued, then end; run-time
    /// subscriptions end once read empty; publishes still waiting give up.
    fn seal(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.cancel();
        self.sealed.store(true, Ordering::SeqCst);
        self.sealed_token.cancel();
        self.events.store(Arc::new(EventTable::default()));
        self.tracker.close();
    }

    pub(crate) fn abort_tasks(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

/// Keeps [`Bus::shutdown`] waiting while a handler runs.
pub(crate) struct InFlight<'a>(&'a BusInner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// [`InFlight`] for a task that owns its share of the bus (a handler run for a peer).
pub(crate) struct InFlightOwned(Arc<BusInner>);

impl Drop for InFlightOwned {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl BusInner {
    fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_closed() {
            self.drained.notify_waiters();
        }
    }
}

impl Bus {
    /// Shuts the bus down gracefully.
    ///
    /// 1. From the moment this is called, the application's new commands, publishes and
    ///    subscriptions fail with [`ErrorKind::Closed`].
    /// 2. In-flight command handlers finish. Until they have, handlers may still send commands
    ///    and publish events (through [`Context::bus`](crate::Context::bus)), so that work in
    ///    flight can report its outcome.
    /// 3. Then the bus seals: every event already admitted to a subscription's queue is handled,
    ///    run-time [`Subscription`](crate::Subscription)s end once read empty, and publishes still waiting for room
    ///    fail with `Closed`.
    /// 4. The steps given to [`on_shutdown`](crate::BusBuilder::on_shutdown) run.
    /// 5. Every task of the bus is stopped.
    ///
    /// Steps 2 to 4 together are bounded by the builder's
    /// [`shutdown_timeout`](crate::BusBuilder::shutdown_timeout). Calling it again waits again.
    ///
    /// Called from inside a handler (through its context), it seals the bus at once and returns
    /// without waiting, since it cannot wait for the handler that called it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when handlers were still running at the bound. Subscription
    /// workers are then aborted; command handlers still running on their callers' tasks go on
    /// until their callers stop polling them.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let inner = &self.inner;
        if self.owner.is_none() {
            inner.seal();
            return Ok(());
        }
        inner.closed.store(true, Ordering::SeqCst);
        inner.closing.cancel();
        let bound = inner.config.shutdown_timeout;
        let drain = async {
            inner.wait_in_flight().await;
            inner.seal();
            // Handlers' commands admitted just before the seal are waited for too.
            tokio::join!(inner.wait_in_flight(), inner.tracker.wait());
        };
        let drain = async {
            drain.await;
            let hooks = std::mem::take(
                &mut *inner
                    .shutdown_hooks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for hook in hooks {
                hook().await;
            }
            // Peers drop us at once instead of waiting for the timeout.
            if let Some(node) = &inner.node {
                node.shutdown(bound).await;
            }
        };
        let result = tokio::time::timeout(bound, drain).await;
        inner.seal();
        inner.abort_tasks();
        if result.is_err() {
            let commands = inner.in_flight.load(Ordering::SeqCst);
            return Err(Error::new(ErrorKind::Timeout).with_detail(format!(
                "shutdown did not finish within {bound:?}: subscription workers were aborted; \
                 {commands} command handlers were still running on their callers' tasks"
            )));
        }
        tracing::debug!(node = %inner.identity.node_id, "bus shut down");
        Ok(())
    }
}
