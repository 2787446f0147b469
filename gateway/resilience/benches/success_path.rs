//! The bookkeeping every successful request pays: breaker permit and outcome, retry-budget
//! request guard, bulkhead request slot, outlier-detector outcome, the load balancer's pick and
//! the endpoint's in-flight count and peak-EWMA, and all of them together (`all_per_request`,
//! the figure issue 3 bounds at 1 µs).
//!
//! Run with `cargo bench -p levee-resilience --bench success_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use levee_balance::{Algorithm, Endpoint, EndpointSet, Member, PickContext};
use levee_resilience::breaker::{Breaker, BreakerParams, Window};
use levee_resilience::budget::RetryBudget;
use levee_resilience::bulkhead::{Bulkhead, BulkheadParams};
use levee_resilience::health::ClusterHealth;
use levee_resilience::outlier::{Outcome, OutlierParams};

fn breaker(window: Window) -> Arc<Breaker> {
    Arc::new(Breaker::new(BreakerParams {
        failure_rate: 0.5,
        slow_call_rate: 1.0,
        slow_call_duration: Duration::from_secs(2),
        window,
        minimum_calls: 20,
        open_duration: Duration::from_secs(30),
        max_open_duration: Duration::from_secs(300),
        half_open_probes: 3,
    }))
}

fn bulkhead() -> Arc<Bulkhead> {
    Arc::new(Bulkhead::new(BulkheadParams {
        max_connections: 1024,
        max_pending: 1024,
        max_requests: 1024,
        max_retries: 3,
    }))
}

fn success_path(c: &mut Criterion) {
    // The breaker's time window and the budget read `tokio::time::Instant`, which needs no
    // runtime unless the clock is paused.
    let latency = Duration::from_millis(5);

    let count = breaker(Window::Count(100));
    c.bench_function("breaker_count_window_acquire_record", |b| {
        b.iter(|| black_box(count.try_acquire().map(|p| p.record(true, latency))))
    });

    let time = breaker(Window::Time(Duration::from_secs(30)));
    c.bench_function("breaker_time_window_acquire_record", |b| {
        b.iter(|| black_box(time.try_acquire().map(|p| p.record(true, latency))))
    });

    let budget = RetryBudget::new(0.2, 10);
    let now = tokio::time::Instant::now();
    c.bench_function("budget_deposit", |b| {
        b.iter(|| budget.deposit(black_box(now)))
    });

    let limits = bulkhead();
    c.bench_function("bulkhead_try_request", |b| {
        b.iter(|| black_box(limits.try_request()))
    });

    // Three endpoints, as in the chaos setup, with the default outlier detection.
    let endpoints: Vec<Arc<Endpoint>> = (0..3)
        .map(|i| Endpoint::new(([127, 0, 0, 1], 9000 + i).into()))
        .collect();
    let set = EndpointSet::new(
        endpoints
            .iter()
            .map(|e| Member {
                endpoint: e.clone(),
                weight: 1,
                priority: 0,
            })
            .collect(),
        Algorithm::LeastRequest,
    );
    let health = ClusterHealth::new("bench", OutlierParams::default(), None);
    health.sync(&endpoints);
    let states: Vec<_> = endpoints
        .iter()
        .map(|e| health.health_of(e.address()).expect("tracked"))
        .collect();
    c.bench_function("outlier_record_success", |b| {
        b.iter(|| black_box(health.record(&states[0], Outcome::Success)))
    });
    c.bench_function("lb_pick_least_request_3", |b| {
        b.iter(|| black_box(set.pick(&PickContext::default()).map(|e| e.address())))
    });

    c.bench_function("all_per_request", |b| {
        let mut i = 0;
        b.iter(|| {
            budget.deposit(now);
            let _slot = limits.try_request();
            let permit = count.try_acquire();
            let endpoint = set.pick(&PickContext::default()).expect("an endpoint");
            let state = &states[i % states.len()];
            i += 1;
            health.on_pick(state);
            let in_flight = endpoint.start();
            in_flight.finish(latency);
            black_box(health.record(state, Outcome::Success));
            black_box(permit.map(|p| p.record(true, latency)))
        })
    });
}

criterion_group!(benches, success_path);
criterion_main!(benches);
