//! Retry budget: retries in flight are limited to a share of the requests in flight.
//!
//! # Why a budget and not only a retry count?
//!
//! A per-request retry count (`attempts: 3`) multiplies load exactly when an upstream is failing:
//! every request becomes three. A budget (Finagle, linkerd, Envoy's `retry_budget`) lets retries
//! smooth over a few failures but caps the extra load at a fixed share of real traffic, so a
//! retry storm cannot form. A floor of `min_per_second` keeps retries possible on routes with
//! little traffic, where the ratio alone would round down to nothing.
//!
//! # The formula
//!
//! With `active` requests in flight (each holds a [`RequestGuard`]) and `retries` retries in
//! flight (each holds a [`RetryGuard`]), a new retry is allowed when
//!
//! ```text
//! retries + 1 <= ratio * active        (the ratio: retries may be at most `ratio` of active)
//! or a floor token is available        (bucket of `min_per_second` tokens, refilled at
//!                                       `min_per_second` per second)
//! ```
//!
//! The ratio is checked first and takes no token. A retry admitted by a token still counts in
//! `retries` while it runs. Every refusal is counted in [`RetryBudget::overflows`].
//!
//! The success path (a request that never retries) is two atomic adds on the active count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

/// A route's retry budget, shared by every request of the route as an `Arc`.
#[derive(Debug)]
pub struct RetryBudget {
    /// 0..=1. Config default 0.2.
    ratio: f64,
    /// Floor of retries per second, also the burst of the floor bucket. Config default 10.
    min_per_second: u32,
    active: AtomicU64,
    retries: AtomicU64,
    overflows: AtomicU64,
    floor: Mutex<Floor>,
}

/// The `min_per_second` token bucket; only touched when the ratio refuses a retry.
#[derive(Debug)]
struct Floor {
    tokens: f64,
    refilled_at: Instant,
}

/// Counts one request in flight until dropped. From [`RetryBudget::request_started`].
#[derive(Debug)]
#[must_use = "the request counts as active only while the guard lives"]
pub struct RequestGuard {
    budget: Arc<RetryBudget>,
}

/// Counts one retry in flight until dropped. From [`RetryBudget::try_retry`].
#[derive(Debug)]
#[must_use = "the retry counts as in flight only while the guard lives"]
pub struct RetryGuard {
    budget: Arc<RetryBudget>,
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget that lets retries be `ratio` of active requests, plus `min_per_second`.
    ///
    /// `ratio` is clamped to `0..=1` (NaN is 0). The floor bucket starts full.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        RetryBudget {
            ratio,
            min_per_second,
            active: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            floor: Mutex::new(Floor {
                tokens: f64::from(min_per_second),
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Counts a request as active until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            budget: Arc::clone(self),
        }
    }

    /// Asks for one retry. `None` (counted as an overflow) when the budget is spent.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed_by_ratio = self.ratio * active as f64;
        let before = self.retries.fetch_add(1, Ordering::AcqRel);
        if (before + 1) as f64 <= allowed_by_ratio || self.take_floor_token() {
            return Some(RetryGuard {
                budget: Arc::clone(self),
            });
        }
        self.retries.fetch_sub(1, Ordering::AcqRel);
        self.overflows.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Requests in flight now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused since the budget was created.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// The ratio in force (after clamping).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The floor of retries per second.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    fn take_floor_token(&self) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let rate = f64::from(self.min_per_second);
        let elapsed = now
            .saturating_duration_since(floor.refilled_at)
            .as_secs_f64();
        floor.tokens = (floor.tokens + elapsed * rate).min(rate);
        floor.refilled_at = now;
        if floor.tokens >= 1.0 {
            floor.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// === impl RequestGuard ===

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.budget.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl RetryGuard ===

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.budget.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ratio_limits_retries_in_flight() {
        let budget = Arc::new(RetryBudget::new(0.2, 0));
        let _requests: Vec<_> = (0..10).map(|_| budget.request_started()).collect();
        let first = budget.try_retry().expect("1 of 2 allowed");
        let second = budget.try_retry().expect("2 of 2 allowed");
        assert!(budget.try_retry().is_none());
        assert_eq!(budget.overflows(), 1);
        assert_eq!(budget.retries_in_flight(), 2);

        drop(first);
        let third = budget
            .try_retry()
            .expect("a finished retry frees its place");
        assert!(budget.try_retry().is_none());
        assert_eq!(budget.overflows(), 2);
        drop((second, third));
        assert_eq!(budget.retries_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_follows_active_requests() {
        let budget = Arc::new(RetryBudget::new(0.5, 0));
        let a = budget.request_started();
        assert!(
            budget.try_retry().is_none(),
            "0.5 of 1 active rounds down to no retry"
        );
        let b = budget.request_started();
        assert_eq!(budget.active(), 2);
        let retry = budget.try_retry();
        assert!(retry.is_some());
        drop((a, b, retry));
        assert_eq!(budget.active(), 0);
        assert!(budget.try_retry().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_second_admits_retries_without_traffic_and_refills() {
        let budget = Arc::new(RetryBudget::new(0.2, 3));
        // Guards dropped at once: each token is spent, in flight or not.
        for _ in 0..3 {
            assert!(budget.try_retry().is_some());
        }
        assert!(budget.try_retry().is_none());
        assert_eq!(budget.overflows(), 1);

        tokio::time::advance(Duration::from_millis(340)).await;
        assert!(
            budget.try_retry().is_some(),
            "one token back after a third of a second"
        );
        assert!(budget.try_retry().is_none());

        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert!(budget.try_retry().is_some());
        }
        assert!(
            budget.try_retry().is_none(),
            "burst is min_per_second, however long idle"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_is_used_before_floor_tokens() {
        let budget = Arc::new(RetryBudget::new(1.0, 1));
        let _r = budget.request_started();
        let by_ratio = budget.try_retry().expect("ratio allows one");
        let by_token = budget.try_retry().expect("floor token still there");
        assert!(budget.try_retry().is_none());
        drop((by_ratio, by_token));
    }
}
