//! Endpoint sets: the members of a cluster grouped by priority, with each algorithm's tables.
//!
//! An [`EndpointSet`] is immutable and rebuilt whenever the member list changes (reload, DNS
//! refresh); the [`Endpoint`] `Arc`s inside it are reused so their load state carries over.
//! [`EndpointSet::pick`] first chooses a priority level (see [`PriorityPolicy`] and the crate
//! docs), then runs the algorithm on that level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::endpoint::{self, Endpoint};
use crate::maglev;
use crate::p2c;
use crate::random::WeightedChoice;
use crate::ring_hash::Ring;
use crate::rng;
use crate::round_robin::Schedule;

/// Envoy's overprovisioning factor: a level whose usable share times 1.4 reaches 100% keeps all
/// of its traffic, so losing one endpoint in five does not yet spill anything to the standby.
pub const OVERPROVISIONING_FACTOR: f64 = 1.4;

/// Resolution of the level draw: loads are compared in millionths.
const DRAW_PARTS: u64 = 1_000_000;

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

/// What a set does in panic (too few usable endpoints, see [`PriorityPolicy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PanicMode {
    /// Spread over every endpoint, usable or not, ignoring health (Envoy). The default: some
    /// requests may still succeed, and a cascade (the last few endpoints taking everything and
    /// falling over too) is avoided.
    #[default]
    Spread,
    /// Pick nothing: every pick returns `None` until enough endpoints are usable again.
    FailFast,
}

/// How a set shares traffic between priority levels and when it panics.
///
/// The default is `panic_threshold: 0.5` and [`PanicMode::Spread`], as in Envoy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PriorityPolicy {
    /// Fraction (0..=1) of a level's endpoints that must be usable for it not to be in panic;
    /// the set panics when every level is in panic and the levels together cannot carry the
    /// traffic. Default `0.5`; `0` turns panic off.
    pub panic_threshold: f64,
    /// What a pick does in panic. Default [`PanicMode::Spread`].
    pub panic_mode: PanicMode,
}

/// One endpoint of a set with its share of traffic and its priority level.
#[derive(Clone, Debug)]
pub struct Member {
    /// Shared load state; reuse the previous snapshot's `Arc` for an unchanged address.
    pub endpoint: Arc<Endpoint>,
    /// Relative share of traffic within its priority level; 0 is treated as 1.
    pub weight: u32,
    /// Priority level: 0 is used first, higher levels take what lower ones cannot carry.
    pub priority: u32,
}

/// Per-request inputs to [`EndpointSet::pick`]. The default has no hash and excludes nothing.
#[derive(Debug, Default)]
pub struct PickContext<'a> {
    /// Consistent-hashing key from [`hash_key`](crate::hash_key), for ring-hash and Maglev;
    /// `None` makes those algorithms pick weighted-randomly. Ignored by the others.
    pub hash: Option<u64>,
    /// Endpoints to avoid (those a retry already tried), unless no other acceptable endpoint is
    /// left in the chosen priority level.
    pub exclude: &'a [SocketAddr],
}

/// How traffic is shared right now, for `/clusters` and metrics: see [`EndpointSet::load_state`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadState {
    /// Whether the set is in panic (see [`PriorityPolicy`]).
    pub panic: bool,
    /// The policy the set was built with, so the panic mode can be shown next to the flag.
    pub policy: PriorityPolicy,
    /// One entry per priority level, ascending.
    pub levels: Vec<LevelLoad>,
}

/// One priority level in a [`LoadState`].
#[derive(Clone, Debug, PartialEq)]
pub struct LevelLoad {
    /// The level's priority.
    pub priority: u32,
    /// Endpoints in the level.
    pub endpoints: usize,
    /// Usable endpoints in the level.
    pub usable: usize,
    /// Share of picks (0..=1) the level receives now; all zero when failing fast in panic.
    pub load: f64,
}

/// Immutable set of members + the algorithm's precomputed structures (schedule, ring, table).
/// Rebuilt whenever the member list changes (reload, DNS refresh); Endpoint Arcs are reused.
#[derive(Debug)]
pub struct EndpointSet {
    algorithm: Algorithm,
    policy: PriorityPolicy,
    members: Vec<Member>,
    /// Ascending by priority; each non-empty.
    levels: Vec<Level>,
    usable: UsableCache,
}

/// The members of one priority, in member order, and the algorithm's table for them.
#[derive(Debug)]
struct Level {
    priority: u32,
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
    /// Panic spread: usability is ignored.
    any_health: bool,
}

