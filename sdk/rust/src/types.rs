//! Plain Rust types for everything that crosses the plugin boundary.
//!
//! They mirror the records and variants of `sdk/wit/levee.wit` one for one, but are ordinary
//! Rust types with builders, so a plugin (and its native tests) never touches generated
//! bindings. Conversion to and from the generated types happens in one place, the wasm glue.

use std::fmt;
use std::ops::BitOr;
use std::str::FromStr;

/// Header fields in order: lower-case names, byte values (HTTP does not guarantee UTF-8).
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// The first value of header `name` (compared ASCII case-insensitively) in `headers`.
pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Like [`header`], but only a value that is UTF-8, with surrounding whitespace trimmed.
pub fn header_str<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    header(headers, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Whether `name` is a valid HTTP field name (an RFC 9110 token); the host rejects others.
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` is a valid HTTP field value (visible ASCII, obs-text, spaces and tabs;
/// no CR, LF or NUL); the host rejects others.
pub fn is_valid_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// The downstream request as a plugin sees it. The body is never passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The host the request is for (`Host` or `:authority`), with any port.
    pub authority: String,
    /// The origin-form target, e.g. `/v1/items?page=2`.
    pub path_with_query: String,
    /// The request headers after the gateway's own rewriting.
    pub headers: HeaderList,
    /// The name of the route that matched.
    pub route: String,
    /// The request id (`x-request-id`), for logs.
    pub request_id: String,
}

/// An upstream response head. The body is never passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// The upstream status code.
    pub status: u16,
    /// The upstream response headers.
    pub headers: HeaderList,
}

/// Header changes: each `set` entry replaces every value of its name; `remove` deletes names.
///
/// The host rejects (and counts) names or values that are not valid HTTP and applies the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMutation {
    /// Headers to set, replacing every existing value of the same name.
    pub set: HeaderList,
    /// Header names to delete.
    pub remove: Vec<String>,
}

/// A response a plugin sends instead of forwarding (or instead of the upstream's).
///
/// ```
/// use levee_sdk::Response;
/// let page = Response::new(503).header("retry-after", "30").html("<h1>Back soon</h1>");
/// assert_eq!(page.header_value("content-type"), Some(&b"text/html; charset=utf-8"[..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// 200 to 599; the host treats anything else as a plugin fault.
    pub status: u16,
    /// Response headers, in order.
    pub headers: HeaderList,
    /// The whole body.
    pub body: Vec<u8>,
}

/// What to do with a request before it is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAction {
    /// Forward it, after applying the mutation to the upstream request.
    Proceed(HeaderMutation),
    /// Do not forward: answer with this response.
    Respond(Response),
    /// Forward it to this cluster instead of the route's (the cluster must exist).
    RouteTo(String),
}

/// A request to keep the upstream response as a last-good copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSpec {
    /// Header changes for the downstream response.
    pub mutation: HeaderMutation,
    /// The cache key; [`crate::host::cache_get`] and [`FallbackDecision::ServeCached`] use the
    /// same key space.
    pub key: String,
    /// How long the copy may be served, in seconds.
    pub ttl_seconds: u32,
}

/// What to do with an upstream response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    /// Send it on, after applying the mutation.
    Proceed(HeaderMutation),
    /// Send it on, and keep the whole response (status, headers, body up to the host's entry
    /// cap) in this plugin's cache under the key. [`crate::host::cache_get`] returns its body.
    ProceedAndStore(StoreSpec),
    /// Drop the upstream response and send this one.
    Replace(Response),
}

/// Why forwarding failed: the same kinds as the route `fallback.on` config and the
/// `x-levee-error` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "json",
    derive(serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum FailureKind {
    /// The TCP or TLS connection to the upstream could not be made.
    ConnectFailure,
    /// The connection broke before a complete response head arrived.
    Reset,
    /// The route or per-try timeout expired.
    Timeout,
    /// The upstream answered with a 5xx status (after any retries).
    #[cfg_attr(feature = "json", serde(rename = "upstream-5xx"))]
    Upstream5xx,
    /// The cluster's circuit breaker is open and refused the request.
    CircuitOpen,
    /// No endpoint of the cluster is usable.
    NoHealthyEndpoint,
    /// A cluster limit (connections, pending, requests, retries) is full.
    Overloaded,
    /// The route's rate limit refused the request.
    RateLimited,
}

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Requests flow.
    #[default]
    Closed,
    /// Requests are refused.
    Open,
    /// A few probe requests flow.
    HalfOpen,
}

