//! The file as written: serde types with `deny_unknown_fields`, before any checking.
//!
//! Everything optional is an `Option` here; `validate` fills in defaults and checks values.
//! The doc comments become the descriptions of the published JSON Schema.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::units::{Dur, Size, Text};

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
    /// Most open downstream connections, at least 1. Default `10000`.
    pub(crate) max_connections: Option<u32>,
    /// Idle keep-alive timeout. Default `60s`.
    pub(crate) idle_timeout: Option<Dur>,
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
