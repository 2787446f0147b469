//! Endpoint sets: the members of a cluster grouped by priority, with each algorithm's tables.
//!
//! An [`EndpointSet`] is immutable and rebuilt whenever the member list changes (reload, DNS
//! refresh); the [`Endpoint`] `Arc`s inside it are reused so their load state carries over.
//! [`EndpointSet::pick`] first chooses a priority level, then runs the algorithm on that level.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::maglev;
use crate::p2c;
use crate::random::WeightedChoice;
use crate::ring_hash::Ring;
use crate::round_robin::Schedule;

/// Load-balancing algorithm of an endpoint set. See the crate docs for how each one picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round-robin (nginx).
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two weighted random choices, fewer in-flight requests per weight wins. Default.
    #[default]
    LeastRequest,
    /// Power of two weighted random choices, lower `peak-EWMA latency * (in-flight + 1)` wins.
    PeakEwma,
    /// Ketama-style consistent-hash ring (at least 1024 points).
    RingHash,
    /// Maglev consistent-hash table (65537 slots).
    Maglev,
}

/// One endpoint of a set with its share of traffic and its priority level.
#[derive(Clone, Debug)]
pub struct Member {
    /// Shared load state; reuse the previous snapshot's `Arc` for an unchanged address.
    pub endpoint: Arc<Endpoint>,
    /// Relative share of traffic within its priority level; 0 is treated as 1.
    pub weight: u32,
    /// Priority level: 0 is used first, higher levels only when no lower one is usable.
    pub priority: u32,
}

/// Per-request inputs to [`EndpointSet::pick`]. The default has no hash and excludes nothing.
#[derive(Debug, Default)]
pub struct PickContext<'a> {
    /// Consistent-hashing key from [`hash_key`](crate::hash_key), for ring-hash and Maglev;
    /// `None` makes those algorithms pick weighted-randomly. Ignored by the others.
    pub hash: Option<u64>,
    /// Endpoints to avoid (those a retry already tried), unless no other usable endpoint is
    /// left in the chosen priority level.
    pub exclude: &'a [SocketAddr],
}

/// Immutable set of members + the algorithm's precomputed structures (schedule, ring, table).
/// Rebuilt whenever the member list changes (reload, DNS refresh); Endpoint Arcs are reused.
#[derive(Debug)]
pub struct EndpointSet {
    algorithm: Algorithm,
    members: Vec<Member>,
    /// Ascending by priority; each non-empty.
    levels: Vec<Level>,
}

/// The members of one priority, in member order, and the algorithm's table for them.
#[derive(Debug)]
struct Level {
    endpoints: Vec<Arc<Endpoint>>,
    choice: WeightedChoice,
    table: Table,
}

#[derive(Debug)]
enum Table {
    None,
    RoundRobin(Schedule),
    RingHash(Ring),
    Maglev(maglev::Table),
}

/// Which endpoints of a level a pick may return.
#[derive(Clone, Copy)]
struct Filter<'a> {
    exclude: &'a [SocketAddr],
}

// === impl EndpointSet ===

impl EndpointSet {
    /// Groups `members` by priority and builds `algorithm`'s tables for each level.
    ///
    /// Maglev costs a 65537-slot table per level (256 KiB) and ring-hash at least 1024 points,
    /// so build sets when membership changes, not per request.
    pub fn new(members: Vec<Member>, algorithm: Algorithm) -> EndpointSet {
        let mut priorities: Vec<u32> = members.iter().map(|m| m.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let levels = priorities
            .into_iter()
            .map(|priority| {
                let (endpoints, weights): (Vec<_>, Vec<_>) = members
                    .iter()
                    .filter(|m| m.priority == priority)
                    .map(|m| (Arc::clone(&m.endpoint), m.weight.max(1)))
                    .unzip();
                Level::new(endpoints, &weights, algorithm)
            })
            .collect();
        EndpointSet {
            algorithm,
            members,
            levels,
        }
    }

    /// The algorithm the set was built for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The members, in the order given to [`EndpointSet::new`].
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether the set has no members (every pick returns `None`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Chooses an endpoint for one request, or `None` if no endpoint at any level is usable.
    ///
    /// Does not allocate or lock; call [`Endpoint::start`] on the result to count the request.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<&Arc<Endpoint>> {
        let level = self.select_level()?;
        let filter = level.filter(ctx.exclude);
        let accept = |pos: usize| filter.accepts(&level.endpoints[pos]);
        let pos = match &level.table {
            Table::RoundRobin(schedule) => schedule.pick(accept),
            Table::RingHash(ring) => match ctx.hash {
                Some(hash) => ring.pick(hash, accept),
                None => level.choice.pick(accept, None),
            },
            Table::Maglev(table) => match ctx.hash {
                Some(hash) => table.pick(hash, accept),
                None => level.choice.pick(accept, None),
            },
            Table::None => match self.algorithm {
                Algorithm::PeakEwma => p2c::peak_ewma(&level.endpoints, &level.choice, accept),
                Algorithm::Random => level.choice.pick(accept, None),
                _ => p2c::least_request(&level.endpoints, &level.choice, accept),
            },
        }?;
        level.endpoints.get(pos)
    }

    /// The level that takes traffic: the lowest priority with a usable endpoint.
    ///
    /// This is where a level-selection policy (Envoy's overprovisioning factor and panic
    /// threshold) would go: it would compare each level's usable share instead of stopping at
    /// the first usable endpoint.
    fn select_level(&self) -> Option<&Level> {
        self.levels
            .iter()
            .find(|level| level.endpoints.iter().any(|ep| ep.is_usable()))
    }
}

// === impl Level ===

impl Level {
    fn new(endpoints: Vec<Arc<Endpoint>>, weights: &[u32], algorithm: Algorithm) -> Level {
        let addresses: Vec<SocketAddr> = endpoints.iter().map(|ep| ep.address()).collect();
        let table = match algorithm {
            Algorithm::RoundRobin => Table::RoundRobin(Schedule::new(weights)),
            Algorithm::RingHash => Table::RingHash(Ring::new(&addresses, weights)),
            Algorithm::Maglev => Table::Maglev(maglev::Table::new(&addresses, weights)),
            Algorithm::Random | Algorithm::LeastRequest | Algorithm::PeakEwma => Table::None,
        };
        Level {
            endpoints,
            choice: WeightedChoice::new(weights),
            table,
        }
    }

    /// Honours `exclude` only if some usable endpoint of the level is not excluded.
    fn filter<'a>(&self, exclude: &'a [SocketAddr]) -> Filter<'a> {
        let strict = Filter { exclude };
        if !exclude.is_empty() && self.endpoints.iter().any(|ep| strict.accepts(ep)) {
            strict
        } else {
            Filter { exclude: &[] }
        }
    }
}

// === impl Filter ===

impl Filter<'_> {
    fn accepts(&self, ep: &Endpoint) -> bool {
        ep.is_usable() && !self.exclude.contains(&ep.address())
    }
}
