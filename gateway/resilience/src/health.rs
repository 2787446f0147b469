//! Whether each endpoint of a cluster may take traffic: active health-check thresholds and
//! passive outlier ejection combined, with probation, the minimum-healthy floor and the
//! availability accounting they drive.
//!
//! One [`ClusterHealth`] per cluster owns the parameters, the floor and one [`EndpointHealth`]
//! per endpoint address. The gateway keeps the `ClusterHealth` across reloads (identity: the
//! cluster name), calls [`ClusterHealth::reconfigure`] with the new parameters and
//! [`ClusterHealth::sync`] with the new endpoint list; endpoints whose address is unchanged keep
//! their state. Both change state the serving config uses, so the gateway calls them only once
//! a reload can no longer fail. The decision is written to [`Endpoint::set_usable`], which is all the balancer
//! reads.
//!
//! # The combination rule
//!
//! **usable = active-healthy && not ejected.** Each half has its own inputs:
//!
//! - *Active health* comes from [`ClusterHealth::record_active`]: an endpoint turns unhealthy
//!   after `unhealthy_threshold` consecutive failed checks (default 3) and healthy again after
//!   `healthy_threshold` consecutive passes (default 2). Endpoints start healthy, so a gateway
//!   serves at once instead of waiting up to an interval for its first checks. Without active
//!   checks an endpoint is always active-healthy.
//! - *Ejection* comes from request outcomes ([`ClusterHealth::record`]) and the periodic rate
//!   detectors ([`ClusterHealth::tick`]); see [`crate::outlier`] for the detectors.
//!
//! Where they meet:
//!
//! - an ejected endpoint that passes `healthy_threshold` consecutive active checks after its
//!   ejection is readmitted at once (Envoy's default `successful_active_health_check_uneject_host`);
//!   its ejection count is kept, so the next ejection is still longer;
//! - an active-unhealthy endpoint whose ejection ends goes on probation but stays unusable until
//!   its active checks pass, and then it is readmitted by those checks;
//! - active failures are facts and are never held back by the floor; the balancer's panic mode
//!   deals with a cluster where too few endpoints are healthy. Ejections are inferences from
//!   traffic, so the floor does hold them back.
//!
//! # Ejection, probation, readmission
//!
//! ```text
//!  serving --(detector)--> ejected --(time up)--> probation --(picked: on_pick)--> probing
//!     ^                       ^                                                       |
//!     |                       +--------------(probe fails: count + 1)-----------------+
//!     +----------------------------------(probe succeeds)----------------------------+
//! ```
//!
//! An ejection lasts `base_ejection_time * count`, capped; the count decays by one per
//! `interval` spent serving. When the time is up, the endpoint is on **probation**: usable, so
//! the balancer may pick it, and the first pick ([`ClusterHealth::on_pick`]) claims the single
//! probe, making it unusable again until that request's outcome is recorded. Success readmits
//! it; failure ejects it again at once with the count increased. This works without active
//! checks. Any outcome recorded on probation settles it, so a gateway that skips `on_pick` still
//! recovers (it just risks a few concurrent probes). A probe whose outcome never arrives is
//! released back to probation after `base_ejection_time`.
//!
//! An endpoint is ejected only if the usable endpoints left afterwards are at least the floor
//! ([`MinHealthy`](crate::outlier::MinHealthy), default one); otherwise the detector reports
//! [`Event::EjectionSuppressed`] and the endpoint keeps serving. Ejecting an endpoint that is
//! already unusable never lowers the count, so it is always allowed.
//!
//! # Availability
//!
//! Each endpoint's [`Availability`] counts it **up** while it is active-healthy and serving:
//! an ejection is an outage that lasts until the endpoint is readmitted, probation included, so
//! a probe does not split one outage into two. The cluster is up while at least one endpoint is.
//!
//! # Cost on the request path
//!
//! [`ClusterHealth::record`] with a success, and [`ClusterHealth::on_pick`] on an endpoint that
//! is not on probation, are a few relaxed atomic operations: no lock, no allocation. Locks (the
//! cluster's, then the endpoint's, always in that order) are taken only when something changes:
//! a failure run reaching its threshold, a probe, an active check, a tick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use levee_balance::Endpoint;
use rustc_hash::FxHashMap;
use tokio::time::Instant;

use crate::availability::{Availability, AvailabilityStatus, DEFAULT_WINDOW};
use crate::outlier::{self, EjectReason, Outcome, OutlierParams, Volume};

/// Active health-check thresholds (mirror of the config's `health_check` counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveParams {
    /// Consecutive failed checks that make a healthy endpoint unhealthy. Default 3; 0 acts as 1.
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that make an unhealthy endpoint healthy, or readmit an ejected
    /// one. Default 2; 0 acts as 1.
    pub healthy_threshold: u32,
}

/// A state change, returned to the caller to log and count.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A detector ejected the endpoint.
    Ejected {
        /// The endpoint.
        address: SocketAddr,
        /// The detector.
        reason: EjectReason,
        /// How long the ejection lasts.
        duration: Duration,
        /// The endpoint's ejection count, this ejection included.
        ejection_count: u32,
    },
    /// A detector found an outlier, but ejecting it would take the usable endpoints below the
    /// floor, so it keeps serving.
    EjectionSuppressed {
        /// The endpoint.
        address: SocketAddr,
        /// The detector.
        reason: EjectReason,
        /// Usable endpoints in the cluster, the outlier included.
        usable: usize,
        /// The floor that would have been crossed.
        floor: usize,
    },
    /// The ejection time is up (or a probe went unanswered): the next pick is a probe.
    Probation {
        /// The endpoint.
        address: SocketAddr,
    },
    /// The endpoint serves again.
    Readmitted {
        /// The endpoint.
        address: SocketAddr,
        /// What readmitted it.
        via: Readmission,
    },
    /// The probe request failed: ejected again at once, for longer.
    ReEjected {
        /// The endpoint.
        address: SocketAddr,
        /// The reason of the original ejection.
        reason: EjectReason,
        /// How long this ejection lasts.
        duration: Duration,
        /// The endpoint's ejection count, this ejection included.
        ejection_count: u32,
    },
    /// Active health checks crossed a threshold.
    HealthChanged {
        /// The endpoint.
        address: SocketAddr,
        /// The new active health.
        healthy: bool,
    },
}

/// What ended an ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Readmission {
    /// The probe request on probation succeeded.
    Probe,
    /// `healthy_threshold` active checks passed in a row after the ejection.
    ActiveCheck,
    /// Outlier detection was turned off by a reload.
    DetectionDisabled,
}