/// The failure a plugin is asked about in [`crate::Policy::on_upstream_failure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamFailure {
    /// What went wrong.
    pub kind: FailureKind,
    /// The cluster the failing attempt went to.
    pub cluster: String,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// The upstream status, for [`FailureKind::Upstream5xx`].
    pub status: Option<u16>,
    /// Time since the gateway received the request, in milliseconds.
    pub elapsed_ms: u32,
    /// The cluster's breaker state when the failure happened.
    pub circuit: CircuitState,
}

/// Try again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetrySpec {
    /// Another cluster; the same one when `None`.
    pub cluster: Option<String>,
    /// Wait this long first, in milliseconds (capped by the route timeout).
    pub delay_ms: u32,
}

/// What to do about an upstream failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FallbackDecision {
    /// Let the gateway go on: the route's declarative fallback, else its error response.
    Propagate,
    /// Forward again, within the route's retry budget and the cluster limits.
    Retry(RetrySpec),
    /// Answer with this response.
    Serve(Response),
    /// Answer with the copy stored under this key; the host propagates when there is none.
    ServeCached(String),
    /// Forward once to this (degraded) cluster instead.
    Degrade(String),
    /// Refuse with this status (e.g. 503) and a `retry-after` header.
    Shed(u16),
}

/// A cluster's health as the gateway sees it, from [`crate::host::upstream_health`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterHealth {
    /// Endpoints that are usable (healthy and not ejected).
    pub healthy_endpoints: u32,
    /// All endpoints of the cluster.
    pub total_endpoints: u32,
    /// The cluster's breaker state.
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

/// Log severities for [`crate::host::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// The set of hooks a plugin implements; the host never calls the others.
///
/// ```
/// use levee_sdk::Hooks;
/// let hooks = Hooks::ON_REQUEST | Hooks::ON_RESPONSE;
/// assert!(hooks.contains(Hooks::ON_RESPONSE));
/// assert!(!hooks.contains(Hooks::ON_UPSTREAM_FAILURE));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

// === impl RequestHead ===

impl RequestHead {
    /// A request head with this method and target, and everything else empty: for tests.
    pub fn new(method: impl Into<String>, path_with_query: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path_with_query: path_with_query.into(),
            ..Self::default()
        }
    }

    /// Sets the authority (builder style).
    #[must_use]
    pub fn with_authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = authority.into();
        self
    }

    /// Appends a header (builder style). The name is lower-cased, as the host does.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the route name (builder style).
    #[must_use]
    pub fn with_route(mut self, route: impl Into<String>) -> Self {
        self.route = route.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }

    /// The first value of header `name` if it is UTF-8, trimmed.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.path_with_query
            .split_once('?')
            .map_or(self.path_with_query.as_str(), |(path, _)| path)
    }

    /// The query string without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// Whether the method is `method` (case-sensitive, as HTTP methods are).
    pub fn is(&self, method: &str) -> bool {
        self.method == method
    }
}

// === impl ResponseHead ===

impl ResponseHead {
    /// A response head with this status and no headers.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    /// Appends a header (builder style). The name is lower-cased.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }

    /// The first value of header `name` if it is UTF-8, trimmed.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }
}

// === impl HeaderMutation ===

impl HeaderMutation {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets header `name` to `value`, replacing the request's or response's values. Setting
    /// one name more than once in a mutation sends every value set.
    #[must_use]
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set.push((name.into(), value.into()));
        self
    }

    /// Removes every value of header `name`.
    #[must_use]
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// The last value this mutation sets for `name`, if any (the gateway sends all of them).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.set
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

// === impl Response ===

