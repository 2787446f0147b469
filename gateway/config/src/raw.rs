//! The file as written: serde types with `deny_unknown_fields`, before any checking.
//!
//! Everything optional is an `Option` here; `validate` fills in defaults and checks values.
//! The doc comments become the descriptions of the published JSON Schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::units::{Dur, Ratio, Size, Text, describe, parse_duration, parse_percent};

/// A Levee config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Levee config")]
// Only used to publish the schema: the loader reads each section on its own so that one broken
// section does not hide the errors of the others.
#[expect(dead_code, reason = "fields are read only by the schema generator")]
pub(crate) struct RawConfig {
    /// Downstream listeners. At least one.
    pub(crate) listeners: Vec<RawListener>,
    /// The admin listener. Default address `127.0.0.1:9901`.
    pub(crate) admin: Option<RawAdmin>,
    /// Routes. Default none.
    pub(crate) routes: Option<Vec<RawRoute>>,
    /// Upstream clusters. Default none.
    pub(crate) clusters: Option<Vec<RawCluster>>,
    /// Graceful shutdown timings.
    pub(crate) shutdown: Option<RawShutdown>,
    /// Logging.
    pub(crate) log: Option<RawLog>,
    /// The response store behind serve-stale and the plugins' cache operations.
    pub(crate) cache: Option<RawCache>,
    /// Wasm policy plugins, which routes then name. Default none.
    pub(crate) plugins: Option<Vec<RawPlugin>>,
}

/// One downstream listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Listener")]
pub(crate) struct RawListener {
    /// Unique name, used in logs and metrics.
    pub(crate) name: String,
    /// `IP:port` to bind; port 0 picks a free port.
    pub(crate) address: String,
    /// TLS termination; plain TCP when absent.
    pub(crate) tls: Option<RawListenerTls>,
    /// Connection and request limits.
    pub(crate) limits: Option<RawListenerLimits>,
    /// Whether clients' `x-request-id`, `Forwarded` and `X-Real-IP` are believed. Default
    /// `false`.
    pub(crate) trust_client_headers: Option<bool>,
    /// How request paths are normalised before routing.
    pub(crate) path_normalization: Option<RawPathNormalization>,
}

/// Request path normalisation on a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PathNormalization")]
pub(crate) struct RawPathNormalization {
    /// Whether runs of slashes become one. Default `true`.
    pub(crate) merge_slashes: Option<bool>,
    /// `normalize` (default) rewrites a non-normal path; `reject` answers 400 to it.
    pub(crate) action: Option<RawPathAction>,
}

/// What to do with a path that is not in normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "PathAction")]
pub(crate) enum RawPathAction {
    /// Rewrite it to its normal form.
    Normalize,
    /// Answer `400 Bad Request`.
    Reject,
}

/// TLS termination on a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ListenerTls")]
pub(crate) struct RawListenerTls {
    /// Certificate/key pairs; SNI picks among them, the first is the default. At least one.
    pub(crate) certificates: Vec<RawCertificatePair>,
    /// Lowest TLS version: `"1.2"` (default) or `"1.3"`.
    pub(crate) min_version: Option<RawTlsVersion>,
    /// Client certificate verification (mutual TLS); none asked for when absent.
    pub(crate) client_auth: Option<RawClientAuth>,
}

/// Client certificate verification on a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ClientAuth")]
pub(crate) struct RawClientAuth {
    /// PEM bundle of the CAs that sign client certificates (relative to the config file).
    pub(crate) ca_file: String,
    /// `required` (default): no certificate, no handshake. `optional`: a client may send none,
    /// but one it sends is verified.
    pub(crate) mode: Option<RawClientAuthMode>,
    /// Send the verified client certificate's details upstream in `x-forwarded-client-cert`.
    /// Default `false`.
    pub(crate) forward_client_cert: Option<bool>,
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "ClientAuthMode")]
pub(crate) enum RawClientAuthMode {
    Required,
    Optional,
}

/// A certificate chain and its key, as PEM files (relative to the config file).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CertificatePair")]
pub(crate) struct RawCertificatePair {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: String,
    /// PEM private key.
    pub(crate) key: String,
}

