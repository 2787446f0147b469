//! The operator's view end to end: admin endpoints, request metrics, the access log on stdout,
//! the admin bearer token, and SIGHUP reloads.

use http::{Request, StatusCode};
use levee_tests::body;
use levee_tests::client::{self, metric_sum};
use levee_tests::harness::simple_config;
use levee_tests::{GatewayProcess, Server, TempDir, TestGateway, bounded, eventually, levee_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_200_while_serving() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        for path in ["/healthz", "/readyz"] {
            let reply = client::admin_get(gateway.admin(), path).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        }
        assert_eq!(upstream.requests(), 0, "probes never touch upstreams");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_endpoint_lists_every_endpoint() {
    bounded(async {
        let a = Server::http1().run().await;
        let b = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[a.addr(), b.addr()]))
            .await
            .unwrap();

        let reply = client::admin_get(gateway.admin(), "/clusters")
            .await
            .unwrap();

        assert_eq!(reply.status, StatusCode::OK);
        let clusters = reply.json();
        let text = clusters.to_string();
        assert!(text.contains("backend"), "{text}");
        assert!(text.contains(&a.addr().to_string()), "{text}");
        assert!(text.contains(&b.addr().to_string()), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_errors_by_kind() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let yaml =
            simple_config(&[upstream.addr()]).replace("path_prefix: /", "path_prefix: /api/");
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let http = client::http1();
        for _ in 0..3 {
            let reply = client::get(&http, &gateway.url("public", "/api/x"))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
        let reply = client::get(&http, &gateway.url("public", "/nowhere"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);

        let metrics = client::admin_get(gateway.admin(), "/metrics")
            .await
            .unwrap()
            .text();

        let ok = metric_sum(&metrics, "levee_requests_total", r#"route="all""#);
        assert_eq!(ok, Some(3.0), "{metrics}");
        let no_route = metric_sum(&metrics, "levee_request_errors_total", r#"kind="no-route""#);
        assert_eq!(no_route, Some(1.0), "{metrics}");
        // The three went one after another over one upstream connection, now idle in the pool.
        let idle = metric_sum(&metrics, "levee_upstream_connections_idle", "");
        assert_eq!(idle, Some(1.0), "{metrics}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requires_the_bearer_token_when_configured() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        dir.write("admin-token", "s3cret\n");
        let yaml = simple_config(&[upstream.addr()]).replace(
            "admin:\n  address: 127.0.0.1:0\n",
            "admin:\n  address: 127.0.0.1:0\n  token_file: admin-token\n",
        );
        dir.write("levee.yaml", yaml);
        let gateway = TestGateway::start_in(dir, "levee.yaml", false)
            .await
            .unwrap();
        let url = client::url(gateway.admin(), "/config");

        let anonymous = client::get(&client::http1(), &url).await.unwrap();
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

        let wrong = Request::get(&url)
            .header("authorization", "Bearer guess")
            .body(body::empty())
            .unwrap();
        let wrong = client::send(&client::http1(), wrong).await.unwrap();
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

        let right = Request::get(&url)
            .header("authorization", "Bearer s3cret")
            .body(body::empty())
            .unwrap();
        let right = client::send(&client::http1(), right).await.unwrap();
        assert_eq!(right.status, StatusCode::OK, "{}", right.text());
        assert!(
            !right.text().contains("s3cret"),
            "the token never appears in /config"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_writes_one_json_access_log_line_per_request() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let config =
            simple_config(&[upstream.addr()]).replace("access_log: false", "access_log: true");
        let path = dir.write("levee.yaml", config);
        let gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
            .await
            .unwrap();

        let reply = client::get(
            &client::http1(),
            &client::url(gateway.listener_addr("public"), "/logged?q=1"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let request_id = reply.echoed_header("x-request-id").expect("x-request-id");

        let mut line = None;
        let logged = eventually(200, || {
            line = gateway
                .stdout_lines()
                .into_iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .find(|v| v["request_id"] == request_id.as_str());
            let found = line.is_some();
            async move { found }
        })
        .await;
        assert!(
            logged,
            "no access log line for {request_id}: {:?}",
            gateway.stdout_lines()
        );
        let line = line.unwrap();
        assert_eq!(line["route"], "all");
        assert_eq!(line["cluster"], "backend");
        assert_eq!(line["status"], 200);
        assert!(line["error"].is_null(), "{line}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", simple_config(&[upstream.addr()]));
        let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
            .await
            .unwrap();
        let admin = gateway.admin_addr();
        let public = client::url(gateway.listener_addr("public"), "/before-hup");
        // A gateway in its steady state: ready, and a request answered through the listener.
        // A signal during startup has its own test below.
        let ready = client::admin_get(admin, "/readyz").await.unwrap();
        assert_eq!(ready.status, StatusCode::OK);
        let served = client::get(&client::http1(), &public).await.unwrap();
        assert_eq!(served.status, StatusCode::OK);

        gateway.signal("HUP").unwrap();

        let reloaded = eventually(200, || async {
            match client::admin_get(admin, "/config").await {
                Ok(reply) => reply.json()["reload"]["last_cause"] == "signal",
                Err(_) => false,
            }
        })
        .await;
        assert!(reloaded, "SIGHUP did not reload; {}", gateway.diagnose());
        let reply = client::get(
            &client::http1(),
            &client::url(gateway.listener_addr("public"), "/after-hup"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_right_after_startup_does_not_kill_the_gateway() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", simple_config(&[upstream.addr()]));
        // SIGHUP's default action ends the process, so the handler must be installed before
        // the gateway announces its addresses. Repeated because the window is small.
        for attempt in 0..10 {
            let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
                .await
                .unwrap();
            gateway.signal("HUP").unwrap();
            let admin = gateway.admin_addr();
            let reloaded = eventually(200, || async {
                match client::admin_get(admin, "/config").await {
                    Ok(reply) => reply.json()["reload"]["last_cause"] == "signal",
                    Err(_) => false,
                }
            })
            .await;
            assert!(
                reloaded && gateway.is_running(),
                "attempt {attempt}: SIGHUP right after startup; {}",
                gateway.diagnose()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_path_and_query_are_percent_decoded() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let yaml = simple_config(&[upstream.addr()])
            .replace("cluster: backend", "cluster: \"my cluster\"")
            .replace(
                "  - name: backend\n",
                "  - name: \"my cluster\"\n    circuit_breaker: { open_duration: 5m }\n",
            );
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let admin = gateway.admin();

        // `%20` in the name, and `%6F` (`o`) in the query value.
        let reply = client::admin_post(admin, "/clusters/my%20cluster/breaker?state=%6Fpen")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let breaker = reply.json();
        assert_eq!(breaker["state"], "open", "{breaker}");
        assert_eq!(breaker["forced"], "open", "{breaker}");
        let reply = client::get(&client::http1(), &gateway.url("public", "/x"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            upstream.requests(),
            0,
            "the forced-open breaker let a request through"
        );

        // `+` is a space in a query, as in a form.
        let reply = client::admin_post(admin, "/clusters/my%20cluster/breaker?x=1&state=auto+")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        let reply = client::admin_post(admin, "/clusters/my%20cluster/breaker?x=1&state=auto")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(reply.json()["forced"].is_null());

        let reply = client::admin_post(admin, "/clusters/my%2520cluster/breaker?state=open")
            .await
            .unwrap();
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "decoded once, not twice"
        );
        let reply = client::admin_post(admin, "/clusters/%FF/breaker?state=open")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "not UTF-8");
    })
    .await;
}
