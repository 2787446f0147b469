//! Per-endpoint load state: in-flight count, request total, usability and the peak-EWMA latency.
//!
//! An [`Endpoint`] is shared (`Arc`) between successive [`EndpointSet`](crate::EndpointSet)
//! snapshots so that its state survives reloads and DNS refreshes. Everything on it is atomic:
//! the pick path only loads, and the request path adds and subtracts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Time constant of the peak-EWMA latency decay: `10s`.
///
/// A sample lower than the current estimate pulls it down with weight `1 - exp(-Δt / 10s)`, and
/// between samples the estimate decays towards zero at the same rate, so an endpoint that was
/// slow a minute ago is tried again. Finagle and linkerd use the same order of magnitude.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Bumped whenever any endpoint's usability actually changes, in any set of the process.
///
/// [`EndpointSet`](crate::EndpointSet) caches its per-level usable counts against this number,
/// so a pick does not rescan every endpoint; one global counter is enough because usability
/// changes are rare (health and ejection events) next to picks.
static USABILITY_EPOCH: AtomicU64 = AtomicU64::new(1);

/// The current usability epoch; see [`USABILITY_EPOCH`].
pub(crate) fn usability_epoch() -> u64 {
    USABILITY_EPOCH.load(Ordering::Acquire)
}

/// Load state of one upstream endpoint; shared (Arc) across snapshots so it survives reloads.
///
/// A new endpoint is usable, has nothing in flight and no latency samples.
#[derive(Debug)]
pub struct Endpoint {
    address: SocketAddr,
    in_flight: AtomicU64,
    requests_total: AtomicU64,
    usable: AtomicBool,
    ewma: PeakEwma,
}

/// Guard for one request on an endpoint: drop decrements in-flight.
///
/// Call [`InFlight::finish`] when a response arrives to feed its latency into the endpoint's
/// peak-EWMA; dropping the guard without finishing (an error or a cancelled request) only
/// releases the in-flight slot.
#[derive(Debug)]
#[must_use = "the request counts as in flight until the guard is dropped"]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

/// Peak-EWMA latency estimate kept in two atomics.
///
/// `stamp` is 0 before the first sample, else nanoseconds since `epoch` plus one.
#[derive(Debug)]
struct PeakEwma {
    epoch: Instant,
    /// `f64` bits of the estimate in nanoseconds, as of `stamp`.
    nanos: AtomicU64,
    stamp: AtomicU64,
}

// === impl Endpoint ===

impl Endpoint {
    /// Creates the state of a fresh endpoint: usable, idle, no latency samples.
    pub fn new(address: SocketAddr) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            address,
            in_flight: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            usable: AtomicBool::new(true),
            ewma: PeakEwma::new(Instant::now()),
        })
    }

    /// The endpoint's socket address (its identity within a cluster).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Requests started on this endpoint and not yet finished or dropped.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests ever started on this endpoint.
    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate, decayed to now; `Duration::ZERO` before the first sample.
    ///
    /// See [`EWMA_DECAY`] for how it moves.
    pub fn ewma_latency(&self) -> Duration {
        match self.ewma.estimate(Instant::now()) {
            Some(nanos) => Duration::from_nanos(nanos as u64),
            None => Duration::ZERO,
        }
    }

    /// Whether pickers may choose this endpoint. Default `true`; health checks and outlier
    /// ejection clear it.
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Marks the endpoint usable or not; every snapshot holding it sees the change at once.
    pub fn set_usable(&self, usable: bool) {
        if self.usable.swap(usable, Ordering::AcqRel) != usable {
            USABILITY_EPOCH.fetch_add(1, Ordering::Release);
        }
    }

    /// Starts one request: in-flight and the request total go up by one until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(self),
        }
    }

    /// The estimate in nanoseconds at `now`, or `None` before the first sample.
    pub(crate) fn ewma_nanos_at(&self, now: Instant) -> Option<f64> {
        self.ewma.estimate(now)
    }
}

// === impl InFlight ===

