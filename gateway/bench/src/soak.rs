//! The soak scenario: everything at once, for a long time, watching for leaks and lost requests.
//!
//! One Levee process forwards to a cluster of three upstream processes, with retries, active
//! health checks every second and outlier detection at its defaults ([`soak_config`]). For the
//! whole run (10 minutes by default):
//!
//! - **Normal clients**, closed loop: `--h1-connections` HTTP/1.1 connections with one request
//!   in flight each, and `--h2-connections` HTTP/2 (h2c) connections with `--h2-streams`
//!   requests in flight each. Every request is a `GET`, answered by an upstream.
//! - **Reloads** every `--reload-every`: the config file is replaced (written aside, then
//!   renamed over) by the other of two valid configs, then `POST /config/reload` is called.
//!   The two differ in a plugin binding: config A has the `tagger` plugin (version `a`) on the
//!   route the clients use, config B moves it (version `b`) to another route. The clients count
//!   the answers that carry `x-plugin-version`, which shows the swaps take effect.
//! - **Upstream kills** every `--kill-every`: the next upstream in turn is killed (`SIGKILL`,
//!   so its connections are reset and its port refuses) and restarted on the same port
//!   `--down-for` later. One is down at a time; the other two can serve every request, so no
//!   request needs to fail.
//! - **Hostile clients** every `--hostile-every`, in turn: slowloris (a head sent a byte per
//!   200 ms), a broken chunked body, and an HTTP/2 rapid reset (500 streams opened and cancelled
//!   at once). Each is expected to be cut off: closed, `400`/`408`, or `GOAWAY`.
//!
//! Every second the harness reads the gateway's `VmRSS` (`/proc/PID/status`) and counts its
//! open file descriptors (`/proc/PID/fd`). The report gives both at the start, their maximum
//! and at the end, and the requests of the normal clients: sent, answered `2xx`, and lost. A
//! request is **lost** when it did not get a `2xx`: another status, no answer within
//! `--request-timeout`, or a transport failure (the connection to the gateway refused, reset
//! or closed before the answer was complete). The goal is zero lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SoakArgs;
use crate::plugins::default_plugins_dir;
use crate::process;
use crate::report::Machine;
use crate::run::{self, progress};
use crate::targets::{self, Server};

/// Upstreams of the cluster: with one down at a time, two remain.
const UPSTREAMS: usize = 3;

/// The listener's `header_read_timeout`: short, so the slowloris client is cut off quickly.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a hostile client waits for the gateway to cut it off before counting it as not
/// cut off.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(15);

/// Streams the rapid-reset client opens and cancels at once; far above the listener's
/// `http2_max_pending_resets` (20 by default).
const RAPID_RESETS: u32 = 500;

/// Which of the two configs the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// `tagger` (version `a`) on the route the clients use.
    OnMain,
    /// `tagger` (version `b`) on the route `/other/` only.
    OnOther,
}

