//! With the `embed-demo-plugin` feature, builds the `static-fallback` example plugin (from
//! `plugins/`) for `levee demo` to embed, so the binary runs the demo away from its sources.
//!
//! Without the feature (the default) this does nothing: a nested cargo here would run for every
//! build of the library, `cargo clippy` included, and `levee demo` builds the plugin itself at
//! run time instead (`src/demo/plugin.rs`, which this script shares).

use std::path::{Path, PathBuf};

#[path = "src/demo/plugin.rs"]
mod plugin;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/demo/plugin.rs");
    if std::env::var_os("CARGO_FEATURE_EMBED_DEMO_PLUGIN").is_none() {
        return;
    }
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

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = plugin::build(&root, cargo).unwrap_or_else(|e| panic!("{e}"));
    let out =
        Path::new(&std::env::var_os("OUT_DIR").expect("set by cargo")).join("static_fallback.wasm");
    std::fs::copy(&built, &out).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}
