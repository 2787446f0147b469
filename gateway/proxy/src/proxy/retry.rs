//! Leave to send a request again: the one place a retry is admitted.
//!
//! A route's own retries (`retry.attempts`) and a plugin's `retry` decision both ask
//! [`Retries::admit`], which takes one token from the route's retry budget and one place among
//! the target cluster's `max_retries`, and counts the retry or the refusal. A plugin's `degrade`
//! sends to a fallback cluster: it is not a retry and takes neither.

use std::sync::Arc;

use levee_resilience::bulkhead::Slot;

use super::policy::RetryPolicy;
use crate::metrics::Metrics;
use crate::upstream::Cluster;

/// The retries of one request.
#[derive(Debug)]
pub(crate) struct Retries<'a> {
    route: &'a Arc<str>,
    policy: Option<&'a RetryPolicy>,
    metrics: &'a Metrics,
    /// The place among `max_retries` of the retry in flight, held until its response ends.
    slot: Option<Slot>,
}

impl<'a> Retries<'a> {
    pub(crate) fn new(
        route: &'a Arc<str>,
        policy: Option<&'a RetryPolicy>,
        metrics: &'a Metrics,
    ) -> Self {
        Retries {
            route,
            policy,
            metrics,
            slot: None,
        }
    }

    /// The route's retry policy, if it has one.
    pub(crate) fn policy(&self) -> Option<&'a RetryPolicy> {
        self.policy
    }

    /// Asks to send once more, to `cluster`: a place among its `max_retries`, then a token of
    /// the route's budget (when the route has one). A refusal is counted with its reason.
    pub(crate) fn admit(&mut self, cluster: &Cluster) -> bool {
        let metrics = &self.metrics.resilience;
        // The retry before this one is over: its place goes back before this one asks.
        self.slot = None;
        // The place first: a refusal there must not spend a budget token.
        let Some(slot) = cluster.resilience().retry_slot() else {
            metrics.retry_refused(self.route, "max_retries");
            return false;
        };
        if let Some(policy) = self.policy
            && !policy.budget.withdraw()
        {
            metrics.retry_refused(self.route, "budget");
            return false;
        }
        metrics.retried(self.route);
        self.slot = Some(slot);
        true
    }

    /// The place the last admitted retry holds, for the response to keep until it ends.
    pub(crate) fn into_slot(self) -> Option<Slot> {
        self.slot
    }
}
