//! Endpoint health at runtime: the active health checker, the outlier detector's clock, and
//! the structured log line and counter of every health event.
//!
//! One checker task runs per cluster while the cluster serves: a reload's commit stops it and
//! starts the next snapshot's cluster's own (the health state itself carries over), and
//! dropping the cluster stops it too. A reload that fails never starts one. Each round it
//! follows the cluster's current endpoints (DNS may change them), runs the checks that are
//! due, at most one in flight per endpoint, and ticks the detector, which ends ejections and
//! runs the rate-based detectors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use levee_config::{HealthCheck, MinHealthy};
use levee_resilience::backoff::jitter;
use levee_resilience::health::{ActiveParams, ClusterHealth, Event};
use levee_resilience::outlier::{FailurePercentageParams, OutlierParams, SuccessRateParams};
use rand::Rng;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::probe::{ProbeFailure, probe};
use super::{Endpoints, Pools};
use crate::metrics::Metrics;

/// How often the detector's clock ticks (ends ejections, runs rate detectors when due).
const TICK: Duration = Duration::from_millis(250);

/// The cluster's health state: `previous`'s when there is one (a reload keeps every
/// endpoint's health, ejection and availability), else a fresh one.
///
/// A carried-over state is still serving the current snapshot, so the new parameters are not
/// applied here: they come back as a [`PendingHealth`] that the reload applies at commit, once
/// nothing can fail any more.
pub(crate) fn cluster_health(
    name: &Arc<str>,
    config: &levee_config::Cluster,
    previous: Option<&Arc<ClusterHealth>>,
) -> (Arc<ClusterHealth>, Option<PendingHealth>) {
    let outlier = outlier_params(config);
    let active = config.health_check.as_ref().map(|hc| ActiveParams {
        unhealthy_threshold: hc.unhealthy_threshold,
        healthy_threshold: hc.healthy_threshold,
    });
    match previous {
        Some(health) => {
            let pending = PendingHealth {
                name: name.clone(),
                health: health.clone(),
                outlier,
                active,
            };
            (health.clone(), Some(pending))
        }
        None => (
            Arc::new(ClusterHealth::new(name.to_string(), outlier, active)),
            None,
        ),
    }
}

/// New parameters for a cluster's carried-over health state, applied by [`PendingHealth::apply`]
/// when the reload commits.
#[derive(Debug)]
#[must_use = "the parameters change nothing until applied"]
pub(crate) struct PendingHealth {
    name: Arc<str>,
    health: Arc<ClusterHealth>,
    outlier: OutlierParams,
    active: Option<ActiveParams>,
}

impl PendingHealth {
    /// Reconfigures the shared health state, logging the readmissions it causes.
    pub(crate) fn apply(self) {
        for event in self.health.reconfigure(self.outlier, self.active) {
            log_event(&self.name, None, &event);
        }
    }
}

/// The detector's parameters of a cluster's `outlier_detection` section.
pub(crate) fn outlier_params(config: &levee_config::Cluster) -> OutlierParams {
    let od = &config.outlier_detection;
    OutlierParams {
        enabled: od.enabled,
        consecutive_5xx: od.consecutive_5xx,
        consecutive_gateway_failure: od.consecutive_gateway_failure,
        success_rate: od.success_rate.as_ref().map(|s| SuccessRateParams {
            stdev_factor: s.stdev_factor,
            minimum_hosts: s.minimum_hosts,
            request_volume: s.request_volume,
        }),
        failure_percentage: od
            .failure_percentage
            .as_ref()
            .map(|f| FailurePercentageParams {
                threshold: f.threshold,
                minimum_hosts: f.minimum_hosts,
                request_volume: f.request_volume,
            }),
        interval: od.interval,
        base_ejection_time: od.base_ejection_time,
        max_ejection_time: od.max_ejection_time,
        min_healthy: match od.min_healthy {
            MinHealthy::Count(n) => levee_resilience::outlier::MinHealthy::Count(n),
            MinHealthy::Fraction(f) => levee_resilience::outlier::MinHealthy::Fraction(f),
        },
    }
}

