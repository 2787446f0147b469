//! Resilience features one at a time, against real loopback upstreams: cluster limits, rate
//! limits, fault injection, the retry budget, which requests may be retried, state carried
//! across a reload, and forcing a breaker from the admin API.
//!
//! Outcomes are counted (answers by status and `x-levee-error`, requests that reached each
//! upstream); nothing asserts on elapsed time.

use std::net::SocketAddr;

use http::Request;
use levee_tests::body::full;
use levee_tests::chaos::{
    ChaosUpstream, Mode, breaker_state, cluster, cluster_view, config, endpoint_view,
    force_breaker, route,
};
use levee_tests::client::{self, Reply};
use levee_tests::harness::CONFIG_FILE;
use levee_tests::{TRIES, TestGateway, bounded, eventually};

async fn post(gateway: &TestGateway, path: &str) -> Reply {
    let req = Request::post(gateway.url("public", path))
        .body(full("order #1"))
        .expect("request");
    client::send_bounded(req).await
}

// === limits, rate limit, faults ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_cluster_limit_get_503_overloaded() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        upstream.hold();
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend")],
            &[cluster("backend", &[upstream.addr()]).with("limits: { max_requests: 2 }")],
        )
        .await;

        let held: Vec<_> = (0..2)
            .map(|_| {
                let url = gateway.url("public", "/held");
                tokio::spawn(async move { client::get(&client::http1(), &url).await })
            })
            .collect();
        let both = eventually(TRIES, || async { upstream.in_flight() == 2 }).await;
        assert!(both, "two requests are held at the upstream");

        let reply = gateway.get("/over").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.error_kind(), Some("overloaded"), "{}", reply.text());
        assert_eq!(
            upstream.requests(),
            2,
            "the refused request never reached the upstream"
        );

        upstream.release();
        for task in held {
            let reply = task.await.expect("client task").expect("answered");
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        let reply = gateway.get("/after").await;
        assert_eq!(
            reply.status,
            200,
            "the slots are free again: {}",
            reply.text()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_get_429_with_retry_after() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        // One token per 100s: the burst of two is all there is during the test.
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend")
                .with("rate_limit: { requests_per_second: 0.01, burst: 2 }")],
            &[cluster("backend", &[upstream.addr()])],
        )
        .await;

        for _ in 0..2 {
            let reply = gateway.get("/x").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        for _ in 0..3 {
            let reply = gateway.get("/x").await;
            assert_eq!(reply.status, 429, "{}", reply.text());
            assert_eq!(reply.error_kind(), Some("rate-limited"));
            let after = reply.header("retry-after").map(str::parse::<u64>);
            assert!(
                matches!(after, Some(Ok(secs)) if secs >= 1),
                "retry-after in whole seconds, got {:?}",
                reply.header("retry-after")
            );
        }
        assert_eq!(
            upstream.requests(),
            2,
            "limited requests never reach the upstream"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keyed_by_header_gives_each_key_its_own_bucket() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(
                "rate_limit: { requests_per_second: 0.01, burst: 1, key: { header: x-api-key } }",
            )],
            &[cluster("backend", &[upstream.addr()])],
        )
        .await;

        let alice = ("x-api-key", "alice");
        assert_eq!(gateway.get_with("/x", &[alice]).await.status, 200);
        assert_eq!(gateway.get_with("/x", &[alice]).await.status, 429);
        let bob = gateway.get_with("/x", &[("x-api-key", "bob")]).await;
        assert_eq!(bob.status, 200, "bob has his own bucket: {}", bob.text());
        assert_eq!(gateway.get_with("/x", &[alice]).await.status, 429);
        assert_eq!(upstream.requests(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_at_100_percent_answers_every_request_itself() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend")
                .with("fault: { abort: { status: 503, percent: 100% } }")],
            &[cluster("backend", &[upstream.addr()])],
        )
        .await;

        for _ in 0..10 {
            let reply = gateway.get("/x").await;
            assert_eq!(reply.status, 503, "{}", reply.text());
            assert_eq!(reply.error_kind(), Some("fault-injected"));
        }
        assert_eq!(
            upstream.requests(),
            0,
            "aborted requests never reach the upstream"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_by_header_only_on_routes_that_allow_it() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        let gateway = TestGateway::start_specs(
            &[
                route("drill", "/drill/", "backend").with("fault: { headers: true }"),
                route("plain", "/", "backend"),
            ],
            &[cluster("backend", &[upstream.addr()])],
        )
        .await;
        let abort = ("x-levee-fault-abort", "418");

        let reply = gateway.get_with("/drill/x", &[abort]).await;
        assert_eq!(reply.status, 418, "{}", reply.text());
        assert_eq!(reply.error_kind(), Some("fault-injected"));
        assert_eq!(upstream.requests(), 0);

        let reply = gateway.get("/drill/x").await;
        assert_eq!(reply.status, 200, "no header, no fault: {}", reply.text());

        let reply = gateway.get_with("/plain", &[abort]).await;
        assert_eq!(
            reply.status,
            200,
            "the route did not opt in: {}",
            reply.text()
        );
        assert_eq!(upstream.requests(), 2);
    })
    .await;
}

