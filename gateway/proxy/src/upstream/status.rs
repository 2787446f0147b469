//! The `/clusters` view of a cluster: its endpoints, their load, health, ejection, breakers
//! and availability, as typed views that serialize to the JSON the docs describe and that the
//! admin status page renders. The metrics' state gauges come from the same data
//! ([`cluster_state`]), so the views never disagree.

use std::net::SocketAddr;
use std::time::Duration;

use levee_balance::PanicMode;
use levee_config::{LbPolicy, UpstreamProtocol};
use levee_resilience::availability::AvailabilityStatus;
use levee_resilience::breaker::BreakerStatus;
use levee_resilience::bulkhead::ResourceStatus;
use levee_resilience::health::EndpointStatus;
use serde::Serialize;
use tokio::time::Instant;

use super::health::outlier_params;
use super::{Cluster, DISCOVERED_PRIORITY, DISCOVERED_WEIGHT, Source};
use crate::metrics::{ClusterState, EndpointState};

/// One cluster in `/clusters`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// Load-balancing algorithm (`round-robin`, `least-request`, …).
    pub lb: LbPolicy,
    /// The HTTP version spoken upstream (`http1`, `http2`).
    pub protocol: UpstreamProtocol,
    /// Whether the cluster is in panic, and each priority level's share of the traffic.
    pub panic: PanicView,
    /// The cluster's circuit breaker; `None` without `circuit_breaker`.
    pub breaker: Option<BreakerView>,
    /// Each limit's maximum, use and overflows.
    pub limits: LimitsView,
    /// How many endpoints are usable and ejected.
    pub health: HealthView,
    /// The cluster's availability (up while any endpoint is usable).
    pub availability: AvailabilityView,
    /// Static endpoints first (config order), then discovered ones.
    pub endpoints: Vec<EndpointView>,
}

/// A cluster's panic state.
#[derive(Debug, Clone, Serialize)]
pub struct PanicView {
    /// Whether picks ignore health now.
    pub active: bool,
    /// `spread` or `fail-fast`.
    pub mode: &'static str,
    /// Usable fraction below which a priority level panics.
    pub threshold: f64,
    /// Each priority level, highest first.
    pub levels: Vec<LevelView>,
}

/// One priority level of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct LevelView {
    /// The level's priority (0 is the highest).
    pub priority: u32,
    /// Endpoints at this level.
    pub endpoints: usize,
    /// Usable endpoints at this level.
    pub usable: usize,
    /// Share of the traffic (0..=1) this level takes.
    pub load: f64,
}

/// A circuit breaker (a cluster's, or one endpoint's with `per_endpoint`).
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// `closed`, `open` or `half-open`, as the request path sees it (forcing included).
    pub state: &'static str,
    /// `open` or `closed` while an operator forces it, else `None`.
    pub forced: Option<&'static str>,
    /// Failed share of the calls in the window.
    pub failure_rate: f64,
    /// Slow share of the calls in the window.
    pub slow_call_rate: f64,
    /// Calls in the window.
    pub calls: u32,
    /// Openings since the breaker last closed.
    pub consecutive_openings: u32,
    /// Openings since the breaker was created.
    pub total_openings: u64,
    /// While open: milliseconds until the next probe is let through.
    pub half_open_in_ms: Option<u64>,
    /// Probes in flight while half-open.
    pub probes_in_flight: u32,
}

/// A cluster's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsView {
    /// `max_connections` (HTTP/1.1: requests holding a connection).
    pub connections: LimitView,
    /// `max_pending`: requests waiting for a connection.
    pub pending: LimitView,
    /// `max_requests`: requests in flight.
    pub requests: LimitView,
    /// `max_retries`: retries in flight.
    pub retries: LimitView,
}

/// One limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitView {
    /// The limit in force.
    pub max: u32,
    /// Slots held now.
    pub in_use: u32,
    /// Requests refused because the limit was reached.
    pub overflows: u64,
}

/// A cluster's health summary.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// Endpoints tracked.
    pub endpoints: usize,
    /// Endpoints usable now.
    pub usable: usize,
    /// Endpoints ejected now.
    pub ejected: usize,
    /// Mean of the endpoints' availability ratios, once any is known.
    pub mean_endpoint_availability: Option<f64>,
}

