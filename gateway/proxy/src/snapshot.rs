//! The immutable runtime view of one config: routes and clusters, swapped whole on reload.
//!
//! A request loads the current snapshot once and keeps it to the end, so a reload never changes
//! the rules under a request in flight. Building a snapshot carries the stateful parts of each
//! cluster over from the previous one (see [`crate::upstream::Cluster`]).
//!
//! A reload builds in two phases. [`Snapshot::prepare`] does everything that can fail and
//! changes nothing the serving snapshot uses: the objects it carries over (a cluster's limits
//! and health state, the response store) are shared with the serving snapshot, so their new
//! parameters wait in the [`Prepared`] value. [`Prepared::commit`] applies them, starts the
//! health checkers, and cannot fail; the caller then swaps the snapshot in. Dropping a
//! `Prepared` instead (a later step failed) leaves the serving snapshot exactly as it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use levee_config::Config;
use levee_plugin_host::{HeaderFilter, PluginSet};
use levee_resilience::store::ResponseStore;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::plugins::PluginView;
use crate::route::Router;
use crate::upstream::{Cluster, ClusterCommit, ClusterView};

/// How long [`Prepared::resolve`] waits for the first DNS answers. A name that does not
/// resolve in this time leaves its cluster without discovered endpoints until the next refresh,
/// rather than holding up the reload.
const PREPARE_LIMIT: Duration = Duration::from_secs(3);

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
    pub clusters: FxHashMap<Arc<str>, Arc<Cluster>>,
    /// Last good responses (serve-stale) and plugin cache entries; shared by every snapshot.
    pub store: Arc<ResponseStore>,
    /// The config's plugins, compiled.
    pub plugins: PluginSet,
}

/// What building a snapshot needs besides the config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Metrics, for upstream connection figures.
    pub metrics: Arc<Metrics>,
    /// The process's response store; a commit applies the config's `cache` limits to it.
    pub store: Arc<ResponseStore>,
    /// The config's plugins, loaded (off the request path) by
    /// [`PluginHost::load`](crate::plugins::PluginHost::load).
    pub plugins: PluginSet,
}

impl BuildContext {
    /// A context with a fresh store and no plugins (tests and tools).
    pub fn new(metrics: Arc<Metrics>) -> BuildContext {
        let cache = levee_config::Cache::default();
        BuildContext {
            metrics,
            store: Arc::new(ResponseStore::new(cache.max_size, cache.max_entry_size)),
            plugins: PluginSet::default(),
        }
    }
}

/// Building a snapshot failed (for example a CA bundle that does not parse). The message names
/// the cluster and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

/// A snapshot built by [`Snapshot::prepare`] that does not serve yet, with the parameter
/// changes it still has to make to state shared with the serving snapshot. Commit it with
/// [`Prepared::commit`], or drop it to change nothing.
#[derive(Debug)]
#[must_use = "a prepared snapshot changes nothing until committed"]
pub struct Prepared {
    snapshot: Snapshot,
    pending: PendingParams,
}

/// What [`Prepared::commit`] applies, one typed entry per shared piece.
#[derive(Debug)]
struct PendingParams {
    /// The process's response store and the config's `cache` limits (applying them may evict).
    cache: CacheLimits,
    /// Each new cluster with its pending guard parameters, health endpoint set and checker.
    clusters: Vec<(Arc<Cluster>, ClusterCommit)>,
    /// The previous snapshot's clusters whose health state a new cluster takes over: their
    /// checkers stop at commit, so one checker drives each health state.
    replaced: Vec<Arc<Cluster>>,
}

/// The response store's limits from a config's `cache` section.
#[derive(Debug)]
struct CacheLimits {
    store: Arc<ResponseStore>,
    max_size: u64,
    max_entry_size: u64,
    max_namespace_size: u64,
}

