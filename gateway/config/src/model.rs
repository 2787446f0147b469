//! The validated config: what the gateway runs on.
//!
//! Every value here has been checked and has its default filled in. The raw file types (what
//! serde reads) live in `raw`; `validate` turns them into these. Paths are absolute: relative
//! paths in the file are resolved against the directory of the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A whole, validated config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Downstream listeners, in file order. At least one.
    pub listeners: Vec<Listener>,
    /// The admin listener.
    pub admin: Admin,
    /// Routes, in file order (matching precedence is decided by the router, see `docs/config.md`).
    pub routes: Vec<Route>,
    /// Upstream clusters, in file order.
    pub clusters: Vec<Cluster>,
    /// Graceful shutdown timings.
    pub shutdown: Shutdown,
    /// Logging.
    pub log: Log,
    /// The response store behind serve-stale and the plugins' cache operations.
    pub cache: Cache,
    /// Wasm policy plugins, referenced by routes.
    pub plugins: Vec<Plugin>,
}

/// One downstream listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind. Port 0 picks a free port.
    pub address: SocketAddr,
    /// TLS termination; plain TCP (HTTP/1.1 and h2c prior knowledge) when absent.
    pub tls: Option<ListenerTls>,
    /// Connection and request limits.
    pub limits: ListenerLimits,
    /// Whether the listener's clients are trusted to set `x-request-id`, `Forwarded` and
    /// `X-Real-IP` (another proxy in front of the gateway). Default `false`: a client's
    /// `x-request-id` is replaced by a fresh one, its `Forwarded` and `X-Real-IP` are removed
    /// and `X-Real-IP` is set to the peer address, as Envoy does for external requests
    /// (`preserve_external_request_id: false`). When `true` they are kept (`X-Real-IP` is
    /// set to the peer address only when absent).
    pub trust_client_headers: bool,
    /// How request paths are normalised before routing.
    pub path_normalization: PathNormalization,
}

/// How a listener normalises request paths before routing, so that a route's policy cannot be
/// stepped around with `/api/x/../login`, `/api/%6cogin`, `/api//login` or `/api/./login`.
///
/// Dot segments are removed (RFC 3986 section 5.2.4), escaped unreserved characters decoded
/// and other escapes upper-cased; `%2F` and `%5C` stay encoded. Routing, the route's policy,
/// plugins and the upstream all see the normalised path; the query is never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PathNormalization {
    /// Whether runs of slashes become one (`/a//b` -> `/a/b`). Default `true`: Envoy defaults
    /// to `false` but its edge-hardening guide sets it, and without it `/api//login` still
    /// steps around an `/api/login` route.
    pub merge_slashes: bool,
    /// What to do with a path that is not in normal form. Default `normalize`.
    pub action: PathAction,
}

/// What a listener does with a request path that is not in normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathAction {
    /// Rewrite it to its normal form and forward that.
    Normalize,
    /// Answer `400 Bad Request`.
    Reject,
}

impl Default for PathNormalization {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            action: PathAction::Normalize,
        }
    }
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerTls {
    /// Certificates; the client's SNI picks among them by the names in each certificate. The
    /// first one is the default for clients that send no SNI or an unknown name.
    pub certificates: Vec<CertificatePair>,
    /// Lowest TLS version accepted. Default `1.2`.
    pub min_version: TlsVersion,
    /// Client certificate verification (mutual TLS). Default none: clients are not asked
    /// for a certificate.
    pub client_auth: Option<ClientAuth>,
}

