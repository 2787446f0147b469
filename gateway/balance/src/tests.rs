//! Distribution tests of every algorithm through `EndpointSet::pick`, on real picks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Algorithm, Endpoint, EndpointSet, Member, PanicMode, PickContext, PriorityPolicy, hash_key,
};

const ALL: [Algorithm; 6] = [
    Algorithm::RoundRobin,
    Algorithm::Random,
    Algorithm::LeastRequest,
    Algorithm::PeakEwma,
    Algorithm::RingHash,
    Algorithm::Maglev,
];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080))
}

/// Endpoints `0..specs.len()` with `(weight, priority)` each.
fn endpoints(specs: &[(u32, u32)]) -> Vec<Member> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(weight, priority))| Member {
            endpoint: Endpoint::new(addr(i)),
            weight,
            priority,
        })
        .collect()
}

fn build(specs: &[(u32, u32)], algorithm: Algorithm) -> EndpointSet {
    EndpointSet::new(endpoints(specs), algorithm)
}

fn build_with(specs: &[(u32, u32)], algorithm: Algorithm, policy: PriorityPolicy) -> EndpointSet {
    EndpointSet::with_policy(endpoints(specs), algorithm, policy)
}

fn ep(set: &EndpointSet, i: usize) -> &Arc<Endpoint> {
    &set.members()[i].endpoint
}

fn index_of(set: &EndpointSet, picked: &Arc<Endpoint>) -> usize {
    set.members()
        .iter()
        .position(|m| Arc::ptr_eq(&m.endpoint, picked))
        .expect("picked endpoint is a member")
}

/// Picks `n` times (without starting requests) and counts picks per member index.
fn counts(set: &EndpointSet, n: usize, ctx: &PickContext<'_>) -> Vec<usize> {
    let mut counts = vec![0; set.members().len()];
    for _ in 0..n {
        let picked = set.pick(ctx).expect("a usable endpoint");
        counts[index_of(set, picked)] += 1;
    }
    counts
}

fn fractions(counts: &[usize]) -> Vec<f64> {
    let total: usize = counts.iter().sum();
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

fn assert_near(got: &[f64], want: &[f64], tolerance: f64) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tolerance,
            "got {got:?}, want {want:?} ± {tolerance}"
        );
    }
}

/// Member index each of `keys` hashes to.
fn owners(set: &EndpointSet, keys: usize) -> Vec<SocketAddr> {
    (0..keys)
        .map(|k| {
            let ctx = PickContext {
                hash: Some(hash_key(format!("user-{k}").as_bytes())),
                ..Default::default()
            };
            set.pick(&ctx).expect("a usable endpoint").address()
        })
        .collect()
}

// === every algorithm ===

#[test]
fn empty_set_picks_nothing() {
    for algorithm in ALL {
        let set = EndpointSet::new(Vec::new(), algorithm);
        assert!(set.is_empty());
        assert_eq!(set.algorithm(), algorithm);
        let ctx = PickContext {
            hash: Some(7),
            ..Default::default()
        };
        assert!(set.pick(&ctx).is_none(), "{algorithm:?}");
        assert!(set.pick(&PickContext::default()).is_none(), "{algorithm:?}");
    }
}

#[test]
fn no_usable_endpoint_at_any_level_picks_nothing_without_panic_or_when_failing_fast() {
    let policies = [
        PriorityPolicy {
            panic_threshold: 0.0,
            panic_mode: PanicMode::Spread,
        },
        PriorityPolicy {
            panic_threshold: 0.5,
            panic_mode: PanicMode::FailFast,
        },
    ];
    for algorithm in ALL {
        for policy in policies {
            let set = build_with(&[(1, 0), (1, 0), (1, 1)], algorithm, policy);
            for m in set.members() {
                m.endpoint.set_usable(false);
            }
            assert!(set.pick(&PickContext::default()).is_none(), "{algorithm:?}");
            let ctx = PickContext {
                hash: Some(42),
                ..Default::default()
            };
            assert!(set.pick(&ctx).is_none(), "{algorithm:?}");
        }
    }
}

