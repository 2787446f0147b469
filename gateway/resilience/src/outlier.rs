//! Passive outlier detection: what a request outcome means, when an endpoint is an outlier, and
//! for how long it is ejected.
//!
//! The state machine that applies these rules (ejection, probation, the floor, readmission) is
//! [`ClusterHealth`](crate::health::ClusterHealth); this module holds its parameters and the
//! pure parts: the outcome classes, the two rate detectors and the ejection-time arithmetic.
//!
//! # Detectors (Envoy's)
//!
//! - **Consecutive 5xx** (default 5): any 5xx response, and any gateway failure, in a row.
//! - **Consecutive gateway failures** (default 5): 502, 503, 504, connect errors, resets and
//!   timeouts in a row; another 5xx breaks the run. Gateway failures without a response count
//!   for both detectors, as Envoy counts them when it does not split local-origin errors.
//! - **Success rate** (default on: factor 1.9, 5 hosts, 100 requests): every `interval`, among
//!   the endpoints with at least `request_volume` requests in that interval, when at least
//!   `minimum_hosts` qualify, an endpoint whose success rate is below
//!   `mean - stdev_factor * stdev` is an outlier.
//! - **Failure percentage** (default off; when on 85%, 5 hosts, 50 requests): every `interval`,
//!   with the same volume and host conditions, an endpoint whose failure share is at or above
//!   `threshold` is an outlier.
//!
//! # Ejection time
//!
//! The n-th ejection lasts `base_ejection_time * n`, capped at `max_ejection_time` (30s, 60s,
//! 90s … 300s by default), so an endpoint that keeps failing stays out longer each time instead
//! of flapping back every 30 seconds. The count is capped where the cap is reached (10 by
//! default) and decays by one for each `interval` the endpoint spends readmitted, so an endpoint
//! that stays well returns to short ejections.
//!
//! # Why a floor instead of Envoy's 10% cap
//!
//! Envoy's `max_ejection_percent` (10%) rounds down, so clusters of fewer than ten endpoints can
//! never eject anything. [`MinHealthy`] instead names the usable endpoints that must remain; the
//! default, one, only forbids ejecting the last usable endpoint, which would turn a partial
//! failure into a total one.

use std::time::Duration;

/// Passive outlier detection parameters of one cluster (mirror of the config's
/// `outlier_detection`). A detector set to `None` is off.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierParams {
    /// Whether passive detection runs at all. Default `true`; turning it off readmits every
    /// ejected endpoint.
    pub enabled: bool,
    /// Consecutive 5xx (and gateway failures) that eject. Default `Some(5)`.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway failures (502, 503, 504, connect error, reset, timeout) that eject.
    /// Default `Some(5)`.
    pub consecutive_gateway_failure: Option<u32>,
    /// Success-rate detector. Default on with [`SuccessRateParams::default`].
    pub success_rate: Option<SuccessRateParams>,
    /// Failure-percentage detector. Default off.
    pub failure_percentage: Option<FailurePercentageParams>,
    /// How often the rate detectors run, and the decay step of the ejection count. Default 10s.
    pub interval: Duration,
    /// Length of the first ejection; the n-th lasts n times this. Default 30s.
    pub base_ejection_time: Duration,
    /// Longest ejection. Default 300s.
    pub max_ejection_time: Duration,
    /// Usable endpoints that ejection never goes below. Default `Count(1)`.
    pub min_healthy: MinHealthy,
}

/// Success-rate detector parameters (Envoy's `success_rate_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRateParams {
    /// An outlier's rate is below `mean - stdev_factor * stdev`. Default 1.9.
    pub stdev_factor: f64,
    /// Endpoints with enough volume needed for the detector to run. Default 5.
    pub minimum_hosts: u32,
    /// Requests in one interval for an endpoint to count. Default 100.
    pub request_volume: u32,
}

/// Failure-percentage detector parameters (Envoy's `failure_percentage_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct FailurePercentageParams {
    /// Failure share (0..=1) at or above which an endpoint is an outlier. Default 0.85.
    pub threshold: f64,
    /// Endpoints with enough volume needed for the detector to run. Default 5.
    pub minimum_hosts: u32,
    /// Requests in one interval for an endpoint to count. Default 50.
    pub request_volume: u32,
}

/// The floor of usable endpoints that ejection never goes below. Default `Count(1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinHealthy {
    /// At least this many usable endpoints remain.
    Count(u32),
    /// At least this fraction (0..=1) of the cluster's endpoints, rounded up, remain usable.
    Fraction(f64),
}

