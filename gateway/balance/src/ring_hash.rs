//! Ketama-style consistent-hash ring.
//!
//! Each endpoint owns points on a 64-bit ring, in proportion to its weight; a request's hash goes
//! to the first point at or after it. Removing an endpoint only frees its own arcs, so only the
//! keys it owned move. Points are hashes of `"{address}_{i}"`, so the ring depends on the member
//! addresses and weights alone, and every gateway instance builds the same one.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::hash::hash_key;

/// Fewest points on a ring (as in Envoy); small sets get more points per weight unit.
const MIN_RING: u64 = 1024;
/// Most points on a ring (4 MiB of entries); only absurd weight sums reach it.
const MAX_RING: u64 = 1 << 18;

/// A sorted ring of `(point, level position)`.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring for a level's members (`weights` at least 1 each).
    pub(crate) fn new(addresses: &[SocketAddr], weights: &[u32]) -> Ring {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        // Rounded up to a power of two so adding or removing one member rarely changes how many
        // points the others have; otherwise their new points would also steal keys from each
        // other and disruption would exceed the removed member's share.
        let per_weight = MIN_RING.div_ceil(total.max(1)).next_power_of_two();
        let counts: Vec<u64> = weights
            .iter()
            .map(|&w| {
                let w = u64::from(w);
                if total * per_weight <= MAX_RING {
                    w * per_weight
                } else {
                    (w * MAX_RING / total).max(1)
                }
            })
            .collect();
        let mut points =
            Vec::with_capacity(usize::try_from(counts.iter().sum::<u64>()).unwrap_or(0));
        let mut name = String::new();
        for (pos, (addr, &count)) in addresses.iter().zip(&counts).enumerate() {
            let pos = u32::try_from(pos).unwrap_or(u32::MAX);
            for i in 0..count {
                name.clear();
                let _ = write!(name, "{addr}_{i}");
                points.push((hash_key(name.as_bytes()), pos));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The owner of the first point at or after `hash` that `accept`s, walking clockwise.
    pub(crate) fn pick(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.points.partition_point(|&(point, _)| point < hash) % len;
        (0..len)
            .map(|i| self.points[(start + i) % len].1 as usize)
            .find(|&pos| accept(pos))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}
