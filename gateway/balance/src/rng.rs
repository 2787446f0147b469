//! A cheap per-thread random source for the random, least-request and peak-EWMA pickers.
//!
//! Picks must not lock or allocate, so each thread owns a `SmallRng` seeded once from the OS
//! generator; load balancing needs speed and spread, not unpredictability.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A uniform number in `0..n`; `n` must be non-zero.
pub(crate) fn below(n: u64) -> u64 {
    RNG.with(|rng| rng.borrow_mut().random_range(0..n))
}
