//! A rejected reload changes nothing (issue 13, broken promise 1): a reload that lowers a
//! cluster's `max_requests` and then fails at a later step (a CA bundle that does not parse, a
//! listener address already in use) leaves the serving config's limits as they were, so
//! concurrent requests still pass.

use std::net::SocketAddr;

use futures_util::future::join_all;
use http::StatusCode;
use levee_tests::client;
use levee_tests::harness::CONFIG_FILE;
use levee_tests::{Server, TempDir, TestGateway, Upstream, bounded, eventually};

/// Requests sent at once: more than the lowered `max_requests` of 1 lets through.
const CONCURRENT: usize = 5;

/// One listener `public`, one route to cluster `backend` at `upstream` with this
/// `max_requests`, and `extra` appended as is (more clusters or listeners).
fn config(
    upstream: SocketAddr,
    max_requests: u32,
    extra_clusters: &str,
    extra_listeners: &str,
) -> String {
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
{extra_listeners}admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
shutdown:
  drain_delay: 100ms
  drain_timeout: 10s
log:
  access_log: false
clusters:
  - name: backend
    endpoints:
      - address: {upstream}
    limits: {{ max_requests: {max_requests} }}
{extra_clusters}"
    )
}

/// A cluster after `backend` whose CA bundle exists (so the config validates) but is not PEM:
/// building it is the reload's last fallible step of the snapshot.
fn cluster_with_garbage_ca(dir: &TempDir, upstream: SocketAddr) -> String {
    dir.write("garbage-ca.pem", "this is not a certificate\n");
    let ca = dir.join("garbage-ca.pem");
    format!(
        "  - name: later
    endpoints:
      - address: {upstream}
    tls: {{ sni: later.test, ca_file: {} }}
",
        ca.display()
    )
}

/// Sends [`CONCURRENT`] requests at once to the gated `upstream` through `gateway`, waits
/// until all of them are held there (so they are in flight together), releases them, and
/// returns the statuses. A request the gateway refuses comes back at once instead.
async fn concurrent_statuses(gateway: &TestGateway, upstream: &Upstream) -> Vec<StatusCode> {
    let before = upstream.requests();
    let url = gateway.url("public", "/held");
    let sends = (0..CONCURRENT).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { client::get(&client::http1(), &url).await })
    });
    let sends: Vec<_> = sends.collect();
    let all_held = eventually(100, || async { upstream.requests() - before >= CONCURRENT }).await;
    upstream.release();
    let replies = join_all(sends).await;
    assert!(
        all_held,
        "only {} of {CONCURRENT} concurrent requests reached the upstream",
        upstream.requests() - before
    );
    replies
        .into_iter()
        .map(|r| r.expect("task").expect("reply").status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rejected_for_a_garbage_ca_keeps_max_requests() {
    bounded(async {
        let upstream = Server::http1().gated().run().await;
        let dir = TempDir::new();
        dir.write(CONFIG_FILE, config(upstream.addr(), 1024, "", ""));
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
            .await
            .expect("gateway starts");

        let later = cluster_with_garbage_ca(&gateway.dir, upstream.addr());
        gateway
            .dir
            .write(CONFIG_FILE, config(upstream.addr(), 1, &later, ""));
        let error = gateway
            .reload()
            .await
            .expect_err("the CA bundle does not parse");
        assert!(error.contains("later"), "{error}");

        let statuses = concurrent_statuses(&gateway, &upstream).await;
        assert_eq!(statuses, vec![StatusCode::OK; CONCURRENT]);

        // The same lowered limit without the broken cluster is applied: the test above would
        // have seen it.
        gateway
            .dir
            .write(CONFIG_FILE, config(upstream.addr(), 1, "", ""));
        gateway.reload().await.expect("valid reload");
        let clusters = client::admin_get(gateway.admin(), "/clusters")
            .await
            .expect("clusters")
            .json();
        assert_eq!(clusters["clusters"][0]["limits"]["requests"]["max"], 1);

        gateway.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rejected_for_a_listener_address_in_use_keeps_max_requests() {
    bounded(async {
        let upstream = Server::http1().gated().run().await;
        let dir = TempDir::new();
        dir.write(CONFIG_FILE, config(upstream.addr(), 1024, "", ""));
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
            .await
            .expect("gateway starts");

        // Someone else holds the address the new listener wants.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("address");
        let second = format!("  - name: second\n    address: {address}\n");
        gateway
            .dir
            .write(CONFIG_FILE, config(upstream.addr(), 1, "", &second));
        let error = gateway.reload().await.expect_err("the address is in use");
        assert!(error.contains("second"), "{error}");

        let statuses = concurrent_statuses(&gateway, &upstream).await;
        assert_eq!(statuses, vec![StatusCode::OK; CONCURRENT]);
        let clusters = client::admin_get(gateway.admin(), "/clusters")
            .await
            .expect("clusters")
            .json();
        assert_eq!(clusters["clusters"][0]["limits"]["requests"]["max"], 1024);

        drop(taken);
        gateway.shutdown().await.expect("shutdown");
    })
    .await;
}
