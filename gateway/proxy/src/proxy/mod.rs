//! The request path: route, admit, prepare, attempt, answer, record.
//!
//! [`Proxy::call`] loads the snapshot once (the request finishes on it, whatever reloads
//! happen meanwhile) and runs the stages in order. Each stage is a value handed to the next:
//!
//! 1. [`Routed`] (`routed.rs`), once the path is in normal form ([`crate::path`]): the
//!    downstream checks (`CONNECT` refused, a transfer coding other than `chunked` refused,
//!    the host from the absolute-form target or `Host`/`:authority`, a target that disagrees
//!    with `Host`, names another scheme than HTTP or carries userinfo refused, `Host`
//!    required of HTTP/1.1), the route ([`crate::route`]) or 404, then admission (rate limit,
//!    fault injection);
//! 2. [`Prepared`] (`prepare.rs`): request id and header rewriting ([`headers`]), the plugins'
//!    `on-request`, the body limit ([`limit`]) and the body kept for retries ([`replay`]);
//! 3. [`Attempt`](forward) (`forward.rs`): one try, which owns its permits, endpoint and
//!    outcome; [`Retries`] (`retry.rs`) admits each retry, a route's or a plugin's;
//! 4. the failure handling: the plugins' `on-upstream-failure`, then the route's fallback, and
//!    the plugins' `on-response`;
//! 5. [`Answer`] (`answer.rs`): the response and the facts of the exchange, with the places
//!    it holds until the response ends; failures become JSON responses in one place
//!    ([`error`]);
//! 6. the record ([`record`]): built read-only from the [`Arrival`] and the [`Answer`] when
//!    the response body ends, for metrics and the access log.
//!
//! An absolute-form target never decides where the gateway connects: it only ever connects to
//! cluster endpoints, and the upstream request is always origin-form. The gateway is not an
//! open proxy.

mod answer;
mod capture;
pub mod error;
mod fallback;
pub mod fault;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod hooks;
mod limit;
pub(crate) mod policy;
mod prepare;
mod record;
mod replay;
mod retry;
mod routed;
mod upgrade;

pub use upgrade::{Io, UpgradeHandoff, UpgradedIo};

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use levee_plugin_host::Hook;

use self::answer::Answer;
use self::error::ProxyError;
use self::prepare::{Prepared, Stop};
use self::record::Arrival;
use self::retry::Retries;
use self::routed::Routed;
use crate::access_log::AccessLog;
use crate::body::ProxyBody;
use crate::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::path;
use crate::route::strip_port;
use crate::snapshot::Snapshot;

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
        let arrival = Arrival::new(Arc::clone(&self.inner), &req, &conn);
        let answer = handle(&snapshot, &self.inner.metrics, req, &conn, &arrival).await;
        Ok(arrival.answered(answer))
    }
}

