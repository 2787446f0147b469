//! The Wasm glue: the bindings generated from `sdk/wit/levee.wit`, the conversions between them
//! and the SDK's plain types, and the functions [`crate::export!`] calls.
//!
//! Compiled only for `wasm32`. Not a public API: everything here may change with the bindings.

#![allow(missing_debug_implementations, unreachable_pub, missing_docs)]

use std::cell::RefCell;

use crate::Policy;
use crate::types as sdk;

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "__export_levee_plugin",
    default_bindings_module: "levee_sdk::guest",
    runtime_path: "levee_sdk::guest::__rt",
    bitflags_path: "levee_sdk::guest::__bitflags",
    generate_all,
});

pub use wit_bindgen::rt as __rt;
pub use wit_bindgen::rt::bitflags as __bitflags;

use levee::policy::host as wit_host;
use levee::policy::types as wit;

// === hooks, called by the `export!` expansion ===

/// Builds the policy from `config` and keeps it in `cell`, replacing any earlier one.
pub fn init<P: Policy>(cell: &RefCell<Option<P>>, config: &[u8]) -> Result<wit::Hooks, String> {
    let policy = P::init(config)?;
    let wanted = policy.hooks().intersection(P::HOOKS);
    *cell.borrow_mut() = Some(policy);
    Ok(hooks(wanted))
}

/// Runs [`Policy::on_request`].
pub fn on_request<P: Policy>(
    cell: &RefCell<Option<P>>,
    req: wit::RequestHead,
) -> wit::RequestAction {
    let req = request_head(req);
    with_policy(cell, |p| p.on_request(&req)).into()
}

/// Runs [`Policy::on_response`].
pub fn on_response<P: Policy>(
    cell: &RefCell<Option<P>>,
    req: wit::RequestHead,
    resp: wit::ResponseHead,
) -> wit::ResponseAction {
    let req = request_head(req);
    let resp = sdk::ResponseHead {
        status: resp.status,
        headers: resp.headers,
    };
    with_policy(cell, |p| p.on_response(&req, &resp)).into()
}

/// Runs [`Policy::on_upstream_failure`].
pub fn on_upstream_failure<P: Policy>(
    cell: &RefCell<Option<P>>,
    req: wit::RequestHead,
    failure: wit::UpstreamFailure,
) -> wit::FallbackDecision {
    let req = request_head(req);
    let failure = sdk::UpstreamFailure {
        kind: failure.kind.into(),
        cluster: failure.cluster,
        attempt: failure.attempt,
        status: failure.status,
        elapsed_ms: failure.elapsed_ms,
        circuit: failure.circuit.into(),
    };
    with_policy(cell, |p| p.on_upstream_failure(&req, &failure)).into()
}

fn with_policy<P: Policy, R>(cell: &RefCell<Option<P>>, f: impl FnOnce(&mut P) -> R) -> R {
    match cell.borrow_mut().as_mut() {
        Some(policy) => f(policy),
        // The host calls hooks only after a successful `init`; trapping makes a broken host
        // visible instead of guessing a decision.
        None => panic!("levee-sdk: hook called before a successful init"),
    }
}

// === host imports ===

pub(crate) fn upstream_health(cluster: &str) -> Option<sdk::ClusterHealth> {
    wit_host::upstream_health(cluster).map(|h| sdk::ClusterHealth {
        healthy_endpoints: h.healthy_endpoints,
        total_endpoints: h.total_endpoints,
        circuit: h.circuit.into(),
        error_rate: h.error_rate,
        p50_ms: h.p50_ms,
        p99_ms: h.p99_ms,
        in_flight: h.in_flight,
    })
}

pub(crate) fn cache_get(key: &str) -> Option<Vec<u8>> {
    wit_host::cache_get(key)
}

pub(crate) fn cache_put(key: &str, value: &[u8], ttl_ms: u32) -> bool {
    wit_host::cache_put(key, value, ttl_ms)
}

pub(crate) fn counter_add(name: &str, delta: i64) {
    wit_host::counter_add(name, delta);
}

