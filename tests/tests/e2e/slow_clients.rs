//! Slow and greedy clients: a client that stops reading its responses loses them after
//! `send_timeout` and gives back the upstream capacity they held (issue 14, finding 1); one
//! client cannot take every connection slot of a listener (issue 14, finding 5).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use levee_tests::harness::simple_config;
use levee_tests::{Server, TestGateway, bounded, client, eventually, tcp};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `simple_config` for `upstream` with these listener and cluster limits (YAML flow maps'
/// contents).
fn config(upstream: SocketAddr, listener_limits: &str, cluster_limits: &str) -> String {
    let mut yaml = simple_config(&[upstream]).replace(
        "    address: 127.0.0.1:0\nadmin:",
        &format!("    address: 127.0.0.1:0\n    limits: {{ {listener_limits} }}\nadmin:"),
    );
    yaml.push_str(&format!("    limits: {{ {cluster_limits} }}\n"));
    yaml
}

/// Whether a plain client gets a 200 for a small response within the test's patience.
async fn others_are_served(gateway: &TestGateway) -> bool {
    let url = gateway.url("public", "/?bytes=10");
    eventually(200, || async {
        client::get(&client::http1(), &url)
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await
}

/// `levee_downstream_send_timeouts_total` of the `public` listener.
async fn send_timeouts(gateway: &TestGateway) -> f64 {
    let text = client::admin_get(gateway.admin(), "/metrics")
        .await
        .expect("GET /metrics")
        .text();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(r#"levee_downstream_send_timeouts_total{listener="public"} "#)
        })
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_with_a_zero_window_loses_its_streams_after_send_timeout() {
    bounded(async {
        let upstream = Server::http1().stream(1 << 20).run().await;
        let yaml = config(upstream.addr(), "send_timeout: 1s", "max_requests: 4");
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let addr = gateway.addr("public");

        // The preface, SETTINGS{INITIAL_WINDOW_SIZE=0}, and as many GETs as the cluster takes;
        // no WINDOW_UPDATE ever follows, so no response body can be sent.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let mut pending = Vec::new();
        for _ in 0..4 {
            send = send.ready().await.unwrap();
            let req = Request::get(format!("http://{addr}/")).body(()).unwrap();
            let (response, _) = send.send_request(req, true).unwrap();
            pending.push(response);
        }
        // Every head arrives (HEADERS are not flow-controlled): each stream holds a request
        // slot of the cluster. The responses are kept, so no stream is cancelled.
        let mut held = Vec::new();
        for response in pending {
            let response = response.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            held.push(response);
        }

        assert!(
            others_are_served(&gateway).await,
            "the stalled streams still hold the cluster's request slots"
        );
        let closed = tokio::time::timeout(Duration::from_secs(10), driver).await;
        assert!(closed.is_ok(), "the stalled connection is still open");
        // Each of the four stalled responses is counted once, however often it is looked at.
        assert_eq!(send_timeouts(&gateway).await, 4.0);
        drop((held, send));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_pings_but_never_opens_its_window_is_closed() {
    bounded(async {
        let upstream = Server::http1().stream(1 << 20).run().await;
        let yaml = config(upstream.addr(), "send_timeout: 1s", "max_requests: 4");
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let addr = gateway.addr("public");

        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, mut conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let mut ping_pong = conn.ping_pong().expect("ping_pong");
        let driver = tokio::spawn(conn);
        send = send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/")).body(()).unwrap();
        let (response, _) = send.send_request(req, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        // A PING every 200 ms: each answer is a write on the connection, but not progress
        // of the response the client never lets through.
        let pinger = tokio::spawn(async move {
            for _ in 0..100 {
                if ping_pong.ping(h2::Ping::opaque()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let closed = tokio::time::timeout(Duration::from_secs(10), driver).await;
        assert!(closed.is_ok(), "pings kept the stalled connection open");
        pinger.abort();
        drop((response, send));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_that_never_reads_is_closed_after_send_timeout() {
    bounded(async {
        // Far more than the socket buffers on both sides hold.
        const SIZE: usize = 32 << 20;
        let upstream = Server::http1().stream(SIZE as u64).run().await;
        let yaml = config(upstream.addr(), "send_timeout: 1s", "max_requests: 1");
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let mut stalled = TcpStream::connect(gateway.addr("public")).await.unwrap();
        stalled
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The request holds the cluster's only request slot once the upstream has it.
        assert!(eventually(200, || async { upstream.requests() == 1 }).await);

        assert!(
            others_are_served(&gateway).await,
            "the unread response still holds the cluster's request slot"
        );
        let (closed, received) = tcp::closes_within_timeout(&mut stalled).await;
        assert!(closed, "the stalled connection is still open");
        assert!(received.len() < SIZE, "the whole response arrived");
        assert!(send_timeouts(&gateway).await >= 1.0);
    })
    .await;
}
