//! Prometheus metrics, exposed as text on the admin `/metrics` endpoint.
//!
//! One [`Metrics`] lives for the whole process (it survives reloads), so counters keep counting
//! across config versions. `observe_request` runs once per request: its label sets are built from
//! `Arc<str>` clones (no allocation), and a label set seen before is found under the family's read
//! lock, so the steady state takes no write lock and allocates nothing.
//!
//! Names deliberately avoid a gauge and a counter sharing a family name: OpenMetrics (the
//! format `prometheus-client` writes) forbids two families `levee_x` (gauge) and `levee_x`
//! (counter, sample `levee_x_total`). Open connections are therefore `levee_downstream_connections_active` and
//! `levee_upstream_connections_active`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::access_log::RequestRecord;

mod plugins;
mod resilience;

pub use self::plugins::{PluginMetrics, PluginSource};
pub use self::resilience::{ClusterState, EndpointState, ResilienceMetrics, StateSource};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request latency buckets: 0.5ms to 10s in 1-2.5-5 steps, so a
/// dashboard can tell a cache hit (sub-millisecond) from a slow upstream (seconds) and the bucket
/// labels stay readable.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The result of one config reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new snapshot was swapped in.
    Success,
    /// The old snapshot stayed; the reason is in the reload status.
    Error,
}

// === label sets ===

/// A label value that reads `none` when absent (a request that matched no route, or never reached
/// a cluster), so absent and empty never look alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OrNone(Option<Arc<str>>);

impl EncodeLabelValue for OrNone {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value: &str = self.0.as_deref().unwrap_or("none");
        EncodeLabelValue::encode(&value, encoder)
    }
}

/// The class of the status sent downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// No status was sent (the connection broke first).
    None,
}

impl StatusClass {
    fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::None => "none",
        }
    }

    fn of(status: u16) -> Self {
        match status {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            500..=599 => Self::ServerError,
            _ => Self::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    In,
    Out,
}

/// Why a downstream connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The listener was at `max_connections` with no idle connection to close instead.
    Full,
    /// The client had `max_connections_per_client` open.
    PerClient,
}

