//! What every example sets up first.

/// Prints the bus's logs to stderr: warnings and notable events by default (a peer found
/// dead, a connection closed for a reason, a node cut off from the mesh), more with
/// `RUST_LOG` (`RUST_LOG=meshbus_core=debug` shows every connection and handshake).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subscriber already set (a test harness) is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
