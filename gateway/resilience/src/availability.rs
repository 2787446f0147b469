//! Availability accounting (the nines): time up and down, outages, MTTR, MTBF and the
//! availability ratio over a rolling window, for one endpoint or one cluster.
//!
//! An [`Availability`] is driven by up/down transitions: [`ClusterHealth`](crate::health)
//! calls [`Availability::set`] whenever an endpoint starts or stops serving, and for the
//! cluster when its first endpoint comes back or its last one goes. It keeps totals since it
//! was created plus a ring of [`BUCKETS`] buckets covering the window (default one hour, so one
//! bucket per minute): memory stays fixed however often an endpoint flaps. The window ratio is
//! exact except within the oldest bucket, which is counted pro rata as it slides out.
//!
//! Definitions, as shown by [`AvailabilityStatus`]:
//! - an **outage** starts at each up → down transition; time down before the first up does not
//!   count as one (a cluster that starts empty has not failed);
//! - **MTTR** is the mean length of the outages that have ended;
//! - **MTBF** is the time up divided by the number of outages (the mean up time per failure);
//! - the **ratio** is up time over observed time within the window; `1.0` before any time has
//!   passed while up.

use std::time::Duration;

use tokio::time::Instant;

/// Default length of the rolling window: one hour.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Buckets in the rolling window: 60, one per minute of the default hour, which is as fine as
/// an operator reading a dashboard needs and costs about 2 KiB per tracker.
pub const BUCKETS: usize = 60;

/// Buckets kept: the window's, plus the oldest one, which still partly overlaps the window
/// until the current bucket is full.
const RING: usize = BUCKETS + 1;

/// Up/down accounting of one endpoint or cluster. See the module docs.
#[derive(Clone, Debug)]
pub struct Availability {
    window: Duration,
    bucket_len: Duration,
    started: Instant,
    up: bool,
    /// Start of the current up or down period.
    changed: Instant,
    /// Closed periods only; the current one is added when reading.
    up_total: Duration,
    down_total: Duration,
    outages: u64,
    /// Whether the current down period is an outage (it followed an up period).
    in_outage: bool,
    recoveries: u64,
    recovered_down: Duration,
    buckets: [Bucket; RING],
    /// Time before this is already in the buckets.
    accounted: Instant,
}

/// Up and down time within one slice of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which slice since `started` this bucket holds; older contents are stale.
    index: u64,
    up: Duration,
    down: Duration,
}

/// A snapshot of an [`Availability`] for `/clusters` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct AvailabilityStatus {
    /// Whether it is up now.
    pub up: bool,
    /// How long it has been in the current state.
    pub in_state_for: Duration,
    /// Total time up since tracking began.
    pub up_time: Duration,
    /// Total time down since tracking began.
    pub down_time: Duration,
    /// Up → down transitions since tracking began.
    pub outages: u64,
    /// Mean length of the outages that have ended; `None` before the first recovery.
    pub mttr: Option<Duration>,
    /// Up time per outage; `None` before the first outage.
    pub mtbf: Option<Duration>,
    /// Up time over observed time within the window (0..=1).
    pub ratio: f64,
    /// The window `ratio` covers.
    pub window: Duration,
}

// === impl Availability ===

impl Availability {
    /// Starts tracking at `now` in state `up`, with the [`DEFAULT_WINDOW`].
    pub fn new(now: Instant, up: bool) -> Availability {
        Availability::with_window(now, up, DEFAULT_WINDOW)
    }

