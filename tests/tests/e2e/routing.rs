//! Routing and balancing end to end: route precedence (host, path, conditions), sticky
//! consistent hashing, weighted round-robin, and upstream connection reuse.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use levee_tests::client::{self, Reply};
use levee_tests::{Server, TestGateway, body, bounded};

async fn send(gateway: &TestGateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(gateway.url("public", path)).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body::empty()).expect("request");
    client::send(&client::http1(), req)
        .await
        .expect("request through the gateway")
}

/// Which upstream answered (its `x-upstream` name), or the gateway error kind.
fn served_by(reply: &Reply) -> String {
    match reply.header("x-upstream") {
        Some(name) => name.to_string(),
        None => format!("gateway:{}", reply.error_kind().unwrap_or("?")),
    }
}

/// Host, path, extra headers, and the upstream expected to answer.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

fn listener_and_admin() -> String {
    "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n"
        .to_string()
}

fn cluster(name: &str, addr: SocketAddr) -> String {
    format!("  - name: {name}\n    endpoints:\n      - address: {addr}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_documented_precedence() {
    bounded(async {
        let names = [
            "exact-host",
            "wildcard",
            "exact-path",
            "long-prefix",
            "with-header",
            "fallback",
        ];
        let mut upstreams = Vec::new();
        for name in names {
            upstreams.push(Server::http1().name(name).run().await);
        }
        // File order is the reverse of precedence, so file order alone cannot pass this test.
        let mut yaml = listener_and_admin();
        yaml.push_str(
            "routes:
  - name: fallback
    match: { path_prefix: / }
    cluster: fallback
  - name: with-header
    match: { path_prefix: /, headers: [ { name: x-canary, value: \"yes\" } ] }
    cluster: with-header
  - name: long-prefix
    match: { path_prefix: /api/v2/ }
    cluster: long-prefix
  - name: exact-path
    match: { path: /api/v2/status }
    cluster: exact-path
  - name: wildcard
    match: { host: \"*.example.com\" }
    cluster: wildcard
  - name: exact-host
    match: { host: api.example.com }
    cluster: exact-host
clusters:
",
        );
        for (name, upstream) in names.iter().zip(&upstreams) {
            yaml.push_str(&cluster(name, upstream.addr()));
        }
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let cases: &[Case] = &[
            ("api.example.com", "/api/v2/status", &[], "exact-host"),
            ("API.Example.com:8080", "/", &[], "exact-host"),
            ("www.example.com", "/api/v2/status", &[], "wildcard"),
            ("example.com", "/api/v2/status", &[], "exact-path"),
            ("other.test", "/api/v2/status?verbose=1", &[], "exact-path"),
            ("other.test", "/api/v2/users", &[], "long-prefix"),
            (
                "other.test",
                "/api/v1/users",
                &[("x-canary", "yes")],
                "with-header",
            ),
            (
                "other.test",
                "/api/v1/users",
                &[("x-canary", "no")],
                "fallback",
            ),
            ("other.test", "/", &[], "fallback"),
        ];
        for (host, path, headers, expected) in cases {
            let reply = send(&gateway, host, path, headers).await;
            assert_eq!(
                served_by(&reply),
                *expected,
                "host {host} path {path} headers {headers:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_sends_the_same_key_to_the_same_upstream() {
    bounded(async {
        let a = Server::http1().name("a").run().await;
        let b = Server::http1().name("b").run().await;
        let yaml = format!(
            "{}routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: sticky
clusters:
  - name: sticky
    lb: ring-hash
    hash_on: {{ header: x-user }}
    endpoints:
      - address: {}
      - address: {}
",
            listener_and_admin(),
            a.addr(),
            b.addr()
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();

        for user in ["alice", "bob", "carol"] {
            let first = served_by(&send(&gateway, "x", "/", &[("x-user", user)]).await);
            for _ in 0..9 {
                let again = served_by(&send(&gateway, "x", "/", &[("x-user", user)]).await);
                assert_eq!(again, first, "user {user} moved between upstreams");
            }
        }
        // Many keys spread over both endpoints.
        for i in 0..40 {
            let user = format!("user-{i}");
            send(&gateway, "x", "/", &[("x-user", user.as_str())]).await;
        }
        assert!(
            a.requests() > 0 && b.requests() > 0,
            "a {} b {}",
            a.requests(),
            b.requests()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    bounded(async {
        let light = Server::http1().name("light").run().await;
        let heavy = Server::http1().name("heavy").run().await;
        let yaml = format!(
            "{}routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: weighted
clusters:
  - name: weighted
    lb: round-robin
    endpoints:
      - {{ address: {}, weight: 1 }}
      - {{ address: {}, weight: 3 }}
",
            listener_and_admin(),
            light.addr(),
            heavy.addr()
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();

        for _ in 0..40 {
            assert_eq!(send(&gateway, "x", "/", &[]).await.status, StatusCode::OK);
        }

        // Smooth weighted round-robin gives exactly 10/30; allow slack for implementations
        // that keep per-worker state.
        assert!(
            (5..=15).contains(&light.requests()),
            "light got {}",
            light.requests()
        );
        assert!(
            (25..=35).contains(&heavy.requests()),
            "heavy got {}",
            heavy.requests()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_upstream_connections() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&levee_tests::harness::simple_config(&[upstream.addr()]))
            .await
            .unwrap();
        let http = client::http1();

        for _ in 0..20 {
            let reply = client::get(&http, &gateway.url("public", "/"))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }

        assert_eq!(upstream.requests(), 20);
        assert!(
            upstream.connections() <= 2,
            "{} upstream connections for 20 sequential requests",
            upstream.connections()
        );
    })
    .await;
}

/// Issue 14: routing saw the raw path, so these took the broader `/api` route around the
/// rate limit of `/api/login`, and the upstream got them as written.
const LOGIN_BYPASSES: [&str; 5] = [
    "/api/x/../login",
    "/api/%6cogin",
    "/api//login",
    "/api/./login",
    "/api/x/%2e%2e/login",
];

fn login_config(login: SocketAddr, api: SocketAddr, path_normalization: &str) -> String {
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
{path_normalization}admin:
  address: 127.0.0.1:0
routes:
  - name: login
    match: {{ path_prefix: /api/login }}
    cluster: login
    rate_limit: {{ requests_per_second: 0.01, burst: 1 }}
  - name: api
    match: {{ path_prefix: /api }}
    cluster: api
clusters:
{}{}",
        cluster("login", login),
        cluster("api", api)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_normal_paths_take_the_route_of_their_normal_form() {
    bounded(async {
        let login = Server::http1().name("login").run().await;
        let api = Server::http1().name("api").run().await;
        let yaml = login_config(login.addr(), api.addr(), "");
        let gateway = TestGateway::start(&yaml).await.unwrap();

        // The one token of the login route goes to the first bypass; the rest are limited.
        for (i, path) in LOGIN_BYPASSES.iter().enumerate() {
            let reply = send(&gateway, "example.com", &format!("{path}?a=%2e%2E"), &[]).await;
            let expected = if i == 0 {
                "login"
            } else {
                "gateway:rate-limited"
            };
            assert_eq!(served_by(&reply), expected, "{path}: {}", reply.text());
        }
        assert_eq!(api.requests(), 0, "no bypass took the broader route");
        let seen = login.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].uri, "/api/login?a=%2e%2E",
            "normal path, query as sent"
        );

        // A path that cannot be normalised safely is refused.
        let reply = send(&gateway, "example.com", "/api/%00login", &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_action_answers_400_to_non_normal_paths() {
    bounded(async {
        let login = Server::http1().name("login").run().await;
        let api = Server::http1().name("api").run().await;
        let option = "    path_normalization: { action: reject }\n";
        let yaml = login_config(login.addr(), api.addr(), option);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        for path in LOGIN_BYPASSES {
            let reply = send(&gateway, "example.com", path, &[]).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                reply.text()
            );
        }
        assert_eq!(login.requests() + api.requests(), 0);

        // A normal path is untouched.
        let reply = send(&gateway, "example.com", "/api/login", &[]).await;
        assert_eq!(served_by(&reply), "login", "{}", reply.text());
    })
    .await;
}
