//! Power of two choices: draw two distinct endpoints by weight, keep the less loaded one.
//!
//! Comparing two random candidates instead of scanning for the global minimum keeps the pick
//! O(1), avoids every gateway thread (and every gateway instance) stampeding onto the same "least
//! loaded" endpoint, and is provably almost as good (Mitzenmacher, "The Power of Two Choices").
//! Load is divided by weight so a weight-2 endpoint is expected to carry twice the requests.

use std::sync::Arc;

use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::random::WeightedChoice;

/// Peak-EWMA cost of an endpoint that has never answered while it has requests outstanding:
/// about 39 hours in nanoseconds (Finagle's `Penalty`), so a burst does not pile onto an
/// endpoint of unknown speed before its first response is measured.
const UNMEASURED_BUSY_NANOS: f64 = (i64::MAX >> 16) as f64;

/// The two candidates, or the single acceptable one.
fn candidates(
    choice: &WeightedChoice,
    accept: &impl Fn(usize) -> bool,
) -> Option<(usize, Option<usize>)> {
    let a = choice.pick(accept, None)?;
    Some((a, choice.pick(accept, Some(a))))
}

/// Least-request: of two weighted draws, the one with fewer in-flight requests per weight; the
/// first draw on a tie, which keeps idle traffic proportional to weight.
pub(crate) fn least_request(
    endpoints: &[Arc<Endpoint>],
    choice: &WeightedChoice,
    accept: impl Fn(usize) -> bool,
) -> Option<usize> {
    let (a, b) = candidates(choice, &accept)?;
    let Some(b) = b else { return Some(a) };
    let load = |p: usize| u128::from(endpoints[p].in_flight());
    let weight = |p: usize| u128::from(choice.weight(p));
    // in_flight(b) / w(b) < in_flight(a) / w(a), without division.
    if load(b) * weight(a) < load(a) * weight(b) {
        Some(b)
    } else {
        Some(a)
    }
}

/// Peak-EWMA: of two weighted draws, the one with the lower
/// `ewma_latency * (in_flight + 1) / weight`.
///
/// An endpoint without latency samples costs zero while idle, so it is tried at once, and
/// [`UNMEASURED_BUSY_NANOS`] while its first requests are outstanding.
pub(crate) fn peak_ewma(
    endpoints: &[Arc<Endpoint>],
    choice: &WeightedChoice,
    accept: impl Fn(usize) -> bool,
) -> Option<usize> {
    let (a, b) = candidates(choice, &accept)?;
    let Some(b) = b else { return Some(a) };
    let now = Instant::now();
    let cost = |p: usize| {
        let ep = &endpoints[p];
        let in_flight = ep.in_flight();
        let latency = match ep.ewma_nanos_at(now) {
            Some(nanos) => nanos,
            None if in_flight == 0 => 0.0,
            None => UNMEASURED_BUSY_NANOS,
        };
        latency * (in_flight as f64 + 1.0) / f64::from(choice.weight(p))
    };
    if cost(b) < cost(a) { Some(b) } else { Some(a) }
}
