//! Loads whole config files through the public API and checks the `Config` or the errors
//! (message, line, column and key) that come out.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use levee_config::*;

const FILE: &str = "/etc/levee/levee.yaml";

/// A file system holding exactly these absolute paths.
struct Files(HashSet<PathBuf>);

impl FileSystem for Files {
    fn is_file(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        if self.0.contains(path) {
            Ok(format!("content of {}", path.display()).into_bytes())
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
}

fn all_files() -> Files {
    Files(
        [
            "/etc/levee/certs/site.pem",
            "/etc/levee/certs/site.key",
            "/etc/levee/certs/other.pem",
            "/etc/levee/certs/other.key",
            "/etc/levee/secrets/admin-token",
            "/etc/levee/certs/ca.pem",
            "/etc/levee/certs/clients-ca.pem",
            "/etc/levee/certs/client.pem",
            "/etc/levee/certs/client.key",
            "/etc/levee/pages/sorry.html",
            "/etc/levee/plugins/shed.wasm",
            "/opt/audit.wasm",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect(),
    )
}

fn load_with(text: &str, fs: &dyn FileSystem) -> Result<Config, Errors> {
    load(
        &Source {
            path: Path::new(FILE),
            text,
        },
        fs,
    )
}

fn ok(text: &str) -> Config {
    match load_with(text, &all_files()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors(text: &str) -> Errors {
    match load_with(text, &all_files()) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e,
    }
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"));
    position_at(text, at)
}

/// 1-based line and column of byte offset `at` in `text`.
fn position_at(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Asserts there is an error at `key`, located where `needle` is, whose message contains `msg`.
#[track_caller]
fn assert_error(text: &str, errors: &Errors, key: &str, needle: &str, msg: &str) {
    assert_error_at(errors, key, position(text, needle), msg);
}

/// Asserts there is an error at `key`, at `(line, column)`, whose message contains `msg`.
#[track_caller]
fn assert_error_at(errors: &Errors, key: &str, at: (usize, usize), msg: &str) {
    let Some(e) = errors
        .0
        .iter()
        .find(|e| e.key == key && e.message.contains(msg))
    else {
        panic!("no error at `{key}` containing `{msg}`; got:\n{errors}");
    };
    assert_eq!((e.line, e.column), at, "position of {e}");
    assert_eq!(e.file, PathBuf::from(FILE));
}

const LISTENER: &str = "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n";

fn with_listener(rest: &str) -> String {
    format!("{LISTENER}{rest}")
}

const FULL: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls:
      certificates:
        - { cert: certs/site.pem, key: certs/site.key }
        - { cert: /etc/levee/certs/other.pem, key: certs/other.key }
      min_version: "1.3"
      client_auth: { ca_file: certs/clients-ca.pem, mode: optional, forward_client_cert: true }
    limits:
      header_read_timeout: 5s
      max_header_size: 32KiB
      max_headers: 50
      max_connections: 2000
      max_connections_per_client: 50
      idle_timeout: 90s
      send_timeout: 20s
      http2_max_concurrent_streams: 200
      http2_max_pending_resets: 10
    path_normalization:
      merge_slashes: false
      action: reject
    trust_client_headers: true
  - name: plain
    address: "[::1]:0"
admin:
  address: 0.0.0.0:9901
  token_file: secrets/admin-token
routes:
  - name: api
    match:
      host: API.Example.com
      path_prefix: /v1/
      methods: [get, POST]
      headers:
        - { name: X-Env, value: canary }
        - { name: x-debug }
        - { name: x-num, value: 1 }
    cluster: api
    timeout: 5s
    max_body_size: 10MiB
    retry:
      attempts: 4
      on: [reset, 503, "502"]
      per_try_timeout: 2s
      backoff: { base: 10ms, max: 1s }
      budget: { ratio: 10%, min_per_second: 5 }
      max_buffered_body: 1MiB
    fallback:
      on: [timeout, upstream-5xx, rate-limited]
      stale: { max_age: 1m }
      response:
        status: 502
        headers: { Retry-After: 30, content-type: text/html }
        body_file: pages/sorry.html
    rate_limit: { requests_per_second: 2.5, burst: 10, key: { header: X-Api-Key }, max_keys: 500 }
    fault:
      delay: { duration: 100ms, percent: 10% }
      abort: { status: 503, percent: 0.05 }
      headers: true
    plugins:
      - name: shed
        config: { header: x-priority, keep: [high] }
        request_headers: [X-Priority]
        response_headers: []
      - name: audit
  - name: exact
    match: { host: "*.Example.com", path: /healthz }
    fallback: { response: { status: 200, body: "ok" } }
    rate_limit: { requests_per_second: 100, key: client_ip }
    cluster: web
  - name: web
    cluster: web
clusters:
  - name: api
    lb: ring-hash
    hash_on: { header: X-User }
    endpoints:
      - { address: 127.0.0.1:9001 }
      - { address: "[::1]:9002", weight: 2, priority: 1 }
    connect_timeout: 1s
    idle_timeout: 20s
    max_idle_per_endpoint: 8
    protocol: http2
    tls: { sni: API.internal, ca_file: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }
    health_check:
      method: head
      path: /ready
      host: api.internal:8080
      expected_statuses: [200, "204-299"]
      body_contains: ok
      interval: 2s
      unhealthy_interval: 10s
      timeout: 500ms
      unhealthy_threshold: 4
      healthy_threshold: 1
      jitter: 0.2
      initial_delay: 0s
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_failure: 3
      success_rate: false
      failure_percentage: { threshold: 90%, request_volume: 20 }
      interval: 5s
      base_ejection_time: 10s
      max_ejection_time: 1m
      min_healthy: 50%
    circuit_breaker:
      failure_rate: 25%
      slow_call_rate: 0.8
      slow_call_duration: 1s
      window: 30s
      minimum_calls: 10
      open_duration: 5s
      max_open_duration: 1m
      half_open_probes: 1
      per_endpoint: true
    limits: { max_connections: 100, max_pending: 10, max_requests: 200, max_retries: 5 }
    panic_threshold: 30%
    panic_mode: fail-fast
  - name: web
    lb: maglev
    hash_on: client_ip
    discovery: { dns: "web.internal:8080", refresh: 30s }
    health_check: { type: tcp, interval: 1s }
    outlier_detection: false
  - name: cookie
    lb: ring-hash
    hash_on: { cookie: session }
    endpoints: [ { address: 10.0.0.1:80 } ]
shutdown: { drain_delay: 0s, drain_timeout: 1m }
log: { level: "info,levee=debug", access_log: false }
cache: { max_size: 128MiB, max_entry_size: 2MiB }
plugins:
  - name: shed
    path: plugins/shed.wasm
    on_error: fail-closed
    isolation: per-request
    limits: { memory: 64MiB, deadline: 10ms, cache_entries: 10, counters: 5 }
    recycle_after: 100
  - name: audit
    path: /opt/audit.wasm
"#;

/// The outlier detection a cluster gets when it says nothing about it.
fn default_outlier_detection() -> OutlierDetection {
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

fn default_cluster_limits() -> ClusterLimits {
    ClusterLimits {
        max_connections: 1024,
        max_pending: 1024,
        max_requests: 1024,
        max_retries: 3,
    }
}

#[test]
fn full_file_with_every_key_produces_the_expected_config() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let path = |s: &str| PathBuf::from(s);
    let defaults_for_cluster = |name: &str, lb, hash_on, endpoints, discovery| Cluster {
        name: name.into(),
        lb,
        hash_on,
        endpoints,
        discovery,
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        max_idle_per_endpoint: 64,
        protocol: UpstreamProtocol::Http1,
        tls: None,
        health_check: None,
        outlier_detection: default_outlier_detection(),
        circuit_breaker: None,
        limits: default_cluster_limits(),
        panic_threshold: 0.5,
        panic_mode: PanicMode::Spread,
    };
    let expected = Config {
        listeners: vec![
            Listener {
                name: "public".into(),
                address: addr("127.0.0.1:8443"),
                tls: Some(ListenerTls {
                    certificates: vec![
                        CertificatePair {
                            cert: path("/etc/levee/certs/site.pem"),
                            key: path("/etc/levee/certs/site.key"),
                        },
                        CertificatePair {
                            cert: path("/etc/levee/certs/other.pem"),
                            key: path("/etc/levee/certs/other.key"),
                        },
                    ],
                    min_version: TlsVersion::Tls13,
                    client_auth: Some(ClientAuth {
                        ca_file: path("/etc/levee/certs/clients-ca.pem"),
                        mode: ClientAuthMode::Optional,
                        forward_client_cert: true,
                    }),
                }),
                limits: ListenerLimits {
                    header_read_timeout: Duration::from_secs(5),
                    max_header_size: 32 * 1024,
                    max_headers: 50,
                    max_connections: 2000,
                    max_connections_per_client: Some(50),
                    idle_timeout: Duration::from_secs(90),
                    send_timeout: Duration::from_secs(20),
                    http2_max_concurrent_streams: 200,
                    http2_max_pending_resets: 10,
                },
                path_normalization: PathNormalization {
                    merge_slashes: false,
                    action: PathAction::Reject,
                },
                trust_client_headers: true,
            },
            Listener {
                name: "plain".into(),
                address: addr("[::1]:0"),
                tls: None,
                limits: ListenerLimits {
                    header_read_timeout: Duration::from_secs(10),
                    max_header_size: 64 * 1024,
                    max_headers: 100,
                    max_connections: 10_000,
                    max_connections_per_client: None,
                    idle_timeout: Duration::from_secs(60),
                    send_timeout: Duration::from_secs(30),
                    http2_max_concurrent_streams: 100,
                    http2_max_pending_resets: 20,
                },
                path_normalization: PathNormalization {
                    merge_slashes: true,
                    action: PathAction::Normalize,
                },
                trust_client_headers: false,
            },
        ],
        admin: Admin {
            address: addr("0.0.0.0:9901"),
            token_file: Some(path("/etc/levee/secrets/admin-token")),
        },
        routes: vec![
            Route {
                name: "api".into(),
                matcher: RouteMatch {
                    host: Some(HostMatch::Exact("api.example.com".into())),
                    path: PathMatch::Prefix("/v1/".into()),
                    methods: vec!["GET".into(), "POST".into()],
                    headers: vec![
                        HeaderMatch {
                            name: "x-env".into(),
                            value: Some("canary".into()),
                        },
                        HeaderMatch {
                            name: "x-debug".into(),
                            value: None,
                        },
                        HeaderMatch {
                            name: "x-num".into(),
                            value: Some("1".into()),
                        },
                    ],
                },
                cluster: "api".into(),
                timeout: Duration::from_secs(5),
                max_body_size: Some(10 * 1024 * 1024),
                retry: Some(Retry {
                    attempts: 4,
                    on: vec![RetryOn::Reset, RetryOn::Status(503), RetryOn::Status(502)],
                    per_try_timeout: Some(Duration::from_secs(2)),
                    backoff: Backoff {
                        base: Duration::from_millis(10),
                        max: Duration::from_secs(1),
                    },
                    budget: RetryBudget {
                        ratio: 0.1,
                        min_per_second: 5,
                    },
                    max_buffered_body: 1024 * 1024,
                }),
                fallback: Some(Fallback {
                    on: vec![
                        FailureKind::Timeout,
                        FailureKind::Upstream5xx,
                        FailureKind::RateLimited,
                    ],
                    stale: Some(Stale {
                        max_age: Duration::from_secs(60),
                    }),
                    response: Some(StaticResponse {
                        status: 502,
                        headers: vec![
                            ("retry-after".into(), "30".into()),
                            ("content-type".into(), "text/html".into()),
                        ],
                        body: b"content of /etc/levee/pages/sorry.html".to_vec(),
                        body_file: Some(path("/etc/levee/pages/sorry.html")),
                    }),
                }),
                rate_limit: Some(RateLimit {
                    requests_per_second: 2.5,
                    burst: 10,
                    key: Some(RateLimitKey::Header("x-api-key".into())),
                    max_keys: 500,
                }),
                fault: Some(Fault {
                    delay: Some(FaultDelay {
                        duration: Duration::from_millis(100),
                        percent: 0.1,
                    }),
                    abort: Some(FaultAbort {
                        status: 503,
                        percent: 0.05,
                    }),
                    headers: true,
                }),
                plugins: vec![
                    RoutePlugin {
                        name: "shed".into(),
                        config: r#"{"header":"x-priority","keep":["high"]}"#.into(),
                        public_config: Vec::new(),
                        request_headers: Some(vec!["x-priority".into()]),
                        response_headers: Some(vec![]),
                    },
                    RoutePlugin {
                        name: "audit".into(),
                        config: "null".into(),
                        public_config: Vec::new(),
                        request_headers: None,
                        response_headers: None,
                    },
                ],
            },
            Route {
                name: "exact".into(),
                matcher: RouteMatch {
                    host: Some(HostMatch::Suffix("example.com".into())),
                    path: PathMatch::Exact("/healthz".into()),
                    methods: vec![],
                    headers: vec![],
                },
                cluster: "web".into(),
                timeout: Duration::from_secs(15),
                max_body_size: None,
                retry: None,
                fallback: Some(Fallback {
                    on: vec![
                        FailureKind::ConnectFailure,
                        FailureKind::Reset,
                        FailureKind::Timeout,
                        FailureKind::Upstream5xx,
                        FailureKind::CircuitOpen,
                        FailureKind::NoHealthyEndpoint,
                        FailureKind::Overloaded,
                    ],
                    stale: None,
                    response: Some(StaticResponse {
                        status: 200,
                        headers: vec![],
                        body: b"ok".to_vec(),
                        body_file: None,
                    }),
                }),
                rate_limit: Some(RateLimit {
                    requests_per_second: 100.0,
                    burst: 100,
                    key: Some(RateLimitKey::ClientIp),
                    max_keys: 100_000,
                }),
                fault: None,
                plugins: vec![],
            },
            Route {
                name: "web".into(),
                matcher: RouteMatch {
                    host: None,
                    path: PathMatch::Prefix("/".into()),
                    methods: vec![],
                    headers: vec![],
                },
                cluster: "web".into(),
                timeout: Duration::from_secs(15),
                max_body_size: None,
                retry: None,
                fallback: None,
                rate_limit: None,
                fault: None,
                plugins: vec![],
            },
        ],
        clusters: vec![
            Cluster {
                name: "api".into(),
                lb: LbPolicy::RingHash,
                hash_on: Some(HashOn::Header("x-user".into())),
                endpoints: vec![
                    Endpoint {
                        address: addr("127.0.0.1:9001"),
                        weight: 1,
                        priority: 0,
                    },
                    Endpoint {
                        address: addr("[::1]:9002"),
                        weight: 2,
                        priority: 1,
                    },
                ],
                discovery: None,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(20),
                max_idle_per_endpoint: 8,
                protocol: UpstreamProtocol::Http2,
                tls: Some(UpstreamTls {
                    sni: "api.internal".into(),
                    ca_file: Some(path("/etc/levee/certs/ca.pem")),
                    client_cert: Some(CertificatePair {
                        cert: path("/etc/levee/certs/client.pem"),
                        key: path("/etc/levee/certs/client.key"),
                    }),
                }),
                health_check: Some(HealthCheck {
                    kind: HealthCheckKind::Http(HttpHealthCheck {
                        method: "HEAD".into(),
                        path: "/ready".into(),
                        host: Some("api.internal:8080".into()),
                        expected_statuses: vec![(200, 200), (204, 299)],
                        body_contains: Some("ok".into()),
                    }),
                    interval: Duration::from_secs(2),
                    unhealthy_interval: Duration::from_secs(10),
                    timeout: Duration::from_millis(500),
                    unhealthy_threshold: 4,
                    healthy_threshold: 1,
                    jitter: 0.2,
                    initial_delay: Duration::ZERO,
                }),
                outlier_detection: OutlierDetection {
                    enabled: true,
                    consecutive_5xx: None,
                    consecutive_gateway_failure: Some(3),
                    success_rate: None,
                    failure_percentage: Some(FailurePercentage {
                        threshold: 0.9,
                        minimum_hosts: 5,
                        request_volume: 20,
                    }),
                    interval: Duration::from_secs(5),
                    base_ejection_time: Duration::from_secs(10),
                    max_ejection_time: Duration::from_secs(60),
                    min_healthy: MinHealthy::Fraction(0.5),
                },
                circuit_breaker: Some(CircuitBreaker {
                    failure_rate: 0.25,
                    slow_call_rate: 0.8,
                    slow_call_duration: Duration::from_secs(1),
                    window: BreakerWindow::Time(Duration::from_secs(30)),
                    minimum_calls: 10,
                    open_duration: Duration::from_secs(5),
                    max_open_duration: Duration::from_secs(60),
                    half_open_probes: 1,
                    per_endpoint: true,
                }),
                limits: ClusterLimits {
                    max_connections: 100,
                    max_pending: 10,
                    max_requests: 200,
                    max_retries: 5,
                },
                panic_threshold: 0.3,
                panic_mode: PanicMode::FailFast,
            },
            Cluster {
                health_check: Some(HealthCheck {
                    kind: HealthCheckKind::Tcp,
                    interval: Duration::from_secs(1),
                    unhealthy_interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    unhealthy_threshold: 3,
                    healthy_threshold: 2,
                    jitter: 0.1,
                    initial_delay: Duration::from_secs(1),
                }),
                outlier_detection: OutlierDetection {
                    enabled: false,
                    ..default_outlier_detection()
                },
                ..defaults_for_cluster(
                    "web",
                    LbPolicy::Maglev,
                    Some(HashOn::ClientIp),
                    vec![],
                    Some(DnsDiscovery {
                        dns: "web.internal:8080".into(),
                        refresh: Duration::from_secs(30),
                    }),
                )
            },
            defaults_for_cluster(
                "cookie",
                LbPolicy::RingHash,
                Some(HashOn::Cookie("session".into())),
                vec![Endpoint {
                    address: addr("10.0.0.1:80"),
                    weight: 1,
                    priority: 0,
                }],
                None,
            ),
        ],
        shutdown: Shutdown {
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(60),
        },
        log: Log {
            level: "info,levee=debug".into(),
            access_log: false,
        },
        cache: Cache {
            max_size: 128 << 20,
            max_entry_size: 2 << 20,
        },
        plugins: vec![
            Plugin {
                name: "shed".into(),
                path: path("/etc/levee/plugins/shed.wasm"),
                on_error: PluginOnError::FailClosed,
                isolation: PluginIsolation::PerRequest,
                limits: PluginLimits {
                    memory: 64 << 20,
                    deadline: Duration::from_millis(10),
                    cache_entries: 10,
                    counters: 5,
                },
                recycle_after: 100,
            },
            Plugin {
                name: "audit".into(),
                path: path("/opt/audit.wasm"),
                on_error: PluginOnError::FailOpen,
                isolation: PluginIsolation::Pooled,
                limits: PluginLimits {
                    memory: 32 << 20,
                    deadline: Duration::from_millis(5),
                    cache_entries: 10_000,
                    counters: 100,
                },
                recycle_after: 10_000,
            },
        ],
    };
    assert_eq!(ok(FULL), expected);
}

#[test]
fn minimal_file_gets_every_default() {
    let config = ok(LISTENER);
    assert_eq!(
        config.admin.address,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.admin.token_file, None);
    assert!(config.routes.is_empty());
    assert!(config.clusters.is_empty());
    assert_eq!(
        config.shutdown,
        Shutdown {
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(
        config.log,
        Log {
            level: "info".into(),
            access_log: true
        }
    );
    assert_eq!(config.listeners[0].limits.max_header_size, 65536);
    assert_eq!(config.listeners[0].tls, None);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let text = with_listener("admin: { token_file: secrets/admin-token }\n");
    let config = load(
        &Source {
            path: Path::new("/srv/cfg/levee.yaml"),
            text: &text,
        },
        &Files(
            [PathBuf::from("/srv/cfg/secrets/admin-token")]
                .into_iter()
                .collect(),
        ),
    )
    .unwrap();
    assert_eq!(
        config.admin.token_file,
        Some(PathBuf::from("/srv/cfg/secrets/admin-token"))
    );
}

#[test]
fn route_naming_a_missing_cluster_is_an_error_at_its_cluster_key() {
    let text = with_listener(
        "routes:\n  - name: api\n    cluster: apii\nclusters:\n  - name: api\n    endpoints: [ { address: 127.0.0.1:9001 } ]\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].cluster",
        "cluster: apii",
        "no cluster named `apii`",
    );
    assert_eq!(e.0.len(), 1, "{e}");
}

#[test]
fn route_to_a_cluster_with_errors_reports_only_the_cluster_error() {
    let text = with_listener(
        "routes:\n  - name: api\n    cluster: api\nclusters:\n  - name: api\n    lb: fastest\n    endpoints: [ { address: 127.0.0.1:9001 } ]\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "clusters[0].lb",
        "lb: fastest",
        "unknown variant `fastest`",
    );
    assert_eq!(e.0.len(), 1, "{e}");
}

#[test]
fn path_normalization_defaults_and_its_errors_name_file_line_and_key() {
    let config = ok("listeners:\n  - name: public\n    address: 127.0.0.1:8080\n");
    assert_eq!(
        config.listeners[0].path_normalization,
        PathNormalization {
            merge_slashes: true,
            action: PathAction::Normalize,
        }
    );

    let text = "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n    path_normalization:\n      merge_slashes: false\n      action: drop\n";
    let e = errors(text);
    assert_error(
        text,
        &e,
        "listeners[0].path_normalization.action",
        "action: drop",
        "unknown variant `drop`",
    );
    assert_eq!(e.0.len(), 1, "{e}");
}

#[test]
fn duplicate_names_are_errors_at_the_second_name() {
    let text = "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n  - name: public\n    address: 127.0.0.1:8081\n\
                routes:\n  - { name: r, cluster: c }\n  - { name: r, cluster: c }\n\
                clusters:\n  - { name: c, discovery: { dns: \"a.b:80\" } }\n  - { name: c, discovery: { dns: \"a.b:80\" } }\n";
    let e = errors(text);
    let second = |needle: &str| {
        let first = text.find(needle).unwrap();
        first + needle.len() + text[first + needle.len()..].find(needle).unwrap()
    };
    for (key, needle, msg) in [
        (
            "listeners[1].name",
            "name: public",
            "duplicate listener name `public`",
        ),
        ("routes[1].name", "name: r", "duplicate route name `r`"),
        ("clusters[1].name", "name: c", "duplicate cluster name `c`"),
    ] {
        let err = e
            .find(key)
            .unwrap_or_else(|| panic!("no error at {key}: {e}"));
        assert!(err.message.contains(msg), "{err}");
        assert_eq!(
            (err.line, err.column),
            position_at(text, second(needle)),
            "{err}"
        );
    }
}

#[test]
fn listeners_on_the_same_address_clash_but_port_zero_never_does() {
    let text = "listeners:\n  - { name: a, address: 127.0.0.1:8080 }\n  - { name: b, address: 0.0.0.0:8080 }\n\
                \x20 - { name: c, address: 127.0.0.1:0 }\n  - { name: d, address: 127.0.0.1:0 }\n\
                admin: { address: 127.0.0.1:8080 }\n";
    let e = errors(text);
    assert_error(
        text,
        &e,
        "listeners[1].address",
        "address: 0.0.0.0:8080",
        "clashes with listener `a`",
    );
    // Line 6 is `admin: { address: ... }`; the key starts at column 10.
    assert_error_at(&e, "admin.address", (6, 10), "clashes with listener `a`");
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn cluster_without_endpoints_or_discovery_is_an_error() {
    let text = with_listener("clusters:\n  - name: empty\n    endpoints: []\n");
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "clusters[0]",
        "name: empty",
        "needs `endpoints` or `discovery`",
    );
}

#[test]
fn endpoint_addresses_must_be_ip_and_port() {
    let text = with_listener(
        "clusters:\n  - name: c\n    endpoints:\n      - address: web.internal:8080\n      - address: 10.0.0.1\n      - address: 10.0.0.2:0\n    discovery: { dns: web.internal }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "clusters[0].endpoints[0].address",
        "address: web.internal",
        "use `discovery.dns`",
    );
    assert_error(
        &text,
        &e,
        "clusters[0].endpoints[1].address",
        "address: 10.0.0.1",
        "not an `IP:port`",
    );
    assert_error(
        &text,
        &e,
        "clusters[0].endpoints[2].address",
        "address: 10.0.0.2",
        "port 0",
    );
    assert_error(
        &text,
        &e,
        "clusters[0].discovery.dns",
        "dns: web",
        "must be `host:port`",
    );
}

#[test]
fn listener_address_must_be_ip_and_port() {
    let text = "listeners:\n  - name: a\n    address: localhost:8080\n";
    let e = errors(text);
    assert_error(
        text,
        &e,
        "listeners[0].address",
        "address: localhost",
        "not an `IP:port` address",
    );
}

#[test]
fn referenced_files_must_exist() {
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: certs/site.pem\n          key: certs/site.key\n      client_auth: { ca_file: certs/clients.pem }\n\
                admin: { token_file: secrets/admin-token }\n\
                clusters:\n  - name: c\n    endpoints: [ { address: 127.0.0.1:1 } ]\n    tls: { sni: a.internal, ca_file: /nowhere/ca.pem, cert: me.pem, key: me.key }\n";
    let e = load_with(text, &Files(HashSet::new())).unwrap_err();
    assert_error(
        text,
        &e,
        "listeners[0].tls.certificates[0].cert",
        "cert:",
        "file `certs/site.pem` not found",
    );
    assert_error(
        text,
        &e,
        "listeners[0].tls.certificates[0].key",
        "key:",
        "/etc/levee/certs/site.key",
    );
    assert_error(
        text,
        &e,
        "admin.token_file",
        "token_file",
        "file `secrets/admin-token` not found",
    );
    assert_error(
        text,
        &e,
        "clusters[0].tls.ca_file",
        "ca_file: /nowhere",
        "file `/nowhere/ca.pem` not found",
    );
    assert_error(
        text,
        &e,
        "listeners[0].tls.client_auth.ca_file",
        "ca_file: certs/clients",
        "file `certs/clients.pem` not found",
    );
    assert_error(
        text,
        &e,
        "clusters[0].tls.cert",
        "cert: me",
        "file `me.pem` not found",
    );
    assert_error(
        text,
        &e,
        "clusters[0].tls.key",
        "key: me",
        "file `me.key` not found",
    );
    assert_eq!(e.0.len(), 7, "{e}");
}

#[test]
fn upstream_client_cert_and_key_come_together() {
    for (tls, key, needle, msg) in [
        (
            "{ sni: a.internal, cert: certs/site.pem }",
            "clusters[0].tls.key",
            "tls:",
            "needs its private key",
        ),
        (
            "{ sni: a.internal, key: certs/site.key }",
            "clusters[0].tls.cert",
            "tls:",
            "needs its certificate chain",
        ),
    ] {
        let text = with_listener(&format!(
            "clusters:\n  - name: c\n    endpoints: [ {{ address: 127.0.0.1:1 }} ]\n    tls: {tls}\n"
        ));
        let e = errors(&text);
        assert_error(&text, &e, key, needle, msg);
    }
}

#[test]
fn out_of_range_values_are_errors() {
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:80\n    limits:\n      header_read_timeout: 0s\n      max_header_size: 512\n      max_headers: 2000\n      max_connections: 0\n      http2_max_concurrent_streams: 0\n\
                routes:\n  - { name: r, cluster: c, timeout: 0ms }\n\
                clusters:\n  - name: c\n    endpoints:\n      - { address: 127.0.0.1:1, weight: 0 }\n      - { address: 127.0.0.1:2, weight: 129, priority: 17 }\n    connect_timeout: 0s\n";
    let e = errors(text);
    let l = "listeners[0].limits";
    assert_error(
        text,
        &e,
        &format!("{l}.header_read_timeout"),
        "header_read_timeout",
        "greater than zero",
    );
    assert_error(
        text,
        &e,
        &format!("{l}.max_header_size"),
        "max_header_size",
        "between 1KiB and 1MiB",
    );
    assert_error(
        text,
        &e,
        &format!("{l}.max_headers"),
        "max_headers",
        "between 1 and 1024",
    );
    assert_error(
        text,
        &e,
        &format!("{l}.max_connections"),
        "max_connections",
        "at least 1",
    );
    assert_error(
        text,
        &e,
        &format!("{l}.http2_max_concurrent_streams"),
        "http2_max",
        "at least 1",
    );
    assert_error(
        text,
        &e,
        "routes[0].timeout",
        "timeout: 0ms",
        "greater than zero",
    );
    assert_error(
        text,
        &e,
        "clusters[0].endpoints[0].weight",
        "weight: 0",
        "between 1 and 128",
    );
    assert_error(
        text,
        &e,
        "clusters[0].endpoints[1].weight",
        "weight: 129",
        "between 1 and 128",
    );
    assert_error(
        text,
        &e,
        "clusters[0].endpoints[1].priority",
        "priority: 17",
        "between 0 and 16",
    );
    assert_error(
        text,
        &e,
        "clusters[0].connect_timeout",
        "connect_timeout",
        "greater than zero",
    );
    assert_eq!(e.0.len(), 10, "{e}");

    let big = "listeners:\n  - name: a\n    address: 127.0.0.1:80\n    limits: { max_header_size: 2MiB }\n";
    assert_error(
        big,
        &errors(big),
        "listeners[0].limits.max_header_size",
        "max_header_size",
        "1MiB",
    );
}

#[test]
fn consistent_hashing_needs_hash_on_and_others_refuse_it() {
    let text = with_listener(
        "clusters:\n  - name: a\n    lb: maglev\n    endpoints: [ { address: 127.0.0.1:1 } ]\n  - name: b\n    lb: round-robin\n    hash_on: client_ip\n    endpoints: [ { address: 127.0.0.1:1 } ]\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "clusters[0].lb",
        "lb: maglev",
        "`maglev` needs `hash_on`",
    );
    assert_error(
        &text,
        &e,
        "clusters[1].hash_on",
        "hash_on",
        "not `round-robin`",
    );
}

#[test]
fn admin_off_loopback_needs_a_token_file() {
    let text = with_listener("admin:\n  address: 0.0.0.0:9901\n");
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "admin.address",
        "address: 0.0.0.0",
        "set `admin.token_file`",
    );
}

#[test]
fn path_rules_are_checked() {
    let text = with_listener(
        "routes:\n  - name: both\n    match: { path: /a, path_prefix: /b }\n    cluster: c\n  - name: slash\n    match: { path_prefix: v1/ }\n    cluster: c\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].match.path_prefix",
        "path_prefix: /b",
        "cannot both be given",
    );
    assert_error(
        &text,
        &e,
        "routes[1].match.path_prefix",
        "path_prefix: v1/",
        "must start with `/`",
    );
}

/// Found by fuzzing: each of these loaded, but no request could ever match the route.
#[test]
fn route_conditions_that_no_request_can_meet_are_errors() {
    let text = with_listener(
        "routes:\n  - name: query\n    match: { path: \"/a?b\" }\n    cluster: c\n  - name: fragment\n    match: { path_prefix: \"/a#b\" }\n    cluster: c\n  - name: spaced\n    match: { headers: [ { name: x-env, value: \" canary\" } ] }\n    cluster: c\n  - name: ip\n    match: { host: \"*.10.0.0.1\" }\n    cluster: c\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].match.path",
        "path: \"/a?b",
        "without `?` query",
    );
    assert_error(
        &text,
        &e,
        "routes[1].match.path_prefix",
        "path_prefix: \"/a#b",
        "without `?` query or `#` fragment",
    );
    assert_error(
        &text,
        &e,
        "routes[2].match.headers[0].value",
        "value: \" canary",
        "must not start or end with spaces",
    );
    assert_error(
        &text,
        &e,
        "routes[3].match.host",
        "host: \"*.10",
        "must be a DNS name",
    );
}

#[test]
fn host_method_and_header_rules_are_checked() {
    let text = with_listener(
        "routes:\n  - name: r\n    match:\n      host: api.*.com\n      methods: [GET, \"BAD METHOD\"]\n      headers: [ { name: \"x bad\" }, { name: x-ok, value: \"a\\nb\" } ]\n    cluster: c\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].match.host",
        "host: api",
        "only a leading `*.` wildcard",
    );
    assert_error(
        &text,
        &e,
        "routes[0].match.methods[1]",
        "\"BAD METHOD\"",
        "not a valid HTTP method",
    );
    assert_error(
        &text,
        &e,
        "routes[0].match.headers[0].name",
        "name: \"x bad\"",
        "not a valid header name",
    );
    assert_error(
        &text,
        &e,
        "routes[0].match.headers[1].value",
        "value:",
        "must not contain control characters",
    );
}

#[test]
fn upstream_sni_must_be_a_dns_name() {
    let text = with_listener(
        "clusters:\n  - name: c\n    endpoints: [ { address: 127.0.0.1:1 } ]\n    tls: { sni: \"not a name\" }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "clusters[0].tls.sni",
        "sni:",
        "not a valid DNS name",
    );
}

#[test]
fn log_level_must_be_a_filter_word() {
    let text = with_listener("log:\n  level: loud\n");
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "log.level",
        "level: loud",
        "`loud` is not a log level",
    );
}

/// A route `r` to a cluster `c` with one endpoint, and `route` and `cluster` added to each.
fn route_and_cluster(route: &str, cluster: &str) -> String {
    with_listener(&format!(
        "routes:\n  - name: r\n    cluster: c\n{route}clusters:\n  - name: c\n    endpoints: [ {{ address: 127.0.0.1:1 }} ]\n{cluster}"
    ))
}

/// Asserts every `(key, needle, message)` is an error, and that there are no others.
#[track_caller]
fn assert_errors(text: &str, expected: &[(&str, &str, &str)]) {
    let e = errors(text);
    for (key, needle, msg) in expected {
        assert_error(text, &e, key, needle, msg);
    }
    assert_eq!(e.0.len(), expected.len(), "{e}");
}

#[test]
fn resilience_keys_given_empty_get_every_default() {
    let text = route_and_cluster(
        "    retry: {}\n    fallback: { stale: {} }\n    rate_limit: { requests_per_second: 7.5 }\n    fault: {}\n",
        "    health_check: {}\n    circuit_breaker: {}\n    limits: {}\n",
    );
    let config = ok(&text);
    let route = &config.routes[0];
    assert_eq!(
        route.retry,
        Some(Retry {
            attempts: 3,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::Timeout,
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ],
            per_try_timeout: None,
            backoff: Backoff {
                base: Duration::from_millis(25),
                max: Duration::from_millis(250),
            },
            budget: RetryBudget {
                ratio: 0.2,
                min_per_second: 10,
            },
            max_buffered_body: 64 * 1024,
        })
    );
    assert_eq!(
        route.fallback,
        Some(Fallback {
            on: vec![
                FailureKind::ConnectFailure,
                FailureKind::Reset,
                FailureKind::Timeout,
                FailureKind::Upstream5xx,
                FailureKind::CircuitOpen,
                FailureKind::NoHealthyEndpoint,
                FailureKind::Overloaded,
            ],
            stale: Some(Stale {
                max_age: Duration::from_secs(600),
            }),
            response: None,
        })
    );
    assert_eq!(
        route.rate_limit,
        Some(RateLimit {
            requests_per_second: 7.5,
            burst: 8,
            key: None,
            max_keys: 100_000,
        })
    );
    assert_eq!(
        route.fault,
        Some(Fault {
            delay: None,
            abort: None,
            headers: false,
        })
    );
    let cluster = &config.clusters[0];
    assert_eq!(
        cluster.health_check,
        Some(HealthCheck {
            kind: HealthCheckKind::Http(HttpHealthCheck {
                method: "GET".into(),
                path: "/healthz".into(),
                host: None,
                expected_statuses: vec![(200, 399)],
                body_contains: None,
            }),
            interval: Duration::from_secs(5),
            unhealthy_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            jitter: 0.1,
            initial_delay: Duration::from_secs(5),
        })
    );
    assert_eq!(
        cluster.circuit_breaker,
        Some(CircuitBreaker {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Duration::from_secs(2),
            window: BreakerWindow::Count(100),
            minimum_calls: 20,
            open_duration: Duration::from_secs(30),
            max_open_duration: Duration::from_secs(300),
            half_open_probes: 3,
            per_endpoint: false,
        })
    );
    assert_eq!(cluster.outlier_detection, default_outlier_detection());
    assert_eq!(cluster.limits, default_cluster_limits());
    assert_eq!(cluster.panic_threshold, 0.5);
    assert_eq!(cluster.panic_mode, PanicMode::Spread);
}

#[test]
fn absent_resilience_keys_mean_off_except_outlier_detection_and_limits() {
    let config = ok(&route_and_cluster("", ""));
    let route = &config.routes[0];
    assert_eq!(route.retry, None);
    assert_eq!(route.fallback, None);
    assert_eq!(route.rate_limit, None);
    assert_eq!(route.fault, None);
    assert!(route.plugins.is_empty());
    let cluster = &config.clusters[0];
    assert_eq!(cluster.health_check, None);
    assert_eq!(cluster.circuit_breaker, None);
    assert_eq!(cluster.outlier_detection, default_outlier_detection());
    assert_eq!(cluster.limits, default_cluster_limits());
    assert_eq!(
        config.cache,
        Cache {
            max_size: 64 << 20,
            max_entry_size: 1 << 20,
        }
    );
    assert!(config.plugins.is_empty());
}

#[test]
fn outlier_detection_switches_and_shorthands() {
    let cluster = |od: &str| {
        let config = ok(&route_and_cluster(
            "",
            &format!("    outlier_detection: {od}\n"),
        ));
        config.clusters[0].outlier_detection.clone()
    };
    assert_eq!(
        cluster("false"),
        OutlierDetection {
            enabled: false,
            ..default_outlier_detection()
        }
    );
    assert_eq!(cluster("true"), default_outlier_detection());
    assert_eq!(cluster("{}"), default_outlier_detection());
    assert_eq!(
        cluster("{ enabled: false }"),
        OutlierDetection {
            enabled: false,
            ..default_outlier_detection()
        }
    );
    let both = cluster(
        "{ success_rate: { stdev_factor: 2.5 }, failure_percentage: true, min_healthy: 3 }",
    );
    assert_eq!(
        both.success_rate,
        Some(SuccessRate {
            stdev_factor: 2.5,
            minimum_hosts: 5,
            request_volume: 100,
        })
    );
    assert_eq!(
        both.failure_percentage,
        Some(FailurePercentage {
            threshold: 0.85,
            minimum_hosts: 5,
            request_volume: 50,
        })
    );
    assert_eq!(both.min_healthy, MinHealthy::Count(3));
    let off = cluster(
        "{ consecutive_5xx: 0, consecutive_gateway_failure: 0, failure_percentage: false, success_rate: false }",
    );
    assert_eq!(off.consecutive_5xx, None);
    assert_eq!(off.consecutive_gateway_failure, None);
    assert_eq!(off.success_rate, None);
    assert_eq!(off.failure_percentage, None);
    // A long base ejection raises the default cap instead of contradicting it.
    let long = cluster("{ base_ejection_time: 10m }");
    assert_eq!(long.max_ejection_time, Duration::from_secs(600));
}

#[test]
fn defaults_give_way_to_the_values_they_depend_on() {
    let text = route_and_cluster(
        "    retry: { backoff: { base: 1s } }\n",
        "    circuit_breaker: { window: 10, open_duration: 10m }\n    health_check: { interval: 2s }\n",
    );
    let config = ok(&text);
    let backoff = &config.routes[0].retry.as_ref().unwrap().backoff;
    assert_eq!(backoff.max, Duration::from_secs(1));
    let breaker = config.clusters[0].circuit_breaker.as_ref().unwrap();
    assert_eq!(breaker.minimum_calls, 10);
    assert_eq!(breaker.max_open_duration, Duration::from_secs(600));
    let check = config.clusters[0].health_check.as_ref().unwrap();
    assert_eq!(check.unhealthy_interval, Duration::from_secs(2));
    assert_eq!(check.initial_delay, Duration::from_secs(2));
    let fast = ok(&route_and_cluster(
        "",
        "    health_check: { interval: 300ms }\n",
    ));
    let fast = fast.clusters[0].health_check.as_ref().unwrap();
    assert_eq!(fast.timeout, Duration::from_millis(300));

    let small = ok(&with_listener("cache: { max_size: 100KiB }\n"));
    assert_eq!(small.cache.max_entry_size, 100 * 1024);
}

#[test]
fn retry_errors_name_their_key() {
    let text = route_and_cluster(
        "    timeout: 2s\n    retry:\n      attempts: 11\n      on: [reset, 404, 503]\n      per_try_timeout: 3s\n      backoff: { base: 100ms, max: 50ms }\n",
        "",
    );
    assert_errors(
        &text,
        &[
            (
                "routes[0].retry.attempts",
                "attempts",
                "must be between 1 and 10, found 11",
            ),
            (
                "routes[0].retry.on[1]",
                "404",
                "status must be between 500 and 599, found 404",
            ),
            (
                "routes[0].retry.per_try_timeout",
                "per_try",
                "`3s` is longer than the route `timeout` (2s)",
            ),
            (
                "routes[0].retry.backoff.max",
                "max: 50ms",
                "`50ms` is shorter than `base` (100ms)",
            ),
        ],
    );
    // Ill-typed keys are reported together; the route is then left out of the checks above.
    let text = route_and_cluster(
        "    retry:\n      budget: { ratio: 20, min_per_second: -1 }\n      max_buffered_body: 1 XB\n      retries: 2\n",
        "",
    );
    assert_errors(
        &text,
        &[
            (
                "routes[0].retry.budget.ratio",
                "ratio",
                "`20` is above 1; write `20%` for a percentage",
            ),
            (
                "routes[0].retry.budget.min_per_second",
                "min_per_second",
                "invalid value: integer `-1`",
            ),
            (
                "routes[0].retry.max_buffered_body",
                "max_buffered_body",
                "`1 XB` is not a size",
            ),
            (
                "routes[0].retry.retries",
                "retries",
                "unknown field `retries`",
            ),
        ],
    );
    let text = route_and_cluster("    retry: { on: [reset, sometimes] }\n", "");
    assert_errors(
        &text,
        &[(
            "routes[0].retry.on[1]",
            "sometimes",
            "unknown condition `sometimes`, expected `connect-failure`, `reset`, `timeout` or a status 500 to 599",
        )],
    );
    let text = route_and_cluster("    retry: { on: [] }\n", "");
    assert_errors(
        &text,
        &[(
            "routes[0].retry.on",
            "on: []",
            "an empty list retries nothing",
        )],
    );
}

#[test]
fn fallback_errors_name_their_key() {
    let text = route_and_cluster("    fallback:\n      on: [timeout, meltdown]\n", "");
    assert_errors(
        &text,
        &[(
            "routes[0].fallback.on[1]",
            "meltdown",
            "unknown variant `meltdown`, expected one of `connect-failure`",
        )],
    );

    let text = route_and_cluster("    fallback: { on: [timeout] }\n", "");
    assert_errors(
        &text,
        &[(
            "routes[0].fallback",
            "fallback",
            "a fallback needs `stale`, `response` or both",
        )],
    );

    let text = route_and_cluster(
        "    fallback:\n      stale: { max_age: 0s }\n      response:\n        status: 99\n        headers:\n          Retry-After: 30\n          retry-after: 31\n          bad name: x\n          x-ctl: \"a\\nb\"\n          Content-Length: 5\n        body: hi\n        body_file: pages/sorry.html\n",
        "",
    );
    let r = "routes[0].fallback.response";
    assert_errors(
        &text,
        &[
            (
                "routes[0].fallback.stale.max_age",
                "max_age",
                "must be greater than zero",
            ),
            (
                &format!("{r}.status"),
                "status",
                "status must be between 200 and 599, found 99",
            ),
            (
                &format!("{r}.headers.retry-after"),
                "retry-after",
                "header `retry-after` is given twice",
            ),
            (
                &format!("{r}.headers.bad name"),
                "bad name",
                "`bad name` is not a valid header name",
            ),
            (
                &format!("{r}.headers.x-ctl"),
                "x-ctl",
                "must not contain control characters",
            ),
            (
                &format!("{r}.headers.Content-Length"),
                "Content-Length",
                "`content-length` is set by the gateway",
            ),
            (
                &format!("{r}.body_file"),
                "body_file",
                "`body` and `body_file` cannot both be given",
            ),
        ],
    );

    let text = route_and_cluster(
        "    fallback: { response: { body_file: pages/missing.html } }\n",
        "",
    );
    assert_errors(
        &text,
        &[(
            "routes[0].fallback.response.body_file",
            "body_file",
            "file `pages/missing.html` not found (looked for `/etc/levee/pages/missing.html`)",
        )],
    );
}

/// Only answers `is_file`: reading falls back to the trait's default.
struct ExistsOnly;

impl FileSystem for ExistsOnly {
    fn is_file(&self, _: &Path) -> bool {
        true
    }
}

#[test]
fn body_file_is_read_through_the_file_system_and_unreadable_files_are_errors() {
    let text = route_and_cluster(
        "    fallback: { response: { body_file: /srv/page.html } }\n",
        "",
    );
    let e = load_with(&text, &ExistsOnly).unwrap_err();
    assert_error(
        &text,
        &e,
        "routes[0].fallback.response.body_file",
        "body_file",
        "file `/srv/page.html` could not be read",
    );

    let dir = std::env::temp_dir().join(format!("levee-config-body-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.html"), "<h1>down</h1>").unwrap();
    let text = route_and_cluster("    fallback: { response: { body_file: page.html } }\n", "");
    let config = load(
        &Source {
            path: &dir.join("levee.yaml"),
            text: &text,
        },
        &StdFileSystem,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let response = config.unwrap().routes[0]
        .fallback
        .clone()
        .unwrap()
        .response
        .unwrap();
    assert_eq!(response.body, b"<h1>down</h1>");
    assert_eq!(response.body_file, Some(dir.join("page.html")));
}

#[test]
fn rate_limit_and_fault_errors_name_their_key() {
    let text = route_and_cluster(
        "    rate_limit: { requests_per_second: 0, burst: 0, key: { header: \"x y\" }, max_keys: 0 }\n    fault:\n      delay: { duration: 0s, percent: 15% }\n      abort: { status: 700, percent: 0.5 }\n",
        "",
    );
    assert_errors(
        &text,
        &[
            (
                "routes[0].rate_limit.requests_per_second",
                "requests_per_second",
                "must be greater than zero, found 0",
            ),
            (
                "routes[0].rate_limit.burst",
                "burst",
                "must be at least 1, found 0",
            ),
            (
                "routes[0].rate_limit.key.header",
                "header",
                "`x y` is not a valid header name",
            ),
            (
                "routes[0].rate_limit.max_keys",
                "max_keys",
                "must be at least 1, found 0",
            ),
            (
                "routes[0].fault.delay.duration",
                "duration",
                "must be greater than zero",
            ),
            (
                "routes[0].fault.abort.status",
                "status",
                "status must be between 200 and 599, found 700",
            ),
        ],
    );
    for (fault, needle, message) in [
        (
            "delay: { duration: 1s, percent: 150% }",
            "percent",
            "`150%` is above 100%",
        ),
        (
            "abort: { status: 503, percent: 2 }",
            "percent",
            "`2` is above 1; write `2%`",
        ),
    ] {
        let text = route_and_cluster(&format!("    fault: {{ {fault} }}\n"), "");
        let kind = &fault[..5];
        assert_errors(
            &text,
            &[(&format!("routes[0].fault.{kind}.percent"), needle, message)],
        );
    }
    let text = route_and_cluster(
        "    rate_limit: { burst: 5, key: everyone }\n    fault: { delay: { duration: 1s } }\n",
        "",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].rate_limit",
        "rate_limit",
        "missing field `requests_per_second`",
    );
    assert_error(
        &text,
        &e,
        "routes[0].fault.delay",
        "delay",
        "missing field `percent`",
    );
}

#[test]
fn health_check_errors_name_their_key() {
    let text = route_and_cluster(
        "",
        "    health_check:\n      type: tcp\n      path: /h\n      body_contains: ok\n      interval: 1s\n      timeout: 2s\n      healthy_threshold: 0\n      unhealthy_threshold: 0\n      jitter: 100%\n",
    );
    let h = "clusters[0].health_check";
    assert_errors(
        &text,
        &[
            (
                &format!("{h}.path"),
                "path",
                "`path` only applies to `type: http` checks, not `tcp`",
            ),
            (
                &format!("{h}.body_contains"),
                "body_contains",
                "`body_contains` only applies to `type: http`",
            ),
            (
                &format!("{h}.timeout"),
                "timeout: 2s",
                "the check timeout (2s) is longer than `interval` (1s)",
            ),
            (
                &format!("{h}.unhealthy_threshold"),
                "unhealthy_threshold",
                "must be at least 1, found 0",
            ),
            (
                &format!("{h}.healthy_threshold"),
                "healthy_threshold",
                "must be at least 1, found 0",
            ),
            (&format!("{h}.jitter"), "jitter", "must be below 100%"),
        ],
    );
    let text = route_and_cluster("", "    health_check:\n      type: udp\n");
    assert_errors(
        &text,
        &[(
            &format!("{h}.type"),
            "type",
            "unknown variant `udp`, expected `http` or `tcp`",
        )],
    );
    let text = route_and_cluster(
        "",
        "    health_check:\n      method: \"GE T\"\n      path: healthz\n      host: \"bad host\"\n      expected_statuses: [200, \"299-200\", 700]\n      unhealthy_interval: 500ms\n      timeout: 800ms\n",
    );
    assert_errors(
        &text,
        &[
            (
                &format!("{h}.method"),
                "method",
                "`GE T` is not a valid HTTP method",
            ),
            (
                &format!("{h}.path"),
                "path",
                "`healthz` must start with `/`",
            ),
            (
                &format!("{h}.host"),
                "host",
                "`bad host` is not a valid host",
            ),
            (
                &format!("{h}.expected_statuses[1]"),
                "\"299-200\"",
                "the range 299-200 is empty",
            ),
            (
                &format!("{h}.expected_statuses[2]"),
                "700",
                "statuses must be between 100 and 599",
            ),
            (
                &format!("{h}.timeout"),
                "timeout",
                "the check timeout (800ms) is longer than `unhealthy_interval` (500ms)",
            ),
        ],
    );
    let text = route_and_cluster("", "    health_check: { expected_statuses: [\"2xx\"] }\n");
    assert_errors(
        &text,
        &[(
            &format!("{h}.expected_statuses[0]"),
            "\"2xx\"",
            "`2xx` is not a status or a status range; write e.g. `200` or `\"200-299\"`",
        )],
    );
}

#[test]
fn outlier_detection_errors_name_their_key() {
    let text = route_and_cluster(
        "",
        "    outlier_detection:\n      success_rate: { stdev_factor: 0, minimum_hosts: 0 }\n      failure_percentage: { threshold: 0%, request_volume: 0 }\n      interval: 0s\n      base_ejection_time: 1m\n      max_ejection_time: 30s\n      min_healthy: 0\n",
    );
    let o = "clusters[0].outlier_detection";
    assert_errors(
        &text,
        &[
            (
                &format!("{o}.success_rate.stdev_factor"),
                "stdev_factor",
                "must be greater than zero, found 0",
            ),
            (
                &format!("{o}.success_rate.minimum_hosts"),
                "minimum_hosts",
                "must be at least 1, found 0",
            ),
            (
                &format!("{o}.failure_percentage.threshold"),
                "threshold",
                "must be above 0%",
            ),
            (
                &format!("{o}.failure_percentage.request_volume"),
                "request_volume",
                "must be at least 1, found 0",
            ),
            (
                &format!("{o}.interval"),
                "interval",
                "must be greater than zero",
            ),
            (
                &format!("{o}.max_ejection_time"),
                "max_ejection_time",
                "`30s` is shorter than `base_ejection_time` (1m)",
            ),
        ],
    );
    let text = route_and_cluster(
        "",
        "    outlier_detection:\n      min_healthy: 0.5\n      ejections: 3\n",
    );
    assert_errors(
        &text,
        &[
            (
                &format!("{o}.min_healthy"),
                "min_healthy",
                "`0.5` is not a count; write a count of endpoints (`2`) or a share",
            ),
            (
                &format!("{o}.ejections"),
                "ejections",
                "unknown field `ejections`",
            ),
        ],
    );
    let text = route_and_cluster("", "    outlier_detection: sometimes\n");
    assert_errors(
        &text,
        &[(
            o,
            "outlier_detection",
            "expected a mapping, `true` or `false`",
        )],
    );
}

#[test]
fn circuit_breaker_limits_and_panic_errors_name_their_key() {
    let text = route_and_cluster(
        "",
        "    circuit_breaker:\n      failure_rate: 0\n      slow_call_rate: 0%\n      window: 10\n      minimum_calls: 11\n      open_duration: 1m\n      max_open_duration: 10s\n      half_open_probes: 0\n    limits: { max_connections: 0, max_pending: 0, max_requests: 0, max_retries: 0 }\n",
    );
    let b = "clusters[0].circuit_breaker";
    let l = "clusters[0].limits";
    assert_errors(
        &text,
        &[
            (
                &format!("{b}.failure_rate"),
                "failure_rate",
                "must be above 0%",
            ),
            (
                &format!("{b}.slow_call_rate"),
                "slow_call_rate",
                "must be above 0%",
            ),
            (
                &format!("{b}.minimum_calls"),
                "minimum_calls",
                "11 calls can never fit in a window of 10 calls",
            ),
            (
                &format!("{b}.max_open_duration"),
                "max_open_duration",
                "`10s` is shorter than `open_duration` (1m)",
            ),
            (
                &format!("{b}.half_open_probes"),
                "half_open_probes",
                "must be at least 1, found 0",
            ),
            (
                &format!("{l}.max_connections"),
                "max_connections",
                "must be at least 1, found 0",
            ),
            (
                &format!("{l}.max_pending"),
                "max_pending",
                "must be at least 1, found 0",
            ),
            (
                &format!("{l}.max_requests"),
                "max_requests",
                "must be at least 1, found 0",
            ),
            (
                &format!("{l}.max_retries"),
                "max_retries",
                "must be at least 1, found 0",
            ),
        ],
    );
    let text = route_and_cluster(
        "",
        "    circuit_breaker: { slow_call_rate: 50 }\n    panic_threshold: 101%\n    panic_mode: panic\n",
    );
    assert_errors(
        &text,
        &[
            (
                &format!("{b}.slow_call_rate"),
                "slow_call_rate",
                "`50` is above 1; write `50%`",
            ),
            (
                "clusters[0].panic_threshold",
                "panic_threshold",
                "`101%` is above 100%",
            ),
            (
                "clusters[0].panic_mode",
                "panic_mode",
                "unknown variant `panic`, expected `spread` or `fail-fast`",
            ),
        ],
    );
    let text = route_and_cluster("", "    circuit_breaker: { window: 0 }\n");
    assert_errors(
        &text,
        &[(
            &format!("{b}.window"),
            "window",
            "a window must hold at least 1 call",
        )],
    );
    let text = route_and_cluster("", "    circuit_breaker: { window: \"30\" }\n");
    assert_errors(
        &text,
        &[(&format!("{b}.window"), "window", "`30` has no unit")],
    );
    let text = route_and_cluster(
        "",
        "    circuit_breaker: { window: 0s, slow_call_duration: 0s }\n",
    );
    assert_errors(
        &text,
        &[
            (
                &format!("{b}.window"),
                "window",
                "must be greater than zero",
            ),
            (
                &format!("{b}.slow_call_duration"),
                "slow_call_duration",
                "must be greater than zero",
            ),
        ],
    );
}

#[test]
fn plugins_need_a_file_unique_names_and_sane_limits() {
    let text = with_listener(
        "plugins:\n  - name: shed\n    path: plugins/shed.wasm\n    on_error: explode\n    isolation: none\n  - name: shed\n    path: plugins/missing.wasm\n    limits: { memory: 512KiB, deadline: 20s }\n    recycle_after: 0\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "plugins[1].path",
        "path: plugins/missing",
        "file `plugins/missing.wasm` not found (looked for `/etc/levee/plugins/missing.wasm`)",
    );
    assert_error(
        &text,
        &e,
        "plugins[0].on_error",
        "on_error",
        "unknown variant `explode`, expected one of `fail-open`, `fail-closed`, `reload`",
    );
    assert_error(
        &text,
        &e,
        "plugins[0].isolation",
        "isolation",
        "unknown variant `none`, expected `pooled` or `per-request`",
    );
    let second = text.rfind("name: shed").unwrap();
    assert_error_at(
        &e,
        "plugins[1].name",
        position_at(&text, second),
        "duplicate plugin name `shed` (first used by plugins[0])",
    );
    assert_error(
        &text,
        &e,
        "plugins[1].limits.memory",
        "memory",
        "must be between 1MiB and 256MiB, found 524288 bytes",
    );
    assert_error(
        &text,
        &e,
        "plugins[1].limits.deadline",
        "deadline",
        "must be between 1ms and 10s, found 20s",
    );
    assert_error(
        &text,
        &e,
        "plugins[1].recycle_after",
        "recycle_after",
        "must be at least 1, found 0",
    );
    assert_eq!(e.0.len(), 7, "{e}");
}

#[test]
fn route_plugins_must_be_defined_once_and_carry_their_config_as_json() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    plugins:\n      - { name: shed, config: [1, \"two\", { three: 3.5 }] }\n      - { name: nope }\n      - { name: shed }\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n\
         plugins:\n  - { name: shed, path: plugins/shed.wasm }\n  - { name: audit, path: /opt/audit.wasm }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].plugins[1].name",
        "name: nope",
        "no plugin named `nope` (defined: `shed`, `audit`)",
    );
    assert_error_at(
        &e,
        "routes[0].plugins[2].name",
        position_at(&text, text.rfind("name: shed }").unwrap()),
        "plugin `shed` is already listed at routes[0].plugins[0]",
    );
    assert_eq!(e.0.len(), 2, "{e}");

    let fine = text.replace("      - { name: nope }\n      - { name: shed }\n", "");
    let config = ok(&fine);
    assert_eq!(
        config.routes[0].plugins,
        vec![RoutePlugin {
            name: "shed".into(),
            config: r#"[1,"two",{"three":3.5}]"#.into(),
            public_config: Vec::new(),
            request_headers: None,
            response_headers: None,
        }]
    );

    let bad_names = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    plugins:\n      - { name: shed, request_headers: [x-ok, \"bad name\"], response_headers: [\"x:y\"] }\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n\
         plugins:\n  - { name: shed, path: plugins/shed.wasm }\n",
    );
    assert_errors(
        &bad_names,
        &[
            (
                "routes[0].plugins[0].request_headers[1]",
                "\"bad name\"",
                "`bad name` is not a valid header name",
            ),
            (
                "routes[0].plugins[0].response_headers[0]",
                "\"x:y\"",
                "`x:y` is not a valid header name",
            ),
        ],
    );

    let undefined = route_and_cluster("    plugins: [ { name: shed } ]\n", "");
    assert_errors(
        &undefined,
        &[(
            "routes[0].plugins[0].name",
            "name: shed",
            "no plugin named `shed` (no plugins are defined in the top-level `plugins`)",
        )],
    );
}

#[test]
fn plugin_config_values_serialize_redacted_but_for_the_public_keys() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    plugins:\n      - { name: shed, config: { api_key: s3cret, region: eu }, public_config: [region] }\n      - { name: audit, config: [s3cret] }\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n\
         plugins:\n  - { name: shed, path: plugins/shed.wasm }\n  - { name: audit, path: /opt/audit.wasm }\n",
    );
    let config = ok(&text);
    // `init` still gets the whole config.
    assert_eq!(
        config.routes[0].plugins[0].config,
        r#"{"api_key":"s3cret","region":"eu"}"#
    );
    let shown = serde_json::to_value(&config.routes[0].plugins).unwrap();
    assert_eq!(
        shown[0]["config"],
        r#"{"api_key":"<redacted>","region":"eu"}"#
    );
    assert_eq!(shown[1]["config"], r#""<redacted>""#);

    let typo = text.replace("public_config: [region]", "public_config: [regoin]");
    assert_errors(
        &typo,
        &[(
            "routes[0].plugins[0].public_config[0]",
            "regoin",
            "`regoin` is not a key of this plugin's `config`",
        )],
    );
}

#[test]
fn a_route_naming_a_broken_plugin_reports_only_the_plugin_error() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    plugins: [ { name: shed } ]\n\
         clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n\
         plugins:\n  - { name: shed, path: plugins/shed.wasm, isolation: sometimes }\n",
    );
    assert_errors(
        &text,
        &[(
            "plugins[0].isolation",
            "isolation",
            "unknown variant `sometimes`",
        )],
    );
}

#[test]
fn cache_entry_may_not_exceed_the_cache() {
    let text = with_listener("cache:\n  max_size: 1MiB\n  max_entry_size: 2MiB\n");
    assert_errors(
        &text,
        &[(
            "cache.max_entry_size",
            "max_entry_size",
            "2097152 bytes is more than `max_size` (1048576 bytes)",
        )],
    );
    let text = with_listener("cache: { max_size: lots }\n");
    assert_errors(
        &text,
        &[("cache.max_size", "max_size", "`lots` is not a size")],
    );
}

#[test]
fn every_new_key_is_checked_in_the_same_run_as_the_old_ones() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: missing\n    retry: { attempts: 0 }\n    fallback: { stale: { max_age: 0s } }\n    plugins: [ { name: ghost } ]\n\
         clusters:\n  - name: c\n    endpoints: [ { address: 127.0.0.1:0 } ]\n    health_check: { healthy_threshold: 0 }\n    limits: { max_retries: 0 }\n\
         cache: { max_entry_size: 1GiB }\n",
    );
    let e = errors(&text);
    let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "routes[0].cluster",
            "routes[0].retry.attempts",
            "routes[0].fallback.stale.max_age",
            "routes[0].plugins[0].name",
            "clusters[0].endpoints[0].address",
            "clusters[0].health_check.healthy_threshold",
            "clusters[0].limits.max_retries",
            "cache.max_entry_size",
        ],
        "{e}"
    );
    for error in &e.0 {
        assert!(
            error.to_string().starts_with(&format!(
                "{FILE}:{}:{}: {}: ",
                error.line, error.column, error.key
            )),
            "{error}"
        );
    }
}

