//! Hot reload: many reloads under traffic lose nothing; file watching sees editor-style atomic
//! renames and Kubernetes ConfigMap symlink swaps; a bad edit is rejected, reported, counted,
//! and the last good config keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use levee::reload::ReloadCause;
use levee_tests::client::{self, metric_sum};
use levee_tests::harness::{CONFIG_FILE, simple_config};
use levee_tests::{Server, TempDir, TestGateway, bounded, eventually};

/// A config with one route per `(name, path_prefix)`, all to one cluster at `upstream`.
fn routes_config(routes: &[(&str, &str)], upstream: SocketAddr) -> String {
    let mut yaml = String::from(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nroutes:\n",
    );
    for (name, prefix) in routes {
        yaml.push_str(&format!(
            "  - name: {name}\n    match:\n      path_prefix: {prefix}\n    cluster: backend\n"
        ));
    }
    yaml.push_str(&format!(
        "clusters:\n  - name: backend\n    endpoints:\n      - address: {upstream}\n"
    ));
    yaml
}

async fn status_of(gateway: &TestGateway, path: &str) -> Option<StatusCode> {
    client::get(&client::http1(), &gateway.url("public", path))
        .await
        .ok()
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_traffic_fail_no_request() {
    bounded(async {
        let a = Server::http1().name("a").run().await;
        let b = Server::http1().name("b").run().await;
        let config_a = simple_config(&[a.addr()]);
        let config_b = simple_config(&[b.addr()]);
        let dir = TempDir::new();
        dir.write(CONFIG_FILE, &config_a);
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, false)
            .await
            .unwrap();

        let done = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut clients = Vec::new();
        for _ in 0..2 {
            let url = gateway.url("public", "/traffic");
            let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
            clients.push(tokio::spawn(async move {
                let client = client::http1();
                // Bounded: stops at the end of the reloads, or after 20 000 requests.
                for _ in 0..20_000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    match client::get(&client, &url).await {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(reply) => failed.lock().unwrap().push(format!(
                            "{}: {}",
                            reply.status,
                            reply.text()
                        )),
                        Err(error) => failed.lock().unwrap().push(error.to_string()),
                    }
                }
            }));
        }

        let successes_before = gateway.reload_handle().status().successes;
        let mut last_version = 0;
        for i in 0..50 {
            let next = if i % 2 == 0 { &config_b } else { &config_a };
            gateway.dir.write_atomic(CONFIG_FILE, next);
            if i % 2 == 0 {
                let version = gateway.reload().await.expect("valid reload");
                assert!(version > last_version, "versions increase");
                last_version = version;
            } else {
                let reply = client::admin_post(gateway.admin(), "/config/reload")
                    .await
                    .unwrap();
                assert!(
                    reply.status.is_success(),
                    "{}: {}",
                    reply.status,
                    reply.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }

        let failed = failed.lock().unwrap();
        assert!(
            failed.is_empty(),
            "{} failed requests, first: {:?}",
            failed.len(),
            failed.first()
        );
        assert!(
            ok.load(Ordering::SeqCst) >= 50,
            "traffic flowed during the reloads"
        );
        assert!(a.requests() > 0 && b.requests() > 0, "both configs served");
        assert_eq!(
            gateway.reload_handle().status().successes - successes_before,
            50
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_config_replaced_by_atomic_rename_without_manual_reload() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let gateway = TestGateway::start(&routes_config(&[("old", "/old")], upstream.addr()))
            .await
            .unwrap();
        assert_eq!(
            status_of(&gateway, "/new").await,
            Some(StatusCode::NOT_FOUND)
        );

        gateway.dir.write_atomic(
            CONFIG_FILE,
            routes_config(&[("old", "/old"), ("new", "/new")], upstream.addr()),
        );

        let applied = eventually(200, || async {
            status_of(&gateway, "/new").await == Some(StatusCode::OK)
        })
        .await;
        assert!(applied, "the renamed-in config was not applied within 10s");
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));
        assert_eq!(
            gateway.reload_handle().status().last_cause,
            Some(ReloadCause::FileChange)
        );
    })
    .await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;

    bounded(async {
        let upstream = Server::http1().run().await;
        // The layout the kubelet makes for a mounted ConfigMap:
        //   levee.yaml -> ..data/levee.yaml, ..data -> ..2026_01_01_v1, ..2026_01_01_v1/levee.yaml
        let dir = TempDir::new();
        dir.write(
            "..2026_01_01_v1/levee.yaml",
            routes_config(&[("old", "/old")], upstream.addr()),
        );
        symlink("..2026_01_01_v1", dir.join("..data")).unwrap();
        symlink("..data/levee.yaml", dir.join(CONFIG_FILE)).unwrap();
        let gateway = TestGateway::start_in(dir, CONFIG_FILE, true).await.unwrap();
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));
        assert_eq!(
            status_of(&gateway, "/new").await,
            Some(StatusCode::NOT_FOUND)
        );

        // The kubelet's update: a new timestamped dir, a new symlink, renamed over `..data`.
        gateway.dir.write(
            "..2026_01_01_v2/levee.yaml",
            routes_config(&[("old", "/old"), ("new", "/new")], upstream.addr()),
        );
        symlink("..2026_01_01_v2", gateway.dir.join("..data_tmp")).unwrap();
        std::fs::rename(gateway.dir.join("..data_tmp"), gateway.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(gateway.dir.join("..2026_01_01_v1")).unwrap();

        let applied = eventually(200, || async {
            status_of(&gateway, "/new").await == Some(StatusCode::OK)
        })
        .await;
        assert!(applied, "the ConfigMap swap was not applied within 10s");
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_invalid_edit_keeps_serving_and_reports_the_error() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let good = routes_config(&[("old", "/old")], upstream.addr());
        let gateway = TestGateway::start(&good).await.unwrap();
        let admin = gateway.admin();

        let bad = good.replace("cluster: backend", "cluster: nowhere");
        let bad_line = bad
            .lines()
            .position(|l| l.contains("cluster: nowhere"))
            .unwrap()
            + 1;
        gateway.dir.write_atomic(CONFIG_FILE, &bad);
        let error = gateway
            .reload()
            .await
            .expect_err("invalid config is rejected");

        let location = format!("{CONFIG_FILE}:{bad_line}");
        assert!(error.contains(&location), "error names {location}: {error}");
        assert!(
            error.contains("routes[0].cluster"),
            "error names the key: {error}"
        );

        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));

        let config = client::admin_get(admin, "/config").await.unwrap();
        assert_eq!(config.status, StatusCode::OK);
        let last_error = config.json()["reload"]["last_error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("/config has reload.last_error: {}", config.text()));
        assert!(last_error.contains(&location), "{last_error}");
        assert!(last_error.contains("routes[0].cluster"), "{last_error}");

        let metrics = client::admin_get(admin, "/metrics").await.unwrap().text();
        let errors = metric_sum(&metrics, "levee_config_reloads_total", r#"result="error""#)
            .unwrap_or_else(|| panic!("no levee_config_reloads_total error sample:\n{metrics}"));
        assert!(errors >= 1.0, "{metrics}");

        // A fixed file is applied and clears the error.
        gateway.dir.write_atomic(
            CONFIG_FILE,
            routes_config(&[("old", "/old"), ("new", "/new")], upstream.addr()),
        );
        gateway.reload().await.expect("fixed config is applied");
        assert_eq!(status_of(&gateway, "/new").await, Some(StatusCode::OK));
        let config = client::admin_get(admin, "/config").await.unwrap().json();
        assert!(config["reload"]["last_error"].is_null(), "{config}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_file_is_a_failed_reload_not_a_crash() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let good = routes_config(&[("old", "/old")], upstream.addr());
        let gateway = TestGateway::start(&good).await.unwrap();

        // A truncated write, as a non-atomic editor leaves it mid-save.
        gateway.dir.write(CONFIG_FILE, &good[..good.len() / 2]);
        let _ = gateway.reload().await;
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));

        gateway.dir.write(CONFIG_FILE, &good);
        gateway.reload().await.expect("complete file reloads");
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));
    })
    .await;
}