impl EncodeLabelValue for Rejection {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::Full => "max_connections",
            Self::PerClient => "max_connections_per_client",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Success,
    Error,
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::In => "in",
            Self::Out => "out",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::Success => "success",
            Self::Error => "error",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    listener: Arc<str>,
    route: OrNone,
    cluster: OrNone,
    status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    route: OrNone,
    cluster: OrNone,
    status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    route: OrNone,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BytesLabels {
    direction: Direction,
    route: OrNone,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectedLabels {
    listener: Arc<str>,
    reason: Rejection,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    cluster: Arc<str>,
    endpoint: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric the gateway exports, under the `levee_` prefix:
///
/// - `levee_requests_total{listener,route,cluster,status_class}`; `status_class` is `1xx`..`5xx`
///   or `none` when no status was sent; `route`/`cluster` are `none` when absent.
/// - `levee_request_duration_seconds{route,cluster,status_class}`, buckets 0.5ms to 10s.
/// - `levee_request_errors_total{route,kind}` for requests with a gateway error kind.
/// - `levee_request_bytes_total{direction="in|out",route}` (body bytes).
/// - `levee_downstream_connections_active{listener}`, `levee_downstream_connections_total`,
///   `levee_downstream_connections_rejected_total{listener,reason}` (`max_connections` or
///   `max_connections_per_client`), `levee_downstream_connections_evicted_total` (idle
///   connections closed to make room for new ones), `levee_downstream_connections_parked`
///   (idle HTTP/1 connections holding no HTTP buffers), `levee_downstream_send_timeouts_total`
///   (responses cancelled, or connections closed, after `send_timeout` without progress).
/// - `levee_upstream_connections_active{cluster,endpoint}`, `levee_upstream_connections_total`,
///   `levee_upstream_connect_failures_total`.
/// - `levee_config_reloads_total{result="success|error"}`, `levee_config_last_reload_success`
///   (1/0), `levee_config_last_reload_timestamp_seconds`.
/// - `levee_build_info{version}` = 1.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    request_errors: Family<ErrorLabels, Counter>,
    request_bytes: Family<BytesLabels, Counter>,
    downstream_active: Family<ListenerLabels, Gauge>,
    downstream_total: Family<ListenerLabels, Counter>,
    downstream_rejected: Family<RejectedLabels, Counter>,
    downstream_evicted: Family<ListenerLabels, Counter>,
    downstream_parked: Family<ListenerLabels, Gauge>,
    downstream_send_timeouts: Family<ListenerLabels, Counter>,
    upstream_active: Family<EndpointLabels, Gauge>,
    upstream_total: Family<EndpointLabels, Counter>,
    upstream_connect_failures: Family<EndpointLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    last_reload_success: Gauge,
    last_reload_timestamp: Gauge<f64, AtomicU64>,
    /// Retries, limits, breakers, ejections, fallbacks, and the state gauges.
    pub resilience: ResilienceMetrics,
    /// Plugin counters and status.
    pub plugins: PluginMetrics,
    /// `levee_access_log_dropped_lines_total`, read from the access log at scrape time.
    access_log: Arc<AccessLogCollector>,
    /// Resolved request series, so `observe_request` skips the families' label hashing.
    series: RwLock<HashMap<SeriesKey, Arc<RequestSeries>, BuildHasherDefault<PtrHasher>>>,
}

/// Most cached request series; the cache is emptied when it holds more. Each reload makes new
/// route and cluster names, so without a bound the cache would grow with every reload.
const MAX_CACHED_SERIES: usize = 4096;

/// A request series by the identity of its label values: the `Arc<str>` allocations of the
/// listener, route and cluster names (0 for none) and the status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    listener: usize,
    route: usize,
    cluster: usize,
    status_class: StatusClass,
}

impl SeriesKey {
    fn of(record: &RequestRecord<'_>, status_class: StatusClass) -> Self {
        fn addr(name: Option<&Arc<str>>) -> usize {
            name.map_or(0, |name| Arc::as_ptr(name).cast::<u8>() as usize)
        }
        Self {
            listener: addr(Some(&record.listener)),
            route: addr(record.route.as_ref()),
            cluster: addr(record.cluster.as_ref()),
            status_class,
        }
    }
}

/// The metrics one kind of request updates, taken from the families once. prometheus-client's
/// counters and histograms are shared handles, so these are the families' own series.
#[derive(Debug)]
struct RequestSeries {
    /// Keeps the name allocations alive, so that no other name can take their addresses
    /// while the key is cached.
    _names: (Arc<str>, Option<Arc<str>>, Option<Arc<str>>),
    requests: Counter,
    duration: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// A multiply-rotate hasher for [`SeriesKey`]: its words are addresses of the gateway's own
/// allocations, so there is no attacker-chosen input to defend against with SipHash.
#[derive(Debug, Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

// === impl Metrics ===

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The registry's Debug prints every metric; that is noise in a Debug of a parent struct.
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("levee");
        let resilience = ResilienceMetrics::default();
        resilience.register(&mut registry);
        let plugins = PluginMetrics::default();
        plugins.register(&mut registry);

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests finished, by listener, route, cluster and status class",
            requests.clone(),
        );
        let request_duration =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                new_latency_histogram,
            );
        registry.register_with_unit(
            "request_duration",
            "Time from request arrival to the end of the response body",
            Unit::Seconds,
            request_duration.clone(),
        );
        let request_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests that ended with a gateway error, by kind (the x-levee-error value)",
            request_errors.clone(),
        );
        let request_bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "request_bytes",
            "Body bytes received from (in) and sent to (out) downstream clients",
            request_bytes.clone(),
        );

        let downstream_active = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "downstream_connections_active",
            "Open downstream connections",
            downstream_active.clone(),
        );
        let downstream_total = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "downstream_connections",
            "Downstream connections accepted",
            downstream_total.clone(),
        );
        let downstream_rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "downstream_connections_rejected",
            "Downstream connections closed at accept because the listener or the client was at its limit",
            downstream_rejected.clone(),
        );
        let downstream_evicted = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "downstream_connections_evicted",
            "Idle downstream connections closed to make room for a new one at max_connections",
            downstream_evicted.clone(),
        );
        let downstream_send_timeouts = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "downstream_send_timeouts",
            "Responses cancelled, and connections closed, because the client took nothing for send_timeout",
            downstream_send_timeouts.clone(),
        );
        let downstream_parked = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "downstream_connections_parked",
            "Idle HTTP/1 keep-alive connections that have given back their HTTP buffers",
            downstream_parked.clone(),
        );

        let upstream_active = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "upstream_connections_active",
            "Open upstream connections",
            upstream_active.clone(),
        );
        let upstream_total = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "upstream_connections",
            "Upstream connections established",
            upstream_total.clone(),
        );
        let upstream_connect_failures = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "upstream_connect_failures",
            "Failed attempts to connect to an upstream endpoint",
            upstream_connect_failures.clone(),
        );

        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reload attempts, by result",
            reloads.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success",
            "Whether the last config reload attempt succeeded (1) or failed (0)",
            last_reload_success.clone(),
        );
        let last_reload_timestamp = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "config_last_reload_timestamp",
            "When the last config reload attempt finished, in seconds since the Unix epoch",
            Unit::Seconds,
            last_reload_timestamp.clone(),
        );

        let access_log = Arc::new(AccessLogCollector::default());
        registry.register_collector(Box::new(access_log.clone()));

        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );

        Self {
            registry,
            requests,
            request_duration,
            request_errors,
            request_bytes,
            downstream_active,
            downstream_parked,
            downstream_send_timeouts,
            downstream_total,
            downstream_rejected,
            downstream_evicted,
            upstream_active,
            upstream_total,
            upstream_connect_failures,
            reloads,
            last_reload_success,
            last_reload_timestamp,
            resilience,
            plugins,
            access_log,
            series: RwLock::default(),
        }
    }
}