/// A TLS version; `1.2` and `"1.2"` are both accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawTlsVersion {
    Tls12,
    Tls13,
}

/// Listener limits.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ListenerLimits")]
pub(crate) struct RawListenerLimits {
    /// Time to receive a complete request head. Default `10s`.
    pub(crate) header_read_timeout: Option<Dur>,
    /// Largest request head, 1KiB to 1MiB. Default `64KiB`.
    pub(crate) max_header_size: Option<Size>,
    /// Most headers in one request, 1 to 1024. Default `100`.
    pub(crate) max_headers: Option<u32>,
    /// Most open downstream connections, at least 1; at the limit the oldest idle one is
    /// closed for a new one. Default `10000`.
    pub(crate) max_connections: Option<u32>,
    /// Most open downstream connections from one client IP, at least 1. Default: no limit.
    pub(crate) max_connections_per_client: Option<u32>,
    /// Idle keep-alive timeout. Default `60s`.
    pub(crate) idle_timeout: Option<Dur>,
    /// Longest a response may make no progress towards the client. Default `30s`.
    pub(crate) send_timeout: Option<Dur>,
    /// Most concurrent HTTP/2 streams per connection, at least 1. Default `100`.
    pub(crate) http2_max_concurrent_streams: Option<u32>,
    /// Most unprocessed HTTP/2 stream resets before the connection is closed, at least 1.
    /// Default `20`.
    pub(crate) http2_max_pending_resets: Option<u32>,
}

/// The admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Admin")]
pub(crate) struct RawAdmin {
    /// `IP:port` to bind. Default `127.0.0.1:9901`.
    pub(crate) address: Option<String>,
    /// File holding the bearer token; required when `address` is not loopback.
    pub(crate) token_file: Option<String>,
}

/// A route: a match and the cluster it forwards to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Route")]
pub(crate) struct RawRoute {
    /// Unique name.
    pub(crate) name: String,
    /// What a request must look like; matches everything when absent.
    #[serde(rename = "match")]
    pub(crate) matcher: Option<RawMatch>,
    /// Name of the cluster to forward to.
    pub(crate) cluster: String,
    /// Whole-request timeout. Default `15s`.
    pub(crate) timeout: Option<Dur>,
    /// Largest request body; larger bodies get 413. Default no limit.
    pub(crate) max_body_size: Option<Size>,
    /// Retry policy; no retries when absent.
    pub(crate) retry: Option<RawRetry>,
    /// What to answer when forwarding fails; the gateway's own error when absent.
    pub(crate) fallback: Option<RawFallback>,
    /// Local token-bucket rate limit; no limit when absent.
    pub(crate) rate_limit: Option<RawRateLimit>,
    /// Fault injection for chaos drills; nothing is injected when absent.
    pub(crate) fault: Option<RawFault>,
    /// Plugins to run on this route, in order; each must be defined in the top-level `plugins`.
    pub(crate) plugins: Option<Vec<RawRoutePlugin>>,
}

/// A route match. Every present part must match.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Match")]
pub(crate) struct RawMatch {
    /// Host, exact (`api.example.com`) or with a leading wildcard (`*.example.com`).
    pub(crate) host: Option<String>,
    /// Exact path (query ignored). Not together with `path_prefix`.
    pub(crate) path: Option<String>,
    /// Path prefix. Default `/`.
    pub(crate) path_prefix: Option<String>,
    /// HTTP methods; any method when absent.
    pub(crate) methods: Option<Vec<String>>,
    /// Headers that must be present (and equal, with `value`).
    pub(crate) headers: Option<Vec<RawHeaderMatch>>,
}

/// A header condition.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HeaderMatch")]
pub(crate) struct RawHeaderMatch {
    /// Header name (case-insensitive).
    pub(crate) name: String,
    /// Exact value; presence only when absent.
    pub(crate) value: Option<Text>,
}

