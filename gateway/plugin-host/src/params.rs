//! Parameters for the host: the process-wide engine, and each plugin's policy and limits.
//!
//! These are this crate's own types. The gateway converts from `levee-config` (which this crate
//! must not depend on); every default below matches the config reference.

use std::time::Duration;

/// Settings of the one process-wide engine. They size the pooling allocator, which reserves its
/// slots up front, so they are fixed for the life of the process (a reload cannot change them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineParams {
    /// Most plugin instances alive at once, across every plugin and route: warm pooled
    /// instances plus the ones in a call. An instantiation beyond it fails (a plugin fault of
    /// kind `instantiate`). Default 256.
    pub max_instances: u32,
    /// The largest linear memory any instance may have, in bytes. A plugin's own
    /// `limits.memory` must not exceed it. Default 256 MiB.
    pub max_memory: u64,
    /// How often the epoch ticker advances; call deadlines are counted in these ticks.
    /// Default 1ms; at least 100µs.
    pub epoch_tick: Duration,
}

impl Default for EngineParams {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory: 256 << 20,
            epoch_tick: Duration::from_millis(1),
        }
    }
}

/// What a call does when the plugin faults (traps, runs past its deadline, runs out of memory,
/// returns invalid output), or while its breaker is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Act as if the plugin had not been there: proceed, or propagate the failure. The default.
    #[default]
    FailOpen,
    /// Refuse the request: the gateway answers 503.
    FailClosed,
    /// Retry the call once on a fresh instance; if that faults too, fail open.
    Reload,
}

/// How instances are shared between calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Warm instances are kept in a small pool and reused, each recycled after
    /// `recycle_after` calls or after any fault. The default: a warm call costs about 2 µs,
    /// a fresh instance about 25 µs.
    #[default]
    Pooled,
    /// A fresh instance (instantiate + `init`) for every call. No state survives a call.
    PerRequest,
}

/// Per-plugin resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory an instance may grow to, in bytes. Default 32 MiB.
    pub memory: u64,
    /// Time one call may run. Default 5ms. Enforced by epoch interruption, so the real bound
    /// is up to one epoch tick later.
    pub deadline: Duration,
    /// Entries the plugin may hold in its cache (passed to [`HostServices::cache_put`]).
    /// Default 10000.
    ///
    /// [`HostServices::cache_put`]: crate::HostServices::cache_put
    pub cache_entries: u32,
    /// Largest value `cache-put` accepts, in bytes; bigger puts are refused. Default 1 MiB.
    pub cache_value_bytes: u32,
    /// Distinct counter names the plugin may create; extra names are dropped and counted.
    /// Default 100.
    pub counters: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: 32 << 20,
            deadline: Duration::from_millis(5),
            cache_entries: 10_000,
            cache_value_bytes: 1 << 20,
            counters: 100,
        }
    }
}

/// The breaker around one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerParams {
    /// Consecutive faulted calls that open the breaker. Default 5.
    pub consecutive_faults: u32,
    /// How long the breaker stays open the first time. Each reopening without a success in
    /// between doubles it, up to `max_open`. Default 1s.
    pub base_open: Duration,
    /// The longest open period. Default 60s.
    pub max_open: Duration,
}

impl Default for BreakerParams {
    fn default() -> Self {
        Self {
            consecutive_faults: 5,
            base_open: Duration::from_secs(1),
            max_open: Duration::from_secs(60),
        }
    }
}

/// One plugin as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginParams {
    /// Unique name; routes refer to it, and logs, metrics and the cache are keyed by it.
    pub name: String,
    /// Fault policy. Default fail-open.
    pub on_error: OnError,
    /// Instance sharing. Default pooled.
    pub isolation: Isolation,
    /// Resource limits.
    pub limits: PluginLimits,
    /// A pooled instance is dropped after this many calls, so slow leaks in a guest cannot
    /// grow forever. Default 10000.
    pub recycle_after: u32,
    /// Warm instances kept per route binding. Calls are synchronous on the gateway's worker
    /// threads, so more than one per worker is never used at once. Default 8.
    pub pool_size: usize,
    /// The plugin's breaker.
    pub breaker: BreakerParams,
}

impl PluginParams {
    /// Parameters with every default, for the plugin called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            on_error: OnError::default(),
            isolation: Isolation::default(),
            limits: PluginLimits::default(),
            recycle_after: 10_000,
            pool_size: 8,
            breaker: BreakerParams::default(),
        }
    }
}