// === retries ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_stops_retries_that_attempts_alone_would_allow() {
    bounded(async {
        let upstream = ChaosUpstream::start_in("u", Mode::Failing(503)).await;
        let retry = |budget: &str| {
            format!(
                "retry: {{ attempts: 5, on: [503], backoff: {{ base: 1ms, max: 2ms }}, \
                 budget: {budget} }}"
            )
        };
        let gateway = TestGateway::start_specs(
            &[
                // A floor far above what the test sends: every attempt is allowed.
                route("free", "/free/", "backend")
                    .with(&retry("{ ratio: 100%, min_per_second: 1000 }")),
                // No ratio, and a floor of one token a second: retries nearly stop.
                route("budget", "/budget/", "backend")
                    .with(&retry("{ ratio: 0%, min_per_second: 1 }")),
            ],
            &[cluster("backend", &[upstream.addr()])
                .with("outlier_detection: false")
                .with("limits: { max_retries: 100 }")],
        )
        .await;

        for _ in 0..10 {
            let reply = gateway.get("/free/x").await;
            assert_eq!(reply.status, 503);
        }
        assert_eq!(
            upstream.requests(),
            50,
            "without a tight budget, every attempt is made"
        );

        for _ in 0..10 {
            let reply = gateway.get("/budget/x").await;
            assert_eq!(reply.status, 503);
        }
        let attempts = upstream.requests() - 50;
        assert!(
            (10..25).contains(&attempts),
            "the budget allowed {attempts} attempts for 10 requests (50 without it)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_after_a_reset_but_get_is() {
    bounded(async {
        let upstream = ChaosUpstream::start_in("reset", Mode::Reset).await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with(
                "retry: { attempts: 3, on: [connect-failure, reset, timeout, 502, 503, 504], \
                 backoff: { base: 1ms, max: 2ms } }",
            )],
            &[cluster("backend", &[upstream.addr()]).with("outlier_detection: false")],
        )
        .await;

        let reply = post(&gateway, "/order").await;
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert_eq!(
            upstream.requests(),
            1,
            "the POST may have been applied: no retry"
        );

        let reply = gateway.get("/order").await;
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert_eq!(upstream.requests(), 4, "a GET is retried: three tries");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_after_a_timeout_but_get_is() {
    bounded(async {
        let upstream = ChaosUpstream::start_in("hole", Mode::BlackHole).await;
        let gateway = TestGateway::start_specs(
            &[route("all", "/", "backend").with("timeout: 10s").with(
                "retry: { attempts: 3, on: [timeout], per_try_timeout: 200ms, \
                 backoff: { base: 1ms, max: 2ms } }",
            )],
            &[cluster("backend", &[upstream.addr()]).with("outlier_detection: false")],
        )
        .await;

        let reply = post(&gateway, "/order").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert_eq!(
            upstream.requests(),
            1,
            "the POST may have been applied: no retry"
        );

        let reply = gateway.get("/order").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert_eq!(upstream.requests(), 4, "a GET is retried: three tries");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_retried_after_a_connect_failure() {
    bounded(async {
        let dead = ChaosUpstream::start("dead").await;
        dead.kill().await;
        let alive = ChaosUpstream::start("alive").await;
        let gateway = TestGateway::start_specs(
            &[
                route("retried", "/retried/", "backend").with(
                    "retry: { attempts: 3, on: [connect-failure], backoff: { base: 1ms, max: 2ms } }",
                ),
                route("once", "/once/", "backend"),
            ],
            &[cluster("backend", &[dead.addr(), alive.addr()]).with("outlier_detection: false")],
        )
        .await;

        // Without retries, round-robin sends some POSTs to the dead endpoint.
        let mut refused = 0;
        for _ in 0..4 {
            let reply = post(&gateway, "/once/order").await;
            if reply.status != 200 {
                assert_eq!(reply.status, 502, "{}", reply.text());
                refused += 1;
            }
        }
        assert!(refused > 0, "the dead endpoint is in rotation");

        // With retries, a POST that never reached an upstream is sent again.
        let before = alive.requests();
        for _ in 0..4 {
            let reply = post(&gateway, "/retried/order").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        assert_eq!(alive.requests() - before, 4);
    })
    .await;
}

// === state across reload ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_health_ejection_and_breaker_state_of_unchanged_endpoints() {
    bounded(async {
        // Passive: two failing endpoints get ejected for a long time; one of them moves.
        let failing = ChaosUpstream::start_in("failing", Mode::Failing(503)).await;
        let moving = ChaosUpstream::start_in("moving", Mode::Failing(503)).await;
        let steady = ChaosUpstream::start("steady").await;
        let moved = ChaosUpstream::start("moved").await;
        // Active: a dead endpoint is found unhealthy.
        let dead = ChaosUpstream::start("dead").await;
        dead.kill().await;
        let checked = ChaosUpstream::start("checked").await;
        // Breaker: an all-failing upstream opens it for a long time.
        let broken = ChaosUpstream::start_in("broken", Mode::Failing(503)).await;

        let routes = vec![
            route("passive", "/p/", "passive"),
            route("active", "/h/", "active"),
            route("breaker", "/b/", "breaker"),
        ];
        let passive = |endpoints: &[SocketAddr]| {
            cluster("passive", endpoints)
                .with(
                    "outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failure: 0, \
                     success_rate: false, base_ejection_time: 5m, max_ejection_time: 10m }",
                )
                .with("panic_threshold: 10%")
        };
        let clusters = |passive_endpoints: &[SocketAddr]| {
            vec![
                passive(passive_endpoints),
                cluster("active", &[dead.addr(), checked.addr()])
                    // A reset health state needs three failed checks to look unhealthy again.
                    .with(
                        "health_check: { path: /healthz, interval: 300ms, timeout: 200ms, \
                         unhealthy_threshold: 3, healthy_threshold: 1, initial_delay: 10ms }",
                    )
                    .with("outlier_detection: false"),
                cluster("breaker", &[broken.addr()])
                    .with(
                        "circuit_breaker: { failure_rate: 50%, window: 10, minimum_calls: 3, \
                         open_duration: 5m, max_open_duration: 10m }",
                    )
                    .with("outlier_detection: false"),
            ]
        };
        let gateway = TestGateway::start_specs(
            &routes,
            &clusters(&[failing.addr(), moving.addr(), steady.addr()]),
        )
        .await;
        let admin = gateway.admin();

        let ejected = |addr: SocketAddr| async move {
            endpoint_view(admin, "passive", addr)
                .await
                .is_some_and(|e| e.ejection.is_some())
        };
        let both = eventually(TRIES, || async {
            let _ = gateway.get("/p/x").await;
            ejected(failing.addr()).await && ejected(moving.addr()).await
        })
        .await;
        assert!(
            both,
            "{:?}",
            cluster_view(admin, "passive").await.map(|c| c.raw)
        );
        let unhealthy = eventually(TRIES, || async {
            endpoint_view(admin, "active", dead.addr())
                .await
                .is_some_and(|e| e.health == "unhealthy")
        })
        .await;
        assert!(
            unhealthy,
            "{:?}",
            cluster_view(admin, "active").await.map(|c| c.raw)
        );
        let open = eventually(TRIES, || async {
            let _ = gateway.get("/b/x").await;
            breaker_state(admin, "breaker").await.as_deref() == Some("open")
        })
        .await;
        assert!(
            open,
            "{:?}",
            cluster_view(admin, "breaker").await.map(|c| c.raw)
        );
        let before = gateway.endpoint("passive", failing.addr()).await;

        // A new route, and `moving` replaced by an endpoint at another address.
        let mut new_routes = routes.clone();
        new_routes.push(route("extra", "/extra/", "passive"));
        let yaml = config(
            &new_routes,
            &clusters(&[failing.addr(), moved.addr(), steady.addr()]),
        );
        gateway.dir.write_atomic(CONFIG_FILE, &yaml);
        gateway.reload().await.expect("the new config is valid");

        let after = gateway.endpoint("passive", failing.addr()).await;
        let ejection = after.ejection.clone().unwrap_or_else(|| {
            panic!(
                "the ejection was lost: before {:?}, after {:?}",
                before.raw, after.raw
            )
        });
        assert_eq!(
            ejection.count,
            before.ejection.as_ref().expect("ejected").count,
            "{:?}",
            after.raw
        );
        let fresh = gateway.endpoint("passive", moved.addr()).await;
        assert!(
            fresh.ejection.is_none() && fresh.usable,
            "an endpoint at a new address starts fresh: {:?}",
            fresh.raw
        );
        let dead_view = gateway.endpoint("active", dead.addr()).await;
        assert_eq!(dead_view.health, "unhealthy", "{:?}", dead_view.raw);
        assert_eq!(
            breaker_state(admin, "breaker").await.as_deref(),
            Some("open"),
            "the breaker was reset by the reload"
        );

        // And it acts on it: the still-ejected endpoint gets nothing; the breaker refuses.
        let failing_seen = failing.requests();
        for _ in 0..10 {
            let reply = gateway.get("/extra/x").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        assert_eq!(
            failing.requests(),
            failing_seen,
            "the ejected endpoint got requests"
        );
        assert!(moved.requests() > 0, "the new endpoint is in rotation");
        let broken_seen = broken.requests();
        let reply = gateway.get("/b/x").await;
        assert_eq!(reply.error_kind(), Some("circuit-open"), "{}", reply.text());
        assert_eq!(broken.requests(), broken_seen);
    })
    .await;
}

// === admin ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_forces_the_breaker_open_closed_and_back_to_auto() {
    bounded(async {
        let upstream = ChaosUpstream::start("u").await;
        let other = ChaosUpstream::start("other").await;
        let gateway = TestGateway::start_specs(
            &[
                route("guarded", "/g/", "guarded"),
                route("plain", "/", "plain"),
            ],
            &[
                cluster("guarded", &[upstream.addr()])
                    .with(
                        "circuit_breaker: { failure_rate: 50%, window: 10, minimum_calls: 3, \
                         open_duration: 5m }",
                    )
                    .with("outlier_detection: false"),
                cluster("plain", &[other.addr()]),
            ],
        )
        .await;
        let admin = gateway.admin();
        assert_eq!(
            breaker_state(admin, "guarded").await.as_deref(),
            Some("closed")
        );

        let reply = force_breaker(admin, "guarded", "open").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            breaker_state(admin, "guarded").await.as_deref(),
            Some("open")
        );
        let reply = gateway.get("/g/x").await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.error_kind(), Some("circuit-open"));
        assert_eq!(
            upstream.requests(),
            0,
            "a forced-open breaker lets nothing through"
        );

        // Forced closed, failures do not open it.
        let reply = force_breaker(admin, "guarded", "closed").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        upstream.set_mode(Mode::Failing(503));
        for _ in 0..10 {
            let reply = gateway.get("/g/x").await;
            assert_eq!(reply.status, 503, "{}", reply.text());
            assert_eq!(reply.error_kind(), None, "the upstream's own answer");
        }
        assert_eq!(upstream.requests(), 10);
        assert_eq!(
            breaker_state(admin, "guarded").await.as_deref(),
            Some("closed")
        );

        // Back to auto: the failures open it.
        let reply = force_breaker(admin, "guarded", "auto").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let opened = eventually(TRIES, || async {
            let _ = gateway.get("/g/x").await;
            breaker_state(admin, "guarded").await.as_deref() == Some("open")
        })
        .await;
        assert!(
            opened,
            "{:?}",
            cluster_view(admin, "guarded").await.map(|c| c.raw)
        );

        assert_eq!(
            force_breaker(admin, "guarded", "sideways").await.status,
            400
        );
        assert_eq!(force_breaker(admin, "plain", "open").await.status, 409);
        assert_eq!(force_breaker(admin, "nowhere", "open").await.status, 404);
        let reply = gateway.get("/x").await;
        assert_eq!(
            reply.status, 200,
            "a cluster without a breaker is untouched"
        );
    })
    .await;
}
