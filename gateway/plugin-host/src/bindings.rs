//! The bindings `bindgen!` generates from `sdk/wit/levee.wit` (world `plugin`), and the
//! conversions between them and this crate's public types.
//!
//! Inputs are borrowed (`ownership: Borrowing`), so a hook call copies the request only once:
//! into the guest's memory. Outputs are validated here, which is the one place a plugin's raw
//! bytes turn into `http` types.
//!
//! Exports are async: a call runs the guest on a fiber that yields to the caller's executor at
//! every epoch tick (see `instance::new_store`), so a plugin that runs long holds a gateway
//! worker thread for one tick at a time, not for its whole deadline. Imports stay synchronous:
//! every `host` function answers at once from memory.

wasmtime::component::bindgen!({
    path: "../../sdk/wit/levee.wit",
    world: "plugin",
    ownership: Borrowing { duplicate_if_necessary: true },
    exports: { default: async },
});

pub(crate) mod convert {
    //! Public types to and from the generated ones.

    use std::fmt;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

    use super::levee::policy::types as wit;
    use crate::status::PluginStats;
    use crate::types::{
        CircuitState, ClusterHealth, FailureKind, FallbackDecision, HeaderFilter, HeaderMutation,
        Hooks, LocalResponse, LogLevel, RequestAction, RequestHead, ResponseAction, ResponseHead,
        RetrySpec, StoreSpec, UpstreamFailure,
    };

    /// A decision the host cannot act on. Invalid header entries are not this: they are
    /// dropped and counted, and the rest of the decision applies.
    #[derive(Debug)]
    pub(crate) enum Invalid {
        /// A status outside 200-599 (1xx are interim, never a final answer).
        Status(u16),
    }

