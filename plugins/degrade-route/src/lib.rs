//! Routes to a degraded cluster (a cheaper, cached or read-only variant of the service) while
//! the main one is failing.
//!
//! - on-request: if `upstream-health(cluster)` shows an error rate at or above `error_rate`, or
//!   an open circuit, the request goes `route-to(degraded)`; otherwise it proceeds.
//! - on-upstream-failure: a failure on any cluster but the degraded one answers
//!   `degrade(degraded)`, so the host forwards once more to the degraded cluster. A failure of the
//!   degraded cluster itself, or a `rate-limited` refusal, propagates.
//!
//! Config: `{ "cluster": "main", "degraded": "cheap", "error_rate": 0.5 }`. `degraded` is
//! required; `cluster` defaults to the route's name; `error_rate` (0.0 to 1.0) defaults to 0.5.
//! When the host knows no such cluster, requests proceed.
//!
//! Counters: `routed_degraded`, `degraded_after_failure`.

use levee_sdk::{
    CircuitState, FailureKind, FallbackDecision, Hooks, Policy, RequestAction, RequestHead,
    UpstreamFailure, host,
};
use serde::Deserialize;

/// The error-rate threshold when the config gives none.
pub const DEFAULT_ERROR_RATE: f32 = 0.5;

/// The degrade-route policy.
#[derive(Debug)]
pub struct DegradeRoute {
    cluster: Option<String>,
    degraded: String,
    error_rate: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    cluster: Option<String>,
    degraded: String,
    #[serde(default)]
    error_rate: Option<f32>,
}

// === impl DegradeRoute ===

impl Policy for DegradeRoute {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_UPSTREAM_FAILURE);

    fn init(config: &[u8]) -> Result<Self, String> {
        if levee_sdk::config::is_absent(config) {
            return Err("degrade-route: config with `degraded` (a cluster name) required".into());
        }
        let config: Config = levee_sdk::config::parse(config)?;
        let error_rate = config.error_rate.unwrap_or(DEFAULT_ERROR_RATE);
        if !(0.0..=1.0).contains(&error_rate) {
            return Err(format!(
                "degrade-route: `error_rate` {error_rate} is not in 0.0..=1.0"
            ));
        }
        if config.degraded.is_empty() || config.cluster.as_deref() == Some("") {
            return Err("degrade-route: cluster names must not be empty".to_owned());
        }
        if config.cluster.as_deref() == Some(config.degraded.as_str()) {
            return Err("degrade-route: `degraded` must differ from `cluster`".to_owned());
        }
        Ok(Self {
            cluster: config.cluster,
            degraded: config.degraded,
            error_rate,
        })
    }

    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        let cluster = self.cluster.as_deref().unwrap_or(&req.route);
        let failing = host::upstream_health(cluster)
            .is_some_and(|h| h.circuit == CircuitState::Open || h.error_rate >= self.error_rate);
        if failing {
            host::counter_add("routed_degraded", 1);
            RequestAction::route_to(self.degraded.as_str())
        } else {
            RequestAction::proceed()
        }
    }

    fn on_upstream_failure(
        &mut self,
        _req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        if failure.cluster == self.degraded || failure.kind == FailureKind::RateLimited {
            return FallbackDecision::Propagate;
        }
        host::counter_add("degraded_after_failure", 1);
        FallbackDecision::degrade(self.degraded.as_str())
    }
}

levee_sdk::export!(DegradeRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::ClusterHealth;
    use levee_sdk::testing::{self, Plugin};

    const CONFIG: &str = r#"{"cluster": "main", "degraded": "cheap", "error_rate": 0.25}"#;

    fn set(error_rate: f32, circuit: CircuitState) {
        let h = ClusterHealth {
            healthy_endpoints: 3,
            total_endpoints: 3,
            error_rate,
            circuit,
            ..ClusterHealth::default()
        };
        testing::set_health("main", h);
    }

    fn get() -> RequestHead {
        RequestHead::new("GET", "/").with_route("api")
    }

    #[test]
    fn routes_to_the_degraded_cluster_at_the_error_rate_threshold() {
        let mut p = Plugin::<DegradeRoute>::init(CONFIG).unwrap();
        set(0.24, CircuitState::Closed);
        assert_eq!(p.on_request(&get()), RequestAction::proceed());
        set(0.25, CircuitState::Closed);
        assert_eq!(p.on_request(&get()), RequestAction::route_to("cheap"));
        assert_eq!(testing::counter("routed_degraded"), 1);
    }

    #[test]
    fn an_open_circuit_routes_to_the_degraded_cluster() {
        let mut p = Plugin::<DegradeRoute>::init(CONFIG).unwrap();
        set(0.0, CircuitState::HalfOpen);
        assert_eq!(p.on_request(&get()), RequestAction::proceed());
        set(0.0, CircuitState::Open);
        assert_eq!(p.on_request(&get()), RequestAction::route_to("cheap"));
    }

    #[test]
    fn failures_degrade_once_and_never_from_the_degraded_cluster() {
        let mut p = Plugin::<DegradeRoute>::init(CONFIG).unwrap();
        let main = UpstreamFailure::new(FailureKind::ConnectFailure, "main");
        assert_eq!(
            p.on_upstream_failure(&get(), &main),
            FallbackDecision::degrade("cheap")
        );
        let cheap = UpstreamFailure::new(FailureKind::Timeout, "cheap");
        assert_eq!(
            p.on_upstream_failure(&get(), &cheap),
            FallbackDecision::Propagate
        );
        let limited = UpstreamFailure::new(FailureKind::RateLimited, "main");
        assert_eq!(
            p.on_upstream_failure(&get(), &limited),
            FallbackDecision::Propagate
        );
        assert_eq!(testing::counter("degraded_after_failure"), 1);
    }

    #[test]
    fn cluster_defaults_to_the_route_and_unknown_clusters_proceed() {
        let mut p = Plugin::<DegradeRoute>::init(r#"{"degraded": "cheap"}"#).unwrap();
        assert_eq!(p.on_request(&get()), RequestAction::proceed());
        testing::set_health(
            "api",
            ClusterHealth {
                error_rate: 0.5,
                ..ClusterHealth::default()
            },
        );
        assert_eq!(p.on_request(&get()), RequestAction::route_to("cheap"));
    }

    #[test]
    fn rejects_bad_config() {
        for bad in [
            "null",
            r#"{"cluster": "main"}"#,
            r#"{"degraded": "cheap", "error_rate": 2}"#,
            r#"{"degraded": ""}"#,
            r#"{"cluster": "main", "degraded": "main"}"#,
            r#"{"degraded": "cheap", "rate": 0.1}"#,
        ] {
            assert!(
                Plugin::<DegradeRoute>::init(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
