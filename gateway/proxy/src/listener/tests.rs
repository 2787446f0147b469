//! Listener tests over real sockets on 127.0.0.1 with a real proxy over an empty snapshot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use levee_config::{
    Admin, CertificatePair, ClientAuth, ClientAuthMode, Config, Listener, ListenerLimits,
    ListenerTls, Log, Shutdown, TlsVersion,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ListenerSet;
use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::snapshot::{BuildContext, Snapshot};

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

// === fixtures ===

fn limits() -> ListenerLimits {
    ListenerLimits {
        // Longer than PATIENCE, so only the limit under test can close a connection in time.
        header_read_timeout: Duration::from_secs(60),
        max_header_size: 64 * 1024,
        max_headers: 100,
        max_connections: 10_000,
        max_connections_per_client: None,
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(30),
        http2_max_concurrent_streams: 100,
        http2_max_pending_resets: 20,
    }
}

fn listener(name: &str) -> Listener {
    Listener {
        name: name.to_owned(),
        address: "127.0.0.1:0".parse().expect("address"),
        tls: None,
        limits: limits(),
        path_normalization: Default::default(),
        trust_client_headers: false,
    }
}

fn listener_set() -> ListenerSet {
    let metrics = Metrics::new();
    let config = Config {
        listeners: vec![listener("public")],
        admin: Admin {
            address: "127.0.0.1:0".parse().expect("address"),
            token_file: None,
        },
        routes: vec![],
        clusters: vec![],
        cache: Default::default(),
        plugins: Vec::new(),
        shutdown: Shutdown {
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(1),
        },
        log: Log {
            level: "info".into(),
            access_log: false,
        },
    };
    let snapshot = Snapshot::build(
        Arc::new(config),
        1,
        "h".into(),
        None,
        &BuildContext::new(metrics.clone()),
    )
    .expect("snapshot");
    let proxy = Proxy::new(
        Arc::new(ArcSwap::from_pointee(snapshot)),
        metrics.clone(),
        AccessLog::new(false),
    );
    ListenerSet::new(proxy, metrics)
}

async fn started(listeners: &[Listener]) -> ListenerSet {
    let set = listener_set();
    set.apply(listeners).await.expect("apply");
    set
}

fn addr(set: &ListenerSet, name: &str) -> SocketAddr {
    set.local_addr(name).expect("listener is bound")
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "levee-listener-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA that issues leaf certificates.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Levee test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a leaf for `names` to `dir` as `{file}.pem` / `{file}.key`; returns the pair and
    /// the certificate's DER.
    fn leaf(&self, dir: &TempDir, file: &str, names: &[&str]) -> (CertificatePair, Vec<u8>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("leaf cert");
        let pair = CertificatePair {
            cert: dir.path(&format!("{file}.pem")),
            key: dir.path(&format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        (pair, cert.der().to_vec())
    }

    fn client(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA pem"))
            .expect("add CA");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A client trusting this CA that presents a certificate issued by `issuer`, if any.
    fn client_presenting(&self, issuer: Option<&Pki>) -> ClientConfig {
        let Some(issuer) = issuer else {
            return self.client(&[], BOTH);
        };
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["client.test".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer.issuer)
            .expect("client cert");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA pem"))
            .expect("add CA");
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(BOTH)
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key pem"),
            )
            .expect("client auth cert")
    }
}

fn tls_listener(name: &str, certificates: Vec<CertificatePair>, min: TlsVersion) -> Listener {
    Listener {
        tls: Some(ListenerTls {
            certificates,
            min_version: min,
            client_auth: None,
        }),
        ..listener(name)
    }
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    tokio::time::timeout(
        PATIENCE,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(std::io::Error::other)?
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().expect("peer certs")[0].to_vec()
}

fn leaf_names(der: &[u8]) -> Vec<String> {
    let der = CertificateDer::from(der);
    webpki::EndEntityCert::try_from(&der)
        .expect("parse leaf")
        .valid_dns_names()
        .map(str::to_owned)
        .collect()
}

// === clients ===

fn get() -> Request<Empty<Bytes>> {
    Request::get("http://test/")
        .body(Empty::new())
        .expect("request")
}

/// Sends one HTTP/1.1 request on `io` and returns the response's version.
async fn h1_request<I>(io: I) -> Version
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let res = tokio::time::timeout(PATIENCE, sender.send_request(get()))
        .await
        .expect("answer in time")
        .expect("response");
    res.version()
}

/// Sends one HTTP/2 request on `io` and returns the response's version.
async fn h2_request<I>(io: I) -> Version
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let res = tokio::time::timeout(PATIENCE, sender.send_request(get()))
        .await
        .expect("answer in time")
        .expect("response");
    res.version()
}

/// Reads until the end of a response head or EOF (bounded by [`PATIENCE`]).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("head or EOF in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closes `stream` (EOF or reset) within [`PATIENCE`], ignoring any bytes.
async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.is_ok()
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// === plain HTTP ===

#[tokio::test]
async fn answers_http1_and_h2c_prior_knowledge_on_plain_tcp() {
    let set = started(&[listener("public")]).await;
    let addr = addr(&set, "public");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(h2_request(tcp).await, Version::HTTP_2);
}

#[tokio::test]
async fn port_zero_reports_the_real_bound_port() {
    let set = started(&[listener("public")]).await;
    let addr = addr(&set, "public");
    assert_ne!(addr.port(), 0);
    assert!(set.local_addr("missing").is_none());
}

#[tokio::test]
async fn malformed_request_line_gets_400_and_the_listener_keeps_serving() {
    let set = started(&[listener("public")]).await;
    let addr = addr(&set, "public");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"THIS IS NOT A REQUEST LINE AT ALL\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 400"), "got {head:?}");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let mut l = listener("public");
    l.limits.max_header_size = 1024;
    let set = started(&[l]).await;
    let mut tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    let big = "a".repeat(4096);
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 431"), "got {head:?}");
}

