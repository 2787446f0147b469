//! Per-cluster bulkheads: caps on connections, pending requests, requests and retries in flight.
//!
//! This is what Envoy calls "circuit breakers": fixed ceilings, so that one slow cluster cannot
//! hold every connection and task of the gateway. A full bulkhead fails fast (the gateway answers
//! `overloaded`) instead of queueing. Each resource is an atomic counter taken with a
//! compare-and-swap, so a slot is never granted over the limit, and is given back by dropping its
//! RAII [`Slot`].
//!
//! A reload calls [`Bulkhead::set_params`] once it can no longer fail (the bulkhead serves the
//! old config until then): counts of slots in use are kept, and a lowered limit only refuses new
//! slots until enough old ones are released.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Limits of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadParams {
    /// Upstream connections open at once. Config default 1024.
    pub max_connections: u32,
    /// Requests waiting for a connection. Config default 1024.
    pub max_pending: u32,
    /// Requests in flight to the cluster. Config default 1024.
    pub max_requests: u32,
    /// Retries in flight to the cluster. Config default 3.
    pub max_retries: u32,
}

/// The kinds of resource a bulkhead limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An upstream connection.
    Connection,
    /// A request waiting for a connection.
    Pending,
    /// A request in flight.
    Request,
    /// A retry in flight.
    Retry,
}

/// A cluster's bulkheads, shared as an `Arc` by the requests and connection pool of the cluster.
#[derive(Debug)]
pub struct Bulkhead {
    connections: Limit,
    pending: Limit,
    requests: Limit,
    retries: Limit,
}

/// One unit of a [`Resource`], held until dropped.
#[derive(Debug)]
#[must_use = "the slot is released as soon as it is dropped"]
pub struct Slot {
    bulkhead: Arc<Bulkhead>,
    resource: Resource,
}

/// What `/clusters` shows of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceStatus {
    /// Slots held now.
    pub in_use: u32,
    /// The limit in force.
    pub max: u32,
    /// Requests refused because the limit was reached, since the bulkhead was created.
    pub overflows: u64,
}

/// What `/clusters` shows of a bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadStatus {
    /// Upstream connections.
    pub connections: ResourceStatus,
    /// Requests waiting for a connection.
    pub pending: ResourceStatus,
    /// Requests in flight.
    pub requests: ResourceStatus,
    /// Retries in flight.
    pub retries: ResourceStatus,
}

#[derive(Debug)]
struct Limit {
    max: AtomicU32,
    in_use: AtomicU32,
    overflows: AtomicU64,
}

// === impl Bulkhead ===

impl Bulkhead {
    /// A bulkhead with nothing in use.
    pub fn new(params: BulkheadParams) -> Self {
        Bulkhead {
            connections: Limit::new(params.max_connections),
            pending: Limit::new(params.max_pending),
            requests: Limit::new(params.max_requests),
            retries: Limit::new(params.max_retries),
        }
    }

    /// A slot for one request waiting for a connection, or `None` (counted).
    pub fn try_pending(self: &Arc<Self>) -> Option<Slot> {
        self.try_acquire(Resource::Pending)
    }

    /// A slot for one request in flight, or `None` (counted).
    pub fn try_request(self: &Arc<Self>) -> Option<Slot> {
        self.try_acquire(Resource::Request)
    }

    /// A slot for one retry in flight, or `None` (counted).
    pub fn try_retry(self: &Arc<Self>) -> Option<Slot> {
        self.try_acquire(Resource::Retry)
    }

    /// A slot of `resource`, or `None` (counted as an overflow) when its limit is reached.
    pub fn try_acquire(self: &Arc<Self>, resource: Resource) -> Option<Slot> {
        self.limit(resource).try_take().then(|| Slot {
            bulkhead: Arc::clone(self),
            resource,
        })
    }

    /// Applies new limits; slots in use and overflow counts are kept.
    pub fn set_params(&self, params: BulkheadParams) {
        self.connections
            .max
            .store(params.max_connections, Ordering::Relaxed);
        self.pending
            .max
            .store(params.max_pending, Ordering::Relaxed);
        self.requests
            .max
            .store(params.max_requests, Ordering::Relaxed);
        self.retries
            .max
            .store(params.max_retries, Ordering::Relaxed);
    }

