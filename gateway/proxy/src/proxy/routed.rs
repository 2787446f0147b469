//! The route stage and what follows from it: admission, the failure handling (plugins'
//! `on-upstream-failure`, the route's fallback) and the plugins' `on-response`.
//!
//! A [`Routed`] request knows its route, its deadline and the snapshot it runs on; every
//! later decision that depends on the route is a method here, so no stage needs more than the
//! `Routed` and its own value.

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use levee_config::FailureKind;
use levee_plugin_host::Hook;
use tokio::time::Instant;

use super::answer::Answer;
use super::error::ProxyError;
use super::forward::Forwarded;
use super::hooks::{self, OnFailure};
use super::prepare::Prepared;
use super::record::Arrival;
use super::retry::Retries;
use super::{downstream_host, fallback, fault, headers};
use crate::body::ProxyBody;
use crate::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::route::RouteEntry;
use crate::snapshot::Snapshot;

/// A request matched to its route.
pub(crate) struct Routed<'s> {
    pub(crate) snapshot: &'s Snapshot,
    pub(crate) route: &'s RouteEntry,
    metrics: &'s Metrics,
    /// Arrival plus the route timeout: the response head must be there by then.
    pub(crate) deadline: Instant,
    /// The store key of a `GET` on a route with serve-stale: the method-free target.
    stale_key: Option<String>,
    /// The host the request is for, as plugin hooks see it; empty when the route has no
    /// plugins, so other routes copy nothing.
    pub(crate) authority: String,
    /// A `Host` to send upstream when the request named its host only in the target.
    pub(crate) authority_only: Option<HeaderValue>,
}

// === impl Routed ===

