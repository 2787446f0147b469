//! A raw HTTP/1.1 upstream that records exactly the requests it receives, so that a request
//! smuggled through the gateway (a second request hidden in the first one's body, or bytes
//! framed two ways) would show up as a request nobody sent, or as bytes that frame nothing.
//!
//! It parses what arrives on each connection strictly: a head ending in CRLF CRLF, then a body
//! framed by `Content-Length` or `chunked`. It answers each complete request `200` with a
//! `x-recorded: N` header, and on anything it cannot frame it records the bytes as malformed
//! and closes. Tests compare what it saw with what the client was answered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One request as the recorder framed it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request line, e.g. `POST /front HTTP/1.1`.
    pub request_line: String,
    /// Header lines, as received.
    pub headers: Vec<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Request heads whose body never completed (the connection closed first).
    incomplete: Vec<String>,
    /// Bytes the recorder could not frame as a request.
    malformed: Vec<Vec<u8>>,
}

/// A running recorder; stops with its connections when dropped.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Binds `127.0.0.1:0` and starts recording.
    pub async fn run() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(serve(tcp, shared.clone()));
            }
        });
        Recorder { addr, log, task }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every complete request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().expect("recorder log").requests.clone()
    }

    /// Heads of requests whose body never completed.
    pub fn incomplete(&self) -> Vec<String> {
        self.log.lock().expect("recorder log").incomplete.clone()
    }

    /// Byte runs that did not frame as an HTTP/1.1 request.
    pub fn malformed(&self) -> Vec<Vec<u8>> {
        self.log.lock().expect("recorder log").malformed.clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut tcp: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    loop {
        match next_request(&mut tcp, &mut buf).await {
            Parsed::Request(request) => {
                let n = {
                    let mut log = log.lock().expect("recorder log");
                    log.requests.push(request);
                    log.requests.len()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nx-recorded: {n}\r\ncontent-length: 8\r\n\r\nrecorded"
                );
                if tcp.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            Parsed::Closed => return,
            Parsed::Incomplete(head) => {
                log.lock().expect("recorder log").incomplete.push(head);
                return;
            }
            Parsed::Malformed(bytes) => {
                log.lock().expect("recorder log").malformed.push(bytes);
                return;
            }
        }
    }
}

enum Parsed {
    Request(Recorded),
    /// A clean close between requests.
    Closed,
    /// A head arrived but the connection closed inside its body.
    Incomplete(String),
    Malformed(Vec<u8>),
}

/// Reads more bytes into `buf`; false on close or error.
async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn next_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Parsed {
    let head_end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        if !fill(tcp, buf).await {
            return if buf.is_empty() {
                Parsed::Closed
            } else {
                Parsed::Malformed(std::mem::take(buf))
            };
        }
    };
    let head: Vec<u8> = buf.drain(..head_end + 4).collect();
    let Ok(text) = std::str::from_utf8(&head[..head_end]) else {
        return Parsed::Malformed(head);
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<String> = lines.map(str::to_string).collect();
    let well_formed = request_line.split(' ').count() == 3
        && request_line.ends_with(" HTTP/1.1")
        && headers.iter().all(|h| {
            h.contains(':') && !h.starts_with([' ', '\t']) && !h.contains(['\r', '\n', '\0'])
        });
    if !well_formed {
        return Parsed::Malformed(head);
    }
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    let lengths = values("content-length");
    let encodings = values("transfer-encoding");
    // The gateway must send exactly one framing: both, or two lengths, is itself a smuggling
    // vector towards any upstream that picks the other one.
    let body = match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Some(Vec::new()),
        ([length], []) => match length.parse::<usize>() {
            Ok(length) => {
                while buf.len() < length {
                    if !fill(tcp, buf).await {
                        return Parsed::Incomplete(request_line);
                    }
                }
                Some(buf.drain(..length).collect())
            }
            Err(_) => None,
        },
        ([], [te]) if te.eq_ignore_ascii_case("chunked") => match read_chunked(tcp, buf).await {
            Chunked::Body(body) => Some(body),
            Chunked::Closed => return Parsed::Incomplete(request_line),
            Chunked::Malformed => None,
        },
        _ => None,
    };
    match body {
        Some(body) => Parsed::Request(Recorded {
            request_line,
            headers,
            body,
        }),
        None => {
            let mut bytes = head;
            bytes.append(buf);
            Parsed::Malformed(bytes)
        }
    }
}

enum Chunked {
    Body(Vec<u8>),
    Closed,
    Malformed,
}

/// A strict chunked decoder: hex sizes without extensions, CRLF everywhere, no trailers.
async fn read_chunked(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Chunked {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(buf, b"\r\n") {
                break end;
            }
            if !fill(tcp, buf).await {
                return Chunked::Closed;
            }
        };
        let line: Vec<u8> = buf.drain(..line_end + 2).collect();
        let Some(size) = std::str::from_utf8(&line[..line_end])
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        else {
            return Chunked::Malformed;
        };
        while buf.len() < size + 2 {
            if !fill(tcp, buf).await {
                return Chunked::Closed;
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Chunked::Malformed;
        }
        if size == 0 {
            buf.drain(..2);
            return Chunked::Body(body);
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}
