//! Wasm policy plugins for end-to-end tests: the example plugins built once per test process,
//! a config builder for the top-level `plugins` list and a route's `plugins` key, and the
//! `/plugins` admin view as typed values.
//!
//! The Rust plugins (the `plugins/` cargo workspace) are built for `wasm32-wasip2` into
//! `target/plugins`, and the C, JavaScript and Python examples by `sdk/build-all.sh` into
//! `target/plugins/polyglot`. Each build runs at most once per test process and holds a file
//! lock while it runs, since several test binaries may build at the same time. A build that
//! fails panics with its output: a missing tool chain fails the test rather than skipping it,
//! because CI installs the tool chains (`.ci/install-plugin-toolchains`).
//!
//! A gateway under test gets its own copy of each `.wasm` ([`install`]) in its config
//! directory, so a rebuild by another test process never looks like a hot swap to it, and a
//! test may replace its copy to trigger one.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use http::StatusCode;

use crate::client;
use crate::tempdir::TempDir;

/// The C, JavaScript and Python examples `sdk/build-all.sh` builds, by file stem.
pub const POLYGLOT: [&str; 3] = [
    "static-fallback-c",
    "priority-shedding-js",
    "serve-stale-py",
];

// === builds ===

/// The `.wasm` of the Rust plugin `name` (its folder under `plugins/`, e.g. `bad-headers`),
/// building the `plugins/` workspace first if this process has not yet. Panics if the build
/// fails.
pub fn rust_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_rust)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the Rust plugins failed:\n{e}"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no plugin {name} at {}", path.display());
    path
}