impl<'s> Routed<'s> {
    /// The downstream checks, then the route, or the failure the request gets instead.
    pub(crate) fn new(
        snapshot: &'s Snapshot,
        metrics: &'s Metrics,
        req: &Request<Incoming>,
        arrival: &Arrival,
    ) -> Result<Routed<'s>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        if headers::has_foreign_transfer_coding(req.headers()) {
            return Err(ProxyError::NotImplemented(
                "the only transfer coding the gateway accepts is chunked",
            ));
        }
        let (host, authority_only) = downstream_host(req)?;
        let route = snapshot
            .router
            .route(host, req.uri().path(), req.method(), req.headers())
            .ok_or(ProxyError::NoRoute)?;
        let policy = &route.policy;
        let stale_key = match &policy.fallback {
            Some(f) if f.stale.is_some() && req.method() == Method::GET => {
                Some(fallback::stale_key(host.unwrap_or_default(), req.uri()))
            }
            _ => None,
        };
        let authority = if policy.plugins.is_empty() {
            String::new()
        } else {
            host.unwrap_or_default().to_owned()
        };
        Ok(Routed {
            snapshot,
            route,
            metrics,
            deadline: arrival.started() + route.timeout,
            stale_key,
            authority,
            authority_only,
        })
    }

    /// Admission: the route's rate limit, then fault injection.
    pub(crate) async fn admit(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<(), ProxyError> {
        let (policy, metrics) = (&self.route.policy, &self.metrics.resilience);
        if let Some(limit) = &policy.rate_limit
            && let Err(retry_after) = limit.check(conn.peer.ip(), req.headers())
        {
            metrics.rate_limited(&self.route.name);
            return Err(ProxyError::RateLimited { retry_after });
        }
        if let Some(config) = &policy.fault {
            let injection = fault::decide(config, req.headers(), &mut rand::rng());
            if let Some(delay) = injection.delay {
                metrics.fault_injected(&self.route.name, "delay");
                tokio::time::sleep_until(self.deadline.min(Instant::now() + delay)).await;
            }
            if let Some(status) = injection.abort {
                metrics.fault_injected(&self.route.name, "abort");
                return Err(ProxyError::FaultAbort(status));
            }
        }
        Ok(())
    }

    /// An answer on this route.
    pub(crate) fn answer(&self, response: Response<ProxyBody>) -> Answer {
        Answer::new(response).on_route(self.route)
    }

    /// The answer to a failure before or around forwarding: the route's fallback when it
    /// covers the failure, else the gateway's error response.
    pub(crate) fn failed(&self, e: ProxyError, arrival: &Arrival) -> Answer {
        if let Some(kind) = e.failure_kind()
            && let Some(answer) = self.fallback(kind)
        {
            return answer.with_error(Some(e.kind()));
        }
        Answer::error(e, arrival.request_id()).on_route(self.route)
    }

    /// The route's declarative fallback for a failure of `kind`: a stale copy, else the static
    /// response; `None` when it has none, or none that covers `kind`.
    fn fallback(&self, kind: FailureKind) -> Option<Answer> {
        let fallback = self.route.policy.fallback.as_ref()?;
        if !fallback.covers(kind) {
            return None;
        }
        let metrics = &self.metrics.resilience;
        let Some((response, served_by)) =
            fallback::respond(fallback, self.stale_key.as_deref(), &self.snapshot.store)
        else {
            metrics.fallback_missed(&self.route.name);
            return None;
        };
        metrics.fallback_served(&self.route.name, kind.as_str(), served_by);
        Some(self.answer(response).served_by(served_by))
    }

    /// Asks the plugins' `on-upstream-failure` what to do about a failed forwarding pass.
    pub(crate) async fn on_failure(
        &self,
        prepared: &mut Prepared,
        forwarded: &Forwarded,
        (kind, status): (FailureKind, Option<StatusCode>),
        tries: u32,
        arrival: &Arrival,
    ) -> Result<OnFailure, ProxyError> {
        let breaker = self
            .snapshot
            .clusters
            .get(&forwarded.cluster)
            .and_then(|c| c.resilience().breaker_state());
        let failure = hooks::Failure {
            kind,
            cluster: &forwarded.cluster,
            attempt: tries.max(1),
            status,
            elapsed: arrival.started().elapsed(),
            breaker,
        };
        let request_id = arrival.request_id().to_str().unwrap_or_default();
        let head = prepared.hook_parts(&self.authority, &self.route.name, request_id);
        hooks::on_failure(
            &self.route.policy.plugins,
            &head,
            failure,
            &self.snapshot.store,
        )
        .await
    }

    /// Carries out a plugin's `retry` or `degrade`: the request once more (with the route's
    /// retries inside), to the cluster it names or the same one, after its delay. `Err` gives
    /// `previous` back when it cannot be done: the body already streamed, the cluster does not
    /// exist, the delay passes the route timeout, or (`retry`) [`Retries`] refuses it.
    pub(crate) async fn resend(
        &self,
        prepared: &mut Prepared,
        previous: Forwarded,
        resend: hooks::Resend,
        retries: &mut Retries<'_>,
        arrival: &Arrival,
    ) -> Result<Forwarded, Forwarded> {
        let route = &self.route.name;
        if !prepared.request.body.can_replay() {
            tracing::debug!(%route, "a plugin asked to send again, but the body streamed");
            return Err(previous);
        }
        let target = match resend.cluster {
            Some(name) => match self.snapshot.clusters.get(name.as_str()) {
                Some(cluster) => cluster.clone(),
                None => {
                    tracing::warn!(%route, cluster = name, "a plugin named a cluster that does not exist");
                    return Err(previous);
                }
            },
            None => prepared.cluster.clone(),
        };
        if Instant::now() + resend.delay >= self.deadline {
            return Err(previous);
        }
        if resend.is_retry && !retries.admit(&target) {
            return Err(previous);
        }
        // The failed pass (its response, connection and slots) goes before the next one
        // waits for its own.
        drop(previous);
        tokio::time::sleep(resend.delay).await;
        Ok(prepared
            .forward(&target, self.deadline, retries, arrival)
            .await)
    }

    /// The last stage before the answer: the route's fallback for a failed pass, else the
    /// upstream's response through the plugins' `on-response`, copied into the store when the
    /// route or a plugin keeps it.
    pub(crate) async fn respond(
        &self,
        prepared: &mut Prepared,
        forwarded: Forwarded,
        tries: u32,
        retries: Retries<'_>,
        arrival: &Arrival,
    ) -> Answer {
        if let Some((kind, _)) = forwarded.failure()
            && let Some(answer) = self.fallback(kind)
        {
            return answer
                .after(&forwarded, tries, &prepared.body)
                .with_error(forwarded.error_kind());
        }
        let Forwarded {
            result,
            cluster,
            endpoint,
            held,
            ..
        } = forwarded;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                return Answer::error(e, arrival.request_id())
                    .on_route(self.route)
                    .on(&cluster, endpoint, tries, &prepared.body);
            }
        };
        let policy = &self.route.policy;
        let mut stores = Vec::new();
        if response.status() != StatusCode::SWITCHING_PROTOCOLS && policy.has_hook(Hook::OnResponse)
        {
            let request_id = arrival.request_id().to_str().unwrap_or_default();
            let status = response.status();
            let head = prepared.hook_parts(&self.authority, &self.route.name, request_id);
            let decided =
                hooks::on_response(&policy.plugins, &head, status, response.headers_mut()).await;
            match decided {
                Err(e) => {
                    return Answer::error(e, arrival.request_id())
                        .on_route(self.route)
                        .on(&cluster, endpoint, tries, &prepared.body);
                }
                Ok((Some(replacement), _)) => {
                    return self
                        .answer(replacement)
                        .on(&cluster, endpoint, tries, &prepared.body)
                        .served_by("plugin");
                }
                Ok((None, asked)) => stores = asked,
            }
        }
        let stale_key = self.stale_key.clone();
        let response = super::answer::boxed(response, stale_key, stores, self.snapshot);
        self.answer(response)
            .on(&cluster, endpoint, tries, &prepared.body)
            .holding(held, retries.into_slot())
    }
}