/// Client certificate verification on a listener, like Envoy's `require_client_certificate`
/// with a `trusted_ca`, or Traefik's `clientAuth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientAuth {
    /// PEM bundle of the CAs whose certificates clients may present. Re-read on every
    /// reload, like the listener's certificates.
    pub ca_file: PathBuf,
    /// Whether a client must present a certificate. Default [`ClientAuthMode::Required`].
    pub mode: ClientAuthMode,
    /// Whether the verified client certificate is described to upstreams in
    /// `x-forwarded-client-cert` (Envoy's XFCC: `Hash=<SHA-256 of the DER, hex>` and one
    /// `DNS=<name>` per DNS name). Default `false`.
    pub forward_client_cert: bool,
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMode {
    /// A handshake without a valid client certificate fails (Traefik's
    /// `RequireAndVerifyClientCert`).
    Required,
    /// A client may present no certificate; one it presents must be valid (Traefik's
    /// `VerifyClientCertIfGiven`).
    Optional,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificatePair {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// Limits that protect a listener from slow, large or abusive clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerLimits {
    /// Time allowed to receive a request's complete head (slowloris guard). Default `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes. Default `64KiB`.
    pub max_header_size: u64,
    /// Most headers in one request. Default `100`.
    pub max_headers: u32,
    /// Most open downstream connections. At the limit a new connection closes the oldest idle
    /// keep-alive connection (one with no request in flight) to make room, and is itself
    /// closed at accept only when none is idle. Default `10000`.
    pub max_connections: u32,
    /// Most open downstream connections from one client IP address; further ones are closed
    /// at accept. `None` (the default) is no limit: behind a load balancer every client
    /// shares the balancer's address.
    pub max_connections_per_client: Option<u32>,
    /// How long an idle keep-alive connection stays open. Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Longest a response may go without progress towards the client, as nginx's
    /// `send_timeout`: a write to the socket that cannot complete, or (HTTP/2) a response body
    /// the flow-control window keeps from being sent. The stream is then cancelled, freeing
    /// its upstream request, and the connection closed if nothing else on it progressed.
    /// Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub send_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection. Default `100`.
    pub http2_max_concurrent_streams: u32,
    /// Most client stream resets not yet processed before the connection is closed with
    /// `ENHANCE_YOUR_CALM` (HTTP/2 rapid-reset protection). Default `20`.
    pub http2_max_pending_resets: u32,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    /// Address to bind. Default `127.0.0.1:9901`.
    pub address: SocketAddr,
    /// File holding the bearer token required on every admin request. Required when `address`
    /// is not loopback. The gateway reads it; the config only checks that it exists.
    pub token_file: Option<PathBuf>,
}

/// One route: a match and the cluster it sends to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// What a request must look like to take this route.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Name of the cluster to forward to (checked to exist).
    pub cluster: String,
    /// Whole-request timeout, from arrival to the end of the upstream response head. Default `15s`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Largest request body, in bytes; larger bodies get 413. `None` (the default) is no limit.
    pub max_body_size: Option<u64>,
    pub retry: Option<Retry>,
    pub fallback: Option<Fallback>,
    pub rate_limit: Option<RateLimit>,
    pub fault: Option<Fault>,
    pub plugins: Vec<RoutePlugin>,
}

/// What a request must match. Every present part must match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteMatch {
    /// Host (authority without port), exact or `*.suffix`. `None` matches any host.
    pub host: Option<HostMatch>,
    /// Path, exact or by prefix. Default prefix `/`.
    pub path: PathMatch,
    /// Methods; empty matches any method.
    pub methods: Vec<String>,
    /// Headers that must be present (and equal, when a value is given).
    pub headers: Vec<HeaderMatch>,
}

/// A host to match, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HostMatch {
    /// Exactly this host.
    Exact(String),
    /// Any host that ends with `.` + this suffix (`*.example.com` holds `example.com`). The
    /// bare suffix itself does not match.
    Suffix(String),
}

/// A path to match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    /// Exactly this path (the query string is ignored).
    Exact(String),
    /// Paths that start with this string.
    Prefix(String),
}

/// A header a request must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Header name, lower-cased.
    pub name: String,
    /// Exact value; `None` means the header only has to be present.
    pub value: Option<String>,
}

/// An upstream cluster: a set of endpoints and how to talk to them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Load-balancing algorithm. Default `least-request`.
    pub lb: LbPolicy,
    /// What consistent-hash algorithms hash on. Required for `ring-hash` and `maglev`.
    pub hash_on: Option<HashOn>,
    /// Static endpoints.
    pub endpoints: Vec<Endpoint>,
    /// DNS discovery; its endpoints are added to the static ones.
    pub discovery: Option<DnsDiscovery>,
    /// Time allowed to establish a TCP (and TLS) connection. Default `2s`.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Most idle pooled connections kept per endpoint. Default `64`.
    pub max_idle_per_endpoint: u32,
    /// The HTTP version spoken upstream. Default `http1`.
    pub protocol: UpstreamProtocol,
    /// TLS to the upstream; plain TCP when absent.
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheck>,
    /// Always present; `enabled: false` turns passive ejection off.
    pub outlier_detection: OutlierDetection,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub limits: ClusterLimits,
    /// Fraction (0..=1) of usable endpoints below which the cluster panics. Default 0.5.
    pub panic_threshold: f64,
    pub panic_mode: PanicMode,
}

/// Load-balancing algorithm. Serializes as [`LbPolicy::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two random choices, fewer in-flight requests wins (weighted). The default.
    LeastRequest,
    /// Peak-EWMA latency times in-flight requests, over two random choices.
    PeakEwma,
    /// Consistent hashing on a ring (Ketama-style).
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

