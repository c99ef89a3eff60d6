//! The bus's one public error type, and the error handlers return.

use std::borrow::Cow;
use std::fmt;

use crate::id::NodeId;
use crate::scope::Scope;

/// What went wrong, as a value a program can match on.
///
/// Details (the message name, the scope, the peer, the handler's own message) are accessors on
/// [`Error`]. New kinds may be added in minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No handler for the command exists in the requested scope.
    NoHandler,
    /// The request's deadline passed before a reply arrived; the handler may have run.
    Timeout,
    /// The handler returned an error or panicked; its message is in [`Error::handler_message`].
    HandlerFailed,
    /// The peer handling the request left or died; the handler may have run.
    PeerLost,
    /// The handler side refused the request because too much work is already in flight.
    Overloaded,
    /// A message or frame could not be decoded, or a message could not be encoded.
    Decode,
    /// A message is larger than the receiving side accepts; nothing was sent.
    TooLarge,
    /// The bus is shutting down or has shut down.
    Closed,
    /// A peer refused our credentials, or we refused theirs.
    Unauthorized,
    /// Two nodes share no protocol version.
    VersionMismatch,
    /// The bus was configured wrongly (a missing service, two handlers for one command, ...).
    Config,
    /// An I/O error on a transport.
    Io,
}

impl ErrorKind {
    /// Every kind, for code lookups and tests.
    const ALL: [ErrorKind; 12] = [
        ErrorKind::NoHandler,
        ErrorKind::Timeout,
        ErrorKind::HandlerFailed,
        ErrorKind::PeerLost,
        ErrorKind::Overloaded,
        ErrorKind::Decode,
        ErrorKind::TooLarge,
        ErrorKind::Closed,
        ErrorKind::Unauthorized,
        ErrorKind::VersionMismatch,
        ErrorKind::Config,
        ErrorKind::Io,
    ];