impl Response {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body, leaving the headers as they are.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets an HTML body and `content-type: text/html; charset=utf-8`.
    #[must_use]
    pub fn html(self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type("text/html; charset=utf-8").body(body)
    }

    /// Sets a plain-text body and `content-type: text/plain; charset=utf-8`.
    #[must_use]
    pub fn text(self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type("text/plain; charset=utf-8").body(body)
    }

    /// Sets a JSON body and `content-type: application/json`.
    #[must_use]
    pub fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type("application/json").body(body)
    }

    /// Replaces any `content-type` header with this one.
    #[must_use]
    pub fn content_type(mut self, value: &str) -> Self {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("content-type".to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }
}

// === impl RequestAction ===

impl RequestAction {
    /// Forward the request unchanged.
    pub fn proceed() -> Self {
        Self::Proceed(HeaderMutation::new())
    }

    /// Forward the request after applying `mutation`.
    pub fn proceed_with(mutation: HeaderMutation) -> Self {
        Self::Proceed(mutation)
    }

    /// Answer with `response` instead of forwarding.
    pub fn respond(response: Response) -> Self {
        Self::Respond(response)
    }

    /// Forward to `cluster` instead of the route's cluster.
    pub fn route_to(cluster: impl Into<String>) -> Self {
        Self::RouteTo(cluster.into())
    }
}

impl Default for RequestAction {
    /// [`RequestAction::proceed`].
    fn default() -> Self {
        Self::proceed()
    }
}

// === impl ResponseAction ===

impl ResponseAction {
    /// Send the upstream response on unchanged.
    pub fn proceed() -> Self {
        Self::Proceed(HeaderMutation::new())
    }

    /// Send the upstream response on after applying `mutation`.
    pub fn proceed_with(mutation: HeaderMutation) -> Self {
        Self::Proceed(mutation)
    }

    /// Send the response on and keep it under `key` for `ttl_seconds`.
    pub fn proceed_and_store(key: impl Into<String>, ttl_seconds: u32) -> Self {
        Self::ProceedAndStore(StoreSpec {
            mutation: HeaderMutation::new(),
            key: key.into(),
            ttl_seconds,
        })
    }

    /// Send `response` instead of the upstream's.
    pub fn replace(response: Response) -> Self {
        Self::Replace(response)
    }
}

impl Default for ResponseAction {
    /// [`ResponseAction::proceed`].
    fn default() -> Self {
        Self::proceed()
    }
}

// === impl FallbackDecision ===

impl FallbackDecision {
    /// Retry on the same cluster after `delay_ms`.
    pub fn retry(delay_ms: u32) -> Self {
        Self::Retry(RetrySpec {
            cluster: None,
            delay_ms,
        })
    }

    /// Retry on `cluster` after `delay_ms`.
    pub fn retry_on(cluster: impl Into<String>, delay_ms: u32) -> Self {
        Self::Retry(RetrySpec {
            cluster: Some(cluster.into()),
            delay_ms,
        })
    }

    /// Answer with `response`.
    pub fn serve(response: Response) -> Self {
        Self::Serve(response)
    }

    /// Answer with the copy stored under `key`.
    pub fn serve_cached(key: impl Into<String>) -> Self {
        Self::ServeCached(key.into())
    }

    /// Forward once to the `cluster` instead.
    pub fn degrade(cluster: impl Into<String>) -> Self {
        Self::Degrade(cluster.into())
    }
}

impl Default for FallbackDecision {
    /// [`FallbackDecision::Propagate`].
    fn default() -> Self {
        Self::Propagate
    }
}

// === impl FailureKind ===

impl FailureKind {
    /// Every kind, in WIT order.
    pub const ALL: [FailureKind; 8] = [
        Self::ConnectFailure,
        Self::Reset,
        Self::Timeout,
        Self::Upstream5xx,
        Self::CircuitOpen,
        Self::NoHealthyEndpoint,
        Self::Overloaded,
        Self::RateLimited,
    ];

    /// The kebab-case name used in config and in `x-levee-error`, e.g. `connect-failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Upstream5xx => "upstream-5xx",
            Self::CircuitOpen => "circuit-open",
            Self::NoHealthyEndpoint => "no-healthy-endpoint",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate-limited",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown failure kind `{s}`"))
    }
}

