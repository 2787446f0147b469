//! Chaos tooling: upstreams that die, hang, fail and recover on demand, a steady client load
//! that counts what it sees, the `/clusters` admin view as typed values, and a config builder
//! for the resilience keys.
//!
//! A [`ChaosUpstream`] keeps its port across [`ChaosUpstream::kill`] and
//! [`ChaosUpstream::restart`], so the gateway's config can name it once and the test can take
//! it away and bring it back like a crashed and restarted process. Its [`Mode`] switches at run
//! time between healthy, failing with a status, black hole and reset, and it records the most
//! requests it ever had in flight, which is how a test checks the half-open probe cap.
//!
//! Only [`ClusterView::parse`] knows the JSON shape of `/clusters`; tests read the typed views.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::body::{Body, full};
use crate::client::{self, Reply};

/// How long one request of a [`Load`] may take before the client gives up on it and counts it
/// as [`CLIENT_TIMEOUT`]. Far above every route timeout the chaos tests configure, so hitting
/// it means the gateway let a request hang.
pub const REQUEST_BOUND: Duration = Duration::from_secs(20);

/// The outcome a [`Load`] records for a request that outlived [`REQUEST_BOUND`].
pub const CLIENT_TIMEOUT: &str = "client-timeout";

/// How long [`ChaosUpstream::restart`] keeps trying to bind its old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

// === Mode ===

/// What a [`ChaosUpstream`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 200 with a JSON body naming the server, the path and a serial number.
    Healthy,
    /// Answers every request (`/healthz` included) with this status.
    Failing(u16),
    /// Reads the request and never answers (the connection stays open).
    BlackHole,
    /// Reads the request head, then closes the connection without a response byte.
    Reset,
}

// === ChaosUpstream ===

/// A loopback HTTP/1.1 upstream that can be killed, restarted on the same port, and switched
/// between [`Mode`]s while it runs. Every mode serves `/healthz` for active health checks:
/// 200 `ok` when healthy, the failing status when failing, never when a black hole, a closed
/// connection when resetting. [`ChaosUpstream::set_healthz`] overrides that.
///
/// Answers carry `x-upstream: NAME`. Stops when dropped.
#[derive(Debug)]
pub struct ChaosUpstream {
    name: Arc<str>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    healthz: Mutex<Option<bool>>,
    gate: watch::Sender<bool>,
    requests: AtomicUsize,
    failed: AtomicUsize,
    health_checks: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight(Arc<Shared>);

impl ChaosUpstream {
    /// Starts a healthy upstream called `name` on `127.0.0.1:0`.
    pub async fn start(name: &str) -> ChaosUpstream {
        ChaosUpstream::start_in(name, Mode::Healthy).await
    }