impl InFlight {
    /// The endpoint this request runs on.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Ends the request, recording `latency` into the endpoint's peak-EWMA.
    pub fn finish(self, latency: Duration) {
        self.endpoint.ewma.observe(Instant::now(), latency);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl PeakEwma ===

impl PeakEwma {
    fn new(epoch: Instant) -> PeakEwma {
        PeakEwma {
            epoch,
            nanos: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }

    fn stamp_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
    }

    /// `exp(-Δt / EWMA_DECAY)` for the time between `stamp` and `now`.
    fn decay(stamp: u64, now_stamp: u64) -> f64 {
        let elapsed = now_stamp.saturating_sub(stamp) as f64;
        (-elapsed / EWMA_DECAY.as_nanos() as f64).exp()
    }

    fn estimate(&self, now: Instant) -> Option<f64> {
        let stamp = self.stamp.load(Ordering::Acquire);
        if stamp == 0 {
            return None;
        }
        let nanos = f64::from_bits(self.nanos.load(Ordering::Relaxed));
        // Reading is Finagle's `observe(0)` without the write: decaying towards zero between
        // samples lets a once-slow endpoint earn traffic back and be measured again.
        Some(nanos * Self::decay(stamp, self.stamp_of(now)))
    }

    fn observe(&self, now: Instant, latency: Duration) {
        let rtt = latency.as_nanos() as f64;
        let now_stamp = self.stamp_of(now);
        let stamp = self.stamp.load(Ordering::Acquire);
        let w = if stamp == 0 {
            0.0
        } else {
            Self::decay(stamp, now_stamp)
        };
        // Two concurrent samples may each blend against the other's stamp; the error is a few
        // microseconds of decay, which a load heuristic does not notice. A lock would not pay.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let prev = f64::from_bits(bits) * w;
                let next = if rtt >= prev {
                    rtt
                } else {
                    prev * w + rtt * (1.0 - w)
                };
                Some(next.to_bits())
            });
        self.stamp.fetch_max(now_stamp, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn new_endpoint_is_usable_idle_and_unsampled() {
        let ep = Endpoint::new(addr(1));
        assert_eq!(ep.address(), addr(1));
        assert!(ep.is_usable());
        assert_eq!(ep.in_flight(), 0);
        assert_eq!(ep.requests_total(), 0);
        assert_eq!(ep.ewma_latency(), Duration::ZERO);
    }

    #[test]
    fn guards_count_in_flight_until_dropped_or_finished() {
        let ep = Endpoint::new(addr(1));
        let a = ep.start();
        let b = ep.start();
        let c = ep.start();
        assert_eq!(ep.in_flight(), 3);
        assert_eq!(ep.requests_total(), 3);
        assert!(Arc::ptr_eq(a.endpoint(), &ep));

        drop(a);
        assert_eq!(ep.in_flight(), 2);
        b.finish(Duration::from_millis(5));
        assert_eq!(ep.in_flight(), 1);
        c.finish(Duration::from_millis(5));
        assert_eq!(ep.in_flight(), 0);
        assert_eq!(ep.requests_total(), 3);
    }

    #[test]
    fn dropping_a_guard_records_no_latency() {
        let ep = Endpoint::new(addr(1));
        drop(ep.start());
        assert_eq!(ep.ewma_latency(), Duration::ZERO);
        ep.start().finish(Duration::from_millis(7));
        assert!(ep.ewma_latency() > Duration::ZERO);
    }

    #[test]
    fn set_usable_toggles() {
        let ep = Endpoint::new(addr(1));
        ep.set_usable(false);
        assert!(!ep.is_usable());
        ep.set_usable(true);
        assert!(ep.is_usable());
    }

    #[tokio::test(start_paused = true)]
    async fn higher_latency_replaces_the_estimate_at_once() {
        let ep = Endpoint::new(addr(1));
        ep.start().finish(Duration::from_millis(10));
        assert_eq!(ep.ewma_latency(), Duration::from_millis(10));
        ep.start().finish(Duration::from_millis(200));
        assert_eq!(ep.ewma_latency(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn lower_latency_moves_the_estimate_with_the_time_constant() {
        let ep = Endpoint::new(addr(1));
        ep.start().finish(Duration::from_millis(100));

        // A low sample right after the peak barely moves it...
        ep.start().finish(Duration::from_millis(1));
        assert_eq!(ep.ewma_latency(), Duration::from_millis(100));

        // ...one time constant later it pulls the (decayed) estimate most of the way.
        tokio::time::advance(EWMA_DECAY).await;
        ep.start().finish(Duration::from_millis(1));
        let decayed = 100.0 * (-1.0f64).exp();
        let expected = decayed * (-1.0f64).exp() + 1.0 * (1.0 - (-1.0f64).exp());
        let got = ep.ewma_latency().as_secs_f64() * 1000.0;
        assert!(
            (got - expected).abs() < 0.01,
            "got {got}ms, want {expected}ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn estimate_decays_towards_zero_between_samples() {
        let ep = Endpoint::new(addr(1));
        ep.start().finish(Duration::from_millis(100));
        tokio::time::advance(EWMA_DECAY).await;
        let one_tau = ep.ewma_latency().as_secs_f64() * 1000.0;
        assert!(
            (one_tau - 100.0 * (-1.0f64).exp()).abs() < 0.01,
            "got {one_tau}ms"
        );
        tokio::time::advance(EWMA_DECAY * 5).await;
        assert!(ep.ewma_latency() < Duration::from_millis(1));
    }
}
