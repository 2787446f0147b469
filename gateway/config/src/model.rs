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
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerTls {
    /// Certificates; the client's SNI picks among them by the names in each certificate. The
    /// first one is the default for clients that send no SNI or an unknown name.
    pub certificates: Vec<CertificatePair>,
    /// Lowest TLS version accepted. Default `1.2`.
    pub min_version: TlsVersion,
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
    /// Most open downstream connections; further ones are closed at accept. Default `10000`.
    pub max_connections: u32,
    /// How long an idle keep-alive connection stays open. Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
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
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
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

/// Serializes durations as human strings (`"250ms"`, `"5s"`), as they are written in the file.
mod humantime_serde_compat {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
