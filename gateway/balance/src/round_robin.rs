//! Smooth weighted round-robin (nginx's algorithm), precomputed into one cycle.
//!
//! nginx keeps a `current` score per peer, adds each peer's weight every step, picks the highest
//! and subtracts the total from it. That spreads a heavy peer's turns through the cycle (weights
//! 5,1,1 give `a a b a c a a`, not `a a a a a b c`). The sequence only depends on the weights, so
//! it is computed once per snapshot and the hot path is one `fetch_add` and an index.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest cycle kept; larger weight sums are scaled down to fit (config caps weights at 128).
const MAX_CYCLE: u64 = 1 << 16;

/// One cycle of the smooth weighted round-robin sequence of a level.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Level positions in the order they are served.
    cycle: Vec<u32>,
    next: AtomicUsize,
}

impl Schedule {
    /// Builds the cycle for `weights` (per level position, at least 1 each).
    pub(crate) fn new(weights: &[u32]) -> Schedule {
        let weights = reduce(weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            cycle.push(u32::try_from(best).unwrap_or(u32::MAX));
        }
        Schedule {
            cycle,
            next: AtomicUsize::new(0),
        }
    }

    /// The next position in the cycle that `accept`s, skipping the others.
    pub(crate) fn pick(&self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        (0..len)
            .map(|i| self.cycle[(start + i) % len] as usize)
            .find(|&pos| accept(pos))
    }
}

/// Divides the weights by their gcd and, if the cycle would still be too long, scales them
/// down proportionally (never below 1).
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let mut out: Vec<u32> = weights.iter().map(|&w| (w / g).max(1)).collect();
    let total: u64 = out.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_CYCLE {
        for w in &mut out {
            let scaled = u64::from(*w) * MAX_CYCLE / total;
            *w = u32::try_from(scaled).unwrap_or(u32::MAX).max(1);
        }
    }
    out
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let s = Schedule::new(weights);
        (0..n).map(|_| s.pick(|_| true).unwrap()).collect()
    }

    #[test]
    fn weights_5_1_1_give_nginx_sequence() {
        assert_eq!(
            sequence(&[5, 1, 1], 14),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(sequence(&[3, 3, 3], 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn huge_weights_keep_a_bounded_cycle_and_their_ratio() {
        let s = Schedule::new(&[u32::MAX, u32::MAX / 3]);
        assert!(s.cycle.len() as u64 <= MAX_CYCLE + 2);
        let zeros = s.cycle.iter().filter(|&&p| p == 0).count() as f64;
        let ratio = zeros / s.cycle.len() as f64;
        assert!((ratio - 0.75).abs() < 0.001, "ratio {ratio}");
    }
}