/// What one request to an endpoint ended with, as the outlier detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with a status below 500.
    Success,
    /// A 5xx response from the upstream. 502, 503 and 504 also count as gateway failures.
    Status(u16),
    /// No response: connect error, reset, or timeout.
    GatewayFailure,
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectReason {
    /// `consecutive_5xx` 5xx responses (or gateway failures) in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` gateway failures in a row.
    ConsecutiveGatewayFailure,
    /// Success rate below the cluster's `mean - stdev_factor * stdev`.
    SuccessRate,
    /// Failure share at or above the failure-percentage threshold.
    FailurePercentage,
}

/// Requests and failures of one endpoint during one detection interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Volume {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
}

// === impl OutlierParams ===

impl Default for OutlierParams {
    fn default() -> Self {
        OutlierParams {
            enabled: true,
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: Some(5),
            success_rate: Some(SuccessRateParams::default()),
            failure_percentage: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            min_healthy: MinHealthy::default(),
        }
    }
}

impl OutlierParams {
    /// How long the ejection numbered `count` (1 for the first) lasts:
    /// `base_ejection_time * count`, at most `max_ejection_time`.
    pub fn ejection_duration(&self, count: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(count.max(1))
            .min(self.max_ejection_time)
    }

    /// The largest useful ejection count: the first whose duration reaches the cap. Counting
    /// beyond it would only slow the decay down without lengthening any ejection.
    pub fn max_ejection_count(&self) -> u32 {
        let base = self.base_ejection_time.as_nanos();
        if base == 0 {
            return 1;
        }
        let steps = self.max_ejection_time.as_nanos().div_ceil(base).max(1);
        u32::try_from(steps).unwrap_or(u32::MAX)
    }
}

// === impl SuccessRateParams ===

