//! Retry budget: retries are at most a share of the requests of a recent window, plus a floor.
//!
//! # Why a budget and not only a retry count?
//!
//! A per-request retry count (`attempts: 3`) multiplies load exactly when an upstream is failing:
//! every request becomes three. A budget (Finagle, linkerd, tower, Envoy's `retry_budget`) lets
//! retries smooth over a few failures but caps the extra load at a fixed share of real traffic,
//! so a retry storm cannot form. A floor of `min_per_second` keeps retries possible on routes
//! with little traffic, where the ratio alone would round down to nothing.
//!
//! # Why over a window, and not over what is in flight
//!
//! An earlier version compared retries *in flight* with requests *in flight*. Against a service
//! that fails fast, neither is in flight for long, so the check almost always passed: a chaos
//! run with 8 clients against a cluster answering every request with 503 sent 2.24 upstream
//! calls per client request with a 20% budget. Counting over time, as Finagle's and tower's
//! budgets do (`tower/src/retry/budget/tps_budget.rs`), holds however fast the failures are.
//!
//! # The formula
//!
//! Every request [`deposits`](RetryBudget::deposit) `ratio` of a token, every retry
//! [`withdraws`](RetryBudget::withdraw) one whole token, and both are kept for [`WINDOW`]. A
//! reserve of `min_per_second × WINDOW` tokens is always there. A retry is allowed when
//!
//! ```text
//! reserve + ratio × requests(window) − retries(window) >= 1
//! ```
//!
//! so over any long run, retries ≤ `ratio × requests + min_per_second × seconds`, and a failing
//! cluster receives at most `1 + ratio` upstream calls per client request, plus the floor.
//! Every refusal is counted in [`RetryBudget::overflows`].
//!
//! # Cost
//!
//! A deposit is one relaxed atomic load (is the current slice still current?) and one atomic
//! add; once a second one request clears the slices that fell out of the window, under a lock
//! that nothing else on the success path takes.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long a deposit or withdrawal counts (Finagle's and tower's default `ttl`).
pub const WINDOW: Duration = Duration::from_secs(10);

/// The window is kept in this many slices, so it slides in steps of one second.
const SLICES: usize = 10;

/// One second: `WINDOW / SLICES`.
const SLICE: Duration = Duration::from_secs(1);

/// Tokens are counted in thousandths, so that a ratio like 0.2 deposits a whole number.
const TOKEN: i64 = 1_000;

