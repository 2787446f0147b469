//! The answer stage: the response a request gets, and the facts of the exchange that the
//! request record is built from.
//!
//! An [`Answer`] is built once, by the stage that decided it, and is then only read: the
//! record takes its route, cluster, endpoint, tries and error kind from here when the
//! response body ends. It also holds the places the last try took (its request slot, its
//! connection, its retry's place) until then.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use levee_resilience::bulkhead::Slot;

use super::error::ProxyError;
use super::forward::{Forwarded, Held};
use super::limit::BodyStats;
use super::{capture, fallback, hooks};
use crate::body::{self, ProxyBody};
use crate::route::RouteEntry;
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamBody;

/// The response to a request and how it came about.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) response: Response<ProxyBody>,
    pub(crate) route: Option<Arc<str>>,
    /// The cluster of the last forwarding pass, or the route's.
    pub(crate) cluster: Option<Arc<str>>,
    /// The endpoint of the last try, if one was picked.
    pub(crate) endpoint: Option<SocketAddr>,
    /// Tries sent to an endpoint, over every forwarding pass.
    pub(crate) tries: u32,
    /// The gateway error kind, when the gateway answered for a failure.
    pub(crate) error: Option<&'static str>,
    /// How a fallback answered (`stale`, `static`, `plugin`, ...), if one did.
    pub(crate) served_by: Option<&'static str>,
    pub(crate) body: Option<Arc<BodyStats>>,
    /// Released when the response ends.
    held: Held,
    retry: Option<Slot>,
}

// === impl Answer ===

impl Answer {
    pub(crate) fn new(response: Response<ProxyBody>) -> Answer {
        Answer {
            response,
            route: None,
            cluster: None,
            endpoint: None,
            tries: 0,
            error: None,
            served_by: None,
            body: None,
            held: Held::default(),
            retry: None,
        }
    }

    /// The gateway's response for `e`.
    pub(crate) fn error(e: ProxyError, request_id: &HeaderValue) -> Answer {
        tracing::debug!(
            kind = e.kind(),
            source = ?e.source(),
            error = %e,
            ?request_id,
            "request failed"
        );
        let mut answer = Answer::new(e.to_response(request_id).map(body::full));
        answer.error = Some(e.kind());
        answer
    }

    pub(crate) fn on_route(mut self, route: &RouteEntry) -> Answer {
        self.route = Some(Arc::clone(&route.name));
        self.cluster = Some(Arc::clone(&route.cluster));
        self
    }

    /// Where the exchange went: the cluster and endpoint of its last try, the tries sent, and
    /// the request body's counts.
    pub(crate) fn on(
        mut self,
        cluster: &Arc<str>,
        endpoint: Option<SocketAddr>,
        tries: u32,
        body: &Arc<BodyStats>,
    ) -> Answer {
        self.cluster = Some(Arc::clone(cluster));
        self.endpoint = endpoint;
        self.tries = tries;
        self.body = Some(Arc::clone(body));
        self
    }

    /// [`Answer::on`] where the forwarding pass that this answer replaces went.
    pub(crate) fn after(self, forwarded: &Forwarded, tries: u32, body: &Arc<BodyStats>) -> Answer {
        self.on(&forwarded.cluster, forwarded.endpoint, tries, body)
    }

    pub(crate) fn served_by(mut self, served_by: &'static str) -> Answer {
        self.served_by = Some(served_by);
        self
    }

    pub(crate) fn with_error(mut self, kind: Option<&'static str>) -> Answer {
        self.error = kind;
        self
    }

    /// Keeps what the last try holds until the response ends.
    pub(crate) fn holding(mut self, held: Held, retry: Option<Slot>) -> Answer {
        self.held = held;
        self.retry = retry;
        self
    }

    /// Gives back what the exchange held: the response has ended.
    pub(crate) fn release(&mut self) {
        self.held = Held::default();
        self.retry = None;
    }
}

// === impl Forwarded ===

impl Forwarded {
    /// The error kind the record gets when a fallback answers for this pass.
    pub(crate) fn error_kind(&self) -> Option<&'static str> {
        match &self.result {
            Err(e) => Some(e.kind()),
            Ok(response) if response.status().is_server_error() => Some("upstream-5xx"),
            Ok(_) => None,
        }
    }
}

/// The response as the gateway's body type. A 200 to a GET on a route with serve-stale is
/// copied into the response store as it streams, as is any response a plugin asked to store.
pub(crate) fn boxed(
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
