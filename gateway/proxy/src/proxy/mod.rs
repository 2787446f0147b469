//! The request path: route, forward, and turn failures into gateway responses.
//!
//! [`Proxy::call`] runs these phases in order, each in a module of its own:
//!
//! 1. load the snapshot once (the request finishes on it, whatever reloads happen meanwhile);
//! 2. downstream checks: `CONNECT` is refused, the host comes from the absolute-form target or
//!    `Host`/`:authority`, and a target that disagrees with `Host` is refused;
//! 3. route ([`crate::route`]), or 404;
//! 4. request id and header rewriting ([`headers`]);
//! 5. body limit by `content-length`, then while streaming ([`limit`]);
//! 6. pick and send within the route timeout ([`forward`]);
//! 7. upgrades become a byte tunnel ([`upgrade`]);
//! 8. the response streams back, trailers included;
//! 9. failures become JSON responses in one place ([`error`]);
//! 10. when the response body ends, one request record goes to metrics and the access log
//!     ([`record`]).
//!
//! An absolute-form target never decides where the gateway connects: it only ever connects to
//! cluster endpoints, and the upstream request is always origin-form. The gateway is not an
//! open proxy.

mod capture;
pub mod error;
mod fallback;
pub mod fault;
mod forward;
mod headers;
mod hooks;
mod limit;
pub(crate) mod policy;
mod record;
mod replay;
mod upgrade;

pub use upgrade::{Io, UpgradeHandoff, UpgradedIo};

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use levee_config::FailureKind;
use levee_plugin_host::Hook;

use self::error::ProxyError;
use self::limit::{BodyStats, LimitedBody};
use self::record::{Pending, RecordBody};
use self::replay::ReplayBody;
use crate::access_log::AccessLog;
use crate::body::{BoxError, ProxyBody};
use crate::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::route::{RouteEntry, strip_port};
use crate::snapshot::Snapshot;
use crate::upstream::{Cluster, UpstreamBody, UpstreamError};

pub use self::error::{ErrorSource, RetryType, X_LEVEE_ERROR};
pub use self::fallback::X_LEVEE_CACHE;
pub use self::headers::X_REQUEST_ID;

/// The gateway's HTTP service: every downstream request goes through [`Proxy::call`].
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy serving whatever snapshot `snapshot` holds at the time of each request.
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                snapshot,
                metrics,
                access_log,
            }),
        }
    }

    /// Handles one downstream request. Never fails: every error becomes a response.
    ///
    /// For WebSocket and other upgrades, the downstream server either puts an
    /// [`UpgradeHandoff`] in upgrade requests and hands the connection over itself, or serves
    /// connections with hyper's upgrades enabled (`serve_connection_with_upgrades`).
    pub async fn call(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let snapshot = self.inner.snapshot.load_full();
        let request_id = headers::request_id(req.headers());
        let mut pending = Pending {
            inner: Arc::clone(&self.inner),
            start: SystemTime::now(),
            started: Instant::now(),
            listener: Arc::clone(&conn.listener),
            route: None,
            cluster: None,
            endpoint: None,
            client: conn.peer,
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            status: 0,
            request_id,
            error_kind: None,
            body: None,
            recorded: false,
            attempts: 1,
            served_by: None,
            held: record::Held::default(),
        };
        let response = match handle(&snapshot, req, &conn, &mut pending).await {
            Ok(response) => finish(response, pending),
            Err(err) => {
                tracing::debug!(
                    kind = err.kind(),
                    source = ?err.source(),
                    error = %err,
                    request_id = ?pending.request_id,
                    "request failed"
                );
                pending.error_kind = Some(err.kind());
                let response = err.to_response(&pending.request_id).map(Full::new);
                finish(response, pending)
            }
        };
        Ok(response)
    }
}

