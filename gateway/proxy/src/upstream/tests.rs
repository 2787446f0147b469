//! Cluster tests against real loopback upstreams (plain, HTTP/2, TLS) and the real resolver.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use levee_balance::PickContext;
use levee_config::{DnsDiscovery, LbPolicy, UpstreamProtocol, UpstreamTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Cluster, UpstreamError};
use crate::body;
use crate::metrics::Metrics;

// === test upstream ===

/// A loopback upstream that answers `host=<host>;path=<path>;version=<version>` and counts
/// accepted connections. Aborted on drop.
struct Upstream {
    address: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Http1,
    Http2,
}

impl Upstream {
    async fn start(wire: Wire, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                let served_by = address.to_string();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, wire, served_by).await,
                        Some(config) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                            {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve(stream, if h2 { Wire::Http2 } else { wire }, served_by).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            address,
            accepts,
            task,
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

async fn serve<I>(io: I, wire: Wire, served_by: String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = service_fn(move |req| {
        let served_by = served_by.clone();
        async move {
            let mut response = handle(req).await?;
            if let Ok(value) = http::HeaderValue::from_str(&served_by) {
                response.headers_mut().insert("x-served-by", value);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let _ = match wire {
        Wire::Http1 => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
        Wire::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
    };
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "echo")
            .body(Full::default())
            .expect("response");
        return Ok(response);
    }
    if req.uri().path() == "/big" {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 64 * 1024]))));
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let text = format!(
        "host={host};path={};version={:?}",
        req.uri().path_and_query().map_or("", |p| p.as_str()),
        req.version()
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

// === helpers ===

fn cluster_config(name: &str, endpoints: &[SocketAddr]) -> levee_config::Cluster {
    levee_config::Cluster {
        name: name.to_owned(),
        lb: LbPolicy::RoundRobin,
        hash_on: None,
        endpoints: endpoints
            .iter()
            .map(|a| levee_config::Endpoint {
                address: *a,
                weight: 1,
                priority: 0,
            })
            .collect(),
        discovery: None,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_idle_per_endpoint: 64,
        protocol: UpstreamProtocol::Http1,
        tls: None,
        health_check: None,
        outlier_detection: Default::default(),
        circuit_breaker: None,
        limits: Default::default(),
        panic_threshold: 0.5,
        panic_mode: levee_config::PanicMode::Spread,
    }
}

fn build(config: &levee_config::Cluster) -> Cluster {
    Cluster::build(config, None, &Metrics::new()).expect("cluster builds")
}

fn get(path: &str, host: &str) -> Request<body::ProxyBody> {
    Request::builder()
        .uri(path)
        .header(http::header::HOST, host)
        .body(body::empty())
        .expect("request")
}

async fn send(
    cluster: &Cluster,
    req: Request<body::ProxyBody>,
) -> Result<(Response<()>, String), UpstreamError> {
    let endpoint = cluster.pick(&PickContext::default()).expect("an endpoint");
    let response = cluster.send(&endpoint, req).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Ok((
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "levee-upstream-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA (written as PEM into `dir`) and a server config for a leaf certificate for `name`.
fn private_ca(dir: &TempDir, name: &str, alpn: &[&[u8]]) -> (PathBuf, Arc<rustls::ServerConfig>) {
    private_ca_verifying(dir, name, alpn, None)
}

/// A self-signed test CA.
fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca")
}

/// Like [`private_ca`]; with `clients`, the server requires client certificates of that CA.
fn private_ca_verifying(
    dir: &TempDir,
    name: &str,
    alpn: &[&[u8]],
    clients: Option<&rcgen::CertifiedIssuer<'static, rcgen::KeyPair>>,
) -> (PathBuf, Arc<rustls::ServerConfig>) {
    use rcgen::{CertificateParams, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let issuer = test_ca();
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, issuer.pem()).expect("write ca");

    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match clients {
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(clients.der().clone()).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca_path, Arc::new(config))
}

// === sending ===

#[tokio::test]
async fn sends_request_with_downstream_host_and_path() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("web", &[upstream.address]));

    let (response, text) = send(&cluster, get("/a/b?x=1", "svc.example"))
        .await
        .expect("response");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text, "host=svc.example;path=/a/b?x=1;version=HTTP/1.1");
}

#[tokio::test]
async fn reuses_one_pooled_connection_for_sequential_requests() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("web", &[upstream.address]));

    for i in 0..20 {
        let (_, text) = send(&cluster, get(&format!("/{i}"), "svc"))
            .await
            .expect("response");
        assert!(text.contains(&format!("path=/{i};")), "{text}");
    }

    assert_eq!(upstream.accepts(), 1);
    assert_eq!(cluster.status().endpoints[0].open_connections, 1);
}

