//! Clusters at run time: DNS discovery, and endpoint state carried across a reload.

use levee_tests::client::{self, admin_get};
use levee_tests::harness::{CONFIG_FILE, simple_config};
use levee_tests::{Server, TestGateway, bounded};

/// `/clusters` entry of `endpoint` in cluster `cluster`.
async fn endpoint_status(
    gateway: &TestGateway,
    cluster: &str,
    endpoint: &str,
) -> Option<serde_json::Value> {
    let clusters = admin_get(gateway.admin(), "/clusters").await.ok()?.json();
    clusters["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == cluster)?["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == endpoint)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_finds_endpoints_by_name() {
    bounded(async {
        let upstream = Server::http1().name("discovered").run().await;
        let port = upstream.addr().port();
        let gateway = TestGateway::start(&format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:0\n\
             admin:\n  address: 127.0.0.1:0\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    cluster: web\n\
             clusters:\n  - name: web\n    discovery: {{ dns: \"localhost:{port}\", refresh: 1s }}\n"
        ))
        .await
        .unwrap();

        let http = client::http1();
        for _ in 0..5 {
            let reply = client::get(&http, &gateway.url("public", "/hello"))
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        assert_eq!(upstream.requests(), 5);
        let status = endpoint_status(&gateway, "web", &format!("127.0.0.1:{port}"))
            .await
            .expect("the discovered endpoint is listed in /clusters");
        assert_eq!(status["source"], "dns", "{status}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_endpoint_state_and_pooled_connections() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let config = simple_config(&[upstream.addr()]);
        let gateway = TestGateway::start(&config).await.unwrap();
        let http = client::http1();
        for _ in 0..10 {
            let reply = client::get(&http, &gateway.url("public", "/"))
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
        }
        let address = upstream.addr().to_string();
        let before = endpoint_status(&gateway, "backend", &address)
            .await
            .unwrap();
        assert_eq!(before["requests_total"], 10, "{before}");

        // A route change: the cluster and its endpoint keep their identity.
        let changed = config.replace("path_prefix: /", "path_prefix: /api/");
        gateway.dir.write(CONFIG_FILE, &changed);
        assert_eq!(gateway.reload().await, Ok(2));

        let after = endpoint_status(&gateway, "backend", &address)
            .await
            .unwrap();
        assert_eq!(after["requests_total"], 10, "state was reset: {after}");
        let reply = client::get(&http, &gateway.url("public", "/api/x"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        let reply = client::get(&http, &gateway.url("public", "/x"))
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "the old route still answers");
        // The pooled upstream connection survived the reload: still one connection in all.
        assert_eq!(upstream.connections(), 1);
        let after = endpoint_status(&gateway, "backend", &address)
            .await
            .unwrap();
        assert_eq!(after["requests_total"], 11, "{after}");
    })
    .await;
}
