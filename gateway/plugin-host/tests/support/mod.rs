//! Builds the example plugins (the `plugins/` workspace, for wasm32-wasip2) once per test
//! binary, and hands out their components by name.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use levee_plugin_host::{ClusterHealth, HostServices, LogLevel, RequestHead};

/// Runs a hook call (a future) to completion on this thread's current-thread runtime, made
/// once per thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// The `.wasm` bytes of the example plugin `name` (its folder name, e.g. `bad-headers`).
pub fn plugin_wasm(name: &str) -> Vec<u8> {
    let dir = built().unwrap_or_else(|e| panic!("building the example plugins failed: {e}"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn built() -> Result<&'static Path, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build).as_deref().map_err(Clone::clone)
}

fn build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let target = root.join("target/plugins");
    fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    // Test binaries of several crates may build the plugins at once; cargo's own lock would
    // serialise them too, but this one also covers the reading of the outputs.
    let lock = File::create(target.join(".plugin-build.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .args(["--target", "wasm32-wasip2", "--release", "--target-dir"])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    eprintln!("example plugins built in {:?}", started.elapsed());
    Ok(target.join("wasm32-wasip2/release"))
}

/// Host services that record what plugins do, with an in-memory cache.
#[derive(Debug, Default)]
pub struct Recorder {
    pub counters: Mutex<HashMap<String, i64>>,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub cache: Mutex<HashMap<String, Bytes>>,
    pub health: Mutex<HashMap<String, ClusterHealth>>,
}

impl HostServices for Recorder {
    fn upstream_health(&self, cluster: &str) -> Option<ClusterHealth> {
        self.health.lock().unwrap().get(cluster).copied()
    }

    fn cache_get(&self, plugin: &str, key: &str) -> Option<Bytes> {
        self.cache
            .lock()
            .unwrap()
            .get(&format!("{plugin}/{key}"))
            .cloned()
    }

    fn cache_put(&self, plugin: &str, key: &str, value: Bytes, _: Duration, max: u32) -> bool {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= max as usize {
            return false;
        }
        cache.insert(format!("{plugin}/{key}"), value);
        true
    }

    fn counter_add(&self, plugin: &str, name: &str, delta: i64) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(format!("{plugin}/{name}"))
            .or_default() += delta;
    }

    fn log(&self, _: &str, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_owned()));
    }
}

/// A request head over `headers`.
pub fn request(headers: &HeaderMap) -> RequestHead<'_> {
    RequestHead {
        method: "GET",
        authority: "api.example.com",
        path_with_query: "/v1/items?page=2",
        headers,
        route: "api",
        request_id: "req-1",
    }
}
