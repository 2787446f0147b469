//! Starting, reloading and stopping a whole gateway.
//!
//! OWNER: lead. Signatures are the interface for tests; bodies are being written.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::reload::ReloadHandle;

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The config file.
    pub config_path: PathBuf,
    /// Whether to watch the config file (and certificate files) and reload on change.
    /// Default `true`.
    pub watch: bool,
}

impl GatewayOptions {
    /// Options for this config file, with file watching on.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
            watch: true,
        }
    }
}

/// A running gateway: listeners, admin, reload loop.
#[derive(Debug)]
pub struct Gateway {
    reload: ReloadHandle,
}

impl Gateway {
    /// Loads the config, binds every listener and the admin listener, and starts serving.
    /// A config error fails with every message (file, line, key).
    pub async fn start(options: GatewayOptions) -> anyhow::Result<Gateway> {
        let _ = options;
        anyhow::bail!("not yet")
    }

    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let _ = name;
        None
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Triggers reloads (the same as `POST /config/reload`) and reads their status.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Drains and stops, as SIGTERM does: `/readyz` turns 503, waits `drain_delay`, stops
    /// accepting, and waits up to `drain_timeout` for in-flight requests.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}
