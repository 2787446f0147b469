//! Wasm policy plugins through the real gateway (issue 4): every example plugin end to end,
//! misbehaving plugins contained by their `on_error` policy and breaker, hot swap of a `.wasm`
//! under load, and `on-upstream-failure` for each decision and each failure kind the host
//! produces.
//!
//! The plugins are the real components, built once per test process (`levee_tests::plugins`),
//! and every upstream is a real loopback server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{Request, StatusCode};
use levee_tests::body::empty;
use levee_tests::chaos::{
    ChaosUpstream, ClusterSpec, Load, Mode, RouteSpec, cluster, config, endpoint_view,
    force_breaker, route,
};
use levee_tests::client::{self, Reply, metric_sum};
use levee_tests::harness::CONFIG_FILE;
use levee_tests::plugins::{
    PluginSpec, PluginView, install, plugin, plugin_view, polyglot_wasm, route_plugins, rust_wasm,
    with_plugins,
};
use levee_tests::{
    GatewayProcess, Server, TRIES, TempDir, TestGateway, bounded, closed_port_addr, eventually,
    levee_bin,
};

/// The page static-fallback serves when its config gives none.
const MAINTENANCE: &str = "We'll be right back";

// === helpers ===

/// Starts a gateway on `yaml` with file watching on, after copying each `(file, source)`
/// component into its config directory.
async fn start(yaml: &str, wasm: &[(&str, PathBuf)]) -> TestGateway {
    let dir = TempDir::new();
    for (file, source) in wasm {
        install(&dir, file, source);
    }
    dir.write(CONFIG_FILE, yaml);
    TestGateway::start_in(dir, CONFIG_FILE, true)
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e:#}\nconfig:\n{yaml}"))
}

/// Starts a gateway with `routes` and `clusters` and one plugin per spec, each spec's file
/// being the Rust plugin of the same stem (`trap.wasm` is the `trap` plugin).
async fn start_rust(
    routes: &[RouteSpec],
    clusters: &[ClusterSpec],
    plugins: &[(PluginSpec, &str)],
) -> TestGateway {
    let specs: Vec<PluginSpec> = plugins.iter().map(|(s, _)| s.clone()).collect();
    let yaml = with_plugins(&config(routes, clusters), &specs);
    let wasm: Vec<(String, PathBuf)> = plugins
        .iter()
        .map(|(_, crate_name)| (format!("{crate_name}.wasm"), rust_wasm(crate_name)))
        .collect();
    let wasm: Vec<(&str, PathBuf)> = wasm.iter().map(|(f, p)| (f.as_str(), p.clone())).collect();
    start(&yaml, &wasm).await
}

/// The decider plugin, fail-open, at `decider.wasm`.
fn decider() -> (PluginSpec, &'static str) {
    (plugin("decider", "decider.wasm"), "decider")
}

/// A route key naming the decider with this JSON config.
fn decide(json: &str) -> String {
    route_plugins(&[("decider", json)])
}

async fn view(gateway: &TestGateway, name: &str) -> PluginView {
    plugin_view(gateway.admin(), name)
        .await
        .unwrap_or_else(|| panic!("/plugins shows no plugin {name}"))
}

async fn metrics(gateway: &TestGateway) -> String {
    client::admin_get(gateway.admin(), "/metrics")
        .await
        .expect("GET /metrics")
        .text()
}