/// Per-level usable counts, valid while the process-wide usability epoch is `stamp`.
///
/// Refreshing scans every endpoint once; one thread refreshes while the others scan for
/// themselves, so a pick never waits. A pick racing a usability change may see counts from
/// just before or just after it, which is no worse than the change racing the pick itself.
#[derive(Debug)]
struct UsableCache {
    /// The epoch the counts were taken at; 0 while never filled or being rewritten.
    stamp: AtomicU64,
    writing: AtomicBool,
    /// [`Decided`] for the counts, encoded: a level index or one of the `DECIDED_*` values.
    decided: AtomicU32,
    counts: Box<[AtomicU32]>,
}

/// Encodes [`Decided::Draw`] in [`UsableCache::decided`].
const DECIDED_DRAW: u32 = u32::MAX;
/// Encodes [`Decided::Nothing`] in [`UsableCache::decided`].
const DECIDED_NOTHING: u32 = u32::MAX - 1;

/// The level choice as far as it is settled by the usable counts alone. Usually one level takes
/// everything, so the common pick skips the arithmetic and the draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decided {
    Level(usize),
    Nothing,
    Draw,
}

/// The level a pick goes to, and whether health is ignored there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Level(usize),
    Panic(usize),
}

/// The level-selection arithmetic over usable counts, shared by picks and [`LoadState`].
struct Plan<'a, F> {
    levels: &'a [Level],
    policy: PriorityPolicy,
    usable: F,
}

// === impl PriorityPolicy ===

impl Default for PriorityPolicy {
    fn default() -> Self {
        PriorityPolicy {
            panic_threshold: 0.5,
            panic_mode: PanicMode::Spread,
        }
    }
}

// === impl EndpointSet ===

impl EndpointSet {
    /// Groups `members` by priority and builds `algorithm`'s tables for each level, with the
    /// default [`PriorityPolicy`] (panic below 50% usable, spread).
    ///
    /// Maglev costs a 65537-slot table per level (256 KiB) and ring-hash at least 1024 points,
    /// so build sets when membership changes, not per request.
    pub fn new(members: Vec<Member>, algorithm: Algorithm) -> EndpointSet {
        EndpointSet::with_policy(members, algorithm, PriorityPolicy::default())
    }

    /// [`EndpointSet::new`] with an explicit priority and panic policy.
    pub fn with_policy(
        members: Vec<Member>,
        algorithm: Algorithm,
        policy: PriorityPolicy,
    ) -> EndpointSet {
        let mut priorities: Vec<u32> = members.iter().map(|m| m.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let levels: Vec<Level> = priorities
            .into_iter()
            .map(|priority| {
                let (endpoints, weights): (Vec<_>, Vec<_>) = members
                    .iter()
                    .filter(|m| m.priority == priority)
                    .map(|m| (Arc::clone(&m.endpoint), m.weight.max(1)))
                    .unzip();
                Level::new(priority, endpoints, &weights, algorithm)
            })
            .collect();
        let usable = UsableCache::new(levels.len());
        EndpointSet {
            algorithm,
            policy,
            members,
            levels,
            usable,
        }
    }

    /// The algorithm the set was built for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The priority and panic policy the set was built with.
    pub fn policy(&self) -> PriorityPolicy {
        self.policy
    }

    /// The members, in the order given to [`EndpointSet::new`].
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether the set has no members (every pick returns `None`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Chooses an endpoint for one request, or `None` if nothing may be picked: no usable
    /// endpoint and panic off, or panic with [`PanicMode::FailFast`].
    ///
    /// Does not allocate or lock; call [`Endpoint::start`] on the result to count the request.
    /// In [`PanicMode::Spread`] the result may be an unusable endpoint.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<&Arc<Endpoint>> {
        let fresh = self.usable.is_fresh() || self.usable.refresh(&self.levels, self.policy);
        let route = if !fresh {
            self.plan(|i| self.levels[i].scan_usable()).route()
        } else {
            match self.usable.decided() {
                Decided::Level(i) => Some(Route::Level(i)),
                Decided::Nothing => None,
                Decided::Draw => self.plan(|i| self.usable.get(i)).route(),
            }
        };
        match route? {
            Route::Level(i) => self.levels[i].pick(self.algorithm, ctx, false).or_else(|| {
                // The chosen level lost its last usable endpoint after the counts were read:
                // fall back to the first level that still has one.
                self.levels
                    .iter()
                    .find_map(|level| level.pick(self.algorithm, ctx, false))
            }),
            Route::Panic(i) => self.levels[i].pick(self.algorithm, ctx, true),
        }
    }

    /// Whether the set is in panic now (see [`PriorityPolicy`]); shown in `/clusters`.
    pub fn in_panic(&self) -> bool {
        self.plan(|i| self.levels[i].scan_usable()).panic()
    }

    /// Each level's endpoints, usable endpoints and current share of picks, and the panic flag.
    ///
    /// Scans every endpoint and allocates; meant for the admin API and metrics, not requests.
    pub fn load_state(&self) -> LoadState {
        let counts: Vec<usize> = self.levels.iter().map(Level::scan_usable).collect();
        let plan = self.plan(|i| counts[i]);
        let panic = plan.panic();
        let loads: Vec<f64> = if panic {
            match self.policy.panic_mode {
                PanicMode::Spread => plan.spread_loads().collect(),
                PanicMode::FailFast => vec![0.0; self.levels.len()],
            }
        } else {
            plan.loads().collect()
        };
        let levels = self
            .levels
            .iter()
            .zip(counts)
            .zip(loads)
            .map(|((level, usable), load)| LevelLoad {
                priority: level.priority,
                endpoints: level.endpoints.len(),
                usable,
                load,
            })
            .collect();
        LoadState {
            panic,
            policy: self.policy,
            levels,
        }
    }

    fn plan<F: Fn(usize) -> usize>(&self, usable: F) -> Plan<'_, F> {
        Plan {
            levels: &self.levels,
            policy: self.policy,
            usable,
        }
    }
}

