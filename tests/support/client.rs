//! HTTP clients for tests: pooled HTTP/1.1 and h2c (prior knowledge) clients, HTTPS over a
//! test CA with a chosen ALPN, and a [`Reply`] that holds a whole response with its trailers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::BoxError;
use crate::body::{Body, empty};
use crate::chaos::REQUEST_BOUND;

/// A pooled client over plain TCP.
pub type HttpClient = Client<HttpConnector, Body>;

/// A whole response: head, body and trailers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// HTTP version of the response.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any arrived.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The gateway's error kind (`x-levee-error`), if it answered with an error.
    pub fn error_kind(&self) -> Option<&str> {
        self.header("x-levee-error")
    }

    /// An echo server's view of a request header (see [`crate::server`]).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

/// A pooled HTTP/1.1 client.
pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A pooled HTTP/2 client speaking prior knowledge over plain TCP (h2c).
pub fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` and reads the whole response, trailers included. A body error is an error.
pub async fn send(client: &HttpClient, req: Request<Body>) -> Result<Reply, BoxError> {
    let response = client.request(req).await?;
    collect(response).await
}

/// Sends `req` over a pooled HTTP/1.1 client and reads the whole response; panics, naming the
/// request, if it fails or takes longer than [`REQUEST_BOUND`], so a hung gateway fails the
/// test that sent the request rather than the test's overall bound.
pub async fn send_bounded(req: Request<Body>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    tokio::time::timeout(REQUEST_BOUND, send(&http1(), req))
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {REQUEST_BOUND:?}"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// `GET url` with an empty body.
pub async fn get(client: &HttpClient, url: &str) -> Result<Reply, BoxError> {
    let req = Request::get(url).body(empty())?;
    send(client, req).await
}

/// Reads a response to its end.
pub async fn collect(response: Response<Incoming>) -> Result<Reply, BoxError> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// `http://ADDR/PATH`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Connects with TLS to `addr`, sending `server_name` as SNI and trusting `config`'s roots.
/// Returns the stream and the ALPN protocol the server chose.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(TlsStream<TcpStream>, Option<Vec<u8>>), BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((tls, alpn))
}

/// Sends one request over a fresh HTTP/1.1 connection on `io` (TLS or not).
pub async fn send_h1<I>(io: I, req: Request<Body>) -> Result<Reply, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    collect(sender.send_request(req).await?).await
}

/// Sends one request over a fresh HTTP/2 connection on `io` (TLS or not).
pub async fn send_h2<I>(io: I, req: Request<Body>) -> Result<Reply, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    collect(sender.send_request(req).await?).await
}

/// `GET path` on the admin listener; the body as text.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Result<Reply, BoxError> {
    get(&http1(), &url(admin, path)).await
}

/// `POST path` with an empty body on the admin listener.
pub async fn admin_post(admin: SocketAddr, path: &str) -> Result<Reply, BoxError> {
    let req = Request::post(url(admin, path)).body(empty())?;
    send(&http1(), req).await
}

/// The sum of the Prometheus samples of metric `name` whose labels include `label` (e.g.
/// `result="error"`; empty matches all), in `/metrics` text; `None` if there is no such sample.
pub fn metric_sum(metrics: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if !label.is_empty() && !labels.split(',').any(|l| l.trim() == label) {
            continue;
        }
        if let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}