/// Reads how many access log lines were dropped; see [`Metrics::set_access_log_source`].
pub type AccessLogSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// Encodes `levee_access_log_dropped_lines_total` once a source is set.
#[derive(Default)]
struct AccessLogCollector {
    source: OnceLock<AccessLogSource>,
}

impl std::fmt::Debug for AccessLogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogCollector")
            .field("source", &self.source.get().is_some())
            .finish()
    }
}

impl Collector for AccessLogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let metric = encoder.encode_descriptor(
            "access_log_dropped_lines",
            "Access log lines dropped because the writer thread's queue was full",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(source()).encode(metric)
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes `levee_access_log_dropped_lines_total` read from `source`; only the first call
    /// counts. Without a source the metric is absent.
    pub fn set_access_log_source(&self, source: AccessLogSource) {
        let _ = self.access_log.source.set(source);
    }

    /// Counts a finished request and records its latency.
    pub fn observe_request(&self, record: &RequestRecord<'_>) {
        let status_class = StatusClass::of(record.status);
        let series = self.request_series(record, status_class);
        series.duration.observe(record.duration.as_secs_f64());
        series.requests.inc();
        if record.bytes_in > 0 {
            series.bytes_in.inc_by(record.bytes_in);
        }
        if record.bytes_out > 0 {
            series.bytes_out.inc_by(record.bytes_out);
        }
        if let Some(kind) = record.error_kind {
            self.request_errors
                .get_or_create(&ErrorLabels {
                    route: OrNone(record.route.clone()),
                    kind,
                })
                .inc();
        }
    }

    /// The series a request with these labels updates: from the cache, or resolved from the
    /// families (hashing every label value) the first time.
    fn request_series(
        &self,
        record: &RequestRecord<'_>,
        status_class: StatusClass,
    ) -> Arc<RequestSeries> {
        let key = SeriesKey::of(record, status_class);
        let cached = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(series) = cached {
            return series;
        }
        // One lookup per statement: `get_or_create` returns a guard that holds its family's
        // read lock until the end of the statement, and a second lookup in the same family
        // that has to insert would wait for that lock forever.
        let route = OrNone(record.route.clone());
        let cluster = OrNone(record.cluster.clone());
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                listener: record.listener.clone(),
                route: route.clone(),
                cluster: cluster.clone(),
                status_class,
            })
            .clone();
        let duration = self
            .request_duration
            .get_or_create(&DurationLabels {
                route: route.clone(),
                cluster,
                status_class,
            })
            .clone();
        let bytes_in = self
            .request_bytes
            .get_or_create(&BytesLabels {
                direction: Direction::In,
                route: route.clone(),
            })
            .clone();
        let bytes_out = self
            .request_bytes
            .get_or_create(&BytesLabels {
                direction: Direction::Out,
                route,
            })
            .clone();
        let series = Arc::new(RequestSeries {
            _names: (
                record.listener.clone(),
                record.route.clone(),
                record.cluster.clone(),
            ),
            requests,
            duration,
            bytes_in,
            bytes_out,
        });
        let mut cache = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_SERIES {
            cache.clear();
        }
        cache.insert(key, series.clone());
        series
    }

    /// A downstream connection was accepted on `listener`.
    pub fn downstream_connection_opened(&self, listener: &str) {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.downstream_total.get_or_create(&labels).inc();
        self.downstream_active.get_or_create(&labels).inc();
    }

    /// A downstream connection on `listener` closed.
    pub fn downstream_connection_closed(&self, listener: &str) {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.downstream_active.get_or_create(&labels).dec();
    }

    /// The gauge of `listener`'s idle connections that have given back their buffers, to
    /// resolve once per listener.
    /// `levee_downstream_send_timeouts_total` of `listener`, counted by its connections.
    pub fn downstream_send_timeouts(&self, listener: &str) -> Counter {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.downstream_send_timeouts.get_or_create(&labels).clone()
    }

    pub fn downstream_parked(&self, listener: &str) -> Gauge {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.downstream_parked.get_or_create(&labels).clone()
    }

    /// A downstream connection on `listener` was refused at accept, for `reason`.
    pub fn downstream_connection_rejected(&self, listener: &str, reason: Rejection) {
        let labels = RejectedLabels {
            listener: listener.into(),
            reason,
        };
        self.downstream_rejected.get_or_create(&labels).inc();
    }

    /// An idle downstream connection on `listener` was closed to make room for a new one.
    pub fn downstream_connection_evicted(&self, listener: &str) {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.downstream_evicted.get_or_create(&labels).inc();
    }

    /// A new upstream connection to `endpoint` of `cluster` was established.
    pub fn upstream_connection_opened(&self, cluster: &str, endpoint: &str) {
        let labels = endpoint_labels(cluster, endpoint);
        self.upstream_total.get_or_create(&labels).inc();
        self.upstream_active.get_or_create(&labels).inc();
    }

    /// An upstream connection of `cluster` closed.
    pub fn upstream_connection_closed(&self, cluster: &str, endpoint: &str) {
        let labels = endpoint_labels(cluster, endpoint);
        self.upstream_active.get_or_create(&labels).dec();
    }

    /// Connecting to an endpoint of `cluster` failed.
    pub fn upstream_connect_failed(&self, cluster: &str, endpoint: &str) {
        let labels = endpoint_labels(cluster, endpoint);
        self.upstream_connect_failures.get_or_create(&labels).inc();
    }

    /// A config reload finished with `result`.
    pub fn config_reloaded(&self, result: ReloadResult) {
        let (outcome, success) = match result {
            ReloadResult::Success => (Outcome::Success, 1),
            ReloadResult::Error => (Outcome::Error, 0),
        };
        self.reloads
            .get_or_create(&ReloadLabels { result: outcome })
            .inc();
        self.last_reload_success.set(success);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_reload_timestamp.set(now);
    }

    /// Adds to a plugin's own counter (`counter-add`).
    pub fn plugin_counter_add(&self, plugin: &str, name: &str, delta: i64) {
        self.plugins.counter_add(plugin, name, delta);
    }

    /// The series of a plugin's counter `name`, to add to without finding it again.
    pub fn plugin_counter(&self, plugin: &str, name: &str) -> Gauge {
        self.plugins.counter(plugin, name)
    }

    /// Renders the OpenMetrics text exposition; serve it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; an error here could only come from a label encoder,
        // and ours never fail, so an empty page is the (unreachable) fallback.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("encoding metrics failed");
        }
        out
    }
}