/// What consistent hashing hashes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The value of this request header (lower-cased name).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client IP address.
    ClientIp,
}

/// One static endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// IP address and port.
    pub address: SocketAddr,
    /// Relative share of traffic, 1 to 128. Default `1`.
    pub weight: u32,
    /// Priority level; 0 is used first, higher levels are standby. Default `0`.
    pub priority: u32,
}

/// DNS discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsDiscovery {
    /// `host:port` to resolve.
    pub dns: String,
    /// How often to re-resolve. Default `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub refresh: Duration,
}

/// The HTTP version spoken to upstream endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 (prior knowledge on plain TCP, ALPN `h2` over TLS).
    Http2,
}

/// TLS to upstream endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// Server name sent as SNI and verified against the certificate. Required, because static
    /// endpoints are IP addresses.
    pub sni: String,
    /// PEM bundle of CA certificates to trust; the Mozilla roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to the upstream (mutual TLS). Default none.
    pub client_cert: Option<CertificatePair>,
}

/// Graceful shutdown timings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shutdown {
    /// How long `/readyz` reports 503 before the gateway stops accepting, so load balancers
    /// notice. Default `5s`.
    #[serde(with = "humantime_serde_compat")]
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish after accepting stops. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`, or an `EnvFilter`
    /// directive). `RUST_LOG`, when set, wins. Default `info`.
    pub level: String,
    /// Whether to write the JSON access log to standard output. Default `true`.
    pub access_log: bool,
}

// === resilience (issue 3) ===

/// Route retry policy. `attempts` counts every try, the first included.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    /// Total tries including the first, 1 to 10. Default 3.
    pub attempts: u32,
    /// Default `[connect-failure, reset, timeout, 502, 503, 504]`.
    pub on: Vec<RetryOn>,
    /// Each try's own timeout, inside the route timeout. Default none (only the route timeout).
    #[serde(with = "humantime_serde_opt")]
    pub per_try_timeout: Option<Duration>,
    pub backoff: Backoff,
    pub budget: RetryBudget,
    /// Largest request body kept for replay; a longer body makes the request not retryable.
    /// Default 64 KiB.
    pub max_buffered_body: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    Timeout,
    Status(u16),
}

/// Exponential backoff with full jitter: try `n` waits a random time in `[0, min(max, base * 2^(n-1))]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backoff {
    /// Default 25ms.
    #[serde(with = "humantime_serde_compat")]
    pub base: Duration,
    /// Default 250ms.
    #[serde(with = "humantime_serde_compat")]
    pub max: Duration,
}

/// Retries may be at most `ratio` of the requests of the last 10 s, plus `min_per_second`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryBudget {
    /// 0..=1. Default 0.2.
    pub ratio: f64,
    /// Default 10.
    pub min_per_second: u32,
}

/// When forwarding fails with one of `on`, answer with the stale copy if there is one, else with
/// the static response if there is one, else the gateway's own error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fallback {
    /// Default `[connect-failure, reset, timeout, upstream-5xx, circuit-open, no-healthy-endpoint, overloaded]`.
    pub on: Vec<FailureKind>,
    pub stale: Option<Stale>,
    pub response: Option<StaticResponse>,
}

/// The failure kinds a fallback (and a plugin's `on-upstream-failure`) can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    ConnectFailure,
    Reset,
    Timeout,
    /// A 5xx answer from the upstream, after retries.
    #[serde(rename = "upstream-5xx")]
    Upstream5xx,
    CircuitOpen,
    NoHealthyEndpoint,
    Overloaded,
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stale {
    /// Oldest copy served. Default 10m.
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
}

/// A fixed response. `body` holds the file's content when the config names `body_file` (read at
/// load time, so a reload picks up a changed file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticResponse {
    pub status: u16,
    /// Lower-case names, validated values, sorted by name (the file's mapping order is not kept).
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_file: Option<PathBuf>,
}

/// Local token-bucket rate limit of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    /// Tokens added per second (> 0).
    pub requests_per_second: f64,
    /// Bucket size. Default: `requests_per_second` rounded up, at least 1.
    pub burst: u32,
    /// One bucket per key; one bucket for the route when absent.
    pub key: Option<RateLimitKey>,
    /// Most keys tracked at once; the least recently used bucket goes first. Default 100000.
    pub max_keys: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// Lower-case header name; requests without it share one bucket.
    Header(String),
    ClientIp,
}

