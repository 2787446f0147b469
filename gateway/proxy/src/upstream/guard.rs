//! The resilience guards of one cluster on the request path: its circuit breakers, its limits
//! (bulkheads), and the outlier detector that every outcome feeds.
//!
//! This is the only place the request path talks to `levee-resilience`. Every state change a
//! guard makes is logged as a structured event and counted here, so an operator sees one line
//! and one counter per transition whichever request caused it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use levee_balance::{Endpoint, PickContext};
use levee_config::{BreakerWindow, CircuitBreaker, ClusterLimits, UpstreamProtocol};
use levee_resilience::breaker::{
    Breaker, BreakerParams, BreakerState, BreakerStatus, Forced, Permit, Transition, Window,
};
use levee_resilience::bulkhead::{Bulkhead, BulkheadParams, Slot};
use levee_resilience::health::{ClusterHealth, EndpointHealth};
use levee_resilience::outlier::Outcome;
use rustc_hash::FxHashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Cluster;
use super::status::{LimitView, LimitsView};
use crate::metrics::Metrics;

/// What one try ended with, as outlier detection and the breakers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// A response head with this status.
    Status(u16),
    /// The connection could not be made.
    ConnectFailure,
    /// The connection broke before a response head.
    Reset,
    /// No response head within the try's deadline.
    Timeout,
}

/// An operator's force on a breaker, from the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerForce {
    Open,
    Closed,
}

/// Why a try could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A breaker is open; a probe may pass after this long, if known.
    CircuitOpen(Option<Duration>),
    /// A limit is full: `max_requests`, `max_pending` or `max_connections`.
    Overloaded(&'static str),
    /// No endpoint is usable.
    NoEndpoint,
    /// The try's deadline passed while it waited for a connection.
    TimedOut,
}

/// Leave to start a try, held until its outcome is known.
#[derive(Debug)]
pub(crate) struct Admission {
    breaker: Option<Permit>,
    request: Option<Slot>,
}

/// The endpoint a try goes to, with its health and its own breaker's permit.
#[derive(Debug)]
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<Endpoint>,
    health: Option<Arc<EndpointHealth>>,
    breaker: Option<(Arc<Breaker>, Permit)>,
}

/// A place among the cluster's connections (HTTP/1.1: one per request in flight), held until
/// the response body ends.
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

/// The guards of one cluster; carried over reloads with the cluster's name.
#[derive(Debug)]
pub(crate) struct Guards {
    name: Arc<str>,
    metrics: Arc<Metrics>,
    breaker: Option<Arc<Breaker>>,
    endpoint_breakers: Option<EndpointBreakers>,
    bulkhead: Arc<Bulkhead>,
    /// HTTP/1.1 only: a request needs a connection of its own, so in-flight requests are
    /// connections. HTTP/2 multiplexes and is bounded by `max_requests` alone.
    connections: Option<Arc<Semaphore>>,
    limits: ClusterLimits,
    pub(crate) health: Arc<ClusterHealth>,
    /// Recent outcomes and latencies, for plugins' `upstream-health`.
    recent: Arc<Recent>,
}

/// The last few seconds of a cluster's tries: outcome counts and a latency histogram whose
/// counts halve every [`RECENT_HALF_LIFE`], so old traffic fades instead of piling up.
#[derive(Debug)]
struct Recent {
    epoch: Instant,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Bucket `i` counts latencies under `100µs * 2^i`; the last one counts the rest.
    buckets: [AtomicU64; RECENT_BUCKETS],
    /// Milliseconds since `epoch` of the last halving.
    halved_at: AtomicU64,
}

const RECENT_BUCKETS: usize = 20;
const RECENT_HALF_LIFE: Duration = Duration::from_secs(5);

/// One breaker per endpoint, made on first use.
#[derive(Debug)]
struct EndpointBreakers {
    params: BreakerParams,
    by_address: Mutex<FxHashMap<SocketAddr, Arc<Breaker>>>,
}

