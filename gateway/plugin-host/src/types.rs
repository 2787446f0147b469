//! The data a hook receives and the decisions it returns, as Rust types for the gateway.
//!
//! Inputs borrow from the gateway's request (nothing is copied until the call crosses into the
//! guest). Decisions are validated before the gateway sees them: header names and values are
//! `http` types, statuses are `StatusCode`s, so the gateway never handles a plugin's raw bytes.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

// === inputs ===

/// Which headers of a request or response a binding's hooks receive.
///
/// Every header crosses into the plugin by copy, two allocations in the guest each, so a
/// plugin that reads two headers is called faster when it is given only those (Envoy's
/// `ext_proc` `forward_rules` does the same for its external processors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeaderFilter {
    /// Every header (the default).
    #[default]
    All,
    /// Only these, each with all its values, in this order.
    Only(Box<[HeaderName]>),
}

/// The downstream request, as a hook sees it. The body is never passed.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The host the request is for (`Host` or `:authority`), with any port.
    pub authority: &'a str,
    /// The origin-form target, e.g. `/v1/items?page=2`.
    pub path_with_query: &'a str,
    /// The request headers after the gateway's own rewriting.
    pub headers: &'a HeaderMap,
    /// The name of the route that matched.
    pub route: &'a str,
    /// The request id (`x-request-id`).
    pub request_id: &'a str,
}

/// An upstream response head. The body is never passed.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The upstream status.
    pub status: StatusCode,
    /// The upstream response headers.
    pub headers: &'a HeaderMap,
}

/// Why forwarding failed; the same kinds as the route `fallback.on` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The TCP or TLS connection could not be made.
    ConnectFailure,
    /// The connection broke before a complete response head arrived.
    Reset,
    /// The route or per-try timeout expired.
    Timeout,
    /// The upstream answered 5xx (after any retries).
    Upstream5xx,
    /// The cluster's breaker refused the request.
    CircuitOpen,
    /// No endpoint of the cluster is usable.
    NoHealthyEndpoint,
    /// A cluster limit is full.
    Overloaded,
    /// The route's rate limit refused the request.
    RateLimited,
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow.
    #[default]
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls are let through.
    HalfOpen,
}

/// The failure `on-upstream-failure` is asked about.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamFailure<'a> {
    /// What went wrong.
    pub kind: FailureKind,
    /// The cluster the failing attempt went to.
    pub cluster: &'a str,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// The upstream status, for `Upstream5xx`.
    pub status: Option<StatusCode>,
    /// Time since the gateway received the request (sent in whole milliseconds, saturating).
    pub elapsed: Duration,
    /// The cluster's breaker state when the failure happened.
    pub circuit: CircuitState,
}

/// A cluster's health as the gateway sees it, returned by [`HostServices::upstream_health`].
///
/// [`HostServices::upstream_health`]: crate::HostServices::upstream_health
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterHealth {
    /// Endpoints that are usable (healthy and not ejected).
    pub healthy_endpoints: u32,
    /// All endpoints.
    pub total_endpoints: u32,
    /// The cluster breaker's state.
    pub circuit: CircuitState,
    /// Failed share of recent requests, 0.0 to 1.0.
    pub error_rate: f32,
    /// Median latency of recent requests, in milliseconds.
    pub p50_ms: u32,
    /// 99th percentile latency of recent requests, in milliseconds.
    pub p99_ms: u32,
    /// Requests in flight to the cluster.
    pub in_flight: u32,
}

/// Log severities a plugin may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// For debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected, handled.
    Warn,
    /// Something failed.
    Error,
}

// === hooks ===

/// One of the three hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `on-request`.
    OnRequest,
    /// `on-response`.
    OnResponse,
    /// `on-upstream-failure`.
    OnUpstreamFailure,
}

/// The hooks a plugin said (in `init`) that it implements. The host never calls the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hooks {
    /// `on-request` is implemented.
    pub on_request: bool,
    /// `on-response` is implemented.
    pub on_response: bool,
    /// `on-upstream-failure` is implemented.
    pub on_upstream_failure: bool,
}

impl Hooks {
    /// Whether `hook` is implemented.
    pub fn contains(&self, hook: Hook) -> bool {
        match hook {
            Hook::OnRequest => self.on_request,
            Hook::OnResponse => self.on_response,
            Hook::OnUpstreamFailure => self.on_upstream_failure,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::OnRequest => "on-request",
            Hook::OnResponse => "on-response",
            Hook::OnUpstreamFailure => "on-upstream-failure",
        })
    }
}