    /// The kind's stable code, as it travels in a `ReplyError` frame.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NoHandler => "no_handler",
            ErrorKind::Timeout => "timeout",
            ErrorKind::HandlerFailed => "handler_failed",
            ErrorKind::PeerLost => "peer_lost",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Decode => "decode",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Closed => "closed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::VersionMismatch => "version_mismatch",
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
        }
    }

    /// The kind of a code from [`code`](ErrorKind::code); a code this version does not know
    /// (sent by a newer peer) reads as [`HandlerFailed`](ErrorKind::HandlerFailed).
    pub fn from_code(code: &str) -> ErrorKind {
        Self::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or(ErrorKind::HandlerFailed)
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NoHandler => "no handler",
            ErrorKind::Timeout => "timed out",
            ErrorKind::HandlerFailed => "handler failed",
            ErrorKind::PeerLost => "peer lost",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Decode => "decode error",
            ErrorKind::TooLarge => "message too large",
            ErrorKind::Closed => "bus closed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::VersionMismatch => "protocol version mismatch",
            ErrorKind::Config => "configuration error",
            ErrorKind::Io => "I/O error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error of every fallible bus operation.
///
/// Match on [`kind()`](Error::kind); read the details with the other accessors. The type is
/// small (one pointer) so `Result<T, Error>` stays cheap on the hot path.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message_name: Option<Cow<'static, str>>,
    scope: Option<Scope>,
    peer: Option<NodeId>,
    /// The peer's node name, when the error was built knowing it.
    peer_name: Option<String>,
    handler_message: Option<String>,
    detail: Option<Cow<'static, str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with no details.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message_name: None,
                scope: None,
                peer: None,
                peer_name: None,
                handler_message: None,
                detail: None,
                source: None,
            }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The name of the command or event the error is about, if any.
    pub fn message_name(&self) -> Option<&str> {
        self.inner.message_name.as_deref()
    }

    /// The scope the message was sent in, if the error is about a message.
    pub fn scope(&self) -> Option<Scope> {
        self.inner.scope
    }

    /// The peer the error is about, if any.
    pub fn peer(&self) -> Option<NodeId> {
        self.inner.peer
    }

    /// The node name of the peer the error is about (`PeerLost`, `Timeout` of a remote call,
    /// a remote handler's failure or `Overloaded`, ...), if any.
    pub fn peer_name(&self) -> Option<&str> {
        self.inner.peer_name.as_deref()
    }

    /// The message of a failed handler ([`ErrorKind::HandlerFailed`]): its `Err` text, or the
    /// panic message.
    pub fn handler_message(&self) -> Option<&str> {
        self.inner.handler_message.as_deref()
    }

    /// A short human-readable detail, if any (for example the missing service's type name for
    /// [`ErrorKind::Config`]).
    pub fn detail(&self) -> Option<&str> {
        self.inner.detail.as_deref()
    }

    pub(crate) fn with_message_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.inner.message_name = Some(name.into());
        self
    }

    pub(crate) fn with_scope(mut self, scope: Scope) -> Self {
        self.inner.scope = Some(scope);
        self
    }

    /// The error is about `peer`, whose node name is `name`.
    pub(crate) fn with_peer(mut self, peer: NodeId, name: impl Into<String>) -> Self {
        self.inner.peer = Some(peer);
        self.inner.peer_name = Some(name.into());
        self
    }

    pub(crate) fn with_handler_message(mut self, msg: impl Into<String>) -> Self {
        self.inner.handler_message = Some(msg.into());
        self
    }

    /// Adds a human-readable detail, shown after the kind in `Display`.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.inner.detail = Some(detail.into());
        self
    }

    /// Adds the underlying cause, returned by [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    pub(crate) fn config(detail: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config).with_detail(detail)
    }

    pub(crate) fn closed() -> Self {
        Error::new(ErrorKind::Closed)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(n) = &self.inner.message_name {
            d.field("message_name", n);
        }
        if let Some(s) = &self.inner.scope {
            d.field("scope", s);
        }
        if let Some(p) = &self.inner.peer {
            d.field("peer", p);
        }
        if let Some(n) = &self.inner.peer_name {
            d.field("peer_name", n);
        }
        if let Some(m) = &self.inner.handler_message {
            d.field("handler_message", m);
        }
        if let Some(m) = &self.inner.detail {
            d.field("detail", m);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        match (i.kind, &i.message_name, i.scope) {
            (ErrorKind::NoHandler, Some(name), Some(scope)) => {
                write!(f, "no handler for `{name}` in scope {scope}")?
            }
            (ErrorKind::NoHandler, Some(name), None) => write!(f, "no handler for `{name}`")?,
            (ErrorKind::Timeout, Some(name), _) => write!(f, "`{name}` timed out")?,
            (ErrorKind::HandlerFailed, Some(name), _) => write!(f, "handler for `{name}` failed")?,
            (kind, Some(name), _) => write!(f, "{kind} (`{name}`)")?,
            (kind, None, _) => write!(f, "{kind}")?,
        }
        match (&i.peer, &i.peer_name) {
            (Some(p), Some(name)) => write!(f, " [peer {name} {p}]")?,
            (Some(p), None) => write!(f, " [peer {p}]")?,
            (None, Some(name)) => write!(f, " [peer {name}]")?,
            (None, None) => {}
        }
        if let Some(m) = &i.handler_message {
            write!(f, ": {m}")?;
        }
        if let Some(d) = &i.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The error a handler returns.
///
/// Anything that implements [`std::error::Error`] converts into it with `?`, and
/// [`HandlerError::msg`] makes one from text. Its message (with the chain of sources) travels
/// back to the caller as [`Error::handler_message`].
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` itself, so that the blanket
/// `From` conversion can exist.
pub struct HandlerError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A handler error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError {
            message: message.to_string(),
            source: None,
        }
    }

    /// The message the caller will see.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error this one was made from, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        HandlerError {
            message,
            source: Some(Box::new(err)),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

const _: () = {
    const fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<Error>();
    assert_send_sync_static::<HandlerError>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_message_and_scope() {
        let e = Error::new(ErrorKind::NoHandler)
            .with_message_name("diag.ping")
            .with_scope(Scope::Local);
        assert_eq!(e.to_string(), "no handler for `diag.ping` in scope local");
        assert_eq!(e.kind(), ErrorKind::NoHandler);
        assert_eq!(e.message_name(), Some("diag.ping"));
    }

    #[test]
    fn handler_error_keeps_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e: HandlerError = Outer(std::io::Error::other("disk full")).into();
        assert_eq!(e.message(), "outer: disk full");
        assert!(e.source().is_some());
    }

    #[test]
    fn kind_codes_round_trip_and_unknown_codes_degrade() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
        }
        assert_eq!(
            ErrorKind::from_code("from_the_future"),
            ErrorKind::HandlerFailed
        );
    }

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
