//! Chaos: upstreams die, hang, fail and flap under client load, and the gateway absorbs it.
//!
//! Each test breaks real loopback upstreams ([`ChaosUpstream`]) while clients send requests,
//! then counts what the clients saw and reads `/clusters` to see what the gateway concluded.
//! Intervals in the configs are short (100ms to 1s) so the tests are quick; nothing asserts on
//! elapsed time. Every wait is bounded: [`bounded`] for the whole test, [`eventually`] for each
//! state change, and [`REQUEST_BOUND`] for each client request.

use std::net::SocketAddr;

use levee_tests::chaos::{
    ChaosUpstream, EndpointView, Load, Mode, REQUEST_BOUND, breaker_state, cluster, cluster_view,
    endpoint_view, route,
};
use levee_tests::client::{self, Reply};
use levee_tests::{TRIES, TestGateway, bounded, eventually};

/// Retries that hide any single endpoint failure: three tries, every retriable condition, a
/// short backoff, and a budget that never refuses (the budget has its own test).
const RETRY_EVERYTHING: &str = "retry: { attempts: 3, on: [connect-failure, reset, timeout, 502, 503, 504], \
     backoff: { base: 1ms, max: 10ms }, budget: { ratio: 100%, min_per_second: 1000 } }";

/// Cluster limits far above what these tests send, so no request is refused as `overloaded`.
const ROOMY_LIMITS: &str = "limits: { max_connections: 10000, max_pending: 10000, max_requests: 10000, max_retries: 10000 }";

/// Active health checks every 100ms: two failures make an endpoint unhealthy, one success
/// healthy again.
const FAST_HEALTH_CHECK: &str = "health_check: { path: /healthz, interval: 100ms, timeout: 100ms, \
     unhealthy_threshold: 2, healthy_threshold: 1, initial_delay: 10ms }";

async fn start_upstreams(names: &[&str]) -> Vec<ChaosUpstream> {
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(ChaosUpstream::start(name).await);
    }
    upstreams
}

fn addrs(upstreams: &[ChaosUpstream]) -> Vec<SocketAddr> {
    upstreams.iter().map(ChaosUpstream::addr).collect()
}

/// Waits until `check` holds for endpoint `upstream` of `cluster`; panics with its last view.
async fn wait_for_endpoint(
    gateway: &TestGateway,
    cluster: &str,
    upstream: &ChaosUpstream,
    what: &str,
    check: impl Fn(&EndpointView) -> bool,
) {
    let reached = eventually(TRIES, || async {
        endpoint_view(gateway.admin(), cluster, upstream.addr())
            .await
            .is_some_and(|e| check(&e))
    })
    .await;
    if !reached {
        let view = cluster_view(gateway.admin(), cluster).await;
        panic!(
            "{} never became {what}; /clusters: {}",
            upstream.name(),
            view.map_or("unavailable".to_string(), |v| v.raw.to_string())
        );
    }
}

