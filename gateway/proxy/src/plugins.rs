//! Wasm policy plugins in the gateway: loading a config's plugins off the request path, and the
//! host services (`upstream-health`, the cache, counters, logs) they call back into.
//!
//! The wasmtime engine is made on first use, so a gateway whose config names no plugin never
//! reserves the pooling allocator's address space or starts the epoch ticker. Loading reads the
//! `.wasm` files and compiles them on a blocking thread; unchanged plugins (same name, bytes and
//! settings) carry over with their breaker and counters, and unchanged bytes are never compiled
//! twice (the runtime caches by content hash).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use levee_config::{Config, PluginIsolation, PluginOnError};
use levee_plugin_host::{
    ClusterHealth, CounterHandle, EngineParams, HostServices, Isolation, OnError, PluginLimits,
    PluginParams, PluginRuntime, PluginSet, PluginStatus,
};
use levee_resilience::store::ResponseStore;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The process-wide plugin machinery.
pub struct PluginHost {
    runtime: OnceLock<Result<Arc<PluginRuntime>, String>>,
    services: Arc<GatewayServices>,
}

/// What plugins can ask of the gateway; see [`HostServices`].
#[derive(Debug)]
pub(crate) struct GatewayServices {
    snapshot: OnceLock<Weak<ArcSwap<Snapshot>>>,
    store: Arc<ResponseStore>,
    metrics: Arc<Metrics>,
}

/// One plugin in `/plugins`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    /// The plugin's name.
    pub name: String,
    /// The sha256 of its `.wasm`, lower-case hex.
    pub version: String,
    /// The `.wasm` file; `None` if the config no longer names the plugin.
    pub path: Option<String>,
    /// `fail-open`, `fail-closed` or `reload`.
    pub on_error: Option<PluginOnError>,
    /// `pooled` or `per-request`.
    pub isolation: Option<PluginIsolation>,
    /// Hook calls asked for.
    pub calls: u64,
    /// Faults by kind (`trap`, `deadline`, `out-of-memory`, `invalid-output`, `instantiate`).
    pub faults: BTreeMap<&'static str, u64>,
    /// Calls retried on a fresh instance by the `reload` policy.
    pub reloads: u64,
    /// Calls that ran no wasm because the breaker was open.
    pub bypassed: u64,
    /// The plugin breaker's state: `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// Mean time of the calls that ran wasm, in microseconds (0 before the first).
    pub latency_mean_us: f64,
    /// Instances alive now.
    pub instances_alive: u64,
    /// Warm instances waiting in pools now.
    pub pooled: u64,
    /// Instances created so far.
    pub instantiations: u64,
    /// Invalid header names or values the plugin returned (dropped).
    pub invalid_output: u64,
    /// `counter-add` calls dropped at the counter-name cap.
    pub counters_dropped: u64,
    /// `cache-put` calls refused for size.
    pub cache_puts_refused: u64,
    /// The routes that bind the plugin, in config order.
    pub routes: Vec<String>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("engine", &self.runtime.get().map(|r| r.is_ok()))
            .finish()
    }
}

// === impl PluginHost ===

impl PluginHost {
    /// A host whose plugins use `store` for their cache and count into `metrics`.
    pub fn new(store: Arc<ResponseStore>, metrics: Arc<Metrics>) -> Arc<PluginHost> {
        Arc::new(PluginHost {
            runtime: OnceLock::new(),
            services: Arc::new(GatewayServices {
                snapshot: OnceLock::new(),
                store,
                metrics,
            }),
        })
    }

    /// Lets `upstream-health` see the serving snapshot. Until then it knows no cluster.
    pub fn attach(&self, snapshot: &Arc<ArcSwap<Snapshot>>) {
        let _ = self.services.snapshot.set(Arc::downgrade(snapshot));
    }