/// Health state of one cluster's endpoints; see the module docs.
#[derive(Debug)]
pub struct ClusterHealth {
    name: String,
    /// Hot-path copies of the parameters; 0 turns a run detector off.
    enabled: AtomicBool,
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    inner: Mutex<ClusterInner>,
    /// The tracked endpoints by address, rebuilt by [`ClusterHealth::sync`]: the request path
    /// looks endpoints up here under a read lock instead of scanning under the cluster lock.
    /// Keyed by config-given addresses, so the fast unkeyed hash is safe.
    index: RwLock<FxHashMap<SocketAddr, Arc<EndpointHealth>>>,
}

#[derive(Debug)]
struct ClusterInner {
    outlier: OutlierParams,
    active: Option<ActiveParams>,
    endpoints: Vec<Arc<EndpointHealth>>,
    last_detection: Instant,
    availability: Availability,
    window: Duration,
}

/// Health state of one endpoint, shared (`Arc`) so it survives reloads; see the module docs.
#[derive(Debug)]
pub struct EndpointHealth {
    address: SocketAddr,
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    /// Requests and failures since the last detection run.
    requests: AtomicU64,
    failures: AtomicU64,
    /// Mirrors of the locked state for lock-free reads.
    phase: AtomicU8,
    usable: AtomicBool,
    up: AtomicBool,
    state: Mutex<EndpointState>,
}

#[derive(Debug)]
struct EndpointState {
    endpoint: Arc<Endpoint>,
    healthy: bool,
    passes: u32,
    failures: u32,
    passes_since_ejection: u32,
    ejection: Ejection,
    ejection_count: u32,
    readmitted_at: Option<Instant>,
    availability: Availability,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ejection {
    Serving,
    Ejected { reason: EjectReason, until: Instant },
    Probation { reason: EjectReason },
    Probing { reason: EjectReason, since: Instant },
}

const PHASE_SERVING: u8 = 0;
const PHASE_EJECTED: u8 = 1;
const PHASE_PROBATION: u8 = 2;
const PHASE_PROBING: u8 = 3;

/// One endpoint's health for `/clusters` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointStatus {
    /// The endpoint.
    pub address: SocketAddr,
    /// Whether the balancer may pick it.
    pub usable: bool,
    /// Active health (always `true` without active checks).
    pub healthy: bool,
    /// The current ejection, if any.
    pub ejection: Option<EjectionStatus>,
    /// On probation: the next pick is a probe (or, if `probing`, the probe is out).
    pub probation: bool,
    /// The probe request is in flight.
    pub probing: bool,
    /// Ejection count (decays by one per `interval` spent serving).
    pub ejection_count: u32,
    /// Up/down accounting.
    pub availability: AvailabilityStatus,
}

/// An ongoing ejection in an [`EndpointStatus`].
#[derive(Clone, Debug, PartialEq)]
pub struct EjectionStatus {
    /// The detector that ejected it.
    pub reason: EjectReason,
    /// Time until probation.
    pub remaining: Duration,
}

/// One cluster's health summary for `/clusters` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterStatus {
    /// The cluster name.
    pub name: String,
    /// Endpoints tracked.
    pub endpoints: usize,
    /// Endpoints the balancer may pick.
    pub usable: usize,
    /// Ejected endpoints, probation included.
    pub ejected: usize,
    /// The cluster's accounting: down while no endpoint is up.
    pub availability: AvailabilityStatus,
    /// Mean of the endpoints' window ratios; `None` without endpoints.
    pub mean_endpoint_availability: Option<f64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before anything can panic, so a
    // poisoned lock still guards good data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ActiveParams ===

impl Default for ActiveParams {
    fn default() -> Self {
        ActiveParams {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

// === impl Event ===

impl Event {
    /// The endpoint the event is about.
    pub fn address(&self) -> SocketAddr {
        match self {
            Event::Ejected { address, .. }
            | Event::EjectionSuppressed { address, .. }
            | Event::Probation { address }
            | Event::Readmitted { address, .. }
            | Event::ReEjected { address, .. }
            | Event::HealthChanged { address, .. } => *address,
        }
    }

    /// A stable snake_case name, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Ejected { .. } => "ejected",
            Event::EjectionSuppressed { .. } => "ejection_suppressed",
            Event::Probation { .. } => "probation",
            Event::Readmitted { .. } => "readmitted",
            Event::ReEjected { .. } => "re_ejected",
            Event::HealthChanged { .. } => "health_changed",
        }
    }
}

// === impl ClusterHealth ===

impl ClusterHealth {
    /// A cluster with no endpoints yet (add them with [`ClusterHealth::sync`]); `active` is
    /// `None` when the cluster has no active health checks.
    pub fn new(
        name: impl Into<String>,
        outlier: OutlierParams,
        active: Option<ActiveParams>,
    ) -> ClusterHealth {
        let now = Instant::now();
        let health = ClusterHealth {
            name: name.into(),
            enabled: AtomicBool::new(false),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            index: RwLock::new(FxHashMap::default()),
            inner: Mutex::new(ClusterInner {
                outlier,
                active,
                endpoints: Vec::new(),
                last_detection: now,
                availability: Availability::new(now, false),
                window: DEFAULT_WINDOW,
            }),
        };
        health.store_limits(&lock(&health.inner).outlier);
        health
    }

    /// Sets the rolling window of the availability ratio (default one hour) for the cluster
    /// and for endpoints added from now on.
    pub fn with_availability_window(self, window: Duration) -> ClusterHealth {
        {
            let mut inner = lock(&self.inner);
            inner.window = window;
            inner.availability = Availability::with_window(Instant::now(), false, window);
        }
        self
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outlier detection parameters in force.
    pub fn outlier_params(&self) -> OutlierParams {
        lock(&self.inner).outlier.clone()
    }

    /// The active health-check thresholds in force; `None` without active checks.
    pub fn active_params(&self) -> Option<ActiveParams> {
        lock(&self.inner).active
    }

    /// Applies reloaded parameters, keeping every endpoint's state.
    ///
    /// Turning outlier detection off readmits every ejected endpoint; removing active checks
    /// makes every endpoint active-healthy.
    pub fn reconfigure(&self, outlier: OutlierParams, active: Option<ActiveParams>) -> Vec<Event> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        self.store_limits(&outlier);
        let mut events = Vec::new();
        for ep in &inner.endpoints {
            let mut st = lock(&ep.state);
            if !outlier.enabled && st.ejection != Ejection::Serving {
                events.push(ep.readmit(&mut st, now, Readmission::DetectionDisabled));
            }
            if active.is_none() && !st.healthy {
                st.healthy = true;
                st.passes = 0;
                st.failures = 0;
                events.push(Event::HealthChanged {
                    address: ep.address,
                    healthy: true,
                });
            }
            ep.settle(&mut st, now);
        }
        inner.outlier = outlier;
        inner.active = active;
        inner.refresh(now);
        events
    }