/// The Levee config of the soak: the listener on `listen` and admin on `admin` (fixed ports, so
/// that a reload keeps them), a route `/other/` and the catch-all route `soak`, both to one
/// round-robin cluster of `upstreams` with health checks every second and room for 64
/// concurrent retries; `soak` retries three
/// times on connect failures, resets, timeouts and 502/503/504 with a generous budget, and
/// `binding` says which route the `tagger` plugin at `tagger` is bound to.
pub(crate) fn soak_config(
    listen: SocketAddr,
    admin: SocketAddr,
    upstreams: &[SocketAddr],
    binding: Binding,
    tagger: &Path,
) -> String {
    let plugin = |version: &str| {
        format!("    plugins:\n      - name: tagger\n        config: {{ version: {version} }}\n")
    };
    let mut out = format!(
        "listeners:\n  - name: soak\n    address: \"{listen}\"\n    limits:\n      \
         header_read_timeout: {}s\n      max_connections: 30000\n\
         admin:\n  address: \"{admin}\"\nroutes:\n  - name: other\n    match: {{ path_prefix: \"/other/\" }}\n    cluster: soak\n",
        HEADER_READ_TIMEOUT.as_secs()
    );
    if binding == Binding::OnOther {
        out.push_str(&plugin("b"));
    }
    // The budget allows more retries than the default (20%), and the cluster more concurrent
    // retries (`max_retries`, 3 by default, below the clients' concurrency): at a kill, every
    // request in flight to the killed upstream is retried at once, and until the endpoint is
    // ejected a third of the new ones fail to connect.
    out.push_str(
        "  - name: soak\n    match: { path_prefix: \"/\" }\n    cluster: soak\n    timeout: 10s\n    \
         max_body_size: 64KiB\n    retry:\n      attempts: 3\n      \
         on: [connect-failure, reset, timeout, 502, 503, 504]\n      per_try_timeout: 2s\n      \
         budget: { ratio: 50%, min_per_second: 200 }\n",
    );
    if binding == Binding::OnMain {
        out.push_str(&plugin("a"));
    }
    out.push_str(
        "clusters:\n  - name: soak\n    lb: round-robin\n    max_idle_per_endpoint: 64\n    \
         health_check: { path: /healthz, interval: 1s }\n    limits: { max_retries: 64 }\n    \
         endpoints:\n",
    );
    for upstream in upstreams {
        let _ = writeln!(out, "      - {{ address: \"{upstream}\" }}");
    }
    let _ = writeln!(
        out,
        "plugins:\n  - name: tagger\n    path: \"{}\"",
        tagger.display()
    );
    out.push_str(
        "shutdown:\n  drain_delay: 0s\n  drain_timeout: 1s\nlog:\n  level: info\n  access_log: false\n",
    );
    out
}

// === counters ===

/// What the normal clients saw, shared by their tasks.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    /// Answers of the main route that carried `x-plugin-version`.
    tagged: AtomicU64,
    /// Lost requests by kind: a status (`502`), `timeout` or `transport`.
    lost: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn record(&self, outcome: Result<Answer, &'static str>) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let kind = match outcome {
            Ok(answer) if (200..300).contains(&answer.status) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                if answer.tagged {
                    self.tagged.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(Answer {
                status,
                error: Some(error),
                ..
            }) => format!("{status} {error}"),
            Ok(answer) => answer.status.to_string(),
            Err(kind) => kind.to_string(),
        };
        *self
            .lost
            .lock()
            .expect("tally lock")
            .entry(kind)
            .or_default() += 1;
    }

    fn lost(&self) -> BTreeMap<String, u64> {
        self.lost.lock().expect("tally lock").clone()
    }
}

/// A normal request's answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Whether the plugin tagged it (`x-plugin-version`).
    tagged: bool,
    /// The gateway's `x-levee-error`, on an error it answered itself.
    error: Option<String>,
}

/// What the hostile clients came to, by kind: (runs, cut off as expected).
type HostileTally = std::sync::Mutex<BTreeMap<&'static str, (u64, u64)>>;

/// One sample of the gateway's resources.
#[derive(Debug, Clone, Copy)]
struct Resources {
    at: Duration,
    rss: u64,
    fds: u64,
}

/// What the scenario measured.
#[derive(Debug)]
struct SoakReport {
    machine: Machine,
    args: String,
    duration: Duration,
    samples: Vec<Resources>,
    h1: (u64, u64, u64, BTreeMap<String, u64>),
    h2: (u64, u64, u64, BTreeMap<String, u64>),
    reloads_ok: u64,
    reloads_failed: Vec<String>,
    kills: u64,
    hostile: BTreeMap<&'static str, (u64, u64)>,
    /// The gateway's retry counters after the run (`levee_retries*` lines of `/metrics`).
    retry_metrics: Vec<String>,
}

// === the run ===