/// Phases 2 to 8: everything between the downstream request and the response head.
async fn handle(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
    pending: &mut Pending,
) -> Result<Response<ProxyBody>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }

    let (host, authority_only) = downstream_host(&req)?;
    let route = snapshot
        .router
        .route(host, req.uri().path(), req.method(), req.headers())
        .ok_or(ProxyError::NoRoute)?;
    pending.route = Some(Arc::clone(&route.name));
    pending.cluster = Some(Arc::clone(&route.cluster));
    let deadline = tokio::time::Instant::from_std(pending.started) + route.timeout;
    let policy = &route.policy;

    // Only GETs are kept and served stale: the key is the method-free target.
    let stale_key = match &policy.fallback {
        Some(f) if f.stale.is_some() && req.method() == Method::GET => {
            Some(fallback::stale_key(host.unwrap_or_default(), req.uri()))
        }
        _ => None,
    };

    if let Err(e) = admission(route, &req, conn, deadline, &pending.inner.metrics).await {
        return match apply_fallback(snapshot, route, stale_key.as_deref(), Err(e), pending)? {
            Answer::Done(response) => Ok(response),
            Answer::Upstream(response) => Ok(boxed(response, None, Vec::new(), snapshot)),
        };
    }
    // Only plugin hooks read the host once the request is consumed: no copy for other routes.
    let authority = if policy.plugins.is_empty() {
        String::new()
    } else {
        host.unwrap_or_default().to_owned()
    };
    let mut prepared = match prepare(
        snapshot,
        route,
        req,
        conn,
        authority,
        authority_only,
        pending,
    )
    .await
    {
        Ok(prepared) => prepared,
        Err(Stop::Respond(response)) => {
            pending.served_by = Some("plugin");
            return Ok(response);
        }
        Err(Stop::Fail(e)) => {
            return match apply_fallback(snapshot, route, stale_key.as_deref(), Err(e), pending)? {
                Answer::Done(response) => Ok(response),
                Answer::Upstream(response) => Ok(boxed(response, None, Vec::new(), snapshot)),
            };
        }
    };

    let first = prepared.cluster.clone();
    let mut result = send(&mut prepared, &first, route, deadline, pending).await;

    // Phase 7: failure handling. The plugins' `on-upstream-failure` first...
    if let Some((kind, status)) = failure_of(&result)
        && policy.has_hook(Hook::OnUpstreamFailure)
    {
        let cluster = pending
            .cluster
            .clone()
            .unwrap_or_else(|| route.cluster.clone());
        let breaker = snapshot
            .clusters
            .get(&cluster)
            .and_then(|c| c.resilience().breaker_state());
        let failure = hooks::Failure {
            kind,
            cluster: &cluster,
            attempt: pending.attempts,
            status,
            elapsed: pending.started.elapsed(),
            breaker,
        };
        let request_id = pending.request_id.to_str().unwrap_or_default().to_owned();
        let decision = {
            let mut head = prepared.head(&route.name, &request_id);
            hooks::on_failure(&policy.plugins, &head.parts(), failure, &snapshot.store)?
        };
        match decision {
            hooks::OnFailure::Propagate => {}
            hooks::OnFailure::Respond(response, served_by) => {
                pending.inner.metrics.resilience.fallback_served(
                    &route.name,
                    error::failure_kind_name(kind),
                    served_by,
                );
                pending.served_by = Some(served_by);
                pending.error_kind = Some(match &result {
                    Err(e) => e.kind(),
                    Ok(_) => "upstream-5xx",
                });
                return Ok(response);
            }
            hooks::OnFailure::Resend {
                cluster,
                delay,
                is_retry,
            } => {
                if let Some(next) = resend(
                    snapshot,
                    route,
                    &mut prepared,
                    cluster,
                    delay,
                    is_retry,
                    deadline,
                    pending,
                )
                .await
                {
                    result = next;
                }
            }
        }
    }

    // ...then the route's declarative fallback.
    let mut response = match apply_fallback(snapshot, route, stale_key.as_deref(), result, pending)?
    {
        Answer::Done(response) => return Ok(response),
        Answer::Upstream(response) => response,
    };

    // Phase 8: the plugins' `on-response`.
    let mut stores = Vec::new();
    if response.status() != StatusCode::SWITCHING_PROTOCOLS && policy.has_hook(Hook::OnResponse) {
        let request_id = pending.request_id.to_str().unwrap_or_default().to_owned();
        let status = response.status();
        let (replacement, asked) = {
            let mut head = prepared.head(&route.name, &request_id);
            hooks::on_response(
                &policy.plugins,
                &head.parts(),
                status,
                response.headers_mut(),
            )?
        };
        if let Some(replacement) = replacement {
            pending.served_by = Some("plugin");
            return Ok(replacement);
        }
        stores = asked;
    }
    Ok(boxed(response, stale_key, stores, snapshot))
}