    impl fmt::Display for Invalid {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Invalid::Status(status) => {
                    write!(f, "status {status} is not between 100 and 599")
                }
            }
        }
    }

    // === inputs ===

    /// The headers `filter` lets through, as the borrowed list the guest receives.
    pub(crate) fn header_list<'a>(
        headers: &'a HeaderMap,
        filter: &'a HeaderFilter,
    ) -> Vec<(&'a str, &'a [u8])> {
        match filter {
            HeaderFilter::All => headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
                .collect(),
            HeaderFilter::Only(names) => names
                .iter()
                .flat_map(|name| {
                    headers
                        .get_all(name)
                        .iter()
                        .map(|value| (name.as_str(), value.as_bytes()))
                })
                .collect(),
        }
    }

    pub(crate) fn request_head<'a>(
        req: &RequestHead<'a>,
        headers: &'a [(&'a str, &'a [u8])],
    ) -> wit::RequestHead<'a> {
        wit::RequestHead {
            method: req.method,
            authority: req.authority,
            path_with_query: req.path_with_query,
            headers,
            route: req.route,
            request_id: req.request_id,
        }
    }

    pub(crate) fn response_head<'a>(
        resp: &ResponseHead<'a>,
        headers: &'a [(&'a str, &'a [u8])],
    ) -> wit::ResponseHead<'a> {
        wit::ResponseHead {
            status: resp.status.as_u16(),
            headers,
        }
    }

    pub(crate) fn upstream_failure<'a>(failure: &UpstreamFailure<'a>) -> wit::UpstreamFailure<'a> {
        wit::UpstreamFailure {
            kind: match failure.kind {
                FailureKind::ConnectFailure => wit::FailureKind::ConnectFailure,
                FailureKind::Reset => wit::FailureKind::Reset,
                FailureKind::Timeout => wit::FailureKind::Timeout,
                FailureKind::Upstream5xx => wit::FailureKind::Upstream5xx,
                FailureKind::CircuitOpen => wit::FailureKind::CircuitOpen,
                FailureKind::NoHealthyEndpoint => wit::FailureKind::NoHealthyEndpoint,
                FailureKind::Overloaded => wit::FailureKind::Overloaded,
                FailureKind::RateLimited => wit::FailureKind::RateLimited,
            },
            cluster: failure.cluster,
            attempt: failure.attempt,
            status: failure.status.map(|s| s.as_u16()),
            elapsed_ms: u32::try_from(failure.elapsed.as_millis()).unwrap_or(u32::MAX),
            circuit: circuit_state(failure.circuit),
        }
    }

    fn circuit_state(state: CircuitState) -> wit::CircuitState {
        match state {
            CircuitState::Closed => wit::CircuitState::Closed,
            CircuitState::Open => wit::CircuitState::Open,
            CircuitState::HalfOpen => wit::CircuitState::HalfOpen,
        }
    }

    pub(crate) fn cluster_health(health: ClusterHealth) -> wit::ClusterHealth {
        wit::ClusterHealth {
            healthy_endpoints: health.healthy_endpoints,
            total_endpoints: health.total_endpoints,
            circuit: circuit_state(health.circuit),
            error_rate: health.error_rate,
            p50_ms: health.p50_ms,
            p99_ms: health.p99_ms,
            in_flight: health.in_flight,
        }
    }

    // === outputs ===

    pub(crate) fn log_level(level: wit::LogLevel) -> LogLevel {
        match level {
            wit::LogLevel::Trace => LogLevel::Trace,
            wit::LogLevel::Debug => LogLevel::Debug,
            wit::LogLevel::Info => LogLevel::Info,
            wit::LogLevel::Warn => LogLevel::Warn,
            wit::LogLevel::Error => LogLevel::Error,
        }
    }

    pub(crate) fn hooks(hooks: wit::Hooks) -> Hooks {
        Hooks {
            on_request: hooks.contains(wit::Hooks::ON_REQUEST),
            on_response: hooks.contains(wit::Hooks::ON_RESPONSE),
            on_upstream_failure: hooks.contains(wit::Hooks::ON_UPSTREAM_FAILURE),
        }
    }

    pub(crate) fn request_action(
        action: wit::RequestAction,
        stats: &PluginStats,
    ) -> Result<RequestAction, Invalid> {
        Ok(match action {
            wit::RequestAction::Proceed(mutation) => {
                RequestAction::Proceed(header_mutation(mutation, stats))
            }
            wit::RequestAction::Respond(resp) => {
                RequestAction::Respond(local_response(resp, stats)?)
            }
            wit::RequestAction::RouteTo(cluster) => RequestAction::RouteTo(cluster),
        })
    }

    pub(crate) fn response_action(
        action: wit::ResponseAction,
        stats: &PluginStats,
    ) -> Result<ResponseAction, Invalid> {
        Ok(match action {
            wit::ResponseAction::Proceed(mutation) => {
                ResponseAction::Proceed(header_mutation(mutation, stats))
            }
            wit::ResponseAction::ProceedAndStore(spec) => {
                ResponseAction::ProceedAndStore(StoreSpec {
                    mutation: header_mutation(spec.mutation, stats),
                    key: spec.key,
                    ttl: Duration::from_secs(u64::from(spec.ttl_seconds)),
                })
            }
            wit::ResponseAction::Replace(resp) => {
                ResponseAction::Replace(local_response(resp, stats)?)
            }
        })
    }

    pub(crate) fn fallback_decision(
        decision: wit::FallbackDecision,
        stats: &PluginStats,
    ) -> Result<FallbackDecision, Invalid> {
        Ok(match decision {
            wit::FallbackDecision::Propagate => FallbackDecision::Propagate,
            wit::FallbackDecision::Retry(spec) => FallbackDecision::Retry(RetrySpec {
                cluster: spec.cluster,
                delay: Duration::from_millis(u64::from(spec.delay_ms)),
            }),
            wit::FallbackDecision::Serve(resp) => {
                FallbackDecision::Serve(local_response(resp, stats)?)
            }
            wit::FallbackDecision::ServeCached(key) => FallbackDecision::ServeCached(key),
            wit::FallbackDecision::Degrade(cluster) => FallbackDecision::Degrade(cluster),
            wit::FallbackDecision::Shed(status) => FallbackDecision::Shed(status_code(status)?),
        })
    }

    fn local_response(
        resp: wit::LocalResponse,
        stats: &PluginStats,
    ) -> Result<LocalResponse, Invalid> {
        Ok(LocalResponse {
            status: status_code(resp.status)?,
            headers: headers(resp.headers, stats),
            body: Bytes::from(resp.body),
        })
    }

    /// A final status: 1xx statuses are interim, never the answer to a request.
    fn status_code(status: u16) -> Result<StatusCode, Invalid> {
        if !(200..=599).contains(&status) {
            return Err(Invalid::Status(status));
        }
        StatusCode::from_u16(status).map_err(|_| Invalid::Status(status))
    }

    fn header_mutation(mutation: wit::HeaderMutation, stats: &PluginStats) -> HeaderMutation {
        let remove = mutation
            .remove
            .into_iter()
            .filter_map(|name| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    stats.invalid_output.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
            .collect();
        let set = headers(mutation.set, stats)
            .into_iter()
            .filter(|(name, _)| {
                let framing = is_framing(name);
                if framing {
                    stats.invalid_output.fetch_add(1, Ordering::Relaxed);
                }
                !framing
            })
            .collect();
        HeaderMutation { set, remove }
    }

    /// Headers that say how a message is framed or how its connection behaves. The gateway
    /// frames every message it sends from its body, so a plugin setting one (a `content-length`
    /// that disagrees with the body, a `transfer-encoding`) could make the other side read a
    /// different message than the one sent: such entries are dropped and counted.
    fn is_framing(name: &HeaderName) -> bool {
        matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "upgrade"
        )
    }

    /// Keeps the valid entries; counts the others in `invalid_output`.
    fn headers(
        list: Vec<(String, Vec<u8>)>,
        stats: &PluginStats,
    ) -> Vec<(HeaderName, HeaderValue)> {
        list.into_iter()
            .filter_map(|(name, value)| {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    (Ok(name), Ok(value)) => Some((name, value)),
                    _ => {
                        stats.invalid_output.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            })
            .collect()
    }
}
