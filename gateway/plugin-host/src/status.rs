//! Per-plugin counters, and the snapshot of them that `/plugins` and metrics read.
//!
//! Counters are atomics updated on the call path (relaxed: each is an independent tally, and a
//! snapshot may mix values a few calls apart).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::BreakerState;
use crate::types::FaultKind;

/// Upper bounds of the call latency histogram buckets, in microseconds. A warm pooled call of a
/// Rust guest takes about 2 µs, a fresh instance about 25 µs, and the default deadline is 5ms.
pub const LATENCY_BUCKETS_MICROS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000];

/// A point-in-time view of one plugin, for `/plugins` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// The sha256 of the `.wasm` bytes, in lower-case hex.
    pub version: String,
    /// Hook calls the gateway asked for (including those the breaker bypassed, excluding
    /// hooks the plugin does not implement).
    pub calls: u64,
    /// Faults by kind, in the order of [`FaultKind::ALL`].
    pub faults: [(FaultKind, u64); 5],
    /// Calls retried on a fresh instance by the `reload` policy.
    pub reloads: u64,
    /// Calls that ran no wasm because the breaker was open.
    pub bypassed: u64,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// Total time spent in calls that ran wasm.
    pub latency_sum: Duration,
    /// Calls that ran wasm (the count behind `latency_sum`).
    pub latency_count: u64,
    /// Cumulative histogram: calls at or under each bound of [`LATENCY_BUCKETS_MICROS`]
    /// (the last entry counts the slower ones too, so it equals `latency_count`).
    pub latency_buckets: [u64; 11],
    /// Instances alive now (pooled and in a call).
    pub instances_alive: u64,
    /// Warm instances waiting in pools now.
    pub pooled: u64,
    /// Instances created so far.
    pub instantiations: u64,
    /// Header names or values the plugin returned that were not valid HTTP (dropped).
    pub invalid_output: u64,
    /// `counter-add` calls dropped because the plugin reached its counter-name cap.
    pub counters_dropped: u64,
    /// `cache-put` calls refused because the value was over the size cap.
    pub cache_puts_refused: u64,
}

/// The live counters of one plugin.
#[derive(Debug, Default)]
pub(crate) struct PluginStats {
    pub(crate) calls: AtomicU64,
    pub(crate) faults: [AtomicU64; 5],
    pub(crate) reloads: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) latency_nanos: AtomicU64,
    pub(crate) latency_buckets: [AtomicU64; 11],
    pub(crate) instances_alive: AtomicI64,
    pub(crate) pooled: AtomicI64,
    pub(crate) instantiations: AtomicU64,
    pub(crate) invalid_output: AtomicU64,
    pub(crate) counters_dropped: AtomicU64,
    pub(crate) cache_puts_refused: AtomicU64,
}

// === impl PluginStats ===

impl PluginStats {
    pub(crate) fn fault(&self, kind: FaultKind) {
        self.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
        let micros = nanos / 1_000;
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        name: &str,
        version: &str,
        breaker: BreakerState,
        breaker_opened: u64,
    ) -> PluginStatus {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        let mut latency_buckets = [0; 11];
        let mut total = 0;
        for (out, bucket) in latency_buckets.iter_mut().zip(&self.latency_buckets) {
            total += load(bucket);
            *out = total;
        }
        PluginStatus {
            name: name.to_owned(),
            version: version.to_owned(),
            calls: load(&self.calls),
            faults: FaultKind::ALL.map(|kind| (kind, load(&self.faults[kind.index()]))),
            reloads: load(&self.reloads),
            bypassed: load(&self.bypassed),
            breaker,
            breaker_opened,
            latency_sum: Duration::from_nanos(load(&self.latency_nanos)),
            // Every call lands in one bucket, so the cumulative last bucket counts them all.
            latency_count: total,
            latency_buckets,
            instances_alive: gauge(&self.instances_alive),
            pooled: gauge(&self.pooled),
            instantiations: load(&self.instantiations),
            invalid_output: load(&self.invalid_output),
            counters_dropped: load(&self.counters_dropped),
            cache_puts_refused: load(&self.cache_puts_refused),
        }
    }
}

impl PluginStatus {
    /// Faults of one kind.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults[kind.index()].1
    }

    /// Faults of every kind.
    pub fn total_faults(&self) -> u64 {
        self.faults.iter().map(|(_, n)| n).sum()
    }
}
