//! Exponential backoff with full jitter, for the wait before a retry.
//!
//! Retry number `n` (1 for the first retry) waits a random time in `[0, min(max, base * 2^(n-1))]`.
//! This is AWS's "full jitter": spreading the whole interval, not only a fraction of it, is what
//! stops many clients that failed together from retrying together. [`jitter`] is the milder
//! `±fraction` spread used for periodic timers such as health-check intervals.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff parameters of a route's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait. Config default 25ms.
    pub base: Duration,
    /// Largest ceiling, whatever the retry number. Config default 250ms.
    pub max: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// The upper bound of the wait before retry `retry_number`: `min(max, base * 2^(n-1))`.
    ///
    /// Retry numbers start at 1; 0 is treated as 1. Never overflows: a product too large for a
    /// `Duration` is `max`.
    pub fn ceiling(&self, retry_number: u32) -> Duration {
        let doublings = retry_number.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(0);
        if factor == 0 {
            return self.max;
        }
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// A random wait in `[0, ceiling(retry_number)]` (full jitter).
    pub fn delay<R: Rng + ?Sized>(&self, retry_number: u32, rng: &mut R) -> Duration {
        uniform_up_to(self.ceiling(retry_number), rng)
    }
}

/// `d` spread uniformly over `[d * (1 - fraction), d * (1 + fraction)]`.
///
/// `fraction` is clamped to `0..=1`, so the result is never negative; `jitter(5s, 0.1, ..)` is a
/// time between 4.5s and 5.5s.
pub fn jitter<R: Rng + ?Sized>(d: Duration, fraction: f64, rng: &mut R) -> Duration {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let spread = d.mul_f64(fraction);
    let low = d.saturating_sub(spread);
    low.saturating_add(uniform_up_to(spread.saturating_mul(2), rng))
}

/// A uniform random duration in `[0, upper]`, at nanosecond resolution.
fn uniform_up_to<R: Rng + ?Sized>(upper: Duration, rng: &mut R) -> Duration {
    let nanos = u64::try_from(upper.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            base: 25 * MS,
            max: 250 * MS,
        }
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_max() {
        let b = backoff();
        assert_eq!(b.ceiling(0), 25 * MS);
        assert_eq!(b.ceiling(1), 25 * MS);
        assert_eq!(b.ceiling(2), 50 * MS);
        assert_eq!(b.ceiling(3), 100 * MS);
        assert_eq!(b.ceiling(4), 200 * MS);
        assert_eq!(b.ceiling(5), 250 * MS);
    }

    #[test]
    fn ceiling_does_not_overflow_for_huge_retry_numbers() {
        let b = Backoff {
            base: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
        };
        assert_eq!(b.ceiling(3), Duration::from_secs(u64::MAX / 4 * 4));
        assert_eq!(b.ceiling(4), Duration::MAX);
        assert_eq!(backoff().ceiling(32), 250 * MS);
        assert_eq!(backoff().ceiling(33), 250 * MS);
        assert_eq!(backoff().ceiling(u32::MAX), 250 * MS);
    }

    #[test]
    fn delay_stays_within_zero_and_ceiling_and_spreads() {
        let mut rng = SmallRng::seed_from_u64(7);
        let b = backoff();
        for n in 1..8 {
            let ceiling = b.ceiling(n);
            let delays: Vec<_> = (0..500).map(|_| b.delay(n, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter: both halves of the interval are used.
            assert!(delays.iter().any(|d| *d < ceiling / 4));
            assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
        }
    }

    #[test]
    fn zero_base_gives_zero_delay() {
        let mut rng = SmallRng::seed_from_u64(1);
        let b = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(b.delay(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_around_the_duration() {
        let mut rng = SmallRng::seed_from_u64(3);
        let d = Duration::from_secs(5);
        let samples: Vec<_> = (0..500).map(|_| jitter(d, 0.1, &mut rng)).collect();
        let low = Duration::from_millis(4500);
        let high = Duration::from_millis(5500);
        assert!(samples.iter().all(|s| (low..=high).contains(s)));
        assert!(samples.iter().any(|s| *s < Duration::from_millis(4800)));
        assert!(samples.iter().any(|s| *s > Duration::from_millis(5200)));
        assert_eq!(jitter(d, 0.0, &mut rng), d);
        assert!(jitter(d, 7.0, &mut rng) <= d * 2);
    }
}