// === impl Plan ===

impl<F: Fn(usize) -> usize> Plan<'_, F> {
    /// `min(1, 1.4 * usable / total)` of level `i`: how much of the traffic it can carry.
    fn health(&self, i: usize) -> f64 {
        let total = self.levels[i].endpoints.len() as f64;
        (OVERPROVISIONING_FACTOR * (self.usable)(i) as f64 / total).min(1.0)
    }

    /// The sum of level healths, capped at 1.
    fn total_health(&self) -> f64 {
        (0..self.levels.len())
            .map(|i| self.health(i))
            .sum::<f64>()
            .min(1.0)
    }

    /// Envoy's total panic: the levels together cannot carry all traffic, and every level has
    /// fewer than `panic_threshold` of its endpoints usable.
    fn panic(&self) -> bool {
        !self.levels.is_empty()
            && self.total_health() < 1.0
            && (0..self.levels.len()).all(|i| {
                let total = self.levels[i].endpoints.len() as f64;
                ((self.usable)(i) as f64 / total) < self.policy.panic_threshold
            })
    }

    /// Each level's share outside panic: `min(remaining, health / total_health)`, so level 0
    /// takes what it can carry and the rest spills down; when the levels together cannot carry
    /// everything, the shares are scaled up to sum to 1 (Envoy's normalisation).
    fn loads(&self) -> impl Iterator<Item = f64> + '_ {
        let total = self.total_health();
        let mut remaining = 1.0f64;
        (0..self.levels.len()).map(move |i| {
            if total <= 0.0 {
                return 0.0;
            }
            let load = (self.health(i) / total).min(remaining);
            remaining -= load;
            load
        })
    }

    /// Each level's share in panic spread: in proportion to its number of endpoints (Envoy).
    fn spread_loads(&self) -> impl Iterator<Item = f64> + '_ {
        let all: usize = self.levels.iter().map(|l| l.endpoints.len()).sum();
        self.levels
            .iter()
            .map(move |l| l.endpoints.len() as f64 / all as f64)
    }

    /// What every pick does while the counts stay as they are, when that needs no draw.
    fn decided(&self) -> Decided {
        if self.panic() {
            return match self.policy.panic_mode {
                PanicMode::FailFast => Decided::Nothing,
                PanicMode::Spread => Decided::Draw,
            };
        }
        let mut shares = self.loads().enumerate().filter(|&(_, share)| share > 0.0);
        match shares.next() {
            None => Decided::Nothing,
            Some((i, share)) if share >= 1.0 => Decided::Level(i),
            Some(_) => Decided::Draw,
        }
    }

    /// The level this pick goes to; draws a random number only when traffic is split.
    fn route(&self) -> Option<Route> {
        if self.panic() {
            return match self.policy.panic_mode {
                PanicMode::FailFast => None,
                PanicMode::Spread => Some(Route::Panic(Self::draw(self.spread_loads())?)),
            };
        }
        Self::draw(self.loads()).map(Route::Level)
    }

    /// The index whose share the draw falls in; no draw if the first level with a share takes
    /// everything. Rounding leftovers go to the last level with a share.
    fn draw(shares: impl Iterator<Item = f64>) -> Option<usize> {
        let mut r: Option<f64> = None;
        let mut last = None;
        for (i, share) in shares.enumerate() {
            if share <= 0.0 {
                continue;
            }
            if last.is_none() && share >= 1.0 {
                return Some(i);
            }
            last = Some(i);
            let left = r.get_or_insert_with(|| rng::below(DRAW_PARTS) as f64 / DRAW_PARTS as f64);
            if *left < share {
                return Some(i);
            }
            *left -= share;
        }
        last
    }
}

// === impl UsableCache ===

