//! The breaker around one plugin: stop running a plugin that keeps faulting, probe it later.
//!
//! A plugin that traps on every call costs a fresh instance per call (a faulted instance is
//! never reused), and one that spins costs its whole deadline per call. After
//! `consecutive_faults` faulted calls in a row the breaker opens: calls return the plugin's
//! `on_error` outcome without running wasm. When the open period ends, exactly one call is let
//! through as a probe (the others still bypass). A successful probe closes the breaker; a
//! faulted one reopens it for twice as long, up to `max_open`.
//!
//! The clock is `tokio::time::Instant`, so tests drive it with a paused runtime.

use std::time::Duration;

use tokio::time::Instant;

use crate::params::BreakerParams;
use crate::types::Hook;

/// A breaker's state, for `/plugins` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls run.
    Closed,
    /// Calls bypass the plugin until the open period ends.
    Open,
    /// One probe call is running; other calls bypass.
    HalfOpen,
}

impl BreakerState {
    /// A stable lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Whether a call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run it.
    Run,
    /// Run it as the probe; its result decides the breaker.
    Probe,
    /// Do not run it.
    Reject,
}

#[derive(Debug)]
enum State {
    /// Consecutive faults of each hook (`on-request`, `on-response`, `on-upstream-failure`):
    /// a hook that works does not hide one that faults on every call.
    Closed {
        consecutive: [u32; 3],
    },
    Open {
        until: Instant,
    },
    HalfOpen,
}

/// The state machine. Callers hold it behind a mutex, only for `admit` and `record`.
#[derive(Debug)]
pub(crate) struct Breaker {
    params: BreakerParams,
    state: State,
    /// The next open period; doubles on each reopening, resets on success.
    next_open: Duration,
    opened: u64,
}

// === impl Breaker ===

impl Breaker {
    pub(crate) fn new(params: BreakerParams) -> Self {
        let next_open = params.base_open;
        Self {
            params,
            state: State::Closed {
                consecutive: [0; 3],
            },
            next_open,
            opened: 0,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker has opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened
    }

    /// Closed with no fault counted: a call is admitted, and a call that succeeds changes
    /// nothing. The plugin reads this without the lock on every call.
    pub(crate) fn is_clean(&self) -> bool {
        matches!(self.state, State::Closed { consecutive } if consecutive == [0; 3])
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Run,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Reject,
        }
    }

    /// Records the result of an admitted call. Returns the open period if this opened the
    /// breaker.
    pub(crate) fn record(
        &mut self,
        admission: Admission,
        hook: Hook,
        faulted: bool,
        now: Instant,
    ) -> Option<Duration> {
        let opened = self.opened;
        let index = match hook {
            Hook::OnRequest => 0,
            Hook::OnResponse => 1,
            Hook::OnUpstreamFailure => 2,
        };
        match (admission, faulted) {
            (Admission::Reject, _) => {}
            (Admission::Probe, false) => {
                self.state = State::Closed {
                    consecutive: [0; 3],
                };
                self.next_open = self.params.base_open;
            }
            // `next_open` is already `base_open` here: only a good probe closes the breaker,
            // and it resets it.
            (Admission::Run, false) => {
                if let State::Closed { consecutive } = &mut self.state {
                    consecutive[index] = 0;
                }
            }
            (Admission::Probe, true) => self.open(now),
            (Admission::Run, true) => match &mut self.state {
                State::Closed { consecutive } => {
                    consecutive[index] += 1;
                    if consecutive[index] >= self.params.consecutive_faults.max(1) {
                        self.open(now);
                    }
                }
                // Another call opened the breaker while this one ran: nothing more to do.
                State::Open { .. } | State::HalfOpen => {}
            },
        }
        match self.state {
            State::Open { until } if self.opened > opened => Some(until - now),
            _ => None,
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.next_open,
        };
        self.opened += 1;
        self.next_open = (self.next_open * 2).min(self.params.max_open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BreakerParams {
        BreakerParams {
            consecutive_faults: 3,
            base_open: Duration::from_secs(1),
            max_open: Duration::from_secs(3),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn clean_only_while_closed_with_no_fault_counted() {
        let mut b = Breaker::new(params());
        assert!(b.is_clean());
        b.record(Admission::Run, Hook::OnResponse, true, Instant::now());
        assert!(!b.is_clean());
        b.record(Admission::Run, Hook::OnResponse, false, Instant::now());
        assert!(b.is_clean());
        for _ in 0..3 {
            b.record(Admission::Run, Hook::OnRequest, true, Instant::now());
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.is_clean());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        assert!(!b.is_clean());
        b.record(Admission::Probe, Hook::OnRequest, false, Instant::now());
        assert!(b.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn a_working_hook_does_not_hide_a_faulting_one() {
        let mut b = Breaker::new(params());
        for _ in 0..2 {
            assert_eq!(b.admit(Instant::now()), Admission::Run);
            b.record(Admission::Run, Hook::OnRequest, true, Instant::now());
            assert_eq!(b.admit(Instant::now()), Admission::Run);
            b.record(Admission::Run, Hook::OnResponse, false, Instant::now());
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(Instant::now()), Admission::Run);
        b.record(Admission::Run, Hook::OnRequest, true, Instant::now());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_faults_and_doubles_open_period_up_to_cap() {
        let mut b = Breaker::new(params());
        for _ in 0..2 {
            assert_eq!(b.admit(Instant::now()), Admission::Run);
            b.record(Admission::Run, Hook::OnRequest, true, Instant::now());
        }
        // A success in between resets the count.
        b.record(Admission::Run, Hook::OnRequest, false, Instant::now());
        for n in 1..=3 {
            assert_eq!(b.admit(Instant::now()), Admission::Run);
            let opened = b.record(Admission::Run, Hook::OnRequest, true, Instant::now());
            assert_eq!(opened, (n == 3).then_some(Duration::from_secs(1)));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(Instant::now()), Admission::Reject);

        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Reject);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        // Only one probe at a time.
        assert_eq!(b.admit(Instant::now()), Admission::Reject);
        assert_eq!(
            b.record(Admission::Probe, Hook::OnRequest, true, Instant::now()),
            Some(Duration::from_secs(2))
        );

        // Reopened for 2s, then 3s (capped).
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Reject);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);
        b.record(Admission::Probe, Hook::OnRequest, true, Instant::now());
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Reject);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Probe);

        b.record(Admission::Probe, Hook::OnRequest, false, Instant::now());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.opened(), 3);
        assert_eq!(b.next_open, Duration::from_secs(1));
    }
}