#[test]
fn unusable_endpoints_are_never_picked() {
    for algorithm in ALL {
        let set = build(&[(1, 0), (3, 0), (1, 0)], algorithm);
        ep(&set, 1).set_usable(false);
        let c = counts(&set, 3000, &PickContext::default());
        assert_eq!(c[1], 0, "{algorithm:?}: {c:?}");
        assert!(c[0] > 0 && c[2] > 0, "{algorithm:?}: {c:?}");
        let hashed = owners(&set, 3000);
        assert!(!hashed.contains(&addr(1)), "{algorithm:?}");
    }
}

#[test]
fn standby_level_takes_only_what_the_primary_level_cannot_carry() {
    for algorithm in ALL {
        let set = build(&[(1, 0), (2, 0), (1, 1), (1, 2)], algorithm);
        let c = counts(&set, 1000, &PickContext::default());
        assert_eq!(c[2] + c[3], 0, "{algorithm:?}: {c:?}");

        // Half the primaries left: 0.5 * 1.4 = 70% stays, 30% spills to priority 1.
        ep(&set, 0).set_usable(false);
        let c = counts(&set, 20_000, &PickContext::default());
        assert_eq!(c[0] + c[3], 0, "{algorithm:?}: {c:?}");
        assert_near(&fractions(&c), &[0.0, 0.7, 0.3, 0.0], 0.02);

        ep(&set, 1).set_usable(false);
        let c = counts(&set, 1000, &PickContext::default());
        assert_eq!(c, [0, 0, 1000, 0], "{algorithm:?}");
        assert!(
            owners(&set, 200).iter().all(|&a| a == addr(2)),
            "{algorithm:?}"
        );

        ep(&set, 2).set_usable(false);
        assert_eq!(counts(&set, 100, &PickContext::default()), [0, 0, 0, 100]);

        // Traffic returns to the primary level as soon as it is usable again.
        ep(&set, 0).set_usable(true);
        ep(&set, 1).set_usable(true);
        let c = counts(&set, 1000, &PickContext::default());
        assert_eq!(c[2] + c[3], 0, "{algorithm:?}: {c:?}");
        assert!(c[0] > 0 && c[1] > 0, "{algorithm:?}: {c:?}");
    }
}

#[test]
fn a_level_with_four_of_five_usable_keeps_all_its_traffic() {
    let set = build(
        &[(1, 0), (1, 0), (1, 0), (1, 0), (1, 0), (1, 1)],
        Algorithm::Random,
    );
    ep(&set, 0).set_usable(false);
    let c = counts(&set, 5000, &PickContext::default());
    assert_eq!(c[0] + c[5], 0, "{c:?}");
    // 3 of 5: 0.6 * 1.4 = 84% stays, 16% spills.
    ep(&set, 1).set_usable(false);
    let f = fractions(&counts(&set, 40_000, &PickContext::default()));
    assert_near(&f, &[0.0, 0.0, 0.28, 0.28, 0.28, 0.16], 0.015);
}

#[test]
fn spill_goes_down_level_by_level() {
    // Level 0: 1 of 4 usable (35%); level 1: 1 of 2 (70%, capped by what remains: 65%).
    let set = build(
        &[(1, 0), (1, 0), (1, 0), (1, 0), (1, 1), (1, 1), (1, 2)],
        Algorithm::RoundRobin,
    );
    for i in [1, 2, 3, 5] {
        ep(&set, i).set_usable(false);
    }
    let f = fractions(&counts(&set, 40_000, &PickContext::default()));
    assert_near(&f, &[0.35, 0.0, 0.0, 0.0, 0.65, 0.0, 0.0], 0.015);
    let state = set.load_state();
    assert!(!state.panic);
    let loads: Vec<f64> = state.levels.iter().map(|l| l.load).collect();
    assert_near(&loads, &[0.35, 0.65, 0.0], 1e-9);
    assert_eq!(state.levels[0].usable, 1);
    assert_eq!(state.levels[1].endpoints, 2);
}