    /// Starts tracking at `now` in state `up`, with a rolling window of `window` (at least
    /// [`BUCKETS`] nanoseconds).
    pub fn with_window(now: Instant, up: bool, window: Duration) -> Availability {
        let window = window.max(Duration::from_nanos(BUCKETS as u64));
        Availability {
            window,
            bucket_len: window / BUCKETS as u32,
            started: now,
            up,
            changed: now,
            up_total: Duration::ZERO,
            down_total: Duration::ZERO,
            outages: 0,
            in_outage: false,
            recoveries: 0,
            recovered_down: Duration::ZERO,
            buckets: [Bucket::default(); RING],
            accounted: now,
        }
    }

    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records the state at `now`; a no-op unless it differs from the current one.
    pub fn set(&mut self, now: Instant, up: bool) {
        if up == self.up {
            return;
        }
        self.advance(now);
        let period = now.saturating_duration_since(self.changed);
        if self.up {
            self.up_total += period;
            self.outages += 1;
            self.in_outage = true;
        } else {
            self.down_total += period;
            if self.in_outage {
                self.recoveries += 1;
                self.recovered_down += period;
                self.in_outage = false;
            }
        }
        self.up = up;
        self.changed = now.max(self.changed);
    }

    /// Totals, means and the window ratio as of `now`.
    pub fn status(&self, now: Instant) -> AvailabilityStatus {
        let mut current = self.clone();
        current.advance(now);
        let period = now.saturating_duration_since(self.changed);
        let (up_time, down_time) = if self.up {
            (self.up_total + period, self.down_total)
        } else {
            (self.up_total, self.down_total + period)
        };
        let mttr =
            (self.recoveries > 0).then(|| self.recovered_down.div_f64(self.recoveries as f64));
        let mtbf = (self.outages > 0).then(|| up_time.div_f64(self.outages as f64));
        AvailabilityStatus {
            up: self.up,
            in_state_for: period,
            up_time,
            down_time,
            outages: self.outages,
            mttr,
            mtbf,
            ratio: current.window_ratio(),
            window: self.window,
        }
    }

    /// Up share of the time within the window that ends at `accounted`.
    ///
    /// The window spans the current (partial) bucket, the `BUCKETS - 1` before it, and the
    /// part of the oldest one that the current bucket has not yet replaced, counted pro rata.
    fn window_ratio(&self) -> f64 {
        let current = self.index_of(self.accounted);
        let bucket_nanos = self.bucket_len.as_nanos().max(1) as f64;
        let into_current = self
            .accounted
            .saturating_duration_since(self.bucket_start(current))
            .as_nanos() as f64;
        let oldest_share = 1.0 - (into_current / bucket_nanos).min(1.0);
        let (up, down) = self
            .buckets
            .iter()
            .filter(|b| b.index <= current && b.index + BUCKETS as u64 >= current)
            .fold((0.0, 0.0), |(u, d), b| {
                let share = if b.index + BUCKETS as u64 == current {
                    oldest_share
                } else {
                    1.0
                };
                (
                    u + b.up.as_secs_f64() * share,
                    d + b.down.as_secs_f64() * share,
                )
            });
        let total = up + down;
        if total <= 0.0 {
            return if self.up { 1.0 } else { 0.0 };
        }
        up / total
    }

    fn bucket_start(&self, index: u64) -> Instant {
        self.started
            + self
                .bucket_len
                .saturating_mul(u32::try_from(index).unwrap_or(u32::MAX))
    }