    /// The limits in force.
    pub fn params(&self) -> BulkheadParams {
        BulkheadParams {
            max_connections: self.connections.max.load(Ordering::Relaxed),
            max_pending: self.pending.max.load(Ordering::Relaxed),
            max_requests: self.requests.max.load(Ordering::Relaxed),
            max_retries: self.retries.max.load(Ordering::Relaxed),
        }
    }

    /// Slots in use, limits and overflows of every resource.
    pub fn counts(&self) -> BulkheadStatus {
        BulkheadStatus {
            connections: self.connections.status(),
            pending: self.pending.status(),
            requests: self.requests.status(),
            retries: self.retries.status(),
        }
    }

    fn limit(&self, resource: Resource) -> &Limit {
        match resource {
            Resource::Connection => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Request => &self.requests,
            Resource::Retry => &self.retries,
        }
    }
}

// === impl Slot ===

impl Slot {
    /// The resource this slot holds.
    pub fn resource(&self) -> Resource {
        self.resource
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bulkhead
            .limit(self.resource)
            .in_use
            .fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Limit ===

impl Limit {
    fn new(max: u32) -> Self {
        Limit {
            max: AtomicU32::new(max),
            in_use: AtomicU32::new(0),
            overflows: AtomicU64::new(0),
        }
    }

    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        let taken = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn status(&self) -> ResourceStatus {
        ResourceStatus {
            in_use: self.in_use.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BulkheadParams {
        BulkheadParams {
            max_connections: 2,
            max_pending: 1,
            max_requests: 3,
            max_retries: 1,
        }
    }

    #[test]
    fn refuses_past_the_limit_and_counts_overflows() {
        let b = Arc::new(Bulkhead::new(params()));
        let held: Vec<_> = (0..3)
            .map(|_| b.try_request().expect("under limit"))
            .collect();
        assert!(b.try_request().is_none());
        assert!(b.try_request().is_none());
        let s = b.counts().requests;
        assert_eq!(
            s,
            ResourceStatus {
                in_use: 3,
                max: 3,
                overflows: 2
            }
        );
        drop(held);
        assert_eq!(b.counts().requests.in_use, 0);
        assert!(b.try_request().is_some());
    }

    #[test]
    fn dropping_a_slot_releases_it() {
        let b = Arc::new(Bulkhead::new(params()));
        let retry = b.try_retry().expect("first retry");
        assert!(b.try_retry().is_none());
        drop(retry);
        let again = b.try_retry().expect("released");
        assert_eq!(again.resource(), Resource::Retry);
    }

    #[test]
    fn resources_are_counted_separately() {
        let b = Arc::new(Bulkhead::new(params()));
        let _c1 = b.try_acquire(Resource::Connection).expect("connection 1");
        let _c2 = b.try_acquire(Resource::Connection).expect("connection 2");
        assert!(b.try_acquire(Resource::Connection).is_none());
        let _p = b.try_pending().expect("pending");
        assert!(b.try_pending().is_none());
        assert!(b.try_request().is_some());
        let c = b.counts();
        assert_eq!((c.connections.in_use, c.connections.overflows), (2, 1));
        assert_eq!((c.pending.in_use, c.pending.overflows), (1, 1));
        assert_eq!(c.retries.overflows, 0);
    }

    #[test]
    fn set_params_keeps_counts_and_applies_new_limits() {
        let b = Arc::new(Bulkhead::new(params()));
        let held: Vec<_> = (0..3)
            .map(|_| b.try_request().expect("under limit"))
            .collect();
        b.set_params(BulkheadParams {
            max_requests: 2,
            ..params()
        });
        assert_eq!(b.counts().requests.in_use, 3);
        assert!(b.try_request().is_none());
        drop(held);
        let _a = b.try_request().expect("1");
        let _b = b.try_request().expect("2");
        assert!(b.try_request().is_none());
        b.set_params(BulkheadParams {
            max_requests: 5,
            ..params()
        });
        assert!(b.try_request().is_some());
        assert_eq!(b.params().max_requests, 5);
    }

    #[test]
    fn never_grants_over_the_limit_across_threads() {
        let b = Arc::new(Bulkhead::new(BulkheadParams {
            max_requests: 5,
            ..params()
        }));
        let granted = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Some(slot) = b.try_request() {
                            granted.lock().expect("not poisoned").push(slot);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.lock().expect("not poisoned").len(), 5);
        assert_eq!(b.counts().requests.overflows, 8 * 100 - 5);
    }
}