#[test]
fn unknown_keys_are_errors_at_the_key() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    timout: 5s\nclusters: []\nlogs: {}\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].timout",
        "timout",
        "unknown field `timout`",
    );
    assert_error(&text, &e, "logs", "logs", "unknown key `logs`");
}

#[test]
fn one_file_with_several_problems_reports_all_of_them_in_order() {
    let text = "listeners:\n  - name: a\n    address: nowhere\n  - name: b\n    address: 127.0.0.1:1\n    limits: { max_headers: many }\n\
                routes:\n  - { name: r1, cluster: missing }\n  - { name: r2, cluster: c, timeout: 5 }\n\
                clusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1, weight: 500 } ] }\n\
                log: { level: chatty }\n";
    let e = errors(text);
    assert_error(
        text,
        &e,
        "listeners[0].address",
        "address: nowhere",
        "not an `IP:port`",
    );
    assert_error(
        text,
        &e,
        "listeners[1].limits.max_headers",
        "max_headers",
        "invalid type",
    );
    assert_error(
        text,
        &e,
        "routes[0].cluster",
        "cluster: missing",
        "no cluster named `missing`",
    );
    assert_error(text, &e, "routes[1].timeout", "timeout: 5", "has no unit");
    assert_error(
        text,
        &e,
        "clusters[0].endpoints[0].weight",
        "weight: 500",
        "between 1 and 128",
    );
    assert_error(text, &e, "log.level", "level: chatty", "not a log level");
    assert_eq!(e.0.len(), 6, "{e}");
    let lines: Vec<usize> = e.0.iter().map(|e| e.line).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "sorted by position: {lines:?}"
    );
    assert_eq!(e.to_string().lines().count(), 6);
    assert!(
        e.to_string()
            .starts_with("/etc/levee/levee.yaml:3:5: listeners[0].address: `nowhere`"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_errors_name_their_position() {
    let text = "listeners:\n  - name: a\n    address: [127.0.0.1:80\n";
    let e = errors(text);
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].message.starts_with("invalid YAML"), "{e}");
    assert!(e.0[0].line >= 3, "{e}");
}

