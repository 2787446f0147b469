//! Fault injection for chaos drills: delay or abort a share of a route's requests, or the
//! requests that ask for it by header.
//!
//! Nothing is injected unless the route has a `fault` section. Header control
//! (`x-levee-fault-delay: 200ms`, `x-levee-fault-abort: 503`) only works when the route sets
//! `fault.headers: true`, so clients cannot inject faults into routes that did not opt in.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use levee_config::Fault;
use rand::Rng;

/// Request header that asks for a delay (a duration like `250ms`).
pub const X_LEVEE_FAULT_DELAY: &str = "x-levee-fault-delay";
/// Request header that asks for an abort with the given status.
pub const X_LEVEE_FAULT_ABORT: &str = "x-levee-fault-abort";

/// The most a header may ask to delay a request.
const MAX_HEADER_DELAY: Duration = Duration::from_secs(60);

/// What to do to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Injection {
    /// Wait this long before going on.
    pub(crate) delay: Option<Duration>,
    /// Then answer with this status instead of forwarding.
    pub(crate) abort: Option<StatusCode>,
}

/// Decides the faults for one request of a route with `fault` configured.
pub(crate) fn decide(fault: &Fault, headers: &HeaderMap, rng: &mut impl Rng) -> Injection {
    let mut injection = Injection::default();
    if let Some(delay) = &fault.delay
        && rng.random_bool(delay.percent.clamp(0.0, 1.0))
    {
        injection.delay = Some(delay.duration);
    }
    if let Some(abort) = &fault.abort
        && rng.random_bool(abort.percent.clamp(0.0, 1.0))
    {
        injection.abort = StatusCode::from_u16(abort.status).ok();
    }
    if fault.headers {
        if let Some(delay) = headers
            .get(X_LEVEE_FAULT_DELAY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| humantime::parse_duration(v.trim()).ok())
        {
            injection.delay = Some(delay.min(MAX_HEADER_DELAY));
        }
        if let Some(status) = headers
            .get(X_LEVEE_FAULT_ABORT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            injection.abort = Some(status);
        }
    }
    injection
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use levee_config::{FaultAbort, FaultDelay};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn fault(delay: f64, abort: f64, headers: bool) -> Fault {
        Fault {
            delay: Some(FaultDelay {
                duration: Duration::from_millis(100),
                percent: delay,
            }),
            abort: Some(FaultAbort {
                status: 503,
                percent: abort,
            }),
            headers,
        }
    }

    #[test]
    fn injects_about_the_configured_share() {
        let mut rng = SmallRng::seed_from_u64(7);
        let fault = fault(0.25, 0.1, false);
        let (mut delays, mut aborts) = (0, 0);
        for _ in 0..10_000 {
            let i = decide(&fault, &HeaderMap::new(), &mut rng);
            delays += usize::from(i.delay.is_some());
            aborts += usize::from(i.abort.is_some());
        }
        assert!((2_200..2_800).contains(&delays), "{delays} delays");
        assert!((800..1_200).contains(&aborts), "{aborts} aborts");
    }

    #[test]
    fn headers_only_count_when_the_route_allows_them() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut headers = HeaderMap::new();
        headers.insert(X_LEVEE_FAULT_DELAY, HeaderValue::from_static("250ms"));
        headers.insert(X_LEVEE_FAULT_ABORT, HeaderValue::from_static("502"));

        let off = decide(&fault(0.0, 0.0, false), &headers, &mut rng);
        assert_eq!(off, Injection::default());

        let on = decide(&fault(0.0, 0.0, true), &headers, &mut rng);
        assert_eq!(on.delay, Some(Duration::from_millis(250)));
        assert_eq!(on.abort, Some(StatusCode::BAD_GATEWAY));
    }

    #[test]
    fn nonsense_headers_inject_nothing() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut headers = HeaderMap::new();
        headers.insert(X_LEVEE_FAULT_DELAY, HeaderValue::from_static("soon"));
        headers.insert(X_LEVEE_FAULT_ABORT, HeaderValue::from_static("42"));
        let i = decide(&fault(0.0, 0.0, true), &headers, &mut rng);
        assert_eq!(i, Injection::default());
    }
}