impl Snapshot {
    /// Prepares and at once commits the runtime view of `config`; see [`Snapshot::prepare`].
    /// Nothing shared changes when it fails. A reload with more fallible steps after the build
    /// (listeners) calls `prepare` and `commit` itself.
    pub fn build(
        config: Arc<Config>,
        version: u64,
        hash: String,
        previous: Option<&Snapshot>,
        ctx: &BuildContext,
    ) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot::prepare(config, version, hash, previous, ctx)?.commit())
    }

    /// Builds the runtime view of `config`, to be committed with [`Prepared::commit`].
    /// Endpoints whose identity (cluster name + address) is unchanged from `previous` keep
    /// their state (in-flight counts, EWMA), and a cluster whose connection settings are
    /// unchanged keeps its pooled connections.
    ///
    /// It reads files (CA bundles), binds plugins and may fail; it changes nothing `previous`
    /// serves with. The store's new limits, the carried-over clusters' new limits and health
    /// parameters, their health endpoint sets and checkers all wait for the commit.
    pub fn prepare(
        config: Arc<Config>,
        version: u64,
        hash: String,
        previous: Option<&Snapshot>,
        ctx: &BuildContext,
    ) -> Result<Prepared, SnapshotError> {
        // One store for the process: stale copies outlive reloads; a changed `cache` section
        // only changes its limits, at commit. Each plugin may fill at most a quarter of it.
        let store = ctx.store.clone();
        let cache = CacheLimits {
            store: store.clone(),
            max_size: config.cache.max_size,
            max_entry_size: config.cache.max_entry_size,
            max_namespace_size: config.cache.max_size / 4,
        };

        // Each route binds its plugins (an instance runs `init` with the route's config); a
        // plugin that rejects its config fails the build. A binding whose plugin (same version
        // and settings) and config are unchanged carries over with its warm instances.
        let mut bound = HashMap::new();
        for route in &config.routes {
            let before = previous.and_then(|p| p.router.policy(&route.name));
            let mut plugins = Vec::with_capacity(route.plugins.len());
            for (i, named) in route.plugins.iter().enumerate() {
                let plugin = ctx.plugins.get(&named.name).ok_or_else(|| {
                    SnapshotError(format!(
                        "route {:?}: plugin {:?} is not loaded",
                        route.name, named.name
                    ))
                })?;
                let kept = before.and_then(|b| {
                    let old = b.plugins.get(i)?;
                    (Arc::ptr_eq(old.plugin(), plugin) && b.plugin_configs.get(i) == Some(named))
                        .then(|| old.clone())
                });
                if let Some(kept) = kept {
                    plugins.push(kept);
                    continue;
                }
                let binding = plugin.bind(named.config.as_bytes()).map_err(|e| {
                    SnapshotError(format!(
                        "route {:?}: plugin {:?}: {e}",
                        route.name, named.name
                    ))
                })?;
                let binding = binding.with_headers(
                    header_filter(named.request_headers.as_deref()),
                    header_filter(named.response_headers.as_deref()),
                );
                plugins.push(Arc::new(binding));
            }
            bound.insert(route.name.clone(), plugins);
        }
        let mut clusters =
            FxHashMap::with_capacity_and_hasher(config.clusters.len(), Default::default());
        let mut pending = Vec::with_capacity(config.clusters.len());
        let mut replaced = Vec::new();
        for cluster in &config.clusters {
            let before = previous.and_then(|p| p.clusters.get(cluster.name.as_str()));
            let (built, commit) = Cluster::prepare(cluster, before.map(|c| &**c), &ctx.metrics)
                .map_err(|e| SnapshotError(format!("cluster {:?}: {e}", cluster.name)))?;
            let built = Arc::new(built);
            replaced.extend(before.cloned());
            pending.push((built.clone(), commit));
            clusters.insert(built.name().clone(), built);
        }
        let snapshot = Snapshot {
            router: Router::build(&config.routes, previous.map(|p| &p.router), &mut bound),
            store,
            plugins: ctx.plugins.clone(),
            clusters,
            config,
            version,
            hash,
        };
        Ok(Prepared {
            snapshot,
            pending: PendingParams {
                cache,
                clusters: pending,
                replaced,
            },
        })
    }

    /// The state gauges of every cluster, in config order, for `/metrics`.
    pub fn cluster_states(&self) -> Vec<crate::metrics::ClusterState> {
        self.config
            .clusters
            .iter()
            .filter_map(|c| self.clusters.get(c.name.as_str()))
            .map(|c| c.state())
            .collect()
    }

    /// `/plugins`: every plugin with its counters and the routes that use it, in the order
    /// the plugin set lists them.
    pub fn plugins_status(&self) -> PluginsView {
        let plugins = self
            .plugins
            .status()
            .iter()
            .map(|status| PluginView::of(status, &self.config))
            .collect();
        PluginsView { plugins }
    }

    /// `/clusters`: every cluster with its endpoints, in config order.
    pub fn clusters_status(&self) -> ClustersView {
        let clusters = self
            .config
            .clusters
            .iter()
            .filter_map(|c| self.clusters.get(c.name.as_str()))
            .map(|c| c.status())
            .collect();
        ClustersView { clusters }
    }
}