#[tokio::test]
async fn each_endpoint_has_its_own_pool() {
    let a = Upstream::start(Wire::Http1, None).await;
    let b = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("pair", &[a.address, b.address]));

    let mut served = Vec::new();
    for _ in 0..10 {
        let endpoint = cluster.pick(&PickContext::default()).expect("endpoint");
        let response = cluster
            .send(&endpoint, get("/", "svc"))
            .await
            .expect("response");
        let by = response.headers()["x-served-by"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(by, endpoint.address().to_string());
        served.push(by);
        response.into_body().collect().await.expect("body");
    }

    assert!(served.contains(&a.address.to_string()));
    assert!(served.contains(&b.address.to_string()));
    assert_eq!((a.accepts(), b.accepts()), (1, 1));
}

/// Open connections to the cluster's first endpoint, once they stop changing for a moment
/// (connection tasks end a few polls after their pool lets go of them).
async fn settled_open_connections(cluster: &Cluster) -> u64 {
    let mut open = cluster.status().endpoints[0].open_connections;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = cluster.status().endpoints[0].open_connections;
        if now == open {
            return now;
        }
        open = now;
    }
    open
}

/// One request, then another before the idle timeout (reusing the connection), then a long
/// pause: the connection is closed, and the next request opens a new one.
async fn idle_connection_closes_after_the_idle_timeout(wire: Wire, protocol: UpstreamProtocol) {
    let upstream = Upstream::start(wire, None).await;
    let mut config = cluster_config("web", &[upstream.address]);
    config.protocol = protocol;
    config.idle_timeout = Duration::from_secs(10);
    let cluster = build(&config);

    send(&cluster, get("/", "svc")).await.expect("response");
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(settled_open_connections(&cluster).await, 1);
    send(&cluster, get("/", "svc")).await.expect("response");
    assert_eq!(upstream.accepts(), 1, "reused before the timeout");

    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(settled_open_connections(&cluster).await, 0);
    assert_eq!(cluster.status().endpoints[0].idle_connections, 0);
    send(&cluster, get("/", "svc")).await.expect("response");
    assert_eq!(upstream.accepts(), 2, "a new connection after it");
}

#[tokio::test(start_paused = true)]
async fn idle_http1_connections_are_closed_after_the_idle_timeout() {
    idle_connection_closes_after_the_idle_timeout(Wire::Http1, UpstreamProtocol::Http1).await;
}

#[tokio::test(start_paused = true)]
async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
    idle_connection_closes_after_the_idle_timeout(Wire::Http2, UpstreamProtocol::Http2).await;
}

/// Three requests sent at once, before any of them has a response.
async fn burst_of_three(cluster: &Cluster) -> [Response<()>; 3] {
    let (a, b, c) = tokio::join!(
        send(cluster, get("/a", "svc")),
        send(cluster, get("/b", "svc")),
        send(cluster, get("/c", "svc")),
    );
    [a, b, c].map(|result| result.expect("response").0)
}

#[tokio::test]
async fn no_more_than_max_idle_connections_stay_open() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let mut config = cluster_config("web", &[upstream.address]);
    config.max_idle_per_endpoint = 1;
    let cluster = build(&config);

    // Three at once find no idle connection, so each opens its own.
    burst_of_three(&cluster).await;
    assert_eq!(upstream.accepts(), 3);

    assert_eq!(settled_open_connections(&cluster).await, 1);
    assert_eq!(cluster.status().endpoints[0].idle_connections, 1);
}

