//! The request path's promises around retries, end to end through the real gateway and a real
//! plugin: a plugin's `retry` is admitted by the same retry budget as the route's own retries.

use std::path::PathBuf;

use http::{Request, StatusCode};
use levee_tests::body::empty;
use levee_tests::chaos::{ChaosUpstream, Mode, REQUEST_BOUND, cluster, config, route};
use levee_tests::client;
use levee_tests::harness::CONFIG_FILE;
use levee_tests::plugins::{install, plugin, route_plugins, rust_wasm, with_plugins};
use levee_tests::{TempDir, TestGateway, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_retries_against_a_failing_cluster_stay_within_the_budget_ratio() {
    // Every request fails with 503 at once and the plugin asks for a retry of each; a budget
    // of retries *in flight* let nearly all of them through, since fast failures are never
    // in flight for long.
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 20;
    bounded(async {
        let failing = ChaosUpstream::start_in("failing", Mode::Failing(503)).await;
        let retry = route_plugins(&[("decider", r#"{"decision": "retry"}"#)]);
        let routes = [route("api", "/", "failing")
            .with(&retry)
            .with("retry: { attempts: 1, budget: { ratio: 20%, min_per_second: 1 } }")];
        let clusters = [cluster("failing", &[failing.addr()]).with("outlier_detection: false")];
        let yaml = with_plugins(
            &config(&routes, &clusters),
            &[plugin("decider", "decider.wasm")],
        );
        let dir = TempDir::new();
        let wasm: PathBuf = rust_wasm("decider");
        install(&dir, "decider.wasm", &wasm);
        dir.write(CONFIG_FILE, &yaml);
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
            .await
            .expect("gateway starts");

        let started = tokio::time::Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let url = gateway.url("public", "/");
                tokio::spawn(async move {
                    let http = client::http1();
                    for _ in 0..REQUESTS {
                        let request = Request::get(url.clone()).body(empty()).expect("request");
                        let reply =
                            tokio::time::timeout(REQUEST_BOUND, client::send(&http, request))
                                .await
                                .expect("in time")
                                .expect("reply");
                        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client");
        }
        let seconds = started.elapsed().as_secs_f64().ceil();
        let requests = (CLIENTS * REQUESTS) as f64;
        let calls = failing.requests() as f64;
        // 1 + ratio per request, plus the floor: `min_per_second` over the 10 s window and
        // for every second the run took.
        let bound = requests * 1.2 + 10.0 + seconds;
        assert!(
            calls <= bound,
            "{calls} upstream calls for {requests} requests (bound {bound})"
        );
        assert!(
            calls > requests,
            "the plugin's retries go out within the budget"
        );
        gateway.shutdown().await.expect("shutdown");
    })
    .await;
}