// === impl Prepared ===

impl Prepared {
    /// The snapshot as it will serve once committed.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Resolves DNS-discovered clusters that have no endpoints yet (first load or a changed
    /// name), all at once and bounded by a few seconds, and makes sure discovery runs. Await it
    /// before committing, so the first requests find endpoints. It fills only the new
    /// clusters' own endpoint lists.
    pub async fn resolve(&self) {
        let pending = self
            .snapshot
            .clusters
            .values()
            .map(|cluster| cluster.resolve(PREPARE_LIMIT));
        futures_util::future::join_all(pending).await;
    }

    /// Applies the pending parameters to the state shared with the serving snapshot (the
    /// store's limits, each carried-over cluster's limits and health parameters), makes each
    /// cluster's health state track its new endpoints, moves the health checkers over, and
    /// returns the snapshot to swap in. Nothing here fails, so a reload that gets this far
    /// applies everything.
    pub fn commit(self) -> Snapshot {
        let PendingParams {
            cache,
            clusters,
            replaced,
        } = self.pending;
        cache.store.set_limits(
            cache.max_size,
            cache.max_entry_size,
            cache.max_namespace_size,
        );
        for old in &replaced {
            old.stop_checker();
        }
        for (cluster, commit) in clusters {
            cluster.commit(commit);
        }
        self.snapshot
    }
}

/// The body of `GET /clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct ClustersView {
    /// Every cluster, in config order.
    pub clusters: Vec<ClusterView>,
}

/// The body of `GET /plugins`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginsView {
    /// Every loaded plugin.
    pub plugins: Vec<PluginView>,
}

