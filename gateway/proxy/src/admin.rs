//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, `/clusters`, `/plugins`,
//! `POST /clusters/{name}/breaker`, `POST /config/reload`, and `/` (a status page for people).
//!
//! `/config`, `/clusters` and `/plugins` serialize typed views ([`ConfigView`],
//! [`crate::snapshot::ClustersView`], [`crate::snapshot::PluginsView`]); the status page
//! renders the same views, so the page and the JSON cannot drift apart.
//!
//! The admin API is a plain HTTP/1.1 server on its own listener (loopback by default), so it
//! keeps answering when the proxy listeners are saturated. When a token is configured, every
//! endpoint, `/healthz` included, needs it: the config shows file paths and the reload endpoint
//! changes state, and one rule is easier to get right than a list of exceptions.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::body::{ProxyBody, full};
use crate::metrics::{self, Metrics};
use crate::readiness::Readiness;
use crate::reload::{ReloadCause, ReloadHandle, ReloadStatus, SHUTTING_DOWN};
use crate::snapshot::Snapshot;
use crate::upstream::BreakerForce;

/// How long a connection may take to send its request head; admin clients are scripts and
/// probes on a fast network, so a slow one is stuck or hostile.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open admin connections get to finish once `shutdown` resolves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// What the admin endpoints read from.
#[derive(Debug)]
pub struct AdminState {
    /// The serving snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness, for `/readyz`.
    pub readiness: Arc<Readiness>,
    /// Reload trigger and status, for `POST /config/reload` and `/config`.
    pub reload: ReloadHandle,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
}

/// Serves the admin API on `listener` until `shutdown` resolves. Then it stops accepting and
/// gives open connections up to 5 seconds to finish their current request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Usually out of file descriptors; retrying at once would spin.
                    tracing::warn!(%error, "admin listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open after the shutdown grace period");
    }
}

// === request handling ===

async fn handle(state: &AdminState, request: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(token) = &state.token
        && !authorized(&request, token)
    {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "error": "a valid bearer token is required" }),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }

    let method = request.method();
    let is_get = method == Method::GET || method == Method::HEAD;
    match request.uri().path() {
        "/healthz" if is_get => text_response(StatusCode::OK, TEXT, "ok"),
        "/readyz" if is_get => match state.readiness.check() {
            Ok(()) => text_response(StatusCode::OK, TEXT, ready_detail(state)),
            Err(reason) => text_response(StatusCode::SERVICE_UNAVAILABLE, TEXT, reason),
        },
        "/metrics" if is_get => text_response(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.encode(),
        ),
        "/config" if is_get => config(state),
        "/clusters" if is_get => {
            json_response(StatusCode::OK, &state.snapshot.load().clusters_status())
        }
        "/plugins" if is_get => {
            json_response(StatusCode::OK, &state.snapshot.load().plugins_status())
        }
        "/" if is_get => status_page(state),
        "/config/reload" if method == Method::POST => reload(state).await,
        "/healthz" | "/readyz" | "/metrics" | "/config" | "/clusters" | "/plugins" | "/" => {
            method_not_allowed("GET, HEAD")
        }
        "/config/reload" => method_not_allowed("POST"),
        path => match breaker_path(path) {
            Some(name) if method == Method::POST => {
                force_breaker(state, name, request.uri().query())
            }
            Some(_) => method_not_allowed("POST"),
            None => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
        },
    }
}

/// Checks `authorization: Bearer <token>` without leaking, through timing, how much of a wrong
/// token matched.
fn authorized<B>(request: &Request<B>, token: &str) -> bool {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, credentials)) = value.split_at_checked(7) else {
        return false;
    };
    // `subtle` compares in time that depends only on the lengths (a different length fails
    // at once; the token's length is not the secret).
    scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(credentials.ct_eq(token.as_bytes()))
}

/// The body of `GET /config`.
#[derive(Debug, Serialize)]
pub struct ConfigView<'a> {
    /// The serving snapshot's version.
    pub version: u64,
    /// Hash of the config file text it was built from.
    pub hash: &'a str,
    /// The validated config, defaults filled in; plugin config values redacted but for the
    /// keys each binding lists in `public_config`.
    pub config: &'a levee_config::Config,
    /// The last reload attempts.
    pub reload: ReloadStatus,
}

