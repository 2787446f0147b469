//! Resilience metrics: what retries, limits, breakers, ejections and fallbacks did (counters,
//! updated as it happens), and the current state of every cluster and endpoint (gauges, read
//! from the serving snapshot at scrape time, so they can never disagree with `/clusters`).
//!
//! - `levee_retries_total{route}`; `levee_retries_refused_total{route,reason="budget|max_retries"}`.
//! - `levee_fallbacks_total{route,kind,served="stale|static"}`; `levee_fallback_misses_total{route}`
//!   (a fallback applied but had nothing to serve).
//! - `levee_limit_overflows_total{cluster,limit}`; `levee_rate_limited_total{route}`;
//!   `levee_faults_injected_total{route,fault="delay|abort"}`.
//! - `levee_circuit_breaker_transitions_total{cluster,endpoint,to}` (`endpoint` is `none` for the
//!   cluster's own breaker); `levee_circuit_breaker_rejections_total{cluster}`.
//! - `levee_outlier_ejections_total{cluster,reason}`,
//!   `levee_outlier_ejections_suppressed_total{cluster,reason}` (held back by the floor).
//! - `levee_health_transitions_total{cluster,to="healthy|unhealthy"}`.
//! - Gauges: `levee_circuit_breaker_state{cluster,state}` (1 for the current state),
//!   `levee_cluster_panic{cluster}`, `levee_cluster_availability_ratio{cluster}`,
//!   `levee_endpoint_usable{cluster,endpoint}`, `levee_endpoint_ejected{cluster,endpoint}`,
//!   `levee_endpoint_availability_ratio{cluster,endpoint}`, `levee_endpoint_outages{cluster,endpoint}`,
//!   `levee_endpoint_mttr_seconds{cluster,endpoint}`, `levee_endpoint_mtbf_seconds{cluster,endpoint}`,
//!   `levee_upstream_connections_idle{cluster,endpoint}`.

use std::sync::{Arc, OnceLock};

use levee_resilience::breaker::BreakerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The state of one cluster at scrape time.
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub name: Arc<str>,
    /// The cluster breaker's state; `None` without a breaker.
    pub breaker: Option<BreakerState>,
    pub panic: bool,
    pub availability: f64,
    pub endpoints: Vec<EndpointState>,
}

/// The state of one endpoint at scrape time.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub address: String,
    pub usable: bool,
    pub ejected: bool,
    pub availability: f64,
    pub outages: u64,
    pub mttr_seconds: f64,
    pub mtbf_seconds: f64,
    /// HTTP/1.1 connections idle in the endpoint's pool.
    pub idle_connections: u64,
}