/// An upstream cluster.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cluster")]
pub(crate) struct RawCluster {
    /// Unique name.
    pub(crate) name: String,
    /// Load-balancing algorithm. Default `least-request`.
    pub(crate) lb: Option<RawLbPolicy>,
    /// What `ring-hash` and `maglev` hash on (required for them, refused for others).
    pub(crate) hash_on: Option<RawHashOn>,
    /// Static endpoints.
    pub(crate) endpoints: Option<Vec<RawEndpoint>>,
    /// DNS discovery.
    pub(crate) discovery: Option<RawDiscovery>,
    /// TCP (and TLS) connect timeout. Default `2s`.
    pub(crate) connect_timeout: Option<Dur>,
    /// Idle pooled connection lifetime. Default `30s`.
    pub(crate) idle_timeout: Option<Dur>,
    /// Most idle pooled connections per endpoint. Default `64`.
    pub(crate) max_idle_per_endpoint: Option<u32>,
    /// Upstream HTTP version. Default `http1`.
    pub(crate) protocol: Option<RawProtocol>,
    /// TLS to the upstream; plain TCP when absent.
    pub(crate) tls: Option<RawUpstreamTls>,
    /// Active health checking; none when absent.
    pub(crate) health_check: Option<RawHealthCheck>,
    /// Passive outlier detection: a mapping, or `false` to turn it off. On with every default
    /// when absent.
    pub(crate) outlier_detection: Option<Switch<RawOutlierDetection>>,
    /// Circuit breaker; none when absent.
    pub(crate) circuit_breaker: Option<RawCircuitBreaker>,
    /// Bulkheads: connection, pending, request and retry limits. All defaults when absent.
    pub(crate) limits: Option<RawClusterLimits>,
    /// Share of usable endpoints below which the cluster panics. Default `50%`.
    pub(crate) panic_threshold: Option<Ratio>,
    /// What a panicking cluster does: `spread` (default) or `fail-fast`.
    pub(crate) panic_mode: Option<RawPanicMode>,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "LbPolicy")]
pub(crate) enum RawLbPolicy {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Peak-EWMA latency.
    PeakEwma,
    /// Consistent hashing on a ring.
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

/// What consistent hashing hashes on: `{ header: NAME }`, `{ cookie: NAME }` or `client_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "HashOn")]
pub(crate) enum RawHashOn {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client IP address.
    ClientIp,
}

/// A static endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Endpoint")]
pub(crate) struct RawEndpoint {
    /// `IP:port`; use `discovery.dns` for host names.
    pub(crate) address: String,
    /// Relative share of traffic, 1 to 128. Default `1`.
    pub(crate) weight: Option<u32>,
    /// Priority level 0 to 16; 0 is used first. Default `0`.
    pub(crate) priority: Option<u32>,
}

/// DNS discovery.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Discovery")]
pub(crate) struct RawDiscovery {
    /// `host:port` to resolve.
    pub(crate) dns: String,
    /// Re-resolve interval. Default `10s`.
    pub(crate) refresh: Option<Dur>,
}

/// Upstream HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "Protocol")]
pub(crate) enum RawProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// TLS to upstream endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamTls")]
pub(crate) struct RawUpstreamTls {
    /// DNS name sent as SNI and verified against the certificate.
    pub(crate) sni: String,
    /// PEM CA bundle to trust; the Mozilla roots when absent.
    pub(crate) ca_file: Option<String>,
    /// PEM client certificate chain presented to the upstream (mutual TLS); with `key`.
    pub(crate) cert: Option<String>,
    /// PEM private key of `cert`.
    pub(crate) key: Option<String>,
}

/// Graceful shutdown.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Shutdown")]
pub(crate) struct RawShutdown {
    /// How long `/readyz` fails before accepting stops. Default `5s`; `0s` allowed.
    pub(crate) drain_delay: Option<Dur>,
    /// How long in-flight requests may take after accepting stops. Default `30s`.
    pub(crate) drain_timeout: Option<Dur>,
}

/// Logging.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Log")]
pub(crate) struct RawLog {
    /// Level filter: `error`, `warn`, `info`, `debug`, `trace`, `off`, or `target=level,...`.
    /// Default `info`.
    pub(crate) level: Option<String>,
    /// Write the JSON access log to standard output. Default `true`.
    pub(crate) access_log: Option<bool>,
}

// === resilience: routes ===

/// Route retry policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retry")]
pub(crate) struct RawRetry {
    /// Total tries, the first included, 1 to 10. Default `3`.
    pub(crate) attempts: Option<u32>,
    /// What is retried: `connect-failure`, `reset`, `timeout`, or a status 500 to 599. Default
    /// `[connect-failure, reset, timeout, 502, 503, 504]`.
    pub(crate) on: Option<Vec<RawRetryOn>>,
    /// Timeout of each try; at most the route `timeout`. Default none (only the route timeout).
    pub(crate) per_try_timeout: Option<Dur>,
    /// Exponential backoff with full jitter between tries.
    pub(crate) backoff: Option<RawBackoff>,
    /// Retry budget: retries may add at most `ratio` of the requests, plus `min_per_second`.
    pub(crate) budget: Option<RawRetryBudget>,
    /// Largest request body kept for replay; a longer body makes the request not retryable.
    /// Default `64KiB`.
    pub(crate) max_buffered_body: Option<Size>,
}

/// A retry condition: `connect-failure`, `reset`, `timeout`, or an upstream status 500 to 599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawRetryOn {
    ConnectFailure,
    Reset,
    Timeout,
    Status(u64),
}