fn config(state: &AdminState) -> Response<ProxyBody> {
    let snapshot = state.snapshot.load();
    // `admin.token_file` is a path, and the token itself is never part of the config. Plugin
    // binding configs may hold credentials: `RoutePlugin` serializes their values redacted
    // (but for its `public_config` keys). Anything secret added later must be redacted too.
    json_response(
        StatusCode::OK,
        &ConfigView {
            version: snapshot.version,
            hash: &snapshot.hash,
            config: &snapshot.config,
            reload: state.reload.status(),
        },
    )
}

async fn reload(state: &AdminState) -> Response<ProxyBody> {
    match state.reload.reload(ReloadCause::Admin).await {
        Ok(version) => json_response(StatusCode::OK, &json!({ "ok": true, "version": version })),
        Err(error) => {
            let status = if error == SHUTTING_DOWN {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                // The files the operator asked to load are wrong; the old config keeps serving.
                StatusCode::BAD_REQUEST
            };
            json_response(status, &json!({ "ok": false, "error": error }))
        }
    }
}

/// `ready`, then one line per plugin whose breaker is not closed: a faulting plugin is
/// contained by its policy, so it does not make the gateway unready, but it is worth seeing.
fn ready_detail(state: &AdminState) -> String {
    let mut text = String::from("ready");
    for plugin in state.snapshot.load().plugins.status() {
        if plugin.breaker != levee_plugin_host::BreakerState::Closed {
            let _ = write!(
                text,
                "\nplugin {}: breaker {:?} ({} faults)",
                plugin.name,
                plugin.breaker,
                plugin.total_faults()
            );
        }
    }
    text
}

/// The cluster name in `/clusters/{name}/breaker`, still percent-encoded.
fn breaker_path(path: &str) -> Option<&str> {
    path.strip_prefix("/clusters/")?.strip_suffix("/breaker")
}

/// `POST /clusters/{name}/breaker?state=open|closed|auto`: forces a cluster's circuit breaker
/// open or closed, or hands it back to its window (`auto`). The force lasts until the next
/// `auto` (reloads keep it) and answers with the breaker's status. `name` and the query are
/// percent-decoded, so a cluster named `my cluster` is `/clusters/my%20cluster/breaker`.
fn force_breaker(state: &AdminState, name: &str, query: Option<&str>) -> Response<ProxyBody> {
    let Ok(name) = percent_decode_str(name).decode_utf8() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "the cluster name is not UTF-8 once percent-decoded" }),
        );
    };
    let wanted = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find_map(|(key, value)| (key == "state").then_some(value));
    let force = match wanted.as_deref() {
        Some("open") => Some(BreakerForce::Open),
        Some("closed") => Some(BreakerForce::Closed),
        Some("auto") => None,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "give ?state=open, ?state=closed or ?state=auto" }),
            );
        }
    };
    let snapshot = state.snapshot.load();
    let Some(cluster) = snapshot.clusters.get(&*name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no cluster named {name:?}") }),
        );
    };
    match cluster.force_breaker(force) {
        Some(status) => json_response(StatusCode::OK, &status),
        None => json_response(
            StatusCode::CONFLICT,
            &json!({ "error": format!("cluster {name:?} has no circuit_breaker configured") }),
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": "method not allowed" }),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<ProxyBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            text_response(status, JSON, body)
        }
        Err(error) => {
            tracing::warn!(%error, "admin response did not serialize");
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("serialization failed: {error}"),
            )
        }
    }
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// === status page ===