#[test]
fn empty_and_listenerless_files_are_errors() {
    assert!(errors("").0[0].message.contains("file is empty"));
    assert!(
        errors("# just a comment\n").0[0]
            .message
            .contains("file is empty")
    );
    let e = errors("log: { level: info }\n");
    assert!(e.0[0].message.contains("missing key `listeners`"), "{e}");
    let e = errors("listeners: []\n");
    assert_error(
        "listeners: []\n",
        &e,
        "listeners",
        "listeners",
        "at least one listener",
    );
    assert!(
        errors("- a\n- b\n").0[0]
            .message
            .contains("expected a mapping")
    );
}

#[test]
fn sizes_and_durations_reject_bad_units() {
    let text = with_listener(
        "routes:\n  - { name: r, cluster: c, max_body_size: 10mb }\nclusters:\n  - { name: c, endpoints: [ { address: 127.0.0.1:1 } ] }\n",
    );
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "routes[0].max_body_size",
        "max_body_size",
        "not a size",
    );
}

#[test]
fn every_prefix_and_mangling_of_a_valid_file_loads_without_panicking() {
    // A cheap stand-in for fuzzing: truncations and byte flips of a file using every feature.
    // Truncations every few characters and one flip per position (the replacement rotates)
    // keep the run to a few thousand loads; the fuzz target covers the rest.
    let fs = all_files();
    let mut chars: Vec<char> = FULL.chars().collect();
    for end in (0..chars.len()).step_by(4) {
        let text: String = chars[..end].iter().collect();
        if let Err(e) = load_with(&text, &fs) {
            assert!(!e.0.is_empty());
        }
    }
    let replacements = ['{', ':', '-', '"', '\n', '*', '&', '!', '[', ' ', '#'];
    for i in (0..chars.len()).step_by(3) {
        let saved = chars[i];
        chars[i] = replacements[(i / 3) % replacements.len()];
        let text: String = chars.iter().collect();
        if let Err(e) = load_with(&text, &fs) {
            assert!(!e.0.is_empty());
        }
        chars[i] = saved;
    }
}