/// The `.wasm` of the polyglot example `name` (one of [`POLYGLOT`]), building all three
/// with `sdk/build-all.sh` first if this process has not yet. Panics if the build fails,
/// for example because a tool chain is missing.
pub fn polyglot_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    assert!(POLYGLOT.contains(&name), "{name} is not a polyglot example");
    let dir = BUILT
        .get_or_init(build_polyglot)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the C/JS/Python plugins failed:\n{e}"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "no plugin {name} at {}", path.display());
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/plugins`, created, with its build lock held until the returned file is dropped.
fn locked_target() -> Result<(PathBuf, File), String> {
    let target = repo_root().join("target/plugins");
    fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    // The lock plugin-host's tests take too: one build of the workspace at a time.
    let lock = File::create(target.join(".plugin-build.lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("locking the plugin build: {e}"))?;
    Ok((target, lock))
}

fn build_rust() -> Result<PathBuf, String> {
    let (target, _lock) = locked_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(repo_root().join("plugins/Cargo.toml"))
        .args(["--target", "wasm32-wasip2", "--release", "--target-dir"])
        .arg(&target)
        // The gateway's test build may set these; the plugins' own workspace decides.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    run(command)?;
    Ok(target.join("wasm32-wasip2/release"))
}

fn build_polyglot() -> Result<PathBuf, String> {
    let (target, _lock) = locked_target()?;
    let out = target.join("polyglot");
    let mut command = Command::new(repo_root().join("sdk/build-all.sh"));
    command.arg(&out);
    run(command)?;
    Ok(out)
}

fn run(mut command: Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} exited with {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Copies the `.wasm` at `source` into `dir` as `file` and returns the new path.
pub fn install(dir: &TempDir, file: &str, source: &Path) -> PathBuf {
    let bytes = fs::read(source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
    dir.write(file, bytes)
}

// === config ===

/// A plugin of the top-level `plugins` list: `name` at `path` (resolved against the config's
/// directory), with `on_error`, `isolation` and `limits`. The deadline defaults to a generous
/// 1s, not the gateway's 5ms: epoch deadlines count wall time, and test machines are busy.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    name: String,
    path: String,
    on_error: String,
    isolation: String,
    deadline: String,
    memory: Option<String>,
}

/// A plugin called `name` whose component is the file `path`; fail-open, pooled, deadline 1s.
pub fn plugin(name: &str, path: &str) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        path: path.to_owned(),
        on_error: "fail-open".to_owned(),
        isolation: "pooled".to_owned(),
        deadline: "1s".to_owned(),
        memory: None,
    }
}

impl PluginSpec {
    /// `on_error`: `fail-open`, `fail-closed` or `reload`.
    pub fn on_error(mut self, on_error: &str) -> PluginSpec {
        on_error.clone_into(&mut self.on_error);
        self
    }

    /// `isolation`: `pooled` or `per-request`.
    pub fn isolation(mut self, isolation: &str) -> PluginSpec {
        isolation.clone_into(&mut self.isolation);
        self
    }

    /// `limits.deadline`, e.g. `50ms`.
    pub fn deadline(mut self, deadline: &str) -> PluginSpec {
        deadline.clone_into(&mut self.deadline);
        self
    }

    /// `limits.memory`, e.g. `16MiB`.
    pub fn memory(mut self, memory: &str) -> PluginSpec {
        self.memory = Some(memory.to_owned());
        self
    }
}

/// `yaml` (a whole config, e.g. from [`crate::chaos::config`]) with a top-level `plugins`
/// list of these plugins appended.
pub fn with_plugins(yaml: &str, plugins: &[PluginSpec]) -> String {
    let mut yaml = yaml.to_owned();
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str("plugins:\n");
    for p in plugins {
        let _ = write!(
            yaml,
            "  - name: {}\n    path: {}\n    on_error: {}\n    isolation: {}\n    limits:\n      deadline: {}\n",
            p.name, p.path, p.on_error, p.isolation, p.deadline
        );
        if let Some(memory) = &p.memory {
            let _ = writeln!(yaml, "      memory: {memory}");
        }
    }
    yaml
}

/// A route's `plugins` key (for [`crate::chaos::RouteSpec::with`]) naming these plugins, each
/// with its config as JSON text (`null` for none).
pub fn route_plugins(plugins: &[(&str, &str)]) -> String {
    let mut yaml = String::from("plugins:\n");
    for (name, config) in plugins {
        let _ = write!(yaml, "  - name: {name}\n    config: {config}\n");
    }
    yaml
}

// === admin view ===

/// One plugin as `GET /plugins` shows it.
#[derive(Debug, Clone)]
pub struct PluginView {
    /// The plugin's name.
    pub name: String,
    /// The sha256 of its `.wasm`, in hex.
    pub version: String,
    /// Hook calls asked for.
    pub calls: u64,
    /// The breaker state: `closed`, `open` or `half-open`.
    pub breaker: String,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// Calls that ran no wasm because the breaker was open.
    pub bypassed: u64,
    /// Calls retried on a fresh instance (`on_error: reload`).
    pub reloads: u64,
    /// Header entries the plugin returned that were not valid HTTP.
    pub invalid_output: u64,
    /// The whole JSON object, for failure messages and less common fields.
    pub raw: serde_json::Value,
}

impl PluginView {
    /// Reads plugin `name` out of a whole `/plugins` document.
    pub fn parse(document: &serde_json::Value, name: &str) -> Option<PluginView> {
        let raw = document["plugins"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?
            .clone();
        let number = |key: &str| raw[key].as_u64().unwrap_or(0);
        Some(PluginView {
            name: name.to_owned(),
            version: raw["version"].as_str().unwrap_or_default().to_owned(),
            calls: number("calls"),
            breaker: raw["breaker"].as_str().unwrap_or_default().to_owned(),
            breaker_opened: number("breaker_opened"),
            bypassed: number("bypassed"),
            reloads: number("reloads"),
            invalid_output: number("invalid_output"),
            raw,
        })
    }

    /// Faults of `kind` (`trap`, `deadline`, `out-of-memory`, `invalid-output`,
    /// `instantiate`).
    pub fn faults(&self, kind: &str) -> u64 {
        self.raw["faults"][kind].as_u64().unwrap_or(0)
    }

    /// Faults of every kind.
    pub fn total_faults(&self) -> u64 {
        self.raw["faults"].as_object().map_or(0, |f| {
            f.values().filter_map(serde_json::Value::as_u64).sum()
        })
    }
}

/// Plugin `name` from the admin listener's `/plugins`; `None` if the call fails or there is no
/// such plugin.
pub async fn plugin_view(admin: SocketAddr, name: &str) -> Option<PluginView> {
    let reply = client::admin_get(admin, "/plugins").await.ok()?;
    if reply.status != StatusCode::OK {
        return None;
    }
    PluginView::parse(&reply.json(), name)
}