/// Backoff between tries: try `n` waits a random time up to `min(max, base * 2^(n-1))`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Backoff")]
pub(crate) struct RawBackoff {
    /// Default `25ms`; `0s` retries at once.
    pub(crate) base: Option<Dur>,
    /// At least `base`. Default `250ms`.
    pub(crate) max: Option<Dur>,
}

/// Retry budget.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RetryBudget")]
pub(crate) struct RawRetryBudget {
    /// Retries as a share of requests. Default `20%`.
    pub(crate) ratio: Option<Ratio>,
    /// Retries per second always allowed. Default `10`.
    pub(crate) min_per_second: Option<u32>,
}

/// What to answer when forwarding fails with one of `on`: the stale copy if there is one,
/// else the static response if there is one. At least one of `stale` and `response`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fallback")]
pub(crate) struct RawFallback {
    /// Failure kinds that trigger the fallback. Default `[connect-failure, reset, timeout,
    /// upstream-5xx, circuit-open, no-healthy-endpoint, overloaded]`.
    pub(crate) on: Option<Vec<RawFailureKind>>,
    /// Serve the last good response, if one is cached and young enough.
    pub(crate) stale: Option<RawStale>,
    /// A fixed response.
    pub(crate) response: Option<RawStaticResponse>,
}

/// A failure kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "FailureKind")]
pub(crate) enum RawFailureKind {
    /// The upstream connection could not be established.
    ConnectFailure,
    /// The upstream connection or stream was reset.
    Reset,
    /// A timeout (route or per try).
    Timeout,
    /// A 5xx answer from the upstream, after retries.
    #[serde(rename = "upstream-5xx")]
    Upstream5xx,
    /// The circuit breaker is open.
    CircuitOpen,
    /// No endpoint of the cluster is usable.
    NoHealthyEndpoint,
    /// A cluster limit (bulkhead) is full.
    Overloaded,
    /// The route's rate limit refused the request.
    RateLimited,
}

/// Serve-stale settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stale")]
pub(crate) struct RawStale {
    /// Oldest copy served. Default `10m`.
    pub(crate) max_age: Option<Dur>,
}

/// A fixed response.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StaticResponse")]
pub(crate) struct RawStaticResponse {
    /// Status code, 200 to 599. Default `503`.
    pub(crate) status: Option<u16>,
    /// Response headers, `name: value`.
    pub(crate) headers: Option<BTreeMap<String, Text>>,
    /// The body, as text. Not together with `body_file`.
    pub(crate) body: Option<String>,
    /// File whose content is the body (relative to the config file), read when the config is
    /// loaded. Not together with `body`.
    pub(crate) body_file: Option<String>,
}

