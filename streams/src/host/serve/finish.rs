//! [`Finish`]: a future whose work is not lost when its caller gives up.

/// A future that, dropped before it is done, is finished on a task of its own.
pub(super) struct Finish<T: Send + 'static>(
    pub(super) Option<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
);

impl<T: Send + 'static> std::future::Future for Finish<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let Some(fut) = self.0.as_mut() else {
            return std::task::Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let (Some(fut), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(fut);
        }
    }
}
