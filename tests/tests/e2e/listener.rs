//! Listener behaviour end to end: SNI certificate selection, minimum TLS version, the
//! connection limit (idle connections make room), the keep-alive idle timeout, and listeners added by a reload.

use std::sync::Arc;

use http::{Request, StatusCode};
use levee_tests::client;
use levee_tests::harness::{CONFIG_FILE, simple_config};
use levee_tests::tcp;
use levee_tests::{
    Ca, Server, TempDir, TestGateway, Upstream, body, bounded, crypto_provider, eventually,
};
use tokio::io::AsyncWriteExt;

/// A gateway with one TLS listener `secure` holding `a.test` (also valid for 127.0.0.1, and
/// first, so the default) and `b.test`, with `min_version`.
async fn sni_gateway(upstream: &Upstream, min_version: &str) -> (TestGateway, Ca) {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path(), "sni");
    ca.issue("a", &["a.test", "127.0.0.1"]);
    ca.issue("b", &["b.test"]);
    let yaml = format!(
        "listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      min_version: \"{min_version}\"
      certificates:
        - {{ cert: a.pem, key: a.key }}
        - {{ cert: b.pem, key: b.key }}
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: {}
",
        upstream.addr()
    );
    dir.write(CONFIG_FILE, yaml);
    let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
        .await
        .expect("gateway starts");
    (gateway, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_the_certificate_named_by_sni_and_defaults_to_the_first() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let (gateway, ca) = sni_gateway(&upstream, "1.2").await;
        let addr = gateway.addr("secure");

        // The client verifies the certificate against the name it asked for, so a handshake
        // only succeeds when the gateway presented the matching certificate.
        for name in ["a.test", "b.test", "127.0.0.1"] {
            let (tls, _) = client::tls_connect(addr, name, ca.client_config(&[b"http/1.1"]))
                .await
                .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
            let req = Request::get("/")
                .header("host", name)
                .body(body::empty())
                .unwrap();
            let reply = client::send_h1(tls, req).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{name}");
        }
        // An unknown name gets the default (a.test), which does not cover it.
        let unknown = client::tls_connect(addr, "c.test", ca.client_config(&[b"http/1.1"])).await;
        assert!(unknown.is_err(), "c.test must not verify");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let (gateway, ca) = sni_gateway(&upstream, "1.3").await;
        let addr = gateway.addr("secure");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let tls12_only = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let refused = client::tls_connect(addr, "a.test", Arc::new(tls12_only)).await;
        assert!(refused.is_err(), "a TLS 1.2 client was accepted");

        let (tls, _) = client::tls_connect(addr, "a.test", ca.client_config(&[b"http/1.1"]))
            .await
            .expect("TLS 1.3 client");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_at_max_connections_refuse_new_ones_and_idle_ones_make_room() {
    bounded(async {
        let upstream = Server::http1().gated().run().await;
        let yaml = simple_config(&[upstream.addr()]).replace(
            "    address: 127.0.0.1:0\nadmin:",
            "    address: 127.0.0.1:0\n    limits:\n      max_connections: 2\nadmin:",
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();
        let addr = gateway.addr("public");

        // Two connections, each with a request in flight (the upstream holds them).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            held.push(stream);
        }
        assert!(eventually(200, || async { upstream.requests() == 2 }).await);

        // Nothing is idle: the third connection is closed at accept.
        let third = client::get(&client::http1(), &client::url(addr, "/third")).await;
        assert!(third.is_err(), "a third connection was served: {third:?}");

        // Both answered, both idle keep-alive now: a new client gets the slot of the one idle
        // the longest (whichever was answered first).
        upstream.release();
        for stream in &mut held {
            let reply = tcp::read_response(stream).await.response();
            assert_eq!(reply.status, 200);
        }
        let after = client::get(&client::http1(), &client::url(addr, "/after"))
            .await
            .unwrap();
        assert_eq!(after.status, StatusCode::OK);
        let [mut a, mut b] = <[_; 2]>::try_from(held).unwrap();
        let closed = tokio::select! {
            (closed, _) = tcp::closes_within_timeout(&mut a) => closed,
            (closed, _) = tcp::closes_within_timeout(&mut b) => closed,
        };
        assert!(closed, "no idle connection was closed for the new one");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let yaml = simple_config(&[upstream.addr()]).replace(
            "    address: 127.0.0.1:0\nadmin:",
            "    address: 127.0.0.1:0\n    limits:\n      idle_timeout: 300ms\n      header_read_timeout: 60s\nadmin:",
        );
        let gateway = TestGateway::start(&yaml).await.unwrap();

        let mut stream = tokio::net::TcpStream::connect(gateway.addr("public"))
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let reply = tcp::read_response(&mut stream).await.response();
        assert_eq!(reply.status, 200);

        // Far beyond 300ms, far below the 60s header-read timeout.
        let (closed, rest) = tcp::closes_within_timeout(&mut stream).await;
        assert!(closed, "idle connection still open");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_binds_a_new_listener() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let config = simple_config(&[upstream.addr()]);
        let gateway = TestGateway::start(&config).await.unwrap();
        let public = gateway.addr("public");

        let with_extra = config.replace(
            "admin:",
            "  - name: extra\n    address: 127.0.0.1:0\nadmin:",
        );
        gateway.dir.write_atomic(CONFIG_FILE, with_extra);
        gateway.reload().await.expect("reload with a new listener");

        let extra = gateway.addr("extra");
        let reply = client::get(&client::http1(), &client::url(extra, "/on-extra"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            gateway.addr("public"),
            public,
            "unchanged listener keeps its socket"
        );
        let reply = client::get(&client::http1(), &client::url(public, "/on-public"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_without_restart() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let ca = Ca::new(dir.path(), "rotate");
        ca.issue("site", &["old.test"]);
        let yaml = format!(
            "listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: site.pem, key: site.key }}
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: {}
",
            upstream.addr()
        );
        dir.write(CONFIG_FILE, yaml);
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, true).await.unwrap();
        let addr = gateway.addr("secure");
        let config = ca.client_config(&[b"http/1.1"]);
        assert!(
            client::tls_connect(addr, "old.test", config.clone())
                .await
                .is_ok()
        );
        assert!(
            client::tls_connect(addr, "new.test", config.clone())
                .await
                .is_err()
        );

        // Rotation as cert-manager does it: new files renamed over the old ones.
        ca.issue("site-next", &["new.test"]);
        let dir = &gateway.dir;
        std::fs::rename(dir.join("site-next.key"), dir.join("site.key")).unwrap();
        std::fs::rename(dir.join("site-next.pem"), dir.join("site.pem")).unwrap();

        let rotated = eventually(200, || {
            let config = config.clone();
            async move { client::tls_connect(addr, "new.test", config).await.is_ok() }
        })
        .await;
        assert!(rotated, "the new certificate was not served within 10s");
    })
    .await;
}

/// Mutual TLS with `forward_client_cert`: the upstream learns the certificate the client
/// verifiably presented, as Envoy's XFCC, and never one a client wrote into the header itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_client_certificate_is_forwarded_and_a_forged_one_is_not() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let dir = TempDir::new();
        let ca = Ca::new(dir.path(), "mtls");
        ca.issue("a", &["a.test"]);
        let client_leaf = ca.issue_client("client", &["client.test"]);
        let yaml = format!(
            "listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: a.pem, key: a.key }}
      client_auth: {{ ca_file: mtls-ca.pem, mode: optional, forward_client_cert: true }}
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: {}
",
            upstream.addr()
        );
        dir.write(CONFIG_FILE, yaml);
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
            .await
            .expect("gateway starts");
        let addr = gateway.addr("secure");
        let forged = || {
            Request::get("/")
                .header("host", "a.test")
                .header("x-forwarded-client-cert", "Hash=forged;DNS=admin.test")
                .body(body::empty())
                .unwrap()
        };

        let config = client_leaf.client_config(&ca, &[b"http/1.1"]);
        let (tls, _) = client::tls_connect(addr, "a.test", config).await.unwrap();
        let reply = client::send_h1(tls, forged()).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let xfcc = reply
            .echoed_header("x-forwarded-client-cert")
            .expect("xfcc");
        let (hash, dns) = xfcc
            .strip_prefix("Hash=")
            .and_then(|rest| rest.split_once(';'))
            .unwrap_or_else(|| panic!("{xfcc}"));
        assert_eq!(hash.len(), 64, "{xfcc}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{xfcc}");
        assert_eq!(dns, "DNS=client.test");

        let (tls, _) = client::tls_connect(addr, "a.test", ca.client_config(&[b"http/1.1"]))
            .await
            .unwrap();
        let reply = client::send_h1(tls, forged()).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.echoed_header("x-forwarded-client-cert"), None);
    })
    .await;
}
