//! Hostile and malformed downstream input: bad request lines, oversized heads, slowloris,
//! request smuggling, absolute-form requests for foreign hosts, and CONNECT.
//!
//! Requests are written as raw bytes, since HTTP client libraries refuse to send them.

use std::net::SocketAddr;

use http::StatusCode;
use levee_tests::tcp::{self, RawOutcome};
use levee_tests::{Server, TestGateway, Upstream, bounded, client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn gateway_with_limits(upstream: &Upstream, limits: &str) -> TestGateway {
    let yaml = format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
{limits}admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: {}
",
        upstream.addr()
    );
    TestGateway::start(&yaml).await.expect("gateway starts")
}

/// A well-formed request still works on a fresh connection.
async fn assert_serves(addr: SocketAddr) {
    let reply = client::get(&client::http1(), &client::url(addr, "/still-ok"))
        .await
        .expect("a normal request still works");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_gets_400_and_next_connection_works() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let reply = tcp::exchange(addr, b"THIS IS NOT HTTP\r\n\r\n").await;
        assert_eq!(reply.status(), Some(400), "{reply:?}");
        let reply = tcp::exchange(addr, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(reply.status(), Some(400), "{reply:?}");

        assert_eq!(upstream.requests(), 0);
        assert_serves(addr).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_431() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway =
            gateway_with_limits(&upstream, "    limits:\n      max_header_size: 16KiB\n").await;
        let addr = gateway.addr("public");

        let big = "a".repeat(64 * 1024);
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let reply = tcp::exchange(addr, request.as_bytes()).await;

        assert_eq!(reply.status(), Some(431), "{reply:?}");
        assert_eq!(upstream.requests(), 0);
        assert_serves(addr).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_default_64kib_limit_gets_431() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let big = "a".repeat(128 * 1024);
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let reply = tcp::exchange(addr, request.as_bytes()).await;

        assert_eq!(reply.status(), Some(431), "{reply:?}");
        assert_eq!(upstream.requests(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "    limits:\n      max_headers: 20\n").await;
        let addr = gateway.addr("public");

        let headers: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let reply = tcp::exchange(addr, request.as_bytes()).await;

        assert_eq!(reply.status(), Some(431), "{reply:?}");
        assert_eq!(upstream.requests(), 0);
        assert_serves(addr).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_head_is_cut_off_by_header_read_timeout_without_affecting_others() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway =
            gateway_with_limits(&upstream, "    limits:\n      header_read_timeout: 300ms\n").await;
        let addr = gateway.addr("public");

        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Part: ")
            .await
            .unwrap();
        assert_serves(addr).await;

        // Within READ_TIMEOUT (10s, far beyond 300ms) the gateway must give up on the slow
        // client: close, or answer 408 and close.
        let (closed, bytes) = tcp::closes_within_timeout(&mut slow).await;
        assert!(
            closed,
            "slow connection still open; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        }
        assert_eq!(
            upstream.requests(),
            1,
            "only the normal request reached the upstream"
        );
        assert_serves(addr).await;
    })
    .await;
}

/// A request with both framings, followed by a second request hidden where a front end that
/// trusts Content-Length would see body bytes.
const SMUGGLE: &[u8] = b"POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_never_smuggles_a_second_request() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(SMUGGLE).await.unwrap();
        let first = tcp::read_response(&mut stream).await;
        assert!(first.status().is_some(), "{first:?}");
        // After an ambiguous message the connection must close (RFC 9112 6.3): no second
        // response may appear on it.
        let (closed, rest) = tcp::closes_within_timeout(&mut stream).await;
        assert!(closed, "connection left open after an ambiguous request");
        assert!(
            rest.is_empty(),
            "a second response followed: {}",
            String::from_utf8_lossy(&rest)
        );

        let seen: Vec<String> = upstream.seen().into_iter().map(|s| s.uri).collect();
        assert!(
            !seen.iter().any(|uri| uri.contains("smuggled")),
            "upstream saw {seen:?}"
        );
        assert_serves(addr).await;
    })
    .await;
}

/// hyper resolves Content-Length + Transfer-Encoding as RFC 9112 §6.1 allows: the body is
/// framed by Transfer-Encoding alone, Content-Length is dropped, and the connection closes after
/// the response. (nginx answers 400 instead; both leave no second framing for an upstream to
/// disagree about.) What matters is that the upstream sees one framing only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_reaches_upstream_with_one_framing() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let reply = tcp::exchange(addr, SMUGGLE).await;

        assert_eq!(reply.status(), Some(200), "{reply:?}");
        let seen = upstream.seen();
        assert_eq!(
            seen.len(),
            1,
            "upstream saw {:?}",
            seen.iter().map(|s| &s.uri).collect::<Vec<_>>()
        );
        assert_eq!(seen[0].uri, "/front");
        assert!(
            seen[0].headers.get("content-length").is_none(),
            "the upstream got a Content-Length beside chunked framing: {:?}",
            seen[0].headers
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_duplicate_content_length_is_rejected() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let attack =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde";
        let reply = tcp::exchange(addr, attack).await;

        assert_eq!(reply.status(), Some(400), "{reply:?}");
        assert_eq!(upstream.requests(), 0);
    })
    .await;
}

async fn assert_absolute_form_stays_here(host_header: &str) {
    let upstream = Server::http1().run().await;
    let gateway = gateway_with_limits(&upstream, "").await;
    let addr = gateway.addr("public");
    let host_header = host_header.replace("GATEWAY", &addr.to_string());

    let request = format!(
        "GET http://evil.example/secret?x=1 HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"
    );
    let reply = tcp::exchange(addr, request.as_bytes()).await;

    let status = reply.status();
    assert!(
        matches!(status, Some(200 | 400 | 404)),
        "unexpected answer {reply:?}"
    );
    let seen = upstream.seen();
    if status == Some(200) {
        assert_eq!(seen.len(), 1);
    }
    for request in seen {
        assert!(
            request.uri.starts_with('/'),
            "upstream must see origin-form, saw {}",
            request.uri
        );
        assert_eq!(request.uri, "/secret?x=1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_request_for_foreign_host_only_reaches_our_upstream() {
    bounded(assert_absolute_form_stays_here("evil.example")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_request_with_mismatching_host_only_reaches_our_upstream() {
    bounded(assert_absolute_form_stays_here("GATEWAY")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_method_gets_405() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = gateway_with_limits(&upstream, "").await;
        let addr = gateway.addr("public");

        let reply = tcp::exchange(
            addr,
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        )
        .await;

        let RawOutcome::Response(response) = reply else {
            panic!("no response to CONNECT: {reply:?}");
        };
        assert_eq!(response.status, 405);
        assert_eq!(response.header("x-levee-error"), Some("method-not-allowed"));
        assert_eq!(upstream.requests(), 0);
        assert_serves(addr).await;
    })
    .await;
}