impl UsableCache {
    fn new(levels: usize) -> UsableCache {
        UsableCache {
            stamp: AtomicU64::new(0),
            writing: AtomicBool::new(false),
            decided: AtomicU32::new(DECIDED_DRAW),
            counts: (0..levels).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn is_fresh(&self) -> bool {
        self.stamp.load(Ordering::Acquire) == endpoint::usability_epoch()
    }

    fn get(&self, level: usize) -> usize {
        self.counts[level].load(Ordering::Relaxed) as usize
    }

    fn decided(&self) -> Decided {
        match self.decided.load(Ordering::Relaxed) {
            DECIDED_DRAW => Decided::Draw,
            DECIDED_NOTHING => Decided::Nothing,
            level => Decided::Level(level as usize),
        }
    }

    /// Rescans the levels if no other thread is doing so; `false` if one is.
    fn refresh(&self, levels: &[Level], policy: PriorityPolicy) -> bool {
        if self
            .writing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // Read the epoch before scanning: a change during the scan bumps it past `epoch`, so
        // the next pick rescans instead of trusting counts that may predate the change.
        let epoch = endpoint::usability_epoch();
        self.stamp.store(0, Ordering::Release);
        for (count, level) in self.counts.iter().zip(levels) {
            let usable = u32::try_from(level.scan_usable()).unwrap_or(u32::MAX);
            count.store(usable, Ordering::Relaxed);
        }
        let plan = Plan {
            levels,
            policy,
            usable: |i| self.get(i),
        };
        let decided = match plan.decided() {
            Decided::Draw => DECIDED_DRAW,
            Decided::Nothing => DECIDED_NOTHING,
            Decided::Level(i) => u32::try_from(i).unwrap_or(DECIDED_DRAW),
        };
        self.decided.store(decided, Ordering::Relaxed);
        self.stamp.store(epoch, Ordering::Release);
        self.writing.store(false, Ordering::Release);
        true
    }
}

// === impl Level ===

impl Level {
    fn new(
        priority: u32,
        endpoints: Vec<Arc<Endpoint>>,
        weights: &[u32],
        algorithm: Algorithm,
    ) -> Level {
        let addresses: Vec<SocketAddr> = endpoints.iter().map(|ep| ep.address()).collect();
        let table = match algorithm {
            Algorithm::RoundRobin => Table::RoundRobin(Schedule::new(weights)),
            Algorithm::RingHash => Table::RingHash(Ring::new(&addresses, weights)),
            Algorithm::Maglev => Table::Maglev(maglev::Table::new(&addresses, weights)),
            Algorithm::Random | Algorithm::LeastRequest | Algorithm::PeakEwma => Table::None,
        };
        Level {
            priority,
            endpoints,
            choice: WeightedChoice::new(weights),
            table,
        }
    }

    fn scan_usable(&self) -> usize {
        self.endpoints.iter().filter(|ep| ep.is_usable()).count()
    }

    /// Runs the algorithm over this level's acceptable endpoints.
    fn pick(
        &self,
        algorithm: Algorithm,
        ctx: &PickContext<'_>,
        any_health: bool,
    ) -> Option<&Arc<Endpoint>> {
        let filter = self.filter(ctx.exclude, any_health);
        let accept = |pos: usize| filter.accepts(&self.endpoints[pos]);
        let pos = match &self.table {
            Table::RoundRobin(schedule) => schedule.pick(accept),
            Table::RingHash(ring) => match ctx.hash {
                Some(hash) => ring.pick(hash, accept),
                None => self.choice.pick(accept, None),
            },
            Table::Maglev(table) => match ctx.hash {
                Some(hash) => table.pick(hash, accept),
                None => self.choice.pick(accept, None),
            },
            Table::None => match algorithm {
                Algorithm::PeakEwma => p2c::peak_ewma(&self.endpoints, &self.choice, accept),
                Algorithm::Random => self.choice.pick(accept, None),
                _ => p2c::least_request(&self.endpoints, &self.choice, accept),
            },
        }?;
        self.endpoints.get(pos)
    }

    /// Honours `exclude` only if some acceptable endpoint of the level is not excluded.
    fn filter<'a>(&self, exclude: &'a [SocketAddr], any_health: bool) -> Filter<'a> {
        let strict = Filter {
            exclude,
            any_health,
        };
        if !exclude.is_empty() && self.endpoints.iter().any(|ep| strict.accepts(ep)) {
            strict
        } else {
            Filter {
                exclude: &[],
                any_health,
            }
        }
    }
}

// === impl Filter ===

impl Filter<'_> {
    fn accepts(&self, ep: &Endpoint) -> bool {
        (self.any_health || ep.is_usable()) && !self.exclude.contains(&ep.address())
    }
}
