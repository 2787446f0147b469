//! Weighted random choice among the acceptable endpoints of a priority level.
//!
//! Used directly by the `random` algorithm, twice by the two-choice pickers, and as the fallback
//! of the hash pickers when a request carries no hash.

use crate::rng;

/// Cumulative weights of one level, for O(log n) weighted draws.
#[derive(Debug)]
pub(crate) struct WeightedChoice {
    weights: Vec<u32>,
    cumulative: Vec<u64>,
}

impl WeightedChoice {
    /// `weights` are per level position and at least 1 each.
    pub(crate) fn new(weights: &[u32]) -> WeightedChoice {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                total += u64::from(w);
                total
            })
            .collect();
        WeightedChoice {
            weights: weights.to_vec(),
            cumulative,
        }
    }

    /// A position drawn with probability proportional to its weight among those `accept`s and
    /// not equal to `skip`; `None` if there is none.
    ///
    /// The fast path draws over every position and keeps the draw if it is acceptable; only when
    /// it is not does a second, exact draw over the acceptable positions run. The two together
    /// still give each acceptable position exactly `w / W_acceptable`.
    pub(crate) fn pick(
        &self,
        accept: impl Fn(usize) -> bool,
        skip: Option<usize>,
    ) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = rng::below(total);
        let pos = self.cumulative.partition_point(|&c| c <= r);
        if pos < self.weights.len() && Some(pos) != skip && accept(pos) {
            return Some(pos);
        }

        let eligible = |p: usize| Some(p) != skip && accept(p);
        let total: u64 = (0..self.weights.len())
            .filter(|&p| eligible(p))
            .map(|p| u64::from(self.weights[p]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = rng::below(total);
        for p in (0..self.weights.len()).filter(|&p| eligible(p)) {
            let w = u64::from(self.weights[p]);
            if r < w {
                return Some(p);
            }
            r -= w;
        }
        None
    }

    /// The weight of position `pos`.
    pub(crate) fn weight(&self, pos: usize) -> u32 {
        self.weights[pos]
    }
}
