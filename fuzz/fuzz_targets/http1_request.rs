//! Fuzzes the gateway's request path from the socket up: each input is written raw to a fresh
//! TCP connection of a real `levee::Gateway` (HTTP/1.1 parsing, the h2c preface sniff, routing,
//! forwarding to a real upstream). Three things fail an input:
//!
//! - a panic in any gateway task (held here until libFuzzer's panic hook aborts, so the crash
//!   is blamed on the input that caused it);
//! - a forwarded request that breaks the gateway's header promises ([`check_forwarded`]);
//! - a gateway that no longer answers a well-formed request afterwards.
//!
//! The gateway, its upstream and their tokio runtime are started once per process, lazily.
//! `LEVEE_FUZZ_IGNORE=host,te,...` turns off named upstream checks (to fuzz past a known bug);
//! `LEVEE_FUZZ_VERBOSE=1` prints every reply and forwarded request (to study one crash input).

#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use levee::{Gateway, GatewayOptions};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// After the last byte received, how long to wait for more before the reply counts as done.
/// Most fuzz inputs are incomplete requests that get no reply, so this bounds each run.
const QUIET: Duration = Duration::from_millis(30);
/// The longest any one fuzz connection is read.
const READ_CAP: Duration = Duration::from_secs(2);
/// How long the well-formed probe may take: generous, the machine may be busy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Probe attempts before the gateway is declared broken.
const PROBE_ATTEMPTS: u32 = 3;

const PROBE: &[u8] =
    b"GET /levee-fuzz-probe HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n";

/// A running gateway and what keeps it alive.
struct Harness {
    runtime: Runtime,
    listener: SocketAddr,
    _gateway: Gateway,
    _sigpipe: Signal,
    _dir: PathBuf,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(start);

/// Set by the panic hook the moment any thread panics, before the (slow) backtrace.
static PANICKED: AtomicBool = AtomicBool::new(false);
/// The first broken promise the upstream saw.
static VIOLATION: Mutex<Option<String>> = Mutex::new(None);

static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("LEVEE_FUZZ_VERBOSE").is_some());

fuzz_target!(|data: &[u8]| {
    let h = &*HARNESS;
    h.runtime.block_on(async {
        let _ = tokio::time::timeout(READ_CAP, exchange(h.listener, data)).await;
        fail_on_findings();
        probe(h.listener).await;
    });
    fail_on_findings();
});

/// Panics on a broken promise; on a panic in another thread, waits for the hook's abort so that
/// libFuzzer saves this input and not a later one.
fn fail_on_findings() {
    if let Some(violation) = VIOLATION
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        panic!("{violation}");
    }
    if PANICKED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(120));
        panic!("a gateway thread panicked (see above) but did not abort the process");
    }
}

/// Writes `data` and reads whatever comes back until the gateway closes or falls quiet.
async fn exchange(addr: SocketAddr, data: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return; // The probe below decides whether the gateway is down.
    };
    // The gateway may close mid-write (400, 431): that is an answer, not a failure.
    let _ = stream.write_all(data).await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut reply = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        if *VERBOSE {
            reply.extend_from_slice(&buf[..n]);
        }
    }
    if *VERBOSE {
        eprintln!(
            "--- reply ---\n{}\n--- end ---",
            String::from_utf8_lossy(&reply)
        );
    }
}