/// Local token-bucket rate limit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimit")]
pub(crate) struct RawRateLimit {
    /// Tokens added per second; above 0, fractions allowed.
    pub(crate) requests_per_second: f64,
    /// Bucket size, at least 1. Default `requests_per_second` rounded up.
    pub(crate) burst: Option<u32>,
    /// One bucket per `client_ip` or per value of `{ header: NAME }`; one bucket for the route
    /// when absent.
    pub(crate) key: Option<RawRateLimitKey>,
    /// Most keys tracked at once, least recently used dropped first. Default `100000`.
    pub(crate) max_keys: Option<u32>,
}

/// What a rate limit counts per: `client_ip` or `{ header: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "RateLimitKey")]
pub(crate) enum RawRateLimitKey {
    /// A request header's value; requests without it share one bucket.
    Header(String),
    /// The client IP address.
    ClientIp,
}

/// Fault injection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fault")]
pub(crate) struct RawFault {
    /// Delay a share of requests before forwarding.
    pub(crate) delay: Option<RawFaultDelay>,
    /// Answer a share of requests with a status instead of forwarding.
    pub(crate) abort: Option<RawFaultAbort>,
    /// Honour the `x-levee-fault-delay: DURATION` and `x-levee-fault-abort: STATUS` request
    /// headers. Default `false`.
    pub(crate) headers: Option<bool>,
}

/// An injected delay.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FaultDelay")]
pub(crate) struct RawFaultDelay {
    /// How long, above 0.
    pub(crate) duration: Dur,
    /// Share of requests delayed.
    pub(crate) percent: Ratio,
}

/// An injected error response.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FaultAbort")]
pub(crate) struct RawFaultAbort {
    /// Status answered, 200 to 599.
    pub(crate) status: u16,
    /// Share of requests aborted.
    pub(crate) percent: Ratio,
}

/// A plugin run on a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RoutePlugin")]
pub(crate) struct RawRoutePlugin {
    /// Name of a plugin defined in the top-level `plugins`.
    pub(crate) name: String,
    /// Any value; handed to the plugin's `init` as JSON. `null` when absent.
    pub(crate) config: Option<Value>,
    /// Keys of `config` (a mapping) whose values `/config` shows; the others are redacted.
    /// Absent: none.
    pub(crate) public_config: Option<Vec<String>>,
    /// The request headers the plugin's hooks receive. Absent: all of them.
    pub(crate) request_headers: Option<Vec<String>>,
    /// The response headers `on-response` receives. Absent: all of them.
    pub(crate) response_headers: Option<Vec<String>>,
}

// === resilience: clusters ===

/// Active health checking of every endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HealthCheck")]
pub(crate) struct RawHealthCheck {
    /// `http` (default) or `tcp` (a connect is a success).
    #[serde(rename = "type")]
    pub(crate) kind: Option<RawHealthCheckType>,
    /// HTTP method. Default `GET`. `http` only.
    pub(crate) method: Option<String>,
    /// Request path, starting with `/`. Default `/healthz`. `http` only.
    pub(crate) path: Option<String>,
    /// `Host` header. Default the endpoint address. `http` only.
    pub(crate) host: Option<String>,
    /// Statuses counted healthy: `200` or ranges `"200-299"`. Default `["200-399"]`. `http`
    /// only.
    pub(crate) expected_statuses: Option<Vec<RawStatusRange>>,
    /// Text the response body must contain. `http` only.
    pub(crate) body_contains: Option<String>,
    /// Time between checks. Default `5s`.
    pub(crate) interval: Option<Dur>,
    /// Time between checks of an unhealthy endpoint. Default `interval`.
    pub(crate) unhealthy_interval: Option<Dur>,
    /// Time allowed for one check; at most `interval`. Default `1s`.
    pub(crate) timeout: Option<Dur>,
    /// Failures in a row that make an endpoint unhealthy, at least 1. Default `3`.
    pub(crate) unhealthy_threshold: Option<u32>,
    /// Successes in a row that make it healthy again, at least 1. Default `2`.
    pub(crate) healthy_threshold: Option<u32>,
    /// Each interval is scaled by a random factor in `1 ± jitter`; below 100%. Default `10%`.
    pub(crate) jitter: Option<Ratio>,
    /// The first check waits a random time up to this. Default `interval`.
    pub(crate) initial_delay: Option<Dur>,
}