    /// Loads the plugins `config` defines, carrying unchanged ones over from `previous`. The
    /// error names the plugin and the file.
    pub async fn load(
        &self,
        config: &Config,
        previous: Option<&PluginSet>,
    ) -> Result<PluginSet, String> {
        if config.plugins.is_empty() {
            return Ok(PluginSet::default());
        }
        let mut sources = Vec::with_capacity(config.plugins.len());
        for plugin in &config.plugins {
            let bytes = tokio::fs::read(&plugin.path).await.map_err(|e| {
                format!(
                    "plugin {:?}: reading {}: {e}",
                    plugin.name,
                    plugin.path.display()
                )
            })?;
            sources.push((params(plugin, config.cache.max_entry_size), bytes));
        }
        let runtime = self.runtime()?;
        let services: Arc<dyn HostServices> = self.services.clone();
        let previous = previous.cloned();
        let names: Vec<(String, std::path::PathBuf)> = config
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.path.clone()))
            .collect();
        // Cranelift takes tens of milliseconds per plugin (seconds for JavaScript and Python
        // guests): never on a worker thread.
        tokio::task::spawn_blocking(move || {
            PluginSet::load(
                &runtime,
                sources.iter().map(|(p, b)| (p.clone(), b.as_slice())),
                &services,
                previous.as_ref(),
            )
        })
        .await
        .map_err(|e| format!("loading plugins: {e}"))?
        .map_err(|e| {
            let files = names
                .iter()
                .map(|(n, p)| format!("{n} ({})", p.display()))
                .collect::<Vec<_>>()
                .join(", ");
            format!("plugins [{files}]: {e}")
        })
    }

    fn runtime(&self) -> Result<Arc<PluginRuntime>, String> {
        self.runtime
            .get_or_init(|| {
                PluginRuntime::new(EngineParams::default())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// The host's parameters for a configured plugin.
fn params(plugin: &levee_config::Plugin, max_entry_size: u64) -> PluginParams {
    let mut params = PluginParams::new(plugin.name.clone());
    params.on_error = match plugin.on_error {
        PluginOnError::FailOpen => OnError::FailOpen,
        PluginOnError::FailClosed => OnError::FailClosed,
        PluginOnError::Reload => OnError::Reload,
    };
    params.isolation = match plugin.isolation {
        PluginIsolation::Pooled => Isolation::Pooled,
        PluginIsolation::PerRequest => Isolation::PerRequest,
    };
    params.limits = PluginLimits {
        memory: plugin.limits.memory,
        deadline: plugin.limits.deadline,
        cache_entries: plugin.limits.cache_entries,
        cache_value_bytes: u32::try_from(max_entry_size).unwrap_or(u32::MAX),
        counters: plugin.limits.counters,
    };
    params.recycle_after = plugin.recycle_after;
    params
}

// === impl PluginView ===

impl PluginView {
    /// The view of the plugin `status` describes, with what `config` says of it.
    pub(crate) fn of(status: &PluginStatus, config: &Config) -> PluginView {
        let plugin = config.plugins.iter().find(|c| c.name == status.name);
        let routes = config
            .routes
            .iter()
            .filter(|r| r.plugins.iter().any(|rp| rp.name == status.name))
            .map(|r| r.name.clone())
            .collect();
        PluginView {
            name: status.name.clone(),
            version: status.version.clone(),
            path: plugin.map(|c| c.path.display().to_string()),
            on_error: plugin.map(|c| c.on_error),
            isolation: plugin.map(|c| c.isolation),
            calls: status.calls,
            faults: status
                .faults
                .iter()
                .map(|(kind, n)| (kind.as_str(), *n))
                .collect(),
            reloads: status.reloads,
            bypassed: status.bypassed,
            breaker: status.breaker.as_str(),
            breaker_opened: status.breaker_opened,
            latency_mean_us: if status.latency_count == 0 {
                0.0
            } else {
                status.latency_sum.as_secs_f64() * 1e6 / status.latency_count as f64
            },
            instances_alive: status.instances_alive,
            pooled: status.pooled,
            instantiations: status.instantiations,
            invalid_output: status.invalid_output,
            counters_dropped: status.counters_dropped,
            cache_puts_refused: status.cache_puts_refused,
            routes,
        }
    }
}

// === impl GatewayServices ===

impl HostServices for GatewayServices {
    fn upstream_health(&self, cluster: &str) -> Option<ClusterHealth> {
        let snapshot = self.snapshot.get()?.upgrade()?;
        let snapshot = snapshot.load();
        snapshot
            .clusters
            .get(cluster)
            .map(|c| c.resilience().plugin_health(c))
    }

    fn cache_get(&self, plugin: &str, key: &str) -> Option<Bytes> {
        self.store.get_bytes(plugin, key.as_bytes())
    }

    fn cache_put(
        &self,
        plugin: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        max_entries: u32,
    ) -> bool {
        // Each plugin's share of the store is capped in entries (its `limits.cache_entries`)
        // and in bytes (a quarter of the store).
        self.store
            .put_bytes_capped(plugin, key.as_bytes(), value, Some(ttl), max_entries)
    }

    fn counter_add(&self, plugin: &str, name: &str, delta: i64) {
        self.metrics.plugin_counter_add(plugin, name, delta);
    }

    fn counter(&self, plugin: &str, name: &str) -> Option<CounterHandle> {
        let gauge = self.metrics.plugin_counter(plugin, name);
        Some(Box::new(move |delta| {
            gauge.inc_by(delta);
        }))
    }
}

/// The key under which the head of a response a plugin stored with `proceed-and-store` is
/// kept, next to its body (which `cache-get` returns as it is).
pub(crate) fn head_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 6);
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(b"\0head");
    k
}