/// A plain listener whose `header_read_timeout` is `timeout`, and a connection to it. The set
/// is returned too: dropping it stops the listener.
async fn connected_with_header_read_timeout(timeout: Duration) -> (ListenerSet, TcpStream) {
    let mut l = listener("public");
    l.limits.header_read_timeout = timeout;
    let set = started(&[l]).await;
    let tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    (set, tcp)
}

#[tokio::test]
async fn header_read_timeout_closes_a_connection_with_half_a_head() {
    let (_set, mut tcp) = connected_with_header_read_timeout(Duration::from_millis(200)).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .await
        .expect("write");
    // Either a 408 or a bare close is fine; the connection must not stay open.
    let head = read_head(&mut tcp).await;
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "got {head:?}"
    );
    assert!(closed_by_peer(&mut tcp).await);
}

#[tokio::test]
async fn idle_keep_alive_connection_outlives_the_header_read_timeout() {
    let mut l = listener("public");
    l.limits.header_read_timeout = Duration::from_millis(200);
    l.limits.idle_timeout = Duration::from_secs(5);
    let set = started(&[l]).await;
    let tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    let conn = tokio::spawn(conn);
    for round in 0..2 {
        if round > 0 {
            // Idle between requests for well over header_read_timeout (and under idle_timeout).
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let res = tokio::time::timeout(PATIENCE, sender.send_request(get()))
            .await
            .expect("answer in time")
            .unwrap_or_else(|e| panic!("request {round} on the kept-alive connection: {e}"));
        tokio::time::timeout(PATIENCE, res.into_body().collect())
            .await
            .expect("body in time")
            .expect("body");
    }
    assert!(!conn.is_finished(), "connection closed while idle");
}

#[tokio::test]
async fn half_sent_second_head_is_cut_at_the_header_read_timeout() {
    let (_set, mut tcp) = connected_with_header_read_timeout(Duration::from_millis(200)).await;
    // HEAD, so the response is a bare head and the stream stays in step.
    tcp.write_all(b"HEAD / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 "), "got {head:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Still open after idling past header_read_timeout: the timer starts with the next head.
    tcp.write_all(b"HEAD / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 "), "second request got {head:?}");

    tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .await
        .expect("write");
    // idle_timeout is 60s, so only the header-read deadline can close it in time.
    assert!(
        closed_by_peer(&mut tcp).await,
        "half-sent head on a kept-alive connection stays open"
    );
}

#[tokio::test]
async fn a_head_begun_in_the_same_write_as_a_request_is_cut_at_the_header_read_timeout() {
    let (_set, mut tcp) = connected_with_header_read_timeout(Duration::from_millis(300)).await;
    // One write: a whole request, then the first byte of the next head. hyper reads both;
    // the stray byte outlives the parked connection and is given to a fresh one, and its
    // header-read deadline must still run.
    tcp.write_all(b"HEAD / HTTP/1.1\r\nhost: test\r\n\r\nG")
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 "), "got {head:?}");
    // idle_timeout is 60s, so only the header-read deadline can close it in time.
    assert!(
        closed_by_peer(&mut tcp).await,
        "a head begun with the previous request stays open"
    );
}

