//! Builds the `static-fallback` example plugin (from `plugins/`) for `levee demo`, which embeds
//! it: the first-run demo shows a Wasm fallback plugin without asking for a separate build.
//!
//! The plugin is built by a nested cargo into `target/plugins`, the directory the tests build
//! every example plugin into, so it is compiled once however many crates ask for it. The nested
//! cargo has its own target directory, so it never waits on the lock the outer build holds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    for watched in [
        "plugins/Cargo.toml",
        "plugins/static-fallback/src",
        "plugins/static-fallback/Cargo.toml",
        "sdk/rust/src",
        "sdk/rust/Cargo.toml",
        "sdk/wit/levee.wit",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }

    let target = root.join("target/plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "static-fallback",
        ])
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // The plugin workspace builds with the toolchain `rust-toolchain.toml` names, without
        // the outer build's wrappers (clippy), flags or target directory.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("running cargo for the demo's plugin");
    assert!(
        status.success(),
        "building plugins/static-fallback for wasm32-wasip2 failed (is the target installed? \
         `rustup target add wasm32-wasip2`)"
    );
    let built = target.join("wasm32-wasip2/release/static_fallback.wasm");
    let out =
        Path::new(&std::env::var_os("OUT_DIR").expect("set by cargo")).join("static_fallback.wasm");
    std::fs::copy(&built, &out).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}