    /// Makes the tracked endpoints exactly `endpoints`: new addresses start healthy and
    /// serving, known ones keep their state (and take over the given `Endpoint`, whose
    /// usability is set at once), missing ones are dropped.
    pub fn sync(&self, endpoints: &[Arc<Endpoint>]) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let known: HashMap<SocketAddr, &Arc<EndpointHealth>> =
            inner.endpoints.iter().map(|ep| (ep.address, ep)).collect();
        let mut seen = HashMap::with_capacity(endpoints.len());
        let mut next = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if seen.insert(endpoint.address(), ()).is_some() {
                continue;
            }
            let health = match known.get(&endpoint.address()) {
                Some(&ep) => {
                    let mut st = lock(&ep.state);
                    if !Arc::ptr_eq(&st.endpoint, endpoint) {
                        st.endpoint = Arc::clone(endpoint);
                    }
                    ep.settle(&mut st, now);
                    Arc::clone(ep)
                }
                None => EndpointHealth::new(Arc::clone(endpoint), now, inner.window),
            };
            next.push(health);
        }
        *self.index.write().unwrap_or_else(PoisonError::into_inner) =
            next.iter().map(|ep| (ep.address, Arc::clone(ep))).collect();
        inner.endpoints = next;
        inner.refresh(now);
    }

    /// The state of the endpoint at `address`, if tracked: a hash lookup under a read lock,
    /// cheap enough for the request path.
    pub fn health_of(&self, address: SocketAddr) -> Option<Arc<EndpointHealth>> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address)
            .cloned()
    }

    /// Every tracked endpoint, in the order given to [`ClusterHealth::sync`].
    pub fn endpoints(&self) -> Vec<Arc<EndpointHealth>> {
        lock(&self.inner).endpoints.clone()
    }

    /// Feeds one request outcome into the passive detectors; returns the ejection (or
    /// suppressed ejection, readmission, re-ejection) it caused.
    ///
    /// A success costs a few relaxed atomics. Outcomes of an ejected endpoint (requests that
    /// started before the ejection, or panic traffic) only count in the rate detectors'
    /// volumes. On probation, the outcome settles the probe.
    pub fn record(&self, ep: &EndpointHealth, outcome: Outcome) -> Option<Event> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        ep.requests.fetch_add(1, Ordering::Relaxed);
        let failure = outcome.is_failure();
        if failure {
            ep.failures.fetch_add(1, Ordering::Relaxed);
        }
        match ep.phase.load(Ordering::Acquire) {
            PHASE_SERVING => {}
            PHASE_EJECTED => return None,
            _ => return self.settle_probe(ep, outcome),
        }
        if !failure {
            ep.reset_runs();
            return None;
        }
        let run_5xx = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let run_gateway = if outcome.is_gateway_failure() {
            ep.consecutive_gateway_failure
                .fetch_add(1, Ordering::Relaxed)
                + 1
        } else {
            ep.consecutive_gateway_failure.store(0, Ordering::Relaxed);
            0
        };
        let reached = |limit: &AtomicU32, run: u32| {
            let limit = limit.load(Ordering::Relaxed);
            limit != 0 && run >= limit
        };
        if reached(&self.consecutive_gateway_failure, run_gateway) {
            return self.eject_on_run(ep, EjectReason::ConsecutiveGatewayFailure);
        }
        if reached(&self.consecutive_5xx, run_5xx) {
            return self.eject_on_run(ep, EjectReason::Consecutive5xx);
        }
        None
    }

    /// Tells the state that the balancer picked `ep` for a request. If `ep` is on probation,
    /// this request becomes its single probe: the endpoint is unusable until the outcome is
    /// recorded. Returns whether this request is the probe.
    ///
    /// Lock-free unless `ep` is on probation.
    pub fn on_pick(&self, ep: &EndpointHealth) -> bool {
        if ep.phase.load(Ordering::Acquire) != PHASE_PROBATION {
            return false;
        }
        let now = Instant::now();
        let _inner = lock(&self.inner);
        let mut st = lock(&ep.state);
        let Ejection::Probation { reason } = st.ejection else {
            return false;
        };
        if !st.healthy {
            // Picked only because the set is in panic: not a probe, it proves nothing.
            return false;
        }
        st.ejection = Ejection::Probing { reason, since: now };
        ep.settle(&mut st, now);
        true
    }

    /// Gives back the probation probe that [`ClusterHealth::on_pick`] made of a request which
    /// ended without an outcome (its client failed or went away), so the next request probes
    /// at once instead of after `base_ejection_time`.
    pub fn release_probe(&self, ep: &EndpointHealth) {
        if ep.phase.load(Ordering::Acquire) != PHASE_PROBING {
            return;
        }
        let now = Instant::now();
        let _inner = lock(&self.inner);
        let mut st = lock(&ep.state);
        if let Ejection::Probing { reason, .. } = st.ejection {
            st.ejection = Ejection::Probation { reason };
            ep.settle(&mut st, now);
        }
    }

    /// Feeds one active health-check result. Returns the health change and, when the checks
    /// readmit an ejected endpoint, the readmission. Without active params configured, the
    /// default thresholds apply.
    pub fn record_active(&self, ep: &EndpointHealth, passed: bool) -> Vec<Event> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let params = inner.active.unwrap_or_default();
        let healthy_after = params.healthy_threshold.max(1);
        let unhealthy_after = params.unhealthy_threshold.max(1);
        let mut events = Vec::new();
        let mut st = lock(&ep.state);
        if passed {
            st.failures = 0;
            st.passes = st.passes.saturating_add(1);
            st.passes_since_ejection = st.passes_since_ejection.saturating_add(1);
            if !st.healthy && st.passes >= healthy_after {
                st.healthy = true;
                events.push(Event::HealthChanged {
                    address: ep.address,
                    healthy: true,
                });
            }
            if st.healthy
                && st.ejection != Ejection::Serving
                && st.passes_since_ejection >= healthy_after
            {
                events.push(ep.readmit(&mut st, now, Readmission::ActiveCheck));
            }
        } else {
            st.passes = 0;
            st.passes_since_ejection = 0;
            st.failures = st.failures.saturating_add(1);
            if st.healthy && st.failures >= unhealthy_after {
                st.healthy = false;
                events.push(Event::HealthChanged {
                    address: ep.address,
                    healthy: false,
                });
            }
        }
        ep.settle(&mut st, now);
        drop(st);
        inner.refresh(now);
        events
    }

    /// The periodic work; call it every second or so. Ends ejections whose time is up
    /// (probation) and releases unanswered probes; every `interval`, decays ejection counts and
    /// runs the success-rate and failure-percentage detectors over the requests recorded since
    /// the previous run.
    pub fn tick(&self, now: Instant) -> Vec<Event> {
        let mut inner = lock(&self.inner);
        let mut events = Vec::new();
        let probe_timeout = inner.outlier.base_ejection_time;
        for ep in &inner.endpoints {
            let mut st = lock(&ep.state);
            let reason = match st.ejection {
                Ejection::Ejected { reason, until } if now >= until => reason,
                Ejection::Probing { reason, since }
                    if now.saturating_duration_since(since) >= probe_timeout =>
                {
                    reason
                }
                _ => continue,
            };
            st.ejection = Ejection::Probation { reason };
            ep.settle(&mut st, now);
            events.push(Event::Probation {
                address: ep.address,
            });
        }
        if now.saturating_duration_since(inner.last_detection) >= inner.outlier.interval {
            inner.last_detection = now;
            inner.detect(now, &mut events);
        }
        inner.refresh(now);
        events
    }

    /// Endpoint counts and the cluster's availability as of `now`.
    pub fn status(&self, now: Instant) -> ClusterStatus {
        let inner = lock(&self.inner);
        let usable = inner
            .endpoints
            .iter()
            .filter(|ep| ep.usable.load(Ordering::Acquire))
            .count();
        let ejected = inner
            .endpoints
            .iter()
            .filter(|ep| ep.phase.load(Ordering::Acquire) != PHASE_SERVING)
            .count();
        let ratios: Vec<f64> = inner
            .endpoints
            .iter()
            .map(|ep| lock(&ep.state).availability.status(now).ratio)
            .collect();
        let mean_endpoint_availability =
            (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
        ClusterStatus {
            name: self.name.clone(),
            endpoints: inner.endpoints.len(),
            usable,
            ejected,
            availability: inner.availability.status(now),
            mean_endpoint_availability,
        }
    }

    fn store_limits(&self, outlier: &OutlierParams) {
        self.enabled.store(outlier.enabled, Ordering::Relaxed);
        self.consecutive_5xx
            .store(outlier.consecutive_5xx.unwrap_or(0), Ordering::Relaxed);
        self.consecutive_gateway_failure.store(
            outlier.consecutive_gateway_failure.unwrap_or(0),
            Ordering::Relaxed,
        );
    }

    fn eject_on_run(&self, ep: &EndpointHealth, reason: EjectReason) -> Option<Event> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let mut st = lock(&ep.state);
        // The run starts over whether or not the ejection happens, so a suppressed outlier
        // reports again after another full run, not on every failure.
        ep.reset_runs();
        if st.ejection != Ejection::Serving {
            return None;
        }
        let event = inner.eject(ep, &mut st, reason, now, false);
        drop(st);
        inner.refresh(now);
        Some(event)
    }

    fn settle_probe(&self, ep: &EndpointHealth, outcome: Outcome) -> Option<Event> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let mut st = lock(&ep.state);
        let reason = match st.ejection {
            Ejection::Probation { reason } | Ejection::Probing { reason, .. } => reason,
            Ejection::Serving | Ejection::Ejected { .. } => return None,
        };
        let event = if outcome.is_failure() {
            inner.eject(ep, &mut st, reason, now, true)
        } else {
            ep.readmit(&mut st, now, Readmission::Probe)
        };
        drop(st);
        inner.refresh(now);
        Some(event)
    }
}

