//! The host against the real example plugins (built from `plugins/` for wasm32-wasip2).

mod support;

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use levee_plugin_host::{
    BoundPlugin, BreakerState, Bypass, CircuitState, ClusterHealth, EngineParams, FailureKind,
    FallbackDecision, FaultKind, HostServices, Isolation, OnError, Outcome, Plugin, PluginError,
    PluginParams, PluginRuntime, PluginSet, RequestAction, ResponseAction, ResponseHead,
    UpstreamFailure,
};
use support::{Recorder, block_on, plugin_wasm, request};

/// One engine for the tests that do not count compilations (each engine reserves its pool's
/// address space up front).
fn runtime() -> &'static PluginRuntime {
    static RUNTIME: OnceLock<PluginRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        PluginRuntime::new(EngineParams {
            max_instances: 64,
            ..EngineParams::default()
        })
        .expect("engine")
    })
}

/// Default params, but a 1s deadline: epoch deadlines count wall time, and a test thread on a
/// busy 2-core machine can be descheduled for longer than the 5ms default. Tests about the
/// deadline set their own.
fn relaxed(name: &str) -> PluginParams {
    let mut p = PluginParams::new(name);
    p.limits.deadline = Duration::from_secs(1);
    p
}

fn load(name: &str, params: impl FnOnce(&mut PluginParams)) -> (Arc<Plugin>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut p = relaxed(name);
    params(&mut p);
    let services: Arc<dyn HostServices> = recorder.clone();
    let plugin = runtime()
        .load(p, &plugin_wasm(name), services)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    (plugin, recorder)
}

fn bind(name: &str, config: &str, params: impl FnOnce(&mut PluginParams)) -> BoundPlugin {
    load(name, params)
        .0
        .bind(config.as_bytes())
        .unwrap_or_else(|e| panic!("binding {name}: {e}"))
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
        .collect()
}

fn set(pairs: &[(&'static str, &'static str)]) -> Vec<(HeaderName, HeaderValue)> {
    pairs
        .iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
        .collect()
}

fn failure(kind: FailureKind) -> UpstreamFailure<'static> {
    UpstreamFailure {
        kind,
        cluster: "api",
        attempt: 1,
        status: None,
        elapsed: Duration::from_millis(12),
        circuit: CircuitState::Closed,
    }
}

/// Runs `call` on another thread and fails the test if it takes more than 30 s, so a deadline
/// that does not work fails instead of hanging the suite.
fn bounded<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the plugin call did not return within 30 s")
}

// === hooks of the real plugins ===