pub(crate) fn log(level: sdk::LogLevel, message: &str) {
    let level = match level {
        sdk::LogLevel::Trace => wit::LogLevel::Trace,
        sdk::LogLevel::Debug => wit::LogLevel::Debug,
        sdk::LogLevel::Info => wit::LogLevel::Info,
        sdk::LogLevel::Warn => wit::LogLevel::Warn,
        sdk::LogLevel::Error => wit::LogLevel::Error,
    };
    wit_host::log(level, message);
}

pub(crate) fn now_ms() -> u64 {
    wit_host::now_ms()
}

// === conversions ===

fn hooks(h: sdk::Hooks) -> wit::Hooks {
    let mut out = wit::Hooks::empty();
    if h.contains(sdk::Hooks::ON_REQUEST) {
        out |= wit::Hooks::ON_REQUEST;
    }
    if h.contains(sdk::Hooks::ON_RESPONSE) {
        out |= wit::Hooks::ON_RESPONSE;
    }
    if h.contains(sdk::Hooks::ON_UPSTREAM_FAILURE) {
        out |= wit::Hooks::ON_UPSTREAM_FAILURE;
    }
    out
}

fn request_head(r: wit::RequestHead) -> sdk::RequestHead {
    sdk::RequestHead {
        method: r.method,
        authority: r.authority,
        path_with_query: r.path_with_query,
        headers: r.headers,
        route: r.route,
        request_id: r.request_id,
    }
}

impl From<sdk::HeaderMutation> for wit::HeaderMutation {
    fn from(m: sdk::HeaderMutation) -> Self {
        Self {
            set: m.set,
            remove: m.remove,
        }
    }
}

impl From<sdk::Response> for wit::LocalResponse {
    fn from(r: sdk::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<sdk::RequestAction> for wit::RequestAction {
    fn from(a: sdk::RequestAction) -> Self {
        match a {
            sdk::RequestAction::Proceed(m) => Self::Proceed(m.into()),
            sdk::RequestAction::Respond(r) => Self::Respond(r.into()),
            sdk::RequestAction::RouteTo(c) => Self::RouteTo(c),
        }
    }
}

impl From<sdk::ResponseAction> for wit::ResponseAction {
    fn from(a: sdk::ResponseAction) -> Self {
        match a {
            sdk::ResponseAction::Proceed(m) => Self::Proceed(m.into()),
            sdk::ResponseAction::ProceedAndStore(s) => Self::ProceedAndStore(wit::StoreSpec {
                mutation: s.mutation.into(),
                key: s.key,
                ttl_seconds: s.ttl_seconds,
            }),
            sdk::ResponseAction::Replace(r) => Self::Replace(r.into()),
        }
    }
}

impl From<sdk::FallbackDecision> for wit::FallbackDecision {
    fn from(d: sdk::FallbackDecision) -> Self {
        match d {
            sdk::FallbackDecision::Propagate => Self::Propagate,
            sdk::FallbackDecision::Retry(r) => Self::Retry(wit::RetrySpec {
                cluster: r.cluster,
                delay_ms: r.delay_ms,
            }),
            sdk::FallbackDecision::Serve(r) => Self::Serve(r.into()),
            sdk::FallbackDecision::ServeCached(k) => Self::ServeCached(k),
            sdk::FallbackDecision::Degrade(c) => Self::Degrade(c),
            sdk::FallbackDecision::Shed(s) => Self::Shed(s),
        }
    }
}

impl From<wit::FailureKind> for sdk::FailureKind {
    fn from(k: wit::FailureKind) -> Self {
        match k {
            wit::FailureKind::ConnectFailure => Self::ConnectFailure,
            wit::FailureKind::Reset => Self::Reset,
            wit::FailureKind::Timeout => Self::Timeout,
            wit::FailureKind::Upstream5xx => Self::Upstream5xx,
            wit::FailureKind::CircuitOpen => Self::CircuitOpen,
            wit::FailureKind::NoHealthyEndpoint => Self::NoHealthyEndpoint,
            wit::FailureKind::Overloaded => Self::Overloaded,
            wit::FailureKind::RateLimited => Self::RateLimited,
        }
    }
}

impl From<wit::CircuitState> for sdk::CircuitState {
    fn from(c: wit::CircuitState) -> Self {
        match c {
            wit::CircuitState::Closed => Self::Closed,
            wit::CircuitState::Open => Self::Open,
            wit::CircuitState::HalfOpen => Self::HalfOpen,
        }
    }
}