#[tokio::test]
async fn http2_requests_share_one_connection_opened_once() {
    let upstream = Upstream::start(Wire::Http2, None).await;
    let mut config = cluster_config("grpc", &[upstream.address]);
    config.protocol = UpstreamProtocol::Http2;
    let cluster = build(&config);

    // A burst before any connection exists waits for one connect, not one each.
    for response in burst_of_three(&cluster).await {
        assert_eq!(response.version(), Version::HTTP_2);
    }

    assert_eq!(upstream.accepts(), 1);
}

#[tokio::test]
async fn a_body_dropped_half_read_does_not_return_its_connection() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("web", &[upstream.address]));
    let endpoint = cluster.pick(&PickContext::default()).expect("endpoint");

    // 64 KiB do not arrive in one read, so dropping the body after one frame leaves bytes unread.
    let response = cluster
        .send(&endpoint, get("/big", "svc"))
        .await
        .expect("response");
    let mut body = response.into_body();
    body.frame().await.expect("a frame").expect("data");
    drop(body);
    send(&cluster, get("/", "svc")).await.expect("response");

    assert_eq!(upstream.accepts(), 2);
}

#[tokio::test]
async fn a_connection_still_sending_a_request_body_is_not_waited_for() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        // Answers every request head at once, without reading any body: an early answer.
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let cluster = build(&cluster_config("early", &[address]));

    // The first request's body never ends while the test runs; its answer comes anyway.
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    body_tx
        .send(Bytes::from_static(b"part"))
        .await
        .expect("send");
    let chunks = futures_util::stream::unfold(body_rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, body::BoxError>(http_body::Frame::data(chunk)), rx))
    });
    let upload = Request::builder()
        .method(http::Method::POST)
        .uri("/upload")
        .header(http::header::HOST, "svc")
        .body(http_body_util::StreamBody::new(chunks).boxed())
        .expect("request");
    let (first, _) = send(&cluster, upload).await.expect("early answer");
    assert_eq!(first.status(), StatusCode::OK);

    // The next request must not queue behind that upload: it takes a new connection.
    let next = tokio::time::timeout(Duration::from_secs(10), send(&cluster, get("/", "svc")))
        .await
        .expect("not stuck behind the upload")
        .expect("response");
    assert_eq!(next.1, "ok");
    drop(body_tx);
    server.abort();
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_costs_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    let server = tokio::spawn(async move {
        // Answers one request per connection as if keeping it alive, then hangs up.
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            drop(tcp);
        }
    });
    let cluster = build(&cluster_config("flaky", &[address]));

    for _ in 0..3 {
        let (response, text) = send(&cluster, get("/", "svc")).await.expect("response");
        assert_eq!((response.status(), text.as_str()), (StatusCode::OK, "ok"));
        // The hang-up has reached the pooled connection, which is closed but still listed.
        assert_eq!(settled_open_connections(&cluster).await, 0);
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test]
async fn closed_connections_are_no_longer_counted_open() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("web", &[upstream.address]));
    let mut req = get("/", "svc");
    req.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );

    send(&cluster, req).await.expect("response");

    let mut open = cluster.status().endpoints[0].open_connections;
    for _ in 0..200 {
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = cluster.status().endpoints[0].open_connections;
    }
    assert_eq!(open, 0);
    assert_eq!(upstream.accepts(), 1);
}

#[tokio::test]
async fn closed_port_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    drop(listener);
    let cluster = build(&cluster_config("gone", &[address]));

    let error = send(&cluster, get("/", "svc"))
        .await
        .expect_err("must fail");

    assert_eq!(error.kind(), "upstream-connect-failure");
    assert!(error.is_connect());
}

#[tokio::test]
async fn connection_closed_before_response_is_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        // Reads the request head, then hangs up without answering.
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            drop(tcp);
        }
    });
    let cluster = build(&cluster_config("rude", &[address]));

    let error = send(&cluster, get("/", "svc"))
        .await
        .expect_err("must fail");

    assert_eq!(error.kind(), "upstream-reset", "{error}");
    assert!(!error.is_connect());
    server.abort();
}