/// What a reload still has to apply to the guards it carried over: the state they share with
/// the serving snapshot. Applied by [`PendingGuards::apply`] when the reload commits.
#[derive(Debug)]
#[must_use = "the parameters change nothing until applied"]
pub(crate) struct PendingGuards {
    /// The carried-over bulkhead and the limits it takes.
    bulkhead: Option<(Arc<Bulkhead>, BulkheadParams)>,
    /// The carried-over health state and its new parameters.
    health: Option<super::health::PendingHealth>,
}

impl PendingGuards {
    /// Applies the new limits and health parameters. Slots in use and every endpoint's state
    /// are kept; a lowered limit only refuses new slots until enough old ones are released.
    pub(crate) fn apply(self) {
        if let Some((bulkhead, params)) = self.bulkhead {
            bulkhead.set_params(params);
        }
        if let Some(health) = self.health {
            health.apply();
        }
    }
}

// === impl Guards ===

impl Guards {
    /// The guards for `config`, keeping the breakers' windows and state, the limits' counts
    /// and the endpoints' health from `previous` (the same-named cluster of the last snapshot).
    ///
    /// The limits and the health state are the very objects `previous` serves with, so their
    /// new parameters are returned as [`PendingGuards`] instead of applied: a reload that fails
    /// later must leave them as they were.
    pub(crate) fn prepare(
        name: Arc<str>,
        config: &levee_config::Cluster,
        previous: Option<&Guards>,
        metrics: &Arc<Metrics>,
    ) -> (Guards, PendingGuards) {
        let breaker_params = config.circuit_breaker.as_ref().map(breaker_params);
        let breaker = breaker_params.map(|params| {
            Arc::new(match previous.and_then(|p| p.breaker.as_deref()) {
                Some(old) => Breaker::carry_over(params, old),
                None => Breaker::new(params),
            })
        });
        let per_endpoint = config
            .circuit_breaker
            .as_ref()
            .is_some_and(|b| b.per_endpoint);
        let endpoint_breakers = breaker_params.filter(|_| per_endpoint).map(|params| {
            let carried = previous
                .and_then(|p| p.endpoint_breakers.as_ref())
                .map(|old| {
                    old.lock()
                        .iter()
                        .map(|(a, b)| (*a, Arc::new(Breaker::carry_over(params, b))))
                        .collect()
                })
                .unwrap_or_default();
            EndpointBreakers {
                params,
                by_address: Mutex::new(carried),
            }
        });

        let limits = config.limits.clone();
        let bulkhead_params = BulkheadParams {
            max_connections: limits.max_connections,
            max_pending: limits.max_pending,
            max_requests: limits.max_requests,
            max_retries: limits.max_retries,
        };
        let (bulkhead, pending_bulkhead) = match previous {
            Some(p) => (
                p.bulkhead.clone(),
                Some((p.bulkhead.clone(), bulkhead_params)),
            ),
            None => (Arc::new(Bulkhead::new(bulkhead_params)), None),
        };
        // The semaphore (with the connections it has handed out) carries over while its size
        // is unchanged.
        let connections = (config.protocol == UpstreamProtocol::Http1).then(|| {
            previous
                .filter(|p| p.limits.max_connections == limits.max_connections)
                .and_then(|p| p.connections.clone())
                .unwrap_or_else(|| Arc::new(Semaphore::new(limits.max_connections as usize)))
        });
        let (health, pending_health) =
            super::health::cluster_health(&name, config, previous.map(|p| &p.health));

        let recent = previous.map_or_else(|| Arc::new(Recent::new()), |p| p.recent.clone());
        let guards = Guards {
            recent,
            name,
            metrics: metrics.clone(),
            breaker,
            endpoint_breakers,
            bulkhead,
            connections,
            limits,
            health,
        };
        let pending = PendingGuards {
            bulkhead: pending_bulkhead,
            health: pending_health,
        };
        (guards, pending)
    }

