//! What the embedder provides behind the `host` imports: cluster health, the cache, counters and
//! logs.
//!
//! The host crate keeps the checks that protect the gateway from a plugin (value size cap,
//! counter-name cap); the embedder keeps the state. Every method is called synchronously from
//! inside a hook call, on the request's worker thread, so it must be quick and must not block.

use std::time::Duration;

use bytes::Bytes;

use crate::types::{ClusterHealth, LogLevel};

/// Adds to one counter without looking it up: see [`HostServices::counter`].
pub type CounterHandle = Box<dyn Fn(i64) + Send + Sync>;

/// The gateway's side of the `host` interface.
pub trait HostServices: Send + Sync + 'static {
    /// The health of `cluster`, or `None` if there is no such cluster. By default there is
    /// none.
    fn upstream_health(&self, cluster: &str) -> Option<ClusterHealth> {
        let _ = cluster;
        None
    }

    /// The value `plugin` stored under `key`, if present and not expired. By default nothing
    /// is stored.
    fn cache_get(&self, plugin: &str, key: &str) -> Option<Bytes> {
        let _ = (plugin, key);
        None
    }

    /// Stores `value` for `plugin` under `key` for `ttl`. `max_entries` is the plugin's
    /// `limits.cache_entries`: refuse (return false) rather than exceed it. The value size cap
    /// has already been checked. By default every put is refused.
    fn cache_put(
        &self,
        plugin: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        max_entries: u32,
    ) -> bool {
        let _ = (plugin, key, value, ttl, max_entries);
        false
    }

    /// Adds `delta` to `plugin`'s counter `name`. The counter-name cap has already been
    /// applied. By default counters are dropped.
    fn counter_add(&self, plugin: &str, name: &str, delta: i64) {
        let _ = (plugin, name, delta);
    }

    /// A handle that adds to `plugin`'s counter `name` as [`HostServices::counter_add`] does,
    /// without finding the counter again: a plugin that counts every request then pays a
    /// lookup once per instance and name, not per call. The counter-name cap has already been
    /// applied. By default there is none, and every add goes through `counter_add`.
    fn counter(&self, plugin: &str, name: &str) -> Option<CounterHandle> {
        let _ = (plugin, name);
        None
    }

    /// Writes a log line from `plugin`. By default it goes to `tracing` under the
    /// `levee::plugin` target.
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Trace => tracing::trace!(target: "levee::plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "levee::plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "levee::plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "levee::plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "levee::plugin", plugin, "{message}"),
        }
    }
}

/// Services with every default: no clusters, no cache, counters dropped, logs to `tracing`.
/// For `levee validate` and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServices;

impl HostServices for NoServices {}