#[tokio::test]
async fn http2_stream_reset_by_the_upstream_is_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    // An HTTP/2 upstream that answers every request with RST_STREAM.
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            });
        }
    });
    let mut config = cluster_config("resetting", &[address]);
    config.protocol = UpstreamProtocol::Http2;
    let cluster = build(&config);

    let error = send(&cluster, get("/", "svc"))
        .await
        .expect_err("must fail");

    assert_eq!(error.kind(), "upstream-reset", "{error}");
    assert!(!error.is_connect());
    server.abort();
}

#[tokio::test]
async fn stalled_tls_handshake_is_a_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    // Accepts and never answers, so the TLS handshake cannot finish.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let mut config = cluster_config("slow", &[address]);
    config.connect_timeout = Duration::from_millis(200);
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: None,
        client_cert: None,
    });
    let cluster = build(&config);

    let error = send(&cluster, get("/", "svc"))
        .await
        .expect_err("must fail");

    assert_eq!(error.kind(), "upstream-connect-timeout", "{error}");
    server.abort();
}

#[tokio::test]
async fn http2_prior_knowledge_sends_host_as_authority() {
    let upstream = Upstream::start(Wire::Http2, None).await;
    let mut config = cluster_config("grpc", &[upstream.address]);
    config.protocol = UpstreamProtocol::Http2;
    let cluster = build(&config);

    for _ in 0..3 {
        let (response, text) = send(&cluster, get("/h2", "api.example"))
            .await
            .expect("response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(text, "host=api.example;path=/h2;version=HTTP/2.0");
    }
    assert_eq!(upstream.accepts(), 1);
}

#[tokio::test]
async fn upgrade_response_hands_over_the_connection() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let cluster = build(&cluster_config("ws", &[upstream.address]));
    let endpoint = cluster.pick(&PickContext::default()).expect("endpoint");
    let req = Request::builder()
        .uri("/chat")
        .header(http::header::HOST, "svc")
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "echo")
        .body(body::empty())
        .expect("request");

    let mut response = cluster.send(&endpoint, req).await.expect("response");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = tokio::time::timeout(Duration::from_secs(10), hyper::upgrade::on(&mut response))
        .await
        .expect("in time")
        .expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&buf, b"ping");
}

// === TLS ===

#[tokio::test]
async fn tls_upstream_is_verified_against_the_ca_file_and_sni() {
    let dir = TempDir::new();
    let (ca_file, server) = private_ca(&dir, "upstream.test", &[b"http/1.1"]);
    let upstream = Upstream::start(Wire::Http1, Some(server)).await;
    let mut config = cluster_config("secure", &[upstream.address]);
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(ca_file.clone()),
        client_cert: None,
    });
    let cluster = build(&config);

    let (_, text) = send(&cluster, get("/tls", "svc")).await.expect("response");
    assert_eq!(text, "host=svc;path=/tls;version=HTTP/1.1");

    config.tls = Some(UpstreamTls {
        sni: "other.test".into(),
        ca_file: Some(ca_file),
        client_cert: None,
    });
    let wrong_name = build(&config);
    let error = send(&wrong_name, get("/tls", "svc"))
        .await
        .expect_err("name mismatch");
    assert_eq!(error.kind(), "upstream-tls", "{error}");
}

#[tokio::test]
async fn tls_upstream_negotiates_h2_by_alpn() {
    let dir = TempDir::new();
    let (ca_file, server) = private_ca(&dir, "upstream.test", &[b"h2"]);
    let upstream = Upstream::start(Wire::Http1, Some(server)).await;
    let mut config = cluster_config("secure-h2", &[upstream.address]);
    config.protocol = UpstreamProtocol::Http2;
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(ca_file),
        client_cert: None,
    });
    let cluster = build(&config);

    let (response, text) = send(&cluster, get("/x", "api")).await.expect("response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(text, "host=api;path=/x;version=HTTP/2.0");
}