    /// Starts an upstream called `name` in `mode` on `127.0.0.1:0`.
    pub async fn start_in(name: &str, mode: Mode) -> ChaosUpstream {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind chaos upstream");
        let addr = listener.local_addr().expect("chaos upstream addr");
        let (gate, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            healthz: Mutex::new(None),
            gate,
            requests: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let name: Arc<str> = Arc::from(name);
        let task = tokio::spawn(accept_loop(listener, name.clone(), shared.clone()));
        ChaosUpstream {
            name,
            addr,
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// The name sent in `x-upstream`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address; the same after a restart.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and drops every open connection, as a crashed process would. Connecting
    /// afterwards is refused. Returns once the listener is closed.
    pub async fn kill(&self) {
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again (after [`ChaosUpstream::kill`]); counters are kept.
    /// Panics if the port cannot be bound again within 10s.
    pub async fn restart(&self) {
        self.kill().await;
        let mut waited = Duration::ZERO;
        let listener = loop {
            match bind(self.addr) {
                Ok(listener) => break listener,
                // Something (a lingering socket, or another test's ephemeral port) holds it.
                Err(_) if waited < REBIND_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    waited += Duration::from_millis(50);
                }
                Err(error) => panic!("cannot bind {} again: {error}", self.addr),
            }
        };
        let task = tokio::spawn(accept_loop(
            listener,
            self.name.clone(),
            self.shared.clone(),
        ));
        *self.task.lock().expect("task lock") = Some(task);
    }

    /// Whether it is listening (not killed).
    pub fn is_running(&self) -> bool {
        self.task.lock().expect("task lock").is_some()
    }

    /// Switches what the upstream does with requests from now on (requests already held in a
    /// black hole stay held).
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().expect("mode lock")
    }

    /// Fixes what `/healthz` answers: `Some(true)` is always 200, `Some(false)` always 503,
    /// `None` (the default) follows the mode.
    pub fn set_healthz(&self, healthz: Option<bool>) {
        *self.shared.healthz.lock().expect("healthz lock") = healthz;
    }

    /// Holds every request (not `/healthz`) after it is counted, until [`ChaosUpstream::release`].
    pub fn hold(&self) {
        self.shared.gate.send_replace(false);
    }

    /// Lets held requests, and later ones, proceed.
    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Requests received, `/healthz` excluded, counted on arrival.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with a failing status or a reset, `/healthz` excluded.
    pub fn failed(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// `/healthz` requests received.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Connections accepted, over every run.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests in flight now (`/healthz` excluded): arrived, not yet answered or abandoned.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once since the start or the last
    /// [`ChaosUpstream::reset_max_in_flight`].
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts a new maximum from the requests in flight now.
    pub fn reset_max_in_flight(&self) {
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

/// Binds `addr` with `SO_REUSEADDR`, so a restarted upstream gets its port back while old
/// connections of the previous run linger in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, name: Arc<str>, shared: Arc<Shared>) {
    // Connections live in the set, so aborting this task (a kill) drops every one of them.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (name, shared) = (name.clone(), shared.clone());
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(name.clone(), shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    name: Arc<str>,
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let mode = *shared.mode.lock().expect("mode lock");
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
        let healthz = *shared.healthz.lock().expect("healthz lock");
        let status = match (healthz, mode) {
            (Some(true), _) | (None, Mode::Healthy) => StatusCode::OK,
            (Some(false), _) => StatusCode::SERVICE_UNAVAILABLE,
            (None, Mode::Failing(status)) => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            (None, Mode::BlackHole) => std::future::pending().await,
            (None, Mode::Reset) => return Err(reset()),
        };
        return Ok(respond(&name, status, "ok"));
    }

    let serial = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(shared.clone());

    let mut gate = shared.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    // The mode may have changed while the request was held.
    let mode = *shared.mode.lock().expect("mode lock");
    match mode {
        Mode::Healthy => {
            let body = serde_json::json!({ "server": &*name, "path": path, "serial": serial });
            Ok(respond(&name, StatusCode::OK, &body.to_string()))
        }
        Mode::Failing(status) => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Ok(respond(&name, status, "failing"))
        }
        Mode::BlackHole => std::future::pending().await,
        Mode::Reset => {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            Err(reset())
        }
    }
}

/// A service error: hyper closes the connection without answering.
fn reset() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "chaos upstream resets")
}

fn respond(name: &str, status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-upstream", name)
        .header("content-type", "text/plain")
        .body(full(body.to_string()))
        .expect("valid response")
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

// === Load ===

/// A steady client load: `clients` concurrent HTTP/1.1 clients, each doing GETs one after the
/// other, `pace` apart, until stopped or until each has sent `max_per_client`. Every request is
/// bounded by [`REQUEST_BOUND`].
#[derive(Debug, Clone)]
pub struct Load {
    url: String,
    clients: usize,
    max_per_client: usize,
    pace: Duration,
}

/// A running [`Load`]; stopped (and its clients aborted) when dropped.
#[derive(Debug)]
pub struct RunningLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    outcomes: Arc<Mutex<Outcomes>>,
}

/// What a load saw, request by request.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    /// Requests finished (answered, failed, or given up on).
    pub total: usize,
    /// Counts by outcome: the status (`"200"`), the status and `x-levee-error` kind
    /// (`"503 overloaded"`), `"error: ..."` for a client-side failure, or [`CLIENT_TIMEOUT`].
    pub by_outcome: BTreeMap<String, usize>,
    /// Counts of 200 answers by the `x-upstream` header (the chaos upstream's name).
    pub by_upstream: BTreeMap<String, usize>,
    /// The first few non-200 outcomes with their bodies, for failure messages.
    pub first_failures: Vec<String>,
}

/// How many failures [`Outcomes::first_failures`] keeps.
const KEPT_FAILURES: usize = 10;

impl Load {
    /// A load on `url`: 4 clients, at most 10 000 requests each, 2ms apart.
    pub fn new(url: impl Into<String>) -> Load {
        Load {
            url: url.into(),
            clients: 4,
            max_per_client: 10_000,
            pace: Duration::from_millis(2),
        }
    }

