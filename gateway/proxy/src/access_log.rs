//! The structured access log: one JSON line per finished request.
//!
//! Each line is formatted into one buffer on the request's thread and handed whole to the
//! writer, so lines from concurrent requests never interleave. On standard output the write
//! itself happens on a worker thread (`tracing-appender`'s non-blocking writer): a request
//! never waits on a slow terminal, a full pipe or a stalled log shipper. The queue to that
//! thread is bounded ([`QUEUE_LINES`]) and lossy: when it is full, the line is dropped and
//! counted (`levee_access_log_dropped_lines_total`), because a gateway that stops serving to
//! keep its log complete is worse than a log with a known gap. A failed write (a closed pipe,
//! a full disk) drops the line too: the access log must never take the request path down.

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines queued for the writer thread before new ones are dropped. At the ~300 bytes of a
/// typical line this is about 5 MB, and at 50,000 requests a second a quarter of a second of
/// a stalled reader; a reader stalled longer than that loses lines rather than the gateway
/// its memory.
pub const QUEUE_LINES: usize = 16_384;

/// Bytes the writer thread gathers before a `write` to standard output: the thread drains
/// every queued line and then flushes, so a burst becomes a few large writes, not one per line.
const WRITE_BUFFER: usize = 64 * 1024;

/// Everything known about one finished request. The request path builds it when the response
/// body has been fully sent (or the request failed), and hands it to [`AccessLog::log`] and
/// [`crate::metrics::Metrics::observe_request`].
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    /// When the request arrived.
    pub start: SystemTime,
    /// Name of the listener that accepted the request.
    pub listener: Arc<str>,
    /// The matched route, if any.
    pub route: Option<Arc<str>>,
    /// The cluster the request was sent to, if any.
    pub cluster: Option<Arc<str>>,
    /// The upstream endpoint of the last attempt, if any.
    pub endpoint: Option<SocketAddr>,
    /// The client address.
    pub client: SocketAddr,
    /// Request method.
    pub method: http::Method,
    /// Request path and query.
    pub path: &'a str,
    /// The HTTP version downstream.
    pub version: http::Version,
    /// Status sent downstream; 499 (nginx's "client closed request", never sent) when the client
    /// went away before the response head.
    pub status: u16,
    /// Time from arrival to the end of the response body.
    pub duration: Duration,
    /// Request body bytes received from downstream.
    pub bytes_in: u64,
    /// Response body bytes sent downstream.
    pub bytes_out: u64,
    /// The request id (`x-request-id`).
    pub request_id: &'a str,
    /// The gateway error kind (the `x-levee-error` value), if the gateway generated the response
    /// or the response broke midway.
    pub error_kind: Option<&'static str>,
    /// Tries sent upstream (1 without retries; 0 when none was sent).
    pub attempts: u32,
    /// How a fallback answered (`stale`, `static`), if one did.
    pub fallback: Option<&'static str>,
}

/// Writes access log lines (JSON, one per request) to standard output, when enabled.
///
/// A line looks like `{"time":"2026-01-02T03:04:05.678Z","listener":"public","route":"api",
/// "cluster":"api","endpoint":"127.0.0.1:9001","client":"127.0.0.1:50000","method":"GET",
/// "path":"/v1/x","version":"HTTP/1.1","status":200,"duration_ms":1.25,"bytes_in":0,
/// "bytes_out":12,"request_id":"…","error":null,"attempts":1,"fallback":null}`; absent route, cluster and endpoint are `null`.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sink: Option<Sink>,
}

/// Where lines go.
#[derive(Clone)]
enum Sink {
    /// A worker thread writes them.
    Worker {
        writer: NonBlocking,
        /// Flushes the queue and ends the thread when dropped; taken by [`AccessLog::close`].
        guard: Arc<Mutex<Option<WorkerGuard>>>,
    },
    /// Written on the caller's thread, under the lock (tests).
    Writer(Arc<Mutex<dyn Write + Send>>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Worker { .. } => f.write_str("Worker"),
            Sink::Writer(_) => f.write_str("Writer"),
        }
    }
}