#[test]
fn shares_are_scaled_up_when_the_levels_cannot_carry_everything() {
    // Level 0: 3 of 5 usable (84%); level 1: 0 of 1. Panic is off (threshold 0): the primaries
    // take everything rather than leaving 16% unrouted.
    let policy = PriorityPolicy {
        panic_threshold: 0.0,
        ..Default::default()
    };
    let set = build_with(
        &[(1, 0), (1, 0), (1, 0), (1, 0), (1, 0), (1, 1)],
        Algorithm::Random,
        policy,
    );
    for i in [0, 1, 5] {
        ep(&set, i).set_usable(false);
    }
    let c = counts(&set, 3000, &PickContext::default());
    assert_eq!(c[0] + c[1] + c[5], 0, "{c:?}");
    assert_eq!(c.iter().sum::<usize>(), 3000);
}

#[test]
fn panic_spread_picks_every_endpoint_and_fail_fast_picks_none() {
    for algorithm in ALL {
        let spread = build(&[(1, 0), (1, 0), (1, 0), (1, 0)], algorithm);
        assert!(!spread.in_panic());
        // 2 of 4 usable: exactly the threshold, not yet panic.
        ep(&spread, 0).set_usable(false);
        ep(&spread, 1).set_usable(false);
        assert!(!spread.in_panic(), "{algorithm:?}");
        let c = counts(&spread, 2000, &PickContext::default());
        assert_eq!(c[0] + c[1], 0, "{algorithm:?}: {c:?}");

        // 1 of 4: panic. Spread ignores health: the unusable ones take traffic again.
        ep(&spread, 2).set_usable(false);
        assert!(spread.in_panic(), "{algorithm:?}");
        assert!(spread.load_state().panic);
        let c = counts(&spread, 4000, &PickContext::default());
        assert!(c.iter().all(|&n| n > 0), "{algorithm:?}: {c:?}");
        let hashed = owners(&spread, 2000);
        assert!(hashed.iter().any(|&a| a != addr(3)), "{algorithm:?}");

        let fail_fast = build_with(
            &[(1, 0), (1, 0), (1, 0), (1, 0)],
            algorithm,
            PriorityPolicy {
                panic_threshold: 0.5,
                panic_mode: PanicMode::FailFast,
            },
        );
        for i in 0..3 {
            ep(&fail_fast, i).set_usable(false);
        }
        assert!(fail_fast.in_panic());
        assert!(
            fail_fast.pick(&PickContext::default()).is_none(),
            "{algorithm:?}"
        );
        let state = fail_fast.load_state();
        assert_eq!(state.policy.panic_mode, PanicMode::FailFast);
        assert!(state.levels.iter().all(|l| l.load == 0.0));

        // Back above the threshold: normal picks among the usable again.
        ep(&fail_fast, 0).set_usable(true);
        assert!(!fail_fast.in_panic());
        let c = counts(&fail_fast, 1000, &PickContext::default());
        assert_eq!(c[1] + c[2], 0, "{algorithm:?}: {c:?}");
    }
}

#[test]
fn panic_spread_shares_levels_by_endpoint_count() {
    let set = build(&[(1, 0), (1, 0), (1, 0), (1, 1)], Algorithm::Random);
    for m in set.members() {
        m.endpoint.set_usable(false);
    }
    let f = fractions(&counts(&set, 40_000, &PickContext::default()));
    assert_near(&f, &[0.25; 4], 0.015);
    let loads: Vec<f64> = set.load_state().levels.iter().map(|l| l.load).collect();
    assert_near(&loads, &[0.75, 0.25], 1e-9);
}

#[test]
fn a_healthy_standby_keeps_the_set_out_of_panic() {
    let set = build(&[(1, 0), (1, 0), (1, 0), (1, 1)], Algorithm::LeastRequest);
    for i in 0..3 {
        ep(&set, i).set_usable(false);
    }
    assert!(!set.in_panic());
    assert_eq!(counts(&set, 500, &PickContext::default()), [0, 0, 0, 500]);
}

