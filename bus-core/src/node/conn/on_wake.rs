//! A future polled only when it asked to be: for a `select!` branch that waits for something
//! rare (a cancellation) beside one that is ready on every turn (the reads).
//!
//! `select!` polls every branch each time its task wakes, and a `CancellationToken`'s wait
//! takes two locks per poll: on a connection that does a round trip per wake-up, that is a
//! measurable part of each. [`OnWake`] gives its future a waker of its own and polls it again
//! only once that waker was used; otherwise a poll costs two atomic operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `fut`, polled only after it woke its waker (and at its first poll).
pub(super) struct OnWake<F> {
    fut: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `fut` is polled with, made once.
    waker: Waker,
}

struct Flag {
    woken: AtomicBool,
    /// The task that polls the [`OnWake`].
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OnWake<F> {
    pub(super) fn new(fut: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OnWake {
            fut: Box::pin(fut),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake after the read wakes this task.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls.
    struct Counted<F> {
        fut: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.fut.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn it_is_polled_again_only_after_its_waker_fired() {
        let token = tokio_util::sync::CancellationToken::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            fut: Box::pin(token.clone().cancelled_owned()),
            polls: Arc::clone(&polls),
        };
        let mut on_wake = std::pin::pin!(OnWake::new(counted));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10 {
            assert!(on_wake.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled at first only");
        token.cancel();
        assert!(on_wake.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_wake_reaches_the_task_that_polls_it() {
        let token = tokio_util::sync::CancellationToken::new();
        let waiting = tokio::spawn({
            let token = token.clone();
            async move { OnWake::new(async move { token.cancelled().await }).await }
        });
        tokio::task::yield_now().await;
        token.cancel();
        // Hangs (and the test times out) if the wake were lost.
        waiting.await.unwrap();
    }
}