#[test]
fn json_schema_describes_the_file_and_refuses_unknown_keys() {
    let schema = json_schema();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["required"], serde_json::json!(["listeners"]));
    assert_eq!(schema["additionalProperties"], false);
    for key in [
        "listeners",
        "admin",
        "routes",
        "clusters",
        "shutdown",
        "log",
        "cache",
        "plugins",
    ] {
        assert!(
            schema["properties"].get(key).is_some(),
            "schema lacks `{key}`"
        );
    }
    let text = serde_json::to_string(&schema).unwrap();
    for word in [
        "path_prefix",
        "hash_on",
        "http2_max_pending_resets",
        "merge_slashes",
        "least-request",
        "client_ip",
        "per_try_timeout",
        "upstream-5xx",
        "body_file",
        "requests_per_second",
        "expected_statuses",
        "consecutive_gateway_failure",
        "min_healthy",
        "half_open_probes",
        "max_retries",
        "fail-fast",
        "max_entry_size",
        "recycle_after",
        "per-request",
    ] {
        assert!(text.contains(word), "schema lacks `{word}`");
    }
}

#[test]
fn std_file_system_sees_real_files_only() {
    let dir = std::env::temp_dir();
    assert!(!StdFileSystem.is_file(&dir));
    assert!(!StdFileSystem.is_file(&dir.join("levee-config-no-such-file")));
    assert!(StdFileSystem.is_file(Path::new(env!("CARGO_MANIFEST_PATH"))));
}