    /// Concurrent clients.
    pub fn clients(mut self, clients: usize) -> Load {
        self.clients = clients;
        self
    }

    /// The most requests each client sends.
    pub fn max_per_client(mut self, max: usize) -> Load {
        self.max_per_client = max;
        self
    }

    /// The pause between one client's requests (leaves the two cores to the gateway).
    pub fn pace(mut self, pace: Duration) -> Load {
        self.pace = pace;
        self
    }

    /// Starts the clients.
    pub fn start(self) -> RunningLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let tasks = (0..self.clients)
            .map(|_| {
                let (stop, outcomes, load) = (stop.clone(), outcomes.clone(), self.clone());
                tokio::spawn(async move {
                    let http = client::http1();
                    for _ in 0..load.max_per_client {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let outcome =
                            tokio::time::timeout(REQUEST_BOUND, client::get(&http, &load.url))
                                .await;
                        outcomes.lock().expect("outcomes lock").record(outcome);
                        tokio::time::sleep(load.pace).await;
                    }
                })
            })
            .collect();
        RunningLoad {
            stop,
            tasks,
            outcomes,
        }
    }
}

impl RunningLoad {
    /// What the load has seen so far.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes.lock().expect("outcomes lock").clone()
    }

    /// Requests finished so far.
    pub fn total(&self) -> usize {
        self.outcomes.lock().expect("outcomes lock").total
    }

    /// Waits until `more` further requests have finished (polling every 20ms); false if the
    /// load ended first or they took longer than [`REQUEST_BOUND`].
    pub async fn wait_for(&self, more: usize) -> bool {
        let target = self.total() + more;
        let polls = REQUEST_BOUND.as_millis() / 20;
        for _ in 0..polls {
            if self.total() >= target {
                return true;
            }
            if self.tasks.iter().all(JoinHandle::is_finished) {
                return self.total() >= target;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits for every client to send all its requests, and returns everything they saw.
    pub async fn finish(mut self) -> Outcomes {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.outcomes()
    }

    /// Stops the clients after their current request and returns everything they saw.
    pub async fn stop(mut self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.outcomes()
    }
}

impl Drop for RunningLoad {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// === impl Outcomes ===

impl Outcomes {
    /// The outcome key of one request (see [`Outcomes::by_outcome`]).
    pub fn key(
        outcome: &Result<Result<Reply, crate::BoxError>, tokio::time::error::Elapsed>,
    ) -> String {
        match outcome {
            Ok(Ok(reply)) => match reply.error_kind() {
                Some(kind) => format!("{} {kind}", reply.status.as_u16()),
                None => reply.status.as_u16().to_string(),
            },
            Ok(Err(error)) => format!("error: {error}"),
            Err(_) => CLIENT_TIMEOUT.to_string(),
        }
    }

    fn record(
        &mut self,
        outcome: Result<Result<Reply, crate::BoxError>, tokio::time::error::Elapsed>,
    ) {
        let key = Outcomes::key(&outcome);
        self.total += 1;
        *self.by_outcome.entry(key.clone()).or_default() += 1;
        match &outcome {
            Ok(Ok(reply)) if reply.status == StatusCode::OK => {
                let upstream = reply.header("x-upstream").unwrap_or("?").to_string();
                *self.by_upstream.entry(upstream).or_default() += 1;
            }
            Ok(Ok(reply)) if self.first_failures.len() < KEPT_FAILURES => {
                self.first_failures.push(format!("{key}: {}", reply.text()));
            }
            _ if self.first_failures.len() < KEPT_FAILURES => self.first_failures.push(key),
            _ => {}
        }
    }

    /// Requests answered 200.
    pub fn ok(&self) -> usize {
        self.by_outcome.get("200").copied().unwrap_or(0)
    }

    /// Requests not answered 200.
    pub fn failures(&self) -> usize {
        self.total - self.ok()
    }

    /// 200 answers from the upstream called `name`.
    pub fn from_upstream(&self, name: &str) -> usize {
        self.by_upstream.get(name).copied().unwrap_or(0)
    }

    /// Requests the client gave up on after [`REQUEST_BOUND`].
    pub fn client_timeouts(&self) -> usize {
        self.by_outcome.get(CLIENT_TIMEOUT).copied().unwrap_or(0)
    }
}

// === Admin views ===

/// One cluster as `GET /clusters` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The cluster name.
    pub name: String,
    /// The breaker state (`closed`, `open`, `half-open`); `None` without a breaker.
    pub breaker: Option<String>,
    /// The endpoints.
    pub endpoints: Vec<EndpointView>,
    /// The whole JSON object, for failure messages.
    pub raw: serde_json::Value,
}

/// One endpoint as `GET /clusters` shows it.
#[derive(Debug, Clone)]
pub struct EndpointView {
    /// `IP:port`.
    pub address: String,
    /// Priority level.
    pub priority: u64,
    /// Whether the load balancer may pick it (healthy, not ejected).
    pub usable: bool,
    /// `healthy`, `unhealthy` or `unknown` by active health checks; `unchecked` without them.
    pub health: String,
    /// The current ejection, if it is ejected.
    pub ejection: Option<Ejection>,
    /// Whether it is back from an ejection on probation.
    pub probation: bool,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// The whole JSON object, for failure messages.
    pub raw: serde_json::Value,
}

/// An endpoint's current ejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    /// Why (the detector's name).
    pub reason: String,
    /// Time left until probation, in milliseconds.
    pub remaining_ms: u64,
    /// How long this ejection lasts in all, in milliseconds.
    pub duration_ms: u64,
    /// How many times the endpoint has been ejected (this one included).
    pub count: u64,
}

impl ClusterView {
    /// Reads cluster `name` out of a whole `/clusters` document.
    pub fn parse(document: &serde_json::Value, name: &str) -> Option<ClusterView> {
        let raw = document["clusters"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)?
            .clone();
        let breaker = raw["breaker"]["state"].as_str().map(str::to_string);
        let endpoints = raw["endpoints"]
            .as_array()?
            .iter()
            .map(EndpointView::parse)
            .collect();
        Some(ClusterView {
            name: name.to_string(),
            breaker,
            endpoints,
            raw,
        })
    }

    /// The endpoint at `addr`.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&EndpointView> {
        let addr = addr.to_string();
        self.endpoints.iter().find(|e| e.address == addr)
    }
}

