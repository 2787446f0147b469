//! What the gateway offers a plugin: cluster health, a per-plugin cache, counters, logs and
//! the clock.
//!
//! In a `wasm32` build these call the host imports of `levee:policy/host`. Everywhere else they
//! go to the calling thread's [`crate::testing`] host, so plugin unit tests run with a plain
//! `cargo test`.

use crate::types::{ClusterHealth, LogLevel};

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::with_host as backend;

/// The health of `cluster`, or `None` if no cluster has that name.
pub fn upstream_health(cluster: &str) -> Option<ClusterHealth> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::upstream_health(cluster)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.upstream_health(cluster))
    }
}

/// A value from this plugin's cache: one put by [`cache_put`], or the body of a response stored
/// with [`crate::ResponseAction::ProceedAndStore`]. `None` if absent or expired.
pub fn cache_get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::cache_get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.cache_get(key))
    }
}

/// Stores `value` under `key` for `ttl_ms` milliseconds. `false` when the host refused it (too
/// big, or over the plugin's entry cap).
pub fn cache_put(key: &str, value: &[u8], ttl_ms: u32) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::cache_put(key, value, ttl_ms)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.cache_put(key, value, ttl_ms))
    }
}

/// Adds `delta` to the counter `name`, exported as `levee_plugin_counter{plugin, name}`.
/// The host caps the number of names per plugin and drops (and counts) the extra ones.
pub fn counter_add(name: &str, delta: i64) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::counter_add(name, delta);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.counter_add(name, delta));
    }
}

/// Writes a line to the gateway's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.log(level, message));
    }
}

/// Milliseconds since the Unix epoch, from the gateway's clock (plugins have no other clock).
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::guest::now_ms()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        backend(|h| h.now_ms())
    }
}
