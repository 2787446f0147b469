//! Local token-bucket rate limit of a route, optionally one bucket per key.
//!
//! A bucket holds up to `burst` tokens and gains `rate_per_sec` tokens a second; each request
//! takes one. Refill is lazy: a bucket stores its token count and the instant it was last
//! refilled, and tops up when next asked, so idle buckets cost nothing. A refused request learns
//! how long until a token is back, for the `retry-after` header.
//!
//! Keyed limits (by client IP or a header value) keep one bucket per key in an LRU map of at
//! most `max_keys` buckets. Dropping the least recently used bucket is safe: a new bucket starts
//! full, so the worst an evicted key gains is one fresh burst. Keys come from clients, so the map
//! hashes with the standard library's randomly keyed SipHash to resist hash flooding.

use std::collections::hash_map::RandomState;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hashlink::LruCache;
use tokio::time::Instant;

/// Rate and burst of a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitParams {
    /// Tokens added per second (> 0).
    pub rate_per_sec: f64,
    /// Bucket size: requests allowed at once after idling. Config default: `rate_per_sec`
    /// rounded up, at least 1.
    pub burst: u32,
}

/// A refused take: the time until a token is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; a token is back in {0:?}")]
pub struct RetryAfter(pub Duration);

/// One token bucket with lazy refill. Not shared by itself: [`RateLimiter`] keeps it under a lock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    params: RateLimitParams,
    tokens: f64,
    refilled_at: Instant,
}

/// A route's rate limiter: one shared bucket, plus one bucket per key for keyed limits.
#[derive(Debug)]
pub struct RateLimiter {
    params: RateLimitParams,
    shared: Mutex<TokenBucket>,
    keyed: Mutex<LruCache<Box<[u8]>, TokenBucket, RandomState>>,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket.
    pub fn new(params: RateLimitParams) -> Self {
        Self::new_at(params, Instant::now())
    }

    /// A full bucket, refilled as of `now`.
    pub fn new_at(params: RateLimitParams, now: Instant) -> Self {
        let params = RateLimitParams {
            rate_per_sec: if params.rate_per_sec.is_finite() {
                params.rate_per_sec.max(0.0)
            } else {
                0.0
            },
            burst: params.burst.max(1),
        };
        TokenBucket {
            params,
            tokens: f64::from(params.burst),
            refilled_at: now,
        }
    }

    /// Takes a token now.
    pub fn try_take(&mut self) -> Result<(), RetryAfter> {
        self.try_take_at(Instant::now())
    }

    /// Takes a token at `now`, or says how long until one is back.
    ///
    /// With a rate of zero a refused take waits "forever" (`Duration::MAX`).
    pub fn try_take_at(&mut self, now: Instant) -> Result<(), RetryAfter> {
        let burst = f64::from(self.params.burst);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.params.rate_per_sec).min(burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = if self.params.rate_per_sec > 0.0 {
            Duration::try_from_secs_f64((1.0 - self.tokens) / self.params.rate_per_sec)
                .unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        };
        Err(RetryAfter(wait))
    }

    /// Tokens in the bucket as of its last take (without refill since).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// The bucket's parameters (burst at least 1, rate not negative).
    pub fn params(&self) -> RateLimitParams {
        self.params
    }
}

// === impl RateLimiter ===

impl RateLimiter {
    /// A limiter whose shared bucket and every keyed bucket follow `params`; at most `max_keys`
    /// keyed buckets are kept (at least 1).
    pub fn new(params: RateLimitParams, max_keys: u32) -> Self {
        let capacity = usize::try_from(max_keys.max(1)).unwrap_or(usize::MAX);
        RateLimiter {
            params,
            shared: Mutex::new(TokenBucket::new(params)),
            keyed: Mutex::new(LruCache::with_hasher(capacity, RandomState::new())),
        }
    }