#[tokio::test]
async fn upstream_requiring_client_certificates_is_reached_only_with_cert_and_key() {
    let dir = TempDir::new();
    let clients = test_ca();
    let (ca_file, server) =
        private_ca_verifying(&dir, "upstream.test", &[b"http/1.1"], Some(&clients));
    let upstream = Upstream::start(Wire::Http1, Some(server)).await;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["gateway.test".to_owned()])
        .expect("params")
        .signed_by(&key, &clients)
        .expect("client cert");
    let pair = levee_config::CertificatePair {
        cert: dir.0.join("client.pem"),
        key: dir.0.join("client.key"),
    };
    std::fs::write(&pair.cert, cert.pem()).expect("write cert");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write key");

    let mut config = cluster_config("mtls", &[upstream.address]);
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(ca_file),
        client_cert: None,
    });
    let anonymous = build(&config);
    send(&anonymous, get("/", "svc"))
        .await
        .expect_err("no client certificate");

    if let Some(tls) = &mut config.tls {
        tls.client_cert = Some(pair);
    }
    let identified = build(&config);
    let (_, text) = send(&identified, get("/mtls", "svc"))
        .await
        .expect("response");
    assert_eq!(text, "host=svc;path=/mtls;version=HTTP/1.1");
}

#[test]
fn unreadable_client_certificate_fails_the_build() {
    let dir = TempDir::new();
    let (ca_file, _) = private_ca(&dir, "upstream.test", &[]);
    let mut config = cluster_config("mtls", &["127.0.0.1:1".parse().expect("addr")]);
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    for (cert, key, named) in [
        (dir.0.join("missing.pem"), garbage.clone(), "missing.pem"),
        (garbage.clone(), garbage.clone(), "garbage.pem"),
    ] {
        config.tls = Some(UpstreamTls {
            sni: "upstream.test".into(),
            ca_file: Some(ca_file.clone()),
            client_cert: Some(levee_config::CertificatePair { cert, key }),
        });
        let error = Cluster::build(&config, None, &Metrics::new()).expect_err("bad identity");
        assert!(error.to_string().contains(named), "{error}");
    }
}

#[test]
fn unreadable_or_invalid_ca_file_fails_the_build() {
    let dir = TempDir::new();
    let mut config = cluster_config("secure", &["127.0.0.1:1".parse().expect("addr")]);
    let missing = dir.0.join("missing.pem");
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(missing.clone()),
        client_cert: None,
    });
    let error = Cluster::build(&config, None, &Metrics::new()).expect_err("missing file");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(garbage),
        client_cert: None,
    });
    let error = Cluster::build(&config, None, &Metrics::new()).expect_err("no certificate");
    assert!(error.to_string().contains("garbage.pem"), "{error}");
}

// === reload carry-over ===

#[tokio::test]
async fn reload_keeps_pools_only_when_connection_settings_are_unchanged() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let metrics = Metrics::new();
    let config = cluster_config("web", &[upstream.address]);
    let first = Cluster::build(&config, None, &metrics).expect("build");
    send(&first, get("/", "svc")).await.expect("response");

    let mut reweighted = config.clone();
    reweighted.endpoints[0].weight = 5;
    let second = Cluster::build(&reweighted, Some(&first), &metrics).expect("build");
    assert!(Arc::ptr_eq(&first.pools, &second.pools));
    send(&second, get("/", "svc")).await.expect("response");
    assert_eq!(
        upstream.accepts(),
        1,
        "pooled connection survives the reload"
    );

    let mut slower = reweighted.clone();
    slower.connect_timeout = Duration::from_secs(9);
    let third = Cluster::build(&slower, Some(&second), &metrics).expect("build");
    assert!(!Arc::ptr_eq(&second.pools, &third.pools));
}

