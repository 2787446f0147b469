//! Fuzzes `levee::route::Router::route` against a fixed route table. Routing must never panic,
//! and the route it picks must be the one the documented precedence (`docs/config.md`, "Route
//! precedence") picks, computed by `levee_fuzz::reference` with one plain sort over every route.
//!
//! Input, split on `\n`: host, path, method, then one header per line as `name:value` (a line
//! without `:` is a header with an empty value). Invalid methods fall back to `GET`; invalid
//! header names or values are skipped. Each input is routed with its host and without one.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use levee::route::Router;
use levee_config::{HeaderMatch, HostMatch, PathMatch, Route, RouteMatch};
use levee_fuzz::reference;
use libfuzzer_sys::fuzz_target;

/// The table: every kind of host, path and condition, with ties that only file order breaks.
fn routes() -> Vec<Route> {
    let exact = |h: &str| Some(HostMatch::Exact(h.into()));
    let suffix = |s: &str| Some(HostMatch::Suffix(s.into()));
    let prefix = |p: &str| PathMatch::Prefix(p.into());
    let path = |p: &str| PathMatch::Exact(p.into());
    let header = |name: &str, value: Option<&str>| HeaderMatch {
        name: name.into(),
        value: value.map(Into::into),
    };
    let route = |name: &str, host, path, methods: &[&str], headers| Route {
        name: name.into(),
        matcher: RouteMatch {
            host,
            path,
            methods: methods.iter().map(|m| (*m).into()).collect(),
            headers,
        },
        cluster: format!("c-{name}"),
        timeout: Duration::from_secs(15),
        max_body_size: None,
        retry: None,
        fallback: None,
        rate_limit: None,
        fault: None,
        plugins: Vec::new(),
    };
    vec![
        route("any-root", None, prefix("/"), &[], vec![]),
        route("any-api", None, prefix("/api/"), &["GET", "post"], vec![]),
        route(
            "any-api-canary",
            None,
            prefix("/api/"),
            &[],
            vec![header("x-env", Some("canary"))],
        ),
        route("any-health", None, path("/healthz"), &[], vec![]),
        route("any-health-tie", None, path("/healthz"), &[], vec![]),
        route(
            "exact",
            exact("api.example.com"),
            prefix("/v1/"),
            &[],
            vec![],
        ),
        route(
            "exact-debug",
            exact("api.example.com"),
            prefix("/v1/"),
            &["DELETE"],
            vec![header("x-debug", None)],
        ),
        route(
            "exact-root",
            exact("api.example.com"),
            path("/"),
            &[],
            vec![],
        ),
        route("wild", suffix("example.com"), prefix("/"), &[], vec![]),
        route(
            "wild-eu",
            suffix("eu.example.com"),
            prefix("/"),
            &["PUT"],
            vec![],
        ),
        route(
            "wild-eu-any",
            suffix("eu.example.com"),
            prefix("/x"),
            &[],
            vec![],
        ),
        route("ipv4", exact("127.0.0.1"), prefix("/"), &[], vec![]),
        route(
            "ipv6",
            exact("[::1]"),
            prefix("/"),
            &[],
            vec![header("x-a", Some("1")), header("x-b", None)],
        ),
        route(
            "trailing-dot",
            exact("dot.example.org."),
            prefix("/"),
            &[],
            vec![],
        ),
        route(
            "upper",
            exact("Upper.Example.org"),
            prefix("/"),
            &[],
            vec![],
        ),
        // Not reachable through a validated config; such a route must never match.
        route("broken-method", None, prefix("/"), &["BAD METHOD"], vec![]),
        route(
            "broken-header",
            None,
            prefix("/"),
            &[],
            vec![header("bad name", None)],
        ),
    ]
}

static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(routes);
static ROUTER: LazyLock<Router> = LazyLock::new(|| Router::new(&ROUTES));

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let host = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let path = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let method = Method::from_bytes(lines.next().unwrap_or_default()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    for host in [Some(&*host), None] {
        let got = ROUTER
            .route(host, &path, &method, &headers)
            .map(|e| e.name.to_string());
        let want = reference(&ROUTES, host, &path, &method, &headers).map(|r| r.name.clone());
        assert_eq!(
            got, want,
            "host {host:?} path {path:?} method {method} headers {headers:?}"
        );
    }
});