#[test]
fn one_item_with_several_broken_keys_reports_each_of_them() {
    let text = "listeners:\n  - name: [a]\n    address: 127.0.0.1:80\n    limits: { max_headers: -1, foo: 1, idle_timeout: 5 }\n    extra: 1\n\
                admin: 5\n";
    let e = errors(text);
    assert_error(
        text,
        &e,
        "listeners[0].name",
        "name",
        "invalid type: list, expected a string",
    );
    assert_error(
        text,
        &e,
        "listeners[0].limits.max_headers",
        "max_headers",
        "invalid value: integer `-1`",
    );
    assert_error(
        text,
        &e,
        "listeners[0].limits.foo",
        "foo",
        "unknown field `foo`",
    );
    assert_error(
        text,
        &e,
        "listeners[0].limits.idle_timeout",
        "idle_timeout",
        "has no unit",
    );
    assert_error(
        text,
        &e,
        "listeners[0].extra",
        "extra",
        "unknown field `extra`",
    );
    assert_error(
        text,
        &e,
        "admin",
        "admin",
        "invalid type: integer `5`, expected a mapping",
    );
    assert_eq!(e.0.len(), 6, "{e}");
}

/// Says every file exists (and is empty): for documentation examples, whose files are
/// illustrative.
struct AnyFile;