#[test]
fn reload_rebuilds_pools_when_the_client_certificate_content_changes() {
    let dir = TempDir::new();
    let (ca_file, _) = private_ca(&dir, "upstream.test", &[]);
    let clients = test_ca();
    let pair = levee_config::CertificatePair {
        cert: dir.0.join("client.pem"),
        key: dir.0.join("client.key"),
    };
    let issue = || {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["gateway.test".to_owned()])
            .expect("params")
            .signed_by(&key, &clients)
            .expect("client cert");
        std::fs::write(&pair.cert, cert.pem()).expect("write cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
    };
    issue();
    let metrics = Metrics::new();
    let mut config = cluster_config("mtls", &["127.0.0.1:1".parse().expect("addr")]);
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(ca_file),
        client_cert: Some(pair.clone()),
    });
    let first = Cluster::build(&config, None, &metrics).expect("build");
    let second = Cluster::build(&config, Some(&first), &metrics).expect("build");
    assert!(Arc::ptr_eq(&first.pools, &second.pools));

    // A rotated certificate at the same paths must reach new connections.
    issue();
    let third = Cluster::build(&config, Some(&second), &metrics).expect("build");
    assert!(!Arc::ptr_eq(&second.pools, &third.pools));
}

#[tokio::test]
async fn reload_rebuilds_pools_when_the_ca_file_content_changes() {
    let dir = TempDir::new();
    let (ca_file, server) = private_ca(&dir, "upstream.test", &[b"http/1.1"]);
    let upstream = Upstream::start(Wire::Http1, Some(server)).await;
    let metrics = Metrics::new();
    let mut config = cluster_config("secure", &[upstream.address]);
    config.tls = Some(UpstreamTls {
        sni: "upstream.test".into(),
        ca_file: Some(ca_file.clone()),
        client_cert: None,
    });
    let first = Cluster::build(&config, None, &metrics).expect("build");
    send(&first, get("/", "svc"))
        .await
        .expect("trusted by the first CA");

    // Unchanged file: the pool (and its open connection) is kept.
    let second = Cluster::build(&config, Some(&first), &metrics).expect("build");
    assert!(Arc::ptr_eq(&first.pools, &second.pools));

    // Same path, same config, another CA in the file: the upstream's certificate is no longer
    // trusted, which only a rebuilt client can notice (the kept pool would reuse its
    // connection and succeed).
    let (same_path, _) = private_ca(&dir, "upstream.test", &[b"http/1.1"]);
    assert_eq!(same_path, ca_file);
    let third = Cluster::build(&config, Some(&second), &metrics).expect("build");
    assert!(!Arc::ptr_eq(&second.pools, &third.pools));
    let error = send(&third, get("/", "svc"))
        .await
        .expect_err("the replaced CA does not sign the upstream's certificate");
    assert_eq!(error.kind(), "upstream-tls", "{error}");
}

// === reload in two phases ===

/// Whether `cluster`'s health checker runs, after letting an aborted one finish.
async fn checker_runs(cluster: &Cluster) -> bool {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    cluster.checker.get().is_some_and(|c| c.is_running())
}

#[tokio::test]
async fn health_checker_moves_to_the_next_cluster_only_at_commit() {
    let metrics = Metrics::new();
    let address: SocketAddr = "127.0.0.1:1001".parse().expect("addr");
    let config = cluster_config("web", &[address]);
    let first = Cluster::build(&config, None, &metrics).expect("build");
    assert!(checker_runs(&first).await);

    let moved = cluster_config("web", &["127.0.0.1:1002".parse().expect("addr")]);
    let (rejected, pending) = Cluster::prepare(&moved, Some(&first), &metrics).expect("prepare");
    assert!(
        !checker_runs(&rejected).await,
        "a prepared cluster checks nothing"
    );
    drop((rejected, pending));
    assert!(checker_runs(&first).await);
    let tracked: Vec<SocketAddr> = first
        .guards
        .health
        .endpoints()
        .iter()
        .map(|e| e.address())
        .collect();
    assert_eq!(tracked, vec![address]);

    let (next, pending) = Cluster::prepare(&moved, Some(&first), &metrics).expect("prepare");
    first.stop_checker();
    next.commit(pending);
    assert!(!checker_runs(&first).await);
    assert!(checker_runs(&next).await);
    assert!(Arc::ptr_eq(&first.guards.health, &next.guards.health));
}

