//! Checks of the resilience keys: route `retry`, `fallback`, `rate_limit` and `fault`; cluster
//! `health_check`, `outlier_detection`, `circuit_breaker` and `limits`.
//!
//! When a default would contradict a value the user did write (a `base_ejection_time` longer
//! than the default `max_ejection_time`, a count window smaller than the default
//! `minimum_calls`), the default gives way instead of producing an error about a key that is not
//! in the file. Errors are only raised against what was written.

use std::time::Duration;

use crate::model::*;
use crate::raw::*;
use crate::tree::child;
use crate::units::{Dur, Ratio};

use super::{Checker, host_port, human, is_host, is_token};

/// Headers the gateway sets itself from the body of a static response.
const FRAMING_HEADERS: &[&str] = &["content-length", "transfer-encoding"];

// === impl Checker: routes ===

impl Checker<'_> {
    pub(super) fn retry(&mut self, key: &str, raw: RawRetry, route_timeout: Duration) -> Retry {
        let k = |name: &str| child(key, name);
        let attempts = self.range(&k("attempts"), raw.attempts.map(u64::from), 3, 1, 10, "");
        let on = match raw.on {
            None => vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::Timeout,
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ],
            Some(list) => {
                if list.is_empty() {
                    self.err(
                        k("on"),
                        "an empty list retries nothing; name conditions, or leave `on` out for \
                         the defaults",
                    );
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, on)| match on {
                        RawRetryOn::ConnectFailure => RetryOn::ConnectFailure,
                        RawRetryOn::Reset => RetryOn::Reset,
                        RawRetryOn::Timeout => RetryOn::Timeout,
                        RawRetryOn::Status(status) => {
                            RetryOn::Status(self.status(&format!("{key}.on[{i}]"), status, 500))
                        }
                    })
                    .collect()
            }
        };
        let per_try_key = k("per_try_timeout");
        let per_try_timeout = raw.per_try_timeout.map(|d| {
            let d = self.positive(&per_try_key, Some(d), Duration::ZERO);
            if d > route_timeout {
                self.err(
                    &per_try_key,
                    format!(
                        "`{}` is longer than the route `timeout` ({}), which bounds every try",
                        human(d),
                        human(route_timeout)
                    ),
                );
            }
            d
        });
        let backoff = raw.backoff.unwrap_or(RawBackoff {
            base: None,
            max: None,
        });
        let base = backoff.base.map_or(Duration::from_millis(25), |d| d.0);
        let max = match backoff.max {
            Some(max) => {
                if max.0 < base {
                    self.err(
                        format!("{key}.backoff.max"),
                        format!(
                            "`{}` is shorter than `base` ({})",
                            human(max.0),
                            human(base)
                        ),
                    );
                }
                max.0
            }
            None => base.max(Duration::from_millis(250)),
        };
        let budget = raw.budget.unwrap_or(RawRetryBudget {
            ratio: None,
            min_per_second: None,
        });
        Retry {
            attempts: u32::try_from(attempts).unwrap_or(3),
            on,
            per_try_timeout,
            backoff: Backoff { base, max },
            budget: RetryBudget {
                ratio: budget.ratio.map_or(0.2, |r| r.0),
                min_per_second: budget.min_per_second.unwrap_or(10),
            },
            max_buffered_body: raw.max_buffered_body.map_or(64 * 1024, |s| s.0),
        }
    }

    pub(super) fn fallback(&mut self, key: &str, raw: RawFallback) -> Fallback {
        let k = |name: &str| child(key, name);
        let on = match raw.on {
            None => vec![
                FailureKind::ConnectFailure,
                FailureKind::Reset,
                FailureKind::Timeout,
                FailureKind::Upstream5xx,
                FailureKind::CircuitOpen,
                FailureKind::NoHealthyEndpoint,
                FailureKind::Overloaded,
            ],
            Some(list) => {
                if list.is_empty() {
                    self.err(
                        k("on"),
                        "an empty list never triggers the fallback; name failure kinds, or \
                         leave `on` out for the defaults",
                    );
                }
                list.into_iter().map(failure_kind).collect()
            }
        };
        if raw.stale.is_none() && raw.response.is_none() {
            self.err(
                key,
                "a fallback needs `stale`, `response` or both; it has neither, so it could \
                 never answer",
            );
        }
        let stale = raw.stale.map(|s| Stale {
            max_age: self.positive(
                &format!("{key}.stale.max_age"),
                s.max_age,
                Duration::from_secs(600),
            ),
        });
        let response = raw
            .response
            .map(|r| self.static_response(&k("response"), r));
        Fallback {
            on,
            stale,
            response,
        }
    }

    fn static_response(&mut self, key: &str, raw: RawStaticResponse) -> StaticResponse {
        let k = |name: &str| child(key, name);
        let status = self.status(&k("status"), raw.status.map_or(503, u64::from), 200);
        let mut headers: Vec<(String, String)> = Vec::new();
        for (written, value) in raw.headers.unwrap_or_default() {
            let name_key = format!("{key}.headers.{written}");
            let name = self.header_name(&name_key, &written);
            if FRAMING_HEADERS.contains(&name.as_str()) {
                self.err(
                    &name_key,
                    format!("`{name}` is set by the gateway from the body; leave it out"),
                );
            } else if headers.iter().any(|(n, _)| *n == name) {
                self.err(
                    &name_key,
                    format!("header `{name}` is given twice (names are case-insensitive)"),
                );
            }
            let value = value.0;
            if let Err(message) = header_value(&value) {
                self.err(&name_key, message);
            }
            headers.push((name, value));
        }
        let (body, body_file) = match (raw.body, raw.body_file) {
            (Some(_), Some(_)) => {
                self.err(
                    k("body_file"),
                    "`body` and `body_file` cannot both be given; use one",
                );
                (Vec::new(), None)
            }
            (Some(text), None) => (text.into_bytes(), None),
            (None, Some(file)) => {
                let (path, content) = self.read_file(&k("body_file"), &file);
                (content, Some(path))
            }
            (None, None) => (Vec::new(), None),
        };
        StaticResponse {
            status,
            headers,
            body,
            body_file,
        }
    }

    pub(super) fn rate_limit(&mut self, key: &str, raw: RawRateLimit) -> RateLimit {
        let k = |name: &str| child(key, name);
        let rate = raw.requests_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            self.err(
                k("requests_per_second"),
                format!("must be greater than zero, found {rate}"),
            );
        }
        // One second's worth of tokens. Clamped first, so the cast neither wraps nor truncates.
        let default_burst = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u64;
        let burst = self.range(
            &k("burst"),
            raw.burst.map(u64::from),
            default_burst,
            1,
            u64::MAX,
            "",
        );
        let key_of = raw.key.map(|key_of| match key_of {
            RawRateLimitKey::Header(name) => {
                RateLimitKey::Header(self.header_name(&format!("{key}.key.header"), &name))
            }
            RawRateLimitKey::ClientIp => RateLimitKey::ClientIp,
        });
        let max_keys = self.range(
            &k("max_keys"),
            raw.max_keys.map(u64::from),
            100_000,
            1,
            u64::MAX,
            "",
        );
        RateLimit {
            requests_per_second: rate,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            key: key_of,
            max_keys: u32::try_from(max_keys).unwrap_or(u32::MAX),
        }
    }

    pub(super) fn fault(&mut self, key: &str, raw: RawFault) -> Fault {
        let delay = raw.delay.map(|d| FaultDelay {
            duration: self.positive(
                &format!("{key}.delay.duration"),
                Some(d.duration),
                Duration::ZERO,
            ),
            percent: d.percent.0,
        });
        let abort = raw.abort.map(|a| FaultAbort {
            status: self.status(&format!("{key}.abort.status"), u64::from(a.status), 200),
            percent: a.percent.0,
        });
        Fault {
            delay,
            abort,
            headers: raw.headers.unwrap_or(false),
        }
    }

    /// A status from `min` to 599; reported and replaced by 503 otherwise.
    fn status(&mut self, key: &str, status: u64, min: u64) -> u16 {
        if (min..=599).contains(&status) {
            u16::try_from(status).unwrap_or(503)
        } else {
            self.err(
                key,
                format!("status must be between {min} and 599, found {status}"),
            );
            503
        }
    }
}