/// Runs the soak scenario and prints its report (and writes it as JSON with `--json`).
pub(crate) fn run(args: &SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.h1_connections + args.h2_connections > 0,
        "no normal clients"
    );
    args.scenario.run(&["taskset"], |levee, work| {
        let report = run_in(args, levee, work)?;
        if let Some(path) = &args.json {
            let json = serde_json::to_string_pretty(&report.to_json())?;
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(report.to_markdown())
    })
}

fn run_in(args: &SoakArgs, levee: &Path, work: &Path) -> anyhow::Result<SoakReport> {
    let s = &args.scenario;
    let plugins_dir = args.plugins_dir.clone().unwrap_or_else(default_plugins_dir);
    let tagger = plugins_dir.join("tagger.wasm");
    anyhow::ensure!(
        tagger.exists(),
        "no plugin at {}: build the examples first (plugins/build.sh), or pass --plugins-dir",
        tagger.display()
    );
    let background = run::background_busy()?;
    progress("starting three upstreams");
    let upstreams = s.start_upstreams(UPSTREAMS)?;
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.address).collect();
    let listen = SocketAddr::from(([127, 0, 0, 1], targets::free_port()?));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], targets::free_port()?));
    let config = |binding| soak_config(listen, admin_addr, &addrs, binding, &tagger);
    let file = work.join("levee-soak.yaml");
    let gateway = targets::start_levee(levee, &s.gateway_cpus, &file, &config(Binding::OnMain))?;
    let admin = gateway.admin.context("Levee reported no admin address")?;
    let pid = gateway.proc.pid();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    progress(&format!(
        "soak: {} with {} HTTP/1.1 and {}x{} HTTP/2 clients; reload every {}, kill every {}, \
         hostile client every {}",
        humantime::format_duration(args.duration),
        args.h1_connections,
        args.h2_connections,
        args.h2_streams,
        humantime::format_duration(args.reload_every),
        humantime::format_duration(args.kill_every),
        humantime::format_duration(args.hostile_every),
    ));
    let gateway = Arc::new(std::sync::Mutex::new(gateway));
    let report = runtime.block_on(async {
        let start = Instant::now();
        let end = start + args.duration;
        let stop = Arc::new(AtomicBool::new(false));
        let h1 = Arc::new(Tally::default());
        let h2 = Arc::new(Tally::default());
        let hostile: Arc<HostileTally> = Arc::default();
        let url = listen;

        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..args.h1_connections {
            clients.spawn(h1_client(
                url,
                h1.clone(),
                stop.clone(),
                args.request_timeout,
            ));
        }
        for _ in 0..args.h2_connections {
            clients.spawn(h2_client(
                url,
                args.h2_streams,
                h2.clone(),
                stop.clone(),
                args.request_timeout,
            ));
        }
        let sampler = tokio::spawn(sample(pid, start, stop.clone()));

        // Reloads, kills and hostile clients on one schedule, each at its own period.
        let mut upstreams: Vec<Option<Server>> = upstreams.into_iter().map(Some).collect();
        let mut next_reload = start + args.reload_every;
        let mut next_kill = start + args.kill_every;
        let mut next_hostile = start + args.hostile_every;
        let mut binding = Binding::OnMain;
        let (mut reloads_ok, mut reloads_failed, mut kills) = (0, Vec::new(), 0);
        let mut hostile_turn = 0usize;
        let mut hostile_tasks = tokio::task::JoinSet::new();
        let mut restarts = tokio::task::JoinSet::new();
        let mut victim = 0usize;
        while Instant::now() < end {
            let next = next_reload.min(next_kill).min(next_hostile).min(end);
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= next_reload {
                next_reload += args.reload_every;
                binding = match binding {
                    Binding::OnMain => Binding::OnOther,
                    Binding::OnOther => Binding::OnMain,
                };
                match reload(&file, &config(binding), admin).await {
                    Ok(()) => reloads_ok += 1,
                    Err(error) => reloads_failed.push(format!("{error:#}")),
                }
            }
            if now >= next_kill {
                next_kill += args.kill_every;
                // Only when the previous victim is back: one upstream down at a time.
                if let Some(server) = upstreams[victim].take() {
                    let port = server.address.port();
                    tokio::task::spawn_blocking(move || drop(server)).await?;
                    kills += 1;
                    progress(&format!(
                        "{:>4}s killed upstream {victim} (:{port})",
                        start.elapsed().as_secs()
                    ));
                    let cpus = s.load_cpus.clone();
                    let down_for = args.down_for;
                    let index = victim;
                    restarts.spawn(async move {
                        tokio::time::sleep(down_for).await;
                        let server = tokio::task::spawn_blocking(move || {
                            targets::start_upstream_on(&cpus, 1, port)
                        })
                        .await?;
                        anyhow::Ok((index, server?))
                    });
                    victim = (victim + 1) % UPSTREAMS;
                }
            }
            while let Some(restarted) = restarts.try_join_next() {
                let (index, server) = restarted.context("the restart task panicked")??;
                upstreams[index] = Some(server);
            }
            if now >= next_hostile {
                next_hostile += args.hostile_every;
                let kind = HOSTILE[hostile_turn % HOSTILE.len()];
                hostile_turn += 1;
                hostile_tasks.spawn(hostile_client(kind, url, hostile.clone()));
            }
            let alive = gateway.lock().expect("gateway lock").proc.check_alive();
            alive.context("the gateway died during the soak")?;
        }
        stop.store(true, Ordering::Relaxed);
        while clients.join_next().await.is_some() {}
        while hostile_tasks.join_next().await.is_some() {}
        while let Some(restarted) = restarts.join_next().await {
            let (index, server) = restarted.context("the restart task panicked")??;
            upstreams[index] = Some(server);
        }
        let samples = sampler.await.context("the sampler panicked")?;
        let retry_metrics = crate::watch::fetch(admin, "/metrics")
            .await
            .map(|body| {
                String::from_utf8_lossy(&body)
                    .lines()
                    .filter(|l| l.starts_with("levee_retries"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let tally = |t: &Tally| {
            let lost = t.lost();
            (
                t.sent.load(Ordering::Relaxed),
                t.ok.load(Ordering::Relaxed),
                t.tagged.load(Ordering::Relaxed),
                lost,
            )
        };
        let hostile = hostile.lock().expect("hostile lock").clone();
        anyhow::Ok(SoakReport {
            machine: Machine::probe(levee, Path::new("nginx"), true, background),
            args: format!(
                "--duration {} --h1-connections {} --h2-connections {} --h2-streams {} \
                 --reload-every {} --kill-every {} --down-for {} --hostile-every {} \
                 --request-timeout {} --gateway-cpus {} --load-cpus {}",
                humantime::format_duration(args.duration),
                args.h1_connections,
                args.h2_connections,
                args.h2_streams,
                humantime::format_duration(args.reload_every),
                humantime::format_duration(args.kill_every),
                humantime::format_duration(args.down_for),
                humantime::format_duration(args.hostile_every),
                humantime::format_duration(args.request_timeout),
                s.gateway_cpus,
                s.load_cpus,
            ),
            duration: start.elapsed(),
            samples,
            h1: tally(&h1),
            h2: tally(&h2),
            reloads_ok,
            reloads_failed,
            kills,
            hostile,
            retry_metrics,
        })
    })?;
    drop(gateway);
    Ok(report)
}

/// Replaces the config file with `config` (written aside, then renamed over, so the gateway
/// never reads half a file) and calls `POST /config/reload`.
async fn reload(file: &Path, config: &str, admin: SocketAddr) -> anyhow::Result<()> {
    let aside: PathBuf = file.with_extension("yaml.next");
    tokio::fs::write(&aside, config).await?;
    tokio::fs::rename(&aside, file).await?;
    crate::reload::trigger(admin).await?;
    Ok(())
}

/// Samples `VmRSS` and the open file descriptors of `pid` every second until `stop`.
async fn sample(pid: u32, start: Instant, stop: Arc<AtomicBool>) -> Vec<Resources> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rss = process::rss(pid).unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        samples.push(Resources {
            at: start.elapsed(),
            rss,
            fds,
        });
        if stop.load(Ordering::Relaxed) {
            return samples;
        }
    }
}

// === normal clients ===

/// The path every normal request asks for; it goes to the route `soak`.
const PATH: &str = "/soak";

/// One HTTP/1.1 connection, one request in flight; a new connection after any failure.
async fn h1_client(addr: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>, timeout: Duration) {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    while !stop.load(Ordering::Relaxed) {
        let outcome = tokio::time::timeout(timeout, async {
            if sender.as_mut().is_none_or(|s| s.is_closed()) {
                let tcp = TcpStream::connect(addr).await.map_err(|_| "transport")?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|_| "transport")?;
                tokio::spawn(conn);
                sender = Some(s);
            }
            let s = sender.as_mut().ok_or("transport")?;
            s.ready().await.map_err(|_| "transport")?;
            let response = s
                .send_request(request(addr))
                .await
                .map_err(|_| "transport")?;
            read(response).await
        })
        .await
        .unwrap_or(Err("timeout"));
        if outcome.is_err() {
            sender = None;
        }
        tally.record(outcome);
    }
}