    /// Leave to start a try: the cluster breaker and the request limit.
    pub(crate) fn admit(&self) -> Result<Admission, Refusal> {
        let breaker = match &self.breaker {
            Some(breaker) => match breaker.try_acquire() {
                Ok(permit) => {
                    self.transitioned(None, permit.transition());
                    Some(permit)
                }
                Err(rejected) => {
                    self.transitioned(None, rejected.transition);
                    self.metrics.resilience.breaker_rejected(&self.name);
                    return Err(Refusal::CircuitOpen(
                        Some(rejected.retry_after).filter(|d| !d.is_zero()),
                    ));
                }
            },
            None => None,
        };
        let Some(request) = self.bulkhead.try_request() else {
            self.metrics
                .resilience
                .limit_overflow(&self.name, "max_requests");
            return Err(Refusal::Overloaded("max_requests"));
        };
        Ok(Admission {
            breaker,
            request: Some(request),
        })
    }

    /// Picks an endpoint of `cluster`: one not in `tried` if there is one, else any. Claims
    /// its probation probe, and skips endpoints whose own breaker is open.
    pub(crate) fn pick(
        &self,
        cluster: &Cluster,
        hash: Option<u64>,
        tried: &[SocketAddr],
    ) -> Result<Picked, Refusal> {
        // Endpoints whose own breaker refused this request; allocated only when one does.
        let mut refused: Vec<SocketAddr> = Vec::new();
        let mut open_after: Option<Duration> = None;
        loop {
            let exclude: &[SocketAddr] = if refused.is_empty() { tried } else { &refused };
            let endpoint = cluster.pick(&PickContext { hash, exclude }).or_else(|| {
                // Every usable endpoint was tried: going back to one beats giving up.
                (!tried.is_empty() && refused.is_empty())
                    .then(|| cluster.pick(&PickContext { hash, exclude: &[] }))
                    .flatten()
            });
            let Some(endpoint) = endpoint else {
                return Err(match open_after {
                    Some(after) => Refusal::CircuitOpen(Some(after).filter(|d| !d.is_zero())),
                    None => Refusal::NoEndpoint,
                });
            };
            let breaker = match self.endpoint_breaker(endpoint.address()) {
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => {
                        self.transitioned(Some(endpoint.address()), permit.transition());
                        Some((breaker, permit))
                    }
                    Err(rejected) => {
                        self.transitioned(Some(endpoint.address()), rejected.transition);
                        open_after = Some(rejected.retry_after);
                        if refused.is_empty() {
                            refused.extend_from_slice(tried);
                        }
                        refused.push(endpoint.address());
                        continue;
                    }
                },
                None => None,
            };
            let health = self.health.health_of(endpoint.address());
            if let Some(health) = &health {
                self.health.on_pick(health);
            }
            return Ok(Picked {
                endpoint,
                health,
                breaker,
            });
        }
    }

    /// A connection for an HTTP/1.1 try: at once if one is free, else waiting (as one of at
    /// most `max_pending`) until `deadline`.
    pub(crate) async fn connection_slot(
        &self,
        deadline: Instant,
    ) -> Result<Option<ConnectionSlot>, Refusal> {
        let Some(connections) = &self.connections else {
            return Ok(None);
        };
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            return Ok(Some(ConnectionSlot { _permit: permit }));
        }
        let Some(_pending) = self.bulkhead.try_pending() else {
            self.metrics
                .resilience
                .limit_overflow(&self.name, "max_pending");
            return Err(Refusal::Overloaded("max_pending"));
        };
        match tokio::time::timeout_at(deadline, connections.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(ConnectionSlot { _permit: permit })),
            // The semaphore is never closed; treat it like a full limit if it were.
            Ok(Err(_closed)) => Err(Refusal::Overloaded("max_connections")),
            Err(_elapsed) => Err(Refusal::TimedOut),
        }
    }

    /// A place for one more concurrent retry, under `max_retries`.
    pub(crate) fn retry_slot(&self) -> Option<Slot> {
        self.bulkhead.try_retry()
    }

    /// Feeds a try's outcome to the breakers and outlier detection. Returns the request's
    /// place in the request limit, which the caller holds until the response ends.
    pub(crate) fn observe(
        &self,
        picked: Picked,
        admission: Admission,
        outcome: TryOutcome,
        latency: Duration,
    ) -> Option<Slot> {
        let success = matches!(outcome, TryOutcome::Status(s) if s < 500);
        self.recent.observe(success, latency);
        if let Some(permit) = admission.breaker {
            self.transitioned(None, permit.record(success, latency));
        }
        if let Some((_, permit)) = picked.breaker {
            let address = picked.endpoint.address();
            self.transitioned(Some(address), permit.record(success, latency));
        }
        if let Some(health) = &picked.health {
            let outcome = match outcome {
                TryOutcome::Status(status) if status < 500 => Outcome::Success,
                TryOutcome::Status(status) => Outcome::Status(status),
                TryOutcome::ConnectFailure | TryOutcome::Reset | TryOutcome::Timeout => {
                    Outcome::GatewayFailure
                }
            };
            if let Some(event) = self.health.record(health, outcome) {
                super::health::log_event(&self.name, Some(&self.metrics), &event);
            }
        }
        admission.request
    }

    /// Ends a try that says nothing about its endpoint (the downstream side failed): the
    /// breakers' permits and the endpoint's probation probe go back unrecorded. Returns the
    /// request's place in the request limit, as [`Guards::observe`] does.
    pub(crate) fn release(&self, picked: Picked, admission: Admission) -> Option<Slot> {
        if let Some(health) = &picked.health {
            self.health.release_probe(health);
        }
        admission.request
    }

    /// The cluster as a plugin's `upstream-health` sees it.
    pub(crate) fn plugin_health(&self, cluster: &Cluster) -> levee_plugin_host::ClusterHealth {
        use levee_plugin_host::CircuitState;
        let endpoints = cluster.endpoints();
        let (error_rate, p50, p99) = self.recent.summary();
        levee_plugin_host::ClusterHealth {
            healthy_endpoints: count_u32(endpoints.iter().filter(|e| e.is_usable()).count()),
            total_endpoints: count_u32(endpoints.len()),
            circuit: match self.breaker.as_ref().map(|b| b.state()) {
                Some(BreakerState::Open) => CircuitState::Open,
                Some(BreakerState::HalfOpen) => CircuitState::HalfOpen,
                Some(BreakerState::Closed) | None => CircuitState::Closed,
            },
            error_rate,
            p50_ms: p50,
            p99_ms: p99,
            in_flight: u32::try_from(endpoints.iter().map(|e| e.in_flight()).sum::<u64>())
                .unwrap_or(u32::MAX),
        }
    }

    /// The cluster breaker's state, for a plugin's failure context.
    pub(crate) fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(|b| b.state())
    }

    /// Forces the cluster breaker (and every endpoint breaker) open or closed, or back to
    /// normal. `None` when the cluster has no breaker.
    pub(crate) fn force_breaker(&self, force: Option<BreakerForce>) -> Option<BreakerStatus> {
        let breaker = self.breaker.as_ref()?;
        let forced = force.map(|f| match f {
            BreakerForce::Open => Forced::Open,
            BreakerForce::Closed => Forced::Closed,
        });
        self.transitioned(None, breaker.force(forced));
        tracing::info!(cluster = %self.name, force = ?force, "circuit breaker force set by admin");
        Some(breaker.status())
    }

    /// The cluster breaker's status, for `/clusters`.
    pub(crate) fn breaker_status(&self) -> Option<BreakerStatus> {
        self.breaker.as_ref().map(|b| b.status())
    }

    /// The endpoint breaker's status, for `/clusters`.
    pub(crate) fn endpoint_breaker_status(&self, address: SocketAddr) -> Option<BreakerStatus> {
        let breakers = self.endpoint_breakers.as_ref()?;
        breakers.lock().get(&address).map(|b| b.status())
    }

    /// The limits, their use now and their overflows, for `/clusters`.
    pub(crate) fn limits_status(&self) -> LimitsView {
        let counts = self.bulkhead.counts();
        let connections = match &self.connections {
            Some(semaphore) => {
                let max = self.limits.max_connections;
                let free = u32::try_from(semaphore.available_permits()).unwrap_or(max);
                LimitView {
                    max,
                    in_use: max.saturating_sub(free),
                    overflows: counts.pending.overflows,
                }
            }
            None => counts.connections.into(),
        };
        LimitsView {
            connections,
            pending: counts.pending.into(),
            requests: counts.requests.into(),
            retries: counts.retries.into(),
        }
    }

    fn endpoint_breaker(&self, address: SocketAddr) -> Option<Arc<Breaker>> {
        let breakers = self.endpoint_breakers.as_ref()?;
        let mut map = breakers.lock();
        Some(
            map.entry(address)
                .or_insert_with(|| Arc::new(Breaker::new(breakers.params)))
                .clone(),
        )
    }

    /// Logs and counts a breaker transition, if there was one.
    fn transitioned(&self, endpoint: Option<SocketAddr>, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let endpoint = endpoint.map(|a| a.to_string());
        tracing::warn!(
            cluster = %self.name,
            endpoint = endpoint.as_deref().unwrap_or("none"),
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit breaker state changed"
        );
        self.metrics
            .resilience
            .breaker_transition(&self.name, endpoint.as_deref(), t.to.as_str());
    }
}