// === impl ClusterInner ===

impl ClusterInner {
    /// Ejects `ep` unless the floor forbids it. `probe` marks a failed probe (a re-ejection).
    fn eject(
        &self,
        ep: &EndpointHealth,
        st: &mut EndpointState,
        reason: EjectReason,
        now: Instant,
        probe: bool,
    ) -> Event {
        if ep.usable.load(Ordering::Acquire) {
            let usable = self
                .endpoints
                .iter()
                .filter(|e| e.usable.load(Ordering::Acquire))
                .count();
            let floor = self.outlier.min_healthy.floor(self.endpoints.len());
            if usable.saturating_sub(1) < floor {
                return Event::EjectionSuppressed {
                    address: ep.address,
                    reason,
                    usable,
                    floor,
                };
            }
        }
        st.ejection_count = st
            .ejection_count
            .saturating_add(1)
            .min(self.outlier.max_ejection_count());
        let duration = self.outlier.ejection_duration(st.ejection_count);
        st.ejection = Ejection::Ejected {
            reason,
            until: now + duration,
        };
        st.passes_since_ejection = 0;
        ep.reset_runs();
        ep.settle(st, now);
        if probe {
            Event::ReEjected {
                address: ep.address,
                reason,
                duration,
                ejection_count: st.ejection_count,
            }
        } else {
            Event::Ejected {
                address: ep.address,
                reason,
                duration,
                ejection_count: st.ejection_count,
            }
        }
    }

    /// One detection run: decay, then the rate detectors over the interval's volumes.
    fn detect(&self, now: Instant, events: &mut Vec<Event>) {
        let interval = self.outlier.interval;
        let mut volumes = Vec::with_capacity(self.endpoints.len());
        for (i, ep) in self.endpoints.iter().enumerate() {
            volumes.push((i, ep.take_volume()));
            let mut st = lock(&ep.state);
            let served_long_enough = st
                .readmitted_at
                .is_none_or(|at| now.saturating_duration_since(at) >= interval);
            if st.ejection == Ejection::Serving && st.ejection_count > 0 && served_long_enough {
                st.ejection_count -= 1;
            }
        }
        if !self.outlier.enabled {
            return;
        }
        if let Some(params) = &self.outlier.success_rate {
            for i in outlier::success_rate_outliers(params, &volumes) {
                self.eject_serving(i, EjectReason::SuccessRate, now, events);
            }
        }
        if let Some(params) = &self.outlier.failure_percentage {
            for i in outlier::failure_percentage_outliers(params, &volumes) {
                self.eject_serving(i, EjectReason::FailurePercentage, now, events);
            }
        }
    }

    fn eject_serving(&self, i: usize, reason: EjectReason, now: Instant, events: &mut Vec<Event>) {
        let Some(ep) = self.endpoints.get(i) else {
            return;
        };
        let mut st = lock(&ep.state);
        if st.ejection == Ejection::Serving {
            events.push(self.eject(ep, &mut st, reason, now, false));
        }
    }

    /// The cluster is up while any endpoint is.
    fn refresh(&mut self, now: Instant) {
        let up = self
            .endpoints
            .iter()
            .any(|ep| ep.up.load(Ordering::Acquire));
        self.availability.set(now, up);
    }
}

// === impl EndpointHealth ===