/// Up/down accounting of a cluster or endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct AvailabilityView {
    /// Up now.
    pub up: bool,
    /// Share of the window spent up.
    pub ratio: f64,
    /// The rolling window, in seconds.
    pub window_s: u64,
    /// Outages since tracking began.
    pub outages: u64,
    /// Seconds up since tracking began.
    pub up_s: f64,
    /// Seconds down since tracking began.
    pub down_s: f64,
    /// Mean time to recovery, once there was an outage.
    pub mttr_ms: Option<u64>,
    /// Mean time between failures, once there was an outage.
    pub mtbf_ms: Option<u64>,
    /// Milliseconds in the current state.
    pub in_state_ms: u64,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    /// `ip:port`.
    pub address: SocketAddr,
    /// Load-balancing weight.
    pub weight: u32,
    /// Priority level (0 is the highest).
    pub priority: u32,
    /// Whether picks may choose it now.
    pub usable: bool,
    /// `healthy`, `unhealthy`, `unchecked` (no active checks) or `unknown`.
    pub health: &'static str,
    /// The ejection in force, if any.
    pub ejected: Option<EjectionView>,
    /// Ejections so far (sets the next ejection's length).
    pub ejection_count: u32,
    /// Whether the endpoint is on probation after an ejection.
    pub probation: bool,
    /// The endpoint's own breaker (`per_endpoint`), once it has seen a call.
    pub breaker: Option<BreakerView>,
    /// Its availability; `None` while the endpoint is not tracked yet.
    pub availability: Option<AvailabilityView>,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent since the endpoint appeared.
    pub requests_total: u64,
    /// Peak-EWMA latency in milliseconds.
    pub ewma_latency_ms: f64,
    /// Upstream connections open now.
    pub open_connections: u64,
    /// Idle pooled connections now.
    pub idle_connections: usize,
    /// `static` or `dns`.
    pub source: &'static str,
}

/// An ejection in force.
#[derive(Debug, Clone, Serialize)]
pub struct EjectionView {
    /// Why: `consecutive_5xx`, `consecutive_gateway_failure`, `success_rate`,
    /// `failure_percentage`.
    pub reason: &'static str,
    /// Milliseconds until the ejection ends.
    pub remaining_ms: u64,
    /// The whole ejection's length in milliseconds.
    pub duration_ms: u64,
}

// === impl ClusterView ===

impl ClusterView {
    /// The view of `cluster` now.
    pub(crate) fn of(cluster: &Cluster) -> ClusterView {
        let now = Instant::now();
        let health = cluster.guards.health.status(now);
        let statics = cluster
            .endpoints
            .statics
            .iter()
            .map(|s| (Source::Static, s.endpoint.clone(), s.weight, s.priority));
        let discovered = cluster
            .endpoints
            .discovered()
            .into_iter()
            .map(|e| (Source::Dns, e, DISCOVERED_WEIGHT, DISCOVERED_PRIORITY));
        let endpoints = statics
            .chain(discovered)
            .map(|(source, endpoint, weight, priority)| {
                EndpointView::of(cluster, now, source, &endpoint, weight, priority)
            })
            .collect();
        let load = cluster.endpoints.set.load().load_state();
        ClusterView {
            name: cluster.name.to_string(),
            lb: cluster.config.lb,
            protocol: cluster.config.protocol,
            panic: PanicView {
                active: load.panic,
                mode: match load.policy.panic_mode {
                    PanicMode::Spread => "spread",
                    PanicMode::FailFast => "fail-fast",
                },
                threshold: load.policy.panic_threshold,
                levels: load
                    .levels
                    .iter()
                    .map(|l| LevelView {
                        priority: l.priority,
                        endpoints: l.endpoints,
                        usable: l.usable,
                        load: l.load,
                    })
                    .collect(),
            },
            breaker: cluster
                .guards
                .breaker_status()
                .map(|b| BreakerView::from(&b)),
            limits: cluster.guards.limits_status(),
            health: HealthView {
                endpoints: health.endpoints,
                usable: health.usable,
                ejected: health.ejected,
                mean_endpoint_availability: health.mean_endpoint_availability,
            },
            availability: AvailabilityView::from(&health.availability),
            endpoints,
        }
    }
}