/// The kind of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "HealthCheckType")]
pub(crate) enum RawHealthCheckType {
    /// An HTTP request, judged by status (and body).
    Http,
    /// A TCP connect.
    Tcp,
}

/// A status (`200`) or an inclusive range (`"200-299"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawStatusRange(pub(crate) u64, pub(crate) u64);

/// Passive outlier detection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OutlierDetection")]
pub(crate) struct RawOutlierDetection {
    /// Default `true`.
    pub(crate) enabled: Option<bool>,
    /// 5xx answers in a row that eject an endpoint; `0` turns this off. Default `5`.
    pub(crate) consecutive_5xx: Option<u32>,
    /// Connect failures, resets, timeouts and 502/503/504 in a row that eject an endpoint;
    /// `0` turns this off. Default `5`.
    pub(crate) consecutive_gateway_failure: Option<u32>,
    /// Success-rate outliers: a mapping, or `false` to turn it off. On by default.
    pub(crate) success_rate: Option<Switch<RawSuccessRate>>,
    /// Failure-percentage outliers: a mapping (or `true` for the defaults). Off by default.
    pub(crate) failure_percentage: Option<Switch<RawFailurePercentage>>,
    /// How often the rate-based detectors run. Default `10s`.
    pub(crate) interval: Option<Dur>,
    /// First ejection time; each further ejection lasts one more of it. Default `30s`.
    pub(crate) base_ejection_time: Option<Dur>,
    /// Longest ejection. Default `300s` (or `base_ejection_time`, if longer).
    pub(crate) max_ejection_time: Option<Dur>,
    /// Usable endpoints that ejection never goes below: a count (`1`) or a share (`"50%"`).
    /// Default `1`.
    pub(crate) min_healthy: Option<RawMinHealthy>,
}

/// Success-rate outlier detection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SuccessRate")]
pub(crate) struct RawSuccessRate {
    /// An endpoint below `mean - stdev_factor * stdev` is ejected. Default `1.9`.
    pub(crate) stdev_factor: Option<f64>,
    /// Endpoints with enough volume needed to judge. Default `5`.
    pub(crate) minimum_hosts: Option<u32>,
    /// Requests in an interval for an endpoint to count. Default `100`.
    pub(crate) request_volume: Option<u32>,
}

/// Failure-percentage outlier detection.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FailurePercentage")]
pub(crate) struct RawFailurePercentage {
    /// An endpoint failing at least this share is ejected. Default `85%`.
    pub(crate) threshold: Option<Ratio>,
    /// Endpoints with enough volume needed to judge. Default `5`.
    pub(crate) minimum_hosts: Option<u32>,
    /// Requests in an interval for an endpoint to count. Default `50`.
    pub(crate) request_volume: Option<u32>,
}

/// A floor of usable endpoints: a count (`2`) or a share of the cluster (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawMinHealthy {
    Count(u64),
    Fraction(f64),
}

/// Circuit breaker.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CircuitBreaker")]
pub(crate) struct RawCircuitBreaker {
    /// Failure share that opens the breaker, above 0. Default `50%`.
    pub(crate) failure_rate: Option<Ratio>,
    /// Slow-call share that opens the breaker, above 0. Default `100%`.
    pub(crate) slow_call_rate: Option<Ratio>,
    /// Calls longer than this are slow. Default `2s`.
    pub(crate) slow_call_duration: Option<Dur>,
    /// Sliding window: the last N calls (`100`) or the last period (`30s`). Default `100`.
    pub(crate) window: Option<RawBreakerWindow>,
    /// Calls in the window needed before the rates count. Default `20`.
    pub(crate) minimum_calls: Option<u32>,
    /// First open period. Default `30s`.
    pub(crate) open_duration: Option<Dur>,
    /// Each reopening doubles the open period, up to this. Default `300s` (or `open_duration`,
    /// if longer).
    pub(crate) max_open_duration: Option<Dur>,
    /// Trial calls while half-open, and successes needed to close. Default `3`.
    pub(crate) half_open_probes: Option<u32>,
    /// Also keep one breaker per endpoint. Default `false`.
    pub(crate) per_endpoint: Option<bool>,
}