/// The stages, in order, from the downstream request to the answer.
async fn handle(
    snapshot: &Snapshot,
    metrics: &Metrics,
    req: Request<Incoming>,
    conn: &ConnInfo,
    arrival: &Arrival,
) -> Answer {
    let mut req = req;
    if let Err(e) = normalize_path(&mut req, conn.path_normalization) {
        return Answer::error(e, arrival.request_id());
    }
    let routed = match Routed::new(snapshot, metrics, &req, arrival) {
        Ok(routed) => routed,
        Err(e) => return Answer::error(e, arrival.request_id()),
    };
    arrival.reached(routed.route);
    if let Err(e) = routed.admit(&req, conn).await {
        return routed.failed(e, arrival);
    }

    let mut prepared = match Prepared::new(&routed, req, conn, arrival).await {
        Ok(prepared) => prepared,
        Err(Stop::Respond(response)) => return routed.answer(response).served_by("plugin"),
        Err(Stop::Fail(e)) => return routed.failed(e, arrival),
    };

    let policy = &routed.route.policy;
    let mut retries = Retries::new(&routed.route.name, policy.retry.as_ref(), metrics);
    if let Some(retry) = &policy.retry {
        retry.budget.deposit(arrival.started());
    }
    let cluster = Arc::clone(&prepared.cluster);
    let mut forwarded = prepared
        .forward(&cluster, routed.deadline, &mut retries, arrival)
        .await;
    let mut tries = forwarded.tries;

    if let Some(failure) = forwarded.failure()
        && policy.has_hook(Hook::OnUpstreamFailure)
    {
        let decided = routed
            .on_failure(&mut prepared, &forwarded, failure, tries, arrival)
            .await;
        match decided {
            Err(e) => {
                return routed
                    .failed(e, arrival)
                    .after(&forwarded, tries, &prepared.body);
            }
            Ok(hooks::OnFailure::Propagate) => {}
            Ok(hooks::OnFailure::Respond(response, served_by)) => {
                metrics.resilience.fallback_served(
                    &routed.route.name,
                    failure.0.as_str(),
                    served_by,
                );
                return routed
                    .answer(response)
                    .after(&forwarded, tries, &prepared.body)
                    .served_by(served_by)
                    .with_error(forwarded.error_kind());
            }
            Ok(hooks::OnFailure::Resend(resend)) => {
                let resent = routed.resend(&mut prepared, forwarded, resend, &mut retries, arrival);
                forwarded = match resent.await {
                    Ok(next) => {
                        tries += next.tries;
                        next
                    }
                    Err(previous) => previous,
                };
            }
        }
    }
    routed
        .respond(&mut prepared, forwarded, tries, retries, arrival)
        .await
}

/// Puts the request path in normal form ([`crate::path`]) before anything looks at it, so
/// routing, the route's policy, plugins and the upstream all see the same path; under
/// `action: reject` a path not in normal form is refused instead. The query is kept as sent.
fn normalize_path<B>(
    req: &mut Request<B>,
    config: levee_config::PathNormalization,
) -> Result<(), ProxyError> {
    if req.method() == http::Method::CONNECT {
        // Authority-form (`host:port`) has no path; the route stage refuses CONNECT with 405.
        return Ok(());
    }
    let options = path::Options {
        merge_slashes: config.merge_slashes,
    };
    let normal = match path::normalize(req.uri().path(), options) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(invalid) => return Err(ProxyError::BadRequest(invalid.0)),
    };
    if config.action == levee_config::PathAction::Reject {
        return Err(ProxyError::BadRequest(
            "the request path is not in normal form (dot segments, escaped unreserved \
             characters, lower-case escapes or repeated slashes)",
        ));
    }
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadRequest("the normalised request path is not valid"))?,
    );
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("the normalised request target is not valid"))?;
    Ok(())
}

/// The host a request is for (with any port) and, when it came only from the URI, a `Host`
/// value to send upstream. An absolute-form target (or HTTP/2 `:authority`) wins over `Host`
/// (RFC 9112 §3.2.2), but the two must name the same host.
fn downstream_host<B>(req: &Request<B>) -> Result<(Option<&str>, Option<HeaderValue>), ProxyError> {
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
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, whatever its target
        // (nginx and Envoy answer the same); HTTP/1.0 predates Host.
        (None, _) if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest(
                "an HTTP/1.1 request must have a Host header",
            ));
        }
        (None, _) => None,
    };
    // The gateway speaks HTTP only: `ftp://` or `ws://` in the target (or an HTTP/2
    // `:scheme`) names a protocol it does not proxy.
    if let Some(scheme) = req.uri().scheme_str()
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(ProxyError::BadRequest(
            "the request target's scheme is not http or https",
        ));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok((host_header, None));
    };
    // RFC 9110 §4.2.4 deprecates userinfo and RFC 9113 §8.3.1 forbids it in `:authority`;
    // a host with credentials attached is refused rather than guessed at.
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "the request target carries userinfo (user@host)",
        ));
    }
    let host_port = authority.as_str();
    match host_header {
        Some(host) if !authority.host().eq_ignore_ascii_case(strip_port(host)) => Err(
            ProxyError::BadRequest("the request target and the Host header name different hosts"),
        ),
        Some(_) => Ok((Some(host_port), None)),
        None => Ok((Some(host_port), HeaderValue::from_str(host_port).ok())),
    }
}
