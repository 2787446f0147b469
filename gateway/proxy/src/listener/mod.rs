//! Downstream listeners: accept, TLS, HTTP/1.1 and HTTP/2, limits, graceful drain.
//!
//! OWNER: listener helper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// Binding or configuring a listener failed.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: {reason}")]
pub struct ListenerError {
    /// The listener's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// The set of running listeners. Reload applies a new listener list to it.
#[derive(Debug)]
pub struct ListenerSet {
    proxy: Proxy,
    metrics: Arc<Metrics>,
}

impl ListenerSet {
    /// An empty set that hands requests to `proxy`.
    pub fn new(proxy: Proxy, metrics: Arc<Metrics>) -> Self {
        Self { proxy, metrics }
    }

    /// Makes the running listeners match `listeners`: binds new ones, rebinds changed
    /// addresses (the new socket is bound before the old one closes), reloads certificates,
    /// and closes removed ones. Fallible work happens first, so an error changes nothing.
    pub async fn apply(&self, listeners: &[levee_config::Listener]) -> Result<(), ListenerError> {
        let _ = (listeners, &self.proxy, &self.metrics);
        Ok(())
    }

    /// The bound address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let _ = name;
        None
    }

    /// Stops accepting new connections on every listener (sockets are closed).
    pub fn stop_accepting(&self) {}

    /// Asks every open connection to finish (HTTP/1.1 closes after the current response,
    /// HTTP/2 sends GOAWAY), and waits up to `timeout`. Returns whether all finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let _ = timeout;
        true
    }
}