fn failure_kind(raw: RawFailureKind) -> FailureKind {
    match raw {
        RawFailureKind::ConnectFailure => FailureKind::ConnectFailure,
        RawFailureKind::Reset => FailureKind::Reset,
        RawFailureKind::Timeout => FailureKind::Timeout,
        RawFailureKind::Upstream5xx => FailureKind::Upstream5xx,
        RawFailureKind::CircuitOpen => FailureKind::CircuitOpen,
        RawFailureKind::NoHealthyEndpoint => FailureKind::NoHealthyEndpoint,
        RawFailureKind::Overloaded => FailureKind::Overloaded,
        RawFailureKind::RateLimited => FailureKind::RateLimited,
    }
}

/// A header value the gateway can send: no control characters, nothing a client would strip.
fn header_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        Err("a header value must not contain control characters or line breaks".into())
    } else if value.trim_matches([' ', '\t']) != value {
        Err("a header value must not start or end with spaces or tabs".into())
    } else {
        Ok(())
    }
}

// === impl Checker: clusters ===

impl Checker<'_> {
    pub(super) fn health_check(&mut self, key: &str, raw: RawHealthCheck) -> HealthCheck {
        let k = |name: &str| child(key, name);
        let kind = match raw.kind.unwrap_or(RawHealthCheckType::Http) {
            RawHealthCheckType::Tcp => {
                let http_only = [
                    ("method", raw.method.is_some()),
                    ("path", raw.path.is_some()),
                    ("host", raw.host.is_some()),
                    ("expected_statuses", raw.expected_statuses.is_some()),
                    ("body_contains", raw.body_contains.is_some()),
                ];
                for (name, given) in http_only {
                    if given {
                        self.err(
                            k(name),
                            format!("`{name}` only applies to `type: http` checks, not `tcp`"),
                        );
                    }
                }
                HealthCheckKind::Tcp
            }
            RawHealthCheckType::Http => HealthCheckKind::Http(self.http_health_check(key, &raw)),
        };
        let interval = self.positive(&k("interval"), raw.interval, Duration::from_secs(5));
        let unhealthy_interval =
            self.positive(&k("unhealthy_interval"), raw.unhealthy_interval, interval);
        let shortest = interval.min(unhealthy_interval);
        let timeout = self.positive(
            &k("timeout"),
            raw.timeout,
            Duration::from_secs(1).min(shortest),
        );
        if raw.timeout.is_some() && timeout > shortest {
            let which = if unhealthy_interval < interval {
                "unhealthy_interval"
            } else {
                "interval"
            };
            self.err(
                k("timeout"),
                format!(
                    "the check timeout ({}) is longer than `{which}` ({}), so checks would \
                     overlap",
                    human(timeout),
                    human(shortest)
                ),
            );
        }
        let unhealthy_threshold = self.range(
            &k("unhealthy_threshold"),
            raw.unhealthy_threshold.map(u64::from),
            3,
            1,
            u64::MAX,
            "",
        );
        let healthy_threshold = self.range(
            &k("healthy_threshold"),
            raw.healthy_threshold.map(u64::from),
            2,
            1,
            u64::MAX,
            "",
        );
        let jitter = raw.jitter.map_or(0.1, |r| r.0);
        if jitter >= 1.0 {
            self.err(
                k("jitter"),
                "must be below 100%, or an interval could shrink to nothing",
            );
        }
        HealthCheck {
            kind,
            interval,
            unhealthy_interval,
            timeout,
            unhealthy_threshold: u32::try_from(unhealthy_threshold).unwrap_or(u32::MAX),
            healthy_threshold: u32::try_from(healthy_threshold).unwrap_or(u32::MAX),
            jitter,
            initial_delay: raw.initial_delay.map_or(interval, |d| d.0),
        }
    }

    fn http_health_check(&mut self, key: &str, raw: &RawHealthCheck) -> HttpHealthCheck {
        let k = |name: &str| child(key, name);
        let method = raw.method.clone().unwrap_or_else(|| "GET".to_owned());
        if !is_token(&method) {
            self.err(
                k("method"),
                format!("`{method}` is not a valid HTTP method"),
            );
        }
        let path = raw.path.clone().unwrap_or_else(|| "/healthz".to_owned());
        if raw.path.is_some() {
            self.http_path(&k("path"), &path);
        }
        if let Some(host) = &raw.host
            && !is_host(&host.to_ascii_lowercase())
            && host_port(host).is_err()
        {
            self.err(
                k("host"),
                format!("`{host}` is not a valid host (a DNS name or IP, with an optional port)"),
            );
        }
        let expected_statuses = match &raw.expected_statuses {
            None => vec![(200, 399)],
            Some(list) => {
                if list.is_empty() {
                    self.err(
                        k("expected_statuses"),
                        "at least one status is required, or no check could ever pass",
                    );
                }
                list.iter()
                    .enumerate()
                    .map(|(i, range)| {
                        self.status_range(&format!("{key}.expected_statuses[{i}]"), *range)
                    })
                    .collect()
            }
        };
        if raw.body_contains.as_deref() == Some("") {
            self.err(k("body_contains"), "must not be empty");
        }
        HttpHealthCheck {
            method: method.to_ascii_uppercase(),
            path,
            host: raw.host.clone(),
            expected_statuses,
            body_contains: raw.body_contains.clone(),
        }
    }

    fn status_range(&mut self, key: &str, RawStatusRange(low, high): RawStatusRange) -> (u16, u16) {
        let valid = |s: u64| (100..=599).contains(&s);
        if !valid(low) || !valid(high) {
            self.err(key, "statuses must be between 100 and 599");
        } else if low > high {
            self.err(
                key,
                format!("the range {low}-{high} is empty; write the low status first"),
            );
        }
        (
            u16::try_from(low).unwrap_or(200),
            u16::try_from(high).unwrap_or(399),
        )
    }

    pub(super) fn outlier_detection(
        &mut self,
        key: &str,
        raw: Option<Switch<RawOutlierDetection>>,
    ) -> OutlierDetection {
        let k = |name: &str| child(key, name);
        let raw = match raw {
            Some(Switch::Settings(settings)) => settings,
            None | Some(Switch::Bool(_)) => RawOutlierDetection {
                enabled: match raw {
                    Some(Switch::Bool(on)) => Some(on),
                    _ => None,
                },
                consecutive_5xx: None,
                consecutive_gateway_failure: None,
                success_rate: None,
                failure_percentage: None,
                interval: None,
                base_ejection_time: None,
                max_ejection_time: None,
                min_healthy: None,
            },
        };
        let success_rate = match raw.success_rate {
            Some(Switch::Bool(false)) => None,
            None | Some(Switch::Bool(true)) => Some(SuccessRate {
                stdev_factor: 1.9,
                minimum_hosts: 5,
                request_volume: 100,
            }),
            Some(Switch::Settings(s)) => Some(self.success_rate(&k("success_rate"), s)),
        };
        let failure_percentage = match raw.failure_percentage {
            None | Some(Switch::Bool(false)) => None,
            Some(Switch::Bool(true)) => Some(FailurePercentage {
                threshold: 0.85,
                minimum_hosts: 5,
                request_volume: 50,
            }),
            Some(Switch::Settings(f)) => Some(self.failure_percentage(&k("failure_percentage"), f)),
        };
        let base_ejection_time = self.positive(
            &k("base_ejection_time"),
            raw.base_ejection_time,
            Duration::from_secs(30),
        );
        let max_ejection_time = self.at_least(
            &k("max_ejection_time"),
            raw.max_ejection_time,
            Duration::from_secs(300),
            ("base_ejection_time", base_ejection_time),
        );
        let min_healthy = match raw.min_healthy {
            None => MinHealthy::Count(1),
            Some(RawMinHealthy::Fraction(f)) => MinHealthy::Fraction(f),
            Some(RawMinHealthy::Count(n)) => {
                let n = self.range(&k("min_healthy"), Some(n), 1, 0, u64::from(u32::MAX), "");
                MinHealthy::Count(u32::try_from(n).unwrap_or(1))
            }
        };
        OutlierDetection {
            enabled: raw.enabled.unwrap_or(true),
            consecutive_5xx: Some(raw.consecutive_5xx.unwrap_or(5)).filter(|n| *n > 0),
            consecutive_gateway_failure: Some(raw.consecutive_gateway_failure.unwrap_or(5))
                .filter(|n| *n > 0),
            success_rate,
            failure_percentage,
            interval: self.positive(&k("interval"), raw.interval, Duration::from_secs(10)),
            base_ejection_time,
            max_ejection_time,
            min_healthy,
        }
    }

    fn success_rate(&mut self, key: &str, raw: RawSuccessRate) -> SuccessRate {
        let stdev_factor = raw.stdev_factor.unwrap_or(1.9);
        if !(stdev_factor.is_finite() && stdev_factor > 0.0) {
            self.err(
                child(key, "stdev_factor"),
                format!("must be greater than zero, found {stdev_factor}"),
            );
        }
        let (minimum_hosts, request_volume) =
            self.volumes(key, raw.minimum_hosts, raw.request_volume, (5, 100));
        SuccessRate {
            stdev_factor,
            minimum_hosts,
            request_volume,
        }
    }

    fn failure_percentage(&mut self, key: &str, raw: RawFailurePercentage) -> FailurePercentage {
        let threshold = self.above_zero(&child(key, "threshold"), raw.threshold, 0.85);
        let (minimum_hosts, request_volume) =
            self.volumes(key, raw.minimum_hosts, raw.request_volume, (5, 50));
        FailurePercentage {
            threshold,
            minimum_hosts,
            request_volume,
        }
    }

    /// `minimum_hosts` and `request_volume` of a rate-based detector: both at least 1.
    fn volumes(
        &mut self,
        key: &str,
        minimum_hosts: Option<u32>,
        request_volume: Option<u32>,
        (hosts, volume): (u32, u32),
    ) -> (u32, u32) {
        let mut at_least_one = |name: &str, value: Option<u32>, default: u32| {
            let v = self.range(
                &child(key, name),
                value.map(u64::from),
                u64::from(default),
                1,
                u64::MAX,
                "",
            );
            u32::try_from(v).unwrap_or(default)
        };
        (
            at_least_one("minimum_hosts", minimum_hosts, hosts),
            at_least_one("request_volume", request_volume, volume),
        )
    }

    pub(super) fn circuit_breaker(&mut self, key: &str, raw: RawCircuitBreaker) -> CircuitBreaker {
        let k = |name: &str| child(key, name);
        let window = match raw.window {
            None => BreakerWindow::Count(100),
            Some(RawBreakerWindow::Count(n)) => match u32::try_from(n) {
                Ok(0) => {
                    self.err(k("window"), "a window must hold at least 1 call");
                    BreakerWindow::Count(1)
                }
                Ok(n) => BreakerWindow::Count(n),
                Err(_) => {
                    self.err(k("window"), format!("{n} calls is too large a window"));
                    BreakerWindow::Count(u32::MAX)
                }
            },
            Some(RawBreakerWindow::Time(d)) => {
                BreakerWindow::Time(self.positive(&k("window"), Some(Dur(d)), d))
            }
        };
        let minimum_calls = match (raw.minimum_calls, window) {
            (Some(n), BreakerWindow::Count(calls)) if n > calls => {
                self.err(
                    k("minimum_calls"),
                    format!(
                        "{n} calls can never fit in a window of {calls} calls, so the breaker \
                         would never open"
                    ),
                );
                n
            }
            (Some(n), _) => {
                let n = self.range(&k("minimum_calls"), Some(u64::from(n)), 20, 1, u64::MAX, "");
                u32::try_from(n).unwrap_or(20)
            }
            (None, BreakerWindow::Count(calls)) => calls.min(20),
            (None, BreakerWindow::Time(_)) => 20,
        };
        let open_duration = self.positive(
            &k("open_duration"),
            raw.open_duration,
            Duration::from_secs(30),
        );
        let max_open_duration = self.at_least(
            &k("max_open_duration"),
            raw.max_open_duration,
            Duration::from_secs(300),
            ("open_duration", open_duration),
        );
        let half_open_probes = self.range(
            &k("half_open_probes"),
            raw.half_open_probes.map(u64::from),
            3,
            1,
            u64::MAX,
            "",
        );
        CircuitBreaker {
            failure_rate: self.above_zero(&k("failure_rate"), raw.failure_rate, 0.5),
            slow_call_rate: self.above_zero(&k("slow_call_rate"), raw.slow_call_rate, 1.0),
            slow_call_duration: self.positive(
                &k("slow_call_duration"),
                raw.slow_call_duration,
                Duration::from_secs(2),
            ),
            window,
            minimum_calls,
            open_duration,
            max_open_duration,
            half_open_probes: u32::try_from(half_open_probes).unwrap_or(3),
            per_endpoint: raw.per_endpoint.unwrap_or(false),
        }
    }

    pub(super) fn cluster_limits(
        &mut self,
        key: &str,
        raw: Option<RawClusterLimits>,
    ) -> ClusterLimits {
        let raw = raw.unwrap_or(RawClusterLimits {
            max_connections: None,
            max_pending: None,
            max_requests: None,
            max_retries: None,
        });
        let mut at_least_one = |name: &str, value: Option<u32>, default: u32| {
            let v = self.range(
                &child(key, name),
                value.map(u64::from),
                u64::from(default),
                1,
                u64::MAX,
                "",
            );
            u32::try_from(v).unwrap_or(default)
        };
        ClusterLimits {
            max_connections: at_least_one("max_connections", raw.max_connections, 1024),
            max_pending: at_least_one("max_pending", raw.max_pending, 1024),
            max_requests: at_least_one("max_requests", raw.max_requests, 1024),
            max_retries: at_least_one("max_retries", raw.max_retries, 3),
        }
    }

    /// A ratio that must be above zero (a zero threshold would trip on every call).
    fn above_zero(&mut self, key: &str, value: Option<Ratio>, default: f64) -> f64 {
        let v = value.map_or(default, |r| r.0);
        if v <= 0.0 {
            self.err(key, "must be above 0%");
        }
        v
    }

    /// The upper bound of a growing period: at least `floor` (the named key it grows from).
    /// When absent, `default` or `floor`, whichever is longer.
    fn at_least(
        &mut self,
        key: &str,
        value: Option<Dur>,
        default: Duration,
        (floor_name, floor): (&str, Duration),
    ) -> Duration {
        match value {
            None => default.max(floor),
            Some(Dur(d)) => {
                if d < floor {
                    self.err(
                        key,
                        format!(
                            "`{}` is shorter than `{floor_name}` ({})",
                            human(d),
                            human(floor)
                        ),
                    );
                }
                d
            }
        }
    }
}