async fn wait_until_all_healthy(gateway: &TestGateway, cluster: &str) {
    let healthy = eventually(TRIES, || async {
        cluster_view(gateway.admin(), cluster)
            .await
            .is_some_and(|c| {
                c.endpoints
                    .iter()
                    .all(|e| e.health == "healthy" && e.usable)
            })
    })
    .await;
    assert!(
        healthy,
        "active checks never found every endpoint healthy: {:?}",
        cluster_view(gateway.admin(), cluster).await.map(|c| c.raw)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_fails_no_request_and_health_checks_readmit_it() {
    bounded(async {
        let upstreams = start_upstreams(&["a", "b", "c"]).await;
        let victim = &upstreams[2];
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(RETRY_EVERYTHING)],
            &[cluster("backend", &addrs(&upstreams))
                .with(FAST_HEALTH_CHECK)
                // Only the active checks decide here; the passive variant is the next test.
                .with("outlier_detection: false")
                .with(ROOMY_LIMITS)],
        )
        .await;
        wait_until_all_healthy(&gateway, "backend").await;

        let load = Load::new(gateway.url("public", "/load")).start();
        assert!(load.wait_for(50).await, "the load got going");

        victim.kill().await;
        wait_for_endpoint(&gateway, "backend", victim, "unhealthy", |e| {
            e.health == "unhealthy" && !e.usable
        })
        .await;
        assert!(load.wait_for(100).await, "traffic flows while c is out");

        victim.restart().await;
        let before = victim.requests();
        wait_for_endpoint(&gateway, "backend", victim, "healthy", |e| {
            e.health == "healthy" && e.in_rotation()
        })
        .await;
        let serving = eventually(TRIES, || async { victim.requests() > before }).await;
        assert!(serving, "the restarted endpoint gets traffic again");

        let outcomes = load.stop().await;
        assert_eq!(
            outcomes.failures(),
            0,
            "clients saw failures: {:?}",
            outcomes
        );
        for upstream in &upstreams {
            assert!(
                outcomes.from_upstream(upstream.name()) > 0,
                "{} served: {outcomes:?}",
                upstream.name()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_is_ejected_and_readmitted_on_probation_without_health_checks() {
    bounded(async {
        let upstreams = start_upstreams(&["a", "b", "c"]).await;
        let victim = &upstreams[2];
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(RETRY_EVERYTHING)],
            &[cluster("backend", &addrs(&upstreams))
                .with(
                    "outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failure: 2, \
                     success_rate: false, interval: 1s, base_ejection_time: 300ms, \
                     max_ejection_time: 1s }",
                )
                .with(ROOMY_LIMITS)],
        )
        .await;

        let load = Load::new(gateway.url("public", "/load")).start();
        assert!(load.wait_for(50).await, "the load got going");

        victim.kill().await;
        wait_for_endpoint(&gateway, "backend", victim, "ejected", |e| {
            e.ejection.is_some() && !e.usable
        })
        .await;
        let ejection = gateway.endpoint("backend", victim.addr()).await;
        let ejected = ejection.ejection.clone().expect("ejected");
        assert!(ejected.count >= 1, "{:?}", ejection.raw);
        assert!(!ejected.reason.is_empty(), "{:?}", ejection.raw);
        assert!(load.wait_for(100).await, "traffic flows while c is out");

        // No health check runs: only a probation request can find out that it is back.
        victim.restart().await;
        let before = victim.requests();
        wait_for_endpoint(&gateway, "backend", victim, "readmitted", |e| {
            e.in_rotation() && !e.probation
        })
        .await;
        let serving = eventually(TRIES, || async { victim.requests() > before }).await;
        assert!(serving, "the restarted endpoint gets traffic again");
        assert_eq!(
            victim.health_checks(),
            0,
            "no active checks were configured"
        );

        let outcomes = load.stop().await;
        assert_eq!(
            outcomes.failures(),
            0,
            "clients saw failures: {:?}",
            outcomes
        );
        assert!(outcomes.from_upstream("c") > 0, "{outcomes:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_is_bounded_by_per_try_timeout_and_ejected() {
    bounded(async {
        let a = ChaosUpstream::start("a").await;
        let b = ChaosUpstream::start("b").await;
        let hole = ChaosUpstream::start_in("hole", Mode::BlackHole).await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend")
                // A route timeout beyond the client's own bound: only the per-try timeout can
                // keep a request that met the black hole from hanging.
                .with("timeout: 60s")
                .with(
                    "retry: { attempts: 3, on: [connect-failure, reset, timeout], \
                     per_try_timeout: 250ms, backoff: { base: 1ms, max: 10ms }, \
                     budget: { ratio: 100%, min_per_second: 1000 } }",
                )],
            &[cluster("backend", &[a.addr(), b.addr(), hole.addr()])
                .with(
                    "outlier_detection: { consecutive_5xx: 0, consecutive_gateway_failure: 3, \
                     success_rate: false, base_ejection_time: 1m }",
                )
                .with(ROOMY_LIMITS)],
        )
        .await;

        let outcomes = Load::new(gateway.url("public", "/load"))
            .clients(2)
            .max_per_client(30)
            .start()
            .finish()
            .await;
        assert_eq!(outcomes.client_timeouts(), 0, "requests hung: {outcomes:?}");
        assert_eq!(
            outcomes.ok(),
            outcomes.total,
            "every request that met the black hole is retried elsewhere: {outcomes:?}"
        );
        assert!(
            hole.requests() >= 3,
            "the black hole was tried ({} requests)",
            hole.requests()
        );

        wait_for_endpoint(&gateway, "backend", &hole, "ejected", |e| {
            e.ejection.is_some() && !e.usable
        })
        .await;
        let view = gateway.endpoint("backend", hole.addr()).await;
        let ejection = view.ejection.clone().expect("ejected");
        assert!(
            ejection.reason.contains("gateway"),
            "ejected by the consecutive gateway failure detector: {:?}",
            view.raw
        );
        assert!(ejection.count >= 1, "{:?}", view.raw);

        // Ejected: later requests never meet the black hole.
        let tried = hole.requests();
        for _ in 0..20 {
            let reply = gateway.get("/after").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        assert_eq!(hole.requests(), tried, "an ejected endpoint got requests");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_black_hole_answers_a_timeout_error_instead_of_hanging() {
    bounded(async {
        let hole = ChaosUpstream::start_in("hole", Mode::BlackHole).await;
        let gateway = TestGateway::start_specs(
            &[
                // Per-try timeouts end it; the route timeout is beyond the client's bound.
                route("per-try", "/per-try/", "backend")
                    .with("timeout: 60s")
                    .with(
                        "retry: { attempts: 2, on: [timeout], per_try_timeout: 200ms, \
                         backoff: { base: 1ms, max: 10ms } }",
                    ),
                // The route timeout alone ends it.
                route("route", "/route/", "backend").with("timeout: 500ms"),
            ],
            &[cluster("backend", &[hole.addr()])],
        )
        .await;

        for path in ["/per-try/x", "/route/x"] {
            let reply = gateway.get(path).await;
            assert_eq!(reply.status, 504, "{path}: {}", reply.text());
            let kind = reply.error_kind().unwrap_or_default();
            assert!(kind.contains("timeout"), "{path}: x-levee-error {kind:?}");
        }
        assert_eq!(hole.requests(), 3, "two tries on /per-try, one on /route");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_serves_fallback_caps_half_open_probes_and_closes() {
    bounded(async {
        let upstream = ChaosUpstream::start_in("u", Mode::Failing(503)).await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(
                "fallback:\n  on: [circuit-open]\n  response:\n    status: 503\n    \
                 headers: { x-fallback: breaker, retry-after: \"7\" }\n    body: breaker fallback",
            )],
            &[cluster("backend", &[upstream.addr()])
                .with(
                    "circuit_breaker: { failure_rate: 50%, window: 10, minimum_calls: 4, \
                     open_duration: 1s, max_open_duration: 2s, half_open_probes: 2 }",
                )
                .with("outlier_detection: false")
                .with(ROOMY_LIMITS)],
        )
        .await;
        let admin = gateway.admin();
        let is_fallback = |r: &Reply| r.status == 503 && r.text() == "breaker fallback";

        // Closed: failures reach the upstream until the window opens the breaker.
        assert_eq!(
            breaker_state(admin, "backend").await.as_deref(),
            Some("closed")
        );
        let mut opened = false;
        for _ in 0..50 {
            let reply = gateway.get("/fail").await;
            if breaker_state(admin, "backend").await.as_deref() == Some("open") {
                opened = true;
                break;
            }
            assert_eq!(reply.status, 503, "{}", reply.text());
        }
        assert!(opened, "the breaker never opened");
        assert!(
            upstream.requests() >= 4,
            "minimum_calls reached the upstream first"
        );

        // Open: the route's fallback answers, with the configured status, headers and body.
        let mut fallback = None;
        for _ in 0..20 {
            let reply = gateway.get("/open").await;
            if is_fallback(&reply) {
                fallback = Some(reply);
                break;
            }
        }
        let fallback = fallback.expect("the fallback response is served while open");
        assert_eq!(fallback.header("x-fallback"), Some("breaker"));
        assert_eq!(fallback.header("retry-after"), Some("7"));

        // Half-open: the upstream is well again but holds requests, so admitted probes stay in
        // flight while bursts of clients knock; at most `half_open_probes` get through at once.
        upstream.set_mode(Mode::Healthy);
        upstream.hold();
        upstream.reset_max_in_flight();
        let mut pending = Vec::new();
        let mut bursts_after_probe = 0;
        for _ in 0..200 {
            for _ in 0..10 {
                let url = gateway.url("public", "/probe");
                pending.push(tokio::spawn(async move {
                    tokio::time::timeout(REQUEST_BOUND, client::get(&client::http1(), &url)).await
                }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if upstream.in_flight() > 0 {
                bursts_after_probe += 1;
                if bursts_after_probe == 5 {
                    break;
                }
            }
        }
        assert!(upstream.in_flight() > 0, "no probe was ever let through");
        // Every request not held as a probe is answered (by the fallback) at once.
        let settled = eventually(TRIES, || async {
            pending.iter().filter(|t| !t.is_finished()).count() == upstream.in_flight()
        })
        .await;
        assert!(
            settled,
            "requests refused while half-open were not answered"
        );
        assert_eq!(
            breaker_state(admin, "backend").await.as_deref(),
            Some("half-open")
        );
        let max = upstream.max_in_flight();
        assert!(
            (1..=2).contains(&max),
            "{max} requests reached the upstream at once while half-open (cap 2)"
        );

        upstream.release();
        for task in pending {
            let reply = task
                .await
                .expect("client task")
                .expect("bounded")
                .expect("answered");
            assert!(
                reply.status == 200 || is_fallback(&reply),
                "{}: {}",
                reply.status,
                reply.text()
            );
        }

        // Recovered: enough successful probes close the breaker.
        let closed = eventually(TRIES, || async {
            let _ = gateway.get("/recover").await;
            breaker_state(admin, "backend").await.as_deref() == Some("closed")
        })
        .await;
        assert!(
            closed,
            "the breaker never closed after the upstream recovered"
        );
        let reply = gateway.get("/closed").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("u"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_answers_with_the_last_good_copy_when_every_endpoint_is_down() {
    bounded(async {
        let upstreams = start_upstreams(&["a", "b"]).await;
        let gateway = TestGateway::start_specs(
            &[
                route("items", "/item/", "backend").with(
                    "fallback:\n  stale: { max_age: 10m }\n  response:\n    status: 503\n    \
                     headers: { x-fallback: static }\n    body: static fallback",
                ),
                route("raw", "/raw/", "backend").with("fallback: { stale: { max_age: 10m } }"),
            ],
            &[cluster("backend", &addrs(&upstreams))],
        )
        .await;

        // Each fresh answer carries a serial number, so a copy is told from a new answer.
        let mut fresh = Vec::new();
        for path in ["/item/1", "/item/2", "/raw/1"] {
            let reply = gateway.get(path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_ne!(reply.header("x-levee-cache"), Some("stale"), "{path}");
            fresh.push((path, reply.body.clone()));
        }

        for upstream in &upstreams {
            upstream.kill().await;
        }

        for (path, body) in &fresh {
            let reply = gateway.get(path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_eq!(&reply.body, body, "{path}: the last good copy");
            assert_eq!(reply.header("x-levee-cache"), Some("stale"), "{path}");
            let age = reply.header("age").map(str::parse::<u64>);
            assert!(
                matches!(age, Some(Ok(_))),
                "{path}: an age header in seconds, got {:?}",
                reply.header("age")
            );
        }

        // Never stored: the static response where there is one, else the gateway's error.
        let reply = gateway.get("/item/never").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.text(), "static fallback");
        assert_eq!(reply.header("x-fallback"), Some("static"));
        assert_ne!(reply.header("x-levee-cache"), Some("stale"));

        let reply = gateway.get("/raw/never").await;
        assert!(
            reply.status.is_server_error() && reply.error_kind().is_some(),
            "{}: {}",
            reply.status,
            reply.text()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_endpoint_is_ejected_for_longer_each_time_without_a_storm() {
    bounded(async {
        let steady = ChaosUpstream::start("steady").await;
        let flappy = ChaosUpstream::start("flappy").await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend")],
            &[cluster("backend", &[steady.addr(), flappy.addr()])
                // The decay step (`interval`) is long, so the ejection count only grows here.
                .with(
                    "outlier_detection: { consecutive_5xx: 3, consecutive_gateway_failure: 0, \
                     success_rate: false, interval: 5m, base_ejection_time: 500ms, \
                     max_ejection_time: 10s }",
                )
                // One of two endpoints ejected is exactly the default threshold; keep panic
                // mode out of the picture.
                .with("panic_threshold: 10%")
                .with(ROOMY_LIMITS)],
        )
        .await;
        // One client, one request at a time: each ejection needs exactly three failures, and
        // each probation exactly one probe.
        let load = Load::new(gateway.url("public", "/flap"))
            .clients(1)
            .pace(std::time::Duration::from_millis(5))
            .start();

        let mut longest = Vec::new();
        for round in 1..=3u64 {
            let failed_before = flappy.failed();
            flappy.set_mode(Mode::Failing(503));
            wait_for_endpoint(&gateway, "backend", &flappy, "ejected", |e| {
                e.ejection.as_ref().is_some_and(|j| j.count >= round)
            })
            .await;
            let view = gateway.endpoint("backend", flappy.addr()).await;
            let ejection = view.ejection.clone().expect("ejected");
            assert_eq!(
                ejection.count, round,
                "one ejection per failing spell: {:?}",
                view.raw
            );
            longest.push(ejection.duration_ms);

            flappy.set_mode(Mode::Healthy);
            let failed = flappy.failed() - failed_before;
            assert!(
                failed <= 4,
                "round {round}: {failed} requests failed on the flapping endpoint (3 eject it)"
            );
            let before = flappy.requests();
            wait_for_endpoint(&gateway, "backend", &flappy, "readmitted", |e| {
                e.in_rotation() && !e.probation
            })
            .await;
            let serving = eventually(TRIES, || async { flappy.requests() > before }).await;
            assert!(serving, "round {round}: readmitted endpoint gets traffic");
        }
        // Each ejection lasts `base_ejection_time` (500ms) longer than the one before.
        assert_eq!(
            longest,
            vec![500, 1000, 1500],
            "each ejection lasts longer than the one before (ms)"
        );

        let outcomes = load.stop().await;
        assert!(outcomes.from_upstream("flappy") > 0, "{outcomes:?}");
        assert!(
            flappy.failed() <= 3 * 4,
            "{} failed requests on the flapping endpoint over three spells",
            flappy.failed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_failover_moves_traffic_to_the_standby_and_back() {
    bounded(async {
        let primary = ChaosUpstream::start("primary").await;
        let standby = ChaosUpstream::start("standby").await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(RETRY_EVERYTHING)],
            &[cluster("backend", &[primary.addr()])
                .endpoint(standby.addr(), 1)
                .with(FAST_HEALTH_CHECK)
                // Failover is driven by the health checks; an ejection would outlast the test.
                .with("outlier_detection: false")
                // One of two endpoints down is exactly the default threshold; keep panic mode
                // (which spreads over every endpoint) out of the picture.
                .with("panic_threshold: 10%")
                .with(ROOMY_LIMITS)],
        )
        .await;
        wait_until_all_healthy(&gateway, "backend").await;

        async fn all_from(gateway: &TestGateway, name: &str) {
            for _ in 0..20 {
                let reply = gateway.get("/traffic").await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                assert_eq!(reply.header("x-upstream"), Some(name), "{}", reply.text());
            }
        }
        async fn moves_to(gateway: &TestGateway, name: &str) -> bool {
            eventually(TRIES, || async {
                gateway.get("/traffic").await.header("x-upstream") == Some(name)
            })
            .await
        }

        all_from(&gateway, "primary").await;
        assert_eq!(
            standby.requests(),
            0,
            "the standby idles while the primary is up"
        );

        primary.kill().await;
        assert!(
            moves_to(&gateway, "standby").await,
            "traffic never failed over"
        );
        all_from(&gateway, "standby").await;

        primary.restart().await;
        assert!(
            moves_to(&gateway, "primary").await,
            "traffic never moved back"
        );
        let standby_served = standby.requests();
        all_from(&gateway, "primary").await;
        assert_eq!(
            standby.requests(),
            standby_served,
            "the standby idles again"
        );
    })
    .await;
}
