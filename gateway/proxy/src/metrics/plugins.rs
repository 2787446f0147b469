//! Plugin metrics: the plugins' own counters (`counter-add`), and each plugin's calls, faults,
//! breaker and latency, read from the serving snapshot's plugins at scrape time.
//!
//! - `levee_plugin_counter{plugin,name}` (gauge: `counter-add` takes signed deltas).
//! - `levee_plugin_info{plugin,version}` = 1; `version` is the sha256 of the `.wasm`.
//! - `levee_plugin_calls_total{plugin}`, `levee_plugin_faults_total{plugin,kind}`
//!   (`trap`, `deadline`, `out-of-memory`, `invalid-output`, `instantiate`),
//!   `levee_plugin_bypassed_total{plugin}` (calls skipped while the breaker was open),
//!   `levee_plugin_invalid_output_total{plugin}` (header entries dropped).
//! - `levee_plugin_breaker_open{plugin}` (1 while open or half-open),
//!   `levee_plugin_instances{plugin}` (alive now).
//! - `levee_plugin_call_duration_seconds{plugin}`: histogram of calls that ran wasm.

use std::sync::{Arc, OnceLock};

use levee_plugin_host::{BreakerState, LATENCY_BUCKETS_MICROS, PluginStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Where the plugin gauges come from: the serving snapshot's plugins.
pub type PluginSource = Box<dyn Fn() -> Vec<PluginStatus> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CounterLabels {
    plugin: String,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InfoLabels {
    plugin: String,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FaultLabels {
    plugin: String,
    kind: &'static str,
}

/// A metric read from a plugin's status: its name, help text, and how to read it.
type Reading<T> = (&'static str, &'static str, fn(&PluginStatus) -> T);

/// The plugins' counters and the collector of their status.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    counters: Family<CounterLabels, Gauge>,
    state: Arc<PluginCollector>,
}

#[derive(Default)]
struct PluginCollector {
    source: OnceLock<PluginSource>,
}

impl std::fmt::Debug for PluginCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCollector")
            .field("source", &self.source.get().is_some())
            .finish()
    }
}

// === impl PluginMetrics ===

impl PluginMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "plugin_counter",
            "Counters plugins keep with counter-add",
            self.counters.clone(),
        );
        registry.register_collector(Box::new(self.state.clone()));
    }

    /// Makes the plugin gauges read from `source`; only the first call counts.
    pub fn set_source(&self, source: PluginSource) {
        let _ = self.state.source.set(source);
    }

    /// Adds `delta` to a plugin's counter `name` (the host caps the names per plugin).
    pub fn counter_add(&self, plugin: &str, name: &str, delta: i64) {
        self.counter(plugin, name).inc_by(delta);
    }

    /// The series of a plugin's counter `name`: a handle that shares its value.
    pub fn counter(&self, plugin: &str, name: &str) -> Gauge {
        self.counters
            .get_or_create(&CounterLabels {
                plugin: plugin.to_owned(),
                name: name.to_owned(),
            })
            .clone()
    }
}

// === impl PluginCollector ===

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let plugins = source();
        if plugins.is_empty() {
            return Ok(());
        }
        let label = |p: &PluginStatus| PluginLabels {
            plugin: p.name.clone(),
        };

        let mut family = encoder.encode_descriptor(
            "plugin_info",
            "The plugin's version (sha256 of its .wasm)",
            None,
            MetricType::Gauge,
        )?;
        for p in &plugins {
            let labels = InfoLabels {
                plugin: p.name.clone(),
                version: p.version.clone(),
            };
            ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        }

        let counters: [Reading<u64>; 3] = [
            ("plugin_calls", "Hook calls", |p| p.calls),
            (
                "plugin_bypassed",
                "Calls skipped because the plugin's breaker was open",
                |p| p.bypassed,
            ),
            (
                "plugin_invalid_output",
                "Header names or values a plugin returned that were not valid HTTP",
                |p| p.invalid_output,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &plugins {
                ConstCounter::new(value(p)).encode(family.encode_family(&label(p))?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "plugin_faults",
            "Plugin calls that faulted, by kind",
            None,
            MetricType::Counter,
        )?;
        for p in &plugins {
            for (kind, count) in p.faults {
                let labels = FaultLabels {
                    plugin: p.name.clone(),
                    kind: kind.as_str(),
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let gauges: [Reading<i64>; 2] = [
            (
                "plugin_breaker_open",
                "1 while the plugin's breaker is open or probing",
                |p| i64::from(p.breaker != BreakerState::Closed),
            ),
            ("plugin_instances", "Plugin instances alive now", |p| {
                i64::try_from(p.instances_alive).unwrap_or(i64::MAX)
            }),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &plugins {
                ConstGauge::new(value(p)).encode(family.encode_family(&label(p))?)?;
            }
        }

        // The host keeps a cumulative histogram in microseconds; OpenMetrics wants seconds.
        let mut family = encoder.encode_descriptor(
            "plugin_call_duration_seconds",
            "Time in plugin calls that ran wasm",
            None,
            MetricType::Histogram,
        )?;
        for p in &plugins {
            let mut previous = 0;
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENCY_BUCKETS_MICROS.len() + 1);
            for (bound, cumulative) in LATENCY_BUCKETS_MICROS.iter().zip(p.latency_buckets) {
                buckets.push((*bound as f64 / 1e6, cumulative - previous.min(cumulative)));
                previous = cumulative;
            }
            let last = p.latency_buckets[LATENCY_BUCKETS_MICROS.len()];
            buckets.push((f64::INFINITY, last.saturating_sub(previous)));
            family
                .encode_family(&label(p))?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    p.latency_sum.as_secs_f64(),
                    p.latency_count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