    fn index_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started).as_nanos();
        let index = since / self.bucket_len.as_nanos().max(1);
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    /// Puts the time from `accounted` to `now` into the buckets, in the current state.
    fn advance(&mut self, now: Instant) {
        if now <= self.accounted {
            return;
        }
        // Anything older than the window would be overwritten anyway: skip to its start so
        // the loop below runs at most RING + 1 times.
        let span = self.window + self.bucket_len;
        if now.saturating_duration_since(self.accounted) > span {
            self.accounted = now - span;
        }
        while self.accounted < now {
            let index = self.index_of(self.accounted);
            let end = self.bucket_start(index + 1).min(now);
            if end <= self.accounted {
                break;
            }
            let slot = &mut self.buckets[(index % RING as u64) as usize];
            if slot.index != index {
                *slot = Bucket {
                    index,
                    ..Bucket::default()
                };
            }
            let spent = end - self.accounted;
            if self.up {
                slot.up += spent;
            } else {
                slot.down += spent;
            }
            self.accounted = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MIN: Duration = Duration::from_secs(60);

    fn approx(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_tracker_is_fully_available() {
        let a = Availability::new(Instant::now(), true);
        let s = a.status(Instant::now());
        assert!(s.up);
        assert_eq!(s.outages, 0);
        assert_eq!(s.mttr, None);
        assert_eq!(s.mtbf, None);
        approx(s.ratio, 1.0);
        assert_eq!(s.window, DEFAULT_WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_outages_mttr_mtbf_and_the_ratio() {
        let mut a = Availability::new(Instant::now(), true);
        // up 20m, down 5m, up 20m, down 10m, up 5m: one hour.
        advance(20 * MIN).await;
        a.set(Instant::now(), false);
        advance(5 * MIN).await;
        a.set(Instant::now(), true);
        advance(20 * MIN).await;
        a.set(Instant::now(), false);
        advance(10 * MIN).await;
        a.set(Instant::now(), true);
        advance(5 * MIN).await;

        let s = a.status(Instant::now());
        assert!(s.up);
        assert_eq!(s.outages, 2);
        assert_eq!(s.up_time, 45 * MIN);
        assert_eq!(s.down_time, 15 * MIN);
        assert_eq!(s.mttr, Some(Duration::from_secs(450)));
        assert_eq!(s.mtbf, Some(Duration::from_secs(45 * 60 / 2)));
        assert_eq!(s.in_state_for, 5 * MIN);
        approx(s.ratio, 0.75);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ongoing_outage_counts_as_down_but_not_in_mttr() {
        let mut a = Availability::new(Instant::now(), true);
        advance(30 * MIN).await;
        a.set(Instant::now(), false);
        advance(10 * MIN).await;
        let s = a.status(Instant::now());
        assert!(!s.up);
        assert_eq!(s.outages, 1);
        assert_eq!(s.mttr, None);
        assert_eq!(s.mtbf, Some(30 * MIN));
        approx(s.ratio, 0.75);
        // Setting the same state again changes nothing.
        a.set(Instant::now(), false);
        assert_eq!(a.status(Instant::now()).outages, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ratio_forgets_what_left_the_window() {
        let mut a = Availability::new(Instant::now(), true);
        advance(MIN).await;
        a.set(Instant::now(), false);
        advance(30 * MIN).await;
        a.set(Instant::now(), true);
        advance(30 * MIN).await;
        // The window holds the last hour: 30m down, 30m up; the first minute's up time has
        // slid out.
        let s = a.status(Instant::now());
        approx(s.ratio, 30.0 / 60.0);
        advance(Duration::from_secs(30)).await;
        approx(a.status(Instant::now()).ratio, 30.5 / 60.0);
        advance(2 * 3600 * Duration::from_secs(1)).await;
        approx(a.status(Instant::now()).ratio, 1.0);
        // Lifetime totals keep everything.
        assert_eq!(a.status(Instant::now()).down_time, 30 * MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_keeps_bounded_memory_and_an_exact_ratio() {
        let mut a = Availability::with_window(Instant::now(), true, 10 * MIN);
        for _ in 0..1000 {
            advance(Duration::from_secs(3)).await;
            a.set(Instant::now(), false);
            advance(Duration::from_secs(1)).await;
            a.set(Instant::now(), true);
        }
        let s = a.status(Instant::now());
        assert_eq!(s.outages, 1000);
        assert_eq!(s.mttr, Some(Duration::from_secs(1)));
        assert_eq!(s.mtbf, Some(Duration::from_secs(3)));
        approx(s.ratio, 0.75);
        assert_eq!(s.window, 10 * MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn down_from_the_start_is_not_an_outage() {
        let mut a = Availability::new(Instant::now(), false);
        advance(MIN).await;
        let s = a.status(Instant::now());
        approx(s.ratio, 0.0);
        assert_eq!(s.outages, 0);
        a.set(Instant::now(), true);
        let s = a.status(Instant::now());
        assert_eq!(s.mttr, None);
        assert_eq!(s.down_time, MIN);
    }
}
