//! Sheds low-priority requests with `503` while their cluster is overloaded, so the capacity
//! left goes to the requests that matter.
//!
//! On each request the plugin reads `upstream-health(cluster)`. The cluster counts as
//! overloaded when its circuit is open, or when `max_in_flight` is set and at least that many
//! requests are in flight, or when `min_healthy_ratio` is set and the usable share of endpoints
//! is below it. A request whose priority header value is not in `keep` (compared
//! case-insensitively; a request without the header has no priority and is not kept) is then
//! answered `503` with `retry-after` and `x-levee-shed: priority`; every other request proceeds.
//!
//! Config:
//! ```json
//! { "header": "x-priority", "keep": ["high"], "cluster": "main",
//!   "max_in_flight": 200, "min_healthy_ratio": 0.5, "retry_after": 5 }
//! ```
//! Defaults: `header` `x-priority`, `keep` `["high"]`, `retry_after` 5 seconds, no in-flight or
//! ratio threshold (only an open circuit sheds). `cluster` defaults to the route's name, for the
//! common layout where a route and its cluster share one; when the host knows no such cluster
//! the plugin proceeds, logs a warning once per instance and counts `unknown_cluster`.
//!
//! Counters: `shed`, `unknown_cluster`.

use levee_sdk::{
    CircuitState, ClusterHealth, Hooks, LogLevel, Policy, RequestAction, RequestHead, Response,
    host, is_valid_header_name,
};
use serde::Deserialize;

/// The priority header when the config names none.
pub const DEFAULT_HEADER: &str = "x-priority";
/// The `retry-after` seconds on shed responses when the config gives none.
pub const DEFAULT_RETRY_AFTER: u32 = 5;

/// The priority-shedding policy.
#[derive(Debug)]
pub struct PriorityShedding {
    header: String,
    keep: Vec<String>,
    cluster: Option<String>,
    max_in_flight: Option<u32>,
    min_healthy_ratio: Option<f32>,
    retry_after: u32,
    warned_unknown: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    keep: Option<Vec<String>>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    min_healthy_ratio: Option<f32>,
    #[serde(default)]
    retry_after: Option<u32>,
}

// === impl PriorityShedding ===

impl PriorityShedding {
    fn overloaded(&self, health: &ClusterHealth) -> bool {
        health.circuit == CircuitState::Open
            || self
                .max_in_flight
                .is_some_and(|max| health.in_flight >= max)
            || self
                .min_healthy_ratio
                .is_some_and(|min| health.healthy_ratio() < min)
    }

    fn kept(&self, req: &RequestHead) -> bool {
        req.header_str(&self.header)
            .is_some_and(|p| self.keep.iter().any(|k| k.eq_ignore_ascii_case(p)))
    }
}

impl Policy for PriorityShedding {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        let header = config
            .header
            .unwrap_or_else(|| DEFAULT_HEADER.to_owned())
            .to_ascii_lowercase();
        if !is_valid_header_name(&header) {
            return Err(format!("priority-shedding: invalid `header` `{header}`"));
        }
        if let Some(ratio) = config.min_healthy_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(format!(
                "priority-shedding: `min_healthy_ratio` {ratio} is not in 0.0..=1.0"
            ));
        }
        if config.cluster.as_deref() == Some("") {
            return Err("priority-shedding: `cluster` must not be empty".to_owned());
        }
        Ok(Self {
            header,
            keep: config.keep.unwrap_or_else(|| vec!["high".to_owned()]),
            cluster: config.cluster,
            max_in_flight: config.max_in_flight,
            min_healthy_ratio: config.min_healthy_ratio,
            retry_after: config.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            warned_unknown: false,
        })
    }

    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        let cluster = self.cluster.as_deref().unwrap_or(&req.route);
        let Some(health) = host::upstream_health(cluster) else {
            host::counter_add("unknown_cluster", 1);
            if !self.warned_unknown {
                self.warned_unknown = true;
                let msg = format!("no cluster named `{cluster}`; not shedding (set `cluster`)");
                host::log(LogLevel::Warn, &msg);
            }
            return RequestAction::proceed();
        };
        if !self.overloaded(&health) || self.kept(req) {
            return RequestAction::proceed();
        }
        host::counter_add("shed", 1);
        RequestAction::respond(
            Response::new(503)
                .header("retry-after", self.retry_after.to_string())
                .header("x-levee-shed", "priority")
                .text("overloaded: low-priority request shed, retry later\n"),
        )
    }
}