/// The JSON shape of one line, borrowing from the record.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "serialize_display")]
    time: humantime::Rfc3339Timestamp,
    listener: &'a str,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    endpoint: Option<SocketAddr>,
    client: SocketAddr,
    method: &'a str,
    path: &'a str,
    version: &'static str,
    status: u16,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    request_id: &'a str,
    error: Option<&'static str>,
    attempts: u32,
    fallback: Option<&'static str>,
}

// === impl AccessLog ===

impl AccessLog {
    /// An access log that writes to standard output, from its own thread, when `enabled`.
    /// Call [`AccessLog::close`] at shutdown so the queued lines are written.
    pub fn new(enabled: bool) -> Self {
        if enabled {
            Self::non_blocking(BufWriter::with_capacity(WRITE_BUFFER, std::io::stdout()))
        } else {
            Self { sink: None }
        }
    }

    /// An enabled access log whose lines a worker thread writes to `writer`, through a queue
    /// of [`QUEUE_LINES`] lines that drops (and counts) lines when full.
    pub fn non_blocking<W: Write + Send + 'static>(writer: W) -> Self {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("levee-access-log")
            .finish(writer);
        Self {
            sink: Some(Sink::Worker {
                writer,
                guard: Arc::new(Mutex::new(Some(guard))),
            }),
        }
    }

    /// An enabled access log that writes to `writer` on the caller's thread, under the lock
    /// (for tests, or to send lines elsewhere).
    pub fn to_writer<W: Write + Send + 'static>(writer: Arc<Mutex<W>>) -> Self {
        Self {
            sink: Some(Sink::Writer(writer)),
        }
    }

    /// Lines dropped because the writer thread's queue was full.
    pub fn dropped_lines(&self) -> u64 {
        match &self.sink {
            Some(Sink::Worker { writer, .. }) => {
                u64::try_from(writer.error_counter().dropped_lines()).unwrap_or(u64::MAX)
            }
            _ => 0,
        }
    }

    /// Writes every queued line and stops the writer thread (waiting up to a second); lines
    /// logged afterwards are dropped. Called once the gateway has drained. Dropping the last
    /// clone of the log does the same.
    pub fn close(&self) {
        if let Some(Sink::Worker { guard, .. }) = &self.sink {
            let guard = guard.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(guard);
        }
    }

    /// Whether lines are written at all.
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes one line for this request. Never fails: a line that cannot be written is dropped.
    pub fn log(&self, record: &RequestRecord<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut buf = Vec::with_capacity(384);
        if serde_json::to_writer(&mut buf, &Line::from(record)).is_err() {
            return;
        }
        buf.push(b'\n');
        // A closed pipe (the log reader went away) or a full disk must not stop the gateway;
        // Rust ignores SIGPIPE, so the write just returns an error we drop.
        let _ = match sink {
            // One `write` call queues the whole line (a clone of the queue's sender is how
            // `NonBlocking` is meant to be shared).
            Sink::Worker { writer, .. } => writer.clone().write_all(&buf),
            Sink::Writer(writer) => writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(&buf),
        };
    }
}

impl<'a> From<&'a RequestRecord<'a>> for Line<'a> {
    fn from(record: &'a RequestRecord<'a>) -> Self {
        Line {
            time: humantime::format_rfc3339_millis(record.start),
            listener: &record.listener,
            route: record.route.as_deref(),
            cluster: record.cluster.as_deref(),
            endpoint: record.endpoint,
            client: record.client,
            method: record.method.as_str(),
            path: record.path,
            version: version_str(record.version),
            status: record.status,
            // Microsecond precision: finer digits are noise in a log line.
            duration_ms: record.duration.as_micros() as f64 / 1e3,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            request_id: record.request_id,
            error: record.error_kind,
            attempts: record.attempts,
            fallback: record.fallback,
        }
    }
}