/// Issue 14: 146 KB of YAML whose aliases expand to a gigabyte grew the running gateway until
/// it aborted. The reload is refused before the copies are made, and the old config serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_bomb_reload_is_rejected_and_the_old_config_keeps_serving() {
    bounded(async {
        let upstream = Server::http1().run().await;
        let good = routes_config(&[("old", "/old")], upstream.addr());
        let gateway = TestGateway::start(&good).await.unwrap();

        let big = "x".repeat(64 << 10);
        let aliases = ["*big"; 16_000].join(", ");
        let bomb = format!("junk0: &big \"{big}\"\njunk: [{aliases}]\n{good}");
        gateway.dir.write_atomic(CONFIG_FILE, &bomb);
        let error = gateway
            .reload()
            .await
            .expect_err("the alias bomb is rejected");
        assert!(error.contains(&format!("{CONFIG_FILE}:2:")), "{error}");
        assert!(error.contains("expands to more than 16 MiB"), "{error}");
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));

        // So is a file past the size bound, read no further than the bound.
        let huge = format!("{good}#{}\n", "x".repeat(levee_config::MAX_FILE_BYTES));
        gateway.dir.write_atomic(CONFIG_FILE, &huge);
        let error = gateway
            .reload()
            .await
            .expect_err("the huge file is rejected");
        assert!(error.contains("the file is larger than 4 MiB"), "{error}");
        assert_eq!(status_of(&gateway, "/old").await, Some(StatusCode::OK));
    })
    .await;
}