async fn admin_json(gateway: &TestGateway, path: &str) -> serde_json::Value {
    client::admin_get(gateway.admin(), path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
}

/// `levee_plugin_counter{plugin, name}`, 0 when absent.
fn plugin_counter(metrics: &str, plugin: &str, name: &str) -> f64 {
    let plugin_label = format!("plugin=\"{plugin}\"");
    let name_label = format!("name=\"{name}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("levee_plugin_counter{"))
        .filter(|l| l.contains(&plugin_label) && l.contains(&name_label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the decider echoed of the failure it was asked about: kind, cluster, attempt, status
/// and circuit.
fn echoed_failure(reply: &Reply) -> [Option<&str>; 5] {
    [
        reply.header("x-failure-kind"),
        reply.header("x-failure-cluster"),
        reply.header("x-failure-attempt"),
        reply.header("x-failure-status"),
        reply.header("x-failure-circuit"),
    ]
}

/// Asserts that plugin `name` has faulted with `kind` at least 5 times (the breaker's
/// threshold) and that its breaker is open, as `/plugins`, `/readyz` and `/metrics` show it.
async fn assert_breaker_open(gateway: &TestGateway, name: &str, kind: &str) {
    let plugin = view(gateway, name).await;
    assert!(plugin.faults(kind) >= 5, "{:?}", plugin.raw);
    assert_eq!(plugin.breaker, "open", "{:?}", plugin.raw);
    assert!(plugin.breaker_opened >= 1, "{:?}", plugin.raw);

    let ready = client::admin_get(gateway.admin(), "/readyz")
        .await
        .expect("GET /readyz");
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "a contained plugin keeps the gateway ready"
    );
    let detail = format!("plugin {name}: breaker Open");
    assert!(ready.text().contains(&detail), "{}", ready.text());

    let metrics = metrics(gateway).await;
    let faults = metrics
        .lines()
        .filter(|l| l.starts_with("levee_plugin_faults_total{"))
        .filter(|l| l.contains(&format!("plugin=\"{name}\"")))
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(faults >= 5.0, "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "levee_plugin_breaker_open",
            &format!("plugin=\"{name}\"")
        ),
        Some(1.0),
        "{metrics}"
    );
}

// === the example plugins ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagger_tags_the_upstream_request_and_the_response() {
    bounded(async {
        let upstream = Server::http1().name("echo").run().await;
        let gateway = start_rust(
            &[route("tagged", "/", "main").with(&route_plugins(&[("tagger", "\"v7\"")]))],
            &[cluster("main", &[upstream.addr()])],
            &[(plugin("tagger", "tagger.wasm"), "tagger")],
        )
        .await;

        let reply = gateway.get("/x").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-plugin-version"), Some("v7"));
        assert_eq!(
            reply.echoed_header("x-plugin-version").as_deref(),
            Some("v7")
        );

        let tagger = view(&gateway, "tagger").await;
        assert_eq!(tagger.calls, 2, "{:?}", tagger.raw);
        assert_eq!(tagger.breaker, "closed");
        assert_eq!(tagger.raw["routes"], serde_json::json!(["tagged"]));
        assert_eq!(
            plugin_counter(&metrics(&gateway).await, "tagger", "requests"),
            1.0
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_passes_its_hooks_only_the_headers_it_names() {
    bounded(async {
        let upstream = Server::http1().name("echo").run().await;
        let tagger = "tagger\n    config: { version: v1, report_headers: true }\n";
        let gateway = start_rust(
            &[
                route("all", "/all/", "main").with(&format!("plugins:\n  - name: {tagger}")),
                route("some", "/some/", "main").with(&format!(
                    "plugins:\n  - name: {tagger}    request_headers: [X-Wanted, x-absent]\n    \
                     response_headers: [content-length]\n"
                )),
                route("none", "/none/", "main").with(&format!(
                    "plugins:\n  - name: {tagger}    request_headers: []\n    response_headers: []\n"
                )),
            ],
            &[cluster("main", &[upstream.addr()])],
            &[(plugin("tagger", "tagger.wasm"), "tagger")],
        )
        .await;
        let sent = [("x-wanted", "1"), ("x-other", "2")];

        let all = gateway.get_with("/all/", &sent).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.text());
        let request_headers = all.header("x-tagger-request-headers").unwrap_or_default();
        for name in ["x-wanted", "x-other", "x-request-id", "x-forwarded-for"] {
            assert!(request_headers.split(',').any(|n| n == name), "{request_headers}");
        }
        let response_headers = all.header("x-tagger-response-headers").unwrap_or_default();
        assert!(response_headers.split(',').count() > 1, "{response_headers}");

        let some = gateway.get_with("/some/", &sent).await;
        assert_eq!(some.status, StatusCode::OK, "{}", some.text());
        assert_eq!(some.header("x-tagger-request-headers"), Some("x-wanted"));
        assert_eq!(some.header("x-tagger-response-headers"), Some("content-length"));
        // The filter limits what the plugin sees, not what is forwarded.
        assert_eq!(some.echoed_header("x-other").as_deref(), Some("2"));

        let none = gateway.get_with("/none/", &sent).await;
        assert_eq!(none.header("x-tagger-request-headers"), Some(""));
        assert_eq!(none.header("x-tagger-response-headers"), Some(""));
        assert_eq!(none.header("x-plugin-version"), Some("v1"));
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_fallback_serves_its_page_when_the_upstream_fails_or_the_circuit_is_open() {
    bounded(async {
        let guarded = ChaosUpstream::start("guarded").await;
        let page = r#"{"html": "<h1>Back soon</h1>", "headers": {"x-brand": "acme"}, "retry_after": 7, "on": ["connect-failure"]}"#;
        let gateway = start_rust(
            &[
                route("down", "/down", "down").with(&route_plugins(&[("maintenance", page)])),
                route("guarded", "/guarded", "guarded")
                    .with(&route_plugins(&[("maintenance", "null")])),
            ],
            &[
                cluster("down", &[closed_port_addr()]),
                cluster("guarded", &[guarded.addr()])
                    .with("circuit_breaker: { open_duration: 5m }")
                    .with("outlier_detection: false"),
            ],
            &[(plugin("maintenance", "static-fallback.wasm"), "static-fallback")],
        )
        .await;

        let reply = gateway.get("/down").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), "<h1>Back soon</h1>");
        assert_eq!(reply.header("retry-after"), Some("7"));
        assert_eq!(reply.header("x-brand"), Some("acme"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.error_kind(), None, "the plugin's page, not the gateway's error");

        assert_eq!(gateway.get("/guarded").await.status, StatusCode::OK);
        let forced = force_breaker(gateway.admin(), "guarded", "open").await;
        assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
        let requests = guarded.requests();
        let reply = gateway.get("/guarded").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.text().contains(MAINTENANCE), "{}", reply.text());
        assert_eq!(reply.header("retry-after"), Some("30"));
        assert_eq!(guarded.requests(), requests, "an open circuit sends nothing");
        assert_eq!(plugin_counter(&metrics(&gateway).await, "maintenance", "served"), 2.0);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_serves_the_last_good_copy_marked_when_the_upstream_fails() {
    bounded(async {
        let upstream = ChaosUpstream::start("origin").await;
        let gateway = start_rust(
            &[
                route("plugin-mode", "/p/", "main")
                    .with(&route_plugins(&[("stale", r#"{"ttl_seconds": 600}"#)])),
                route("host-mode", "/h/", "main")
                    .with(&route_plugins(&[("stale", r#"{"mode": "host"}"#)])),
            ],
            &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            &[(plugin("stale", "serve-stale.wasm"), "serve-stale")],
        )
        .await;

        let fresh = gateway.get("/p/item").await;
        assert_eq!(fresh.status, StatusCode::OK);
        assert_eq!(fresh.header("x-levee-stale"), None);
        let fresh_host = gateway.get("/h/item").await;
        assert_eq!(fresh_host.status, StatusCode::OK);

        upstream.set_mode(Mode::Failing(503));
        let stale = gateway.get("/p/item").await;
        assert_eq!(stale.status, StatusCode::OK, "{}", stale.text());
        assert_eq!(stale.body, fresh.body, "the kept copy, byte for byte");
        assert_eq!(stale.header("x-levee-stale"), Some("plugin"));
        assert_eq!(stale.header("content-type"), Some("text/plain"));
        assert!(stale.header("age").is_some());

        // Host mode: `serve-cached`, rebuilt by the host with every stored header.
        let cached = gateway.get("/h/item").await;
        assert_eq!(cached.status, StatusCode::OK, "{}", cached.text());
        assert_eq!(cached.body, fresh_host.body);
        assert_eq!(cached.header("x-levee-cache"), Some("plugin"));
        assert_eq!(cached.header("x-upstream"), Some("origin"));

        // Nothing was kept for this path: the upstream's failure goes through.
        let never = gateway.get("/p/never").await;
        assert_eq!(never.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(never.header("x-levee-stale"), None);

        // A dead upstream (connect failure) is served the copy too.
        upstream.kill().await;
        let stale = gateway.get("/p/item").await;
        assert_eq!(stale.status, StatusCode::OK, "{}", stale.text());
        assert_eq!(stale.body, fresh.body);

        let metrics = metrics(&gateway).await;
        assert_eq!(plugin_counter(&metrics, "stale", "stored"), 2.0);
        assert_eq!(plugin_counter(&metrics, "stale", "served_stale"), 2.0);
        assert_eq!(plugin_counter(&metrics, "stale", "stale_miss"), 1.0);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

/// What every build of `priority-shedding` does on route `/`: a low-priority request passes
/// while `cluster` is healthy; once its breaker is forced open, low priority is shed (503,
/// `x-levee-shed: priority`, `retry-after: 5`), and a `kept` priority is forwarded and so
/// refused by the open circuit itself. Returns the shed answer.
async fn sheds_low_priority_once_the_circuit_opens(
    gateway: &TestGateway,
    cluster: &str,
    kept: &str,
) -> Reply {
    let low = gateway.get_with("/a", &[("x-priority", "low")]).await;
    assert_eq!(low.status, StatusCode::OK, "no overload, nothing shed");

    force_breaker(gateway.admin(), cluster, "open").await;
    let low = gateway.get_with("/a", &[("x-priority", "low")]).await;
    assert_eq!(
        low.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        low.text()
    );
    assert_eq!(low.header("x-levee-shed"), Some("priority"));
    assert_eq!(low.header("retry-after"), Some("5"));

    let kept = gateway.get_with("/a", &[("x-priority", kept)]).await;
    assert_eq!(kept.header("x-levee-shed"), None);
    assert_eq!(kept.error_kind(), Some("circuit-open"));
    low
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_shedding_sheds_low_priority_while_the_circuit_is_open() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let gateway = start_rust(
            &[route("api", "/", "main")
                .with(&route_plugins(&[("shedder", r#"{"cluster": "main"}"#)]))],
            &[cluster("main", &[upstream.addr()])
                .with("circuit_breaker: { open_duration: 5m }")
                .with("outlier_detection: false")],
            &[(
                plugin("shedder", "priority-shedding.wasm"),
                "priority-shedding",
            )],
        )
        .await;

        sheds_low_priority_once_the_circuit_opens(&gateway, "main", "HIGH").await;
        let none = gateway.get("/a").await;
        assert_eq!(
            none.header("x-levee-shed"),
            Some("priority"),
            "no priority is not kept"
        );
        assert_eq!(
            plugin_counter(&metrics(&gateway).await, "shedder", "shed"),
            2.0
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_shedding_keeps_high_priority_flowing_at_its_in_flight_limit() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let gateway = start_rust(
            &[route("api", "/", "main").with(&route_plugins(&[(
                "shedder",
                r#"{"cluster": "main", "max_in_flight": 1}"#,
            )]))],
            &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            &[(
                plugin("shedder", "priority-shedding.wasm"),
                "priority-shedding",
            )],
        )
        .await;
        let url = gateway.url("public", "/held");

        upstream.hold();
        let first = {
            let url = url.clone();
            tokio::spawn(async move { client::get(&client::http1(), &url).await })
        };
        assert!(eventually(TRIES, || async { upstream.in_flight() == 1 }).await);

        let low = gateway.get_with("/a", &[("x-priority", "low")]).await;
        assert_eq!(low.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(low.header("x-levee-shed"), Some("priority"));

        let high = {
            let request = Request::get(&url)
                .header("x-priority", "high")
                .body(empty())
                .expect("request");
            tokio::spawn(async move { client::send(&client::http1(), request).await })
        };
        assert!(
            eventually(TRIES, || async { upstream.in_flight() == 2 }).await,
            "the high-priority request reached the upstream"
        );
        upstream.release();
        assert_eq!(first.await.unwrap().unwrap().status, StatusCode::OK);
        assert_eq!(high.await.unwrap().unwrap().status, StatusCode::OK);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_route_sends_traffic_to_the_degraded_cluster_while_the_main_one_fails() {
    bounded(async {
        let main = ChaosUpstream::start("main").await;
        let cheap = ChaosUpstream::start("cheap").await;
        let degrade = r#"{"cluster": "main", "degraded": "cheap", "error_rate": 0.5}"#;
        let gateway = start_rust(
            &[route("main", "/", "main").with(&route_plugins(&[("degrade", degrade)]))],
            &[
                cluster("main", &[main.addr()])
                    .with(
                        "circuit_breaker: { open_duration: 5m, minimum_calls: 1000, window: 1000 }",
                    )
                    .with("outlier_detection: false"),
                cluster("cheap", &[cheap.addr()]),
            ],
            &[(plugin("degrade", "degrade-route.wasm"), "degrade-route")],
        )
        .await;

        let reply = gateway.get("/a").await;
        assert_eq!(reply.header("x-upstream"), Some("main"));

        // An open circuit: on-request routes to the degraded cluster; main sees nothing.
        force_breaker(gateway.admin(), "main", "open").await;
        let before = main.requests();
        for _ in 0..3 {
            let reply = gateway.get("/a").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.header("x-upstream"), Some("cheap"));
        }
        assert_eq!(main.requests(), before);
        force_breaker(gateway.admin(), "main", "auto").await;

        // Failures: the first goes to main and is degraded after the failure; once main's
        // error rate is high, requests go to the degraded cluster without trying main.
        main.set_mode(Mode::Failing(503));
        let before = main.requests();
        for _ in 0..10 {
            let reply = gateway.get("/a").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.header("x-upstream"), Some("cheap"));
        }
        let tried_main = main.requests() - before;
        assert!(
            (1..10).contains(&tried_main),
            "main was tried {tried_main} times of 10"
        );
        let metrics = metrics(&gateway).await;
        assert!(plugin_counter(&metrics, "degrade", "degraded_after_failure") >= 1.0);
        assert!(plugin_counter(&metrics, "degrade", "routed_degraded") >= 4.0);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_fallback_in_c_serves_its_branded_page() {
    bounded(async {
        let page = r#"{"brand": "Acme Shop", "retry_after": 120, "headers": {"x-served-by": "maintenance-page"}}"#;
        let yaml = with_plugins(
            &config(
                &[route("shop", "/", "shop").with(&route_plugins(&[("maintenance", page)]))],
                &[cluster("shop", &[closed_port_addr()])],
            ),
            &[plugin("maintenance", "static-fallback-c.wasm")],
        );
        let gateway = start(
            &yaml,
            &[("static-fallback-c.wasm", polyglot_wasm("static-fallback-c"))],
        )
        .await;

        let reply = gateway.get("/cart").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("retry-after"), Some("120"));
        assert_eq!(reply.header("x-served-by"), Some("maintenance-page"));
        assert!(reply.text().contains("Acme Shop"), "{}", reply.text());
        assert_eq!(reply.error_kind(), None);
        assert_eq!(plugin_counter(&metrics(&gateway).await, "maintenance", "served"), 1.0);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_shedding_in_javascript_sheds_low_priority() {
    bounded(async {
        let upstream = ChaosUpstream::start("api").await;
        let yaml = with_plugins(
            &config(
                &[route("api", "/", "api").with(&route_plugins(&[(
                    "shedder",
                    r#"{"keep": ["high", "critical"], "cluster": "api"}"#,
                )]))],
                &[cluster("api", &[upstream.addr()])
                    .with("circuit_breaker: { open_duration: 5m }")
                    .with("outlier_detection: false")],
            ),
            &[plugin("shedder", "priority-shedding-js.wasm").memory("64MiB")],
        );
        let gateway = start(
            &yaml,
            &[(
                "priority-shedding-js.wasm",
                polyglot_wasm("priority-shedding-js"),
            )],
        )
        .await;

        let low = sheds_low_priority_once_the_circuit_opens(&gateway, "api", "critical").await;
        let body = low.json();
        assert_eq!(body["error"], "shed");
        assert_eq!(body["reason"], "circuit-open");
        assert_eq!(
            plugin_counter(&metrics(&gateway).await, "shedder", "shed"),
            1.0
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_in_python_serves_the_kept_copy() {
    bounded(async {
        let upstream = ChaosUpstream::start("origin").await;
        let yaml = with_plugins(
            &config(
                &[route("pages", "/", "main").with(&route_plugins(&[("stale", "null")]))],
                &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            ),
            &[plugin("stale", "serve-stale-py.wasm").memory("64MiB")],
        );
        let gateway = start(
            &yaml,
            &[("serve-stale-py.wasm", polyglot_wasm("serve-stale-py"))],
        )
        .await;

        let fresh = gateway.get("/page").await;
        assert_eq!(fresh.status, StatusCode::OK);
        upstream.set_mode(Mode::Failing(502));
        let stale = gateway.get("/page").await;
        assert_eq!(stale.status, StatusCode::OK, "{}", stale.text());
        assert_eq!(stale.body, fresh.body);
        assert_eq!(stale.header("x-levee-stale"), Some("plugin"));
        assert_eq!(stale.header("content-type"), Some("text/plain"));

        let never = gateway.get("/never").await;
        assert_eq!(never.status, StatusCode::BAD_GATEWAY);
        assert_eq!(never.header("x-levee-stale"), None);
        let metrics = metrics(&gateway).await;
        assert_eq!(plugin_counter(&metrics, "stale", "served_stale"), 1.0);
        assert_eq!(plugin_counter(&metrics, "stale", "stale_miss"), 1.0);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

// === misbehaving plugins ===

/// A gateway with `/bad/` through plugin `bad` (crate `crate_name`, `config`) and `/good/`
/// through no plugin, both to one healthy upstream.
async fn start_bad(
    spec: PluginSpec,
    crate_name: &str,
    config: &str,
    upstream: SocketAddr,
) -> TestGateway {
    start_rust(
        &[
            route("bad", "/bad/", "main").with(&route_plugins(&[("bad", config)])),
            route("good", "/good/", "main"),
        ],
        &[cluster("main", &[upstream]).with("outlier_detection: false")],
        &[(spec, crate_name)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_plugin_fails_open_and_its_breaker_opens() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let gateway = start_bad(plugin("bad", "trap.wasm"), "trap", "null", upstream.addr()).await;

        for _ in 0..8 {
            let reply = gateway.get("/bad/x").await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "fail-open proxies: {}",
                reply.text()
            );
            assert_eq!(reply.header("x-upstream"), Some("main"));
            assert_eq!(gateway.get("/good/x").await.status, StatusCode::OK);
        }

        // Every on-request call traps (the on-response calls in between succeed): the plugin
        // keeps faulting, so its breaker must open and show in `/plugins`, `/readyz` and
        // metrics.
        assert_breaker_open(&gateway, "bad", "trap").await;
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_plugin_fails_closed_with_503_plugin_failed() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let spec = plugin("bad", "trap.wasm").on_error("fail-closed");
        let gateway = start_bad(spec, "trap", r#"{"how": "unreachable"}"#, upstream.addr()).await;

        for _ in 0..7 {
            let reply = gateway.get("/bad/x").await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(reply.error_kind(), Some("plugin-failed"));
            assert_eq!(gateway.get("/good/x").await.status, StatusCode::OK);
        }
        assert_eq!(
            upstream.requests(),
            7,
            "only the good route reached the upstream"
        );
        assert_breaker_open(&gateway, "bad", "trap").await;
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_plugin_with_reload_policy_is_retried_on_a_fresh_instance_and_answers() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let spec = plugin("bad", "trap.wasm").on_error("reload");
        let gateway = start_bad(spec, "trap", "null", upstream.addr()).await;

        for _ in 0..3 {
            let reply = gateway.get("/bad/x").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
        let bad = view(&gateway, "bad").await;
        assert!(bad.reloads >= 1, "{:?}", bad.raw);
        assert!(bad.faults("trap") >= 2, "{:?}", bad.raw);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_breaker_probes_again_and_closes_after_a_good_call() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let gateway = start_bad(
            plugin("bad", "trap.wasm").on_error("fail-closed"),
            "trap",
            r#"{"only_if_header": "x-trap"}"#,
            upstream.addr(),
        )
        .await;

        for _ in 0..5 {
            let reply = gateway.get_with("/bad/x", &[("x-trap", "1")]).await;
            assert_eq!(reply.error_kind(), Some("plugin-failed"));
        }
        assert_eq!(view(&gateway, "bad").await.breaker, "open");
        // While open, even a request the plugin would pass is refused (fail-closed, no wasm
        // runs). After the open period (1s) the next call is the probe; a good one closes it.
        let closed = eventually(TRIES, || async {
            gateway.get("/bad/x").await.status == StatusCode::OK
        })
        .await;
        let bad = view(&gateway, "bad").await;
        assert!(closed, "{:?}", bad.raw);
        assert_eq!(bad.breaker, "closed", "{:?}", bad.raw);
        assert_eq!(bad.faults("trap"), 5, "{:?}", bad.raw);
        assert_eq!(gateway.get("/bad/x").await.status, StatusCode::OK);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_in_on_upstream_failure_leaves_the_declarative_fallback_or_fails_closed() {
    bounded(async {
        let trap = r#"{"hook": "on-upstream-failure"}"#;
        let yaml = with_plugins(
            &config(
                &[
                    route("open", "/open", "down")
                        .with(&route_plugins(&[("trap-open", trap)]))
                        .with("fallback: { response: { status: 503, body: declarative } }"),
                    route("closed", "/closed", "down")
                        .with(&route_plugins(&[("trap-closed", trap)]))
                        .with("fallback: { response: { status: 503, body: declarative } }"),
                ],
                &[cluster("down", &[closed_port_addr()])],
            ),
            &[
                plugin("trap-open", "trap.wasm"),
                plugin("trap-closed", "trap.wasm").on_error("fail-closed"),
            ],
        );
        let gateway = start(&yaml, &[("trap.wasm", rust_wasm("trap"))]).await;

        let open = gateway.get("/open").await;
        assert_eq!(open.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(open.text(), "declarative");
        let closed = gateway.get("/closed").await;
        assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(closed.error_kind(), Some("plugin-failed"));
        assert_eq!(view(&gateway, "trap-open").await.faults("trap"), 1);
        assert_eq!(view(&gateway, "trap-closed").await.faults("trap"), 1);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_plugin_is_stopped_at_its_deadline_and_other_routes_keep_answering() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let yaml = with_plugins(
            &config(
                &[
                    route("open", "/bad/", "main").with(&route_plugins(&[(
                        "spin-open",
                        r#"{"mode": "host-calls"}"#,
                    )])),
                    route("closed", "/closed/", "main")
                        .with(&route_plugins(&[("spin-closed", "null")])),
                    route("good", "/good/", "main"),
                ],
                &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            ),
            &[
                plugin("spin-open", "spin.wasm").deadline("100ms"),
                plugin("spin-closed", "spin.wasm")
                    .deadline("100ms")
                    .on_error("fail-closed"),
            ],
        );
        let gateway = start(&yaml, &[("spin.wasm", rust_wasm("spin"))]).await;

        // Spinning calls run while the good route is used.
        let url = gateway.url("public", "/bad/x");
        let spinning: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { client::get(&client::http1(), &url).await })
            })
            .collect();
        for _ in 0..10 {
            let reply = gateway.get("/good/x").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        for call in spinning {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "fail-open proxies: {}",
                reply.text()
            );
        }
        let closed = gateway.get("/closed/x").await;
        assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(closed.error_kind(), Some("plugin-failed"));

        let open = view(&gateway, "spin-open").await;
        assert_eq!(open.faults("deadline"), 3, "{:?}", open.raw);
        assert_eq!(view(&gateway, "spin-closed").await.faults("deadline"), 1);
        assert_eq!(upstream.requests(), 13);

        // Two more make five deadline overruns in a row: the breaker opens, and later calls
        // skip the plugin.
        for _ in 0..3 {
            assert_eq!(gateway.get("/bad/x").await.status, StatusCode::OK);
        }
        assert_breaker_open(&gateway, "spin-open", "deadline").await;
        gateway.shutdown().await.unwrap();
    })
    .await;
}

/// Issue 14, finding 4: a plugin call used to hold its worker thread for its whole deadline, so
/// two spinning calls on this two-worker runtime (which serves the gateway and the test client
/// alike) stopped every other request until their deadline. Now a call yields at every epoch
/// tick: the other route answers, and `/plugins` too, while both are still spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_plugin_calls_do_not_hold_the_worker_threads_for_their_deadline() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let yaml = with_plugins(
            &config(
                &[
                    route("spin", "/spin/", "main").with(&route_plugins(&[("spin", "null")])),
                    route("good", "/good/", "main"),
                ],
                &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            ),
            &[plugin("spin", "spin.wasm").deadline("3s")],
        );
        let gateway = start(&yaml, &[("spin.wasm", rust_wasm("spin"))]).await;

        let url = gateway.url("public", "/spin/x");
        let spinning: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { client::get(&client::http1(), &url).await })
            })
            .collect();
        // Both calls are in the guest (as `/plugins` counts them) before the other route is
        // asked; with calls that block, `/plugins` itself answered only after their deadline.
        assert!(
            eventually(TRIES, || async { view(&gateway, "spin").await.calls == 2 }).await,
            "the spinning calls never started"
        );
        let reply = gateway.get("/good/x").await;
        assert_eq!(reply.status, StatusCode::OK);
        let during = view(&gateway, "spin").await;
        assert_eq!(
            during.faults("deadline"),
            0,
            "the other route answered only after the spinning calls' deadline: {:?}",
            during.raw
        );
        assert!(spinning.iter().all(|call| !call.is_finished()));

        // The spinning calls still end at their deadline, by the fail-open policy.
        for call in spinning {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
        assert_eq!(view(&gateway, "spin").await.faults("deadline"), 2);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

/// `/config` shows a binding's plugin config with its values redacted (they may be
/// credentials), but for the keys the binding lists in `public_config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_view_redacts_plugin_config_values_but_the_public_ones() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let yaml = with_plugins(
            &config(
                &[route("tagged", "/", "main").with(
                    "plugins:\n  - name: tagger\n    config: { version: v-public-7, header: x-s3cret-42 }\n    public_config: [version]\n",
                )],
                &[cluster("main", &[upstream.addr()])],
            ),
            &[plugin("tagger", "tagger.wasm")],
        );
        let gateway = start(&yaml, &[("tagger.wasm", rust_wasm("tagger"))]).await;
        // The plugin still gets the whole config.
        assert_eq!(gateway.get("/x").await.status, StatusCode::OK);

        let text = client::admin_get(gateway.admin(), "/config")
            .await
            .expect("GET /config")
            .text();
        assert!(!text.contains("x-s3cret-42"), "{text}");
        assert!(text.contains("v-public-7"), "{text}");
        assert!(text.contains(r#"\"header\":\"<redacted>\""#), "{text}");
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_stopped_at_its_memory_cap_and_the_gateway_keeps_answering() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let yaml = with_plugins(
            &config(
                &[
                    route("open", "/bad/", "main").with(&route_plugins(&[("hog-open", "null")])),
                    route("closed", "/closed/", "main")
                        .with(&route_plugins(&[("hog-closed", "null")])),
                    route("good", "/good/", "main"),
                ],
                &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            ),
            &[
                plugin("hog-open", "hog.wasm").memory("16MiB"),
                plugin("hog-closed", "hog.wasm")
                    .memory("16MiB")
                    .on_error("fail-closed"),
            ],
        );
        let gateway = start(&yaml, &[("hog.wasm", rust_wasm("hog"))]).await;

        for _ in 0..3 {
            let reply = gateway.get("/bad/x").await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "fail-open proxies: {}",
                reply.text()
            );
            assert_eq!(gateway.get("/good/x").await.status, StatusCode::OK);
        }
        let closed = gateway.get("/closed/x").await;
        assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(closed.error_kind(), Some("plugin-failed"));

        let open = view(&gateway, "hog-open").await;
        assert_eq!(open.faults("out-of-memory"), 3, "{:?}", open.raw);
        assert_eq!(view(&gateway, "hog-closed").await.total_faults(), 1);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_leaves_the_gateway_process_memory_bounded() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let dir = TempDir::new();
        install(&dir, "hog.wasm", &rust_wasm("hog"));
        let yaml = with_plugins(
            &config(
                &[route("hog", "/", "main")
                    .with(&route_plugins(&[("hog", r#"{"only_if_header": "x-hog"}"#)]))],
                &[cluster("main", &[upstream.addr()]).with("outlier_detection: false")],
            ),
            &[plugin("hog", "hog.wasm").memory("32MiB")],
        );
        let config_path = dir.write(CONFIG_FILE, &yaml);
        let mut process = GatewayProcess::spawn(levee_bin!(), &config_path, &["public"], &[])
            .await
            .unwrap();
        let url = client::url(process.listener_addr("public"), "/x");
        let http = client::http1();
        let hog = || {
            let request = Request::get(&url)
                .header("x-hog", "1")
                .body(empty())
                .expect("request");
            client::send(&http, request)
        };

        // Warm up: instances, pools and allocator arenas reach their steady size.
        for _ in 0..3 {
            assert_eq!(hog().await.unwrap().status, StatusCode::OK);
            assert_eq!(
                client::get(&http, &url).await.unwrap().status,
                StatusCode::OK
            );
        }
        let before = process.rss_bytes().unwrap();
        // Each hog call fills its 32 MiB; the good call between keeps the plugin breaker
        // closed, so every hog call really runs. Kept memory would grow by 640 MiB.
        for _ in 0..20 {
            assert_eq!(hog().await.unwrap().status, StatusCode::OK);
            assert_eq!(
                client::get(&http, &url).await.unwrap().status,
                StatusCode::OK
            );
        }
        let after = process.rss_bytes().unwrap();
        assert!(process.is_running(), "{}", process.diagnose());
        let growth = after.saturating_sub(before);
        assert!(
            growth < 160 << 20,
            "RSS grew by {} MiB ({} -> {} MiB)",
            growth >> 20,
            before >> 20,
            after >> 20
        );
        let hog_view = plugin_view(process.admin_addr(), "hog").await.unwrap();
        assert!(hog_view.total_faults() >= 23, "{:?}", hog_view.raw);
        assert_eq!(hog_view.breaker, "closed", "{:?}", hog_view.raw);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_headers_from_a_plugin_are_dropped_and_the_rest_applies() {
    bounded(async {
        let upstream = Server::http1().name("echo").run().await;
        let yaml = with_plugins(
            &config(
                &[
                    route("mutation", "/mutation", "main").with(&route_plugins(&[("bad", "null")])),
                    route("respond", "/respond", "main")
                        .with(&route_plugins(&[("bad", r#"{"mode": "respond"}"#)])),
                    route("status-open", "/status-open", "main")
                        .with(&route_plugins(&[("bad", r#"{"mode": "bad-status"}"#)])),
                    route("status-closed", "/status-closed", "main")
                        .with(&route_plugins(&[("strict", r#"{"mode": "bad-status"}"#)])),
                    route("unknown", "/unknown", "main")
                        .with(&route_plugins(&[("bad", r#"{"mode": "unknown-cluster"}"#)])),
                ],
                &[cluster("main", &[upstream.addr()])],
            ),
            &[
                plugin("bad", "bad-headers.wasm"),
                plugin("strict", "bad-headers.wasm").on_error("fail-closed"),
            ],
        );
        let gateway = start(&yaml, &[("bad-headers.wasm", rust_wasm("bad-headers"))]).await;

        let reply = gateway.get("/mutation").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-good"), Some("yes"));
        assert_eq!(reply.header("x-bad-value"), None);
        assert_eq!(reply.header("x-injected"), None);
        assert_eq!(reply.echoed_header("x-good").as_deref(), Some("yes"));
        assert_eq!(reply.echoed_header("x-bad-value"), None);
        assert_eq!(reply.echoed_header("x-injected"), None);

        let reply = gateway.get("/respond").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "bad-headers plugin\n");
        assert_eq!(reply.header("x-good"), Some("yes"));
        assert_eq!(reply.header("x-bad-value"), None);
        assert_eq!(reply.header("x-injected"), None);

        let reply = gateway.get("/status-open").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "status 42 fails open: proxied"
        );
        assert!(reply.json()["headers"].is_object(), "the upstream's echo");
        let reply = gateway.get("/status-closed").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error_kind(), Some("plugin-failed"));

        let reply = gateway.get("/unknown").await;
        assert_eq!(reply.status, StatusCode::OK, "the route's cluster serves");

        let bad = view(&gateway, "bad").await;
        assert!(bad.invalid_output >= 3, "{:?}", bad.raw);
        assert_eq!(bad.faults("invalid-output"), 1, "{:?}", bad.raw);
        assert_eq!(view(&gateway, "strict").await.faults("invalid-output"), 1);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

// === hot swap ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_wasm_file_under_load_swaps_the_plugin_without_failing_a_request() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let tagger = std::fs::read(rust_wasm("tagger")).unwrap();
        let fallback = std::fs::read(rust_wasm("static-fallback")).unwrap();
        let yaml = with_plugins(
            &config(
                &[
                    route("ok", "/ok", "main").with(&route_plugins(&[("p", "null")])),
                    route("down", "/down", "down").with(&route_plugins(&[("p", "null")])),
                ],
                &[
                    cluster("main", &[upstream.addr()]).with("outlier_detection: false"),
                    cluster("down", &[closed_port_addr()]),
                ],
            ),
            &[plugin("p", "p.wasm")],
        );
        let gateway = start(&yaml, &[("p.wasm", rust_wasm("tagger"))]).await;
        let admin = gateway.admin();

        assert_eq!(
            gateway.get("/ok").await.header("x-plugin-version"),
            Some("unset")
        );
        assert_eq!(gateway.get("/down").await.status, StatusCode::BAD_GATEWAY);
        let tagger_version = view(&gateway, "p").await.version;

        let load = Load::new(gateway.url("public", "/ok"))
            .clients(3)
            .pace(Duration::from_millis(5))
            .start();
        assert!(load.wait_for(20).await);

        // tagger -> static-fallback: no more tags, and a maintenance page for failures.
        gateway.dir.write_atomic("p.wasm", &fallback);
        let swapped = eventually(TRIES, || async {
            plugin_view(admin, "p")
                .await
                .is_some_and(|p| p.version != tagger_version)
        })
        .await;
        assert!(swapped, "{:?}", view(&gateway, "p").await.raw);
        assert_eq!(gateway.get("/ok").await.header("x-plugin-version"), None);
        let down = gateway.get("/down").await;
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.text().contains(MAINTENANCE), "{}", down.text());
        assert!(load.wait_for(20).await);

        // And back.
        gateway.dir.write_atomic("p.wasm", &tagger);
        let back = eventually(TRIES, || async {
            plugin_view(admin, "p")
                .await
                .is_some_and(|p| p.version == tagger_version)
        })
        .await;
        assert!(back, "{:?}", view(&gateway, "p").await.raw);
        assert_eq!(
            gateway.get("/ok").await.header("x-plugin-version"),
            Some("unset")
        );
        assert_eq!(gateway.get("/down").await.status, StatusCode::BAD_GATEWAY);
        assert!(load.wait_for(20).await);

        // Garbage is rejected; the tagger keeps serving.
        let failures = admin_json(&gateway, "/config").await["reload"]["failures"]
            .as_u64()
            .unwrap_or(0);
        gateway
            .dir
            .write_atomic("p.wasm", b"this is not a wasm component");
        let rejected = eventually(TRIES, || async {
            admin_json(&gateway, "/config").await["reload"]["failures"]
                .as_u64()
                .unwrap_or(0)
                > failures
        })
        .await;
        let reload = admin_json(&gateway, "/config").await["reload"].clone();
        assert!(rejected, "{reload}");
        assert_eq!(reload["last_ok"], false, "{reload}");
        assert!(
            reload["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("p.wasm")),
            "{reload}"
        );
        let metrics = metrics(&gateway).await;
        assert!(
            metric_sum(&metrics, "levee_config_reloads_total", "result=\"error\"").unwrap_or(0.0)
                >= 1.0,
            "{metrics}"
        );
        assert_eq!(view(&gateway, "p").await.version, tagger_version);
        assert_eq!(
            gateway.get("/ok").await.header("x-plugin-version"),
            Some("unset")
        );
        assert!(load.wait_for(20).await);

        let outcomes = load.stop().await;
        assert_eq!(outcomes.failures(), 0, "{outcomes:?}");
        assert!(outcomes.total >= 80, "{outcomes:?}");
        gateway.shutdown().await.unwrap();
    })
    .await;
}

// === on-upstream-failure: each failure kind ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sees_connect_failure_reset_timeout_and_upstream_5xx() {
    bounded(async {
        let reset = ChaosUpstream::start_in("reset", Mode::Reset).await;
        let hole = ChaosUpstream::start_in("hole", Mode::BlackHole).await;
        let failing = ChaosUpstream::start_in("failing", Mode::Failing(503)).await;
        let serve = decide(r#"{"decision": "serve"}"#);
        let gateway = start_rust(
            &[
                route("connect", "/connect", "nobody").with(&serve),
                route("reset", "/reset", "reset").with(&serve),
                route("timeout", "/timeout", "hole")
                    .with(&serve)
                    .with("timeout: 300ms"),
                route("5xx", "/5xx", "failing").with(&serve),
            ],
            &[
                cluster("nobody", &[closed_port_addr()]),
                cluster("reset", &[reset.addr()]),
                cluster("hole", &[hole.addr()]),
                cluster("failing", &[failing.addr()]),
            ],
            &[decider()],
        )
        .await;

        let cases = [
            ("/connect", "connect-failure", "nobody", "none"),
            ("/reset", "reset", "reset", "none"),
            ("/timeout", "timeout", "hole", "none"),
            ("/5xx", "upstream-5xx", "failing", "503"),
        ];
        for (path, kind, cluster, status) in cases {
            let reply = gateway.get(path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
            assert_eq!(reply.header("x-decider"), Some("serve"), "{path}");
            assert_eq!(
                echoed_failure(&reply),
                [
                    Some(kind),
                    Some(cluster),
                    Some("1"),
                    Some(status),
                    Some("closed")
                ],
                "{path}"
            );
        }
        assert_eq!(reset.requests(), 1);
        assert_eq!(failing.requests(), 1);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sees_circuit_open_no_healthy_endpoint_and_overloaded() {
    bounded(async {
        let guarded = ChaosUpstream::start("guarded").await;
        let unchecked = ChaosUpstream::start("unhealthy").await;
        unchecked.set_healthz(Some(false));
        let busy = ChaosUpstream::start("busy").await;
        let serve = decide(r#"{"decision": "serve"}"#);
        let gateway = start_rust(
            &[
                route("open", "/open", "guarded").with(&serve),
                route("none", "/none", "unhealthy").with(&serve),
                route("busy", "/busy", "busy").with(&serve),
            ],
            &[
                cluster("guarded", &[guarded.addr()])
                    .with("circuit_breaker: { open_duration: 5m }")
                    .with("outlier_detection: false"),
                cluster("unhealthy", &[unchecked.addr()])
                    .with(
                        "health_check: { path: /healthz, interval: 100ms, timeout: 100ms, \
                         unhealthy_threshold: 1, healthy_threshold: 1, initial_delay: 10ms }",
                    )
                    .with("panic_mode: fail-fast")
                    .with("outlier_detection: false"),
                cluster("busy", &[busy.addr()])
                    .with("limits: { max_requests: 1 }")
                    .with("outlier_detection: false"),
            ],
            &[decider()],
        )
        .await;
        let admin = gateway.admin();

        force_breaker(admin, "guarded", "open").await;
        let reply = gateway.get("/open").await;
        assert_eq!(
            echoed_failure(&reply),
            [
                Some("circuit-open"),
                Some("guarded"),
                Some("1"),
                Some("none"),
                Some("open")
            ],
            "{}",
            reply.text()
        );
        assert_eq!(guarded.requests(), 0);

        let unhealthy = eventually(TRIES, || async {
            endpoint_view(admin, "unhealthy", unchecked.addr())
                .await
                .is_some_and(|e| e.health == "unhealthy")
        })
        .await;
        assert!(unhealthy);
        let reply = gateway.get("/none").await;
        assert_eq!(
            echoed_failure(&reply),
            [
                Some("no-healthy-endpoint"),
                Some("unhealthy"),
                Some("1"),
                Some("none"),
                Some("closed")
            ],
            "{}",
            reply.text()
        );
        assert_eq!(unchecked.requests(), 0);

        busy.hold();
        let url = gateway.url("public", "/busy");
        let held = tokio::spawn(async move { client::get(&client::http1(), &url).await });
        assert!(eventually(TRIES, || async { busy.in_flight() == 1 }).await);
        let reply = gateway.get("/busy").await;
        assert_eq!(
            echoed_failure(&reply),
            [
                Some("overloaded"),
                Some("busy"),
                Some("1"),
                Some("none"),
                Some("closed")
            ],
            "{}",
            reply.text()
        );
        busy.release();
        let held = held.await.unwrap().unwrap();
        assert_eq!(held.status, StatusCode::OK);
        assert_eq!(
            held.header("x-decider"),
            None,
            "the held request was not a failure"
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_never_reach_the_plugin_only_the_declarative_fallback() {
    bounded(async {
        let upstream = ChaosUpstream::start("main").await;
        let serve = decide(r#"{"decision": "serve"}"#);
        let limit = "rate_limit: { requests_per_second: 0.01, burst: 1 }";
        let gateway = start_rust(
            &[
                route("fallback", "/fallback", "main")
                    .with(&serve)
                    .with(limit)
                    .with("fallback: { on: [rate-limited], response: { status: 503, body: slow down } }"),
                route("plain", "/plain", "main").with(&serve).with(limit),
            ],
            &[cluster("main", &[upstream.addr()])],
            &[decider()],
        )
        .await;

        for path in ["/fallback", "/plain"] {
            let first = gateway.get(path).await;
            assert_eq!(first.status, StatusCode::OK, "{path}");
            assert_eq!(first.header("x-upstream"), Some("main"));
        }
        let reply = gateway.get("/fallback").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), "slow down");
        assert_eq!(reply.header("x-failure-kind"), None);
        let reply = gateway.get("/plain").await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.error_kind(), Some("rate-limited"));
        assert_eq!(reply.header("x-failure-kind"), None);
        assert_eq!(plugin_counter(&metrics(&gateway).await, "decider", "serve"), 0.0);
        assert_eq!(upstream.requests(), 2);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

// === on-upstream-failure: each decision ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagate_leaves_the_failure_to_the_declarative_fallback_or_the_gateway_error() {
    bounded(async {
        let propagate = decide(r#"{"decision": "propagate"}"#);
        let gateway = start_rust(
            &[
                route("fallback", "/fallback", "nobody")
                    .with(&propagate)
                    .with("fallback: { response: { status: 503, body: static page } }"),
                route("plain", "/plain", "nobody").with(&propagate),
            ],
            &[cluster("nobody", &[closed_port_addr()])],
            &[decider()],
        )
        .await;

        let reply = gateway.get("/fallback").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.text(), "static page");
        let reply = gateway.get("/plain").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert!(
            reply
                .error_kind()
                .is_some_and(|k| k.starts_with("upstream-connect")),
            "{:?}",
            reply.error_kind()
        );
        assert_eq!(
            plugin_counter(&metrics(&gateway).await, "decider", "propagate"),
            2.0
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_sends_once_more_to_the_named_cluster_within_the_retry_budget() {
    bounded(async {
        let backup = ChaosUpstream::start("backup").await;
        let flaky = ChaosUpstream::start_in("flaky", Mode::Failing(503)).await;
        let to_backup = decide(r#"{"decision": "retry", "cluster": "backup", "delay_ms": 5}"#);
        let gateway = start_rust(
            &[
                route("retry", "/retry", "nobody").with(&to_backup),
                route("spent", "/spent", "nobody")
                    .with(&to_backup)
                    .with("retry: { attempts: 1, budget: { ratio: 0%, min_per_second: 0 } }"),
                route("same", "/same", "flaky").with(&decide(r#"{"decision": "retry"}"#)),
            ],
            &[
                cluster("nobody", &[closed_port_addr()]),
                cluster("backup", &[backup.addr()]),
                cluster("flaky", &[flaky.addr()]).with("outlier_detection: false"),
            ],
            &[decider()],
        )
        .await;

        let reply = gateway.get("/retry").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("backup"));
        assert_eq!(backup.requests(), 1);

        // A retry budget with nothing to give refuses the plugin's retry.
        let reply = gateway.get("/spent").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        assert_eq!(backup.requests(), 1, "the refused retry sent nothing");
        let metrics_text = metrics(&gateway).await;
        assert_eq!(
            metric_sum(
                &metrics_text,
                "levee_retries_refused_total",
                "route=\"spent\""
            ),
            Some(1.0),
            "{metrics_text}"
        );

        // Without a cluster the retry goes to the same one, once: the plugin is not asked
        // again about the second failure.
        let reply = gateway.get("/same").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("x-upstream"), Some("flaky"));
        assert_eq!(flaky.requests(), 2);
        assert_eq!(
            plugin_counter(&metrics(&gateway).await, "decider", "retry"),
            3.0
        );
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cached_answers_with_the_copy_stored_under_the_key() {
    bounded(async {
        let upstream = ChaosUpstream::start("origin").await;
        let gateway = start_rust(
            &[
                route("cached", "/cached", "main")
                    .with(&decide(r#"{"decision": "serve-cached", "key": "copy"}"#)),
                route("empty", "/empty", "nobody").with(&decide(
                    r#"{"decision": "serve-cached", "key": "never-stored"}"#,
                )),
            ],
            &[
                cluster("main", &[upstream.addr()]).with("outlier_detection: false"),
                cluster("nobody", &[closed_port_addr()]),
            ],
            &[decider()],
        )
        .await;

        let fresh = gateway.get("/cached").await;
        assert_eq!(fresh.status, StatusCode::OK);
        assert_eq!(fresh.header("x-levee-cache"), None);
        upstream.set_mode(Mode::Failing(500));
        let cached = gateway.get("/cached").await;
        assert_eq!(cached.status, StatusCode::OK, "{}", cached.text());
        assert_eq!(cached.body, fresh.body);
        assert_eq!(cached.header("x-levee-cache"), Some("plugin"));
        assert_eq!(cached.header("x-upstream"), Some("origin"));
        assert_eq!(cached.header("content-type"), Some("text/plain"));

        // Nothing under the key: the failure propagates to the gateway's error.
        let reply = gateway.get("/empty").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.header("x-levee-cache"), None);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_forwards_once_to_the_degraded_cluster_outside_the_retry_budget() {
    bounded(async {
        let cheap = ChaosUpstream::start("cheap").await;
        let gateway = start_rust(
            &[route("degrade", "/", "nobody")
                .with(&decide(r#"{"decision": "degrade", "cluster": "cheap"}"#))
                .with("retry: { attempts: 1, budget: { ratio: 0%, min_per_second: 0 } }")],
            &[
                cluster("nobody", &[closed_port_addr()]),
                cluster("cheap", &[cheap.addr()]),
            ],
            &[decider()],
        )
        .await;

        for _ in 0..3 {
            let reply = gateway.get("/a").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.header("x-upstream"), Some("cheap"));
        }
        assert_eq!(cheap.requests(), 3);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_refuses_with_the_plugins_status_and_retry_after() {
    bounded(async {
        let gateway = start_rust(
            &[
                route("shed", "/shed", "nobody").with(&decide(r#"{"decision": "shed"}"#)),
                route("shed-429", "/429", "nobody")
                    .with(&decide(r#"{"decision": "shed", "status": 429}"#)),
            ],
            &[cluster("nobody", &[closed_port_addr()])],
            &[decider()],
        )
        .await;

        let reply = gateway.get("/shed").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error_kind(), Some("shed"));
        assert!(reply.header("retry-after").is_some());
        let reply = gateway.get("/429").await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.error_kind(), Some("shed"));
        assert!(reply.header("retry-after").is_some());
        gateway.shutdown().await.unwrap();
    })
    .await;
}