impl EndpointView {
    fn parse(raw: &serde_json::Value) -> EndpointView {
        let ejection = match &raw["ejected"] {
            serde_json::Value::Object(ejected) => Some(Ejection {
                reason: ejected
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string(),
                remaining_ms: ejected
                    .get("remaining_ms")
                    .and_then(serde_json::Value::as_f64)
                    .map_or(0, |ms| ms.max(0.0) as u64),
                duration_ms: ejected
                    .get("duration_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                count: ejected
                    .get("count")
                    .or_else(|| raw.get("ejection_count"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            }),
            _ => None,
        };
        EndpointView {
            address: raw["address"].as_str().unwrap_or_default().to_string(),
            priority: raw["priority"].as_u64().unwrap_or(0),
            usable: raw["usable"].as_bool().unwrap_or(false),
            health: raw["health"].as_str().unwrap_or("unknown").to_string(),
            ejection,
            probation: raw["probation"].as_bool().unwrap_or(false),
            in_flight: raw["in_flight"].as_u64().unwrap_or(0),
            raw: raw.clone(),
        }
    }

    /// Whether the endpoint is healthy by active checks and not ejected: back in rotation.
    pub fn in_rotation(&self) -> bool {
        self.usable && self.ejection.is_none() && self.health != "unhealthy"
    }
}

/// Cluster `name` from the admin listener's `/clusters`; `None` if the admin call fails or
/// there is no such cluster.
pub async fn cluster_view(admin: SocketAddr, name: &str) -> Option<ClusterView> {
    let reply = client::admin_get(admin, "/clusters").await.ok()?;
    if reply.status != StatusCode::OK {
        return None;
    }
    let document: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    ClusterView::parse(&document, name)
}

/// Endpoint `addr` of cluster `cluster` from `/clusters`.
pub async fn endpoint_view(
    admin: SocketAddr,
    cluster: &str,
    addr: SocketAddr,
) -> Option<EndpointView> {
    cluster_view(admin, cluster).await?.endpoint(addr).cloned()
}

/// The breaker state of `cluster` (`closed`, `open`, `half-open`), if it has a breaker.
pub async fn breaker_state(admin: SocketAddr, cluster: &str) -> Option<String> {
    cluster_view(admin, cluster).await?.breaker
}

/// `POST /clusters/{cluster}/breaker?state={state}` (`open`, `closed` or `auto`).
pub async fn force_breaker(admin: SocketAddr, cluster: &str, state: &str) -> Reply {
    client::admin_post(admin, &format!("/clusters/{cluster}/breaker?state={state}"))
        .await
        .expect("admin POST")
}

// === Config ===

/// A route for [`config`]: `path_prefix` to `cluster`, plus YAML lines of its own keys.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    name: String,
    prefix: String,
    cluster: String,
    keys: Vec<String>,
}

/// A cluster for [`config`]: endpoints with priorities, round-robin unless told, plus YAML
/// lines of its own keys.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    name: String,
    lb: String,
    endpoints: Vec<(SocketAddr, u32)>,
    keys: Vec<String>,
}

/// A route `name` matching `path_prefix: prefix`, to `cluster`.
pub fn route(name: &str, prefix: &str, cluster: &str) -> RouteSpec {
    RouteSpec {
        name: name.to_string(),
        prefix: prefix.to_string(),
        cluster: cluster.to_string(),
        keys: Vec::new(),
    }
}

/// A round-robin cluster `name` of these endpoints, all at priority 0.
pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> ClusterSpec {
    ClusterSpec {
        name: name.to_string(),
        lb: "round-robin".to_string(),
        endpoints: endpoints.iter().map(|a| (*a, 0)).collect(),
        keys: Vec::new(),
    }
}

impl RouteSpec {
    /// Adds a key of the route, as YAML (`retry: { attempts: 3 }`; several lines are fine).
    pub fn with(mut self, yaml: &str) -> RouteSpec {
        self.keys.push(yaml.to_string());
        self
    }
}

impl ClusterSpec {
    /// Adds an endpoint at `priority`.
    pub fn endpoint(mut self, addr: SocketAddr, priority: u32) -> ClusterSpec {
        self.endpoints.push((addr, priority));
        self
    }

