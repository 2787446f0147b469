//! The first-run demo and SIGHUP, through the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use levee_tests::client::{self, admin_get, url};
use levee_tests::plugins::rust_wasm;
use levee_tests::{GatewayProcess, Server, TempDir, bounded, eventually, levee_bin};

/// A child process that is killed and reaped when dropped, so a failing assertion never leaves
/// a demo running.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts `levee demo` on free ports and returns the child, its stdout lines so far, and the
/// public and admin addresses it printed.
// The child is handed to the caller in a guard that reaps it; clippy cannot see that.
#[allow(clippy::zombie_processes)]
fn spawn_demo() -> (Demo, Arc<Mutex<Vec<String>>>, SocketAddr, SocketAddr) {
    // The demo builds its plugin from `plugins/` at its first run; building the example plugins
    // first (once per test process, under their lock) leaves it only cargo's no-op check.
    rust_wasm("static-fallback");
    let mut child = Command::new(levee_bin!())
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn levee demo");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines lock").push(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = lines.lock().expect("lines lock").join("\n");
        let public = address_after(&text, "curl -i http://");
        let admin = address_after(&text, "status page  http://");
        if let (Some(public), Some(admin)) = (public, admin) {
            return (Demo(child), lines, public, admin);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo printed no URLs:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn address_after(text: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest.split('/').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_upstreams_and_shows_failures() {
    bounded(async {
        let (mut child, _lines, public, admin) = spawn_demo();
        let http = client::http1();

        // Round-robin over the two healthy catalog upstreams.
        let mut upstreams = Vec::new();
        for _ in 0..4 {
            let reply = client::get(&http, &url(public, "/catalog/items"))
                .await
                .unwrap();
            assert_eq!(reply.status, 200);
            upstreams.push(reply.json()["upstream"].as_str().unwrap().to_string());
        }
        assert!(
            upstreams.contains(&"catalog-a".to_string()),
            "{upstreams:?}"
        );
        assert!(
            upstreams.contains(&"catalog-b".to_string()),
            "{upstreams:?}"
        );

        // A service that is down: retries cannot help, so the route's fallback answers with
        // its maintenance page; after a few failures the breaker opens and the page stays.
        for _ in 0..8 {
            let reply = client::get(&http, &url(public, "/broken/")).await.unwrap();
            assert_eq!(reply.status, 503);
            assert!(
                reply.text().contains("Down for maintenance"),
                "{}",
                reply.text()
            );
            assert_eq!(reply.header("retry-after"), Some("30"));
        }
        let clusters = admin_get(admin, "/clusters").await.unwrap().json();
        let broken = clusters["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "broken")
            .unwrap()
            .clone();
        assert_eq!(broken["breaker"]["state"], "open", "{broken}");

        // The same down service behind the demo's Wasm fallback plugin: its own page.
        let reply = client::get(&http, &url(public, "/down/")).await.unwrap();
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.header("x-served-by"), Some("static-fallback-plugin"));
        assert!(reply.text().contains("Wasm plugin"), "{}", reply.text());
        let plugins = admin_get(admin, "/plugins").await.unwrap().json();
        assert_eq!(plugins["plugins"][0]["name"], "maintenance", "{plugins}");
        assert!(
            plugins["plugins"][0]["calls"].as_u64().unwrap() >= 1,
            "{plugins}"
        );

        // The mixed cluster answers whatever phase the flaky upstream is in: retries go to the
        // healthy one.
        for _ in 0..6 {
            let reply = client::get(&http, &url(public, "/mixed/")).await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }

        // No route: the gateway's own JSON 404.
        let reply = client::get(&http, &url(public, "/nowhere")).await.unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_kind(), Some("no-route"));

        let ready = admin_get(admin, "/readyz").await.unwrap();
        assert_eq!(ready.status, 200);
        let clusters = admin_get(admin, "/clusters").await.unwrap().json();
        assert_eq!(clusters["clusters"].as_array().unwrap().len(), 4);

        let _ = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "demo exited with {status}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    bounded(async {
        let upstream = Server::http1().name("first").run().await;
        let dir = TempDir::new();
        let config = dir.path().join("levee.yaml");
        std::fs::write(
            &config,
            format!(
                "listeners:\n  - name: public\n    address: 127.0.0.1:0\n\
                 admin:\n  address: 127.0.0.1:0\n\
                 routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    cluster: app\n\
                 clusters:\n  - name: app\n    endpoints: [ {{ address: \"{}\" }} ]\n\
                 shutdown: {{ drain_delay: 0s, drain_timeout: 5s }}\n",
                upstream.addr()
            ),
        )
        .unwrap();
        let gateway = GatewayProcess::spawn(levee_bin!(), &config, &["public"], &[])
            .await
            .unwrap();

        gateway.signal("HUP").unwrap();
        let reloaded = eventually(200, || {
            let text = gateway.stderr_text();
            async move {
                text.lines()
                    .any(|line| line.contains("\"config reloaded\"") && line.contains("Signal"))
            }
        })
        .await;
        assert!(
            reloaded,
            "no reload logged after SIGHUP:\n{}",
            gateway.stderr_text()
        );
        let config = admin_get(gateway.admin_addr(), "/config")
            .await
            .unwrap()
            .json();
        assert_eq!(config["version"], 2, "{config}");
        assert_eq!(config["reload"]["last_cause"], "signal", "{config}");
    })
    .await;
}