#[test]
fn excluded_endpoints_are_avoided_while_another_in_the_level_is_usable() {
    for algorithm in ALL {
        let set = build(&[(1, 0), (1, 0), (1, 0), (1, 0), (1, 1)], algorithm);
        let exclude = [addr(0), addr(1), addr(2)];
        for hash in [None, Some(1), Some(u64::MAX)] {
            let ctx = PickContext {
                hash,
                exclude: &exclude,
            };
            let c = counts(&set, 500, &ctx);
            assert_eq!(c, [0, 0, 0, 500, 0], "{algorithm:?} {hash:?}");
        }
        // Every other usable endpoint of the level excluded: exclusion yields, and the
        // standby level is not used for it (3 of 4 usable carry the whole level: 0.75 * 1.4).
        ep(&set, 3).set_usable(false);
        let ctx = PickContext {
            exclude: &exclude,
            ..Default::default()
        };
        let c = counts(&set, 1000, &ctx);
        assert_eq!(c[3] + c[4], 0, "{algorithm:?}: {c:?}");
        assert!(c[0] > 0 && c[1] > 0 && c[2] > 0, "{algorithm:?}: {c:?}");
    }
}

#[test]
fn zero_weight_counts_as_one() {
    for algorithm in [Algorithm::RoundRobin, Algorithm::Random] {
        let set = build(&[(0, 0), (1, 0)], algorithm);
        let f = fractions(&counts(&set, 20_000, &PickContext::default()));
        assert_near(&f, &[0.5, 0.5], 0.03);
    }
}

#[test]
fn endpoint_state_carries_over_to_a_rebuilt_set() {
    let old = build(&[(1, 0), (1, 0)], Algorithm::LeastRequest);
    let _busy = ep(&old, 0).start();
    let new = EndpointSet::new(old.members().to_vec(), Algorithm::LeastRequest);
    assert_eq!(ep(&new, 0).in_flight(), 1);
    assert_eq!(counts(&new, 100, &PickContext::default()), [0, 100]);
}

// === round-robin ===

#[test]
fn round_robin_serves_the_smooth_weighted_sequence() {
    let set = build(&[(5, 0), (1, 0), (1, 0)], Algorithm::RoundRobin);
    let seq: Vec<usize> = (0..14)
        .map(|_| index_of(&set, set.pick(&PickContext::default()).unwrap()))
        .collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_proportions_are_exact_across_threads() {
    let set = build(&[(5, 0), (1, 0), (1, 0)], Algorithm::RoundRobin);
    let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| counts(&set, 7000, &PickContext::default())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: Vec<usize> = (0..3)
        .map(|i| per_thread.iter().map(|c| c[i]).sum())
        .collect();
    assert_eq!(total, [20_000, 4000, 4000]);
}

// === random ===

#[test]
fn random_spreads_by_weight() {
    let set = build(&[(1, 0), (2, 0), (3, 0), (4, 0)], Algorithm::Random);
    let f = fractions(&counts(&set, 100_000, &PickContext::default()));
    assert_near(&f, &[0.1, 0.2, 0.3, 0.4], 0.01);
}

#[test]
fn random_keeps_weights_among_the_usable_endpoints() {
    let set = build(&[(1, 0), (2, 0), (3, 0), (4, 0)], Algorithm::Random);
    ep(&set, 3).set_usable(false);
    let f = fractions(&counts(&set, 60_000, &PickContext::default()));
    assert_near(&f, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0], 0.01);
}

// === least-request ===

#[test]
fn least_request_moves_picks_away_from_a_busy_endpoint() {
    let set = build(&[(1, 0), (1, 0), (1, 0)], Algorithm::LeastRequest);
    let idle = fractions(&counts(&set, 30_000, &PickContext::default()));
    assert_near(&idle, &[1.0 / 3.0; 3], 0.02);

    let guards: Vec<_> = (0..5).map(|_| ep(&set, 0).start()).collect();
    let c = counts(&set, 30_000, &PickContext::default());
    assert_eq!(c[0], 0, "{c:?}");
    assert_near(&fractions(&c), &[0.0, 0.5, 0.5], 0.02);

    drop(guards);
    assert_eq!(ep(&set, 0).in_flight(), 0);
    let back = fractions(&counts(&set, 30_000, &PickContext::default()));
    assert_near(&back, &[1.0 / 3.0; 3], 0.02);
}

