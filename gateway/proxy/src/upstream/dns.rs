//! DNS discovery: re-resolves a cluster's `host:port` every `refresh` and swaps in the answer.
//!
//! The task holds the cluster's endpoints weakly, so it ends by itself once every snapshot that
//! used the cluster is gone (and the cluster also aborts it on drop). A failed or empty answer
//! keeps the last good set: a DNS hiccup must not empty a healthy cluster.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::Endpoints;

/// The discovery of one cluster: what to resolve, how often, and the running task.
#[derive(Debug)]
pub(crate) struct Discovery {
    cluster: Arc<str>,
    target: String,
    refresh: Duration,
    endpoints: Weak<Endpoints>,
    task: Mutex<Option<AbortHandle>>,
}

impl Discovery {
    pub(crate) fn new(
        cluster: Arc<str>,
        target: String,
        refresh: Duration,
        endpoints: Weak<Endpoints>,
    ) -> Self {
        Self {
            cluster,
            target,
            refresh,
            endpoints,
            task: Mutex::new(None),
        }
    }

    /// Starts the refresh task, once; does nothing outside a tokio runtime (a later call from
    /// inside one starts it).
    pub(crate) fn start(&self) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let handle = runtime.spawn(run(
            self.cluster.clone(),
            self.target.clone(),
            self.refresh,
            self.endpoints.clone(),
        ));
        *task = Some(handle.abort_handle());
    }

    /// Stops the refresh task.
    pub(crate) fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// The running task, if started.
    #[cfg(test)]
    pub(crate) fn task(&self) -> Option<AbortHandle> {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves once now and applies the answer; returns whether it succeeded.
    pub(crate) async fn resolve_once(&self, endpoints: &Endpoints) -> bool {
        refresh(&self.cluster, &self.target, endpoints).await
    }
}

async fn run(cluster: Arc<str>, target: String, every: Duration, endpoints: Weak<Endpoints>) {
    // A carried-over cluster already holds the previous answer; only an empty one resolves
    // right away.
    let empty = endpoints.upgrade().map(|e| e.discovered().is_empty());
    match empty {
        None => return,
        Some(true) => {
            if let Some(e) = endpoints.upgrade() {
                refresh(&cluster, &target, &e).await;
            }
        }
        Some(false) => {}
    }
    loop {
        tokio::time::sleep(every).await;
        let Some(e) = endpoints.upgrade() else {
            return;
        };
        refresh(&cluster, &target, &e).await;
    }
}

async fn refresh(cluster: &str, target: &str, endpoints: &Endpoints) -> bool {
    match resolve(target).await {
        Ok(addresses) => {
            if endpoints.replace_discovered(&addresses) {
                tracing::info!(
                    cluster,
                    dns = target,
                    ?addresses,
                    "discovered endpoints changed"
                );
            }
            true
        }
        Err(error) => {
            tracing::warn!(cluster, dns = target, %error, "DNS discovery failed; keeping the last endpoints");
            false
        }
    }
}

async fn resolve(target: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(target).await?.collect();
    if addresses.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses in the answer",
        ));
    }
    Ok(addresses)
}
