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
mod limit;
pub(crate) mod policy;
mod record;
mod replay;
mod upgrade;

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
use crate::upstream::UpstreamError;

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
    /// The downstream server must serve connections with upgrades enabled
    /// (`serve_connection_with_upgrades`) for WebSocket and other upgrades to work.
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

    let forwarded = async {
        admission(route, &req, conn, deadline, &pending.inner.metrics).await?;
        forward(
            snapshot,
            route,
            req,
            conn,
            authority_only,
            deadline,
            pending,
        )
        .await
    }
    .await;

    let Some(fallback) = &policy.fallback else {
        return forwarded.map(|response| boxed(response, None, snapshot));
    };
    let failure = match &forwarded {
        Ok(response) if response.status().is_server_error() => Some(FailureKind::Upstream5xx),
        Ok(_) => None,
        Err(e) => e.failure_kind(),
    };
    if let Some(kind) = failure.filter(|&k| fallback.covers(k))
        && let Some((response, served_by)) =
            fallback::respond(fallback, stale_key.as_deref(), &snapshot.store)
    {
        pending.served_by = Some(served_by);
        pending.error_kind = match &forwarded {
            Err(e) => Some(e.kind()),
            Ok(_) => Some("upstream-5xx"),
        };
        pending.inner.metrics.resilience.fallback_served(
            &route.name,
            error::failure_kind_name(kind),
            served_by,
        );
        return Ok(response);
    }
    if failure.is_some_and(|k| fallback.covers(k)) {
        pending
            .inner
            .metrics
            .resilience
            .fallback_missed(&route.name);
    }
    forwarded.map(|response| boxed(response, stale_key, snapshot))
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

/// Phases 4 to 7: rewrite the request, send it with retries, set up upgrades.
async fn forward(
    snapshot: &Snapshot,
    route: &RouteEntry,
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    authority_only: Option<HeaderValue>,
    deadline: tokio::time::Instant,
    pending: &mut Pending,
) -> Result<Response<Incoming>, ProxyError> {
    if let Some(limit) = route.max_body_size {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ProxyError::PayloadTooLarge { limit });
        }
    }
    let cluster = snapshot
        .clusters
        .get(&route.cluster)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(route.cluster.to_string()))?;

    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

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
    let hash = forward::hash_for(cluster.hash_on(), &parts.headers, conn.peer.ip());

    let stats = Arc::new(BodyStats::default());
    pending.body = Some(Arc::clone(&stats));
    let body = LimitedBody::new(body, Arc::clone(&stats), route.max_body_size).boxed();
    let body = match &route.policy.retry {
        // An upgrade's body is the tunnel: it is never read ahead.
        Some(retry) if !upgrade => ReplayBody::read(body, retry.config.max_buffered_body)
            .await
            .map_err(|replay::ReadError::Body(e)| match route.max_body_size {
                Some(limit) if stats.too_large() => ProxyError::PayloadTooLarge { limit },
                _ => ProxyError::RequestBody(e.to_string()),
            })?,
        _ => ReplayBody::Streaming(Some(body)),
    };
    let outgoing = forward::Outgoing { parts, body, hash };

    let mut response = forward::send(
        cluster,
        &route.policy,
        outgoing,
        deadline,
        &stats,
        route.max_body_size,
        pending,
    )
    .await?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream_upgrade else {
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

/// The upstream response as the gateway's body type; with a stale key, a 200 is copied into
/// the response store as it streams.
fn boxed(
    response: Response<Incoming>,
    stale_key: Option<String>,
    snapshot: &Snapshot,
) -> Response<ProxyBody> {
    match stale_key {
        Some(key) if response.status() == StatusCode::OK => {
            let (parts, body) = response.into_parts();
            let store = snapshot.store.clone();
            let cap = usize::try_from(snapshot.config.cache.max_entry_size).unwrap_or(usize::MAX);
            let head = (parts.status, parts.headers.clone());
            let body = capture::CaptureBody::new(body, cap, move |bytes| {
                fallback::keep(&store, key, head.0, head.1, bytes);
            });
            Response::from_parts(parts, body.map_err(Into::into).boxed())
        }
        _ => response.map(|body| body.map_err(Into::into).boxed()),
    }
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