impl EndpointBreakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<SocketAddr, Arc<Breaker>>> {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// === impl Recent ===

impl Recent {
    fn new() -> Recent {
        Recent {
            epoch: Instant::now(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            halved_at: AtomicU64::new(0),
        }
    }

    fn observe(&self, success: bool, latency: Duration) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let halved = self.halved_at.load(Ordering::Relaxed);
        if now.saturating_sub(halved) >= RECENT_HALF_LIFE.as_millis() as u64
            && self
                .halved_at
                .compare_exchange(halved, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for counter in self.buckets.iter().chain([&self.ok, &self.failed]) {
                let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v / 2));
            }
        }
        if success { &self.ok } else { &self.failed }.fetch_add(1, Ordering::Relaxed);
        let units = (latency.as_micros() / 100) as u64;
        let bucket = (u64::BITS - units.leading_zeros()) as usize;
        self.buckets[bucket.min(RECENT_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Error rate (0..=1), and p50 and p99 in whole milliseconds (rounded up).
    fn summary(&self) -> (f32, u32, u32) {
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let total = ok + failed;
        let error_rate = if total == 0 {
            0.0
        } else {
            failed as f32 / total as f32
        };
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let all: u64 = counts.iter().sum();
        let quantile = |q: f64| -> u32 {
            if all == 0 {
                return 0;
            }
            let wanted = (all as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= wanted {
                    // The bucket's upper bound: 100µs * 2^i.
                    let micros = 100u64 << i;
                    return u32::try_from(micros.div_ceil(1000)).unwrap_or(u32::MAX);
                }
            }
            u32::MAX
        };
        (error_rate, quantile(0.5), quantile(0.99))
    }
}

// === impl Refusal ===

impl Refusal {
    /// The request failure this refusal becomes.
    pub(crate) fn into_error(self, cluster: &Arc<str>) -> crate::proxy::error::ProxyError {
        use crate::proxy::error::ProxyError;
        match self {
            Refusal::CircuitOpen(retry_after) => ProxyError::CircuitOpen {
                cluster: cluster.clone(),
                retry_after,
            },
            Refusal::Overloaded(limit) => ProxyError::Overloaded {
                cluster: cluster.clone(),
                limit,
            },
            Refusal::NoEndpoint => ProxyError::NoHealthyEndpoint(cluster.to_string()),
            Refusal::TimedOut => ProxyError::UpstreamTimeout,
        }
    }
}

/// The breaker parameters of a `circuit_breaker` section.
fn breaker_params(config: &CircuitBreaker) -> BreakerParams {
    BreakerParams {
        failure_rate: config.failure_rate,
        slow_call_rate: config.slow_call_rate,
        slow_call_duration: config.slow_call_duration,
        window: match config.window {
            BreakerWindow::Count(n) => Window::Count(n),
            BreakerWindow::Time(d) => Window::Time(d),
        },
        minimum_calls: config.minimum_calls,
        open_duration: config.open_duration,
        max_open_duration: config.max_open_duration,
        half_open_probes: config.half_open_probes,
    }
}