#[test]
fn tagger_inits_and_tags_requests_and_responses() {
    let (plugin, recorder) = load("tagger", |_| {});
    let bound = plugin.bind(br#"{"version":"v2"}"#).unwrap();
    let hooks = bound.hooks();
    assert!(hooks.on_request && hooks.on_response && !hooks.on_upstream_failure);

    let h = headers(&[("x-priority", "high")]);
    let tag = set(&[("x-plugin-version", "v2")]);
    match block_on(bound.on_request(&request(&h))) {
        Outcome::Decided(RequestAction::Proceed(m)) => assert_eq!(m.set, tag),
        other => panic!("unexpected {other:?}"),
    }
    let resp = ResponseHead {
        status: StatusCode::OK,
        headers: &h,
    };
    match block_on(bound.on_response(&request(&h), &resp)) {
        Outcome::Decided(ResponseAction::Proceed(m)) => assert_eq!(m.set, tag),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        block_on(bound.on_upstream_failure(&request(&h), &failure(FailureKind::Timeout))),
        Outcome::NotImplemented
    );

    assert_eq!(recorder.counters.lock().unwrap()["tagger/requests"], 1);
    let status = plugin.status();
    assert_eq!(status.calls, 2);
    assert_eq!(status.latency_count, 2);
    assert_eq!(status.total_faults(), 0);
    assert_eq!(status.version.len(), 64);
}

#[test]
fn init_rejecting_its_config_fails_the_bind_with_the_plugin_message() {
    let (plugin, _) = load("tagger", |_| {});
    let err = plugin.bind(br#"{"version":""}"#).unwrap_err();
    assert!(
        matches!(&err, PluginError::Init { message, .. } if message.contains("must not be empty")),
        "{err}"
    );
}

#[test]
fn static_fallback_serves_its_page_on_upstream_failure() {
    let bound = bind(
        "static-fallback",
        r#"{"status":503,"retry_after":7}"#,
        |_| {},
    );
    let h = HeaderMap::new();
    match block_on(bound.on_upstream_failure(&request(&h), &failure(FailureKind::ConnectFailure))) {
        Outcome::Decided(FallbackDecision::Serve(resp)) => {
            assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                resp.headers
                    .iter()
                    .any(|(n, v)| n == "retry-after" && v == "7")
            );
            assert!(!resp.body.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn priority_shedding_reads_upstream_health_and_sheds_low_priority() {
    let (plugin, recorder) = load("priority-shedding", |_| {});
    recorder.health.lock().unwrap().insert(
        "api".to_owned(),
        ClusterHealth {
            healthy_endpoints: 0,
            total_endpoints: 3,
            circuit: CircuitState::Open,
            ..ClusterHealth::default()
        },
    );
    let bound = plugin
        .bind(br#"{"cluster":"api","keep":["high"]}"#)
        .unwrap();
    let low = headers(&[("x-priority", "low")]);
    match block_on(bound.on_request(&request(&low))) {
        Outcome::Decided(RequestAction::Respond(resp)) => {
            assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("unexpected {other:?}"),
    }
    let high = headers(&[("x-priority", "high")]);
    assert!(matches!(
        block_on(bound.on_request(&request(&high))),
        Outcome::Decided(RequestAction::Proceed(_))
    ));
}

#[test]
fn degrade_route_reroutes_while_the_cluster_fails() {
    let (plugin, recorder) = load("degrade-route", |_| {});
    recorder.health.lock().unwrap().insert(
        "api".to_owned(),
        ClusterHealth {
            healthy_endpoints: 1,
            total_endpoints: 2,
            error_rate: 0.9,
            ..ClusterHealth::default()
        },
    );
    let bound = plugin
        .bind(br#"{"cluster":"api","degraded":"cheap"}"#)
        .unwrap();
    let h = HeaderMap::new();
    assert_eq!(
        block_on(bound.on_request(&request(&h))),
        Outcome::Decided(RequestAction::RouteTo("cheap".to_owned()))
    );
    assert_eq!(
        block_on(bound.on_upstream_failure(&request(&h), &failure(FailureKind::Timeout))),
        Outcome::Decided(FallbackDecision::Degrade("cheap".to_owned()))
    );
}

#[test]
fn serve_stale_stores_good_responses_and_serves_them_on_failure() {
    let bound = bind("serve-stale", r#"{"mode":"host","ttl_seconds":60}"#, |_| {});
    let h = HeaderMap::new();
    let key = "GET api.example.com/v1/items?page=2";
    let resp = ResponseHead {
        status: StatusCode::OK,
        headers: &h,
    };
    match block_on(bound.on_response(&request(&h), &resp)) {
        Outcome::Decided(ResponseAction::ProceedAndStore(spec)) => {
            assert_eq!(spec.key, key);
            assert_eq!(spec.ttl, Duration::from_secs(60));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        block_on(bound.on_upstream_failure(&request(&h), &failure(FailureKind::Upstream5xx))),
        Outcome::Decided(FallbackDecision::ServeCached(key.to_owned()))
    );
}

#[test]
fn cache_put_over_the_value_cap_is_refused_and_counted() {
    let (plugin, recorder) = load("serve-stale", |p| p.limits.cache_value_bytes = 4);
    let bound = plugin.bind(br#"{"mode":"plugin"}"#).unwrap();
    let h = headers(&[("content-type", "text/plain")]);
    let resp = ResponseHead {
        status: StatusCode::OK,
        headers: &h,
    };
    let _ = block_on(bound.on_response(&request(&h), &resp));
    assert!(plugin.status().cache_puts_refused >= 1);
    assert!(recorder.cache.lock().unwrap().is_empty());
}

#[test]
fn counter_names_past_the_cap_are_dropped_and_counted() {
    let (plugin, recorder) = load("tagger", |p| p.limits.counters = 0);
    let bound = plugin.bind(b"null").unwrap();
    let h = HeaderMap::new();
    assert!(matches!(
        block_on(bound.on_request(&request(&h))),
        Outcome::Decided(_)
    ));
    assert!(recorder.counters.lock().unwrap().is_empty());
    assert_eq!(plugin.status().counters_dropped, 1);
}

// === faults are contained and classified ===

#[test]
fn a_panicking_plugin_is_a_trap_fault_and_fails_open() {
    let (plugin, _) = load("trap", |_| {});
    let bound = plugin.bind(b"null").unwrap();
    let h = HeaderMap::new();
    assert_eq!(
        block_on(bound.on_request(&request(&h))),
        Outcome::FailOpen(Bypass::Fault(FaultKind::Trap))
    );
    let status = plugin.status();
    assert_eq!(status.faults_of(FaultKind::Trap), 1);
    // The faulted instance was dropped, not returned to the pool.
    assert_eq!(status.pooled, 0);
    assert_eq!(status.instances_alive, 0);

    let bound = bind("trap", r#"{"how":"unreachable"}"#, |_| {});
    assert_eq!(
        block_on(bound.on_request(&request(&h))),
        Outcome::FailOpen(Bypass::Fault(FaultKind::Trap))
    );
}

#[test]
fn a_trap_in_init_fails_the_bind() {
    let (plugin, _) = load("trap", |_| {});
    let err = plugin.bind(br#"{"hook":"init"}"#).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::InitFault {
                kind: FaultKind::Trap,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_spinning_plugin_is_stopped_by_its_deadline() {
    for config in [r#"{"mode":"pure"}"#, r#"{"mode":"host-calls"}"#] {
        let (plugin, _) = load("spin", |p| p.limits.deadline = Duration::from_millis(20));
        let bound = plugin.bind(config.as_bytes()).unwrap();
        let outcome = bounded(move || block_on(bound.on_request(&request(&HeaderMap::new()))));
        assert_eq!(
            outcome,
            Outcome::FailOpen(Bypass::Fault(FaultKind::Deadline))
        );
        assert_eq!(plugin.status().faults_of(FaultKind::Deadline), 1);
    }
}

/// A spinning call yields its thread at every epoch tick: on a one-thread runtime another task
/// runs to its end while the call spins, and the call still stops at its deadline.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_call_lets_other_tasks_run_on_its_thread_until_its_deadline() {
    let (plugin, _) = load("spin", |p| p.limits.deadline = Duration::from_secs(2));
    let bound = plugin.bind(b"null").unwrap();
    let spinning = tokio::spawn(async move {
        let headers = HeaderMap::new();
        bound.on_request(&request(&headers)).await
    });
    while plugin.status().calls == 0 {
        tokio::task::yield_now().await;
    }
    let other = tokio::spawn(async { "done" });
    assert_eq!(other.await.unwrap(), "done");
    assert!(!spinning.is_finished());
    assert_eq!(plugin.status().faults_of(FaultKind::Deadline), 0);

    let outcome = tokio::time::timeout(Duration::from_secs(30), spinning)
        .await
        .expect("the deadline stops the call")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::FailOpen(Bypass::Fault(FaultKind::Deadline))
    );
    assert_eq!(plugin.status().faults_of(FaultKind::Deadline), 1);
}

#[test]
fn a_memory_hog_is_stopped_by_its_memory_cap() {
    let (plugin, _) = load("hog", |p| p.limits.memory = 8 << 20);
    let bound = plugin.bind(b"null").unwrap();
    let outcome = bounded(move || block_on(bound.on_request(&request(&HeaderMap::new()))));
    assert_eq!(
        outcome,
        Outcome::FailOpen(Bypass::Fault(FaultKind::OutOfMemory))
    );
    assert_eq!(plugin.status().faults_of(FaultKind::OutOfMemory), 1);
}

#[test]
fn invalid_headers_are_dropped_and_counted_and_the_rest_applies() {
    let (plugin, _) = load("bad-headers", |_| {});
    let bound = plugin.bind(br#"{"mode":"mutation"}"#).unwrap();
    let h = HeaderMap::new();
    match block_on(bound.on_request(&request(&h))) {
        Outcome::Decided(RequestAction::Proceed(m)) => {
            assert_eq!(m.set, set(&[("x-good", "yes")]));
            assert!(m.remove.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    // `bad name` (set and remove) and the CR LF value.
    assert_eq!(plugin.status().invalid_output, 3);
    assert_eq!(plugin.status().total_faults(), 0);

    let (plugin, _) = load("bad-headers", |_| {});
    let bound = plugin.bind(br#"{"mode":"respond"}"#).unwrap();
    match block_on(bound.on_request(&request(&h))) {
        Outcome::Decided(RequestAction::Respond(resp)) => {
            assert_eq!(resp.status, StatusCode::OK);
            let names: Vec<&str> = resp.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["x-good", "content-type"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(plugin.status().invalid_output, 2);
}

#[test]
fn a_status_outside_200_to_599_is_an_invalid_output_fault() {
    for mode in ["bad-status", "interim-status"] {
        let (plugin, _) = load("bad-headers", |_| {});
        let config = format!(r#"{{"mode":"{mode}"}}"#);
        let bound = plugin.bind(config.as_bytes()).unwrap();
        assert_eq!(
            block_on(bound.on_request(&request(&HeaderMap::new()))),
            Outcome::FailOpen(Bypass::Fault(FaultKind::InvalidOutput)),
            "{mode}"
        );
        assert_eq!(plugin.status().faults_of(FaultKind::InvalidOutput), 1);
    }
}

#[test]
fn framing_headers_set_by_a_plugin_are_dropped_and_counted() {
    let (plugin, _) = load("bad-headers", |_| {});
    let bound = plugin.bind(br#"{"mode":"framing"}"#).unwrap();
    let h = HeaderMap::new();
    match block_on(bound.on_request(&request(&h))) {
        Outcome::Decided(RequestAction::Proceed(m)) => {
            assert_eq!(m.set, set(&[("x-good", "yes")]));
        }
        other => panic!("unexpected {other:?}"),
    }
    // `content-length`, `transfer-encoding` and `connection`.
    assert_eq!(plugin.status().invalid_output, 3);
    assert_eq!(plugin.status().total_faults(), 0);
}

// === on_error policies ===

#[test]
fn fail_closed_policy_refuses_the_request() {
    let bound = bind("trap", "null", |p| p.on_error = OnError::FailClosed);
    assert_eq!(
        block_on(bound.on_request(&request(&HeaderMap::new()))),
        Outcome::FailClosed(Bypass::Fault(FaultKind::Trap))
    );
}

#[test]
fn reload_policy_retries_once_on_a_fresh_instance_then_fails_open() {
    let (plugin, _) = load("trap", |p| p.on_error = OnError::Reload);
    let bound = plugin.bind(b"null").unwrap();
    assert_eq!(plugin.status().instantiations, 1);
    assert_eq!(
        block_on(bound.on_request(&request(&HeaderMap::new()))),
        Outcome::FailOpen(Bypass::Fault(FaultKind::Trap))
    );
    let status = plugin.status();
    assert_eq!(status.reloads, 1);
    assert_eq!(status.faults_of(FaultKind::Trap), 2);
    // The warm instance from `bind`, then one fresh one for the retry.
    assert_eq!(status.instantiations, 2);
}

// === breaker ===

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_consecutive_faults_and_a_good_probe_closes_it() {
    let (plugin, _) = load("trap", |_| {});
    let bound = plugin.bind(br#"{"only_if_header":"x-trap"}"#).unwrap();
    let bad = headers(&[("x-trap", "1")]);
    let good = HeaderMap::new();

    for _ in 0..5 {
        assert_eq!(
            bound.on_request(&request(&bad)).await,
            Outcome::FailOpen(Bypass::Fault(FaultKind::Trap))
        );
    }
    assert_eq!(plugin.status().breaker, BreakerState::Open);
    // Open: no wasm runs, even for a request the plugin would handle.
    assert_eq!(
        bound.on_request(&request(&good)).await,
        Outcome::FailOpen(Bypass::BreakerOpen)
    );
    let status = plugin.status();
    assert_eq!(status.faults_of(FaultKind::Trap), 5);
    assert_eq!(status.bypassed, 1);
    assert_eq!(status.latency_count, 5);

    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(
        bound.on_request(&request(&good)).await,
        Outcome::FailOpen(Bypass::BreakerOpen)
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(
        bound.on_request(&request(&good)).await,
        Outcome::Decided(RequestAction::Proceed(_))
    ));
    let status = plugin.status();
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!(status.breaker_opened, 1);
}

// === isolation ===

#[test]
fn pooled_instances_are_reused_and_recycled_after_n_calls() {
    let (plugin, _) = load("tagger", |p| p.recycle_after = 3);
    let bound = plugin.bind(b"null").unwrap();
    let h = HeaderMap::new();
    assert_eq!(plugin.status().instantiations, 1);
    for _ in 0..2 {
        assert!(matches!(
            block_on(bound.on_request(&request(&h))),
            Outcome::Decided(_)
        ));
    }
    assert_eq!(plugin.status().instantiations, 1);
    assert_eq!(bound.pooled(), 1);
    // The third call on that instance retires it.
    assert!(matches!(
        block_on(bound.on_request(&request(&h))),
        Outcome::Decided(_)
    ));
    assert_eq!(bound.pooled(), 0);
    assert_eq!(plugin.status().instances_alive, 0);
    assert!(matches!(
        block_on(bound.on_request(&request(&h))),
        Outcome::Decided(_)
    ));
    let status = plugin.status();
    assert_eq!(status.instantiations, 2);
    assert_eq!(status.pooled, 1);
}

#[test]
fn per_request_isolation_uses_a_fresh_instance_for_every_call() {
    let (plugin, _) = load("tagger", |p| p.isolation = Isolation::PerRequest);
    let bound = plugin.bind(b"null").unwrap();
    let h = HeaderMap::new();
    for _ in 0..3 {
        assert!(matches!(
            block_on(bound.on_request(&request(&h))),
            Outcome::Decided(_)
        ));
    }
    let status = plugin.status();
    assert_eq!(status.instantiations, 4);
    assert_eq!(status.pooled, 0);
    assert_eq!(status.instances_alive, 0);
}

#[test]
fn a_warm_pooled_rust_instance_holds_under_two_mib() {
    let bound = bind("tagger", r#""v1""#, |_| {});
    let h = headers(&[("x-a", "1"), ("x-b", "2"), ("user-agent", "test")]);
    for _ in 0..100 {
        assert!(matches!(
            block_on(bound.on_request(&request(&h))),
            Outcome::Decided(_)
        ));
    }
    let memory = bound.pooled_memory();
    eprintln!("warm tagger instance linear memory: {memory:?} bytes");
    assert_eq!(memory.len(), 1);
    assert!(memory[0] < 2 << 20, "{} bytes", memory[0]);
}

// === compilation and reload ===

#[test]
fn non_components_and_other_worlds_are_rejected_with_a_clear_error() {
    let services: Arc<dyn HostServices> = Arc::new(Recorder::default());
    let load = |bytes: &[u8]| {
        runtime()
            .load(PluginParams::new("x"), bytes, Arc::clone(&services))
            .unwrap_err()
    };
    let err = load(b"not wasm at all");
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
    // A core module (no component layer).
    let err = load(b"\0asm\x01\0\0\0");
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
    // An empty component: valid, but it exports no policy.
    eprintln!("core module: {err}");
    let err = load(b"\0asm\x0d\0\x01\0");
    eprintln!("empty component: {err}");
    assert!(matches!(err, PluginError::WorldMismatch { .. }), "{err}");
    assert!(err.to_string().contains("levee:policy/policy"), "{err}");
}

#[test]
fn identical_bytes_hit_the_compile_cache() {
    let rt = PluginRuntime::new(EngineParams {
        max_instances: 4,
        ..EngineParams::default()
    })
    .unwrap();
    let tagger = plugin_wasm("tagger");
    let first = rt.compile(&tagger).unwrap();
    let second = rt.compile(&tagger.clone()).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!((rt.compiles(), rt.cache_hits()), (1, 1));
    eprintln!("tagger compiled in {:?}", first.compile_time());
    let other = rt.compile(&plugin_wasm("trap")).unwrap();
    assert_ne!(other.version(), first.version());
    assert_eq!(rt.compiles(), 2);
}

#[test]
fn hot_swap_keeps_calls_on_the_old_version_working_and_carries_unchanged_plugins() {
    let services: Arc<dyn HostServices> = Arc::new(Recorder::default());
    let tagger = plugin_wasm("tagger");
    let bad = plugin_wasm("bad-headers");
    let rt = runtime();

    let old = PluginSet::load(rt, [(relaxed("p"), &tagger[..])], &services, None).unwrap();
    let old_bound = old.get("p").unwrap().bind(br#""v1""#).unwrap();

    let new = PluginSet::load(rt, [(relaxed("p"), &bad[..])], &services, Some(&old)).unwrap();
    assert_ne!(
        new.get("p").unwrap().version(),
        old.get("p").unwrap().version()
    );
    let new_bound = new.get("p").unwrap().bind(b"null").unwrap();
    drop(old);

    let h = HeaderMap::new();
    match block_on(old_bound.on_request(&request(&h))) {
        Outcome::Decided(RequestAction::Proceed(m)) => {
            assert_eq!(m.set, set(&[("x-plugin-version", "v1")]))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        block_on(new_bound.on_request(&request(&h))),
        Outcome::Decided(RequestAction::Proceed(_))
    ));

    let again = PluginSet::load(rt, [(relaxed("p"), &bad[..])], &services, Some(&new)).unwrap();
    assert!(Arc::ptr_eq(again.get("p").unwrap(), new.get("p").unwrap()));
    assert_eq!(again.status()[0].calls, 1);

    let dup = PluginSet::load(
        rt,
        [(relaxed("p"), &bad[..]), (relaxed("p"), &bad[..])],
        &services,
        None,
    );
    assert!(matches!(dup, Err(PluginError::Duplicate { .. })));
}