/// What the failure handling made of a forwarding result.
enum Answer {
    /// The fallback answered.
    Done(Response<ProxyBody>),
    /// The upstream's response goes downstream.
    Upstream(Response<UpstreamBody>),
}

/// The failure kind (and upstream status) of a forwarding result, if it failed.
fn failure_of(
    result: &Result<Response<UpstreamBody>, ProxyError>,
) -> Option<(FailureKind, Option<StatusCode>)> {
    match result {
        Ok(response) if response.status().is_server_error() => {
            Some((FailureKind::Upstream5xx, Some(response.status())))
        }
        Ok(_) => None,
        Err(e) => e.failure_kind().map(|kind| (kind, None)),
    }
}

/// The route's declarative fallback: a stale copy, else the static response, for the failure
/// kinds it covers; anything else passes through.
fn apply_fallback(
    snapshot: &Snapshot,
    route: &RouteEntry,
    stale_key: Option<&str>,
    result: Result<Response<UpstreamBody>, ProxyError>,
    pending: &mut Pending,
) -> Result<Answer, ProxyError> {
    let Some(fallback) = &route.policy.fallback else {
        return result.map(Answer::Upstream);
    };
    let Some(kind) = failure_of(&result)
        .map(|(kind, _)| kind)
        .filter(|&k| fallback.covers(k))
    else {
        return result.map(Answer::Upstream);
    };
    let metrics = &pending.inner.metrics.resilience;
    let Some((response, served_by)) = fallback::respond(fallback, stale_key, &snapshot.store)
    else {
        metrics.fallback_missed(&route.name);
        return result.map(Answer::Upstream);
    };
    metrics.fallback_served(&route.name, error::failure_kind_name(kind), served_by);
    pending.served_by = Some(served_by);
    pending.error_kind = Some(match &result {
        Err(e) => e.kind(),
        Ok(_) => "upstream-5xx",
    });
    Ok(Answer::Done(response))
}

/// Phase 3 of DESIGN's request path: the route's rate limit, then fault injection.
async fn admission(
    route: &RouteEntry,
    req: &Request<Incoming>,
    conn: &ConnInfo,
    deadline: tokio::time::Instant,
    metrics: &Metrics,
) -> Result<(), ProxyError> {
    let policy = &route.policy;
    if let Some(limit) = &policy.rate_limit
        && let Err(retry_after) = limit.check(conn.peer.ip(), req.headers())
    {
        metrics.resilience.rate_limited(&route.name);
        return Err(ProxyError::RateLimited { retry_after });
    }
    if let Some(config) = &policy.fault {
        let injection = fault::decide(config, req.headers(), &mut rand::rng());
        if let Some(delay) = injection.delay {
            metrics.resilience.fault_injected(&route.name, "delay");
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + delay)).await;
        }
        if let Some(status) = injection.abort {
            metrics.resilience.fault_injected(&route.name, "abort");
            return Err(ProxyError::FaultAbort(status));
        }
    }
    Ok(())
}

