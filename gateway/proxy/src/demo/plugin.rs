//! Builds the demo's Wasm fallback plugin, `plugins/static-fallback`, with a nested cargo.
//!
//! `levee demo` calls this at run time from the source checkout the binary was built in, so no
//! build of the library (`cargo clippy`, the tests, `levee-bench`) pays for a nested cargo;
//! only the first demo run does, and later runs find the plugin built. With the
//! `embed-demo-plugin` feature, `build.rs` calls it instead (it includes this file with
//! `#[path]`) and the plugin is embedded in the binary, for a binary that runs away from its
//! sources (the Docker image).
//!
//! The plugin goes into `target/plugins`, the directory the tests build every example plugin
//! into, so it is compiled once however many builds ask for it. The nested cargo has its own
//! target directory, so it never waits on a lock an outer build holds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `plugins/static-fallback` of the repository at `root` for `wasm32-wasip2` with
/// `cargo`, and returns the path of its `.wasm`. The error says what failed.
pub(crate) fn build(root: &Path, cargo: OsString) -> Result<PathBuf, String> {
    let manifest = root.join("plugins/Cargo.toml");
    if !manifest.is_file() {
        return Err(format!("{} not found", manifest.display()));
    }
    let target = root.join("target/plugins");
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "static-fallback",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        // The repository's `rust-toolchain.toml` names the toolchain (with the wasm32-wasip2
        // target); nothing of an outer build (clippy's wrapper, flags, target directory) applies.
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "building plugins/static-fallback for wasm32-wasip2 failed ({status}; is the target \
             installed? `rustup target add wasm32-wasip2`)"
        ));
    }
    Ok(target.join("wasm32-wasip2/release/static_fallback.wasm"))
}