#[test]
fn least_request_balances_in_flight_requests_while_they_run() {
    let set = build(&[(1, 0), (1, 0), (1, 0), (1, 0)], Algorithm::LeastRequest);
    let mut guards = Vec::new();
    for _ in 0..400 {
        guards.push(set.pick(&PickContext::default()).unwrap().start());
    }
    // Two choices keep the spread tight: every endpoint within a few requests of 100.
    for m in set.members() {
        let n = m.endpoint.in_flight();
        assert!((95..=105).contains(&n), "in flight {n}");
    }
    drop(guards);
    assert!(set.members().iter().all(|m| m.endpoint.in_flight() == 0));
    assert!(
        set.members()
            .iter()
            .all(|m| m.endpoint.requests_total() > 0)
    );
}

#[test]
fn least_request_respects_weights() {
    let set = build(&[(1, 0), (3, 0)], Algorithm::LeastRequest);
    let idle = fractions(&counts(&set, 40_000, &PickContext::default()));
    assert_near(&idle, &[0.25, 0.75], 0.02);

    // Held requests settle in proportion to weight.
    let mut guards = Vec::new();
    for _ in 0..400 {
        guards.push(set.pick(&PickContext::default()).unwrap().start());
    }
    let (a, b) = (ep(&set, 0).in_flight(), ep(&set, 1).in_flight());
    assert!((95..=105).contains(&a), "{a} vs {b}");
    assert_eq!(a + b, 400);

    // Load per weight decides: 1 of weight 1 is busier than 2 of weight 3.
    drop(guards);
    let _a = ep(&set, 0).start();
    let _b = [ep(&set, 1).start(), ep(&set, 1).start()];
    assert_eq!(counts(&set, 1000, &PickContext::default()), [0, 1000]);
}

#[test]
fn least_request_picks_the_only_usable_endpoint_even_when_busy() {
    let set = build(&[(1, 0), (1, 0)], Algorithm::LeastRequest);
    ep(&set, 0).set_usable(false);
    let _guards: Vec<_> = (0..10).map(|_| ep(&set, 1).start()).collect();
    assert_eq!(counts(&set, 100, &PickContext::default()), [0, 100]);
}

// === peak-EWMA ===

