//! 100 MB through a gateway process in each direction, with flat memory: the body is streamed,
//! never buffered.
//!
//! Bodies are generated and checked chunk by chunk on both ends, so the test process never
//! holds them either; the gateway's resident memory is sampled during the transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use levee_tests::body::{self, PatternBody, PatternCheck};
use levee_tests::client;
use levee_tests::harness::simple_config;
use levee_tests::{GatewayProcess, Server, TempDir, bounded, levee_bin};

const SIZE: u64 = 100 * 1024 * 1024;
const MAX_GROWTH: u64 = 64 * 1024 * 1024;

/// Samples the process's RSS every 20ms until stopped, and once more after; returns the peak.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let peak = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let mut samples = 0;
        // Bounded: at most 10 minutes of samples.
        for _ in 0..30_000 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(rss) = rss_of(pid) {
                peak.fetch_max(rss, Ordering::SeqCst);
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Memory kept after the transfer counts too: a buffered body usually stays resident.
        if let Ok(rss) = rss_of(pid) {
            peak.fetch_max(rss, Ordering::SeqCst);
            samples += 1;
        }
        assert!(samples >= 2, "could not read the gateway's VmRSS");
        eprintln!(
            "gateway RSS: {samples} samples, peak {} KiB",
            peak.load(Ordering::SeqCst) >> 10
        );
        peak.load(Ordering::SeqCst)
    })
}

fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?
        .parse()?;
    Ok(kib * 1024)
}

/// Starts a gateway process in front of `upstream` and warms it up with three 1 MiB transfers
/// in the direction under test (`upload`: POST to a sink, otherwise GET from a stream).
async fn start(upstream: &levee_tests::Upstream, dir: &TempDir, upload: bool) -> GatewayProcess {
    let config = dir.write("levee.yaml", simple_config(&[upstream.addr()]));
    let gateway = GatewayProcess::spawn(levee_bin!(), &config, &["public"], &["--workers", "2"])
        .await
        .expect("gateway process starts");
    // Warm up: pools, buffers and lazy statics are allocated before the baseline is taken.
    for _ in 0..3 {
        let url = client::url(gateway.listener_addr("public"), "/warmup?bytes=1048576");
        // The stream upstream does not read request bodies, so the download warm-up sends none.
        let body = match upload {
            true => PatternBody::new(1024 * 1024, true).boxed(),
            false => body::empty(),
        };
        let method = if upload { "POST" } else { "GET" };
        let req = Request::builder()
            .method(method)
            .uri(url)
            .body(body)
            .expect("request");
        let response = client::http1().request(req).await.expect("warm-up request");
        PatternCheck::consume(response.into_body())
            .await
            .expect("warm-up body");
    }
    gateway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_100_mb_with_flat_gateway_memory() {
    bounded(async {
        let upstream = Server::http1().sink().run().await;
        let dir = TempDir::new();
        let gateway = start(&upstream, &dir, true).await;
        let baseline = gateway.rss_bytes().unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_rss(gateway.pid(), stop.clone());
        let req = Request::post(client::url(gateway.listener_addr("public"), "/upload"))
            .body(PatternBody::new(SIZE, true).boxed())
            .unwrap();
        let reply = client::send(&client::http1(), req).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let peak = sampler.await.unwrap();

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let sink = reply.json();
        assert_eq!(sink["bytes"], SIZE);
        assert_eq!(sink["pattern_ok"], true);
        let growth = peak.saturating_sub(baseline);
        assert!(
            growth < MAX_GROWTH,
            "gateway RSS grew by {} MiB during a 100 MB upload (baseline {} MiB, peak {} MiB)",
            growth >> 20,
            baseline >> 20,
            peak >> 20
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_100_mb_with_flat_gateway_memory() {
    bounded(async {
        let upstream = Server::http1().stream(SIZE).run().await;
        let dir = TempDir::new();
        let gateway = start(&upstream, &dir, false).await;
        let baseline = gateway.rss_bytes().unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_rss(gateway.pid(), stop.clone());
        let req = Request::get(client::url(gateway.listener_addr("public"), "/download"))
            .body(body::empty())
            .unwrap();
        let response = client::http1().request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let check = PatternCheck::consume(response.into_body()).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let peak = sampler.await.unwrap();

        assert_eq!(check.bytes, SIZE);
        assert_eq!(check.first_mismatch, None);
        let growth = peak.saturating_sub(baseline);
        assert!(
            growth < MAX_GROWTH,
            "gateway RSS grew by {} MiB during a 100 MB download (baseline {} MiB, peak {} MiB)",
            growth >> 20,
            baseline >> 20,
            peak >> 20
        );
    })
    .await;
}