/// A breaker window: a call count (`100`) or a duration (`30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawBreakerWindow {
    Count(u64),
    Time(std::time::Duration),
}

/// Bulkheads of a cluster; overflow fails at once with `overloaded`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ClusterLimits")]
pub(crate) struct RawClusterLimits {
    /// Most upstream connections, at least 1. Default `1024`.
    pub(crate) max_connections: Option<u32>,
    /// Most requests waiting for a connection, at least 1. Default `1024`.
    pub(crate) max_pending: Option<u32>,
    /// Most requests in flight, at least 1. Default `1024`.
    pub(crate) max_requests: Option<u32>,
    /// Most retries in flight, at least 1. Default `3`.
    pub(crate) max_retries: Option<u32>,
}

/// What a cluster does below its `panic_threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "PanicMode")]
pub(crate) enum RawPanicMode {
    /// Spread over every endpoint, usable or not.
    Spread,
    /// Answer `no-healthy-endpoint` at once.
    FailFast,
}

// === cache and plugins ===

/// The shared response store.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cache")]
pub(crate) struct RawCache {
    /// Total size of stored bodies. Default `64MiB`.
    pub(crate) max_size: Option<Size>,
    /// Largest single body stored; at most `max_size`. Default `1MiB`.
    pub(crate) max_entry_size: Option<Size>,
}

/// A Wasm policy plugin.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Plugin")]
pub(crate) struct RawPlugin {
    /// Unique name; routes refer to it.
    pub(crate) name: String,
    /// The `.wasm` component (relative to the config file); it must exist.
    pub(crate) path: String,
    /// What a trap, timeout or memory overrun does: `fail-open` (default), `fail-closed` or
    /// `reload`.
    pub(crate) on_error: Option<RawPluginOnError>,
    /// `pooled` (default) or `per-request` instances.
    pub(crate) isolation: Option<RawPluginIsolation>,
    /// Resource limits.
    pub(crate) limits: Option<RawPluginLimits>,
    /// Pooled instances are recycled after this many calls, at least 1. Default `10000`.
    pub(crate) recycle_after: Option<u32>,
}

/// A plugin's failure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "PluginOnError")]
pub(crate) enum RawPluginOnError {
    /// Act as if the plugin said continue.
    FailOpen,
    /// Answer 503.
    FailClosed,
    /// Retry once on a fresh instance.
    Reload,
}

/// How plugin instances are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "PluginIsolation")]
pub(crate) enum RawPluginIsolation {
    /// Reused within a worker, recycled after `recycle_after` calls or a trap.
    Pooled,
    /// A fresh instance for every request.
    PerRequest,
}

/// A plugin's resource limits.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginLimits")]
pub(crate) struct RawPluginLimits {
    /// Linear memory cap, 1MiB to 256MiB. Default `32MiB`.
    pub(crate) memory: Option<Size>,
    /// Time allowed per call, 1ms to 10s. Default `5ms`.
    pub(crate) deadline: Option<Dur>,
    /// Cache entries the plugin may hold. Default `10000`.
    pub(crate) cache_entries: Option<u32>,
    /// Counter names the plugin may create. Default `100`.
    pub(crate) counters: Option<u32>,
}

/// A feature written as a mapping of settings, or as `true` (every default) or `false` (off).
#[derive(Debug)]
pub(crate) enum Switch<T> {
    Bool(bool),
    Settings(T),
}

// === impl RawTlsVersion ===

impl<'de> Deserialize<'de> for RawTlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        match text.as_str() {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err(serde::de::Error::custom(format!(
                "unknown TLS version {v}, expected \"1.2\" or \"1.3\""
            ))),
        }
    }
}

impl JsonSchema for RawTlsVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TlsVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "enum": ["1.2", "1.3", 1.2, 1.3] })
    }
}

// === impl RawRetryOn ===