/// Logs one health event as a structured line and counts it.
pub(crate) fn log_event(cluster: &Arc<str>, metrics: Option<&Metrics>, event: &Event) {
    let endpoint = event.address();
    match event {
        Event::Ejected {
            reason,
            duration,
            ejection_count,
            ..
        }
        | Event::ReEjected {
            reason,
            duration,
            ejection_count,
            ..
        } => {
            tracing::warn!(
                %cluster, %endpoint, event = event.kind(), reason = reason.as_str(),
                ejection_ms = duration.as_millis() as u64, ejection_count,
                "endpoint ejected"
            );
            if let Some(m) = metrics {
                m.resilience.ejected(cluster, reason.as_str());
            }
        }
        Event::EjectionSuppressed {
            reason,
            usable,
            floor,
            ..
        } => {
            tracing::warn!(
                %cluster, %endpoint, event = event.kind(), reason = reason.as_str(),
                usable, floor, "ejection held back by the minimum-healthy floor"
            );
            if let Some(m) = metrics {
                m.resilience.ejection_suppressed(cluster, reason.as_str());
            }
        }
        Event::Probation { .. } => {
            tracing::info!(%cluster, %endpoint, event = event.kind(), "endpoint on probation: the next request probes it");
        }
        Event::Readmitted { via, .. } => {
            tracing::info!(%cluster, %endpoint, event = event.kind(), via = ?via, "endpoint readmitted");
        }
        Event::HealthChanged { healthy, .. } => {
            if *healthy {
                tracing::info!(%cluster, %endpoint, event = event.kind(), healthy, "endpoint healthy");
            } else {
                tracing::warn!(%cluster, %endpoint, event = event.kind(), healthy, "endpoint unhealthy");
            }
            if let Some(m) = metrics {
                m.resilience.health_changed(cluster, *healthy);
            }
        }
    }
}

/// The running checker of one cluster; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Checker {
    task: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checker {
    /// Stops the task; the cluster's health state stays as it is.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }

    /// Whether the task still runs.
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Starts the checker of a cluster when inside a tokio runtime (else `None`: a cluster
    /// built outside one, as unit tests do, has no clock-driven health).
    pub(crate) fn start(
        name: Arc<str>,
        check: Option<HealthCheck>,
        health: Arc<ClusterHealth>,
        endpoints: Weak<Endpoints>,
        pools: Arc<Pools>,
        metrics: &Arc<Metrics>,
    ) -> Option<Checker> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let metrics = metrics.clone();
        let task = runtime.spawn(async move {
            run(name, check, health, endpoints, pools, metrics).await;
        });
        Some(Checker { task })
    }
}

/// When each endpoint's next check is due, and whether one is in flight.
#[derive(Debug, Default)]
struct Schedule {
    next: HashMap<SocketAddr, Instant>,
    running: HashMap<SocketAddr, ()>,
}

async fn run(
    name: Arc<str>,
    check: Option<HealthCheck>,
    health: Arc<ClusterHealth>,
    endpoints: Weak<Endpoints>,
    pools: Arc<Pools>,
    metrics: Arc<Metrics>,
) {
    let check = check.map(Arc::new);
    let mut schedule = Schedule::default();
    let mut probes: JoinSet<(SocketAddr, Result<(), ProbeFailure>)> = JoinSet::new();
    let mut next_tick = Instant::now() + TICK;
    // The endpoints last handed to `sync`: DNS may change them, but most rounds it has not.
    let mut synced: Vec<Arc<levee_balance::Endpoint>> = Vec::new();
    loop {
        let now = Instant::now();
        let Some(current) = endpoints.upgrade().map(|e| e.all_endpoints()) else {
            return;
        };
        let changed = current.len() != synced.len()
            || current.iter().zip(&synced).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            health.sync(&current);
            synced.clone_from(&current);
        }

        if now >= next_tick {
            for event in health.tick(now) {
                log_event(&name, Some(&metrics), &event);
            }
            next_tick = now + TICK;
        }

        let mut wake = next_tick;
        if let Some(check) = &check {
            let live: Vec<SocketAddr> = current.iter().map(|e| e.address()).collect();
            schedule.next.retain(|a, _| live.contains(a));
            for &address in &live {
                let due = *schedule.next.entry(address).or_insert_with(|| {
                    // The first check waits a random part of `initial_delay`, so the checks of
                    // many endpoints (and gateways) do not all fire at once.
                    let delay = check.initial_delay.mul_f64(rand::rng().random::<f64>());
                    now + delay
                });
                if due <= now && !schedule.running.contains_key(&address) {
                    schedule.running.insert(address, ());
                    let (pools, check) = (pools.clone(), check.clone());
                    probes.spawn(async move { (address, probe(&pools, address, &check).await) });
                } else if due > now {
                    wake = wake.min(due);
                }
            }
        }

        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            Some(done) = probes.join_next(), if !probes.is_empty() => {
                let Ok((address, result)) = done else { continue };
                schedule.running.remove(&address);
                let Some(check) = &check else { continue };
                let Some(endpoint) = health.health_of(address) else { continue };
                if let Err(failure) = &result {
                    tracing::debug!(cluster = %name, endpoint = %address, %failure, "health check failed");
                }
                for event in health.record_active(&endpoint, result.is_ok()) {
                    log_event(&name, Some(&metrics), &event);
                }
                let interval = if endpoint.status(Instant::now()).healthy {
                    check.interval
                } else {
                    check.unhealthy_interval
                };
                let wait = jitter(interval, check.jitter, &mut rand::rng());
                schedule.next.insert(address, Instant::now() + wait);
            }
        }
    }
}