impl Default for SuccessRateParams {
    fn default() -> Self {
        SuccessRateParams {
            stdev_factor: 1.9,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

// === impl FailurePercentageParams ===

impl Default for FailurePercentageParams {
    fn default() -> Self {
        FailurePercentageParams {
            threshold: 0.85,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

// === impl MinHealthy ===

impl Default for MinHealthy {
    fn default() -> Self {
        MinHealthy::Count(1)
    }
}

impl MinHealthy {
    /// The number of usable endpoints that must remain in a cluster of `total` endpoints.
    pub fn floor(self, total: usize) -> usize {
        match self {
            MinHealthy::Count(n) => n as usize,
            MinHealthy::Fraction(f) => (f.clamp(0.0, 1.0) * total as f64).ceil() as usize,
        }
    }
}

// === impl Outcome ===

impl Outcome {
    /// The outcome of a response with `status`: [`Outcome::Status`] for 5xx, else success.
    pub fn from_status(status: u16) -> Outcome {
        if (500..600).contains(&status) {
            Outcome::Status(status)
        } else {
            Outcome::Success
        }
    }

    /// Whether the outcome counts as a failure for the rate detectors (any 5xx, no response).
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success)
    }

    /// Whether the outcome counts as a gateway failure: 502, 503, 504 or no response.
    pub fn is_gateway_failure(self) -> bool {
        match self {
            Outcome::Success => false,
            Outcome::Status(status) => matches!(status, 502..=504),
            Outcome::GatewayFailure => true,
        }
    }
}

// === impl EjectReason ===

impl EjectReason {
    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive_5xx",
            EjectReason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            EjectReason::SuccessRate => "success_rate",
            EjectReason::FailurePercentage => "failure_percentage",
        }
    }
}

impl std::fmt::Display for EjectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Volume ===

impl Volume {
    fn success_rate(self) -> f64 {
        if self.requests == 0 {
            return 1.0;
        }
        1.0 - self.failure_share()
    }

    fn failure_share(self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.failures.min(self.requests) as f64 / self.requests as f64
    }
}

// === detectors ===

/// Success-rate outliers among `volumes` (index, volume), worst first.
///
/// Only endpoints with at least `request_volume` requests take part, and nothing is an outlier
/// unless at least `minimum_hosts` do. The spread is the population standard deviation, as in
/// Envoy.
pub(crate) fn success_rate_outliers(
    params: &SuccessRateParams,
    volumes: &[(usize, Volume)],
) -> Vec<usize> {
    let qualified: Vec<(usize, f64)> = volumes
        .iter()
        .filter(|(_, v)| v.requests >= u64::from(params.request_volume))
        .map(|&(i, v)| (i, v.success_rate()))
        .collect();
    if qualified.is_empty() || qualified.len() < params.minimum_hosts as usize {
        return Vec::new();
    }
    let n = qualified.len() as f64;
    let mean = qualified.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = qualified
        .iter()
        .map(|(_, r)| (r - mean).powi(2))
        .sum::<f64>()
        / n;
    let threshold = mean - params.stdev_factor * variance.sqrt();
    worst_first(qualified.into_iter().filter(|&(_, r)| r < threshold))
}

/// Failure-percentage outliers among `volumes` (index, volume), worst first.
pub(crate) fn failure_percentage_outliers(
    params: &FailurePercentageParams,
    volumes: &[(usize, Volume)],
) -> Vec<usize> {
    let qualified: Vec<(usize, f64)> = volumes
        .iter()
        .filter(|(_, v)| v.requests >= u64::from(params.request_volume))
        .map(|&(i, v)| (i, v.success_rate()))
        .collect();
    if qualified.is_empty() || qualified.len() < params.minimum_hosts as usize {
        return Vec::new();
    }
    worst_first(
        qualified
            .into_iter()
            .filter(|&(_, rate)| 1.0 - rate >= params.threshold),
    )
}

/// Indices by ascending success rate: when the floor stops ejections part-way, the worst
/// endpoints are the ones that went.
fn worst_first(outliers: impl Iterator<Item = (usize, f64)>) -> Vec<usize> {
    let mut outliers: Vec<(usize, f64)> = outliers.collect();
    outliers.sort_by(|a, b| a.1.total_cmp(&b.1));
    outliers.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(requests: u64, failures: u64) -> Volume {
        Volume { requests, failures }
    }

    #[test]
    fn ejection_time_grows_with_the_count_up_to_the_cap() {
        let params = OutlierParams::default();
        let secs: Vec<u64> = (1..=12)
            .map(|n| params.ejection_duration(n).as_secs())
            .collect();
        assert_eq!(
            secs,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        assert_eq!(params.max_ejection_count(), 10);
        let uneven = OutlierParams {
            base_ejection_time: Duration::from_secs(40),
            max_ejection_time: Duration::from_secs(100),
            ..OutlierParams::default()
        };
        assert_eq!(uneven.max_ejection_count(), 3);
        assert_eq!(uneven.ejection_duration(3), Duration::from_secs(100));
    }

    #[test]
    fn outcome_classes_follow_envoy() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(404), Outcome::Success);
        assert_eq!(Outcome::from_status(500), Outcome::Status(500));
        assert!(Outcome::Status(500).is_failure());
        assert!(!Outcome::Status(500).is_gateway_failure());
        for status in [502, 503, 504] {
            assert!(Outcome::Status(status).is_gateway_failure());
        }
        assert!(Outcome::GatewayFailure.is_gateway_failure());
        assert!(!Outcome::Success.is_failure());
    }

    #[test]
    fn floor_counts_or_rounds_a_fraction_up() {
        assert_eq!(MinHealthy::default().floor(10), 1);
        assert_eq!(MinHealthy::Count(3).floor(2), 3);
        assert_eq!(MinHealthy::Fraction(0.5).floor(5), 3);
        assert_eq!(MinHealthy::Fraction(0.5).floor(4), 2);
        assert_eq!(MinHealthy::Fraction(0.0).floor(4), 0);
    }

    #[test]
    fn success_rate_finds_the_endpoint_far_below_the_mean() {
        let params = SuccessRateParams::default();
        let mut volumes: Vec<(usize, Volume)> = (0..5).map(|i| (i, volume(200, 2))).collect();
        volumes.push((5, volume(200, 120)));
        assert_eq!(success_rate_outliers(&params, &volumes), [5]);

        // Too few requests: the bad endpoint does not take part.
        volumes[5].1 = volume(99, 90);
        assert!(success_rate_outliers(&params, &volumes).is_empty());

        // Too few hosts with volume: the detector does not run.
        let few: Vec<_> = volumes.iter().copied().skip(2).collect();
        assert!(success_rate_outliers(&params, &few).is_empty());

        // Equal rates: no spread, no outlier.
        let even: Vec<_> = (0..6).map(|i| (i, volume(100, 50))).collect();
        assert!(success_rate_outliers(&params, &even).is_empty());
    }

    #[test]
    fn failure_percentage_ejects_at_the_threshold_worst_first() {
        let params = FailurePercentageParams::default();
        let mut volumes: Vec<(usize, Volume)> = (0..3).map(|i| (i, volume(50, 0))).collect();
        volumes.push((3, volume(100, 85)));
        volumes.push((4, volume(100, 100)));
        assert_eq!(failure_percentage_outliers(&params, &volumes), [4, 3]);

        volumes[4].1 = volume(49, 49);
        assert!(failure_percentage_outliers(&params, &volumes).is_empty());
    }
}