impl<'de> Deserialize<'de> for RawRetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "expected `connect-failure`, `reset`, `timeout` or a status 500 to 599";
        match Value::deserialize(d)? {
            Value::String(s) => match s.trim() {
                "connect-failure" => Ok(Self::ConnectFailure),
                "reset" => Ok(Self::Reset),
                "timeout" => Ok(Self::Timeout),
                word => word.parse().map(Self::Status).map_err(|_| {
                    de::Error::custom(format!("unknown condition `{word}`, {expected}"))
                }),
            },
            Value::Number(n) => n
                .as_u64()
                .map(Self::Status)
                .ok_or_else(|| de::Error::custom(format!("`{n}` is not a status, {expected}"))),
            other => Err(de::Error::custom(format!(
                "{expected}, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for RawRetryOn {
    fn schema_name() -> Cow<'static, str> {
        "RetryOn".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A retry condition, or an upstream status to retry.",
            "oneOf": [
                { "enum": ["connect-failure", "reset", "timeout"] },
                { "type": "integer", "minimum": 500, "maximum": 599 }
            ]
        })
    }
}

// === impl RawStatusRange ===

impl<'de> Deserialize<'de> for RawStatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad = |what: &str| {
            de::Error::custom(format!(
                "`{what}` is not a status or a status range; write e.g. `200` or `\"200-299\"`"
            ))
        };
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(|s| Self(s, s))
                .ok_or_else(|| bad(&n.to_string())),
            Value::String(s) => {
                let (low, high) = s.split_once('-').unwrap_or((&s, &s));
                match (low.trim().parse(), high.trim().parse()) {
                    (Ok(low), Ok(high)) => Ok(Self(low, high)),
                    _ => Err(bad(&s)),
                }
            }
            other => Err(de::Error::custom(format!(
                "expected a status such as `200` or a range such as `\"200-299\"`, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for RawStatusRange {
    fn schema_name() -> Cow<'static, str> {
        "StatusRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status (`200`) or an inclusive range (`\"200-299\"`).",
            "oneOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^\\s*[0-9]{3}\\s*(-\\s*[0-9]{3}\\s*)?$" }
            ]
        })
    }
}

// === impl RawMinHealthy ===

impl<'de> Deserialize<'de> for RawMinHealthy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "write a count of endpoints (`2`) or a share of the cluster (`\"50%\"`)";
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Self::Count)
                .ok_or_else(|| de::Error::custom(format!("`{n}` is not a count; {expected}"))),
            Value::String(s) => parse_percent(&s)
                .map(Self::Fraction)
                .map_err(|e| de::Error::custom(format!("{e}; {expected}"))),
            other => Err(de::Error::custom(format!(
                "{expected}, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for RawMinHealthy {
    fn schema_name() -> Cow<'static, str> {
        "MinHealthy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count of endpoints (`2`) or a share of the cluster (`\"50%\"`).",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]*)?\\s*%\\s*$" }
            ]
        })
    }
}

// === impl RawBreakerWindow ===

impl<'de> Deserialize<'de> for RawBreakerWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().map(Self::Count).ok_or_else(|| {
                de::Error::custom(format!(
                    "`{n}` is not a window; write a call count (`100`) or a duration (`30s`)"
                ))
            }),
            Value::String(s) => parse_duration(&s)
                .map(Self::Time)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "expected a call count (`100`) or a duration (`30s`), found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for RawBreakerWindow {
    fn schema_name() -> Cow<'static, str> {
        "BreakerWindow".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let duration = g.subschema_for::<Dur>();
        json_schema!({
            "description": "The last N calls (`100`) or the last period (`30s`).",
            "oneOf": [ { "type": "integer", "minimum": 1 }, duration ]
        })
    }
}

// === impl Switch ===

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Switch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than a detour through `Value`, so errors inside the mapping keep
        // their key path.
        struct SwitchVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SwitchVisitor<T> {
            type Value = Switch<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping, `true` or `false`")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Switch<T>, E> {
                Ok(Switch::Bool(v))
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Switch<T>, M::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Switch::Settings)
            }
        }

        d.deserialize_any(SwitchVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Switch<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Switch_{}", T::schema_name()).into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let settings = g.subschema_for::<T>();
        json_schema!({ "anyOf": [ settings, { "type": "boolean" } ] })
    }
}