/// A route's retry budget, shared by every request of the route.
#[derive(Debug)]
pub struct RetryBudget {
    /// 0..=1. Config default 0.2.
    ratio: f64,
    /// Floor of retries per second. Config default 10.
    min_per_second: u32,
    /// `ratio` in thousandths of a token: what each request deposits.
    deposit: i64,
    /// `min_per_second × WINDOW` tokens, in thousandths.
    reserve: i64,
    origin: Instant,
    /// Net tokens (deposits − withdrawals) of each slice; slice `n` lives in `slices[n % SLICES]`.
    slices: [AtomicI64; SLICES],
    /// The newest slice number (seconds since `origin`) the slices were cleared up to.
    current: AtomicU64,
    /// Held by the one request that clears slices which fell out of the window.
    rolling: Mutex<()>,
    overflows: AtomicU64,
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget that lets retries be `ratio` of the window's requests, plus `min_per_second`.
    ///
    /// `ratio` is clamped to `0..=1` (NaN is 0).
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // Exact for the ratios a config can name (whole percents); at most 1000.
        #[expect(clippy::cast_possible_truncation, reason = "ratio is within 0..=1")]
        let deposit = (ratio * TOKEN as f64).round() as i64;
        RetryBudget {
            ratio,
            min_per_second,
            deposit,
            reserve: i64::from(min_per_second) * WINDOW.as_secs() as i64 * TOKEN,
            origin: Instant::now(),
            slices: Default::default(),
            current: AtomicU64::new(0),
            rolling: Mutex::new(()),
            overflows: AtomicU64::new(0),
        }
    }

    /// Counts one request made at `now` (its start: the request path already read the clock).
    pub fn deposit(&self, now: Instant) {
        if self.deposit == 0 {
            return;
        }
        let slice = self.roll(now);
        self.slices[slice % SLICES].fetch_add(self.deposit, Ordering::Relaxed);
    }

    /// Asks for one retry now: `true` and one token spent, or `false` (counted as an
    /// overflow) when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let slice = self.roll(Instant::now());
        // Check-then-spend is not one atomic step: two racing retries may both pass on the
        // last token. The overshoot is bounded by the number of workers, as in tower.
        if self.balance() >= TOKEN {
            self.slices[slice % SLICES].fetch_sub(TOKEN, Ordering::Relaxed);
            return true;
        }
        self.overflows.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whole retries the budget would allow now.
    pub fn available(&self) -> u64 {
        self.roll(Instant::now());
        u64::try_from(self.balance() / TOKEN).unwrap_or(0)
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

    fn balance(&self) -> i64 {
        self.reserve
            + self
                .slices
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .sum::<i64>()
    }

    /// Clears the slices that fell out of the window by `now`; returns `now`'s slice number.
    fn roll(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.origin);
        let slice = elapsed.as_secs() / SLICE.as_secs();
        if self.current.load(Ordering::Acquire) >= slice {
            return slice as usize;
        }
        let _rolling = self.rolling.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load(Ordering::Acquire);
        if current < slice {
            // Slices current+1..=slice are new: whatever their cells hold is SLICES or more
            // seconds old. After a long quiet spell, clearing every cell once is enough.
            let stale = (slice - current).min(SLICES as u64);
            for n in 0..stale {
                self.slices[((slice - n) as usize) % SLICES].store(0, Ordering::Relaxed);
            }
            self.current.store(slice, Ordering::Release);
        }
        slice as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(budget: &RetryBudget, n: usize) {
        for _ in 0..n {
            budget.deposit(Instant::now());
        }
    }

    fn retries(budget: &RetryBudget, n: usize) -> usize {
        (0..n).filter(|_| budget.withdraw()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_ratio_of_the_window_s_requests() {
        let budget = RetryBudget::new(0.2, 0);
        requests(&budget, 10);
        assert_eq!(budget.available(), 2);
        assert_eq!(retries(&budget, 5), 2);
        assert_eq!(budget.overflows(), 3);
        requests(&budget, 5);
        assert_eq!(retries(&budget, 5), 1, "five more requests earn one retry");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_failures_cannot_retry_more_than_the_ratio() {
        // The chaos run's shape: every request fails at once and asks for two retries. Nothing
        // is ever in flight, so a budget of what is in flight would allow them all.
        let budget = RetryBudget::new(0.2, 0);
        let mut calls = 0;
        for _ in 0..1_000 {
            budget.deposit(Instant::now());
            calls += 1 + retries(&budget, 2);
            tokio::time::advance(Duration::from_millis(3)).await;
        }
        assert!(calls <= 1_200, "{calls} upstream calls for 1000 requests");
        assert!(calls >= 1_190, "the ratio is used, not wasted: {calls}");
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_second_is_a_reserve_over_the_window() {
        let budget = RetryBudget::new(0.2, 3);
        assert_eq!(retries(&budget, 100), 30, "3 per second over a 10 s window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            retries(&budget, 100),
            0,
            "still spent: withdrawals last the window"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            retries(&budget, 100),
            30,
            "the first withdrawals left the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window() {
        let budget = RetryBudget::new(0.5, 0);
        requests(&budget, 10);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(budget.available(), 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(budget.available(), 0);
        // After a long quiet spell every slice is cleared once, not one per missed second.
        requests(&budget, 2);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(budget.available(), 0);
        requests(&budget, 2);
        assert_eq!(budget.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ratio_allows_only_the_floor() {
        let budget = RetryBudget::new(0.0, 1);
        requests(&budget, 1_000);
        assert_eq!(budget.available(), 10);
        let nan = RetryBudget::new(f64::NAN, 0);
        requests(&nan, 1_000);
        assert_eq!(nan.available(), 0);
    }
}