/// `/`: the same views as `/config`, `/clusters` and `/plugins`, as one HTML page.
fn status_page(state: &AdminState) -> Response<ProxyBody> {
    let snapshot = state.snapshot.load();
    let reload = state.reload.status();
    let clusters = snapshot.clusters_status();
    let plugins = snapshot.plugins_status();
    let ready = match state.readiness.check() {
        Ok(()) => "ready".to_string(),
        Err(reason) => format!("not ready: {reason}"),
    };

    let mut page = String::with_capacity(4096);
    page.push_str(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Levee</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:.5em 0 1.5em}\
         th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
         th{background:#f2f2f2}.bad{color:#b00}.ok{color:#070}\
         </style></head><body>\n<h1>Levee</h1>\n",
    );
    let _ = writeln!(
        page,
        "<p>Config version <b>{}</b>, hash <code>{}</code>, {}.</p>",
        snapshot.version,
        escape(&snapshot.hash),
        escape(&ready)
    );

    page.push_str("<h2>Last reload</h2>\n<table>\n");
    let failed = reload.last_ok == Some(false);
    let rows: [(&str, String, bool); 6] = [
        (
            "last_attempt",
            reload
                .last_attempt
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_default(),
            false,
        ),
        (
            "last_cause",
            reload.last_cause.map(name).unwrap_or_default(),
            false,
        ),
        (
            "last_ok",
            reload.last_ok.map(|ok| ok.to_string()).unwrap_or_default(),
            failed,
        ),
        (
            "last_error",
            reload.last_error.clone().unwrap_or_default(),
            true,
        ),
        ("successes", reload.successes.to_string(), false),
        ("failures", reload.failures.to_string(), false),
    ];
    for (key, value, bad) in rows {
        let class = if bad && !value.is_empty() {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            page,
            "<tr><th>{key}</th><td{class}>{}</td></tr>",
            escape(&value)
        );
    }
    page.push_str("</table>\n<h2>Clusters</h2>\n");

    if clusters.clusters.is_empty() {
        page.push_str("<p>No clusters.</p>\n");
    }
    for cluster in &clusters.clusters {
        let breaker = cluster.breaker.as_ref().map_or("none", |b| b.state);
        let _ = writeln!(
            page,
            "<h3>{}</h3>\n<p>{}, {}, breaker {}{}, {} of {} endpoints usable.</p>",
            escape(&cluster.name),
            cluster.lb,
            name(cluster.protocol),
            breaker,
            if cluster.panic.active {
                ", <b class=\"bad\">in panic</b>"
            } else {
                ""
            },
            cluster.health.usable,
            cluster.health.endpoints,
        );
        page.push_str(
            "<table>\n<tr><th>endpoint</th><th>weight</th><th>priority</th><th>usable</th>\
             <th>health</th><th>in-flight</th><th>requests</th><th>connections</th>\
             <th>EWMA latency</th></tr>\n",
        );
        for endpoint in &cluster.endpoints {
            let usable = if endpoint.usable {
                "<td class=\"ok\">yes</td>"
            } else {
                "<td class=\"bad\">no</td>"
            };
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td>{usable}<td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{:.2} ms</td></tr>",
                endpoint.address,
                endpoint.weight,
                endpoint.priority,
                endpoint.health,
                endpoint.in_flight,
                endpoint.requests_total,
                endpoint.open_connections,
                endpoint.ewma_latency_ms,
            );
        }
        page.push_str("</table>\n");
    }

    if !plugins.plugins.is_empty() {
        page.push_str(
            "<h2>Plugins</h2>\n<table>\n<tr><th>plugin</th><th>breaker</th><th>calls</th>\
             <th>faults</th><th>mean latency</th><th>routes</th></tr>\n",
        );
        for plugin in &plugins.plugins {
            let faults: u64 = plugin.faults.values().sum();
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{faults}</td><td>{:.1} µs</td>\
                 <td>{}</td></tr>",
                escape(&plugin.name),
                plugin.breaker,
                plugin.calls,
                plugin.latency_mean_us,
                escape(&plugin.routes.join(", ")),
            );
        }
        page.push_str("</table>\n");
    }

    page.push_str(
        "<h2>JSON</h2>\n<ul><li><a href=\"/config\">/config</a></li>\
         <li><a href=\"/clusters\">/clusters</a></li><li><a href=\"/plugins\">/plugins</a></li>\
         <li><a href=\"/metrics\">/metrics</a></li>\
         <li><a href=\"/readyz\">/readyz</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>\n\
         </body></html>\n",
    );
    text_response(StatusCode::OK, HTML, page)
}