fn endpoint_labels(cluster: &str, endpoint: &str) -> EndpointLabels {
    EndpointLabels {
        cluster: cluster.into(),
        endpoint: endpoint.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(
        route: Option<&str>,
        status: u16,
        error_kind: Option<&'static str>,
    ) -> RequestRecord<'static> {
        RequestRecord {
            start: SystemTime::now(),
            listener: Arc::from("public"),
            route: route.map(Arc::from),
            cluster: route.map(|_| Arc::from("api")),
            endpoint: Some(([127, 0, 0, 1], 9001).into()),
            client: ([127, 0, 0, 1], 40000).into(),
            method: http::Method::GET,
            path: "/v1/x",
            version: http::Version::HTTP_11,
            status,
            duration: Duration::from_millis(3),
            bytes_in: 10,
            bytes_out: 100,
            request_id: "id",
            error_kind,
            attempts: 1,
            fallback: None,
        }
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn counts_requests_by_route_cluster_and_status_class() {
        let metrics = Metrics::new();
        metrics.observe_request(&record(Some("api"), 200, None));
        metrics.observe_request(&record(Some("api"), 204, None));
        metrics.observe_request(&record(Some("api"), 503, Some("no-healthy-endpoint")));
        metrics.observe_request(&record(None, 404, Some("no-route")));
        metrics.observe_request(&record(None, 0, None));
        let text = metrics.encode();

        assert_eq!(
            sample(
                &text,
                r#"levee_requests_total{listener="public",route="api",cluster="api",status_class="2xx"}"#
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_requests_total{listener="public",route="api",cluster="api",status_class="5xx"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_requests_total{listener="public",route="none",cluster="none",status_class="4xx"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_requests_total{listener="public",route="none",cluster="none",status_class="none"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_errors_total{route="api",kind="no-healthy-endpoint"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_errors_total{route="none",kind="no-route"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_bytes_total{direction="out",route="api"}"#
            ),
            Some("300")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_bytes_total{direction="in",route="api"}"#
            ),
            Some("30")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_duration_seconds_count{route="api",cluster="api",status_class="2xx"}"#
            ),
            Some("2")
        );
        // 3ms falls in the 5ms bucket, not the 2.5ms one.
        assert_eq!(
            sample(
                &text,
                r#"levee_request_duration_seconds_bucket{le="0.0025",route="api",cluster="api",status_class="2xx"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"levee_request_duration_seconds_bucket{le="0.005",route="api",cluster="api",status_class="2xx"}"#
            ),
            Some("2")
        );
        assert!(text.contains(r#"levee_build_info{version=""#), "{text}");
    }

    #[test]
    fn tracks_open_and_total_connections() {
        let metrics = Metrics::new();
        metrics.downstream_connection_opened("public");
        metrics.downstream_connection_opened("public");
        metrics.downstream_connection_closed("public");
        metrics.downstream_connection_rejected("public", Rejection::Full);
        metrics.downstream_connection_evicted("public");
        metrics.upstream_connection_opened("api", "127.0.0.1:9001");
        metrics.upstream_connection_opened("api", "127.0.0.1:9001");
        metrics.upstream_connection_closed("api", "127.0.0.1:9001");
        metrics.upstream_connect_failed("api", "127.0.0.1:9002");
        let text = metrics.encode();

        let checks = [
            (
                r#"levee_downstream_connections_active{listener="public"}"#,
                "1",
            ),
            (
                r#"levee_downstream_connections_total{listener="public"}"#,
                "2",
            ),
            (
                r#"levee_downstream_connections_rejected_total{listener="public",reason="max_connections"}"#,
                "1",
            ),
            (
                r#"levee_downstream_connections_evicted_total{listener="public"}"#,
                "1",
            ),
            (
                r#"levee_upstream_connections_active{cluster="api",endpoint="127.0.0.1:9001"}"#,
                "1",
            ),
            (
                r#"levee_upstream_connections_total{cluster="api",endpoint="127.0.0.1:9001"}"#,
                "2",
            ),
            (
                r#"levee_upstream_connect_failures_total{cluster="api",endpoint="127.0.0.1:9002"}"#,
                "1",
            ),
        ];
        for (prefix, want) in checks {
            assert_eq!(sample(&text, prefix), Some(want), "{prefix} in {text}");
        }
    }

    #[test]
    fn records_reload_results_and_last_outcome() {
        let metrics = Metrics::new();
        metrics.config_reloaded(ReloadResult::Success);
        metrics.config_reloaded(ReloadResult::Success);
        metrics.config_reloaded(ReloadResult::Error);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"levee_config_reloads_total{result="success"}"#),
            Some("2")
        );
        assert_eq!(
            sample(&text, r#"levee_config_reloads_total{result="error"}"#),
            Some("1")
        );
        assert_eq!(
            sample(&text, "levee_config_last_reload_success "),
            Some("0")
        );
        let ts: f64 = sample(&text, "levee_config_last_reload_timestamp_seconds ")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(ts > 1.0e9, "{text}");

        metrics.config_reloaded(ReloadResult::Success);
        assert_eq!(
            sample(&metrics.encode(), "levee_config_last_reload_success "),
            Some("1")
        );
    }

    #[test]
    fn every_family_name_is_unique() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "{text}");
    }
}