#[tokio::test]
async fn tls_connection_that_sends_no_request_is_closed_at_the_header_read_timeout() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (pair, _) = pki.leaf(&dir, "a", &["a.test"]);
    let mut l = tls_listener("tls", vec![pair], TlsVersion::Tls12);
    l.limits.header_read_timeout = Duration::from_millis(300);
    let set = started(&[l]).await;
    // The handshake completes; then the client says nothing (slowloris).
    let mut tls = tls_connect(
        addr(&set, "tls"),
        "a.test",
        pki.client(&[b"http/1.1"], BOTH),
    )
    .await
    .expect("handshake");
    assert!(
        closed_by_peer(&mut tls).await,
        "silent connection stays open"
    );
    assert!(eventually(|| set.open_connections() == 0).await);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let mut l = listener("public");
    l.limits.idle_timeout = Duration::from_millis(200);
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 "), "got {head:?}");
    assert!(
        closed_by_peer(&mut tcp).await,
        "idle HTTP/1.1 connection stays open"
    );

    // HTTP/2 has no header-read timer at all, so this is the only thing that closes it.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    sender.send_request(get()).await.expect("response");
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection stays open");
}

/// An HTTP/1.1 connection to `addr` from `ip` (any 127/8 address reaches loopback on Linux)
/// that has had one answer, so it was admitted, and is now idle keep-alive.
async fn served_connection_from(addr: SocketAddr, ip: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("address"))
        .expect("bind client");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 "));
    stream
}

#[tokio::test]
async fn the_oldest_idle_connection_makes_room_at_max_connections() {
    let mut l = listener("public");
    l.limits.max_connections = 2;
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    // One client holds every slot with idle keep-alive connections.
    let mut oldest = served_connection_from(addr, "127.0.0.1").await;
    let mut newer = served_connection_from(addr, "127.0.0.1").await;
    assert_eq!(set.open_connections(), 2);

    // Another client is still served; the connection idle the longest is closed for it.
    let other = served_connection_from(addr, "127.0.0.2").await;
    assert!(
        closed_by_peer(&mut oldest).await,
        "the oldest idle connection is open"
    );
    assert!(eventually(|| set.open_connections() == 2).await);
    newer
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    assert!(read_head(&mut newer).await.contains("HTTP/1.1 "));
    drop(other);
}

#[tokio::test]
async fn a_client_over_max_connections_per_client_is_closed_at_accept() {
    let mut l = listener("public");
    l.limits.max_connections_per_client = Some(3);
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(served_connection_from(addr, "127.0.0.1").await);
    }
    let mut fourth = TcpStream::connect(addr).await.expect("kernel accepts");
    let _ = fourth
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    let head = read_head(&mut fourth).await;
    assert!(head.is_empty(), "a fourth connection was served: {head:?}");

    // Another address is still served, and a closed connection frees the client's place.
    let other = served_connection_from(addr, "127.0.0.2").await;
    drop(held.pop());
    assert!(eventually(|| set.open_connections() == 3).await);
    held.push(served_connection_from(addr, "127.0.0.1").await);
    drop(other);
}

// === TLS ===

#[tokio::test]
async fn tls_negotiates_h2_or_http1_by_alpn() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (pair, _) = pki.leaf(&dir, "a", &["a.test"]);
    let set = started(&[tls_listener("tls", vec![pair], TlsVersion::Tls12)]).await;
    let addr = addr(&set, "tls");

    let tls = tls_connect(addr, "a.test", pki.client(&[b"h2", b"http/1.1"], BOTH))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(h2_request(tls).await, Version::HTTP_2);

    let tls = tls_connect(addr, "a.test", pki.client(&[b"http/1.1"], BOTH))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(h1_request(tls).await, Version::HTTP_11);

    // No ALPN at all means HTTP/1.1.
    let tls = tls_connect(addr, "a.test", pki.client(&[], BOTH))
        .await
        .expect("handshake");
    assert_eq!(h1_request(tls).await, Version::HTTP_11);
}

#[tokio::test]
async fn sni_picks_the_certificate_naming_the_host() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (a, a_der) = pki.leaf(&dir, "a", &["a.test"]);
    let (b, b_der) = pki.leaf(&dir, "b", &["b.test"]);
    let (w, w_der) = pki.leaf(&dir, "w", &["*.wild.test"]);
    let set = started(&[tls_listener("tls", vec![a, b, w], TlsVersion::Tls12)]).await;
    let addr = addr(&set, "tls");

    let tls = tls_connect(addr, "b.test", pki.client(&[], BOTH))
        .await
        .expect("handshake for b");
    assert_eq!(peer_leaf(&tls), b_der);
    assert_eq!(leaf_names(&peer_leaf(&tls)), ["b.test"]);

    let tls = tls_connect(addr, "a.test", pki.client(&[], BOTH))
        .await
        .expect("handshake for a");
    assert_eq!(peer_leaf(&tls), a_der);

    let tls = tls_connect(addr, "x.wild.test", pki.client(&[], BOTH))
        .await
        .expect("handshake for the wildcard");
    assert_eq!(peer_leaf(&tls), w_der);

    // Without SNI the first certificate is served.
    let mut no_sni = pki.client(&[], BOTH);
    no_sni.enable_sni = false;
    let tls = tls_connect(addr, "a.test", no_sni)
        .await
        .expect("handshake without SNI");
    assert_eq!(peer_leaf(&tls), a_der);
}