impl EndpointHealth {
    fn new(endpoint: Arc<Endpoint>, now: Instant, window: Duration) -> Arc<EndpointHealth> {
        let health = Arc::new(EndpointHealth {
            address: endpoint.address(),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            phase: AtomicU8::new(PHASE_SERVING),
            usable: AtomicBool::new(true),
            up: AtomicBool::new(true),
            state: Mutex::new(EndpointState {
                endpoint,
                healthy: true,
                passes: 0,
                failures: 0,
                passes_since_ejection: 0,
                ejection: Ejection::Serving,
                ejection_count: 0,
                readmitted_at: None,
                availability: Availability::with_window(now, true, window),
            }),
        });
        {
            let mut st = lock(&health.state);
            health.settle(&mut st, now);
        }
        health
    }

    /// The endpoint's address (its identity within the cluster).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether the balancer may pick it: active-healthy and serving or on probation.
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Health, ejection, probation and availability as of `now`.
    pub fn status(&self, now: Instant) -> EndpointStatus {
        let st = lock(&self.state);
        let ejection = match st.ejection {
            Ejection::Ejected { reason, until } => Some(EjectionStatus {
                reason,
                remaining: until.saturating_duration_since(now),
            }),
            _ => None,
        };
        EndpointStatus {
            address: self.address,
            usable: self.is_usable(),
            healthy: st.healthy,
            ejection,
            probation: matches!(
                st.ejection,
                Ejection::Probation { .. } | Ejection::Probing { .. }
            ),
            probing: matches!(st.ejection, Ejection::Probing { .. }),
            ejection_count: st.ejection_count,
            availability: st.availability.status(now),
        }
    }

    /// Recomputes usability and availability from the state and publishes them.
    fn settle(&self, st: &mut EndpointState, now: Instant) {
        let serving = st.ejection == Ejection::Serving;
        let usable = st.healthy && (serving || matches!(st.ejection, Ejection::Probation { .. }));
        let up = st.healthy && serving;
        st.endpoint.set_usable(usable);
        st.availability.set(now, up);
        self.usable.store(usable, Ordering::Release);
        self.up.store(up, Ordering::Release);
        let phase = match st.ejection {
            Ejection::Serving => PHASE_SERVING,
            Ejection::Ejected { .. } => PHASE_EJECTED,
            Ejection::Probation { .. } => PHASE_PROBATION,
            Ejection::Probing { .. } => PHASE_PROBING,
        };
        self.phase.store(phase, Ordering::Release);
    }

    fn readmit(&self, st: &mut EndpointState, now: Instant, via: Readmission) -> Event {
        st.ejection = Ejection::Serving;
        st.readmitted_at = Some(now);
        self.reset_runs();
        self.settle(st, now);
        Event::Readmitted {
            address: self.address,
            via,
        }
    }

    /// Clears both failure runs; loads first so a success on a clean endpoint writes nothing
    /// (no cache-line ping-pong between cores serving the same endpoint).
    fn reset_runs(&self) {
        if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        if self.consecutive_gateway_failure.load(Ordering::Relaxed) != 0 {
            self.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        }
    }