/// Panics unless a well-formed request through the gateway gets the upstream's 200.
async fn probe(addr: SocketAddr) {
    let mut last = String::new();
    for _ in 0..PROBE_ATTEMPTS {
        match tokio::time::timeout(PROBE_TIMEOUT, probe_once(addr)).await {
            Ok(Ok(reply))
                if reply.starts_with(b"HTTP/1.1 200") && contains(&reply, b"upstream ok") =>
            {
                return;
            }
            Ok(Ok(reply)) => last = format!("reply {:?}", String::from_utf8_lossy(&reply)),
            Ok(Err(e)) => last = format!("error {e}"),
            Err(_) => last = format!("no reply within {PROBE_TIMEOUT:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway no longer answers a well-formed request after this input: {last}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn probe_once(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(PROBE).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

// === setup ===

fn start() -> Harness {
    // Wraps libFuzzer's hook (print, then abort): the flag is up before the slow printing.
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        abort_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let dir = std::env::temp_dir().join(format!("levee-fuzz-{}", std::process::id()));
    let (gateway, listener, sigpipe) = runtime.block_on(async {
        // libFuzzer's C `main` skips Rust's start-up, which ignores SIGPIPE; a write to a socket
        // the peer closed would kill the process. A tokio handler takes the signal instead.
        let sigpipe = signal(SignalKind::pipe()).unwrap_or_else(|e| panic!("SIGPIPE: {e}"));
        let upstream = start_upstream().await;
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let config = dir.join("levee.yaml");
        std::fs::write(&config, config_text(upstream))
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let mut options = GatewayOptions::new(&config);
        options.watch = false;
        let gateway = Gateway::start(options)
            .await
            .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));
        let listener = gateway
            .listener_addr("fuzz")
            .unwrap_or_else(|| panic!("the gateway has no listener `fuzz`"));
        (gateway, listener, sigpipe)
    });
    Harness {
        runtime,
        listener,
        _gateway: gateway,
        _sigpipe: sigpipe,
        _dir: dir,
    }
}

/// One plain listener, every request to one upstream. Short timeouts keep stuck inputs cheap.
fn config_text(upstream: SocketAddr) -> String {
    format!(
        "listeners:
  - name: fuzz
    address: 127.0.0.1:0
    limits: {{ header_read_timeout: 1s, idle_timeout: 2s, max_header_size: 16KiB }}
admin:
  address: 127.0.0.1:0
routes:
  - name: small
    match: {{ path_prefix: /small/ }}
    cluster: upstream
    max_body_size: 16
  - name: all
    cluster: upstream
    timeout: 2s
    max_body_size: 64KiB
clusters:
  - name: upstream
    lb: round-robin
    endpoints:
      - {{ address: \"{upstream}\" }}
    connect_timeout: 1s
shutdown: {{ drain_delay: 0s, drain_timeout: 1s }}
log: {{ level: \"off\", access_log: false }}
"
    )
}

/// What the gateway promises about every request it forwards (`DESIGN.md`: hop-by-hop headers
/// are stripped, `x-forwarded-for`, `x-forwarded-proto` and `x-request-id` are set) and what
/// RFC 9112 §3.2 demands of a request (at most one `Host`). A breach is a smuggling or spoofing
/// hole. The error is a check id (for `LEVEE_FUZZ_IGNORE`) and what was wrong.
fn check_forwarded(headers: &HeaderMap) -> Result<(), (&'static str, String)> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let host = values("host");
    if host.len() > 1 {
        return Err(("host", format!("{} Host headers: {host:?}", host.len())));
    }
    // RFC 9112 §3.2: `Host = uri-host [ ":" port ]`; anything else gets a 400.
    if let Some(h) = host.first()
        && (h.contains('@') || http::uri::Authority::from_str(h).is_err())
    {
        return Err(("host-syntax", format!("invalid Host forwarded: {h:?}")));
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "trailer",
    ] {
        if headers.contains_key(name) {
            let why = format!("hop-by-hop header `{name}` forwarded: {:?}", values(name));
            return Err(("hop-by-hop", why));
        }
    }
    if values("te").iter().any(|v| v != "trailers") {
        return Err((
            "te",
            format!("`te` other than `trailers`: {:?}", values("te")),
        ));
    }
    let connection = values("connection");
    let tokens: Vec<String> = connection
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if tokens
        .iter()
        .any(|t| !["upgrade", "keep-alive", "close"].contains(&t.as_str()))
    {
        return Err((
            "connection",
            format!("`connection` with its tokens: {connection:?}"),
        ));
    }
    if headers.contains_key("upgrade") && !tokens.iter().any(|t| t == "upgrade") {
        let why = format!(
            "`upgrade` without `connection: upgrade`: {:?}",
            values("upgrade")
        );
        return Err(("upgrade", why));
    }
    if values("x-forwarded-proto") != ["http"] {
        let why = format!("x-forwarded-proto is {:?}", values("x-forwarded-proto"));
        return Err(("forwarded", why));
    }
    let xff = values("x-forwarded-for");
    let ends_with_client = |v: &String| v.rsplit(',').next().map(str::trim) == Some("127.0.0.1");
    if xff.len() != 1 || !xff.iter().all(ends_with_client) {
        let why = format!("x-forwarded-for is not one line ending with the client: {xff:?}");
        return Err(("forwarded", why));
    }
    if values("x-request-id").len() != 1 {
        let why = format!("x-request-id is {:?}", values("x-request-id"));
        return Err(("request-id", why));
    }
    Ok(())
}

/// An HTTP/1.1 upstream that checks every request with [`check_forwarded`], reads the whole
/// request body and answers `200 upstream ok`.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the upstream: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("upstream address: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    if *VERBOSE {
                        eprintln!("--- upstream got ---\n{req:?}");
                    }
                    if let Err((id, why)) = check_forwarded(req.headers())
                        && !levee_fuzz::ignored(id)
                    {
                        let mut slot = VIOLATION.lock().unwrap_or_else(PoisonError::into_inner);
                        slot.get_or_insert(format!(
                            "the upstream got a request it must never see [{id}]: {why}\n{req:?}"
                        ));
                    }
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"upstream ok",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
