//! Circuit breaker: closed / open / half-open, with Resilience4j's knobs and a hard cap on
//! half-open probes.
//!
//! # States
//!
//! - **Closed**: every call is let through and its outcome goes into a sliding window, either the
//!   last `N` calls ([`Window::Count`]) or the calls of the last `D` ([`Window::Time`]). Once the
//!   window holds `minimum_calls` calls (or, for a count window smaller than that, is full), the
//!   breaker opens when the failure rate or the slow-call rate reaches its threshold. A call is
//!   slow when its latency is at least `slow_call_duration`; slow and failed are counted
//!   independently. A threshold is met only by at least one failed (or slow) call, so a rate of 0
//!   means "any".
//! - **Open**: every call is rejected, with the time left as `retry_after`, for the open period:
//!   `open_duration` on the first opening, doubled on each reopening from half-open, capped at
//!   `max_open_duration`. The first call after the period moves the breaker to half-open.
//! - **Half-open**: at most `half_open_probes` calls are let through as probes, **and never more
//!   at once**: a probe slot is taken under the lock, so a crowd of requests arriving together
//!   gets exactly that many probes and rejections for the rest. This is the thundering-herd bug
//!   of breakers that only count probes after they finish (Polly, opossum, failsafe,
//!   Resilience4j before its fix). Any failed probe reopens the breaker (with the doubled
//!   period); when `half_open_probes` probes have succeeded, it closes, with an empty window and
//!   the open period reset, unless their slow rate reaches `slow_call_rate`, which reopens it.
//!   A probe dropped without an outcome (the request was cancelled) frees its slot.
//!
//! An operator may [`force`](Breaker::force) the breaker open or closed. A forced state
//! overrides everything and records nothing; the underlying state is frozen meanwhile and resumes
//! when the force is lifted (a half-open phase restarts with no probes in flight).
//!
//! # Permits and generations
//!
//! [`Breaker::try_acquire`] returns an owned [`Permit`] that lives across awaits in the request
//! future and reports the outcome with [`Permit::record`]. Each state change bumps a
//! generation; a permit records only into the generation it was issued in, so the outcome of a
//! call let through before the breaker opened does not count against the next half-open phase.
//!
//! # Hot path
//!
//! The state and generation are mirrored in one atomic word, so a closed (or forced) breaker
//! hands out a permit with a single atomic load and no lock. Recording takes one uncontended
//! `Mutex` and does not allocate. Only open and half-open breakers lock to acquire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

/// The sliding window of a closed breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls (at least 1). Config default `Count(100)`.
    Count(u32),
    /// The calls of the last period, kept in buckets: one per second for windows of 10s to
    /// 300s, else 10 or 300 equal buckets (see [`TIME_BUCKETS_MIN`], [`TIME_BUCKETS_MAX`]).
    Time(Duration),
}

/// Fewest buckets of a time window: short windows still expire calls in steps of a tenth.
pub const TIME_BUCKETS_MIN: u64 = 10;
/// Most buckets of a time window: bounds memory and the work after a long idle time.
pub const TIME_BUCKETS_MAX: u64 = 300;

/// Breaker settings, as in the config (`circuit_breaker`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerParams {
    /// Failure rate (0..=1) that opens the breaker. Config default 0.5.
    pub failure_rate: f64,
    /// Slow-call rate (0..=1) that opens the breaker. Config default 1.0, off in practice.
    pub slow_call_rate: f64,
    /// A call at least this long is slow. Config default 2s.
    pub slow_call_duration: Duration,
    /// The closed state's sliding window. Config default `Count(100)`.
    pub window: Window,
    /// Calls needed in the window before the rates are judged. Config default 20.
    pub minimum_calls: u32,
    /// First open period. Config default 30s.
    pub open_duration: Duration,
    /// Longest open period after repeated reopenings. Config default 300s.
    pub max_open_duration: Duration,
    /// Most concurrent probes in half-open, and the successes needed to close (at least 1).
    /// Config default 3.
    pub half_open_probes: u32,
}

/// The state of a breaker, as the request path sees it (forcing included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

/// A state set by an operator through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forced {
    /// Reject every call.
    Open,
    /// Let every call through.
    Closed,
}

/// A state change, to be logged and counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// A call refused by an open (or half-open and full) breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open")]
pub struct Rejected {
    /// Time until the breaker lets a probe through. `Duration::ZERO` when there is no estimate:
    /// half-open with every probe slot taken, or forced open.
    pub retry_after: Duration,
    /// The state change this call caused, if any (open to half-open).
    pub transition: Option<Transition>,
}