    fn take_volume(&self) -> Volume {
        Volume {
            requests: self.requests.swap(0, Ordering::Relaxed),
            failures: self.failures.swap(0, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlier::{FailurePercentageParams, MinHealthy, SuccessRateParams};
    use tokio::time::advance;

    const SEC: Duration = Duration::from_secs(1);

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
    }

    /// Consecutive detectors only, default times and floor.
    fn passive() -> OutlierParams {
        OutlierParams {
            success_rate: None,
            ..OutlierParams::default()
        }
    }

    struct Fixture {
        cluster: ClusterHealth,
        endpoints: Vec<Arc<Endpoint>>,
        health: Vec<Arc<EndpointHealth>>,
    }

    fn fixture(n: usize, outlier: OutlierParams, active: Option<ActiveParams>) -> Fixture {
        let cluster = ClusterHealth::new("api", outlier, active);
        let endpoints: Vec<_> = (0..n).map(|i| Endpoint::new(addr(i))).collect();
        cluster.sync(&endpoints);
        let health = endpoints
            .iter()
            .map(|ep| cluster.health_of(ep.address()).expect("tracked"))
            .collect();
        Fixture {
            cluster,
            endpoints,
            health,
        }
    }

    impl Fixture {
        fn record(&self, i: usize, outcome: Outcome, times: usize) -> Vec<Event> {
            (0..times)
                .filter_map(|_| self.cluster.record(&self.health[i], outcome))
                .collect()
        }

        fn fail(&self, i: usize, times: usize) -> Vec<Event> {
            self.record(i, Outcome::Status(500), times)
        }

        fn check(&self, i: usize, passed: bool, times: usize) -> Vec<Event> {
            (0..times)
                .flat_map(|_| self.cluster.record_active(&self.health[i], passed))
                .collect()
        }

        fn tick(&self) -> Vec<Event> {
            self.cluster.tick(Instant::now())
        }

        fn usable(&self, i: usize) -> bool {
            assert_eq!(self.endpoints[i].is_usable(), self.health[i].is_usable());
            self.endpoints[i].is_usable()
        }

        fn status(&self, i: usize) -> EndpointStatus {
            self.health[i].status(Instant::now())
        }

        /// Lets ejection of `i` run out and settles its probe with `outcome`.
        async fn probe(&self, i: usize, outcome: Outcome) -> Option<Event> {
            let left = self
                .status(i)
                .ejection
                .map_or(Duration::ZERO, |e| e.remaining);
            advance(left).await;
            let events = self.tick();
            assert!(
                events.contains(&Event::Probation { address: addr(i) }),
                "{events:?}"
            );
            assert!(self.cluster.on_pick(&self.health[i]));
            self.cluster.record(&self.health[i], outcome)
        }
    }

    fn ejected(i: usize, reason: EjectReason, secs: u64, count: u32) -> Event {
        Event::Ejected {
            address: addr(i),
            reason,
            duration: Duration::from_secs(secs),
            ejection_count: count,
        }
    }

    fn re_ejected(i: usize, secs: u64, count: u32) -> Event {
        Event::ReEjected {
            address: addr(i),
            reason: EjectReason::Consecutive5xx,
            duration: Duration::from_secs(secs),
            ejection_count: count,
        }
    }

    // === active thresholds ===

    #[tokio::test(start_paused = true)]
    async fn active_checks_flip_health_only_at_the_thresholds() {
        let f = fixture(2, passive(), Some(ActiveParams::default()));
        assert!(f.usable(0));
        assert!(f.check(0, false, 2).is_empty());
        // A pass in between starts the failure count over.
        assert!(f.check(0, true, 1).is_empty());
        assert!(f.check(0, false, 2).is_empty());
        assert!(f.usable(0));
        let events = f.check(0, false, 1);
        assert_eq!(
            events,
            [Event::HealthChanged {
                address: addr(0),
                healthy: false
            }]
        );
        assert!(!f.usable(0));
        assert!(!f.status(0).healthy);

        assert!(f.check(0, true, 1).is_empty());
        assert!(!f.usable(0));
        let events = f.check(0, true, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind(), "health_changed");
        assert!(f.usable(0));
    }

    #[tokio::test(start_paused = true)]
    async fn active_failures_are_not_held_back_by_the_floor() {
        let f = fixture(1, passive(), Some(ActiveParams::default()));
        f.check(0, false, 3);
        assert!(!f.usable(0));
        assert_eq!(f.cluster.status(Instant::now()).usable, 0);
    }

    // === consecutive detectors ===

    #[tokio::test(start_paused = true)]
    async fn ejects_endpoint_after_five_consecutive_5xx() {
        let f = fixture(3, passive(), None);
        assert!(f.fail(0, 4).is_empty());
        // A success breaks the run.
        assert!(f.record(0, Outcome::Success, 1).is_empty());
        assert!(f.fail(0, 4).is_empty());
        assert!(f.usable(0));
        let events = f.fail(0, 1);
        assert_eq!(events, [ejected(0, EjectReason::Consecutive5xx, 30, 1)]);
        assert!(!f.usable(0));
        let status = f.status(0);
        let ejection = status.ejection.expect("ejected");
        assert_eq!(ejection.reason, EjectReason::Consecutive5xx);
        assert_eq!(ejection.remaining, 30 * SEC);
        assert_eq!(status.ejection_count, 1);
        // Stragglers on an ejected endpoint change nothing.
        assert!(f.fail(0, 10).is_empty());
        assert!(f.usable(1) && f.usable(2));
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_five_consecutive_gateway_failures() {
        let f = fixture(3, passive(), None);
        let mut events = f.record(0, Outcome::GatewayFailure, 2);
        events.extend(f.record(0, Outcome::Status(503), 2));
        assert!(events.is_empty());
        let events = f.record(0, Outcome::Status(504), 1);
        assert_eq!(
            events,
            [ejected(0, EjectReason::ConsecutiveGatewayFailure, 30, 1)]
        );

        // A plain 500 breaks a gateway-failure run but continues a 5xx run.
        let mut events = f.record(1, Outcome::GatewayFailure, 2);
        events.extend(f.record(1, Outcome::Status(500), 1));
        events.extend(f.record(1, Outcome::Status(502), 1));
        assert!(events.is_empty());
        let events = f.record(1, Outcome::GatewayFailure, 1);
        assert_eq!(events, [ejected(1, EjectReason::Consecutive5xx, 30, 1)]);

        let gateway_only = fixture(
            2,
            OutlierParams {
                consecutive_5xx: None,
                ..passive()
            },
            None,
        );
        let mut events = gateway_only.record(0, Outcome::GatewayFailure, 4);
        events.extend(gateway_only.record(0, Outcome::Status(500), 1));
        events.extend(gateway_only.record(0, Outcome::GatewayFailure, 4));
        assert!(events.is_empty());
        assert_eq!(
            gateway_only.record(0, Outcome::GatewayFailure, 1),
            [ejected(0, EjectReason::ConsecutiveGatewayFailure, 30, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_detector_set_to_none_is_off() {
        let f = fixture(
            3,
            OutlierParams {
                consecutive_5xx: None,
                ..passive()
            },
            None,
        );
        assert!(f.fail(0, 20).is_empty());
        assert!(f.usable(0));
        assert_eq!(f.record(0, Outcome::GatewayFailure, 5).len(), 1);
    }

    // === ejection time, probation, decay ===

    #[tokio::test(start_paused = true)]
    async fn probation_sends_a_single_probe_and_success_readmits() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        advance(29 * SEC).await;
        assert!(f.tick().is_empty());
        assert!(!f.usable(0));
        advance(SEC).await;
        assert_eq!(f.tick(), [Event::Probation { address: addr(0) }]);
        assert!(f.usable(0));
        assert!(f.status(0).probation);

        // The first pick claims the probe; the endpoint is out until its outcome.
        assert!(f.cluster.on_pick(&f.health[0]));
        assert!(!f.usable(0));
        assert!(f.status(0).probing);
        assert!(!f.cluster.on_pick(&f.health[0]));
        assert!(!f.cluster.on_pick(&f.health[1]));

        let event = f.cluster.record(&f.health[0], Outcome::Success);
        assert_eq!(
            event,
            Some(Event::Readmitted {
                address: addr(0),
                via: Readmission::Probe
            })
        );
        assert!(f.usable(0));
        let status = f.status(0);
        assert!(!status.probation && status.ejection.is_none());
        assert_eq!(status.ejection_count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_re_ejects_at_once_for_longer() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        let event = f.probe(0, Outcome::Status(503)).await;
        assert_eq!(event, Some(re_ejected(0, 60, 2)));
        assert!(!f.usable(0));
        assert_eq!(f.status(0).ejection.expect("ejected").remaining, 60 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn probation_works_without_on_pick() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        advance(30 * SEC).await;
        f.tick();
        let event = f.cluster.record(&f.health[0], Outcome::Success);
        assert!(matches!(event, Some(Event::Readmitted { .. })), "{event:?}");
        assert!(f.usable(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_lets_the_next_request_probe_at_once() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        advance(30 * SEC).await;
        f.tick();
        assert!(f.cluster.on_pick(&f.health[0]));
        assert!(!f.usable(0));
        // The probe's client failed: its request proved nothing about the endpoint.
        f.cluster.release_probe(&f.health[0]);
        assert!(f.usable(0));
        assert!(f.status(0).probation && !f.status(0).probing);
        assert!(
            f.cluster.on_pick(&f.health[0]),
            "the next request is the probe"
        );
        // Releasing an endpoint that is not probing changes nothing.
        f.cluster.release_probe(&f.health[1]);
        assert!(f.usable(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_probe_is_released_after_the_base_ejection_time() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        advance(30 * SEC).await;
        f.tick();
        assert!(f.cluster.on_pick(&f.health[0]));
        advance(29 * SEC).await;
        assert!(f.tick().is_empty());
        assert!(!f.usable(0));
        advance(SEC).await;
        assert_eq!(f.tick(), [Event::Probation { address: addr(0) }]);
        assert!(f.usable(0));
        assert!(f.cluster.on_pick(&f.health[0]));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_with_the_count_and_stops_at_the_cap() {
        let params = OutlierParams {
            max_ejection_time: 100 * SEC,
            ..passive()
        };
        let f = fixture(2, params, None);
        assert_eq!(
            f.fail(0, 5),
            [ejected(0, EjectReason::Consecutive5xx, 30, 1)]
        );
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(f.probe(0, Outcome::GatewayFailure).await);
        }
        assert_eq!(
            got,
            [
                Some(re_ejected(0, 60, 2)),
                Some(re_ejected(0, 90, 3)),
                Some(re_ejected(0, 100, 4)),
                Some(re_ejected(0, 100, 4)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_count_decays_one_per_interval_of_serving() {
        let f = fixture(2, passive(), None);
        f.fail(0, 5);
        f.probe(0, Outcome::Success).await;
        f.fail(0, 5);
        f.probe(0, Outcome::Success).await;
        assert_eq!(f.status(0).ejection_count, 2);

        // Readmitted just now: the next detection run does not decay yet.
        advance(9 * SEC).await;
        f.tick();
        assert_eq!(f.status(0).ejection_count, 2);
        advance(SEC).await;
        f.tick();
        assert_eq!(f.status(0).ejection_count, 1);
        advance(10 * SEC).await;
        f.tick();
        assert_eq!(f.status(0).ejection_count, 0);
        advance(10 * SEC).await;
        f.tick();
        assert_eq!(f.status(0).ejection_count, 0);
        assert_eq!(
            f.fail(0, 5),
            [ejected(0, EjectReason::Consecutive5xx, 30, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_endpoint_stays_out_longer_each_time() {
        let f = fixture(3, passive(), None);
        let mut durations = Vec::new();
        let started = Instant::now();
        for _ in 0..12 {
            let events = f.fail(0, 5);
            let [Event::Ejected { duration, .. }] = events[..] else {
                panic!("{events:?}");
            };
            durations.push(duration.as_secs());
            // Back on probation, the probe succeeds, and it fails again at once.
            f.probe(0, Outcome::Success).await;
        }
        assert_eq!(
            durations,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        // Twelve ejections took 36 minutes, not six (a fixed 30s would allow 72 per hour).
        assert_eq!(Instant::now() - started, Duration::from_secs(2250));
    }

    // === floor ===

    #[tokio::test(start_paused = true)]
    async fn never_ejects_the_last_usable_endpoint_by_default() {
        let f = fixture(1, passive(), None);
        let events = f.fail(0, 5);
        assert_eq!(
            events,
            [Event::EjectionSuppressed {
                address: addr(0),
                reason: EjectReason::Consecutive5xx,
                usable: 1,
                floor: 1,
            }]
        );
        assert!(f.usable(0));
        // The run starts over: one report per run, not one per failure.
        assert!(f.fail(0, 4).is_empty());
        assert_eq!(f.fail(0, 1).len(), 1);

        let f = fixture(2, passive(), None);
        assert_eq!(f.fail(0, 5)[0].kind(), "ejected");
        assert_eq!(f.fail(1, 5)[0].kind(), "ejection_suppressed");
        assert!(f.usable(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fraction_floor_keeps_that_share_usable() {
        let params = OutlierParams {
            min_healthy: MinHealthy::Fraction(0.5),
            ..passive()
        };
        let f = fixture(5, params, None);
        assert_eq!(f.fail(0, 5)[0].kind(), "ejected");
        assert_eq!(f.fail(1, 5)[0].kind(), "ejected");
        // 3 of 5 usable; ceil(2.5) = 3 must stay.
        assert_eq!(
            f.fail(2, 5),
            [Event::EjectionSuppressed {
                address: addr(2),
                reason: EjectReason::Consecutive5xx,
                usable: 3,
                floor: 3,
            }]
        );
        // An endpoint already out (active-unhealthy) may be ejected: the count does not drop.
        f.check(3, false, 3);
        assert!(!f.usable(3));
        assert_eq!(f.fail(3, 5)[0].kind(), "ejected");
    }

    // === rate detectors ===

    #[tokio::test(start_paused = true)]
    async fn success_rate_ejects_the_endpoint_far_below_the_others() {
        let params = OutlierParams {
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            success_rate: Some(SuccessRateParams::default()),
            ..OutlierParams::default()
        };
        let f = fixture(6, params, None);
        for round in 0..100 {
            for i in 0..5 {
                f.record(i, Outcome::Success, 1);
            }
            let outcome = if round % 2 == 0 {
                Outcome::Status(500)
            } else {
                Outcome::Success
            };
            f.record(5, outcome, 1);
        }
        advance(9 * SEC).await;
        assert!(f.tick().is_empty());
        advance(SEC).await;
        assert_eq!(f.tick(), [ejected(5, EjectReason::SuccessRate, 30, 1)]);

        // The next interval starts from zero: too little volume, nothing more happens.
        for i in 0..5 {
            f.record(i, Outcome::Status(500), 1);
        }
        advance(10 * SEC).await;
        assert!(f.tick().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn success_rate_needs_enough_hosts_with_volume() {
        let params = OutlierParams {
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            ..OutlierParams::default()
        };
        let f = fixture(6, params, None);
        for round in 0..100 {
            // Only four hosts reach 100 requests.
            for i in 0..3 {
                f.record(i, Outcome::Success, 1);
            }
            let outcome = if round % 2 == 0 {
                Outcome::Status(500)
            } else {
                Outcome::Success
            };
            f.record(5, outcome, 1);
        }
        f.record(4, Outcome::Success, 99);
        advance(10 * SEC).await;
        assert!(f.tick().is_empty());
        assert!(f.usable(5));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_ejects_at_the_threshold() {
        let params = OutlierParams {
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            success_rate: None,
            failure_percentage: Some(FailurePercentageParams::default()),
            ..OutlierParams::default()
        };
        let f = fixture(6, params, None);
        for i in 0..4 {
            f.record(i, Outcome::Success, 50);
        }
        // 43 of 50 (86%) and 42 of 50 (84%) failed.
        f.record(4, Outcome::GatewayFailure, 43);
        f.record(4, Outcome::Success, 7);
        f.record(5, Outcome::Status(500), 42);
        f.record(5, Outcome::Success, 8);
        advance(10 * SEC).await;
        assert_eq!(
            f.tick(),
            [ejected(4, EjectReason::FailurePercentage, 30, 1)]
        );
        assert!(f.usable(5));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_detectors_eject_the_worst_first_down_to_the_floor() {
        let params = OutlierParams {
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            success_rate: None,
            failure_percentage: Some(FailurePercentageParams::default()),
            min_healthy: MinHealthy::Count(4),
            ..OutlierParams::default()
        };
        let f = fixture(6, params, None);
        for i in 0..3 {
            f.record(i, Outcome::Success, 50);
        }
        f.record(3, Outcome::Status(500), 45);
        f.record(3, Outcome::Success, 5);
        f.record(4, Outcome::Status(500), 50);
        f.record(5, Outcome::Status(500), 48);
        f.record(5, Outcome::Success, 2);
        advance(10 * SEC).await;
        let events = f.tick();
        let kinds: Vec<_> = events.iter().map(|e| (e.kind(), e.address())).collect();
        assert_eq!(
            kinds,
            [
                ("ejected", addr(4)),
                ("ejected", addr(5)),
                ("ejection_suppressed", addr(3)),
            ]
        );
    }

    // === active + passive ===

    #[tokio::test(start_paused = true)]
    async fn passing_active_checks_readmit_an_ejected_endpoint_at_once() {
        let f = fixture(2, passive(), Some(ActiveParams::default()));
        f.fail(0, 5);
        assert!(!f.usable(0));
        assert!(f.check(0, true, 1).is_empty());
        assert_eq!(
            f.check(0, true, 1),
            [Event::Readmitted {
                address: addr(0),
                via: Readmission::ActiveCheck
            }]
        );
        assert!(f.usable(0));
        // The count is kept: the next ejection is longer.
        assert_eq!(
            f.fail(0, 5),
            [ejected(0, EjectReason::Consecutive5xx, 60, 2)]
        );
        // Passes from before an ejection do not count towards readmitting it.
        assert!(f.check(0, true, 1).is_empty());
        assert!(!f.usable(0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_endpoint_on_probation_stays_out_until_its_checks_pass() {
        let f = fixture(2, passive(), Some(ActiveParams::default()));
        f.fail(0, 5);
        f.check(0, false, 3);
        advance(30 * SEC).await;
        assert_eq!(f.tick(), [Event::Probation { address: addr(0) }]);
        assert!(!f.usable(0));
        assert!(f.status(0).probation);
        assert!(!f.cluster.on_pick(&f.health[0]));

        assert!(f.check(0, true, 1).is_empty());
        let events = f.check(0, true, 1);
        assert_eq!(
            events,
            [
                Event::HealthChanged {
                    address: addr(0),
                    healthy: true
                },
                Event::Readmitted {
                    address: addr(0),
                    via: Readmission::ActiveCheck
                },
            ]
        );
        assert!(f.usable(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_endpoint_that_is_ejected_is_not_usable() {
        let f = fixture(2, passive(), Some(ActiveParams::default()));
        f.check(0, true, 5);
        f.fail(0, 5);
        let status = f.status(0);
        assert!(status.healthy);
        assert!(!status.usable);
        // Ejected and active-unhealthy: both must clear.
        f.check(1, false, 3);
        assert!(!f.usable(1));
        advance(30 * SEC).await;
        f.tick();
        assert!(f.usable(0));
        assert!(!f.usable(1));
    }

    // === reload ===

    #[tokio::test(start_paused = true)]
    async fn sync_keeps_the_state_of_unchanged_addresses() {
        let f = fixture(3, passive(), None);
        f.fail(0, 5);
        let before = Arc::clone(&f.health[0]);

        // The reload builds a fresh Endpoint for address 0, drops 2 and adds 3.
        let fresh = Endpoint::new(addr(0));
        let added = Endpoint::new(addr(3));
        f.cluster.sync(&[
            Arc::clone(&fresh),
            Arc::clone(&f.endpoints[1]),
            Arc::clone(&added),
        ]);
        let after = f.cluster.health_of(addr(0)).expect("kept");
        assert!(Arc::ptr_eq(&before, &after));
        assert!(!fresh.is_usable(), "the new Endpoint inherits the ejection");
        assert!(added.is_usable());
        assert!(f.cluster.health_of(addr(2)).is_none());
        let addresses: Vec<_> = f.cluster.endpoints().iter().map(|e| e.address()).collect();
        assert_eq!(addresses, [addr(0), addr(1), addr(3)]);

        // Probation still ends on time after the reload.
        advance(30 * SEC).await;
        assert_eq!(f.tick(), [Event::Probation { address: addr(0) }]);
        assert!(fresh.is_usable());
    }

    #[tokio::test(start_paused = true)]
    async fn reconfigure_applies_new_thresholds_and_disabling_readmits() {
        let f = fixture(3, passive(), Some(ActiveParams::default()));
        f.fail(0, 5);
        f.check(1, false, 3);
        f.cluster.reconfigure(
            OutlierParams {
                consecutive_5xx: Some(2),
                ..passive()
            },
            Some(ActiveParams::default()),
        );
        assert!(!f.usable(0));
        assert_eq!(f.fail(2, 2).len(), 1);

        let events = f.cluster.reconfigure(
            OutlierParams {
                enabled: false,
                ..passive()
            },
            None,
        );
        assert!(events.contains(&Event::Readmitted {
            address: addr(0),
            via: Readmission::DetectionDisabled
        }));
        assert!(events.contains(&Event::HealthChanged {
            address: addr(1),
            healthy: true
        }));
        assert!((0..3).all(|i| f.usable(i)));
        assert!(f.fail(0, 50).is_empty());
    }

    // === availability ===

    #[tokio::test(start_paused = true)]
    async fn an_ejection_is_one_outage_until_the_probe_succeeds() {
        let f = fixture(2, passive(), None);
        advance(10 * SEC).await;
        f.fail(0, 5);
        f.probe(0, Outcome::Success).await;
        advance(20 * SEC).await;

        let a = f.status(0).availability;
        assert!(a.up);
        assert_eq!(a.outages, 1);
        assert_eq!(a.mttr, Some(30 * SEC));
        assert_eq!(a.up_time, 30 * SEC);
        assert_eq!(a.down_time, 30 * SEC);
        assert_eq!(a.mtbf, Some(30 * SEC));
        assert!((a.ratio - 0.5).abs() < 1e-9, "{}", a.ratio);

        let cluster = f.cluster.status(Instant::now());
        assert_eq!(cluster.availability.outages, 0);
        assert!((cluster.availability.ratio - 1.0).abs() < 1e-9);
        let mean = cluster.mean_endpoint_availability.expect("endpoints");
        assert!((mean - 0.75).abs() < 1e-9, "{mean}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cluster_is_down_while_no_endpoint_is_up() {
        let f = fixture(2, passive(), Some(ActiveParams::default()));
        advance(60 * SEC).await;
        f.check(0, false, 3);
        f.check(1, false, 3);
        let status = f.cluster.status(Instant::now());
        assert_eq!(status.usable, 0);
        assert!(!status.availability.up);
        advance(20 * SEC).await;
        f.check(1, true, 2);
        advance(20 * SEC).await;

        let status = f.cluster.status(Instant::now());
        assert_eq!((status.endpoints, status.usable, status.ejected), (2, 1, 0));
        let a = status.availability;
        assert!(a.up);
        assert_eq!(a.outages, 1);
        assert_eq!(a.mttr, Some(20 * SEC));
        assert_eq!(a.down_time, 20 * SEC);
        assert_eq!(a.up_time, 80 * SEC);
        assert!((a.ratio - 0.8).abs() < 1e-9, "{}", a.ratio);
    }
}
