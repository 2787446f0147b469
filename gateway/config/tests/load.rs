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
    limits:
      header_read_timeout: 5s
      max_header_size: 32KiB
      max_headers: 50
      max_connections: 2000
      idle_timeout: 90s
      http2_max_concurrent_streams: 200
      http2_max_pending_resets: 10
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
  - name: exact
    match: { host: "*.Example.com", path: /healthz }
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
    tls: { sni: API.internal, ca_file: certs/ca.pem }
  - name: web
    lb: maglev
    hash_on: client_ip
    discovery: { dns: "web.internal:8080", refresh: 30s }
  - name: cookie
    lb: ring-hash
    hash_on: { cookie: session }
    endpoints: [ { address: 10.0.0.1:80 } ]
shutdown: { drain_delay: 0s, drain_timeout: 1m }
log: { level: "info,levee=debug", access_log: false }
"#;

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
                }),
                limits: ListenerLimits {
                    header_read_timeout: Duration::from_secs(5),
                    max_header_size: 32 * 1024,
                    max_headers: 50,
                    max_connections: 2000,
                    idle_timeout: Duration::from_secs(90),
                    http2_max_concurrent_streams: 200,
                    http2_max_pending_resets: 10,
                },
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
                    idle_timeout: Duration::from_secs(60),
                    http2_max_concurrent_streams: 100,
                    http2_max_pending_resets: 20,
                },
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
                }),
            },
            defaults_for_cluster(
                "web",
                LbPolicy::Maglev,
                Some(HashOn::ClientIp),
                vec![],
                Some(DnsDiscovery {
                    dns: "web.internal:8080".into(),
                    refresh: Duration::from_secs(30),
                }),
            ),
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
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: certs/site.pem\n          key: certs/site.key\n\
                admin: { token_file: secrets/admin-token }\n\
                clusters:\n  - name: c\n    endpoints: [ { address: 127.0.0.1:1 } ]\n    tls: { sni: a.internal, ca_file: /nowhere/ca.pem }\n";
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
        "ca_file",
        "file `/nowhere/ca.pem` not found",
    );
    assert_eq!(e.0.len(), 4, "{e}");
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

#[test]
fn keys_of_later_work_are_refused_with_a_specific_message() {
    let text = with_listener(
        "routes:\n  - name: r\n    cluster: c\n    retry: { attempts: 3 }\n    fallback: {}\n    plugins: []\n\
         clusters:\n  - name: c\n    endpoints: [ { address: 127.0.0.1:1 } ]\n    health_check: { path: /h }\n    outlier_detection: {}\n    circuit_breaker: {}\n    limits: {}\n\
         plugins: [top]\n",
    );
    let e = errors(&text);
    let msg = |k: &str| format!("`{k}` is not supported by this version of levee yet");
    assert_error(&text, &e, "routes[0].retry", "retry", &msg("retry"));
    assert_error(
        &text,
        &e,
        "routes[0].fallback",
        "fallback",
        &msg("fallback"),
    );
    assert_error(
        &text,
        &e,
        "routes[0].plugins",
        "plugins: []",
        &msg("plugins"),
    );
    assert_error(
        &text,
        &e,
        "clusters[0].health_check",
        "health_check",
        &msg("health_check"),
    );
    assert_error(
        &text,
        &e,
        "clusters[0].outlier_detection",
        "outlier",
        &msg("outlier_detection"),
    );
    assert_error(
        &text,
        &e,
        "clusters[0].circuit_breaker",
        "circuit",
        &msg("circuit_breaker"),
    );
    assert_error(
        &text,
        &e,
        "clusters[0].limits",
        "limits: {}",
        &msg("limits"),
    );
    assert_error(&text, &e, "plugins", "plugins: [top]", &msg("plugins"));
    assert_eq!(e.0.len(), 8, "{e}");
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
    let fs = all_files();
    let mut chars: Vec<char> = FULL.chars().collect();
    for end in 0..chars.len() {
        let text: String = chars[..end].iter().collect();
        if let Err(e) = load_with(&text, &fs) {
            assert!(!e.0.is_empty());
        }
    }
    for i in (0..chars.len()).step_by(3) {
        let saved = chars[i];
        for replacement in ['{', ':', '-', '"', '\n', '*', '&', '!'] {
            chars[i] = replacement;
            let text: String = chars.iter().collect();
            if let Err(e) = load_with(&text, &fs) {
                assert!(!e.0.is_empty());
            }
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
        "least-request",
        "client_ip",
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

/// Says every file exists: for documentation examples, whose files are illustrative.
struct AnyFile;

impl FileSystem for AnyFile {
    fn is_file(&self, _: &Path) -> bool {
        true
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
