//! What the gateway knows about a downstream connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;

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
    /// The client IP as a header value, for `x-forwarded-for`: formatted once per connection
    /// rather than on every request. See [`client_ip_value`].
    pub client_ip: HeaderValue,
    /// The listener's path normalisation, applied to every request before routing.
    pub path_normalization: levee_config::PathNormalization,
    /// Whether the client's `x-request-id`, `Forwarded` and `X-Real-IP` are believed (the
    /// listener's `trust_client_headers`).
    pub trust_client_headers: bool,
    /// The verified client certificate as an `x-forwarded-client-cert` element, when the
    /// listener's `client_auth.forward_client_cert` asks for it and the client sent one.
    pub client_cert: Option<HeaderValue>,
}

/// `ip` as a header value (`127.0.0.1`, `::1`).
pub fn client_ip_value(ip: IpAddr) -> HeaderValue {
    // An IP address in text form is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