    /// The load-balancing algorithm.
    pub fn lb(mut self, lb: &str) -> ClusterSpec {
        self.lb = lb.to_string();
        self
    }

    /// Adds a key of the cluster, as YAML (`limits: { max_requests: 2 }`).
    pub fn with(mut self, yaml: &str) -> ClusterSpec {
        self.keys.push(yaml.to_string());
        self
    }
}

/// A whole config: listener `public` and admin on `127.0.0.1:0`, no access log, a short drain,
/// and these routes and clusters.
pub fn config(routes: &[RouteSpec], clusters: &[ClusterSpec]) -> String {
    let mut yaml = String::from(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n\
         admin:\n  address: 127.0.0.1:0\n\
         shutdown:\n  drain_delay: 100ms\n  drain_timeout: 5s\n\
         log:\n  access_log: false\n\
         routes:\n",
    );
    for route in routes {
        let _ = write!(
            yaml,
            "  - name: {}\n    match:\n      path_prefix: {}\n    cluster: {}\n",
            route.name, route.prefix, route.cluster
        );
        push_keys(&mut yaml, &route.keys);
    }
    yaml.push_str("clusters:\n");
    for cluster in clusters {
        let _ = write!(
            yaml,
            "  - name: {}\n    lb: {}\n    endpoints:\n",
            cluster.name, cluster.lb
        );
        for (addr, priority) in &cluster.endpoints {
            let _ = writeln!(yaml, "      - {{ address: {addr}, priority: {priority} }}");
        }
        push_keys(&mut yaml, &cluster.keys);
    }
    yaml
}

fn push_keys(yaml: &mut String, keys: &[String]) {
    for line in keys.iter().flat_map(|k| k.lines()) {
        let _ = writeln!(yaml, "    {line}");
    }
}