/// Where the gauges come from: the serving snapshot, set once the gateway has one.
pub type StateSource = Box<dyn Fn() -> Vec<ClusterState> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteReasonLabels {
    route: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    route: Arc<str>,
    kind: &'static str,
    served: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FaultLabels {
    route: Arc<str>,
    fault: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    cluster: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    cluster: Arc<str>,
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BreakerLabels {
    cluster: Arc<str>,
    endpoint: String,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    cluster: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HealthLabels {
    cluster: Arc<str>,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    cluster: Arc<str>,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterRef {
    cluster: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointRef {
    cluster: Arc<str>,
    endpoint: String,
}

/// The resilience counters, and the collector of the state gauges.
#[derive(Debug, Default)]
pub struct ResilienceMetrics {
    retries: Family<RouteLabels, Counter>,
    retries_refused: Family<RouteReasonLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    fallback_misses: Family<RouteLabels, Counter>,
    limit_overflows: Family<LimitLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    breaker_transitions: Family<BreakerLabels, Counter>,
    breaker_rejections: Family<ClusterLabels, Counter>,
    ejections: Family<ReasonLabels, Counter>,
    ejections_suppressed: Family<ReasonLabels, Counter>,
    health_transitions: Family<HealthLabels, Counter>,
    state: Arc<StateCollector>,
}

/// Encodes the state gauges from the [`StateSource`] at every scrape.
#[derive(Default)]
struct StateCollector {
    source: OnceLock<StateSource>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector")
            .field("source", &self.source.get().is_some())
            .finish()
    }
}

// === impl ResilienceMetrics ===

impl ResilienceMetrics {
    /// Registers every family with `registry` (whose prefix is `levee`).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register("retries", "Retries sent", self.retries.clone());
        registry.register(
            "retries_refused",
            "Retries not sent because the budget or the cluster's max_retries was full",
            self.retries_refused.clone(),
        );
        registry.register(
            "fallbacks",
            "Failures answered by the route's fallback",
            self.fallbacks.clone(),
        );
        registry.register(
            "fallback_misses",
            "Failures a fallback covered but had nothing to serve for",
            self.fallback_misses.clone(),
        );
        registry.register(
            "limit_overflows",
            "Requests refused because a cluster limit was full",
            self.limit_overflows.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a route's rate limit",
            self.rate_limited.clone(),
        );
        registry.register(
            "faults_injected",
            "Faults injected by a route's fault section",
            self.faults.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes",
            self.breaker_transitions.clone(),
        );
        registry.register(
            "circuit_breaker_rejections",
            "Requests refused by an open circuit breaker",
            self.breaker_rejections.clone(),
        );
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection",
            self.ejections.clone(),
        );
        registry.register(
            "outlier_ejections_suppressed",
            "Ejections held back by the minimum-healthy floor",
            self.ejections_suppressed.clone(),
        );
        registry.register(
            "health_transitions",
            "Endpoint health changes from active checks",
            self.health_transitions.clone(),
        );
        registry.register_collector(Box::new(self.state.clone()));
    }

    /// Makes the state gauges read from `source`; only the first call counts.
    pub fn set_state_source(&self, source: StateSource) {
        let _ = self.state.source.set(source);
    }

    pub fn retried(&self, route: &Arc<str>) {
        self.retries
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    pub fn retry_refused(&self, route: &Arc<str>, reason: &'static str) {
        self.retries_refused
            .get_or_create(&RouteReasonLabels {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    pub fn fallback_served(&self, route: &Arc<str>, kind: &'static str, served: &'static str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                route: route.clone(),
                kind,
                served,
            })
            .inc();
    }

    pub fn fallback_missed(&self, route: &Arc<str>) {
        self.fallback_misses
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    pub fn limit_overflow(&self, cluster: &Arc<str>, limit: &'static str) {
        self.limit_overflows
            .get_or_create(&LimitLabels {
                cluster: cluster.clone(),
                limit,
            })
            .inc();
    }

    pub fn rate_limited(&self, route: &Arc<str>) {
        self.rate_limited
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    pub fn fault_injected(&self, route: &Arc<str>, fault: &'static str) {
        self.faults
            .get_or_create(&FaultLabels {
                route: route.clone(),
                fault,
            })
            .inc();
    }

    pub fn breaker_transition(&self, cluster: &Arc<str>, endpoint: Option<&str>, to: &'static str) {
        self.breaker_transitions
            .get_or_create(&BreakerLabels {
                cluster: cluster.clone(),
                endpoint: endpoint.unwrap_or("none").to_owned(),
                to,
            })
            .inc();
    }

    pub fn breaker_rejected(&self, cluster: &Arc<str>) {
        self.breaker_rejections
            .get_or_create(&ClusterLabels {
                cluster: cluster.clone(),
            })
            .inc();
    }

    pub fn ejected(&self, cluster: &Arc<str>, reason: &'static str) {
        self.ejections
            .get_or_create(&ReasonLabels {
                cluster: cluster.clone(),
                reason,
            })
            .inc();
    }

    pub fn ejection_suppressed(&self, cluster: &Arc<str>, reason: &'static str) {
        self.ejections_suppressed
            .get_or_create(&ReasonLabels {
                cluster: cluster.clone(),
                reason,
            })
            .inc();
    }

    pub fn health_changed(&self, cluster: &Arc<str>, healthy: bool) {
        self.health_transitions
            .get_or_create(&HealthLabels {
                cluster: cluster.clone(),
                to: if healthy { "healthy" } else { "unhealthy" },
            })
            .inc();
    }
}

// === impl StateCollector ===

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let clusters = source();

        let mut family = encoder.encode_descriptor(
            "circuit_breaker_state",
            "1 for the circuit breaker's current state",
            None,
            MetricType::Gauge,
        )?;
        for c in &clusters {
            let Some(current) = c.breaker else { continue };
            for state in BreakerState::ALL {
                let labels = StateLabels {
                    cluster: c.name.clone(),
                    state: state.as_str(),
                };
                ConstGauge::new(i64::from(state == current))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        gauge_per_cluster(
            &mut encoder,
            &clusters,
            "cluster_panic",
            "1 while the cluster is in panic mode",
            |c| f64::from(u8::from(c.panic)),
        )?;
        gauge_per_cluster(
            &mut encoder,
            &clusters,
            "cluster_availability_ratio",
            "Share of the rolling window in which the cluster had a usable endpoint",
            |c| c.availability,
        )?;
        let endpoint_gauges: [EndpointGauge; 7] = [
            (
                "endpoint_usable",
                "1 while the endpoint may be picked",
                |e| f64::from(u8::from(e.usable)),
            ),
            (
                "endpoint_ejected",
                "1 while outlier detection has the endpoint ejected",
                |e| f64::from(u8::from(e.ejected)),
            ),
            (
                "endpoint_availability_ratio",
                "Share of the rolling window the endpoint was usable",
                |e| e.availability,
            ),
            (
                "endpoint_outages",
                "Outages of the endpoint since it is tracked",
                |e| e.outages as f64,
            ),
            (
                "endpoint_mttr_seconds",
                "Mean time to recovery of the endpoint",
                |e| e.mttr_seconds,
            ),
            (
                "endpoint_mtbf_seconds",
                "Mean time between failures of the endpoint",
                |e| e.mtbf_seconds,
            ),
            (
                "upstream_connections_idle",
                "HTTP/1.1 connections idle in the endpoint's pool",
                |e| e.idle_connections as f64,
            ),
        ];
        for (name, help, value) in endpoint_gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in &clusters {
                for e in &c.endpoints {
                    let labels = EndpointRef {
                        cluster: c.name.clone(),
                        endpoint: e.address.clone(),
                    };
                    ConstGauge::new(value(e)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// An endpoint gauge: its name, its help text, and how to read it.
type EndpointGauge = (&'static str, &'static str, fn(&EndpointState) -> f64);

fn gauge_per_cluster(
    encoder: &mut DescriptorEncoder,
    clusters: &[ClusterState],
    name: &str,
    help: &str,
    value: impl Fn(&ClusterState) -> f64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for c in clusters {
        ConstGauge::new(value(c)).encode(family.encode_family(&ClusterRef {
            cluster: c.name.clone(),
        })?)?;
    }
    Ok(())
}
