//! Endpoint sets, per-endpoint load state and Levee's load-balancing algorithms.
//!
//! The proxy builds an [`EndpointSet`] per cluster from [`Member`]s, asks it to
//! [`pick`](EndpointSet::pick) an [`Endpoint`] for each request, and holds the [`InFlight`] guard
//! from [`Endpoint::start`] until the response is done. This crate knows nothing of files, YAML,
//! hyper or wasmtime; it uses tokio only for `tokio::time::Instant`, so timing logic is tested
//! on a paused clock.
//!
//! # Priority levels and panic
//!
//! Members carry a priority. Traffic is shared between levels as Envoy does it, with an
//! overprovisioning factor of 1.4 ([`OVERPROVISIONING_FACTOR`]):
//!
//! - a level's health is `min(1, 1.4 * usable / endpoints)`: a level with 5 endpoints of which 4
//!   are usable still counts as fully healthy (4/5 * 1.4 > 1);
//! - level 0 takes `min(1, health_0)` of the picks, level 1 `min(remaining, health_1)`, and so on:
//!   with 2 of 4 primaries usable, 70% stays on priority 0 and 30% spills to priority 1;
//! - when the levels together cannot carry everything (sum of healths below 1) the shares are
//!   scaled up to sum to 1, so every pick still goes somewhere usable;
//! - a level is chosen with one random draw (skipped when one level takes everything), then the
//!   algorithm runs among that level's usable endpoints. As soon as level 0 is usable again,
//!   its share comes back on the next pick.
//!
//! **Panic** ([`PriorityPolicy`]): when the levels together cannot carry the traffic and every
//! level has fewer than `panic_threshold` (default 50%) of its endpoints usable, health is no
//! longer trusted. [`PanicMode::Spread`] (the default, Envoy's) picks among *all* endpoints,
//! usable or not, sharing levels by endpoint count; [`PanicMode::FailFast`] returns `None`. A set
//! whose only usable standby level can carry everything is not in panic, however many primaries
//! are down. With one level, panic starts below `panic_threshold` usable, as in Envoy.
//! [`EndpointSet::load_state`] shows the shares and the flag for `/clusters`.
//!
//! [`PickContext::exclude`] steers a retry away from endpoints already tried, unless they are
//! the only acceptable ones left in the chosen level.
//!
//! # Algorithms
//!
//! - **round-robin**: smooth weighted round-robin, nginx's algorithm: weights 5,1,1 serve
//!   `a a b a c a a`, spreading the heavy endpoint's turns through the cycle. One cycle is
//!   precomputed; a pick is an atomic increment and an index, skipping unusable entries.
//! - **random**: weighted random draw from a cumulative table with a per-thread `SmallRng`.
//! - **least-request** (the default): power of two choices. Two distinct endpoints are drawn by
//!   weight and the one with fewer in-flight requests per unit of weight wins (ties go to the
//!   first draw, so idle traffic follows the weights; with equal weights this is Envoy's P2C).
//! - **peak-ewma**: the same two draws, compared on `ewma_latency * (in_flight + 1) / weight`.
//!   The latency is a peak-EWMA (Finagle, linkerd): a sample above the estimate replaces it at
//!   once; a lower one blends in with weight `1 - exp(-Δt / 10s)` ([`EWMA_DECAY`]); between
//!   samples the estimate decays towards zero with the same time constant, so a once-slow
//!   endpoint is retried. An endpoint with no samples costs zero while idle, so it is tried
//!   first, and a large penalty while its first requests are outstanding.
//! - **ring-hash**: Ketama-style ring of at least 1024 points, points per endpoint in proportion
//!   to weight; a pick is a binary search for the first point at or after the request hash.
//! - **maglev**: Google Maglev lookup table of 65537 slots filled by weighted turns; a pick is
//!   `table[hash % 65537]`. More even than the ring for the same memory; slightly more
//!   disruption when members change.
//!
//! The hash algorithms take [`PickContext::hash`] (from [`hash_key`]); without one they pick
//! weighted-randomly. When the slot or point found belongs to an unusable or excluded endpoint,
//! they walk on to the next entry, so only that endpoint's keys move.
//!
//! # Why least-request is the default
//!
//! Round-robin and random ignore load: a slow or stuck endpoint keeps receiving its full share
//! and requests queue behind it. Least-request reacts to in-flight counts, which rise at once on
//! a slow endpoint, with no tuning and no latency bookkeeping. Comparing only two random
//! candidates keeps the pick O(1) and avoids the herd that a strict "global minimum" causes
//! when many threads or many gateways read the same counts. Peak-EWMA reacts faster to latency
//! but needs samples and a time constant; hashing is for affinity, not load.
//!
//! # Hot path
//!
//! `pick` does not allocate or lock: counts, usability and the latency estimate are atomics
//! read with `Relaxed`/`Acquire` loads, and every table is built once per set. The per-level
//! usable counts that the level choice needs are cached per set and refreshed only after some
//! endpoint's usability changed (a process-wide epoch counter), so a pick does not scan every
//! endpoint of a large cluster.

mod endpoint;
mod hash;
mod maglev;
mod p2c;
mod random;
mod ring_hash;
mod rng;
mod round_robin;
mod set;

pub use endpoint::{EWMA_DECAY, Endpoint, InFlight};
pub use hash::hash_key;
pub use set::{
    Algorithm, EndpointSet, LevelLoad, LoadState, Member, OVERPROVISIONING_FACTOR, PanicMode,
    PickContext, PriorityPolicy,
};

#[cfg(test)]
mod tests;
