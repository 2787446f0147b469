//! Prometheus metrics, exposed as text on the admin `/metrics` endpoint.
//!
//! OWNER: admin/metrics helper. The signatures below are the interface; fill in the bodies.

use std::sync::Arc;

use crate::access_log::RequestRecord;

/// The result of one config reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new snapshot was swapped in.
    Success,
    /// The old snapshot stayed; the reason is in the reload status.
    Error,
}

/// Every metric the gateway exports.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts a finished request and records its latency.
    pub fn observe_request(&self, record: &RequestRecord) {
        let _ = record;
    }

    /// A downstream connection was accepted on `listener`.
    pub fn downstream_connection_opened(&self, listener: &str) {
        let _ = listener;
    }

    /// A downstream connection on `listener` closed.
    pub fn downstream_connection_closed(&self, listener: &str) {
        let _ = listener;
    }

    /// A downstream connection on `listener` was refused because the listener is at its limit.
    pub fn downstream_connection_rejected(&self, listener: &str) {
        let _ = listener;
    }

    /// A new upstream connection to `endpoint` of `cluster` was established.
    pub fn upstream_connection_opened(&self, cluster: &str, endpoint: &str) {
        let _ = (cluster, endpoint);
    }

    /// An upstream connection of `cluster` closed.
    pub fn upstream_connection_closed(&self, cluster: &str, endpoint: &str) {
        let _ = (cluster, endpoint);
    }

    /// Connecting to an endpoint of `cluster` failed.
    pub fn upstream_connect_failed(&self, cluster: &str, endpoint: &str) {
        let _ = (cluster, endpoint);
    }

    /// A config reload finished with `result`.
    pub fn config_reloaded(&self, result: ReloadResult) {
        let _ = result;
    }

    /// Renders the Prometheus text exposition.
    pub fn encode(&self) -> String {
        String::new()
    }
}
