//! Upstream HTTP servers for tests: HTTP/1.1 or HTTP/2 (h2c, or TLS with ALPN), answering an
//! echo of the request, a status, a delay, a hang, a generated stream, a byte-counting sink or
//! a gRPC-style response with trailers.
//!
//! Each server counts connections and requests and records what it saw, so tests can assert
//! what reached the upstream (and what never did).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::body::{Body, FramesBody, PatternBody, PatternCheck, full};
use crate::certs::Leaf;

/// The HTTP version an upstream server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge on plain TCP, ALPN `h2` with TLS).
    Http2,
}

#[derive(Debug, Clone)]
enum Reply {
    Echo,
    Stream { bytes: u64, known_length: bool },
    Sink,
    Trailers,
}

/// A builder for an upstream server. Defaults: HTTP/1.1, plain TCP, answers 200 with a JSON
/// echo of the request at once.
#[derive(Debug, Clone)]
pub struct Server {
    protocol: Protocol,
    tls: Option<Arc<rustls::ServerConfig>>,
    name: String,
    status: StatusCode,
    delay: Option<Duration>,
    hang: bool,
    gated: bool,
    reply: Reply,
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// The request target exactly as received (origin-form `/a?b` for HTTP/1.1).
    pub uri: String,
    /// HTTP version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
}

#[derive(Debug)]
struct State {
    requests: AtomicUsize,
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    gate: watch::Sender<bool>,
}

/// A running upstream server; stops (with all its connections) when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

// === impl Server ===

impl Server {
    /// An HTTP/1.1 server.
    pub fn http1() -> Server {
        Server::new(Protocol::Http1)
    }

    /// An HTTP/2 server (h2c prior knowledge, or ALPN `h2` with [`Server::tls`]).
    pub fn http2() -> Server {
        Server::new(Protocol::Http2)
    }

    fn new(protocol: Protocol) -> Server {
        Server {
            protocol,
            tls: None,
            name: "upstream".to_string(),
            status: StatusCode::OK,
            delay: None,
            hang: false,
            gated: false,
            reply: Reply::Echo,
        }
    }

    /// A name, returned in the `x-upstream` header and the echo's `server` field.
    pub fn name(mut self, name: &str) -> Server {
        self.name = name.to_string();
        self
    }

    /// Answers with this status (and the usual echo body).
    pub fn status(mut self, status: u16) -> Server {
        self.status = StatusCode::from_u16(status).expect("valid status");
        self
    }

    /// Waits this long before answering each request.
    pub fn delay(mut self, delay: Duration) -> Server {
        self.delay = Some(delay);
        self
    }

    /// Never answers (the request is counted, then the connection is left open).
    pub fn hang(mut self) -> Server {
        self.hang = true;
        self
    }

    /// Holds every request until [`Upstream::release`] is called.
    pub fn gated(mut self) -> Server {
        self.gated = true;
        self
    }

    /// Serves TLS with this certificate, offering ALPN for its protocol.
    pub fn tls(mut self, leaf: &Leaf) -> Server {
        let alpn: &[&[u8]] = match self.protocol {
            Protocol::Http1 => &[b"http/1.1"],
            Protocol::Http2 => &[b"h2"],
        };
        self.tls = Some(leaf.server_config(alpn));
        self
    }

    /// Answers with `bytes` generated pattern bytes (see [`crate::body`]), with a
    /// content-length. A `bytes=N` query parameter overrides the size for one request.
    pub fn stream(mut self, bytes: u64) -> Server {
        self.reply = Reply::Stream {
            bytes,
            known_length: true,
        };
        self
    }

    /// Answers with `bytes` generated pattern bytes and no content-length (chunked on HTTP/1.1).
    pub fn stream_chunked(mut self, bytes: u64) -> Server {
        self.reply = Reply::Stream {
            bytes,
            known_length: false,
        };
        self
    }

    /// Reads the request body, checking the pattern, and answers
    /// `{"bytes": N, "pattern_ok": bool}`.
    pub fn sink(mut self) -> Server {
        self.reply = Reply::Sink;
        self
    }