/// Leave to make one call; report its outcome with [`Permit::record`].
///
/// Dropping a permit without recording (the request was cancelled) records nothing and frees
/// its half-open probe slot.
#[derive(Debug)]
#[must_use = "a permit should be recorded with the call's outcome"]
pub struct Permit {
    breaker: Arc<Breaker>,
    kind: PermitKind,
    generation: u64,
    transition: Option<Transition>,
    recorded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Issued while closed: the outcome goes into the window.
    Closed,
    /// Issued while half-open: holds a probe slot.
    Probe,
    /// Issued while forced closed: the outcome is not recorded.
    Forced,
}

/// What `/clusters` shows of a breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerStatus {
    /// The state the request path sees (forcing included).
    pub state: BreakerState,
    /// The operator's force, if any.
    pub forced: Option<Forced>,
    /// Failed share of the calls in the window (0 when empty).
    pub failure_rate: f64,
    /// Slow share of the calls in the window (0 when empty).
    pub slow_call_rate: f64,
    /// Calls in the window.
    pub calls: u32,
    /// Openings since the breaker last closed; sets the open period.
    pub consecutive_openings: u32,
    /// Openings since the breaker was created (carried over reloads).
    pub total_openings: u64,
    /// While open: time until the next call is let through as a probe (zero once due).
    pub half_open_in: Option<Duration>,
    /// Probes in flight while half-open.
    pub probes_in_flight: u32,
}

/// A circuit breaker, shared as an `Arc` by every request to its cluster (or endpoint).
#[derive(Debug)]
pub struct Breaker {
    /// `generation << 2 | MODE_*`, written under the lock, read without it.
    mode: AtomicU64,
    inner: Mutex<Inner>,
}

const MODE_CLOSED: u64 = 0;
const MODE_FORCED_CLOSED: u64 = 1;
const MODE_FORCED_OPEN: u64 = 2;
/// Open or half-open: acquiring takes the lock.
const MODE_LOCKED: u64 = 3;
const MODE_BITS: u32 = 2;

#[derive(Debug)]
struct Inner {
    params: BreakerParams,
    state: State,
    forced: Option<Forced>,
    window: Outcomes,
    generation: u64,
    consecutive_openings: u32,
    total_openings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        slow: u32,
    },
}

/// Outcome flags of one call in a count window.
const FAILED: u8 = 1;
const SLOW: u8 = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug, Clone)]
enum Outcomes {
    Count(CountWindow),
    Time(TimeWindow),
}

/// Ring buffer of the last `ring.len()` outcomes.
#[derive(Debug, Clone)]
struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    totals: Totals,
}

/// Buckets of equal width; bucket `i` (counted from `origin`) lives in slot `i % len`.
#[derive(Debug, Clone)]
struct TimeWindow {
    origin: Instant,
    width_nanos: u64,
    buckets: Box<[Totals]>,
    /// Index of the newest bucket cleared for use.
    current: u64,
    /// `current % buckets.len()`, kept to spare a division per call.
    current_slot: usize,
    totals: Totals,
}

// === impl BreakerState ===

