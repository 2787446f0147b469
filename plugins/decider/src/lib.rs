//! A test plugin whose `on-upstream-failure` answers with the decision its config names, for
//! the gateway's end-to-end tests of each decision and each failure kind.
//!
//! - on-upstream-failure: returns `decision`. With `serve` the response carries the failure
//!   the host passed in, so a test can assert what the gateway reported:
//!   `x-failure-kind` (`connect-failure`, `reset`, ...), `x-failure-cluster`,
//!   `x-failure-attempt`, `x-failure-status` (the upstream status, or `none`) and
//!   `x-failure-circuit` (`closed`, `open` or `half-open`), plus `x-decider: serve`.
//! - on-response: when `key` is set, a `200` response is sent on with
//!   `proceed-and-store(key, ttl_seconds)`, so a later `serve-cached` of the same key finds
//!   it; other responses proceed unchanged.
//!
//! Config (all optional):
//! ```json
//! { "decision": "serve", "cluster": "backup", "delay_ms": 0, "status": 200,
//!   "key": "copy", "ttl_seconds": 60 }
//! ```
//! - `decision`: `propagate` (the default), `retry`, `serve`, `serve-cached`, `degrade` or
//!   `shed`.
//! - `cluster`: where `retry` goes (the same cluster when absent); required for `degrade`.
//! - `delay_ms`: the wait before a `retry`, default 0.
//! - `status`: the status of a `serve` (default 200) or a `shed` (default 503).
//! - `key`: the cache key `serve-cached` names and on-response stores under; required for
//!   `serve-cached`.
//! - `ttl_seconds`: how long a stored copy lives, default 60.
//!
//! Counters: one per decision made, named after it (`serve`, `retry`, ...), and `stored`.

use levee_sdk::{
    CircuitState, FallbackDecision, Hooks, Policy, RequestHead, Response, ResponseAction,
    ResponseHead, UpstreamFailure, host,
};
use serde::Deserialize;

/// The lifetime of a stored copy when the config gives none, in seconds.
pub const DEFAULT_TTL_SECONDS: u32 = 60;

/// The decider policy: what to decide, and the decision's parameters.
#[derive(Debug)]
pub struct Decider {
    decision: Decision,
    cluster: Option<String>,
    delay_ms: u32,
    status: Option<u16>,
    key: Option<String>,
    ttl_seconds: u32,
}

/// The decisions of `on-upstream-failure`, by their config names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Decision {
    #[default]
    Propagate,
    Retry,
    Serve,
    ServeCached,
    Degrade,
    Shed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    decision: Decision,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    delay_ms: Option<u32>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u32>,
}

// === impl Decision ===

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Propagate => "propagate",
            Decision::Retry => "retry",
            Decision::Serve => "serve",
            Decision::ServeCached => "serve-cached",
            Decision::Degrade => "degrade",
            Decision::Shed => "shed",
        }
    }
}

// === impl Decider ===

fn circuit_name(circuit: CircuitState) -> &'static str {
    match circuit {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half-open",
    }
}

impl Decider {
    /// The `serve` response: the failure the host reported, as headers.
    fn echo(&self, failure: &UpstreamFailure) -> Response {
        let status = failure
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        Response::new(self.status.unwrap_or(200))
            .header("x-decider", "serve")
            .header("x-failure-kind", failure.kind.as_str())
            .header("x-failure-cluster", failure.cluster.as_str())
            .header("x-failure-attempt", failure.attempt.to_string())
            .header("x-failure-status", status)
            .header("x-failure-circuit", circuit_name(failure.circuit))
            .text("served by the decider plugin\n")
    }
}

impl Policy for Decider {
    const HOOKS: Hooks = Hooks::ON_RESPONSE.union(Hooks::ON_UPSTREAM_FAILURE);

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        if let Some(status) = config.status
            && !(100..=599).contains(&status)
        {
            return Err(format!("decider: `status` {status} is not in 100..=599"));
        }
        match config.decision {
            Decision::Degrade if config.cluster.is_none() => {
                return Err("decider: `degrade` needs `cluster`".to_owned());
            }
            Decision::ServeCached if config.key.is_none() => {
                return Err("decider: `serve-cached` needs `key`".to_owned());
            }
            _ => {}
        }
        let ttl_seconds = config.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if ttl_seconds == 0 {
            return Err("decider: `ttl_seconds` must be at least 1".to_owned());
        }
        Ok(Self {
            decision: config.decision,
            cluster: config.cluster,
            delay_ms: config.delay_ms.unwrap_or(0),
            status: config.status,
            key: config.key,
            ttl_seconds,
        })
    }

    fn on_response(&mut self, _req: &RequestHead, resp: &ResponseHead) -> ResponseAction {
        match &self.key {
            Some(key) if resp.status == 200 => {
                host::counter_add("stored", 1);
                ResponseAction::proceed_and_store(key.as_str(), self.ttl_seconds)
            }
            _ => ResponseAction::proceed(),
        }
    }

    fn on_upstream_failure(
        &mut self,
        _req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        host::counter_add(self.decision.as_str(), 1);
        match self.decision {
            Decision::Propagate => FallbackDecision::Propagate,
            Decision::Retry => match &self.cluster {
                Some(cluster) => FallbackDecision::retry_on(cluster.as_str(), self.delay_ms),
                None => FallbackDecision::retry(self.delay_ms),
            },
            Decision::Serve => FallbackDecision::serve(self.echo(failure)),
            // `init` made sure these have their key and cluster.
            Decision::ServeCached => {
                FallbackDecision::serve_cached(self.key.clone().unwrap_or_default())
            }
            Decision::Degrade => {
                FallbackDecision::degrade(self.cluster.clone().unwrap_or_default())
            }
            Decision::Shed => FallbackDecision::Shed(self.status.unwrap_or(503)),
        }
    }
}