/// Why a request was not made ready for forwarding: a plugin answered it, or it failed.
enum Stop {
    Respond(Response<ProxyBody>),
    Fail(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(e: ProxyError) -> Self {
        Stop::Fail(e)
    }
}

/// A request ready to send, and what later phases need of it.
struct Outgoing {
    request: forward::Outgoing,
    cluster: Arc<Cluster>,
    upgrade: Option<upgrade::Downstream>,
    stats: Arc<BodyStats>,
    /// The host the request is for, as hooks see it.
    authority: String,
    /// A copy of the request head for `on-response` and `on-upstream-failure`, kept only
    /// when the route has such hooks (a streaming request gives its head away when sent).
    head: Option<http::request::Parts>,
}

/// The request head as hooks see it.
struct HookHead<'a> {
    parts: &'a mut http::request::Parts,
    authority: &'a str,
    route: &'a str,
    request_id: &'a str,
}

impl Outgoing {
    fn head<'a>(&'a mut self, route: &'a str, request_id: &'a str) -> HookHead<'a> {
        let parts = match &mut self.head {
            Some(head) => head,
            None => &mut self.request.parts,
        };
        HookHead {
            parts,
            authority: &self.authority,
            route,
            request_id,
        }
    }
}

impl HookHead<'_> {
    fn parts(&mut self) -> hooks::RequestParts<'_> {
        hooks::RequestParts {
            method: self.parts.method.as_str(),
            authority: self.authority,
            path_with_query: self.parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &mut self.parts.headers,
            route: self.route,
            request_id: self.request_id,
        }
    }
}

/// Phases 4 and 5: rewrite the request head, run the plugins' `on-request`, and make the body
/// ready (read ahead for retries when the route may send it more than once).
async fn prepare(
    snapshot: &Snapshot,
    route: &RouteEntry,
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    authority: String,
    authority_only: Option<HeaderValue>,
    pending: &mut Pending,
) -> Result<Outgoing, Stop> {
    if let Some(limit) = route.max_body_size {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ProxyError::PayloadTooLarge { limit }.into());
        }
    }
    let mut cluster = snapshot
        .clusters
        .get(&route.cluster)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(route.cluster.to_string()))?
        .clone();

    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let downstream_upgrade = upgrade.then(|| upgrade::Downstream::of(&mut req));

    let (mut parts, body) = req.into_parts();
    // Only the path goes upstream; the endpoint decides the authority.
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    parts.extensions = Extensions::new();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarding(
        &mut parts.headers,
        &conn.client_ip,
        conn.tls,
        authority_only.as_ref(),
    );
    parts
        .headers
        .insert(X_REQUEST_ID, pending.request_id.clone());

    let policy = &route.policy;
    if policy.has_hook(Hook::OnRequest) {
        let request_id = pending.request_id.to_str().unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let method = parts.method.clone();
        let mut head = hooks::RequestParts {
            method: method.as_str(),
            authority: &authority,
            path_with_query: &path,
            headers: &mut parts.headers,
            route: &route.name,
            request_id,
        };
        match hooks::on_request(&policy.plugins, &mut head)? {
            hooks::OnRequest::Respond(response) => return Err(Stop::Respond(response)),
            hooks::OnRequest::Forward { route_to: None } => {}
            hooks::OnRequest::Forward {
                route_to: Some(name),
            } => match snapshot.clusters.get(name.as_str()) {
                Some(other) => {
                    pending.cluster = Some(other.name().clone());
                    cluster = other.clone();
                }
                None => tracing::warn!(
                    route = %route.name,
                    cluster = name,
                    "a plugin routed to a cluster that does not exist; the route's cluster serves"
                ),
            },
        }
    }
    let hash = forward::hash_for(cluster.hash_on(), &parts.headers, conn.peer.ip());

    let stats = Arc::new(BodyStats::default());
    pending.body = Some(Arc::clone(&stats));
    let body = LimitedBody::new(body, Arc::clone(&stats), route.max_body_size).boxed();
    // A body is read ahead when it may be sent more than once: for retries, or for a plugin
    // that may ask to retry or degrade. An upgrade's body is the tunnel and never is.
    let replay_cap = match &policy.retry {
        Some(retry) => Some(retry.config.max_buffered_body),
        None if policy.has_hook(Hook::OnUpstreamFailure) => Some(DEFAULT_REPLAY_BODY),
        None => None,
    };
    let body =
        match replay_cap {
            Some(cap) if !upgrade => ReplayBody::read(body, cap).await.map_err(
                |replay::ReadError::Body(e)| match route.max_body_size {
                    Some(limit) if stats.too_large() => ProxyError::PayloadTooLarge { limit },
                    _ => ProxyError::RequestBody(e.to_string()),
                },
            )?,
            _ => ReplayBody::Streaming(Some(body)),
        };
    let head = (policy.has_hook(Hook::OnResponse) || policy.has_hook(Hook::OnUpstreamFailure))
        .then(|| parts.clone());
    Ok(Outgoing {
        request: forward::Outgoing { parts, body, hash },
        cluster,
        upgrade: downstream_upgrade,
        stats,
        authority,
        head,
    })
}

