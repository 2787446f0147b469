//! Forwarding end to end: every downstream protocol (HTTP/1.1, h2c, TLS with ALPN), HTTP/2 and
//! TLS upstreams, forwarded headers, upgrades, trailers, broken upstreams, chunked bodies,
//! load balancing and the gateway's own error responses.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use levee_tests::body::{self, PatternBody, PatternCheck};
use levee_tests::client;
use levee_tests::harness::simple_config;
use levee_tests::tcp::{self, CutServer};
use levee_tests::websocket::WsEcho;
use levee_tests::{Ca, Server, TRIES, TempDir, TestGateway, bounded, closed_port_addr, eventually};
use tokio_tungstenite::tungstenite::Message;

/// One listener, admin, and one route per `(path_prefix, cluster body)` pair; each cluster
/// body is the YAML under `- name: cN` (already indented by 4).
fn config_with_clusters(routes: &[(&str, String)]) -> String {
    let mut yaml = String::from(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nroutes:\n",
    );
    for (i, (prefix, _)) in routes.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: r{i}\n    match:\n      path_prefix: {prefix}\n    cluster: c{i}\n"
        ));
    }
    yaml.push_str("clusters:\n");
    for (i, (_, cluster)) in routes.iter().enumerate() {
        yaml.push_str(&format!("  - name: c{i}\n{cluster}"));
    }
    yaml
}

fn endpoint(addr: SocketAddr) -> String {
    format!("    endpoints:\n      - address: {addr}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_http1_request_to_upstream_and_returns_its_answer() {
    bounded(async {
        let upstream = Server::http1().name("one").status(201).run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let reply = gateway.get("/hello/world?x=1").await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("one"));
        let echo = reply.json();
        assert_eq!(echo["method"], "GET");
        assert_eq!(echo["uri"], "/hello/world?x=1");
        assert_eq!(upstream.requests(), 1);
        gateway.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_request_body_and_method() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let req = Request::put(gateway.url("public", "/items/7"))
            .header("content-type", "text/plain")
            .body(body::full("new value"))
            .unwrap();
        let reply = client::send(&client::http1(), req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK);
        let echo = reply.json();
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["body"], "new value");
        assert_eq!(echo["headers"]["content-type"], "text/plain");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_h2c_prior_knowledge_clients() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let reply = client::get(&client::h2c(), &gateway.url("public", "/over-h2c"))
            .await
            .unwrap();

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.json()["uri"], "/over-h2c");
        assert_eq!(upstream.requests(), 1);
    })
    .await;
}

