//! The prepare stage: the request made ready to send.
//!
//! The head is rewritten (origin-form target, hop-by-hop headers out, `x-forwarded-*` and
//! `x-request-id` in), the plugins' `on-request` may answer or re-route it, and the body is
//! limited and, when it may be sent more than once, read ahead within the route timeout.

use std::sync::Arc;

use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use levee_plugin_host::Hook;

use super::error::ProxyError;
use super::forward::{self, Forwarded, Outgoing};
use super::limit::{BodyStats, LimitedBody};
use super::record::Arrival;
use super::replay::{self, ReplayBody};
use super::retry::Retries;
use super::routed::Routed;
use super::{headers, hooks, upgrade};
use crate::body::ProxyBody;
use crate::conn::ConnInfo;
use crate::upstream::{Cluster, UpstreamError};

/// The replay cap for routes without `retry` whose plugins may resend (the config default of
/// `retry.max_buffered_body`).
const DEFAULT_REPLAY_BODY: u64 = 64 * 1024;

/// A request ready to send, and what later stages need of it.
pub(crate) struct Prepared {
    pub(crate) request: Outgoing,
    /// The cluster to send to: the route's, or the one a plugin's `route-to` named.
    pub(crate) cluster: Arc<Cluster>,
    upgrade: Option<upgrade::Downstream>,
    pub(crate) body: Arc<BodyStats>,
    /// A copy of the request head for `on-response` and `on-upstream-failure`, kept only
    /// when the route has such hooks (a streaming request gives its head away when sent).
    head: Option<http::request::Parts>,
}

/// Why a request was not made ready for forwarding: a plugin answered it, or it failed.
pub(crate) enum Stop {
    Respond(Response<ProxyBody>),
    Fail(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(e: ProxyError) -> Self {
        Stop::Fail(e)
    }
}

// === impl Prepared ===

impl Prepared {
    /// Rewrites the request head, runs the plugins' `on-request`, and makes the body ready (read
    /// ahead for retries when the route may send it more than once).
    pub(crate) async fn new(
        routed: &Routed<'_>,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        arrival: &Arrival,
    ) -> Result<Prepared, Stop> {
        let route = routed.route;
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
        let mut cluster = routed
            .snapshot
            .clusters
            .get(&route.cluster)
            .ok_or_else(|| ProxyError::NoHealthyEndpoint(route.cluster.to_string()))?
            .clone();

        let upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        let downstream_upgrade = upgrade.then(|| upgrade::Downstream::of(&mut req));

        let (mut parts, body) = req.into_parts();
        headers::forward_head(
            &mut parts,
            upgrade,
            conn,
            routed.authority_only.as_ref(),
            arrival.request_id(),
        );

        let policy = &route.policy;
        if policy.has_hook(Hook::OnRequest) {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let method = parts.method.clone();
            let mut head = hooks::RequestParts {
                method: method.as_str(),
                authority: &routed.authority,
                path_with_query: &path,
                headers: &mut parts.headers,
                route: &route.name,
                request_id: arrival.request_id().to_str().unwrap_or_default(),
            };
            match hooks::on_request(&policy.plugins, &mut head).await? {
                hooks::OnRequest::Respond(response) => return Err(Stop::Respond(response)),
                hooks::OnRequest::Forward { route_to: None } => {}
                hooks::OnRequest::Forward {
                    route_to: Some(name),
                } => match routed.snapshot.clusters.get(name.as_str()) {
                    Some(other) => cluster = other.clone(),
                    None => tracing::warn!(
                        route = %route.name,
                        cluster = name,
                        "a plugin routed to a cluster that does not exist; the route's cluster serves"
                    ),
                },
            }
        }
        let hash = forward::hash_for(cluster.hash_on(), &parts.headers, conn.peer.ip());

        let stats = Arc::new(BodyStats::new(route.max_body_size));
        let body = LimitedBody::new(body, Arc::clone(&stats)).boxed();
        // A body is read ahead when it may be sent more than once: for retries, or for a
        // plugin that may ask to retry or degrade. An upgrade's body is the tunnel and never is.
        let replay_cap = match &policy.retry {
            Some(retry) => Some(retry.config.max_buffered_body),
            None if policy.has_hook(Hook::OnUpstreamFailure) => Some(DEFAULT_REPLAY_BODY),
            None => None,
        };
        let body = match replay_cap {
            Some(cap) if !upgrade => {
                // Read ahead within the route timeout: a client that sends its body slowly
                // must not hold the request past it.
                match tokio::time::timeout_at(routed.deadline, ReplayBody::read(body, cap)).await {
                    Ok(Ok(body)) => body,
                    Ok(Err(replay::ReadError::Body(e))) => {
                        tracing::debug!(error = %e, "the request body failed while read ahead");
                        return Err(stats
                            .downstream_error(false)
                            .unwrap_or(ProxyError::RequestBody)
                            .into());
                    }
                    Err(_elapsed) => return Err(ProxyError::RequestTimeout.into()),
                }
            }
            _ => ReplayBody::Streaming(Some(body)),
        };
        let head = (policy.has_hook(Hook::OnResponse) || policy.has_hook(Hook::OnUpstreamFailure))
            .then(|| parts.clone());
        Ok(Prepared {
            request: Outgoing { parts, body, hash },
            cluster,
            upgrade: downstream_upgrade,
            body: stats,
            head,
        })
    }

    /// Sends the request to `cluster` with the route's retries, and sets up an upgrade.
    pub(crate) async fn forward(
        &mut self,
        cluster: &Arc<Cluster>,
        deadline: tokio::time::Instant,
        retries: &mut Retries<'_>,
        arrival: &Arrival,
    ) -> Forwarded {
        let mut forwarded = forward::send(
            cluster,
            &mut self.request,
            deadline,
            &self.body,
            retries,
            arrival,
        )
        .await;
        if let Ok(response) = &mut forwarded.result {
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                match self.upgrade.take() {
                    Some(downstream) => {
                        upgrade::spawn_tunnel(downstream, hyper::upgrade::on(response));
                    }
                    None => {
                        forwarded.result = Err(ProxyError::Upstream(UpstreamError::Protocol(
                            "upstream switched protocols without an upgrade request".into(),
                        )));
                    }
                }
            } else if headers::has_foreign_transfer_coding(response.headers()) {
                // hyper undoes only the chunking; the rest of the coding would reach the
                // client unannounced. Envoy rejects such responses the same way.
                forwarded.result = Err(ProxyError::Upstream(UpstreamError::Protocol(
                    "upstream used a transfer coding other than chunked".into(),
                )));
            } else {
                headers::strip_hop_by_hop(response.headers_mut(), false);
            }
        }
        forwarded
    }

    /// The request head as hooks see it.
    pub(crate) fn hook_parts<'a>(
        &'a mut self,
        authority: &'a str,
        route: &'a str,
        request_id: &'a str,
    ) -> hooks::RequestParts<'a> {
        let parts = match &mut self.head {
            Some(head) => head,
            None => &mut self.request.parts,
        };
        hooks::RequestParts {
            method: parts.method.as_str(),
            authority,
            path_with_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &mut parts.headers,
            route,
            request_id,
        }
    }
}