    /// Answers gRPC-style: `content-type: application/grpc`, a body of `ok`, and trailers
    /// `grpc-status: 0`, `grpc-message: fine`.
    pub fn trailers(mut self) -> Server {
        self.reply = Reply::Trailers;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn run(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (gate, _) = watch::channel(!self.gated);
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            gate,
        });
        let config = Arc::new(self);
        let task = tokio::spawn(accept_loop(listener, config, state.clone()));
        Upstream { addr, state, task }
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<Server>, state: Arc<State>) {
    // Connections live in the set so that dropping the server (aborting this task) ends them.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let config = config.clone();
        let state = state.clone();
        connections.spawn(async move {
            match config.tls.clone() {
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    if let Ok(io) = acceptor.accept(tcp).await {
                        serve(io, config, state).await;
                    }
                }
                None => serve(tcp, config, state).await,
            }
        });
    }
}

async fn serve<I>(io: I, config: Arc<Server>, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = config.protocol;
    let service = hyper::service::service_fn(move |req| handle(config.clone(), state.clone(), req));
    let io = TokioIo::new(io);
    let _ = match protocol {
        Protocol::Http1 => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
        }
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
    };
}

async fn handle(
    config: Arc<Server>,
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let seen = Seen {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
    };
    state.seen.lock().expect("seen lock").push(seen.clone());
    state.requests.fetch_add(1, Ordering::SeqCst);

    let mut gate = state.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    if config.hang {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = config.delay {
        tokio::time::sleep(delay).await;
    }

    let builder = Response::builder()
        .status(config.status)
        .header("x-upstream", config.name.as_str());
    let response = match &config.reply {
        Reply::Echo => {
            let body = match req.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let echo = echo_json(&config.name, &seen, &body);
            builder
                .header("content-type", "application/json")
                .body(full(echo.to_string()))
        }
        Reply::Stream {
            bytes,
            known_length,
        } => {
            let bytes = &query_bytes(&seen.uri).unwrap_or(*bytes);
            let mut builder = builder.header("content-type", "application/octet-stream");
            if *known_length {
                builder = builder.header("content-length", bytes.to_string());
            }
            builder.body(PatternBody::new(*bytes, *known_length).boxed())
        }
        Reply::Sink => {
            let check = PatternCheck::consume(req.into_body()).await;
            let json = match check {
                Ok(check) => serde_json::json!({
                    "server": config.name,
                    "bytes": check.bytes,
                    "pattern_ok": check.first_mismatch.is_none(),
                }),
                Err(error) => serde_json::json!({
                    "server": config.name,
                    "error": error.to_string(),
                }),
            };
            builder
                .header("content-type", "application/json")
                .body(full(json.to_string()))
        }
        Reply::Trailers => {
            let _ = req.into_body().collect().await;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("header value"));
            trailers.insert("grpc-message", "fine".parse().expect("header value"));
            let body = FramesBody::new(vec![
                Frame::data(Bytes::from_static(b"ok")),
                Frame::trailers(trailers),
            ]);
            builder
                .header("content-type", "application/grpc")
                .body(BodyExt::boxed(body))
        }
    };
    Ok(response.expect("valid response"))
}

fn query_bytes(uri: &str) -> Option<u64> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("bytes="))?
        .parse()
        .ok()
}

fn echo_json(name: &str, seen: &Seen, body: &[u8]) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for key in seen.headers.keys() {
        let values: Vec<String> = seen
            .headers
            .get_all(key)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(key.as_str().to_string(), values.join(", ").into());
    }
    serde_json::json!({
        "server": name,
        "method": seen.method.as_str(),
        "uri": seen.uri,
        "version": format!("{:?}", seen.version),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
        "body_bytes": body.len(),
    })
}

// === impl Upstream ===

impl Upstream {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (counted on arrival, before any delay).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// Lets held requests of a [`Server::gated`] server (and later ones) proceed.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