// === impl UpstreamFailure ===

impl UpstreamFailure {
    /// A first-attempt failure of `kind` on `cluster`, with no status, no elapsed time and a
    /// closed breaker: for tests.
    pub fn new(kind: FailureKind, cluster: impl Into<String>) -> Self {
        Self {
            kind,
            cluster: cluster.into(),
            attempt: 1,
            status: None,
            elapsed_ms: 0,
            circuit: CircuitState::Closed,
        }
    }
}

// === impl ClusterHealth ===

impl ClusterHealth {
    /// Usable endpoints over all endpoints, 0.0 to 1.0; 0.0 for a cluster with no endpoints.
    pub fn healthy_ratio(&self) -> f32 {
        if self.total_endpoints == 0 {
            0.0
        } else {
            self.healthy_endpoints as f32 / self.total_endpoints as f32
        }
    }
}

// === impl Hooks ===

impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks(0);
    /// [`crate::Policy::on_request`].
    pub const ON_REQUEST: Hooks = Hooks(1);
    /// [`crate::Policy::on_response`].
    pub const ON_RESPONSE: Hooks = Hooks(1 << 1);
    /// [`crate::Policy::on_upstream_failure`].
    pub const ON_UPSTREAM_FAILURE: Hooks = Hooks(1 << 2);
    /// All three hooks.
    pub const ALL: Hooks = Hooks(0b111);

    /// Whether every hook in `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets; usable in `const` items.
    pub const fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    /// The hooks in both sets.
    pub const fn intersection(self, other: Hooks) -> Hooks {
        Hooks(self.0 & other.0)
    }

    /// The hooks of `self` that are not in `other`.
    pub const fn difference(self, other: Hooks) -> Hooks {
        Hooks(self.0 & !other.0)
    }
}

impl BitOr for Hooks {
    type Output = Hooks;

    fn bitor(self, rhs: Hooks) -> Hooks {
        self.union(rhs)
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::ON_REQUEST, "on-request"),
            (Self::ON_RESPONSE, "on-response"),
            (Self::ON_UPSTREAM_FAILURE, "on-upstream-failure"),
        ];
        f.debug_set()
            .entries(
                names
                    .iter()
                    .filter(|(h, _)| self.contains(*h))
                    .map(|(_, n)| n),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case_and_takes_the_first_value() {
        let req = RequestHead::new("GET", "/a?b=1")
            .with_header("X-Priority", "high")
            .with_header("x-priority", "low");
        assert_eq!(req.header_str("x-PRIORITY"), Some("high"));
        assert_eq!(req.path(), "/a");
        assert_eq!(req.query(), Some("b=1"));
        assert_eq!(req.header("absent"), None);
    }

    #[test]
    fn content_type_helpers_replace_earlier_content_type() {
        let r = Response::new(200).header("content-type", "x/y").text("hi");
        let types: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .collect();
        assert_eq!(types.len(), 1);
        assert_eq!(
            r.header_value("content-type"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert_eq!(r.body, b"hi");
    }

    #[test]
    fn failure_kinds_round_trip_through_their_names() {
        for kind in FailureKind::ALL {
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
        }
        assert!("nope".parse::<FailureKind>().is_err());
    }

    #[test]
    fn hooks_union_and_contains() {
        let h = Hooks::ON_REQUEST | Hooks::ON_UPSTREAM_FAILURE;
        assert!(h.contains(Hooks::ON_REQUEST));
        assert!(!h.contains(Hooks::ON_RESPONSE));
        assert!(Hooks::ALL.contains(h));
        assert_eq!(format!("{h:?}"), r#"{"on-request", "on-upstream-failure"}"#);
    }

    #[test]
    fn healthy_ratio_of_an_empty_cluster_is_zero() {
        assert_eq!(ClusterHealth::default().healthy_ratio(), 0.0);
        let h = ClusterHealth {
            healthy_endpoints: 1,
            total_endpoints: 4,
            ..ClusterHealth::default()
        };
        assert_eq!(h.healthy_ratio(), 0.25);
    }
}