#[tokio::test(start_paused = true)]
async fn peak_ewma_prefers_the_fast_endpoint() {
    let set = build(&[(1, 0), (1, 0), (1, 0)], Algorithm::PeakEwma);
    ep(&set, 0).start().finish(Duration::from_millis(200));
    ep(&set, 1).start().finish(Duration::from_millis(5));
    ep(&set, 2).start().finish(Duration::from_millis(6));
    let c = counts(&set, 10_000, &PickContext::default());
    assert_eq!(c[0], 0, "{c:?}");
    // 1 wins whenever drawn; 2 only when drawn with 0.
    assert_near(&fractions(&c), &[0.0, 2.0 / 3.0, 1.0 / 3.0], 0.02);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_weighs_latency_by_in_flight_requests() {
    let set = build(&[(1, 0), (1, 0)], Algorithm::PeakEwma);
    ep(&set, 0).start().finish(Duration::from_millis(10));
    ep(&set, 1).start().finish(Duration::from_millis(30));
    assert_eq!(counts(&set, 100, &PickContext::default()), [100, 0]);
    // 10ms * (3 + 1) > 30ms * 1.
    let _busy: Vec<_> = (0..3).map(|_| ep(&set, 0).start()).collect();
    assert_eq!(counts(&set, 100, &PickContext::default()), [0, 100]);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_tries_an_unmeasured_endpoint_once_at_a_time() {
    let set = build(&[(1, 0), (1, 0)], Algorithm::PeakEwma);
    ep(&set, 0).start().finish(Duration::from_millis(1));
    assert_eq!(counts(&set, 100, &PickContext::default()), [0, 100]);
    let first = ep(&set, 1).start();
    assert_eq!(counts(&set, 100, &PickContext::default()), [100, 0]);
    first.finish(Duration::from_millis(50));
    assert_eq!(counts(&set, 100, &PickContext::default()), [100, 0]);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_gives_a_slow_endpoint_traffic_back_after_it_decays() {
    let set = build(&[(1, 0), (1, 0)], Algorithm::PeakEwma);
    ep(&set, 0).start().finish(Duration::from_millis(200));
    ep(&set, 1).start().finish(Duration::from_millis(10));
    assert_eq!(counts(&set, 100, &PickContext::default()), [0, 100]);

    // Endpoint 0 has been idle for a minute: 200ms * e^-6 ≈ 0.5ms, below endpoint 1's fresh
    // 10ms sample, so it is tried (and measured) again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(ep(&set, 0).ewma_latency() < Duration::from_millis(1));
    ep(&set, 1).start().finish(Duration::from_millis(10));
    assert_eq!(counts(&set, 100, &PickContext::default()), [100, 0]);
}

// === ring-hash and Maglev ===

#[test]
fn same_key_maps_to_the_same_endpoint_in_every_rebuild() {
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
        let specs = [(1, 0), (2, 0), (1, 0), (3, 0)];
        let first = owners(&build(&specs, algorithm), 2000);
        let again = owners(&build(&specs, algorithm), 2000);
        assert_eq!(first, again, "{algorithm:?}");
        let set = build(&specs, algorithm);
        assert_eq!(owners(&set, 2000), owners(&set, 2000), "{algorithm:?}");
    }
}

#[test]
fn hashed_keys_spread_in_proportion_to_weight() {
    for (algorithm, tolerance) in [(Algorithm::RingHash, 0.05), (Algorithm::Maglev, 0.01)] {
        let set = build(&[(1, 0), (2, 0), (3, 0), (4, 0)], algorithm);
        let mut c = [0usize; 4];
        for a in owners(&set, 50_000) {
            c[(0..4).position(|i| addr(i) == a).unwrap()] += 1;
        }
        assert_near(&fractions(&c), &[0.1, 0.2, 0.3, 0.4], tolerance);
    }
}

#[test]
fn ring_has_at_least_1024_points_split_by_weight() {
    let members = endpoints(&[(1, 0), (2, 0), (1, 0)]);
    let addresses: Vec<_> = members.iter().map(|m| m.endpoint.address()).collect();
    let ring = crate::ring_hash::Ring::new(&addresses, &[1, 2, 1]);
    assert!(ring.len() >= 1024);
    assert_eq!(ring.len() % 4, 0);
}

#[test]
fn removing_one_of_n_endpoints_moves_about_one_nth_of_keys() {
    for (algorithm, slack) in [(Algorithm::RingHash, 0.02), (Algorithm::Maglev, 0.03)] {
        let n = 6;
        let all = endpoints(&vec![(1, 0); n]);
        let before = owners(&EndpointSet::new(all.clone(), algorithm), 20_000);
        let removed = all[2].endpoint.address();
        let rest: Vec<_> = all
            .into_iter()
            .filter(|m| m.endpoint.address() != removed)
            .collect();
        let after = owners(&EndpointSet::new(rest, algorithm), 20_000);

        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned = before.iter().filter(|&&b| b == removed).count();
        let moved = moved as f64 / before.len() as f64;
        let owned = owned as f64 / before.len() as f64;
        assert!(moved >= owned, "{algorithm:?}");
        assert!(
            moved <= 1.0 / n as f64 + slack,
            "{algorithm:?}: moved {moved}, owned {owned}"
        );
    }
}

#[test]
fn keys_of_an_unusable_endpoint_move_and_come_back() {
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
        let set = build(&[(1, 0); 5], algorithm);
        let before = owners(&set, 10_000);
        ep(&set, 3).set_usable(false);
        let during = owners(&set, 10_000);
        for (b, d) in before.iter().zip(&during) {
            if *b == addr(3) {
                assert_ne!(d, b, "{algorithm:?}");
            } else {
                assert_eq!(
                    d, b,
                    "{algorithm:?}: only the unusable endpoint's keys move"
                );
            }
        }
        ep(&set, 3).set_usable(true);
        assert_eq!(owners(&set, 10_000), before, "{algorithm:?}");
    }
}

#[test]
fn hash_algorithms_without_a_hash_pick_randomly_by_weight() {
    for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
        let set = build(&[(1, 0), (3, 0)], algorithm);
        let f = fractions(&counts(&set, 40_000, &PickContext::default()));
        assert_near(&f, &[0.25, 0.75], 0.02);
    }
}