impl BreakerState {
    /// Every state, in the order the state gauge lists them.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// The state's name in logs, metric labels and `/clusters`: `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Forced ===

impl Forced {
    /// The force's name in `/clusters` and the admin API: `open`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::Open => "open",
            Forced::Closed => "closed",
        }
    }
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(params: BreakerParams) -> Self {
        let inner = Inner {
            params,
            state: State::Closed,
            forced: None,
            window: Outcomes::new(params.window, Instant::now()),
            generation: 0,
            consecutive_openings: 0,
            total_openings: 0,
        };
        Breaker {
            mode: AtomicU64::new(inner.mode()),
            inner: Mutex::new(inner),
        }
    }

    /// A breaker for a reloaded config that keeps `old`'s state, force and opening counts, and
    /// its window too when the window kind and size are unchanged (else the window starts empty).
    ///
    /// Calls in flight on `old` record into `old`; a half-open phase restarts with no probes in
    /// flight here, so during a reload up to twice `half_open_probes` probes may run.
    pub fn carry_over(params: BreakerParams, old: &Breaker) -> Self {
        let old = old.lock();
        let window = if old.params.window == params.window {
            old.window.clone()
        } else {
            Outcomes::new(params.window, Instant::now())
        };
        let state = match old.state {
            State::HalfOpen { .. } => State::half_open(),
            other => other,
        };
        let inner = Inner {
            params,
            state,
            forced: old.forced,
            window,
            generation: 0,
            consecutive_openings: old.consecutive_openings,
            total_openings: old.total_openings,
        };
        Breaker {
            mode: AtomicU64::new(inner.mode()),
            inner: Mutex::new(inner),
        }
    }

    /// Asks to make a call: a [`Permit`] when closed, or half-open with a probe slot free; else
    /// [`Rejected`]. The first call after the open period moves the breaker to half-open and
    /// carries that [`Transition`].
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let mode = self.mode.load(Ordering::Acquire);
        let generation = mode >> MODE_BITS;
        match mode & ((1 << MODE_BITS) - 1) {
            MODE_CLOSED => Ok(self.permit(PermitKind::Closed, generation, None)),
            MODE_FORCED_CLOSED => Ok(self.permit(PermitKind::Forced, generation, None)),
            MODE_FORCED_OPEN => Err(Rejected {
                retry_after: Duration::ZERO,
                transition: None,
            }),
            _ => self.acquire_locked(),
        }
    }

    /// Forces the breaker open or closed (`Some`), or returns it to normal operation (`None`).
    /// Returns the change of the state the request path sees, if any.
    pub fn force(&self, forced: Option<Forced>) -> Option<Transition> {
        let mut inner = self.lock();
        if inner.forced == forced {
            return None;
        }
        let from = inner.effective_state();
        inner.forced = forced;
        // Outcomes of calls let through before the change belong to the old regime.
        inner.generation += 1;
        if let State::HalfOpen { .. } = inner.state {
            inner.state = State::half_open();
        }
        self.publish(&inner);
        let to = inner.effective_state();
        (from != to).then_some(Transition { from, to })
    }

    /// The state the request path sees (forcing included). An open breaker whose period is over
    /// still reads `Open` until a call arrives.
    pub fn state(&self) -> BreakerState {
        self.lock().effective_state()
    }

    /// Rates, counts and timers for `/clusters`.
    pub fn status(&self) -> BreakerStatus {
        let now = Instant::now();
        let mut inner = self.lock();
        let totals = inner.window.totals(now);
        let rate = |n: u32| {
            if totals.calls == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(totals.calls)
            }
        };
        let (half_open_in, probes_in_flight) = match (inner.forced, inner.state) {
            (None, State::Open { until }) => (Some(until.saturating_duration_since(now)), 0),
            (_, State::HalfOpen { in_flight, .. }) => (None, in_flight),
            _ => (None, 0),
        };
        BreakerStatus {
            state: inner.effective_state(),
            forced: inner.forced,
            failure_rate: rate(totals.failures),
            slow_call_rate: rate(totals.slow),
            calls: totals.calls,
            consecutive_openings: inner.consecutive_openings,
            total_openings: inner.total_openings,
            half_open_in,
            probes_in_flight,
        }
    }

    /// The settings in force.
    pub fn params(&self) -> BreakerParams {
        self.lock().params
    }

    fn acquire_locked(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        match inner.forced {
            Some(Forced::Closed) => {
                return Ok(self.permit(PermitKind::Forced, inner.generation, None));
            }
            Some(Forced::Open) => {
                return Err(Rejected {
                    retry_after: Duration::ZERO,
                    transition: None,
                });
            }
            None => {}
        }
        let mut transition = None;
        if let State::Open { until } = inner.state {
            let now = Instant::now();
            if now < until {
                return Err(Rejected {
                    retry_after: until - now,
                    transition: None,
                });
            }
            transition = Some(inner.set_state(State::half_open()));
            self.publish(&inner);
        }
        let probes = inner.params.half_open_probes.max(1);
        match inner.state {
            State::Closed => Ok(self.permit(PermitKind::Closed, inner.generation, transition)),
            State::HalfOpen {
                in_flight,
                successes,
                slow,
            } if in_flight + successes < probes => {
                inner.state = State::HalfOpen {
                    in_flight: in_flight + 1,
                    successes,
                    slow,
                };
                Ok(self.permit(PermitKind::Probe, inner.generation, transition))
            }
            _ => Err(Rejected {
                retry_after: Duration::ZERO,
                transition,
            }),
        }
    }

    fn permit(
        self: &Arc<Self>,
        kind: PermitKind,
        generation: u64,
        transition: Option<Transition>,
    ) -> Permit {
        Permit {
            breaker: Arc::clone(self),
            kind,
            generation,
            transition,
            recorded: false,
        }
    }

    fn record(
        &self,
        kind: PermitKind,
        generation: u64,
        success: bool,
        latency: Duration,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        if inner.generation != generation || inner.forced.is_some() {
            return None;
        }
        let slow = latency >= inner.params.slow_call_duration;
        let transition = match (kind, inner.state) {
            (PermitKind::Closed, State::Closed) => {
                let flags = (u8::from(!success) * FAILED) | (u8::from(slow) * SLOW);
                let totals = inner.window.record(flags);
                inner.should_open(totals).then(|| inner.open())
            }
            (
                PermitKind::Probe,
                State::HalfOpen {
                    in_flight,
                    successes,
                    slow: slow_probes,
                },
            ) => {
                let in_flight = in_flight.saturating_sub(1);
                let successes = successes + u32::from(success);
                let slow_probes = slow_probes + u32::from(slow);
                if !success {
                    Some(inner.open())
                } else if successes < inner.params.half_open_probes.max(1) {
                    inner.state = State::HalfOpen {
                        in_flight,
                        successes,
                        slow: slow_probes,
                    };
                    None
                } else if slow_probes > 0
                    && f64::from(slow_probes) / f64::from(successes) >= inner.params.slow_call_rate
                {
                    Some(inner.open())
                } else {
                    Some(inner.close())
                }
            }
            _ => None,
        };
        if transition.is_some() {
            self.publish(&inner);
        }
        transition
    }

    fn release_probe(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let State::HalfOpen { in_flight, .. } = &mut inner.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn publish(&self, inner: &Inner) {
        self.mode.store(inner.mode(), Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Permit ===

impl Permit {
    /// Reports the call's outcome: `success` as the caller judges it (the route's failure
    /// conditions), and its latency. Returns the state change it caused, if any.
    pub fn record(mut self, success: bool, latency: Duration) -> Option<Transition> {
        self.recorded = true;
        if self.kind == PermitKind::Forced {
            return None;
        }
        self.breaker
            .record(self.kind, self.generation, success, latency)
    }

    /// The state change that acquiring this permit caused (open to half-open), if any.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded && self.kind == PermitKind::Probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

// === impl Inner ===

impl Inner {
    fn mode(&self) -> u64 {
        let code = match (self.forced, self.state) {
            (Some(Forced::Closed), _) => MODE_FORCED_CLOSED,
            (Some(Forced::Open), _) => MODE_FORCED_OPEN,
            (None, State::Closed) => MODE_CLOSED,
            (None, _) => MODE_LOCKED,
        };
        (self.generation << MODE_BITS) | code
    }

    fn effective_state(&self) -> BreakerState {
        match (self.forced, self.state) {
            (Some(Forced::Open), _) => BreakerState::Open,
            (Some(Forced::Closed), _) => BreakerState::Closed,
            (None, state) => state.kind(),
        }
    }

    fn set_state(&mut self, state: State) -> Transition {
        let from = self.state.kind();
        self.state = state;
        self.generation += 1;
        Transition {
            from,
            to: state.kind(),
        }
    }

    fn should_open(&self, totals: Totals) -> bool {
        let p = &self.params;
        let needed = match p.window {
            Window::Count(n) => p.minimum_calls.min(n),
            Window::Time(_) => p.minimum_calls,
        }
        .max(1);
        if totals.calls < needed {
            return false;
        }
        let calls = f64::from(totals.calls);
        let failing = totals.failures > 0 && f64::from(totals.failures) / calls >= p.failure_rate;
        let slow = totals.slow > 0 && f64::from(totals.slow) / calls >= p.slow_call_rate;
        failing || slow
    }

    /// Opens for `open_duration * 2^(openings - 1)`, capped.
    fn open(&mut self) -> Transition {
        self.consecutive_openings = self.consecutive_openings.saturating_add(1);
        self.total_openings += 1;
        let period = Backoff {
            base: self.params.open_duration,
            max: self.params.max_open_duration.max(self.params.open_duration),
        }
        .ceiling(self.consecutive_openings);
        let now = Instant::now();
        let until = now
            .checked_add(period)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.set_state(State::Open { until })
    }

    fn close(&mut self) -> Transition {
        self.consecutive_openings = 0;
        self.window = Outcomes::new(self.params.window, Instant::now());
        self.set_state(State::Closed)
    }
}

// === impl State ===

impl State {
    fn half_open() -> Self {
        State::HalfOpen {
            in_flight: 0,
            successes: 0,
            slow: 0,
        }
    }

    fn kind(self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

// === impl Outcomes ===

impl Outcomes {
    fn new(window: Window, now: Instant) -> Self {
        match window {
            Window::Count(n) => {
                let len = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
                Outcomes::Count(CountWindow {
                    ring: vec![0; len].into_boxed_slice(),
                    next: 0,
                    totals: Totals::default(),
                })
            }
            Window::Time(period) => {
                let period = if period.is_zero() {
                    Duration::from_secs(1)
                } else {
                    period
                };
                let len = period.as_secs().clamp(TIME_BUCKETS_MIN, TIME_BUCKETS_MAX);
                let width_nanos = u64::try_from(period.as_nanos() / u128::from(len))
                    .unwrap_or(u64::MAX)
                    .max(1);
                Outcomes::Time(TimeWindow {
                    origin: now,
                    width_nanos,
                    buckets: vec![Totals::default(); usize::try_from(len).unwrap_or(1)]
                        .into_boxed_slice(),
                    current: 0,
                    current_slot: 0,
                    totals: Totals::default(),
                })
            }
        }
    }

    /// Adds one call and returns the window's totals.
    fn record(&mut self, flags: u8) -> Totals {
        match self {
            Outcomes::Count(w) => w.record(flags),
            Outcomes::Time(w) => w.record(Instant::now(), flags),
        }
    }

    fn totals(&mut self, now: Instant) -> Totals {
        match self {
            Outcomes::Count(w) => w.totals,
            Outcomes::Time(w) => {
                w.advance(now);
                w.totals
            }
        }
    }
}

// === impl Totals ===

impl Totals {
    fn add(&mut self, flags: u8) {
        self.calls += 1;
        self.failures += u32::from(flags & FAILED != 0);
        self.slow += u32::from(flags & SLOW != 0);
    }

    fn subtract(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

// === impl CountWindow ===

impl CountWindow {
    fn record(&mut self, flags: u8) -> Totals {
        if self.totals.calls as usize == self.ring.len() {
            let mut old = Totals::default();
            old.add(self.ring[self.next]);
            self.totals.subtract(old);
        }
        self.ring[self.next] = flags;
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
        }
        self.totals.add(flags);
        self.totals
    }
}

// === impl TimeWindow ===

impl TimeWindow {
    fn record(&mut self, now: Instant, flags: u8) -> Totals {
        let slot = self.advance(now);
        self.buckets[slot].add(flags);
        self.totals.add(flags);
        self.totals
    }

    /// Expires buckets that fell out of the window; returns the slot of the bucket for `now`.
    fn advance(&mut self, now: Instant) -> usize {
        let len = self.buckets.len() as u64;
        let elapsed = now.saturating_duration_since(self.origin);
        // u64 nanoseconds last 584 years; the division is much cheaper than u128's.
        let index = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) / self.width_nanos;
        if index > self.current {
            // Clearing slot `i % len` drops bucket `i - len`; after `len` steps all are clear.
            let first = self
                .current
                .saturating_add(1)
                .max(index.saturating_sub(len - 1));
            for i in first..=index {
                let slot = (i % len) as usize;
                let old = std::mem::take(&mut self.buckets[slot]);
                self.totals.subtract(old);
            }
            self.current = index;
            self.current_slot = (index % len) as usize;
        }
        self.current_slot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const FAST: Duration = Duration::from_millis(10);
    const SLOW_CALL: Duration = Duration::from_secs(3);
    const SEC: Duration = Duration::from_secs(1);

    fn params() -> BreakerParams {
        BreakerParams {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Duration::from_secs(2),
            window: Window::Count(10),
            minimum_calls: 4,
            open_duration: 30 * SEC,
            max_open_duration: 100 * SEC,
            half_open_probes: 2,
        }
    }

    fn breaker(params: BreakerParams) -> Arc<Breaker> {
        Arc::new(Breaker::new(params))
    }

    fn call(b: &Arc<Breaker>, success: bool) -> Option<Transition> {
        b.try_acquire().expect("call allowed").record(success, FAST)
    }

    fn transition(from: BreakerState, to: BreakerState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    use BreakerState::{Closed, HalfOpen, Open};

    /// Opens `b` (count window, 4 minimum calls) with failures.
    fn trip(b: &Arc<Breaker>) {
        let mut last = None;
        for _ in 0..4 {
            last = call(b, false);
        }
        assert_eq!(last, transition(Closed, Open));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_failure_rate_only_after_minimum_calls() {
        let b = breaker(params());
        assert_eq!(call(&b, false), None);
        assert_eq!(call(&b, false), None);
        assert_eq!(call(&b, true), None);
        assert_eq!(
            b.state(),
            Closed,
            "3 calls are under minimum_calls even at 67% failures"
        );
        assert_eq!(
            call(&b, true),
            transition(Closed, Open),
            "2 of 4 failed: 50% reached"
        );
        assert_eq!(b.state(), Open);
        assert!(b.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_failure_rate() {
        let b = breaker(params());
        for i in 0..30 {
            assert_eq!(call(&b, i % 3 != 2), None, "a third failing is under 50%");
        }
        let status = b.status();
        assert_eq!((status.state, status.calls), (Closed, 10));
        assert!(
            (status.failure_rate - 0.4).abs() < 1e-9,
            "{}",
            status.failure_rate
        );
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_smaller_than_minimum_calls_judges_when_full() {
        let b = breaker(BreakerParams {
            window: Window::Count(3),
            minimum_calls: 20,
            ..params()
        });
        assert_eq!(call(&b, false), None);
        assert_eq!(call(&b, false), None);
        assert_eq!(call(&b, false), transition(Closed, Open));
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_forgets_the_oldest_calls() {
        let b = breaker(BreakerParams {
            window: Window::Count(4),
            failure_rate: 0.75,
            ..params()
        });
        assert_eq!(call(&b, false), None);
        for _ in 0..4 {
            assert_eq!(call(&b, true), None);
        }
        assert_eq!(call(&b, false), None);
        assert_eq!(call(&b, false), None);
        assert_eq!(b.status().failure_rate, 0.5);
        // Window now: ok ok fail fail; one more failure makes 3 of 4.
        assert_eq!(call(&b, false), transition(Closed, Open));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_slow_call_rate() {
        let b = breaker(BreakerParams {
            slow_call_rate: 0.5,
            ..params()
        });
        let record = |latency| b.try_acquire().expect("closed").record(true, latency);
        assert_eq!(record(SLOW_CALL), None);
        assert_eq!(record(FAST), None);
        assert_eq!(
            record(Duration::from_secs(2)),
            None,
            "exactly slow_call_duration is slow"
        );
        assert_eq!(b.status().slow_call_rate, 2.0 / 3.0);
        assert_eq!(
            record(FAST),
            transition(Closed, Open),
            "2 of 4 slow, all succeeded"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_call_rate_of_one_needs_every_call_slow() {
        let b = breaker(params());
        let record = |latency| b.try_acquire().expect("closed").record(true, latency);
        for _ in 0..3 {
            assert_eq!(record(SLOW_CALL), None);
        }
        assert_eq!(record(FAST), None);
        for _ in 0..9 {
            record(SLOW_CALL);
        }
        assert_eq!(b.state(), Closed, "9 of 10 slow");
        record(SLOW_CALL);
        assert_eq!(b.state(), Open, "10 of 10 slow");
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_expires_old_calls() {
        let b = breaker(BreakerParams {
            window: Window::Time(10 * SEC),
            ..params()
        });
        for _ in 0..3 {
            assert_eq!(call(&b, false), None);
        }
        tokio::time::advance(11 * SEC).await;
        assert_eq!(b.status().calls, 0, "all three fell out of the window");
        assert_eq!(call(&b, false), None, "one failure is under minimum_calls");
        for _ in 0..2 {
            assert_eq!(call(&b, false), None);
        }
        assert_eq!(
            call(&b, false),
            transition(Closed, Open),
            "4 failures within 10s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_keeps_calls_younger_than_the_window() {
        let b = breaker(BreakerParams {
            window: Window::Time(10 * SEC),
            ..params()
        });
        call(&b, false);
        tokio::time::advance(5 * SEC).await;
        call(&b, true);
        call(&b, true);
        tokio::time::advance(6 * SEC).await;
        let status = b.status();
        assert_eq!((status.calls, status.failure_rate), (2, 0.0));
        tokio::time::advance(1000 * SEC).await;
        assert_eq!(b.status().calls, 0);
        call(&b, true);
        assert_eq!(
            b.status().calls,
            1,
            "the window works after a long idle time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_with_retry_after_then_half_opens() {
        let b = breaker(params());
        trip(&b);
        let rejected = b.try_acquire().expect_err("open");
        assert_eq!(
            rejected,
            Rejected {
                retry_after: 30 * SEC,
                transition: None
            }
        );
        tokio::time::advance(20 * SEC).await;
        assert_eq!(b.try_acquire().expect_err("open").retry_after, 10 * SEC);
        assert_eq!(b.status().half_open_in, Some(10 * SEC));
        tokio::time::advance(10 * SEC).await;
        assert_eq!(b.state(), Open, "reads open until a call arrives");
        let probe = b
            .try_acquire()
            .expect("first call after the period is a probe");
        assert!(probe.is_probe());
        assert_eq!(probe.transition(), transition(Open, HalfOpen));
        assert_eq!(b.state(), HalfOpen);
        assert_eq!(b.status().probes_in_flight, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_caps_probes_and_closes_after_enough_successes() {
        let b = breaker(params());
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let p1 = b.try_acquire().expect("probe 1");
        let p2 = b.try_acquire().expect("probe 2");
        let third = b.try_acquire().expect_err("only two probes at once");
        assert_eq!(
            third,
            Rejected {
                retry_after: Duration::ZERO,
                transition: None
            }
        );
        assert_eq!(p1.record(true, FAST), None);
        assert!(
            b.try_acquire().is_err(),
            "the successes needed are already in flight"
        );
        assert_eq!(p2.record(true, FAST), transition(HalfOpen, Closed));
        let status = b.status();
        assert_eq!(
            (status.state, status.calls, status.consecutive_openings),
            (Closed, 0, 0)
        );
        assert_eq!(status.total_openings, 1);
        assert!(
            b.try_acquire()
                .expect("closed")
                .record(true, FAST)
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hard_cap_on_probes_under_a_crowd_of_tasks() {
        let b = breaker(BreakerParams {
            half_open_probes: 3,
            ..params()
        });
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let concurrent = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (b, concurrent, peak, granted) =
                (b.clone(), concurrent.clone(), peak.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(permit) = b.try_acquire() else { return };
                granted.fetch_add(1, Ordering::SeqCst);
                let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(SEC).await;
                concurrent.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(granted.load(Ordering::SeqCst), 3);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn hard_cap_on_probes_across_threads() {
        // A zero open period: the first call after tripping is already a probe.
        let b = breaker(BreakerParams {
            open_duration: Duration::ZERO,
            half_open_probes: 3,
            ..params()
        });
        for _ in 0..4 {
            b.try_acquire().expect("closed").record(false, FAST);
        }
        let barrier = std::sync::Barrier::new(16);
        let granted = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..50 {
                        if let Ok(permit) = b.try_acquire() {
                            granted.lock().expect("not poisoned").push(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.lock().expect("not poisoned").len(), 3);
        assert_eq!(b.status().probes_in_flight, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_with_the_period_doubled_up_to_the_cap() {
        let b = breaker(params());
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        for period in [60 * SEC, 100 * SEC, 100 * SEC] {
            let probe = b.try_acquire().expect("probe");
            assert_eq!(probe.record(false, FAST), transition(HalfOpen, Open));
            assert_eq!(b.status().half_open_in, Some(period));
            assert_eq!(b.try_acquire().expect_err("open").retry_after, period);
            tokio::time::advance(period - SEC).await;
            assert!(
                b.try_acquire().is_err(),
                "still open just before the period ends"
            );
            tokio::time::advance(SEC).await;
        }
        assert_eq!(b.status().consecutive_openings, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_resets_the_open_period() {
        let b = breaker(params());
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        b.try_acquire().expect("probe").record(false, FAST);
        tokio::time::advance(60 * SEC).await;
        for _ in 0..2 {
            b.try_acquire().expect("probe").record(true, FAST);
        }
        assert_eq!(b.state(), Closed);
        trip(&b);
        assert_eq!(b.try_acquire().expect_err("open").retry_after, 30 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_probes_reopen_when_slow_rate_is_reached() {
        let b = breaker(BreakerParams {
            slow_call_rate: 0.5,
            ..params()
        });
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let (p1, p2) = (
            b.try_acquire().expect("probe"),
            b.try_acquire().expect("probe"),
        );
        assert_eq!(p1.record(true, SLOW_CALL), None);
        assert_eq!(p2.record(true, FAST), transition(HalfOpen, Open));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_frees_its_slot() {
        let b = breaker(params());
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let p1 = b.try_acquire().expect("probe 1");
        let p2 = b.try_acquire().expect("probe 2");
        assert!(b.try_acquire().is_err());
        drop(p1);
        assert_eq!(b.status().probes_in_flight, 1);
        let p3 = b.try_acquire().expect("the cancelled probe's slot is free");
        assert_eq!(
            p2.record(true, FAST),
            None,
            "a dropped probe is not a success"
        );
        assert_eq!(p3.record(true, FAST), transition(HalfOpen, Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_an_earlier_state_are_ignored() {
        let b = breaker(params());
        let late = b.try_acquire().expect("closed");
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let probe = b.try_acquire().expect("probe");
        assert_eq!(
            late.record(false, FAST),
            None,
            "issued while closed: not a probe failure"
        );
        assert_eq!(b.state(), HalfOpen);
        assert_eq!(b.status().probes_in_flight, 1);
        drop(probe);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_open_rejects_and_forced_closed_admits_without_recording() {
        let b = breaker(params());
        assert_eq!(b.force(Some(Forced::Open)), transition(Closed, Open));
        assert_eq!(b.force(Some(Forced::Open)), None);
        let rejected = b.try_acquire().expect_err("forced open");
        assert_eq!(rejected.retry_after, Duration::ZERO);
        assert_eq!(b.status().forced, Some(Forced::Open));

        assert_eq!(b.force(Some(Forced::Closed)), transition(Open, Closed));
        for _ in 0..20 {
            assert_eq!(call(&b, false), None, "forced closed never opens");
        }
        assert_eq!(b.status().calls, 0, "nothing recorded while forced");

        assert_eq!(b.force(None), None, "back to the underlying closed state");
        trip(&b);
        assert_eq!(b.force(Some(Forced::Closed)), transition(Open, Closed));
        assert!(b.try_acquire().is_ok());
        assert_eq!(
            b.force(None),
            transition(Closed, Open),
            "the underlying state resumes"
        );
        assert_eq!(b.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn lifting_a_force_restarts_the_half_open_phase() {
        let b = breaker(params());
        trip(&b);
        tokio::time::advance(30 * SEC).await;
        let p1 = b.try_acquire().expect("probe 1");
        let _p2 = b.try_acquire().expect("probe 2");
        b.force(Some(Forced::Open));
        b.force(None);
        assert_eq!(b.status().probes_in_flight, 0);
        let fresh = b.try_acquire().expect("fresh probe");
        assert_eq!(
            p1.record(false, FAST),
            None,
            "probe of the earlier phase is ignored"
        );
        assert_eq!(b.state(), HalfOpen);
        drop(fresh);
    }

    #[tokio::test(start_paused = true)]
    async fn carry_over_keeps_state_and_window_when_the_window_is_unchanged() {
        let old = breaker(params());
        call(&old, false);
        call(&old, false);
        call(&old, true);
        let new = Arc::new(Breaker::carry_over(
            BreakerParams {
                failure_rate: 0.6,
                ..params()
            },
            &old,
        ));
        assert_eq!(new.status().calls, 3);
        assert_eq!(
            call(&new, false),
            transition(Closed, Open),
            "3 of 4 failed >= 60%"
        );

        tokio::time::advance(10 * SEC).await;
        let reopened = Breaker::carry_over(params(), &new);
        let status = reopened.status();
        assert_eq!((status.state, status.half_open_in), (Open, Some(20 * SEC)));
        assert_eq!((status.consecutive_openings, status.total_openings), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn carry_over_with_another_window_starts_it_empty_but_keeps_state() {
        let old = breaker(params());
        call(&old, false);
        old.force(Some(Forced::Closed));
        let new = Breaker::carry_over(
            BreakerParams {
                window: Window::Count(20),
                ..params()
            },
            &old,
        );
        let status = new.status();
        assert_eq!((status.calls, status.forced), (0, Some(Forced::Closed)));

        let half_open = breaker(params());
        trip(&half_open);
        tokio::time::advance(30 * SEC).await;
        let _probe = half_open.try_acquire().expect("probe");
        let new = Arc::new(Breaker::carry_over(params(), &half_open));
        assert_eq!(new.state(), HalfOpen);
        assert_eq!(
            new.status().probes_in_flight,
            0,
            "old probes record into the old breaker"
        );
        assert!(new.try_acquire().expect("probe").is_probe());
    }
}
