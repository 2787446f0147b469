//! Raw TCP: a client that sends arbitrary bytes and parses the reply by hand, and an upstream
//! that breaks the protocol (closes in the middle of a response).
//!
//! HTTP client libraries refuse to send malformed or ambiguous requests, which are exactly what
//! the gateway must be tested against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a raw read waits for more bytes before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response parsed from raw bytes.
#[derive(Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked is not attempted; raw bytes after the head).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl RawResponse {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a raw read ended with.
#[derive(Debug)]
pub enum RawOutcome {
    /// A complete response head (and its body, when it had a content-length).
    Response(RawResponse),
    /// The peer closed the connection before a complete head arrived.
    Closed {
        /// Bytes received before the close.
        partial: Vec<u8>,
    },
    /// Nothing more arrived within [`READ_TIMEOUT`].
    TimedOut {
        /// Bytes received before giving up.
        partial: Vec<u8>,
    },
}

impl RawOutcome {
    /// The response, or a panic describing what happened instead.
    pub fn response(self) -> RawResponse {
        match self {
            RawOutcome::Response(r) => r,
            other => panic!("expected an HTTP response, got {other:?}"),
        }
    }

    /// The status, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            RawOutcome::Response(r) => Some(r.status),
            _ => None,
        }
    }
}

/// Connects, writes `bytes`, and reads one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_response(&mut stream).await
}

/// Reads one response from `stream`: the head, then a content-length body if there is one.
/// Bytes that follow the first response stay unread in the socket.
pub async fn read_response(stream: &mut TcpStream) -> RawOutcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(head_end) = find(&buf, b"\r\n\r\n") {
            let Some(mut response) = parse_head(&buf[..head_end]) else {
                return RawOutcome::Closed { partial: buf };
            };
            let mut body = buf[head_end + 4..].to_vec();
            let length = response
                .header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                while body.len() < length {
                    match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
                    }
                }
                body.truncate(length);
            }
            response.body = body;
            return RawOutcome::Response(response);
        }
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return RawOutcome::Closed { partial: buf },
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return RawOutcome::TimedOut { partial: buf },
        }
    }
}

/// Reads until the peer closes (true) or nothing arrives for [`READ_TIMEOUT`] (false).
pub async fn closes_within_timeout(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (false, buf),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    Some(RawResponse {
        status,
        headers,
        body: Vec::new(),
    })
}

/// An HTTP/1.1 upstream that answers every request with a head announcing 100 000 bytes, sends
/// 1 000 of them, and closes the connection.
#[derive(Debug)]
pub struct CutServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CutServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn run() -> CutServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                connections.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while find(&buf, b"\r\n\r\n").is_none() {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\ncontent-type: application/octet-stream\r\n\r\n";
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(&[b'x'; 1000]).await;
                    let _ = tcp.flush().await;
                    // Give the bytes a moment to leave before the close, so the gateway sees a
                    // started body and not a refused request.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(tcp);
                });
            }
        });
        CutServer {
            addr,
            requests,
            task,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for CutServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