    /// Takes a token for a request: from the key's own bucket, or from the shared bucket when
    /// there is no key (an unkeyed route, or a request without the key header).
    ///
    /// `Err` holds the time until a token is back.
    pub fn check(&self, key: Option<&[u8]>) -> Result<(), Duration> {
        let now = Instant::now();
        let Some(key) = key else {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            return shared.try_take_at(now).map_err(|RetryAfter(d)| d);
        };
        let mut keyed = self.keyed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = keyed.get_mut(key) {
            return bucket.try_take_at(now).map_err(|RetryAfter(d)| d);
        }
        let mut bucket = TokenBucket::new_at(self.params, now);
        let taken = bucket.try_take_at(now).map_err(|RetryAfter(d)| d);
        // `insert` drops the least recently used bucket when the map is full.
        keyed.insert(key.into(), bucket);
        taken
    }

    /// Keyed buckets held now.
    pub fn keys(&self) -> usize {
        self.keyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The limiter's parameters.
    pub fn params(&self) -> RateLimitParams {
        self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn params(rate: f64, burst: u32) -> RateLimitParams {
        RateLimitParams {
            rate_per_sec: rate,
            burst,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_refuses_with_retry_after() {
        let mut b = TokenBucket::new(params(10.0, 3));
        for _ in 0..3 {
            assert!(b.try_take().is_ok());
        }
        let RetryAfter(wait) = b.try_take().expect_err("burst spent");
        assert_eq!(wait, 100 * MS);

        tokio::time::advance(40 * MS).await;
        let RetryAfter(wait) = b.try_take().expect_err("only 0.4 token back");
        assert!(wait.abs_diff(60 * MS) < MS, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_at_rate_up_to_burst() {
        let mut b = TokenBucket::new(params(10.0, 3));
        for _ in 0..3 {
            assert!(b.try_take().is_ok());
        }
        tokio::time::advance(100 * MS).await;
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_err());

        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert!(b.try_take().is_ok());
        }
        assert!(b.try_take().is_err(), "refill stops at burst");
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rate_and_zero_rate() {
        let mut slow = TokenBucket::new(params(0.5, 1));
        assert!(slow.try_take().is_ok());
        assert_eq!(slow.try_take(), Err(RetryAfter(Duration::from_secs(2))));

        let mut never = TokenBucket::new(params(0.0, 0));
        assert_eq!(never.params().burst, 1);
        assert!(never.try_take().is_ok());
        assert_eq!(never.try_take(), Err(RetryAfter(Duration::MAX)));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_without_key_uses_one_shared_bucket() {
        let limiter = RateLimiter::new(params(1.0, 2), 10);
        assert!(limiter.check(None).is_ok());
        assert!(limiter.check(None).is_ok());
        assert_eq!(limiter.check(None), Err(Duration::from_secs(1)));
        assert_eq!(limiter.keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_keeps_a_bucket_per_key() {
        let limiter = RateLimiter::new(params(1.0, 1), 10);
        assert!(limiter.check(Some(b"10.0.0.1")).is_ok());
        assert!(limiter.check(Some(b"10.0.0.1")).is_err());
        assert!(
            limiter.check(Some(b"10.0.0.2")).is_ok(),
            "another key has its own bucket"
        );
        assert!(
            limiter.check(None).is_ok(),
            "keyless requests share their own bucket"
        );
        assert_eq!(limiter.keys(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check(Some(b"10.0.0.1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_evicts_least_recently_used_key() {
        let limiter = RateLimiter::new(params(1.0, 1), 2);
        assert!(limiter.check(Some(b"a")).is_ok());
        assert!(limiter.check(Some(b"b")).is_ok());
        // Touch "a" so "b" is the least recently used.
        assert!(limiter.check(Some(b"a")).is_err());
        assert!(limiter.check(Some(b"c")).is_ok());
        assert_eq!(limiter.keys(), 2);
        assert!(
            limiter.check(Some(b"a")).is_err(),
            "a was kept, still empty"
        );
        assert!(
            limiter.check(Some(b"b")).is_ok(),
            "b was evicted and starts full again"
        );
    }
}