// === impl EndpointView ===

impl EndpointView {
    fn of(
        cluster: &Cluster,
        now: Instant,
        source: Source,
        endpoint: &levee_balance::Endpoint,
        weight: u32,
        priority: u32,
    ) -> EndpointView {
        let address = endpoint.address();
        let status = cluster
            .guards
            .health
            .health_of(address)
            .map(|h| h.status(now));
        let mut view = EndpointView {
            address,
            weight,
            priority,
            usable: endpoint.is_usable(),
            health: "unknown",
            ejected: None,
            ejection_count: 0,
            probation: false,
            breaker: cluster
                .guards
                .endpoint_breaker_status(address)
                .map(|b| BreakerView::from(&b)),
            availability: None,
            in_flight: endpoint.in_flight(),
            requests_total: endpoint.requests_total(),
            ewma_latency_ms: endpoint.ewma_latency().as_secs_f64() * 1000.0,
            open_connections: cluster.pools.open_connections(address),
            idle_connections: cluster.pools.idle_connections(address),
            source: match source {
                Source::Static => "static",
                Source::Dns => "dns",
            },
        };
        if let Some(s) = status {
            let outlier = outlier_params(&cluster.config);
            view.health = if cluster.config.health_check.is_none() {
                "unchecked"
            } else if s.healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            view.ejected = s.ejection.as_ref().map(|e| EjectionView {
                reason: e.reason.as_str(),
                remaining_ms: millis(e.remaining),
                duration_ms: millis(outlier.ejection_duration(s.ejection_count)),
            });
            view.ejection_count = s.ejection_count;
            view.probation = s.probation;
            view.availability = Some(AvailabilityView::from(&s.availability));
        }
        view
    }
}

// === impl BreakerView ===

impl From<&BreakerStatus> for BreakerView {
    fn from(status: &BreakerStatus) -> Self {
        BreakerView {
            state: status.state.as_str(),
            forced: status.forced.map(|f| f.as_str()),
            failure_rate: status.failure_rate,
            slow_call_rate: status.slow_call_rate,
            calls: status.calls,
            consecutive_openings: status.consecutive_openings,
            total_openings: status.total_openings,
            half_open_in_ms: status.half_open_in.map(millis),
            probes_in_flight: status.probes_in_flight,
        }
    }
}

// === impl LimitView ===

impl From<ResourceStatus> for LimitView {
    fn from(r: ResourceStatus) -> Self {
        LimitView {
            max: r.max,
            in_use: r.in_use,
            overflows: r.overflows,
        }
    }
}

// === impl AvailabilityView ===

impl From<&AvailabilityStatus> for AvailabilityView {
    fn from(a: &AvailabilityStatus) -> Self {
        AvailabilityView {
            up: a.up,
            ratio: a.ratio,
            window_s: a.window.as_secs(),
            outages: a.outages,
            up_s: a.up_time.as_secs_f64(),
            down_s: a.down_time.as_secs_f64(),
            mttr_ms: a.mttr.map(millis),
            mtbf_ms: a.mtbf.map(millis),
            in_state_ms: millis(a.in_state_for),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The state gauges of a cluster for `/metrics`.
pub(crate) fn cluster_state(cluster: &Cluster) -> ClusterState {
    let now = Instant::now();
    let health = cluster.guards.health.status(now);
    ClusterState {
        name: cluster.name.clone(),
        breaker: cluster.guards.breaker_status().map(|b| b.state),
        panic: cluster.endpoints.set.load().in_panic(),
        availability: health.availability.ratio,
        endpoints: cluster
            .guards
            .health
            .endpoints()
            .iter()
            .map(|h| endpoint_state(&h.status(now), cluster))
            .collect(),
    }
}

fn endpoint_state(status: &EndpointStatus, cluster: &Cluster) -> EndpointState {
    let seconds = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    EndpointState {
        address: status.address.to_string(),
        usable: status.usable,
        ejected: status.ejection.is_some(),
        availability: status.availability.ratio,
        outages: status.availability.outages,
        mttr_seconds: seconds(status.availability.mttr),
        mtbf_seconds: seconds(status.availability.mtbf),
        idle_connections: cluster.pools.idle_connections(status.address) as u64,
    }
}