async fn tls_gateway(upstream: SocketAddr) -> (TestGateway, Ca) {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path(), "downstream");
    ca.issue("site", &["localhost"]);
    let yaml = format!(
        "listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - cert: site.pem
          key: site.key
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: {upstream}
"
    );
    dir.write("levee.yaml", yaml);
    let gateway = TestGateway::start_in(dir, "levee.yaml", false)
        .await
        .expect("gateway starts");
    (gateway, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_and_speaks_http2_when_client_offers_h2() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let (gateway, ca) = tls_gateway(upstream.addr()).await;

        let (tls, alpn) = client::tls_connect(
            gateway.addr("secure"),
            "localhost",
            ca.client_config(&[b"h2", b"http/1.1"]),
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let req = Request::get("https://localhost/tls-h2")
            .body(body::empty())
            .unwrap();
        let reply = client::send_h2(tls, req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.json()["uri"], "/tls-h2");
        assert_eq!(
            reply.echoed_header("x-forwarded-proto").as_deref(),
            Some("https")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_and_speaks_http1_when_client_offers_only_http1() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let (gateway, ca) = tls_gateway(upstream.addr()).await;

        let (tls, alpn) = client::tls_connect(
            gateway.addr("secure"),
            "localhost",
            ca.client_config(&[b"http/1.1"]),
        )
        .await
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let req = Request::get("/tls-h1")
            .header("host", "localhost")
            .body(body::empty())
            .unwrap();
        let reply = client::send_h1(tls, req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version, Version::HTTP_11);
        assert_eq!(reply.json()["uri"], "/tls-h1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_tls_clients_that_do_not_trust_the_certificate() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let (gateway, _ca) = tls_gateway(upstream.addr()).await;
        let other = TempDir::new();
        let stranger = Ca::new(other.path(), "stranger");

        let result = client::tls_connect(
            gateway.addr("secure"),
            "localhost",
            stranger.client_config(&[b"http/1.1"]),
        )
        .await;

        assert!(result.is_err(), "handshake must fail against a foreign CA");
        assert_eq!(upstream.requests(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_http2_to_upstream_when_cluster_protocol_is_http2() {
    bounded(async {
        let upstream = Server::http2().run().await;
        let yaml = config_with_clusters(&[(
            "/",
            format!("    protocol: http2\n{}", endpoint(upstream.addr())),
        )]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        for _ in 0..3 {
            let reply = gateway.get("/grpc-ish").await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.json()["version"], "HTTP/2.0");
        }
        assert_eq!(upstream.requests(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_upstream_tls_with_custom_ca() {
    bounded(async {
        let certs = TempDir::new();
        let ca = Ca::new(certs.path(), "upstream");
        let leaf = ca.issue("upstream", &["upstream.test"]);
        let upstream = Server::http1().tls(&leaf).run().await;
        let yaml = config_with_clusters(&[(
            "/",
            format!(
                "    tls:\n      sni: upstream.test\n      ca_file: {}\n{}",
                ca.cert_path.display(),
                endpoint(upstream.addr())
            ),
        )]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let reply = gateway.get("/over-tls").await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["uri"], "/over-tls");
        assert_eq!(upstream.requests(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_http2_over_tls_to_upstream_with_alpn() {
    bounded(async {
        let certs = TempDir::new();
        let ca = Ca::new(certs.path(), "upstream");
        let leaf = ca.issue("upstream", &["upstream.test"]);
        let upstream = Server::http2().tls(&leaf).run().await;
        let yaml = config_with_clusters(&[(
            "/",
            format!(
                "    protocol: http2\n    tls:\n      sni: upstream.test\n      ca_file: {}\n{}",
                ca.cert_path.display(),
                endpoint(upstream.addr())
            ),
        )]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let reply = gateway.get("/h2-over-tls").await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["version"], "HTTP/2.0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_upstream_error_statuses_through_unchanged() {
    bounded(async {
        let upstream = Server::http1().name("failing").status(503).run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let reply = gateway.get("/").await;

        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("x-upstream"), Some("failing"));
        assert_eq!(
            reply.error_kind(),
            None,
            "an upstream answer is not a gateway error"
        );
        assert_eq!(reply.json()["server"], "failing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_upstream_whose_certificate_is_not_signed_by_the_configured_ca() {
    bounded(async {
        let certs = TempDir::new();
        let trusted = Ca::new(certs.path(), "trusted");
        let rogue = Ca::new(certs.path(), "rogue");
        let leaf = rogue.issue("upstream", &["upstream.test"]);
        let upstream = Server::http1().tls(&leaf).run().await;
        let yaml = config_with_clusters(&[(
            "/",
            format!(
                "    tls:\n      sni: upstream.test\n      ca_file: {}\n{}",
                trusted.cert_path.display(),
                endpoint(upstream.addr())
            ),
        )]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let reply = gateway.get("/over-tls").await;

        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        assert!(reply.error_kind().is_some(), "gateway error has a kind");
        assert_eq!(upstream.requests(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_forwarded_headers_and_request_id() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let first = gateway.get("/a").await;
        let second = gateway.get("/b").await;

        assert_eq!(
            first.echoed_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            first.echoed_header("x-forwarded-proto").as_deref(),
            Some("http")
        );
        let id1 = first.echoed_header("x-request-id").expect("x-request-id");
        let id2 = second.echoed_header("x-request-id").expect("x-request-id");
        assert!(!id1.is_empty());
        assert_ne!(id1, id2, "each request gets its own id");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_client_address_to_existing_x_forwarded_for() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let req = Request::get(gateway.url("public", "/"))
            .header("x-forwarded-for", "203.0.113.9")
            .body(body::empty())
            .unwrap();
        let reply = client::send(&client::http1(), req).await.unwrap();

        let xff = reply.echoed_header("x-forwarded-for").expect("xff");
        let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
        assert_eq!(hops, ["203.0.113.9", "127.0.0.1"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strips_hop_by_hop_headers() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let req = Request::get(gateway.url("public", "/"))
            .header("connection", "x-private-hop")
            .header("x-private-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(body::empty())
            .unwrap();
        let reply = client::send(&client::http1(), req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK);
        let echo = reply.json();
        assert_eq!(echo["headers"]["x-end-to-end"], "kept");
        assert!(echo["headers"].get("x-private-hop").is_none(), "{echo}");
        assert!(echo["headers"].get("keep-alive").is_none(), "{echo}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_websocket_upgrade_and_echoes_messages() {
    bounded(async {
        let upstream = WsEcho::run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let tcp = tokio::net::TcpStream::connect(gateway.addr("public"))
            .await
            .unwrap();
        let url = format!("ws://{}/ws", gateway.addr("public"));
        let (mut ws, response) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("websocket handshake through the gateway");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

        ws.send(Message::text("hello")).await.unwrap();
        let echoed = ws.next().await.expect("a message").unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "hello");

        let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        let echoed = ws.next().await.expect("a message").unwrap();
        assert_eq!(echoed.into_data().as_ref(), payload.as_slice());

        ws.close(None).await.unwrap();
        assert_eq!(upstream.upgrades(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gives_back_its_buffers_then_serves_requests_and_an_upgrade() {
    use tokio::io::AsyncWriteExt;
    bounded(async {
        let echo = Server::http1().name("echo").run().await;
        let ws = WsEcho::run().await;
        let yaml =
            config_with_clusters(&[("/ws", endpoint(ws.addr())), ("/", endpoint(echo.addr()))]);
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let admin = gateway.admin();
        let metric = |name: &'static str| async move {
            let text = client::admin_get(admin, "/metrics").await.unwrap().text();
            client::metric_sum(&text, name, "listener=\"public\"").unwrap_or(0.0)
        };
        let parked = || metric("levee_downstream_connections_parked");
        let wait_parked = |want: f64| async move {
            assert!(
                eventually(TRIES, || async { parked().await == want }).await,
                "levee_downstream_connections_parked never reached {want}"
            );
        };

        let mut tcp = tokio::net::TcpStream::connect(gateway.addr("public"))
            .await
            .unwrap();
        for round in 0..3 {
            tcp.write_all(b"GET /plain HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .unwrap();
            let response = tcp::read_response(&mut tcp).await.response();
            assert_eq!(response.status, 200, "round {round}: {response:?}");
            // Idle, the connection gives hyper's buffers back and waits on the socket alone.
            wait_parked(1.0).await;
        }

        // The same parked connection upgrades, and the tunnel carries bytes both ways.
        let url = format!("ws://{}/ws", gateway.addr("public"));
        let (mut socket, response) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("websocket handshake on the parked connection");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        wait_parked(0.0).await;
        socket.send(Message::text("after parking")).await.unwrap();
        let echoed = socket.next().await.expect("a message").unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "after parking");
        socket.close(None).await.unwrap();

        assert_eq!(ws.upgrades(), 1);
        assert_eq!(
            metric("levee_downstream_connections_total").await,
            1.0,
            "every request used the one connection"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_http2_upstream_trailers_to_h2c_client() {
    bounded(async {
        let upstream = Server::http2().trailers().run().await;
        let yaml = config_with_clusters(&[(
            "/",
            format!("    protocol: http2\n{}", endpoint(upstream.addr())),
        )]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let req = Request::post(gateway.url("public", "/pkg.Service/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body::full(&b"\0\0\0\0\0"[..]))
            .unwrap();
        let reply = client::send(&client::h2c(), req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type"), Some("application/grpc"));
        assert_eq!(&reply.body[..], b"ok");
        let trailers = reply.trailers.expect("trailers reach the client");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert_eq!(trailers.get("grpc-message").unwrap(), "fine");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_response_gives_body_error_and_gateway_keeps_serving() {
    bounded(async {
        let cut = CutServer::run().await;
        let healthy = Server::http1().run().await;
        let yaml = config_with_clusters(&[
            ("/cut", endpoint(cut.addr())),
            ("/", endpoint(healthy.addr())),
        ]);
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let client = client::http1();

        let broken = client::get(&client, &gateway.url("public", "/cut")).await;
        match broken {
            Err(_) => {}
            Ok(reply) => assert!(
                reply.status.is_server_error(),
                "a truncated upstream body must not look like a complete response: {} with {} bytes",
                reply.status,
                reply.body.len()
            ),
        }
        assert_eq!(cut.requests(), 1);

        for _ in 0..3 {
            let reply = client::get(&client, &gateway.url("public", "/fine"))
                .await
                .expect("gateway still serves");
            assert_eq!(reply.status, StatusCode::OK);
        }
        let reply = client::get(&client::http1(), &gateway.url("public", "/fine"))
            .await
            .expect("gateway still serves new connections");
        assert_eq!(reply.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_chunked_request_body_through() {
    bounded(async {
        let upstream = Server::http1().sink().run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();
        let size = 1_000_003;

        let req = Request::post(gateway.url("public", "/upload"))
            .body(PatternBody::new(size, false).boxed())
            .unwrap();
        let reply = client::send(&client::http1(), req).await.unwrap();

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let sink = reply.json();
        assert_eq!(sink["bytes"], size);
        assert_eq!(sink["pattern_ok"], true);
        let seen = upstream.seen();
        let te = seen[0].headers.get("transfer-encoding");
        assert_eq!(
            te.map(|v| v.to_str().unwrap()),
            Some("chunked"),
            "a body of unknown length is streamed chunked, not buffered"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_chunked_response_body_through() {
    bounded(async {
        let size = 3_000_017;
        let upstream = Server::http1().stream_chunked(size).run().await;
        let gateway = TestGateway::start(&simple_config(&[upstream.addr()]))
            .await
            .unwrap();

        let req = Request::get(gateway.url("public", "/download"))
            .body(body::empty())
            .unwrap();
        let response = client::http1().request(req).await.unwrap();

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("chunked")
        );
        assert!(response.headers().get("content-length").is_none());
        let check = PatternCheck::consume(response.into_body()).await.unwrap();
        assert_eq!(check.bytes, size);
        assert_eq!(check.first_mismatch, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_requests_across_two_upstreams() {
    bounded(async {
        let a = Server::http1().name("a").run().await;
        let b = Server::http1().name("b").run().await;
        let gateway = TestGateway::start(&simple_config(&[a.addr(), b.addr()]))
            .await
            .unwrap();

        let client = client::http1();
        for _ in 0..20 {
            let reply = client::get(&client, &gateway.url("public", "/"))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }

        assert_eq!(a.requests() + b.requests(), 20);
        assert!(a.requests() >= 5, "a got {}", a.requests());
        assert!(b.requests() >= 5, "b got {}", b.requests());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_request_gets_404_no_route_and_never_reaches_upstream() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let yaml = config_with_clusters(&[("/api/", endpoint(upstream.addr()))]);
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let reply = gateway.get("/other").await;

        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_kind(), Some("no-route"));
        let _ = reply.json();
        assert_eq!(upstream.requests(), 0);
        assert_eq!(gateway.get("/api/x").await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_connection_gives_502_upstream_connect_failure() {
    bounded(async {
        let gateway = TestGateway::start(&simple_config(&[closed_port_addr()]))
            .await
            .unwrap();

        let reply = gateway.get("/").await;

        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.error_kind(), Some("upstream-connect-failure"));
        let _ = reply.json();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504_upstream_timeout_after_route_timeout() {
    bounded(async {
        let upstream = Server::http1().hang().run().await;
        let yaml = format!(
            "listeners:
  - name: public
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: slow
    timeout: 300ms
clusters:
  - name: slow
    endpoints:
      - address: {}
",
            upstream.addr()
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let reply = tokio::time::timeout(Duration::from_secs(30), gateway.get("/"))
            .await
            .expect("the route timeout ends the request");

        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(reply.error_kind(), Some("upstream-timeout"));
        assert_eq!(upstream.requests(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_larger_than_max_body_size_gets_413() {
    bounded(async {
        let upstream = Server::http1().sink().run().await;
        let yaml = format!(
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
    max_body_size: 1KiB
clusters:
  - name: backend
    endpoints:
      - address: {}
",
            upstream.addr()
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let small = Request::post(gateway.url("public", "/"))
            .body(body::full(vec![0u8; 512]))
            .unwrap();
        let reply = client::send(&client::http1(), small).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);

        let large = Request::post(gateway.url("public", "/"))
            .body(PatternBody::new(64 * 1024, true).boxed())
            .unwrap();
        let reply = client::send(&client::http1(), large).await.unwrap();
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.error_kind(), Some("payload-too-large"));
    })
    .await;
}
