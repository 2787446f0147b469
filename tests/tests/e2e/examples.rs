//! Every example config under `deploy/` and `docs/` passes `levee validate`, so examples cannot
//! rot.
//!
//! Kubernetes manifests and Helm chart files are YAML too but not levee configs; they are
//! recognised and skipped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use levee_tests::levee_bin;
use levee_tests::process::run_cli;

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>, depth: usize) {
    // Bounded depth: example trees are shallow, and a symlink loop must not hang the test.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, found, depth + 1);
        } else if matches!(
            path.extension().and_then(OsStr::to_str),
            Some("yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

/// Whether `path` is a levee config rather than a Kubernetes, Helm or Compose file.
fn is_levee_config(path: &Path) -> bool {
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or("");
    if matches!(
        name,
        "Chart.yaml" | "values.yaml" | "docker-compose.yaml" | "compose.yaml"
    ) || path.components().any(|c| c.as_os_str() == "templates")
    {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let top_level = |key: &str| text.lines().any(|l| l.starts_with(key));
    top_level("listeners:") && !top_level("apiVersion:") && !top_level("kind:")
}

#[test]
fn every_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["deploy", "docs"] {
        yaml_files(&root.join(dir), &mut files, 0);
    }
    files.sort();
    let configs: Vec<&PathBuf> = files.iter().filter(|p| is_levee_config(p)).collect();
    assert!(
        !configs.is_empty(),
        "no example configs found under deploy/ or docs/ (saw {files:?})"
    );

    let mut failures = Vec::new();
    for config in &configs {
        let output = run_cli(
            levee_bin!(),
            &[OsStr::new("validate"), config.as_os_str()],
            Duration::from_secs(60),
        );
        if !output.status.success() {
            failures.push(format!(
                "{}:\n{}",
                config.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid example configs:\n{}",
        failures.join("\n")
    );
}