/// The replay cap for routes without `retry` whose plugins may resend (the config default of
/// `retry.max_buffered_body`).
const DEFAULT_REPLAY_BODY: u64 = 64 * 1024;

/// Phase 6: sends the request to `cluster` with the route's retries, and sets up an upgrade.
async fn send(
    prepared: &mut Outgoing,
    cluster: &Arc<Cluster>,
    route: &RouteEntry,
    deadline: tokio::time::Instant,
    pending: &mut Pending,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let mut response = forward::send(
        cluster,
        &route.policy,
        &mut prepared.request,
        deadline,
        &prepared.stats,
        route.max_body_size,
        pending,
    )
    .await?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = prepared.upgrade.take() else {
            return Err(ProxyError::Upstream(UpstreamError::Protocol(
                "upstream switched protocols without an upgrade request".into(),
            )));
        };
        upgrade::spawn_tunnel(downstream, hyper::upgrade::on(&mut response));
    } else {
        headers::strip_hop_by_hop(response.headers_mut(), false);
    }
    Ok(response)
}

/// Carries out a plugin's `retry` or `degrade`: the request once more, to `cluster` (or the
/// same one), after `delay`. `None` when it cannot be done: the body already streamed, the
/// cluster does not exist, the delay passes the route timeout, or (for `retry`) the route's
/// retry budget is spent.
#[expect(clippy::too_many_arguments, reason = "the phase's whole context")]
async fn resend(
    snapshot: &Snapshot,
    route: &RouteEntry,
    prepared: &mut Outgoing,
    cluster: Option<String>,
    delay: std::time::Duration,
    is_retry: bool,
    deadline: tokio::time::Instant,
    pending: &mut Pending,
) -> Option<Result<Response<UpstreamBody>, ProxyError>> {
    if !prepared.request.body.can_replay() {
        tracing::debug!(route = %route.name, "a plugin asked to send again, but the body streamed");
        return None;
    }
    let target = match cluster {
        Some(name) => match snapshot.clusters.get(name.as_str()) {
            Some(cluster) => cluster.clone(),
            None => {
                tracing::warn!(route = %route.name, cluster = name, "a plugin named a cluster that does not exist");
                return None;
            }
        },
        None => prepared.cluster.clone(),
    };
    if tokio::time::Instant::now() + delay >= deadline {
        return None;
    }
    // A plugin's retry is a retry like the route's own: after its delay, the budget (when the
    // route has one) and the target cluster's `max_retries` bound it.
    tokio::time::sleep(delay).await;
    let metrics = &pending.inner.metrics.resilience;
    let _budget = match (&route.policy.retry, is_retry) {
        (Some(retry), true) => match retry.budget.try_retry() {
            Some(guard) => Some(guard),
            None => {
                metrics.retry_refused(&route.name, "budget");
                return None;
            }
        },
        _ => None,
    };
    let _slot = if is_retry {
        match target.resilience().retry_slot() {
            Some(slot) => Some(slot),
            None => {
                metrics.retry_refused(&route.name, "max_retries");
                return None;
            }
        }
    } else {
        None
    };
    if is_retry {
        metrics.retried(&route.name);
    }
    pending.attempts += 1;
    pending.cluster = Some(target.name().clone());
    Some(send(prepared, &target, route, deadline, pending).await)
}