/// A value's name as its JSON shows it (a kebab-case enum, say).
fn name<T: Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use http_body_util::{BodyExt, Empty};
    use levee_config::{
        Admin, Cluster, Config, Endpoint, LbPolicy, Listener, ListenerLimits, Log, PathMatch,
        Route, RouteMatch, Shutdown, UpstreamProtocol,
    };
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::access_log::RequestRecord;
    use crate::reload::{ReloadRequest, channel};
    use crate::snapshot::BuildContext;

    fn config() -> Config {
        Config {
            listeners: vec![Listener {
                name: "public".into(),
                address: ([127, 0, 0, 1], 0).into(),
                tls: None,
                limits: ListenerLimits {
                    header_read_timeout: Duration::from_secs(10),
                    max_header_size: 65536,
                    max_headers: 100,
                    max_connections: 10_000,
                    max_connections_per_client: None,
                    idle_timeout: Duration::from_secs(60),
                    send_timeout: Duration::from_secs(30),
                    http2_max_concurrent_streams: 100,
                    http2_max_pending_resets: 20,
                },
                path_normalization: Default::default(),
                trust_client_headers: false,
            }],
            admin: Admin {
                address: ([127, 0, 0, 1], 0).into(),
                token_file: Some(PathBuf::from("/etc/levee/admin-token")),
            },
            routes: vec![Route {
                name: "api".into(),
                matcher: RouteMatch {
                    host: None,
                    path: PathMatch::Prefix("/".into()),
                    methods: Vec::new(),
                    headers: Vec::new(),
                },
                cluster: "api<1>".into(),
                timeout: Duration::from_secs(15),
                max_body_size: None,
                retry: None,
                fallback: None,
                rate_limit: None,
                fault: None,
                plugins: Vec::new(),
            }],
            clusters: vec![Cluster {
                name: "api<1>".into(),
                lb: LbPolicy::RoundRobin,
                hash_on: None,
                endpoints: vec![Endpoint {
                    address: ([127, 0, 0, 1], 9).into(),
                    weight: 3,
                    priority: 0,
                }],
                discovery: None,
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                max_idle_per_endpoint: 64,
                protocol: UpstreamProtocol::Http1,
                tls: None,
                health_check: None,
                outlier_detection: Default::default(),
                circuit_breaker: None,
                limits: Default::default(),
                panic_threshold: 0.5,
                panic_mode: levee_config::PanicMode::Spread,
            }],
            cache: Default::default(),
            plugins: Vec::new(),
            shutdown: Shutdown {
                drain_delay: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(30),
            },
            log: Log {
                level: "info".into(),
                access_log: false,
            },
        }
    }

    struct Running {
        addr: SocketAddr,
        state: Arc<AdminState>,
        requests: mpsc::Receiver<ReloadRequest>,
        stop: Option<oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<()>,
    }

    async fn start(token: Option<&str>) -> Running {
        let metrics = Metrics::new();
        let snapshot = Snapshot::build(
            Arc::new(config()),
            1,
            "abc123".into(),
            None,
            &BuildContext::new(metrics.clone()),
        )
        .expect("snapshot");
        let (reload, requests) = channel();
        let state = Arc::new(AdminState {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics,
            readiness: Arc::new(Readiness::default()),
            reload,
            token: token.map(String::from),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            state,
            requests,
            stop: Some(stop),
            server,
        }
    }

    struct Reply {
        status: StatusCode,
        headers: http::HeaderMap,
        body: String,
    }

    impl Reply {
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    async fn call(addr: SocketAddr, method: Method, path: &str, token: Option<&str>) -> Reply {
        let work = async {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "admin");
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request.body(Empty::<Bytes>::new()).expect("request");
            let response = sender.send_request(request).await.expect("response");
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.expect("body");
            Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("admin answered in time")
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        call(addr, Method::GET, path, None).await
    }

    #[tokio::test]
    async fn healthz_answers_ok_even_when_not_ready() {
        let admin = start(None).await;
        let reply = get(admin.addr, "/healthz").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ok");
    }

    #[tokio::test]
    async fn readyz_follows_load_bind_and_drain() {
        let admin = start(None).await;
        let reply = get(admin.addr, "/readyz").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.body, "config not loaded");

        admin.state.readiness.set_config_loaded();
        admin.state.readiness.set_listeners_bound();
        let reply = get(admin.addr, "/readyz").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ready");

        admin.state.readiness.set_draining();
        let reply = get(admin.addr, "/readyz").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.body, "draining");
    }

    #[tokio::test]
    async fn metrics_exposes_observed_requests_as_openmetrics() {
        let admin = start(None).await;
        for status in [200, 200, 502] {
            admin.state.metrics.observe_request(&RequestRecord {
                start: std::time::SystemTime::now(),
                listener: Arc::from("public"),
                route: Some(Arc::from("api")),
                cluster: Some(Arc::from("api")),
                endpoint: None,
                client: ([127, 0, 0, 1], 1234).into(),
                method: Method::GET,
                path: "/",
                version: http::Version::HTTP_11,
                status,
                duration: Duration::from_millis(2),
                bytes_in: 0,
                bytes_out: 5,
                request_id: "r",
                error_kind: (status == 502).then_some("upstream-reset"),
                attempts: 1,
                fallback: None,
            });
        }
        let reply = get(admin.addr, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(metrics::CONTENT_TYPE.as_bytes())
        );
        assert!(reply.body.contains(
            "levee_requests_total{listener=\"public\",route=\"api\",cluster=\"api\",status_class=\"2xx\"} 2"
        ), "{}", reply.body);
        assert!(
            reply
                .body
                .contains("levee_request_errors_total{route=\"api\",kind=\"upstream-reset\"} 1")
        );
        assert!(
            reply
                .body
                .contains("# TYPE levee_request_duration_seconds histogram")
        );
        assert!(reply.body.trim_end().ends_with("# EOF"));
    }

    #[tokio::test]
    async fn token_is_required_on_every_endpoint_when_set() {
        let admin = start(Some("s3cret-token")).await;
        for path in ["/healthz", "/metrics", "/config", "/", "/nope"] {
            let reply = get(admin.addr, path).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(reply.json()["error"].is_string());
            assert_eq!(
                reply
                    .headers
                    .get(WWW_AUTHENTICATE)
                    .map(HeaderValue::as_bytes),
                Some(&b"Bearer"[..])
            );
        }
        let wrong = call(admin.addr, Method::GET, "/healthz", Some("s3cret-tokeN")).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        let short = call(admin.addr, Method::GET, "/healthz", Some("s3cret")).await;
        assert_eq!(short.status, StatusCode::UNAUTHORIZED);
        let right = call(admin.addr, Method::GET, "/healthz", Some("s3cret-token")).await;
        assert_eq!(right.status, StatusCode::OK);
        assert_eq!(right.body, "ok");
    }

    #[tokio::test]
    async fn post_reload_returns_the_new_version() {
        let mut admin = start(None).await;
        let answer = tokio::spawn(async move {
            let request = admin.requests.recv().await.expect("a reload request");
            assert_eq!(request.cause, ReloadCause::Admin);
            let _ = request.reply.expect("a reply channel").send(Ok(7));
            admin.requests
        });
        let reply = call(admin.addr, Method::POST, "/config/reload", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), json!({ "ok": true, "version": 7 }));
        answer.await.expect("answered");
    }

    #[tokio::test]
    async fn post_reload_reports_the_full_error() {
        let mut admin = start(None).await;
        let error = "levee.yaml:3:5: unknown field `lsteners`";
        tokio::spawn(async move {
            let request = admin.requests.recv().await.expect("a reload request");
            let _ = request
                .reply
                .expect("a reply channel")
                .send(Err(error.into()));
            admin.requests
        });
        let reply = call(admin.addr, Method::POST, "/config/reload", None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json(), json!({ "ok": false, "error": error }));
    }

    #[tokio::test]
    async fn post_reload_while_shutting_down_is_503() {
        let admin = start(None).await;
        drop(admin.requests);
        let reply = call(admin.addr, Method::POST, "/config/reload", None).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.json()["ok"], false);
    }

    #[tokio::test]
    async fn config_shows_version_hash_config_and_reload_status() {
        let admin = start(None).await;
        admin.state.reload.record(ReloadCause::Startup, &Ok(1));
        let reply = get(admin.addr, "/config").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(JSON.as_bytes())
        );
        let body = reply.json();
        assert_eq!(body["version"], 1);
        assert_eq!(body["hash"], "abc123");
        assert_eq!(body["config"]["listeners"][0]["name"], "public");
        assert_eq!(body["config"]["clusters"][0]["lb"], "round-robin");
        assert_eq!(body["config"]["routes"][0]["timeout"], "15s");
        assert_eq!(
            body["config"]["admin"]["token_file"],
            "/etc/levee/admin-token"
        );
        assert_eq!(body["reload"]["last_ok"], true);
        assert_eq!(body["reload"]["last_cause"], "startup");
        assert_eq!(body["reload"]["successes"], 1);
    }

    #[tokio::test]
    async fn clusters_serves_the_snapshot_status() {
        let admin = start(None).await;
        let reply = get(admin.addr, "/clusters").await;
        assert_eq!(reply.status, StatusCode::OK);
        // Everything but the clocks (availability keeps counting between the two reads).
        let strip = |mut v: serde_json::Value| {
            for cluster in v["clusters"].as_array_mut().into_iter().flatten() {
                cluster["availability"] = serde_json::Value::Null;
                for endpoint in cluster["endpoints"].as_array_mut().into_iter().flatten() {
                    endpoint["availability"] = serde_json::Value::Null;
                }
            }
            v
        };
        let served = reply.json();
        assert_eq!(served["clusters"][0]["endpoints"][0]["health"], "unchecked");
        assert_eq!(served["clusters"][0]["limits"]["requests"]["max"], 1024);
        let view = admin.state.snapshot.load().clusters_status();
        assert_eq!(
            strip(served),
            strip(serde_json::to_value(view).expect("json"))
        );
    }

    #[tokio::test]
    async fn status_page_is_escaped_html_with_links() {
        let admin = start(None).await;
        admin
            .state
            .reload
            .record(ReloadCause::Admin, &Err("bad <script>".into()));
        let reply = get(admin.addr, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(HTML.as_bytes())
        );
        let page = reply.body;
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("bad &lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("href=\"/metrics\""));
        // The cluster name has markup characters; it must be escaped too.
        assert!(page.contains("api&lt;1&gt;"), "{page}");
        assert!(page.contains("127.0.0.1:9"));
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let admin = start(None).await;
        let reply = get(admin.addr, "/nope").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json()["error"], "not found");

        let reply = call(admin.addr, Method::POST, "/healthz", None).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        let reply = get(admin.addr, "/config/reload").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            reply.headers.get(ALLOW).map(HeaderValue::as_bytes),
            Some(&b"POST"[..])
        );
    }

    #[tokio::test]
    async fn stops_accepting_after_shutdown() {
        let mut admin = start(None).await;
        assert_eq!(get(admin.addr, "/healthz").await.status, StatusCode::OK);
        if let Some(stop) = admin.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut admin.server)
            .await
            .expect("server stopped in time")
            .expect("server task");
        assert!(tokio::net::TcpStream::connect(admin.addr).await.is_err());
    }

    #[tokio::test]
    async fn breaker_path_names_are_percent_decoded() {
        let admin = start(None).await;
        // The cluster is found (it has no breaker: 409), so `%3C1%3E` became `<1>`.
        let reply = call(
            admin.addr,
            Method::POST,
            "/clusters/api%3C1%3E/breaker?state=open",
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
        assert!(
            reply.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("api<1>"))
        );
        let reply = call(
            admin.addr,
            Method::POST,
            "/clusters/api%3C2%3E/breaker?state=open",
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let reply = call(
            admin.addr,
            Method::POST,
            "/clusters/api%3C1%3E/breaker?state=%20",
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn token_check_rejects_every_near_miss() {
        let admin = start(Some("s3cret-token")).await;
        for wrong in [
            "",
            "s3cret-toke",
            "s3cret-tokenn",
            "S3cret-token",
            "s3cret-tokeN",
        ] {
            let reply = call(admin.addr, Method::GET, "/healthz", Some(wrong)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        }
        let reply = call(admin.addr, Method::GET, "/healthz", Some("s3cret-token")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[test]
    fn authorized_needs_the_bearer_scheme_and_the_whole_token() {
        let request = |value: &str| {
            Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .expect("request")
        };
        assert!(authorized(&request("Bearer tok"), "tok"));
        assert!(authorized(&request("bearer tok"), "tok"));
        assert!(!authorized(&request("Basic tok"), "tok"));
        assert!(!authorized(&request("Bearer to"), "tok"));
        assert!(!authorized(&request("Bearer tokk"), "tok"));
        assert!(!authorized(&request("Bearer"), "tok"));
        assert!(!authorized(&Request::new(()), "tok"));
    }
}
