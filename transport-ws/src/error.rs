//! From tungstenite's errors to the bus's.

use meshbus_core::{Error, ErrorKind};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;

/// An [`Io`](ErrorKind::Io) error saying `what` failed, caused by `err`.
pub(crate) fn io_error(what: &'static str, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Io).with_detail(what).with_source(err)
}

/// The bus's view of a WebSocket error met while doing `what`.
pub(crate) fn ws_error(what: &'static str, err: WsError) -> Error {
    let kind = kind_of(&err);
    with_kind(kind, what, err)
}

/// A failed upgrade of a dialled connection: a [`Config`](ErrorKind::Config) error for a bad
/// URI, else [`Io`](ErrorKind::Io) (refused by the server, such as a 404 for a wrong path, or
/// not a WebSocket server at all), as [`Transport::dial`](meshbus_core::Transport::dial)
/// promises.
pub(crate) fn upgrade_error(err: WsError) -> Error {
    let kind = match kind_of(&err) {
        ErrorKind::Config => ErrorKind::Config,
        _ => ErrorKind::Io,
    };
    with_kind(kind, "the WebSocket upgrade failed", err)
}

fn kind_of(err: &WsError) -> ErrorKind {
    match err {
        // Over `max_message_size`, or a WebSocket frame over the fragment size.
        WsError::Capacity(_) => ErrorKind::TooLarge,
        // The peer vanished: not malformed input.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ErrorKind::Io,
        WsError::Protocol(_) | WsError::Utf8(_) | WsError::AttackAttempt => ErrorKind::Decode,
        WsError::ConnectionClosed | WsError::AlreadyClosed => ErrorKind::Closed,
        WsError::Url(_) | WsError::HttpFormat(_) => ErrorKind::Config,
        _ => ErrorKind::Io,
    }
}

fn with_kind(kind: ErrorKind, what: &'static str, err: WsError) -> Error {
    let detail = match &err {
        WsError::Http(response) => format!("{what}: HTTP {}", response.status()),
        other => format!("{what}: {other}"),
    };
    Error::new(kind).with_detail(detail).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::CapacityError;

    #[test]
    fn kinds() {
        let too_large = WsError::Capacity(CapacityError::MessageTooLong {
            size: 10,
            max_size: 1,
        });
        assert_eq!(ws_error("read", too_large).kind(), ErrorKind::TooLarge);
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(ws_error("read", reset).kind(), ErrorKind::Io);
        let masked = WsError::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(ws_error("read", masked).kind(), ErrorKind::Decode);
        assert_eq!(
            ws_error("write", WsError::ConnectionClosed).kind(),
            ErrorKind::Closed
        );
        let io = ws_error("read", WsError::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(io.kind(), ErrorKind::Io);
        assert!(io.to_string().contains("read"), "{io}");
    }
}