// === DNS discovery ===

fn discovered_config(name: &str, dns: String) -> levee_config::Cluster {
    let mut config = cluster_config(name, &[]);
    config.discovery = Some(DnsDiscovery {
        dns,
        refresh: Duration::from_millis(50),
    });
    config
}

#[tokio::test]
async fn dns_discovery_finds_localhost_endpoints() {
    let upstream = Upstream::start(Wire::Http1, None).await;
    let port = upstream.address.port();
    let cluster = build(&discovered_config("dns", format!("localhost:{port}")));

    cluster.resolve(Duration::from_secs(10)).await;

    let discovered = cluster.endpoints.discovered();
    assert!(
        discovered.iter().any(|e| e.address() == upstream.address),
        "{discovered:?}"
    );
    assert!(discovered.iter().all(|e| e.address().port() == port));
    assert_eq!(cluster.status().endpoints[0].source, "dns");

    // ::1 may be among the answers without anyone listening there, so only IPv4 is sent to.
    let v6: Vec<SocketAddr> = discovered
        .iter()
        .map(|e| e.address())
        .filter(SocketAddr::is_ipv6)
        .collect();
    let endpoint = cluster
        .pick(&PickContext {
            hash: None,
            exclude: &v6,
        })
        .expect("endpoint");
    let response = cluster
        .send(&endpoint, get("/", "svc"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn dns_failure_keeps_the_last_good_endpoints() {
    let cluster = build(&discovered_config("dns", "levee-test.invalid:80".into()));
    cluster.resolve(Duration::from_secs(10)).await;
    assert!(cluster.pick(&PickContext::default()).is_none());

    let good: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    assert!(cluster.endpoints.replace_discovered(&[good]));
    let discovery = cluster.discovery.as_ref().expect("discovery");
    assert!(!discovery.resolve_once(&cluster.endpoints).await);

    let kept: Vec<SocketAddr> = cluster.endpoints().iter().map(|e| e.address()).collect();
    assert_eq!(kept, vec![good]);
}

#[tokio::test]
async fn reload_starts_with_the_previous_discovered_endpoints() {
    let metrics = Metrics::new();
    let config = discovered_config("dns", "levee-test.invalid:80".into());
    let first = Cluster::build(&config, None, &metrics).expect("build");
    let address: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    first.endpoints.replace_discovered(&[address]);
    let endpoint = first.pick(&PickContext::default()).expect("endpoint");
    let _in_flight = endpoint.start();

    let second = Cluster::build(&config, Some(&first), &metrics).expect("build");

    let carried = second
        .pick(&PickContext::default())
        .expect("no gap after reload");
    assert!(Arc::ptr_eq(&carried, &endpoint));
    assert_eq!(carried.in_flight(), 1);
}

#[tokio::test]
async fn discovered_address_made_static_on_reload_is_listed_once() {
    let metrics = Metrics::new();
    let config = discovered_config("dns", "levee-test.invalid:80".into());
    let first = Cluster::build(&config, None, &metrics).expect("build");
    let address: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    first.endpoints.replace_discovered(&[address]);
    let endpoint = first.pick(&PickContext::default()).expect("endpoint");

    let mut with_static = config.clone();
    with_static.endpoints = cluster_config("dns", &[address]).endpoints;
    let second = Cluster::build(&with_static, Some(&first), &metrics).expect("build");

    let endpoints = second.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert!(Arc::ptr_eq(&endpoints[0], &endpoint));
    assert_eq!(second.status().endpoints[0].source, "static");
}

#[tokio::test]
async fn discovery_task_stops_when_the_cluster_is_dropped() {
    let cluster = build(&discovered_config("dns", "levee-test.invalid:80".into()));
    let task = cluster
        .discovery
        .as_ref()
        .and_then(|d| d.task())
        .expect("discovery started inside the runtime");
    assert!(!task.is_finished());

    drop(cluster);

    for _ in 0..1000 {
        if task.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(task.is_finished());
}
