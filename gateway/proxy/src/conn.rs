//! What the gateway knows about a downstream connection.

use std::net::SocketAddr;
use std::sync::Arc;

/// Facts about one accepted downstream connection, shared by every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (the TCP peer).
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// Name of the listener that accepted it.
    pub listener: Arc<str>,
    /// Whether the connection is TLS (sets `x-forwarded-proto: https`).
    pub tls: bool,
    /// The SNI name the client sent, if any.
    pub sni: Option<Arc<str>>,
}