// === decisions ===

/// Header changes: each `set` entry replaces every value of its name; `remove` deletes names.
/// Entries the plugin returned that were not valid HTTP have been dropped (and counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutation {
    /// Headers to set, in the order given. A name given twice keeps both values.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove.
    pub remove: Vec<HeaderName>,
}

impl HeaderMutation {
    /// Whether the mutation changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the mutation to `headers`: removals first, then sets (so a name both removed
    /// and set ends up set).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in &self.set {
            if replaced.contains(&name) {
                headers.append(name.clone(), value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
                replaced.push(name);
            }
        }
    }
}

/// A response a plugin asks the gateway to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status (200 to 599; anything else was a plugin fault).
    pub status: StatusCode,
    /// Response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Response body.
    pub body: Bytes,
}

/// What to do with a request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAction {
    /// Forward it, after applying the mutation to the upstream request.
    Proceed(HeaderMutation),
    /// Do not forward: answer with this response.
    Respond(LocalResponse),
    /// Forward it to this cluster instead of the route's (the gateway checks it exists).
    RouteTo(String),
}

/// A request to store the response as a last-good copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Header changes for the downstream response.
    pub mutation: HeaderMutation,
    /// The cache key, in the plugin's key space.
    pub key: String,
    /// How long the copy may be served.
    pub ttl: Duration,
}

/// What to do with an upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseAction {
    /// Send it on, after applying the mutation.
    Proceed(HeaderMutation),
    /// Send it on, and keep the whole response in the plugin's cache.
    ProceedAndStore(StoreSpec),
    /// Drop the upstream response and send this one.
    Replace(LocalResponse),
}

/// Try forwarding again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySpec {
    /// Another cluster; the same one when `None`.
    pub cluster: Option<String>,
    /// Wait this long first (the gateway caps it by the route timeout).
    pub delay: Duration,
}

/// What to do about an upstream failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackDecision {
    /// Go on: the route's declarative fallback, else its error response.
    Propagate,
    /// Forward again, within the route's retry budget.
    Retry(RetrySpec),
    /// Answer with this response.
    Serve(LocalResponse),
    /// Answer with the copy stored under this key; propagate when there is none.
    ServeCached(String),
    /// Forward once to this cluster instead.
    Degrade(String),
    /// Refuse with this status and a `retry-after` header.
    Shed(StatusCode),
}

// === outcomes ===

/// How a plugin call went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, a denied WASI call...).
    Trap,
    /// The call ran past its deadline and was interrupted.
    Deadline,
    /// The guest tried to grow its memory past `limits.memory`.
    OutOfMemory,
    /// The guest returned a decision the host cannot act on (e.g. a status outside 200-599).
    InvalidOutput,
    /// No instance could be made: the engine's instance pool is full, or `init` on a fresh
    /// instance failed.
    Instantiate,
}

impl FaultKind {
    /// Every kind, in a fixed order (the order of [`PluginStatus::faults`]).
    ///
    /// [`PluginStatus::faults`]: crate::PluginStatus::faults
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Trap,
        FaultKind::Deadline,
        FaultKind::OutOfMemory,
        FaultKind::InvalidOutput,
        FaultKind::Instantiate,
    ];

    /// A stable lower-case name, for metrics labels and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline",
            FaultKind::OutOfMemory => "out-of-memory",
            FaultKind::InvalidOutput => "invalid-output",
            FaultKind::Instantiate => "instantiate",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            FaultKind::Trap => 0,
            FaultKind::Deadline => 1,
            FaultKind::OutOfMemory => 2,
            FaultKind::InvalidOutput => 3,
            FaultKind::Instantiate => 4,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call produced no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bypass {
    /// The plugin faulted (after the `reload` retry, if any).
    Fault(FaultKind),
    /// The plugin's breaker is open: no wasm ran.
    BreakerOpen,
}

/// The result of one hook call, for the gateway to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The plugin decided.
    Decided(T),
    /// The plugin does not implement this hook (per its `init`); nothing ran. Go on as if
    /// there were no plugin.
    NotImplemented,
    /// No decision, and the policy is to go on as if there were no plugin: proceed with the
    /// request, or propagate the failure.
    FailOpen(Bypass),
    /// No decision, and the policy is to refuse the request: the gateway answers 503.
    FailClosed(Bypass),
}