/// One HTTP/2 (h2c) connection with `streams` requests in flight; a new connection after any
/// failure.
async fn h2_client(
    addr: SocketAddr,
    streams: usize,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) {
    let sender: Arc<Mutex<Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>>> =
        Arc::default();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..streams.max(1) {
        let (sender, tally, stop) = (sender.clone(), tally.clone(), stop.clone());
        loops.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = tokio::time::timeout(timeout, async {
                    let mut s = {
                        let mut shared = sender.lock().await;
                        if shared.as_ref().is_none_or(|s| s.is_closed()) {
                            let tcp = TcpStream::connect(addr).await.map_err(|_| "transport")?;
                            let (s, conn) = hyper::client::conn::http2::handshake(
                                TokioExecutor::new(),
                                TokioIo::new(tcp),
                            )
                            .await
                            .map_err(|_| "transport")?;
                            tokio::spawn(conn);
                            *shared = Some(s);
                        }
                        shared.clone().ok_or("transport")?
                    };
                    s.ready().await.map_err(|_| "transport")?;
                    let response = s
                        .send_request(request(addr))
                        .await
                        .map_err(|_| "transport")?;
                    read(response).await
                })
                .await
                .unwrap_or(Err("timeout"));
                tally.record(outcome);
            }
        });
    }
    while loops.join_next().await.is_some() {}
}

