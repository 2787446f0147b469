//! Google's Maglev consistent-hash lookup table.
//!
//! Every endpoint walks its own pseudo-random permutation of the table's slots and claims the
//! next free one, in turns, until the table is full (Eisenbud et al., NSDI 2016). Lookups are a
//! single index, `table[hash % M]`, and the table is far more even than a ring of the same
//! memory, at the price of slightly more than minimal disruption when members change. Weighted
//! turns follow Envoy: an endpoint of weight `w` takes a turn in `w / max_weight` of the rounds.

use std::net::SocketAddr;

use crate::hash::hash_key;

/// Table size: a prime, so every `skip` in `1..M` generates a full permutation; ~100 slots per
/// endpoint for hundreds of endpoints, as the paper recommends.
pub(crate) const TABLE_SIZE: u64 = 65537;

/// The filled lookup table of one level: a level position per slot.
pub(crate) struct Table {
    slots: Vec<u32>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Table {
    /// Builds the table for a level's members (`weights` at least 1 each, at least one member).
    pub(crate) fn new(addresses: &[SocketAddr], weights: &[u32]) -> Table {
        const EMPTY: u32 = u32::MAX;
        let m = TABLE_SIZE;
        if addresses.is_empty() {
            return Table { slots: Vec::new() };
        }
        let mut slots = vec![EMPTY; m as usize];
        let perms: Vec<(u64, u64)> = addresses
            .iter()
            .map(|addr| {
                let name = addr.to_string();
                let offset = hash_key(name.as_bytes()) % m;
                let skip = hash_key(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1);
        let mut next = vec![0u64; addresses.len()];
        let mut target = vec![0u64; addresses.len()];
        let mut filled = 0u64;
        let mut round = 1u64;
        while filled < m {
            for pos in 0..addresses.len() {
                if filled == m {
                    break;
                }
                if round * weights[pos] < target[pos] {
                    continue;
                }
                target[pos] += max_weight;
                let (offset, skip) = perms[pos];
                loop {
                    let slot = ((offset + skip * next[pos]) % m) as usize;
                    next[pos] += 1;
                    if slots[slot] == EMPTY {
                        slots[slot] = u32::try_from(pos).unwrap_or(EMPTY);
                        filled += 1;
                        break;
                    }
                }
            }
            round += 1;
        }
        Table { slots }
    }

    /// The owner of slot `hash % M`, or of the next slot that `accept`s.
    pub(crate) fn pick(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let start = (hash % len as u64) as usize;
        (0..len)
            .map(|i| self.slots[(start + i) % len] as usize)
            .find(|&pos| accept(pos))
    }
}