/// A route plugin's `request_headers` or `response_headers` as the host's filter. The names
/// were checked when the config was validated; one that still does not parse is left out, and
/// so is a repeat.
fn header_filter(names: Option<&[String]>) -> HeaderFilter {
    match names {
        None => HeaderFilter::All,
        Some(names) => {
            let mut only: Vec<HeaderName> = Vec::with_capacity(names.len());
            for name in names {
                // A name listed twice would hand the plugin its values twice.
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                    && !only.contains(&name)
                {
                    only.push(name);
                }
            }
            HeaderFilter::Only(only.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use levee_balance::PickContext;
    use levee_config::{
        Admin, Cluster, Config, Endpoint, LbPolicy, Log, Shutdown, UpstreamProtocol,
    };

    use super::*;

    fn config(endpoints: &[&str]) -> Arc<Config> {
        let endpoints = endpoints
            .iter()
            .map(|a| Endpoint {
                address: a.parse().expect("address"),
                weight: 1,
                priority: 0,
            })
            .collect();
        Arc::new(Config {
            listeners: Vec::new(),
            admin: Admin {
                address: "127.0.0.1:0".parse().expect("address"),
                token_file: None,
            },
            routes: Vec::new(),
            clusters: vec![Cluster {
                name: "api".into(),
                lb: LbPolicy::LeastRequest,
                hash_on: None,
                endpoints,
                discovery: None,
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                max_idle_per_endpoint: 64,
                protocol: UpstreamProtocol::Http1,
                tls: None,
                health_check: None,
                outlier_detection: Default::default(),
                circuit_breaker: None,
                limits: Default::default(),
                panic_threshold: 0.5,
                panic_mode: levee_config::PanicMode::Spread,
            }],
            cache: Default::default(),
            plugins: Vec::new(),
            shutdown: Shutdown {
                drain_delay: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(30),
            },
            log: Log {
                level: "info".into(),
                access_log: false,
            },
        })
    }

    fn endpoint_at(snapshot: &Snapshot, address: &str) -> Option<Arc<levee_balance::Endpoint>> {
        let address: SocketAddr = address.parse().expect("address");
        snapshot.clusters["api"]
            .endpoints()
            .into_iter()
            .find(|e| e.address() == address)
    }

    #[test]
    fn endpoint_state_survives_reload_unless_its_address_changes() {
        let ctx = BuildContext::new(Metrics::new());
        let first = Snapshot::build(
            config(&["127.0.0.1:1001", "127.0.0.1:1002"]),
            1,
            "a".into(),
            None,
            &ctx,
        )
        .expect("build");
        let kept = endpoint_at(&first, "127.0.0.1:1001").expect("endpoint");
        let moved = endpoint_at(&first, "127.0.0.1:1002").expect("endpoint");
        let _kept_request = kept.start();
        let _moved_request = moved.start();

        let second = Snapshot::build(
            config(&["127.0.0.1:1001", "127.0.0.1:1003"]),
            2,
            "b".into(),
            Some(&first),
            &ctx,
        )
        .expect("build");

        let carried = endpoint_at(&second, "127.0.0.1:1001").expect("endpoint");
        assert!(Arc::ptr_eq(&carried, &kept));
        assert_eq!(carried.in_flight(), 1);
        assert_eq!(carried.requests_total(), 1);
        let fresh = endpoint_at(&second, "127.0.0.1:1003").expect("endpoint");
        assert_eq!(fresh.in_flight(), 0);
        assert_eq!(fresh.requests_total(), 0);
        assert!(endpoint_at(&second, "127.0.0.1:1002").is_none());
        assert!(
            second.clusters["api"]
                .pick(&PickContext::default())
                .is_some()
        );
    }

    // === a rejected reload changes nothing ===

    /// `config` with one more cluster, after `api`, whose CA bundle cannot be read: the build
    /// fails at its last step, after `api` was built.
    fn failing_at_the_last_cluster(config: &Config) -> Arc<Config> {
        let mut config = config.clone();
        let mut later = config.clusters[0].clone();
        later.name = "later".into();
        later.tls = Some(levee_config::UpstreamTls {
            sni: "later.test".into(),
            ca_file: Some("/nonexistent/levee-test/ca.pem".into()),
            client_cert: None,
        });
        config.clusters.push(later);
        Arc::new(config)
    }

    fn health_addresses(snapshot: &Snapshot) -> Vec<SocketAddr> {
        snapshot.clusters["api"]
            .resilience()
            .health
            .endpoints()
            .iter()
            .map(|e| e.address())
            .collect()
    }

    #[test]
    fn failed_reload_keeps_the_store_entries() {
        let ctx = BuildContext::new(Metrics::new());
        let first = config(&["127.0.0.1:1001"]);
        let serving = Snapshot::build(first.clone(), 1, "a".into(), None, &ctx).expect("build");
        for key in ["a", "b", "c"] {
            let response = levee_resilience::store::StoredResponse::new(
                200,
                http::HeaderMap::new(),
                bytes::Bytes::from_static(b"kept"),
            );
            assert!(ctx.store.put(key, response));
        }
        let before = ctx.store.stats();

        let mut smaller = (*first).clone();
        smaller.cache.max_size = 1;
        let next = failing_at_the_last_cluster(&smaller);
        Snapshot::build(next, 2, "b".into(), Some(&serving), &ctx).expect_err("unreadable CA");

        assert_eq!(ctx.store.stats(), before);
        assert!(ctx.store.get("a", Duration::from_secs(60)).is_some());
    }

    #[test]
    fn failed_reload_keeps_the_bulkhead_limits() {
        let ctx = BuildContext::new(Metrics::new());
        let first = config(&["127.0.0.1:1001"]);
        let serving = Snapshot::build(first.clone(), 1, "a".into(), None, &ctx).expect("build");
        let guards = serving.clusters["api"].resilience();
        let before = guards.limits_status();
        assert_eq!(before.requests.max, 1024);

        let mut lowered = (*first).clone();
        lowered.clusters[0].limits.max_requests = 1;
        lowered.clusters[0].limits.max_retries = 0;
        let next = failing_at_the_last_cluster(&lowered);
        Snapshot::build(next, 2, "b".into(), Some(&serving), &ctx).expect_err("unreadable CA");

        assert_eq!(guards.limits_status(), before);
        let held: Vec<_> = (0..5).map(|_| guards.admit().expect("admitted")).collect();
        assert_eq!(held.len(), 5);
    }

    #[test]
    fn failed_reload_keeps_the_health_parameters() {
        let ctx = BuildContext::new(Metrics::new());
        let first = config(&["127.0.0.1:1001"]);
        let serving = Snapshot::build(first.clone(), 1, "a".into(), None, &ctx).expect("build");
        let health = &serving.clusters["api"].resilience().health;
        let (outlier, active) = (health.outlier_params(), health.active_params());

        let mut changed = (*first).clone();
        changed.clusters[0].outlier_detection.enabled = false;
        changed.clusters[0].outlier_detection.consecutive_5xx = Some(1);
        changed.clusters[0].health_check = Some(levee_config::HealthCheck {
            kind: levee_config::HealthCheckKind::Tcp,
            interval: Duration::from_secs(1),
            unhealthy_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
            jitter: 0.0,
            initial_delay: Duration::from_secs(1),
        });
        let next = failing_at_the_last_cluster(&changed);
        Snapshot::build(next, 2, "b".into(), Some(&serving), &ctx).expect_err("unreadable CA");

        assert_eq!(health.outlier_params(), outlier);
        assert_eq!(health.active_params(), active);
        assert!(outlier.enabled);
        assert_eq!(active, None);
    }

    #[test]
    fn failed_reload_keeps_the_checked_endpoint_set() {
        let ctx = BuildContext::new(Metrics::new());
        let first = config(&["127.0.0.1:1001", "127.0.0.1:1002"]);
        let serving = Snapshot::build(first, 1, "a".into(), None, &ctx).expect("build");
        let before = health_addresses(&serving);
        assert_eq!(before.len(), 2);

        let next = failing_at_the_last_cluster(&config(&["127.0.0.1:1001", "127.0.0.1:1003"]));
        Snapshot::build(next, 2, "b".into(), Some(&serving), &ctx).expect_err("unreadable CA");

        assert_eq!(health_addresses(&serving), before);
        let removed: SocketAddr = "127.0.0.1:1002".parse().expect("address");
        let health = &serving.clusters["api"].resilience().health;
        assert!(health.health_of(removed).is_some());
    }

    #[test]
    fn prepared_reload_changes_shared_state_only_when_committed() {
        let ctx = BuildContext::new(Metrics::new());
        let first = config(&["127.0.0.1:1001", "127.0.0.1:1002"]);
        let serving = Snapshot::build(first, 1, "a".into(), None, &ctx).expect("build");
        let mut next = (*config(&["127.0.0.1:1001", "127.0.0.1:1003"])).clone();
        next.clusters[0].limits.max_requests = 1;
        next.clusters[0].outlier_detection.enabled = false;

        let prepared = Snapshot::prepare(Arc::new(next), 2, "b".into(), Some(&serving), &ctx)
            .expect("prepare");
        let guards = serving.clusters["api"].resilience();
        assert_eq!(guards.limits_status().requests.max, 1024);
        assert!(guards.health.outlier_params().enabled);
        assert_eq!(health_addresses(&serving).len(), 2);
        assert!(health_addresses(&serving).contains(&"127.0.0.1:1002".parse().expect("address")));

        let committed = prepared.commit();
        // The carried-over guards are the very objects the serving snapshot uses.
        assert_eq!(guards.limits_status().requests.max, 1);
        assert!(!guards.health.outlier_params().enabled);
        let addresses: Vec<SocketAddr> = ["127.0.0.1:1001", "127.0.0.1:1003"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        assert_eq!(health_addresses(&committed), addresses);
    }

    #[test]
    fn clusters_status_lists_every_endpoint_with_its_load() {
        let ctx = BuildContext::new(Metrics::new());
        let snapshot =
            Snapshot::build(config(&["127.0.0.1:1001"]), 1, "a".into(), None, &ctx).expect("build");
        let endpoint = endpoint_at(&snapshot, "127.0.0.1:1001").expect("endpoint");
        let _request = endpoint.start();

        let status = serde_json::to_value(snapshot.clusters_status()).expect("json");

        let cluster = &status["clusters"][0];
        assert_eq!(cluster["name"], "api");
        assert_eq!(cluster["lb"], "least-request");
        assert_eq!(cluster["protocol"], "http1");
        let endpoint = &cluster["endpoints"][0];
        assert_eq!(endpoint["address"], "127.0.0.1:1001");
        assert_eq!(endpoint["weight"], 1);
        assert_eq!(endpoint["priority"], 0);
        assert_eq!(endpoint["usable"], true);
        assert_eq!(endpoint["in_flight"], 1);
        assert_eq!(endpoint["requests_total"], 1);
        assert_eq!(endpoint["open_connections"], 0);
        assert_eq!(endpoint["source"], "static");
        assert!(endpoint["ewma_latency_ms"].is_number());
    }
}