/// The response as the gateway's body type. A 200 to a GET on a route with serve-stale is
/// copied into the response store as it streams, as is any response a plugin asked to store.
fn boxed(
    response: Response<UpstreamBody>,
    stale_key: Option<String>,
    stores: Vec<hooks::StoreRequest>,
    snapshot: &Snapshot,
) -> Response<ProxyBody> {
    let stale_key = stale_key.filter(|_| response.status() == StatusCode::OK);
    if stale_key.is_none() && stores.is_empty() {
        return response.map(|body| body.map_err(Into::into).boxed());
    }
    let (parts, body) = response.into_parts();
    let store = snapshot.store.clone();
    let cap = usize::try_from(snapshot.config.cache.max_entry_size).unwrap_or(usize::MAX);
    let (status, headers) = (parts.status, parts.headers.clone());
    let body = capture::CaptureBody::new(body, cap, move |bytes| {
        for request in &stores {
            hooks::keep(&store, request, status, &headers, bytes.clone());
        }
        if let Some(key) = stale_key {
            fallback::keep(&store, key, status, headers, bytes);
        }
    });
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

/// The host a request is for (with any port) and, when it came only from the URI, a `Host`
/// value to send upstream. An absolute-form target (or HTTP/2 `:authority`) wins over `Host`
/// (RFC 9112 §3.2.2), but the two must name the same host.
fn downstream_host(
    req: &Request<Incoming>,
) -> Result<(Option<&str>, Option<HeaderValue>), ProxyError> {
    // RFC 9112 §3.2: more than one Host, or one that is not a valid host, is a 400. The
    // gateway routes by one value, so forwarding another would let the upstream disagree.
    let mut hosts = req.headers().get_all(HOST).iter();
    let host_header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Err(ProxyError::BadRequest(
                "the request has more than one Host header",
            ));
        }
        (Some(value), None) => {
            let host = value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not valid text"))?;
            if host.contains('@') || host.parse::<http::uri::Authority>().is_err() {
                return Err(ProxyError::BadRequest(
                    "the Host header is not a valid host",
                ));
            }
            Some(host)
        }
        (None, _) => None,
    };
    let Some(authority) = req.uri().authority() else {
        return Ok((host_header, None));
    };
    // `host:port` without any `user@`: credentials in the target are no part of the host.
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    match host_header {
        Some(host) if !authority.host().eq_ignore_ascii_case(strip_port(host)) => Err(
            ProxyError::BadRequest("the request target and the Host header name different hosts"),
        ),
        Some(_) => Ok((Some(host_port), None)),
        None => Ok((Some(host_port), HeaderValue::from_str(host_port).ok())),
    }
}

/// Phases 8 and 10: adds the request id and hangs the request record off the response body.
fn finish<B>(mut response: Response<B>, mut pending: Pending) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    pending.status = status.as_u16();
    response
        .headers_mut()
        .insert(X_REQUEST_ID, pending.request_id.clone());
    // hyper never polls these bodies, so dropping them unread is a normal end.
    let bodiless = pending.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    response
        .map(|body| RecordBody::new(body, bodiless, move |outcome| pending.finish(outcome)).boxed())
}
