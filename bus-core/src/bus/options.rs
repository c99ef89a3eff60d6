//! [`RequestOptions`]: what `send`, `send_all` and `publish` let the caller set, and the one
//! place that turns it into frame headers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::context::Headers;
use crate::wire::FrameHeaders;

/// The options of one request, shared by [`SendCommand`](crate::SendCommand),
/// [`SendAll`](crate::SendAll) and [`Publish`](crate::Publish).
///
/// Each builder has the setters that mean something for it, and they are the same methods
/// on all three:
///
/// | option | `send` | `send_all` | `publish` |
/// |---|---|---|---|
/// | [`header`](Self::header) | yes | yes | yes |
/// | [`correlation_id`](Self::correlation_id) | yes | yes | yes |
/// | [`timeout`](Self::timeout) / [`no_timeout`](Self::no_timeout) | yes | yes | [`Publish::timeout`](crate::Publish::timeout) only: a publish has no default timeout, it waits for room |
/// | [`idempotency_key`](Self::idempotency_key) | yes | yes | no: events are not retried by callers |
///
/// A whole value can be given to a command request with `.options(..)`, to reuse one set of
/// options across requests. Setters consume the builder, and a request that was started is
/// no longer a builder, so an option can never be set after the request started.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use meshbus_core::RequestOptions;
///
/// let options = RequestOptions::new()
///     .timeout(Duration::from_secs(2))
///     .correlation_id("order-42")
///     .header("tenant", "acme");
/// assert_eq!(options.headers().get("tenant"), Some("acme"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// `None`: the bus's default; `Some(None)`: no timeout.
    timeout: Option<Option<Duration>>,
    headers: Headers,
    correlation_id: Option<Arc<str>>,
}

impl RequestOptions {
    /// No headers, no correlation id, the bus's
    /// [`request_timeout`](crate::BusBuilder::request_timeout).
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails a command with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if no reply came
    /// within `timeout` (overrides the bus's
    /// [`request_timeout`](crate::BusBuilder::request_timeout)).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// Waits for a command's reply however long it takes.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// Attaches a header, readable by the handler in [`Context::headers`](crate::Context::headers).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Attaches an idempotency key: send the same key when retrying a command after a
    /// `Timeout` or `PeerLost`, so the handler can recognise the retry.
    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        self.header(Headers::IDEMPOTENCY_KEY, key)
    }

    /// Attaches a correlation id, readable by the handler in
    /// [`Context::correlation_id`](crate::Context::correlation_id).
    pub fn correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The headers set so far (the idempotency key among them).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The timeout to apply, given the bus's default.
    pub(crate) fn timeout_or(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(default)
    }

    pub(crate) fn correlation_id_arc(&self) -> Option<Arc<str>> {
        self.correlation_id.clone()
    }

    /// Moves the headers and correlation id out, for a local handler's context.
    pub(crate) fn into_parts(self) -> (Headers, Option<Arc<str>>) {
        (self.headers, self.correlation_id)
    }

    /// The frame headers of an event published with these options: without building any when
    /// there are none (the usual publish).
    pub(crate) fn event_frame_headers(&self) -> Cow<'static, FrameHeaders> {
        static NONE: FrameHeaders = FrameHeaders {
            correlation_id: None,
            deadline: None,
            idempotency_key: None,
            trace_context: None,
            extra: Vec::new(),
        };
        if self.correlation_id.is_none() && self.headers.is_empty() {
            Cow::Borrowed(&NONE)
        } else {
            Cow::Owned(self.frame_headers(None))
        }
    }

    /// The frame headers of a request with these options that waits `deadline` (what the
    /// handler on the other side reads as its deadline).
    pub(crate) fn frame_headers(&self, deadline: Option<Duration>) -> FrameHeaders {
        let mut out = FrameHeaders {
            correlation_id: self.correlation_id.as_deref().map(str::to_owned),
            deadline,
            ..Default::default()
        };
        for (k, v) in self.headers.iter() {
            if k == Headers::IDEMPOTENCY_KEY {
                out.idempotency_key = Some(v.to_owned());
            } else {
                out.extra.push((k.to_owned(), v.to_owned()));
            }
        }
        out
    }
}

/// The setters of [`RequestOptions`] on a request builder with an `options` field: `common`
/// for every builder, `command` adds the ones that only mean something for commands.
macro_rules! request_setters {
    (common) => {
        /// Attaches a header, readable by the handler in
        /// [`Context::headers`](crate::Context::headers). See [`RequestOptions::header`].
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.options = self.options.header(name, value);
            self
        }

        /// Attaches a correlation id. See [`RequestOptions::correlation_id`].
        pub fn correlation_id(mut self, id: impl Into<std::sync::Arc<str>>) -> Self {
            self.options = self.options.correlation_id(id);
            self
        }
    };
    (command) => {
        $crate::bus::options::request_setters!(common);

        /// Fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if no reply came within
        /// `timeout`. See [`RequestOptions::timeout`].
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options = self.options.timeout(timeout);
            self
        }

        /// Waits for the reply however long it takes. See [`RequestOptions::no_timeout`].
        pub fn no_timeout(mut self) -> Self {
            self.options = self.options.no_timeout();
            self
        }

        /// Attaches an idempotency key. See [`RequestOptions::idempotency_key`].
        pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
            self.options = self.options.idempotency_key(key);
            self
        }

        /// Replaces every option set so far with `options`.
        pub fn options(mut self, options: $crate::bus::options::RequestOptions) -> Self {
            self.options = options;
            self
        }
    };
}

pub(crate) use request_setters;
