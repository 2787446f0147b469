//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, `/clusters`,
//! `POST /config/reload`, and `/` (a status page for people).
//!
//! OWNER: admin/metrics helper.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::reload::ReloadHandle;
use crate::snapshot::Snapshot;

/// What the admin endpoints read from.
#[derive(Debug)]
pub struct AdminState {
    /// The serving snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness, for `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Reload trigger and status, for `POST /config/reload` and `/config`.
    pub reload: ReloadHandle,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let _ = (listener, state);
    shutdown.await;
}
