//! The `/clusters` view of a cluster: its endpoints, their load, health, ejection, breakers
//! and availability, as JSON. The metrics' state gauges come from the same data
//! ([`cluster_state`]), so the two views never disagree.

use std::time::Duration;

use levee_balance::PanicMode;
use levee_config::{LbPolicy, UpstreamProtocol};
use levee_resilience::availability::AvailabilityStatus;
use levee_resilience::health::EndpointStatus;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::guard::breaker_json;
use super::health::{outlier_params, reason_name};
use super::{Cluster, DISCOVERED_PRIORITY, DISCOVERED_WEIGHT, Source};
use crate::metrics::{ClusterState, EndpointState};

/// `{ name, lb, protocol, panic: { active, mode, threshold, levels: [{ priority, endpoints,
/// usable, load }] }, breaker: {..} | null, limits: {..}, health: { usable, ejected, endpoints },
/// availability: {..}, endpoints: [{ address, weight, priority, usable, health, ejected: { reason,
/// remaining_ms, duration_ms } | null, ejection_count, probation, breaker, in_flight, requests_total,
/// ewma_latency_ms, open_connections, idle_connections, source, availability: {..} }] }`.
pub(crate) fn cluster(cluster: &Cluster) -> Value {
    let now = Instant::now();
    let health = cluster.guards.health.status(now);
    let outlier = outlier_params(&cluster.config);
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
    let endpoints: Vec<Value> = statics
        .chain(discovered)
        .map(|(source, endpoint, weight, priority)| {
            let address = endpoint.address();
            let status = cluster
                .guards
                .health
                .health_of(address)
                .map(|h| h.status(now));
            let (state, ejected, count, probation, availability) = match &status {
                Some(s) => (
                    if cluster.config.health_check.is_none() {
                        "unchecked"
                    } else if s.healthy {
                        "healthy"
                    } else {
                        "unhealthy"
                    },
                    s.ejection.as_ref().map(|e| {
                        json!({
                            "reason": reason_name(e.reason),
                            "remaining_ms": e.remaining.as_millis() as u64,
                            "duration_ms":
                                outlier.ejection_duration(s.ejection_count).as_millis() as u64,
                        })
                    }),
                    s.ejection_count,
                    s.probation,
                    availability_json(&s.availability),
                ),
                None => ("unknown", None, 0, false, Value::Null),
            };
            json!({
                "address": address.to_string(),
                "weight": weight,
                "priority": priority,
                "usable": endpoint.is_usable(),
                "health": state,
                "ejected": ejected,
                "ejection_count": count,
                "probation": probation,
                "breaker": cluster
                    .guards
                    .endpoint_breaker_status(address)
                    .map(|b| breaker_json(&b)),
                "availability": availability,
                "in_flight": endpoint.in_flight(),
                "requests_total": endpoint.requests_total(),
                "ewma_latency_ms": endpoint.ewma_latency().as_secs_f64() * 1000.0,
                "open_connections": cluster.pools.open_connections(address),
                "idle_connections": cluster.pools.idle_connections(address),
                "source": match source {
                    Source::Static => "static",
                    Source::Dns => "dns",
                },
            })
        })
        .collect();
    let load = cluster.endpoints.set.load().load_state();
    json!({
        "name": &*cluster.name,
        "lb": lb_name(cluster.config.lb),
        "protocol": match cluster.config.protocol {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        },
        "panic": {
            "active": load.panic,
            "mode": match load.policy.panic_mode {
                PanicMode::Spread => "spread",
                PanicMode::FailFast => "fail-fast",
            },
            "threshold": load.policy.panic_threshold,
            "levels": load.levels.iter().map(|l| json!({
                "priority": l.priority,
                "endpoints": l.endpoints,
                "usable": l.usable,
                "load": l.load,
            })).collect::<Vec<_>>(),
        },
        "breaker": cluster.guards.breaker_status().map(|b| breaker_json(&b)),
        "limits": cluster.guards.limits_status(),
        "health": {
            "endpoints": health.endpoints,
            "usable": health.usable,
            "ejected": health.ejected,
            "mean_endpoint_availability": health.mean_endpoint_availability,
        },
        "availability": availability_json(&health.availability),
        "endpoints": endpoints,
    })
}

/// The state gauges of a cluster for `/metrics`.
pub(crate) fn cluster_state(cluster: &Cluster) -> ClusterState {
    let now = Instant::now();
    let health = cluster.guards.health.status(now);
    ClusterState {
        name: cluster.name.clone(),
        breaker: cluster
            .guards
            .breaker_status()
            .map(|b| super::guard::state_name(b.state)),
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

/// `{ up, ratio, window_s, outages, up_s, down_s, mttr_ms, mtbf_ms, in_state_ms }`.
fn availability_json(a: &AvailabilityStatus) -> Value {
    json!({
        "up": a.up,
        "ratio": a.ratio,
        "window_s": a.window.as_secs(),
        "outages": a.outages,
        "up_s": a.up_time.as_secs_f64(),
        "down_s": a.down_time.as_secs_f64(),
        "mttr_ms": a.mttr.map(|d| d.as_millis() as u64),
        "mtbf_ms": a.mtbf.map(|d| d.as_millis() as u64),
        "in_state_ms": a.in_state_for.as_millis() as u64,
    })
}

fn lb_name(lb: LbPolicy) -> &'static str {
    match lb {
        LbPolicy::RoundRobin => "round-robin",
        LbPolicy::Random => "random",
        LbPolicy::LeastRequest => "least-request",
        LbPolicy::PeakEwma => "peak-ewma",
        LbPolicy::RingHash => "ring-hash",
        LbPolicy::Maglev => "maglev",
    }
}
