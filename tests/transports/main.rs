//! The bus over real sockets: scopes over TCP and WebSocket, admission, mixed transports.

#[path = "../support/mod.rs"]
mod support;

mod mixed;
mod scopes;
mod tcp_admission;
mod tcp_scopes;
mod through;
mod ws_scopes;