/// Fault injection for chaos drills. Nothing is injected unless configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Honour `x-levee-fault-delay: <duration>` and `x-levee-fault-abort: <status>` request
    /// headers. Default false.
    pub headers: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultDelay {
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// 0..=1.
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultAbort {
    pub status: u16,
    /// 0..=1.
    pub percent: f64,
}

/// Active health checking of every endpoint of a cluster (once per endpoint, not per route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    /// Default 5s.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Interval while an endpoint is unhealthy. Default: `interval`.
    #[serde(with = "humantime_serde_compat")]
    pub unhealthy_interval: Duration,
    /// Default 1s.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Default 3.
    pub unhealthy_threshold: u32,
    /// Default 2.
    pub healthy_threshold: u32,
    /// 0..=1, each interval is scaled by a random factor in `1 ± jitter`. Default 0.1.
    pub jitter: f64,
    /// The first check waits a random time in `[0, initial_delay]`. Default: `interval`.
    #[serde(with = "humantime_serde_compat")]
    pub initial_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    Http(HttpHealthCheck),
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpHealthCheck {
    /// Default GET.
    pub method: String,
    /// Default `/healthz`.
    pub path: String,
    /// `Host` header; default: the endpoint address.
    pub host: Option<String>,
    /// Inclusive ranges. Default `[200..=399]`.
    pub expected_statuses: Vec<(u16, u16)>,
    /// The body must contain this text.
    pub body_contains: Option<String>,
}

/// Passive outlier detection (Envoy's knobs). A detector set to `None` is off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// Default true.
    pub enabled: bool,
    /// Default Some(5).
    pub consecutive_5xx: Option<u32>,
    /// Connect errors, resets, timeouts, 502/503/504. Default Some(5).
    pub consecutive_gateway_failure: Option<u32>,
    /// Default on: stdev_factor 1.9, minimum_hosts 5, request_volume 100.
    pub success_rate: Option<SuccessRate>,
    /// Default off. When set: threshold 0.85, minimum_hosts 5, request_volume 50.
    pub failure_percentage: Option<FailurePercentage>,
    /// How often the rate-based detectors run, and the decay step of the ejection count. Default 10s.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Default 30s.
    #[serde(with = "humantime_serde_compat")]
    pub base_ejection_time: Duration,
    /// Default 300s.
    #[serde(with = "humantime_serde_compat")]
    pub max_ejection_time: Duration,
    /// The floor of usable endpoints that ejection never goes below. Default `Count(1)`.
    pub min_healthy: MinHealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuccessRate {
    pub stdev_factor: f64,
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailurePercentage {
    /// 0..=1.
    pub threshold: f64,
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

/// Written `2` (endpoints) or `50%` (of the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MinHealthy {
    Count(u32),
    Fraction(f64),
}

/// Circuit breaker (Resilience4j's knobs), per cluster and optionally per endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreaker {
    /// 0..=1. Default 0.5.
    pub failure_rate: f64,
    /// 0..=1. Default 1.0 (off in practice).
    pub slow_call_rate: f64,
    /// Default 2s.
    #[serde(with = "humantime_serde_compat")]
    pub slow_call_duration: Duration,
    /// Written as a count (`100`) or a duration (`30s`). Default `Count(100)`.
    pub window: BreakerWindow,
    /// Default 20.
    pub minimum_calls: u32,
    /// First open period. Default 30s.
    #[serde(with = "humantime_serde_compat")]
    pub open_duration: Duration,
    /// Each reopening from half-open doubles the open period, up to this. Default 300s.
    #[serde(with = "humantime_serde_compat")]
    pub max_open_duration: Duration,
    /// Most concurrent trial calls while half-open; also the successes needed to close. Default 3.
    pub half_open_probes: u32,
    /// Also keep a breaker per endpoint. Default false.
    pub per_endpoint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerWindow {
    Count(u32),
    Time(#[serde(with = "humantime_serde_compat")] Duration),
}

/// Bulkheads per cluster (what Envoy calls circuit breakers). Overflow fails fast with
/// `overloaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterLimits {
    /// Default 1024.
    pub max_connections: u32,
    /// Requests waiting for a connection. Default 1024.
    pub max_pending: u32,
    /// Default 1024.
    pub max_requests: u32,
    /// Concurrent retries. Default 3.
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PanicMode {
    /// Spread over every endpoint, usable or not (Envoy). The default.
    Spread,
    /// Answer `no-healthy-endpoint` at once.
    FailFast,
}

/// The shared response store (serve-stale, plugin cache operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cache {
    /// Default 64 MiB.
    pub max_size: u64,
    /// Largest single body kept. Default 1 MiB.
    pub max_entry_size: u64,
}

// === plugins (issue 4) ===

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plugin {
    pub name: String,
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
    pub on_error: PluginOnError,
    pub isolation: PluginIsolation,
    pub limits: PluginLimits,
    /// Pooled instances are recycled after this many calls. Default 10000.
    pub recycle_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginOnError {
    FailOpen,
    FailClosed,
    Reload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginIsolation {
    Pooled,
    PerRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginLimits {
    /// Default 32 MiB.
    pub memory: u64,
    /// Per call. Default 5ms.
    #[serde(with = "humantime_serde_compat")]
    pub deadline: Duration,
    /// Cache entries the plugin may hold. Default 10000.
    pub cache_entries: u32,
    /// Counter names the plugin may create. Default 100.
    pub counters: u32,
}

/// A plugin named by a route, with the route's config for it.
///
/// Serializes (for `/config`) with the values of `config` redacted, but for the keys listed in
/// `public_config`: a plugin's config may hold credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlugin {
    pub name: String,
    /// The `config` value as JSON text (`null` when absent); handed to the plugin's `init`.
    pub config: String,
    /// The keys of `config` (a mapping) whose values `/config` shows. Default none.
    pub public_config: Vec<String>,
    /// The request headers (lower-case names) the hooks receive; `None` passes all.
    pub request_headers: Option<Vec<String>>,
    /// The response headers (lower-case names) `on-response` receives; `None` passes all.
    pub response_headers: Option<Vec<String>>,
}

/// What `/config` shows in place of a plugin config value that is not public.
pub const REDACTED: &str = "<redacted>";

impl RoutePlugin {
    /// `config` as `/config` shows it, JSON text: each value of a mapping is [`REDACTED`] unless
    /// its key is in `public_config`; any other value but `null` is redacted whole.
    pub fn redacted_config(&self) -> String {
        let redacted = || serde_json::Value::String(REDACTED.to_owned());
        let value = match serde_json::from_str(&self.config) {
            Ok(serde_json::Value::Object(map)) => serde_json::Value::Object(
                map.into_iter()
                    .map(|(key, value)| {
                        let value = if self.public_config.contains(&key) {
                            value
                        } else {
                            redacted()
                        };
                        (key, value)
                    })
                    .collect(),
            ),
            Ok(serde_json::Value::Null) => serde_json::Value::Null,
            _ => redacted(),
        };
        value.to_string()
    }
}

// By hand rather than derived: `config` is written redacted, which takes `public_config`.
impl Serialize for RoutePlugin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("RoutePlugin", 5)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("config", &self.redacted_config())?;
        out.serialize_field("public_config", &self.public_config)?;
        out.serialize_field("request_headers", &self.request_headers)?;
        out.serialize_field("response_headers", &self.response_headers)?;
        out.end()
    }
}

mod humantime_serde_opt {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Serializes durations as human strings (`"250ms"`, `"5s"`), as they are written in the file.
mod humantime_serde_compat {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

// === impl FailureKind ===

impl FailureKind {
    /// The name the config file (`fallback.on`) and the plugin interface use.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectFailure => "connect-failure",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Upstream5xx => "upstream-5xx",
            FailureKind::CircuitOpen => "circuit-open",
            FailureKind::NoHealthyEndpoint => "no-healthy-endpoint",
            FailureKind::Overloaded => "overloaded",
            FailureKind::RateLimited => "rate-limited",
        }
    }
}

// === impl LbPolicy ===

impl LbPolicy {
    /// The name the config file uses: `round-robin`, `random`, `least-request`, `peak-ewma`,
    /// `ring-hash`, `maglev`.
    pub fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round-robin",
            LbPolicy::Random => "random",
            LbPolicy::LeastRequest => "least-request",
            LbPolicy::PeakEwma => "peak-ewma",
            LbPolicy::RingHash => "ring-hash",
            LbPolicy::Maglev => "maglev",
        }
    }
}

impl std::fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LbPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// === defaults (the values `validate` fills in for absent keys) ===

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: Some(5),
            success_rate: Some(SuccessRate {
                stdev_factor: 1.9,
                minimum_hosts: 5,
                request_volume: 100,
            }),
            failure_percentage: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            min_healthy: MinHealthy::Count(1),
        }
    }
}

impl Default for ClusterLimits {
    fn default() -> Self {
        ClusterLimits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            max_size: 64 * 1024 * 1024,
            max_entry_size: 1024 * 1024,
        }
    }
}