#[tokio::test]
async fn replaced_certificate_is_served_to_new_handshakes_after_apply() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (pair, old_der) = pki.leaf(&dir, "a", &["a.test"]);
    let listeners = [tls_listener("tls", vec![pair], TlsVersion::Tls12)];
    let set = started(&listeners).await;
    let addr = addr(&set, "tls");

    let tls = tls_connect(addr, "a.test", pki.client(&[], BOTH))
        .await
        .expect("handshake");
    assert_eq!(peer_leaf(&tls), old_der);

    // Same file names, new certificate and key.
    let (_, new_der) = pki.leaf(&dir, "a", &["a.test"]);
    assert_ne!(old_der, new_der);
    set.apply(&listeners).await.expect("reload");
    assert_eq!(set.local_addr("tls"), Some(addr), "no rebind");

    let tls = tls_connect(addr, "a.test", pki.client(&[], BOTH))
        .await
        .expect("handshake");
    assert_eq!(peer_leaf(&tls), new_der);
}

#[tokio::test]
async fn tls_1_2_is_accepted_unless_min_version_is_1_3() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (pair, _) = pki.leaf(&dir, "a", &["a.test"]);
    let set = started(&[
        tls_listener("v12", vec![pair.clone()], TlsVersion::Tls12),
        tls_listener("v13", vec![pair], TlsVersion::Tls13),
    ])
    .await;
    let only12 = &[&rustls::version::TLS12];

    let tls = tls_connect(addr(&set, "v12"), "a.test", pki.client(&[], only12))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let refused = tls_connect(addr(&set, "v13"), "a.test", pki.client(&[], only12)).await;
    assert!(refused.is_err(), "TLS 1.2 accepted by a 1.3-only listener");
    let tls = tls_connect(addr(&set, "v13"), "a.test", pki.client(&[], BOTH))
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// A minimal TLS 1.1 ClientHello (no extensions) offering two CBC suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).expect("len")];
    handshake.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(handshake.len()).expect("len"),
    ];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_client_hello_gets_no_server_hello() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let (pair, _) = pki.leaf(&dir, "a", &["a.test"]);
    let set = started(&[tls_listener("tls", vec![pair], TlsVersion::Tls12)]).await;
    let mut tcp = TcpStream::connect(addr(&set, "tls"))
        .await
        .expect("connect");
    tcp.write_all(&tls11_client_hello()).await.expect("write");
    let mut reply = [0u8; 7];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut reply))
        .await
        .expect("reply or close in time")
        .unwrap_or(0);
    // 0x15 is an alert record (protocol_version); 0x16 would be a ServerHello.
    assert!(n == 0 || reply[0] == 0x15, "got {:?}", &reply[..n]);
}

#[tokio::test]
async fn missing_certificate_file_is_an_error_naming_it_and_changes_nothing() {
    let set = started(&[listener("public")]).await;
    let before = addr(&set, "public");
    let missing = PathBuf::from("/nonexistent/levee-test/cert.pem");
    let bad = tls_listener(
        "tls",
        vec![CertificatePair {
            cert: missing.clone(),
            key: missing.with_extension("key"),
        }],
        TlsVersion::Tls12,
    );
    let err = set.apply(&[bad]).await.expect_err("apply must fail");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    assert_eq!(set.local_addr("public"), Some(before));
    assert!(set.local_addr("tls").is_none());
    let tcp = TcpStream::connect(before).await.expect("still listening");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);
}

// === reload and drain ===

#[tokio::test]
async fn changed_address_moves_the_listener_and_the_old_port_refuses() {
    let set = started(&[listener("public")]).await;
    let old = addr(&set, "public");

    let mut moved = listener("public");
    moved.address = "127.0.0.2:0".parse().expect("address");
    set.apply(&[moved]).await.expect("apply");
    let new = addr(&set, "public");
    assert_ne!(new, old);
    let tcp = TcpStream::connect(new).await.expect("new address listens");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);

    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(old).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "old address still accepts");
}

