//! The `/clusters` view of a cluster: its endpoints and their load, as JSON.

use serde_json::{Value, json};

use super::{Cluster, DISCOVERED_PRIORITY, DISCOVERED_WEIGHT, Source};
use levee_config::{LbPolicy, UpstreamProtocol};

/// `{ name, lb, protocol, endpoints: [{ address, weight, priority, usable, in_flight,
/// requests_total, ewma_latency_ms, open_connections, source }] }`.
pub(crate) fn cluster(cluster: &Cluster) -> Value {
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
            json!({
                "address": address.to_string(),
                "weight": weight,
                "priority": priority,
                "usable": endpoint.is_usable(),
                "in_flight": endpoint.in_flight(),
                "requests_total": endpoint.requests_total(),
                "ewma_latency_ms": endpoint.ewma_latency().as_secs_f64() * 1000.0,
                "open_connections": cluster.pools.open_connections(address),
                "source": match source {
                    Source::Static => "static",
                    Source::Dns => "dns",
                },
            })
        })
        .collect();
    json!({
        "name": &*cluster.name,
        "lb": lb_name(cluster.config.lb),
        "protocol": match cluster.config.protocol {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        },
        "endpoints": endpoints,
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