levee_sdk::export!(Decider);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::FailureKind;
    use levee_sdk::testing::{self, Plugin};

    fn decide(config: &str, failure: &UpstreamFailure) -> FallbackDecision {
        let mut p = Plugin::<Decider>::init(config).unwrap();
        p.on_upstream_failure(&RequestHead::new("GET", "/"), failure)
    }

    fn failure(kind: FailureKind) -> UpstreamFailure {
        UpstreamFailure::new(kind, "main")
    }

    #[test]
    fn propagates_without_config() {
        let decision = decide("null", &failure(FailureKind::Reset));
        assert_eq!(decision, FallbackDecision::Propagate);
        assert_eq!(testing::counter("propagate"), 1);
    }

    #[test]
    fn serve_echoes_the_failure_in_headers() {
        let mut f = failure(FailureKind::Upstream5xx);
        f.attempt = 2;
        f.status = Some(503);
        f.circuit = CircuitState::HalfOpen;
        let FallbackDecision::Serve(r) = decide(r#"{"decision": "serve", "status": 299}"#, &f)
        else {
            panic!("expected serve");
        };
        assert_eq!(r.status, 299);
        let header = |name| {
            r.header_value(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("x-failure-kind").as_deref(), Some("upstream-5xx"));
        assert_eq!(header("x-failure-cluster").as_deref(), Some("main"));
        assert_eq!(header("x-failure-attempt").as_deref(), Some("2"));
        assert_eq!(header("x-failure-status").as_deref(), Some("503"));
        assert_eq!(header("x-failure-circuit").as_deref(), Some("half-open"));
        assert_eq!(header("x-decider").as_deref(), Some("serve"));
    }

    #[test]
    fn serve_without_status_is_200_and_status_none() {
        let FallbackDecision::Serve(r) =
            decide(r#"{"decision": "serve"}"#, &failure(FailureKind::Timeout))
        else {
            panic!("expected serve");
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.header_value("x-failure-status"), Some(&b"none"[..]));
        assert_eq!(r.header_value("x-failure-circuit"), Some(&b"closed"[..]));
    }

    #[test]
    fn each_decision_comes_from_config() {
        let f = failure(FailureKind::ConnectFailure);
        assert_eq!(
            decide(r#"{"decision": "retry", "delay_ms": 7}"#, &f),
            FallbackDecision::retry(7)
        );
        assert_eq!(
            decide(r#"{"decision": "retry", "cluster": "b"}"#, &f),
            FallbackDecision::retry_on("b", 0)
        );
        assert_eq!(
            decide(r#"{"decision": "serve-cached", "key": "k"}"#, &f),
            FallbackDecision::serve_cached("k")
        );
        assert_eq!(
            decide(r#"{"decision": "degrade", "cluster": "cheap"}"#, &f),
            FallbackDecision::degrade("cheap")
        );
        assert_eq!(
            decide(r#"{"decision": "shed"}"#, &f),
            FallbackDecision::Shed(503)
        );
        assert_eq!(
            decide(r#"{"decision": "shed", "status": 429}"#, &f),
            FallbackDecision::Shed(429)
        );
    }

    #[test]
    fn stores_200_responses_under_the_key() {
        let mut p = Plugin::<Decider>::init(r#"{"key": "k", "ttl_seconds": 5}"#).unwrap();
        let req = RequestHead::new("GET", "/");
        assert_eq!(
            p.on_response(&req, &ResponseHead::new(200)),
            ResponseAction::proceed_and_store("k", 5)
        );
        assert_eq!(
            p.on_response(&req, &ResponseHead::new(503)),
            ResponseAction::proceed()
        );
        assert_eq!(testing::counter("stored"), 1);

        let mut plain = Plugin::<Decider>::init("null").unwrap();
        assert_eq!(
            plain.on_response(&req, &ResponseHead::new(200)),
            ResponseAction::proceed()
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        for bad in [
            r#"{"decision": "degrade"}"#,
            r#"{"decision": "serve-cached"}"#,
            r#"{"decision": "teleport"}"#,
            r#"{"status": 42}"#,
            r#"{"ttl_seconds": 0}"#,
            r#"{"extra": 1}"#,
        ] {
            assert!(Plugin::<Decider>::init(bad).is_err(), "{bad} was accepted");
        }
    }
}