#[tokio::test]
async fn failed_bind_leaves_running_listeners_unchanged() {
    let set = started(&[listener("public")]).await;
    let public = addr(&set, "public");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut clash = listener("other");
    clash.address = taken.local_addr().expect("addr");

    let err = set
        .apply(&[listener("public"), clash])
        .await
        .expect_err("bind must fail");
    assert_eq!(err.name, "other");
    assert_eq!(set.local_addr("public"), Some(public));
    assert!(set.local_addr("other").is_none());

    // Removing a listener stops it.
    set.apply(&[]).await.expect("apply");
    assert!(set.local_addr("public").is_none());
    assert!(eventually(|| std::net::TcpStream::connect(public).is_err()).await);
}

#[tokio::test]
async fn prepared_listeners_change_nothing_until_committed() {
    let set = started(&[listener("public")]).await;
    let public = addr(&set, "public");
    let mut moved = listener("public");
    moved.address = "127.0.0.2:0".parse().expect("address");

    let plan = set.prepare(&[moved, listener("second")]).expect("prepare");
    assert_eq!(set.local_addr("public"), Some(public));
    assert!(set.local_addr("second").is_none());
    let tcp = TcpStream::connect(public)
        .await
        .expect("old address still serves");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);

    set.commit(plan);
    assert_ne!(addr(&set, "public"), public);
    let tcp = TcpStream::connect(addr(&set, "second"))
        .await
        .expect("new listener serves");
    assert_eq!(h1_request(tcp).await, Version::HTTP_11);
}

#[tokio::test]
async fn dropped_plan_closes_the_sockets_it_bound() {
    let set = started(&[listener("public")]).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut second = listener("second");
    second.address = free.local_addr().expect("addr");
    drop(free);

    let plan = set
        .prepare(&[listener("public"), second.clone()])
        .expect("prepare");
    assert!(std::net::TcpListener::bind(second.address).is_err());
    drop(plan);

    assert!(std::net::TcpListener::bind(second.address).is_ok());
    assert!(set.local_addr("second").is_none());
}

#[tokio::test]
async fn commit_after_stop_accepting_opens_nothing() {
    let set = started(&[listener("public")]).await;
    let plan = set
        .prepare(&[listener("public"), listener("second")])
        .expect("prepare");
    set.stop_accepting();

    set.commit(plan);
    assert!(set.local_addr("public").is_none());
    assert!(set.local_addr("second").is_none());
}

#[tokio::test]
async fn stop_accepting_refuses_new_connections() {
    let set = started(&[listener("public")]).await;
    let addr = addr(&set, "public");
    set.stop_accepting();
    assert!(eventually(|| std::net::TcpStream::connect(addr).is_err()).await);
}

#[tokio::test]
async fn drain_waits_for_a_request_still_being_sent() {
    let set = Arc::new(started(&[listener("public")]).await);
    let addr = addr(&set, "public");

    // An idle keep-alive connection is closed by the drain right away.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    assert!(read_head(&mut idle).await.starts_with("HTTP/1.1 "));

    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n")
        .await
        .expect("write");
    assert!(eventually(|| set.open_connections() == 2).await);

    set.stop_accepting();
    let drain = tokio::spawn({
        let set = set.clone();
        async move { set.drain(Duration::from_secs(30)).await }
    });
    assert!(
        closed_by_peer(&mut idle).await,
        "idle connection not closed"
    );
    assert!(
        !drain.is_finished(),
        "drain did not wait for the slow request"
    );
    assert_eq!(set.open_connections(), 1);

    slow.write_all(b"x-last: 1\r\n\r\n").await.expect("write");
    let head = read_head(&mut slow).await;
    assert!(
        head.starts_with("HTTP/1.1 "),
        "in-flight request got {head:?}"
    );
    let drained = tokio::time::timeout(PATIENCE, drain)
        .await
        .expect("drain ends")
        .expect("drain task");
    assert!(drained);
    assert_eq!(set.open_connections(), 0);
}

#[tokio::test]
async fn a_parked_connection_wakes_for_its_next_request_and_closes_at_drain() {
    let set = Arc::new(started(&[listener("public")]).await);
    let parked = set.metrics.downstream_parked("public");
    let mut tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    for _ in 0..2 {
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 "));
        // Idle past the release delay: hyper's connection is gone, the socket is kept.
        assert!(eventually(|| parked.get() == 1).await, "never parked");
        assert_eq!(set.open_connections(), 1);
    }

    set.stop_accepting();
    let drained = tokio::time::timeout(PATIENCE, set.drain(Duration::from_secs(30)))
        .await
        .expect("a parked connection does not hold up the drain");
    assert!(drained);
    assert!(
        closed_by_peer(&mut tcp).await,
        "parked connection not closed"
    );
    assert_eq!(parked.get(), 0);
}