levee_sdk::export!(PriorityShedding);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    fn health(healthy: u32, total: u32, in_flight: u32, circuit: CircuitState) -> ClusterHealth {
        ClusterHealth {
            healthy_endpoints: healthy,
            total_endpoints: total,
            in_flight,
            circuit,
            ..ClusterHealth::default()
        }
    }

    fn req(priority: Option<&str>) -> RequestHead {
        let r = RequestHead::new("GET", "/").with_route("api");
        match priority {
            Some(p) => r.with_header("x-priority", p),
            None => r,
        }
    }

    fn is_shed(action: &RequestAction) -> bool {
        match action {
            RequestAction::Respond(r) => {
                assert_eq!(r.status, 503);
                assert!(r.header_value("retry-after").is_some());
                true
            }
            _ => false,
        }
    }

    const CONFIG: &str = r#"{"cluster": "main", "keep": ["high", "critical"], "max_in_flight": 100,
            "min_healthy_ratio": 0.5, "retry_after": 9}"#;

    #[test]
    fn sheds_low_priority_while_in_flight_is_at_the_limit() {
        let mut p = Plugin::<PriorityShedding>::init(CONFIG).unwrap();
        testing::set_health("main", health(4, 4, 99, CircuitState::Closed));
        assert!(!is_shed(&p.on_request(&req(Some("low")))));
        testing::set_health("main", health(4, 4, 100, CircuitState::Closed));
        let action = p.on_request(&req(Some("low")));
        assert!(is_shed(&action));
        let RequestAction::Respond(r) = action else {
            unreachable!()
        };
        assert_eq!(r.header_value("retry-after"), Some(&b"9"[..]));
        assert!(is_shed(&p.on_request(&req(None))));
        assert!(!is_shed(&p.on_request(&req(Some("HIGH")))));
        assert!(!is_shed(&p.on_request(&req(Some("critical")))));
        assert_eq!(testing::counter("shed"), 2);
    }

    #[test]
    fn sheds_when_too_few_endpoints_are_healthy() {
        let mut p = Plugin::<PriorityShedding>::init(CONFIG).unwrap();
        testing::set_health("main", health(2, 4, 0, CircuitState::Closed));
        assert!(!is_shed(&p.on_request(&req(Some("low")))));
        testing::set_health("main", health(1, 4, 0, CircuitState::Closed));
        assert!(is_shed(&p.on_request(&req(Some("low")))));
    }

    #[test]
    fn an_open_circuit_sheds_even_without_thresholds() {
        let mut p = Plugin::<PriorityShedding>::init(r#"{"cluster": "main"}"#).unwrap();
        testing::set_health("main", health(0, 4, 10_000, CircuitState::HalfOpen));
        assert!(!is_shed(&p.on_request(&req(Some("low")))));
        testing::set_health("main", health(4, 4, 0, CircuitState::Open));
        assert!(is_shed(&p.on_request(&req(Some("low")))));
        assert!(!is_shed(&p.on_request(&req(Some("high")))));
    }

    #[test]
    fn cluster_defaults_to_the_route_name_and_unknown_clusters_proceed() {
        let mut p = Plugin::<PriorityShedding>::init("null").unwrap();
        assert!(!is_shed(&p.on_request(&req(Some("low")))));
        assert!(!is_shed(&p.on_request(&req(Some("low")))));
        assert_eq!(testing::counter("unknown_cluster"), 2);
        assert_eq!(testing::logs().len(), 1, "warns once per instance");
        testing::set_health("api", health(4, 4, 0, CircuitState::Open));
        assert!(is_shed(&p.on_request(&req(Some("low")))));
    }

    #[test]
    fn a_custom_header_is_read() {
        let config = r#"{"cluster": "main", "header": "X-Tier", "keep": ["gold"]}"#;
        let mut p = Plugin::<PriorityShedding>::init(config).unwrap();
        testing::set_health("main", health(4, 4, 0, CircuitState::Open));
        let gold = RequestHead::new("GET", "/").with_header("x-tier", "gold");
        assert!(!is_shed(&p.on_request(&gold)));
        assert!(is_shed(&p.on_request(&req(Some("gold")))));
    }

    #[test]
    fn rejects_bad_config() {
        for bad in [
            r#"{"min_healthy_ratio": 1.5}"#,
            r#"{"header": "x priority"}"#,
            r#"{"cluster": ""}"#,
            r#"{"max_inflight": 3}"#,
        ] {
            assert!(
                Plugin::<PriorityShedding>::init(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