impl FileSystem for AnyFile {
    fn is_file(&self, _: &Path) -> bool {
        true
    }

    fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

#[test]
fn every_yaml_example_in_the_config_reference_loads() {
    let doc = include_str!("../../../docs/config.md");
    let mut examples = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let Some((yaml, _)) = block.split_once("```") else {
            panic!("unterminated yaml block");
        };
        if let Err(e) = load_with(yaml, &AnyFile) {
            panic!("docs/config.md example does not load:\n{e}\n---\n{yaml}");
        }
        examples += 1;
    }
    assert!(examples >= 2, "found {examples} examples");
}

#[test]
fn error_output_shown_in_the_config_reference_is_real() {
    let doc = include_str!("../../../docs/config.md");
    let section = doc.split("## Checking a file").nth(1).unwrap();
    let mut blocks = section
        .split("```text\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap());
    let (file, shown) = (blocks.next().unwrap(), blocks.next().unwrap());
    let e = load(
        &Source {
            path: Path::new("levee.yaml"),
            text: file,
        },
        &AnyFile,
    )
    .unwrap_err();
    assert_eq!(format!("{e}\n"), shown);
}

#[test]
fn a_bad_admin_address_is_reported_once() {
    let text = with_listener("admin: { address: \"{admin_port}\" }\n");
    let e = errors(&text);
    assert_error(
        &text,
        &e,
        "admin.address",
        "address: \"{",
        "not an `IP:port` address",
    );
    assert_eq!(e.0.len(), 1, "{e}");
}

#[test]
fn every_example_config_in_deploy_loads() {
    // Referenced files (certificates, tokens) exist only where the example is deployed, so
    // only their existence check is skipped.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/configs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = load(
                &Source {
                    path: &path,
                    text: &text,
                },
                &AnyFile,
            ) {
                panic!("{} does not load:\n{e}", path.display());
            }
        }
    }
}

#[test]
fn zero_send_timeout_and_per_client_cap_name_their_key() {
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:80\n    limits: { send_timeout: 0s, max_connections_per_client: 0 }\n";
    assert_errors(
        text,
        &[
            (
                "listeners[0].limits.max_connections_per_client",
                "max_connections_per_client",
                "must be at least 1, found 0",
            ),
            (
                "listeners[0].limits.send_timeout",
                "send_timeout",
                "must be greater than zero",
            ),
        ],
    );
}
