//! Graceful shutdown of a gateway process on SIGTERM: not ready, drain delay, stop accepting,
//! finish in-flight requests, exit 0; a second SIGTERM exits at once.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use levee_tests::body;
use levee_tests::client::{self, Reply};
use levee_tests::{
    BoxError, GatewayProcess, Server, TempDir, Upstream, bounded, eventually, levee_bin,
};

fn config(upstream: SocketAddr, drain_delay: &str) -> String {
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
    timeout: 60s
clusters:
  - name: backend
    endpoints:
      - address: {upstream}
shutdown:
  drain_delay: {drain_delay}
  drain_timeout: 60s
"
    )
}

async fn readyz(admin: SocketAddr) -> Option<StatusCode> {
    client::admin_get(admin, "/readyz")
        .await
        .ok()
        .map(|r| r.status)
}

/// Starts `n` requests that the gated upstream holds, and waits until all have arrived.
async fn start_in_flight(
    gateway: &GatewayProcess,
    upstream: &Upstream,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Reply, BoxError>>> {
    let mut in_flight = Vec::new();
    for i in 0..n {
        let url = client::url(gateway.listener_addr("public"), &format!("/slow/{i}"));
        in_flight.push(tokio::spawn(async move {
            // A client per request, so each has its own connection to the gateway.
            let req = Request::get(url).body(body::empty())?;
            client::send(&client::http1(), req).await
        }));
    }
    let arrived = eventually(400, || async { upstream.requests() == n }).await;
    assert!(
        arrived,
        "only {} of {n} requests reached the upstream",
        upstream.requests()
    );
    in_flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    bounded(async {
        let upstream = Server::http1().gated().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", config(upstream.addr(), "1s"));
        let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
            .await
            .unwrap();
        let admin = gateway.admin_addr();
        let public = gateway.listener_addr("public");
        assert_eq!(readyz(admin).await, Some(StatusCode::OK));

        let in_flight = start_in_flight(&gateway, &upstream, 3).await;
        gateway.signal("TERM").unwrap();

        let not_ready = eventually(400, || async {
            readyz(admin).await == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        assert!(
            not_ready,
            "/readyz did not turn 503 after SIGTERM; {}",
            gateway.diagnose()
        );

        // After the drain delay the listener is closed while the held requests still run.
        let refused = eventually(400, || async {
            tokio::net::TcpStream::connect(public).await.is_err()
        })
        .await;
        assert!(
            refused,
            "new connections were still accepted during the drain"
        );
        assert!(
            gateway.is_running(),
            "exited before in-flight requests finished"
        );

        upstream.release();
        for request in in_flight {
            let reply = request.await.unwrap().expect("in-flight request completes");
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
        let status = gateway.wait_exit(Duration::from_secs(30)).await.unwrap();
        assert_eq!(status.code(), Some(0), "stderr:\n{}", gateway.stderr_text());
        assert!(tokio::net::TcpStream::connect(public).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_during_the_drain_delay() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", config(upstream.addr(), "30s"));
        let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
            .await
            .unwrap();
        let admin = gateway.admin_addr();
        let url = client::url(gateway.listener_addr("public"), "/during-drain");
        // A gateway in its steady state: ready, and a request answered through the listener.
        // A signal during startup has its own test.
        assert_eq!(readyz(admin).await, Some(StatusCode::OK));
        let before = client::get(&client::http1(), &url).await.unwrap();
        assert_eq!(before.status, StatusCode::OK);

        gateway.signal("TERM").unwrap();
        let not_ready = eventually(400, || async {
            readyz(admin).await == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        assert!(
            not_ready,
            "/readyz did not turn 503 after SIGTERM; {}",
            gateway.diagnose()
        );

        // Load balancers still send traffic until they notice; it must be served.
        let reply = client::get(&client::http1(), &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(gateway.is_running());

        gateway.signal("TERM").unwrap();
        gateway.wait_exit(Duration::from_secs(30)).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() {
    bounded(async {
        let upstream = Server::http1().gated().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", config(upstream.addr(), "60s"));
        let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
            .await
            .unwrap();
        let admin = gateway.admin_addr();
        let _in_flight = start_in_flight(&gateway, &upstream, 1).await;

        gateway.signal("TERM").unwrap();
        let not_ready = eventually(400, || async {
            readyz(admin).await == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        assert!(
            not_ready,
            "/readyz did not turn 503 after SIGTERM; {}",
            gateway.diagnose()
        );
        assert!(gateway.is_running(), "drain delay of 60s has not passed");

        gateway.signal("TERM").unwrap();
        // Well under the 60s drain delay and the 60s drain timeout.
        let exited = gateway.wait_exit(Duration::from_secs(20)).await;
        assert!(exited.is_ok(), "second SIGTERM did not stop the gateway");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_startup_still_drains_and_exits_zero() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let path = dir.write("levee.yaml", config(upstream.addr(), "10ms"));
        // Once the addresses are logged, an orchestrator may stop the gateway at any moment;
        // the signal handlers must already be in place. Repeated because the window is small.
        for attempt in 0..20 {
            let mut gateway = GatewayProcess::spawn(levee_bin!(), &path, &["public"], &[])
                .await
                .unwrap();
            gateway.signal("TERM").unwrap();
            let status = gateway.wait_exit(Duration::from_secs(30)).await.unwrap();
            assert_eq!(
                status.code(),
                Some(0),
                "attempt {attempt}: SIGTERM right after startup was not handled ({status}); {}",
                gateway.diagnose()
            );
        }
    })
    .await;
}