fn serialize_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn version_str(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> RequestRecord<'static> {
        RequestRecord {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_045_678),
            listener: Arc::from("public"),
            route: Some(Arc::from("api")),
            cluster: Some(Arc::from("api-cluster")),
            endpoint: Some(([127, 0, 0, 1], 9001).into()),
            client: ([10, 0, 0, 7], 50000).into(),
            method: http::Method::POST,
            path: format!("/v1/items/{n}?q=\"x\"").leak(),
            version: http::Version::HTTP_2,
            status: 201,
            duration: Duration::from_micros(1250),
            bytes_in: 10 * n,
            bytes_out: 12,
            request_id: format!("req-{n}").leak(),
            error_kind: None,
            attempts: 1,
            fallback: None,
        }
    }

    fn lines(buf: &Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
        let buf = buf.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    #[test]
    fn writes_one_json_line_with_every_field() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::to_writer(buf.clone());
        log.log(&record(1));
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["time"], "2026-01-02T03:04:05.678Z");
        assert_eq!(line["listener"], "public");
        assert_eq!(line["route"], "api");
        assert_eq!(line["cluster"], "api-cluster");
        assert_eq!(line["endpoint"], "127.0.0.1:9001");
        assert_eq!(line["client"], "10.0.0.7:50000");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/v1/items/1?q=\"x\"");
        assert_eq!(line["version"], "HTTP/2.0");
        assert_eq!(line["status"], 201);
        assert_eq!(line["duration_ms"], 1.25);
        assert_eq!(line["bytes_in"], 10);
        assert_eq!(line["bytes_out"], 12);
        assert_eq!(line["request_id"], "req-1");
        assert!(line["error"].is_null());
    }

    #[test]
    fn absent_route_and_error_kind_are_written_as_null_and_kind() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::to_writer(buf.clone());
        let mut rec = record(2);
        rec.route = None;
        rec.cluster = None;
        rec.endpoint = None;
        rec.status = 404;
        rec.error_kind = Some("no-route");
        log.log(&rec);
        let lines = lines(&buf);
        assert!(lines[0]["route"].is_null());
        assert!(lines[0]["cluster"].is_null());
        assert!(lines[0]["endpoint"].is_null());
        assert_eq!(lines[0]["error"], "no-route");
    }

    #[test]
    fn concurrent_requests_never_interleave_lines() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::to_writer(buf.clone());
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let log = log.clone();
                scope.spawn(move || {
                    for i in 0..200 {
                        log.log(&record(t * 1000 + i));
                    }
                });
            }
        });
        let lines = lines(&buf);
        assert_eq!(lines.len(), 800);
        assert!(lines.iter().all(|line| line["listener"] == "public"));
    }

    /// A writer that hands what the worker thread writes to the test.
    struct Pipe(std::sync::mpsc::Sender<Vec<u8>>);

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_worker_thread_writes_every_line_whole() {
        let (tx, rx) = std::sync::mpsc::channel();
        let log = AccessLog::non_blocking(BufWriter::new(Pipe(tx)));
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let log = log.clone();
                scope.spawn(move || {
                    for i in 0..200 {
                        log.log(&record(t * 1000 + i));
                    }
                });
            }
        });
        // Closing writes what is queued and ends the thread, which drops the pipe.
        log.close();
        let written: Vec<u8> = rx.iter().flatten().collect();
        let written = String::from_utf8(written).expect("utf-8");
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|line| serde_json::from_str(line).expect("one whole JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 800);
        assert_eq!(log.dropped_lines(), 0);
        assert_eq!(lines[0]["listener"], "public");
        // A closed log drops lines without failing.
        log.log(&record(5));
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_blocking() {
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                // Blocks the worker until the test lets go.
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = std::sync::mpsc::channel();
        let log = AccessLog::non_blocking(Stuck(stuck));
        // The worker takes at most one line and blocks on it; the queue holds QUEUE_LINES.
        let sent = QUEUE_LINES as u64 + 100;
        let (done, finished) = std::sync::mpsc::channel();
        let logger = log.clone();
        std::thread::spawn(move || {
            for i in 0..sent {
                logger.log(&record(i));
            }
            let _ = done.send(());
        });
        // A blocking queue would never get here; the bound keeps a regression from hanging.
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("logging never waits for the writer");
        let dropped = log.dropped_lines();
        assert!(
            (99..=100).contains(&dropped),
            "{dropped} dropped of {sent}, with a queue of {QUEUE_LINES}"
        );
        drop(release);
        log.close();
    }

    #[test]
    fn disabled_log_writes_nothing() {
        let log = AccessLog::new(false);
        assert!(!log.is_enabled());
        log.log(&record(3));
        assert!(AccessLog::new(true).is_enabled());
    }

    #[test]
    fn a_failing_writer_does_not_panic() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = AccessLog::to_writer(Arc::new(Mutex::new(Broken)));
        log.log(&record(4));
    }
}