#[tokio::test]
async fn drain_gives_up_after_the_timeout_and_closes_the_rest() {
    let set = started(&[listener("public")]).await;
    let mut slow = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n")
        .await
        .expect("write");
    assert!(eventually(|| set.open_connections() == 1).await);
    assert!(!set.drain(Duration::from_millis(200)).await);
    assert!(closed_by_peer(&mut slow).await);
    assert!(eventually(|| set.open_connections() == 0).await);
}

#[tokio::test]
async fn drain_sends_goaway_to_http2_connections() {
    let set = started(&[listener("public")]).await;
    let tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    sender.send_request(get()).await.expect("response");
    assert!(set.drain(PATIENCE).await);
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(ended.is_ok(), "client connection still open after GOAWAY");
}

#[tokio::test]
async fn too_many_request_headers_get_431() {
    let mut l = listener("public");
    l.limits.max_headers = 5;
    let set = started(&[l]).await;
    let mut tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    let headers: String = (0..10).map(|i| format!("x-h{i}: v\r\n")).collect();
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: test\r\n{headers}\r\n").as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 431"), "got {head:?}");
}

#[tokio::test]
async fn http2_settings_advertise_max_concurrent_streams() {
    let mut l = listener("public");
    l.limits.http2_max_concurrent_streams = 3;
    let set = started(&[l]).await;
    let tcp = TcpStream::connect(addr(&set, "public"))
        .await
        .expect("connect");
    let (_client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // The server's SETTINGS frame is processed while the client connection is polled.
    let advertised = std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut conn).poll(cx);
        match conn.max_concurrent_send_streams() {
            3 => std::task::Poll::Ready(()),
            _ => std::task::Poll::Pending,
        }
    });
    tokio::time::timeout(PATIENCE, advertised)
        .await
        .expect("server advertises a stream limit of 3");
}

/// Sends a GET with `extra` headers on an h2 connection and returns the status, or the stream
/// error.
async fn h2_get(
    client: h2::client::SendRequest<Bytes>,
    extra: &[(&str, String)],
) -> Result<http::StatusCode, h2::Error> {
    let mut req = Request::get("http://test/");
    for (name, value) in extra {
        req = req.header(*name, value);
    }
    let req = req.body(()).expect("request");
    let mut client = client.ready().await?;
    let (response, _) = client.send_request(req, true)?;
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("answer in time")?;
    Ok(response.status())
}

