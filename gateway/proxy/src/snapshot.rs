//! The immutable runtime view of one config: routes and clusters, swapped whole on reload.
//!
//! OWNER: request-path helper.

use std::collections::HashMap;
use std::sync::Arc;

use levee_config::Config;

use crate::metrics::Metrics;
use crate::route::Router;
use crate::upstream::Cluster;

/// Everything a request needs, built from one [`Config`]. Each request loads it once.
#[derive(Debug)]
pub struct Snapshot {
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    /// Increases by one with every successful load.
    pub version: u64,
    /// Hash of the config file text (hex), to tell versions apart.
    pub hash: String,
    /// The routing table.
    pub router: Router,
    /// Runtime clusters by name.
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
}

/// What building a snapshot needs besides the config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Metrics, for upstream connection figures.
    pub metrics: Arc<Metrics>,
}

/// Building a snapshot failed (for example a CA bundle that does not parse).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

impl Snapshot {
    /// Builds the runtime view of `config`. Endpoints whose identity (cluster name + address)
    /// is unchanged from `previous` keep their state (in-flight counts, EWMA, pooled connections).
    pub fn build(
        config: Arc<Config>,
        version: u64,
        hash: String,
        previous: Option<&Snapshot>,
        ctx: &BuildContext,
    ) -> Result<Snapshot, SnapshotError> {
        let _ = (previous, ctx);
        Ok(Snapshot {
            router: Router::default(),
            clusters: HashMap::new(),
            config,
            version,
            hash,
        })
    }

    /// `/clusters` JSON: every cluster with its endpoints, weights, priorities, in-flight
    /// requests and EWMA latency.
    pub fn clusters_status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