fn request(addr: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{addr}{PATH}"))
        .header(http::header::HOST, addr.to_string())
        .body(Empty::new())
        .expect("a valid request")
}

/// The answer, once its body is read to the end.
async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Answer, &'static str> {
    let answer = Answer {
        status: response.status().as_u16(),
        tagged: response.headers().contains_key("x-plugin-version"),
        error: response
            .headers()
            .get("x-levee-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    response
        .into_body()
        .collect()
        .await
        .map_err(|_| "transport")?;
    Ok(answer)
}

// === hostile clients ===

/// The hostile clients, taken in turn.
const HOSTILE: [&str; 3] = ["slowloris", "broken-chunked", "h2-rapid-reset"];

/// Runs one hostile client of `kind` and records whether the gateway cut it off.
async fn hostile_client(kind: &'static str, addr: SocketAddr, tally: Arc<HostileTally>) {
    let cut = tokio::time::timeout(HOSTILE_TIMEOUT, async {
        match kind {
            "slowloris" => slowloris(addr).await,
            "broken-chunked" => broken_chunked(addr).await,
            _ => rapid_reset(addr).await,
        }
    })
    .await
    .unwrap_or(false);
    let mut tally = tally.lock().expect("hostile lock");
    let entry = tally.entry(kind).or_default();
    entry.0 += 1;
    entry.1 += u64::from(cut);
}

/// A head a byte per 200 ms (100 bytes: 20 s); cut off when the gateway closes before the head
/// is complete.
async fn slowloris(addr: SocketAddr) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let head = format!(
        "GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    let (mut read, mut write) = tcp.into_split();
    let writer = async {
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The whole head went out: the gateway did not cut the client off. Wait for the
        // reader's verdict.
        std::future::pending::<()>().await;
    };
    let reader = async {
        let mut buf = Vec::new();
        let _ = read.read_to_end(&mut buf).await;
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 408")
    };
    tokio::select! {
        cut = reader => cut,
        () = writer => false,
    }
}

/// A chunked body whose chunk runs past its size; cut off on a `400` and a close.
async fn broken_chunked(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let bytes = b"POST /soak HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhelloXX0\r\n\r\n";
    let _ = tcp.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 400")
}

/// [`RAPID_RESETS`] streams opened and cancelled at once; cut off on a `GOAWAY` or a close.
async fn rapid_reset(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    // HPACK: `:method GET` and `:scheme http` from the static table, `:path /soak` and
    // `:authority x` as literals with indexed names, no Huffman.
    let block = [
        &[0x82, 0x86, 0x04, PATH.len() as u8][..],
        PATH.as_bytes(),
        &[0x01, 0x01, b'x'],
    ]
    .concat();
    for i in 0..RAPID_RESETS {
        let stream = 1 + 2 * i;
        // HEADERS with END_STREAM | END_HEADERS, then RST_STREAM(CANCEL).
        bytes.extend(h2_frame(0x1, 0x5, stream, &block));
        bytes.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let (mut read, mut write) = tcp.split();
    let reader = async {
        let mut buf = Vec::new();
        let _ = read.read_to_end(&mut buf).await;
        // Closed; a GOAWAY (type 7) is expected among the frames, but a close alone cuts the
        // client off too.
        true
    };
    let (_, cut) = tokio::join!(write.write_all(&bytes), reader);
    cut
}

/// An HTTP/2 frame: the 9-byte header (length, type, flags, stream id), then `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

// === impl SoakReport ===

impl SoakReport {
    fn rss_fds(&self) -> ((u64, u64, u64), (u64, u64, u64)) {
        let first = self.samples.first().copied();
        let last = self.samples.last().copied();
        let max_rss = self.samples.iter().map(|s| s.rss).max().unwrap_or(0);
        let max_fds = self.samples.iter().map(|s| s.fds).max().unwrap_or(0);
        (
            (
                first.map_or(0, |s| s.rss),
                max_rss,
                last.map_or(0, |s| s.rss),
            ),
            (
                first.map_or(0, |s| s.fds),
                max_fds,
                last.map_or(0, |s| s.fds),
            ),
        )
    }

    fn lost_total(&self) -> u64 {
        self.h1.3.values().sum::<u64>() + self.h2.3.values().sum::<u64>()
    }

    fn to_json(&self) -> serde_json::Value {
        let ((rss0, rss_max, rss1), (fd0, fd_max, fd1)) = self.rss_fds();
        let clients = |c: &(u64, u64, u64, BTreeMap<String, u64>)| {
            serde_json::json!({
                "sent": c.0, "ok": c.1, "tagged_by_plugin": c.2,
                "lost": c.3.values().sum::<u64>(), "lost_by_kind": c.3,
            })
        };
        serde_json::json!({
            "scenario": "soak",
            "args": self.args,
            "duration_s": self.duration.as_secs_f64(),
            "rss_bytes": { "start": rss0, "max": rss_max, "end": rss1 },
            "open_fds": { "start": fd0, "max": fd_max, "end": fd1 },
            "http1": clients(&self.h1),
            "http2": clients(&self.h2),
            "lost": self.lost_total(),
            "reloads": { "ok": self.reloads_ok, "failed": self.reloads_failed },
            "upstream_kills": self.kills,
            "retry_metrics": self.retry_metrics,
            "hostile": self.hostile.iter().map(|(k, (runs, cut))| {
                (k.to_string(), serde_json::json!({ "runs": runs, "cut_off": cut }))
            }).collect::<serde_json::Map<_, _>>(),
            "samples": self.samples.iter().map(|s| {
                serde_json::json!([s.at.as_secs_f64(), s.rss, s.fds])
            }).collect::<Vec<_>>(),
        })
    }

    fn to_markdown(&self) -> String {
        let ((rss0, rss_max, rss1), (fd0, fd_max, fd1)) = self.rss_fds();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut out = String::from("# Levee soak\n\n");
        out.push_str(&self.machine.summary());
        let _ = writeln!(
            out,
            "\n`levee-bench soak {}`; ran {:.0} s.\n",
            self.args,
            self.duration.as_secs_f64()
        );
        let verdict = if self.lost_total() == 0 {
            "**zero lost**"
        } else {
            "**requests lost**"
        };
        let _ = writeln!(out, "## Requests: {verdict}\n");
        out.push_str("| Clients | Sent | 2xx | Lost | Lost by kind | Tagged by the plugin |\n");
        out.push_str("|---------|-----:|----:|-----:|--------------|-----:|\n");
        for (name, c) in [("HTTP/1.1", &self.h1), ("HTTP/2", &self.h2)] {
            let kinds: Vec<String> = c.3.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                c.0,
                c.1,
                c.3.values().sum::<u64>(),
                if kinds.is_empty() {
                    "-".to_string()
                } else {
                    kinds.join(", ")
                },
                c.2
            );
        }
        out.push_str(
            "\nLost: a request of a normal client that did not get a 2xx (another status, no \
             answer within the request timeout, or the connection refused, reset or closed \
             before the answer was complete).\n\n",
        );
        out.push_str("## Gateway resources (sampled every second)\n\n");
        out.push_str("| | Start | Max | End |\n|--|--:|--:|--:|\n");
        let _ = writeln!(
            out,
            "| VmRSS (MiB) | {:.1} | {:.1} | {:.1} |",
            mib(rss0),
            mib(rss_max),
            mib(rss1)
        );
        let _ = writeln!(out, "| Open file descriptors | {fd0} | {fd_max} | {fd1} |");
        out.push_str("\n## Disturbances\n\n");
        let _ = writeln!(
            out,
            "- Reloads: {} ok, {} failed{}",
            self.reloads_ok,
            self.reloads_failed.len(),
            self.reloads_failed
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "- Upstream kills (each restarted): {}", self.kills);
        for (kind, (runs, cut)) in &self.hostile {
            let _ = writeln!(out, "- Hostile `{kind}`: {runs} runs, {cut} cut off");
        }
        if !self.retry_metrics.is_empty() {
            out.push_str("\nThe gateway's retry counters after the run:\n\n```\n");
            for line in &self.retry_metrics {
                let _ = writeln!(out, "{line}");
            }
            out.push_str("```\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_soak_configs_are_accepted_by_the_config_loader() {
        let upstreams: Vec<SocketAddr> = vec![
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
            "127.0.0.1:1003".parse().unwrap(),
        ];
        let dir = std::env::temp_dir().join(format!("levee-soak-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tagger = dir.join("tagger.wasm");
        std::fs::write(&tagger, b"\0asm").unwrap();
        for binding in [Binding::OnMain, Binding::OnOther] {
            let text = soak_config(
                "127.0.0.1:2000".parse().unwrap(),
                "127.0.0.1:2001".parse().unwrap(),
                &upstreams,
                binding,
                &tagger,
            );
            let source = levee_config::Source {
                path: &dir.join("levee.yaml"),
                text: &text,
            };
            let config = levee_config::load(&source, &levee_config::StdFileSystem)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            let main = config.routes.iter().find(|r| r.name == "soak").unwrap();
            let other = config.routes.iter().find(|r| r.name == "other").unwrap();
            assert_eq!(main.plugins.is_empty(), binding == Binding::OnOther);
            assert_eq!(other.plugins.is_empty(), binding == Binding::OnMain);
            assert_eq!(config.clusters[0].endpoints.len(), 3);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