#[tokio::test]
async fn http2_rapid_reset_ends_the_connection_and_fresh_ones_are_served() {
    let mut l = listener("public");
    l.limits.http2_max_pending_resets = 5;
    l.limits.http2_max_concurrent_streams = 1000;
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    // HEADERS then RST_STREAM, over and over, without waiting for anything: the frames queue
    // up and reach the server in one burst, faster than it accepts the streams. Ten times the
    // limit, and then nothing more, so the client reads the GOAWAY rather than writing into a
    // closed socket.
    let mut sent = 0;
    for _ in 0..50 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break,
        };
        let req = Request::get("http://test/").body(()).expect("request");
        let Ok((_, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    assert!(sent > 5, "only {sent} streams were opened");
    let ended = tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the gateway ends the connection")
        .expect("connection task");
    let err = ended.expect_err("connection ended without an error");
    assert_eq!(
        err.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "unexpected end: {err}"
    );

    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(h2_request(tcp).await, Version::HTTP_2);
}

#[tokio::test]
async fn http2_header_list_over_max_header_size_is_refused_and_the_connection_survives() {
    let mut l = listener("public");
    l.limits.max_header_size = 1024;
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let refused = h2_get(client.clone(), &[("x-big", "a".repeat(2048))]).await;
    // h2 answers an oversized header block with 431 and then resets the stream; either one is
    // the refusal, depending on which the client sees first.
    match refused {
        Ok(status) => assert_eq!(status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.is_reset(), "unexpected error: {e}"),
    }
    // A normal request on the same connection is still answered.
    let status = h2_get(client, &[("x-small", "a".repeat(16))])
        .await
        .expect("the connection survives");
    assert_ne!(status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(!conn.is_finished());
}

#[tokio::test]
async fn http2_header_list_far_over_max_header_size_ends_only_that_connection() {
    let mut l = listener("public");
    l.limits.max_header_size = 1024;
    let set = started(&[l]).await;
    let addr = addr(&set, "public");

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    // Past four times the limit h2 stops decoding and treats it as abuse: the whole
    // connection gets GOAWAY ENHANCE_YOUR_CALM instead of a 431 for the one stream.
    let refused = h2_get(client, &[("x-big", "a".repeat(8192))]).await;
    let err = refused.expect_err("an abusive header list is answered");
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err}");
    let ended = tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the gateway ends the connection")
        .expect("connection task");
    assert!(ended.is_err());

    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(h2_request(tcp).await, Version::HTTP_2);
}

// === request-head deadline bookkeeping ===

#[tokio::test(start_paused = true)]
async fn head_deadline_runs_from_accept_and_then_from_the_first_byte_after_each_request() {
    use super::io::{Activity, ConnIo, InFlightBody};

    let timeout = Duration::from_secs(10);
    let activity = Activity::new();
    let (mut client, server) = tokio::io::duplex(1024);
    let mut server = ConnIo::new(server, Bytes::new(), activity.clone());
    let mut buf = [0u8; 64];

    // The first head is owed from the accept on.
    let accepted = tokio::time::Instant::now();
    assert_eq!(activity.head_deadline(timeout), Some(accepted + timeout));

    // The head reached the service; body bytes meanwhile start nothing, and neither do bytes
    // that arrive while the response body is still being sent.
    let response = InFlightBody::new(crate::body::full("response"), activity.request());
    assert_eq!(activity.head_deadline(timeout), None);
    client.write_all(b"request body").await.expect("write");
    let _ = server.read(&mut buf).await.expect("read");
    assert_eq!(activity.head_deadline(timeout), None);
    response.collect().await.expect("response body");

    // Idle between requests: no deadline, however long.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(activity.head_deadline(timeout), None);
    assert!(!activity.head_expired(timeout));

    // The next head's first byte arms it.
    client.write_all(b"GET / HT").await.expect("write");
    let _ = server.read(&mut buf).await.expect("read");
    let started = tokio::time::Instant::now();
    assert_eq!(activity.head_deadline(timeout), Some(started + timeout));
    tokio::time::advance(Duration::from_secs(5)).await;
    client.write_all(b"TP/1.1\r\n").await.expect("write");
    let _ = server.read(&mut buf).await.expect("read");
    assert_eq!(
        activity.head_deadline(timeout),
        Some(started + timeout),
        "more bytes of the same head must not push the deadline"
    );
    assert!(!activity.head_expired(timeout));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(activity.head_expired(timeout));
}

// === send progress bookkeeping ===

/// The result of polling `body` once, without waiting.
fn poll_once(
    body: &mut super::io::InFlightBody,
) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, crate::body::BoxError>>> {
    use http_body::Body;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(body).poll_frame(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn a_body_whose_upstream_data_hyper_stops_taking_is_cancelled_after_send_timeout() {
    use super::io::{Activity, InFlightBody, SendCheck};

    let timeout = Duration::from_secs(30);
    let activity = Activity::new();
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, crate::body::BoxError>>(4);
    let upstream =
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
            .boxed();
    let mut body = InFlightBody::new(upstream, activity.request());

    // Waiting for the upstream owes the client nothing, however long it takes.
    assert!(poll_once(&mut body).is_pending());
    tokio::time::advance(timeout * 2).await;
    assert!(matches!(activity.send_check(timeout), SendCheck::Later(_)));

    // The upstream's data arrives, and hyper does not come back for it (an HTTP/2 window at
    // zero): owed from now on.
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"data"))))
        .await
        .expect("send");
    let owed = tokio::time::Instant::now();
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    assert_eq!(
        activity.send_check(timeout),
        SendCheck::Later(owed + timeout)
    );
    assert!(!tx.is_closed());

    // Stalled: the upstream body is dropped at once, hyper gets an error, and the connection
    // (which wrote nothing) goes.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(activity.send_check(timeout), SendCheck::Drop);
    assert!(tx.is_closed(), "the upstream body is still held");
    assert!(matches!(
        poll_once(&mut body),
        std::task::Poll::Ready(Some(Err(_)))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_large_frame_goes_in_slices_and_each_taken_slice_is_progress() {
    use super::io::{Activity, InFlightBody, SendCheck};

    let timeout = Duration::from_secs(30);
    let activity = Activity::new();
    let frame = Bytes::from(vec![7u8; 200 * 1024]);
    let mut body = InFlightBody::new(crate::body::full(frame), activity.request());

    let mut sizes = Vec::new();
    loop {
        match poll_once(&mut body) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                sizes.push(frame.into_data().expect("data").len());
            }
            std::task::Poll::Ready(None) => break,
            other => panic!("unexpected {other:?}"),
        }
        // A slow client: most of a send_timeout between slices, and never stalled.
        tokio::time::advance(timeout - Duration::from_secs(1)).await;
        assert!(matches!(activity.send_check(timeout), SendCheck::Later(_)));
    }
    assert_eq!(sizes, [64 * 1024, 64 * 1024, 64 * 1024, 8 * 1024]);
    use http_body::Body;
    assert!(body.is_end_stream());
}

