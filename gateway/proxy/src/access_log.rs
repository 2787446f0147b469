//! The structured access log: one JSON line per finished request.
//!
//! OWNER: admin/metrics helper. The signatures below are the interface; fill in the bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Everything known about one finished request. The request path builds it when the response
/// body has been fully sent (or the request failed), and hands it to [`AccessLog::log`] and
/// [`crate::metrics::Metrics::observe_request`].
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When the request arrived.
    pub start: SystemTime,
    /// Name of the listener that accepted the request.
    pub listener: Arc<str>,
    /// The matched route, if any.
    pub route: Option<Arc<str>>,
    /// The cluster the request was sent to, if any.
    pub cluster: Option<Arc<str>>,
    /// The upstream endpoint of the last attempt, if any.
    pub endpoint: Option<SocketAddr>,
    /// The client address.
    pub client: SocketAddr,
    /// Request method.
    pub method: http::Method,
    /// Request path and query.
    pub path: String,
    /// The HTTP version downstream.
    pub version: http::Version,
    /// Status sent downstream (0 if the connection broke before a status was sent).
    pub status: u16,
    /// Time from arrival to the end of the response body.
    pub duration: Duration,
    /// Request body bytes received from downstream.
    pub bytes_in: u64,
    /// Response body bytes sent downstream.
    pub bytes_out: u64,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The gateway error kind (the `x-levee-error` value), if the gateway generated the response
    /// or the response broke midway.
    pub error_kind: Option<&'static str>,
}

/// Writes access log lines (JSON, one per request) to standard output, when enabled.
#[derive(Debug, Clone)]
pub struct AccessLog {
    enabled: bool,
}

impl AccessLog {
    /// An access log that writes when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    /// Writes one line for this request.
    pub fn log(&self, record: &RequestRecord) {
        let _ = (self.enabled, record);
    }
}