// === mutual TLS ===

/// A TLS listener `name` that verifies client certificates against `ca_file` in `mode`.
fn mtls_listener(
    name: &str,
    pair: CertificatePair,
    ca_file: PathBuf,
    mode: ClientAuthMode,
) -> Listener {
    let mut listener = tls_listener(name, vec![pair], TlsVersion::Tls12);
    if let Some(tls) = &mut listener.tls {
        tls.client_auth = Some(ClientAuth {
            ca_file,
            mode,
            forward_client_cert: false,
        });
    }
    listener
}

/// Whether a client with `config` gets an HTTP response from `addr`. With TLS 1.3 the client
/// finishes its side of the handshake before the server checked its certificate, so only a
/// request shows whether the server accepted it.
async fn served(addr: SocketAddr, config: ClientConfig) -> bool {
    let Ok(mut tls) = tls_connect(addr, "a.test", config).await else {
        return false;
    };
    if tls
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(
        tokio::time::timeout(PATIENCE, tls.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 ")
    )
}

#[tokio::test]
async fn required_client_auth_accepts_only_certificates_of_its_ca() {
    let dir = TempDir::new();
    let (server, clients, strangers) = (Pki::new(), Pki::new(), Pki::new());
    let (pair, _) = server.leaf(&dir, "a", &["a.test"]);
    let ca_file = dir.path("clients-ca.pem");
    std::fs::write(&ca_file, &clients.ca_pem).expect("write CA");
    let set = started(&[mtls_listener("m", pair, ca_file, ClientAuthMode::Required)]).await;
    let at = addr(&set, "m");

    assert!(
        !served(at, server.client_presenting(None)).await,
        "no certificate"
    );
    assert!(served(at, server.client_presenting(Some(&clients))).await);
    assert!(
        !served(at, server.client_presenting(Some(&strangers))).await,
        "a certificate of another CA"
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_no_certificate_but_verifies_one_given() {
    let dir = TempDir::new();
    let (server, clients, strangers) = (Pki::new(), Pki::new(), Pki::new());
    let (pair, _) = server.leaf(&dir, "a", &["a.test"]);
    let ca_file = dir.path("clients-ca.pem");
    std::fs::write(&ca_file, &clients.ca_pem).expect("write CA");
    let set = started(&[mtls_listener("m", pair, ca_file, ClientAuthMode::Optional)]).await;
    let at = addr(&set, "m");

    assert!(served(at, server.client_presenting(None)).await);
    assert!(served(at, server.client_presenting(Some(&clients))).await);
    assert!(
        !served(at, server.client_presenting(Some(&strangers))).await,
        "a certificate of another CA"
    );
}

#[tokio::test]
async fn replaced_client_ca_applies_to_new_handshakes_after_apply() {
    let dir = TempDir::new();
    let (server, old, new) = (Pki::new(), Pki::new(), Pki::new());
    let (pair, _) = server.leaf(&dir, "a", &["a.test"]);
    let ca_file = dir.path("clients-ca.pem");
    std::fs::write(&ca_file, &old.ca_pem).expect("write CA");
    let listeners = [mtls_listener(
        "m",
        pair,
        ca_file.clone(),
        ClientAuthMode::Required,
    )];
    let set = started(&listeners).await;
    assert!(served(addr(&set, "m"), server.client_presenting(Some(&old))).await);

    std::fs::write(&ca_file, &new.ca_pem).expect("replace CA");
    set.apply(&listeners).await.expect("reload");
    let at = addr(&set, "m");
    assert!(served(at, server.client_presenting(Some(&new))).await);
    assert!(!served(at, server.client_presenting(Some(&old))).await);
}

#[tokio::test]
async fn unreadable_client_ca_fails_the_apply_with_the_listener_named() {
    let dir = TempDir::new();
    let server = Pki::new();
    let (pair, _) = server.leaf(&dir, "a", &["a.test"]);
    let empty = dir.path("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let set = listener_set();
    let err = set
        .apply(&[mtls_listener("m", pair, empty, ClientAuthMode::Required)])
        .await
        .expect_err("an empty CA bundle must fail");
    assert_eq!(err.name, "m");
    assert!(err.reason.contains("empty.pem"), "{}", err.reason);
}
