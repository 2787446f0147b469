//! `levee validate` on broken configs: non-zero exit and one `FILE:LINE:COL: KEY: MESSAGE` line
//! per problem, all of them in one run; `levee schema` prints the JSON Schema.

use std::ffi::OsStr;
use std::process::Output;
use std::time::Duration;

use levee_tests::process::run_cli;
use levee_tests::{TempDir, levee_bin};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

const VALID: &str = "listeners:
  - name: public
    address: 127.0.0.1:8080
admin:
  address: 127.0.0.1:9901
routes:
  - name: api
    match:
      path_prefix: /api/
    cluster: api
clusters:
  - name: api
    endpoints:
      - address: 127.0.0.1:9001
";

struct Validated {
    output: Output,
    stderr: String,
    yaml: String,
}

fn validate(yaml: &str) -> Validated {
    let dir = TempDir::new();
    let path = dir.write("levee.yaml", yaml);
    let output = run_cli(
        levee_bin!(),
        &[OsStr::new("validate"), path.as_os_str()],
        CLI_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Validated {
        output,
        stderr,
        yaml: yaml.to_string(),
    }
}

impl Validated {
    /// 1-based number of the first line of the file containing `marker`.
    fn line_of(&self, marker: &str) -> usize {
        self.yaml
            .lines()
            .position(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("{marker:?} not in the file"))
            + 1
    }

    /// The `FILE:LINE:COL: ...` error lines.
    fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| {
                l.split_once("levee.yaml:")
                    .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect()
    }

    fn assert_failed(&self) {
        assert!(
            !self.output.status.success(),
            "validate accepted an invalid file; stderr:\n{}",
            self.stderr
        );
        assert_eq!(self.output.status.code(), Some(1), "{}", self.stderr);
    }

    /// Asserts an error line at the line of `marker` naming `key` (or a key below it).
    fn assert_reports(&self, marker: &str, key: &str) {
        self.assert_failed();
        let line = self.line_of(marker);
        let location = format!("levee.yaml:{line}:");
        assert!(
            self.error_lines().iter().any(|l| l.contains(&location)
                && (l.contains(&format!(" {key}:")) || l.contains(&format!(" {key}.")))),
            "expected an error at {location} for `{key}`; stderr:\n{}",
            self.stderr
        );
    }
}

#[test]
fn valid_file_exits_zero() {
    let result = validate(VALID);
    assert!(result.output.status.success(), "{}", result.stderr);
    assert!(result.error_lines().is_empty(), "{}", result.stderr);
}

#[test]
fn unknown_key_is_reported_with_line_and_key() {
    let result = validate(&VALID.replace(
        "    address: 127.0.0.1:8080\n",
        "    address: 127.0.0.1:8080\n    colour: red\n",
    ));
    result.assert_reports("colour: red", "listeners[0].colour");
}

#[test]
fn route_to_missing_cluster_is_reported() {
    let result = validate(&VALID.replace("    cluster: api", "    cluster: nope"));
    result.assert_reports("cluster: nope", "routes[0].cluster");
    assert!(result.stderr.contains("nope"), "{}", result.stderr);
}

#[test]
fn duplicate_cluster_name_is_reported() {
    let yaml =
        format!("{VALID}  - name: api # again\n    endpoints:\n      - address: 127.0.0.1:9002\n");
    let result = validate(&yaml);
    result.assert_reports("name: api # again", "clusters[1].name");
}

#[test]
fn duplicate_route_name_is_reported() {
    let yaml = VALID.replace(
        "clusters:\n",
        "  - name: api # again\n    match:\n      path_prefix: /other/\n    cluster: api\nclusters:\n",
    );
    let result = validate(&yaml);
    result.assert_reports("name: api # again", "routes[1].name");
}

#[test]
fn cluster_without_endpoints_or_discovery_is_reported() {
    let yaml = format!("{VALID}  - name: empty\n    lb: round-robin\n");
    let result = validate(&yaml);
    result.assert_reports("name: empty", "clusters[1]");
}

#[test]
fn bad_endpoint_address_is_reported() {
    let result = validate(&VALID.replace("127.0.0.1:9001", "not-an-address"));
    result.assert_reports("not-an-address", "clusters[0].endpoints[0].address");
}

#[test]
fn hostname_endpoint_points_to_dns_discovery() {
    let result = validate(&VALID.replace("127.0.0.1:9001", "web.internal:8080"));
    result.assert_reports("web.internal:8080", "clusters[0].endpoints[0].address");
    assert!(result.stderr.contains("discovery"), "{}", result.stderr);
}

#[test]
fn missing_tls_certificate_file_is_reported() {
    let result = validate(&VALID.replace(
        "    address: 127.0.0.1:8080\n",
        "    address: 127.0.0.1:8080\n    tls:\n      certificates:\n        - cert: missing.pem\n          key: missing.key\n",
    ));
    result.assert_reports("cert: missing.pem", "listeners[0].tls.certificates[0].cert");
    result.assert_reports("key: missing.key", "listeners[0].tls.certificates[0].key");
}

#[test]
fn out_of_range_weight_is_reported() {
    let result = validate(&VALID.replace(
        "      - address: 127.0.0.1:9001\n",
        "      - address: 127.0.0.1:9001\n        weight: 500\n",
    ));
    result.assert_reports("weight: 500", "clusters[0].endpoints[0].weight");
}

#[test]
fn resilience_key_out_of_range_is_reported_with_its_path() {
    let result = validate(&VALID.replace(
        "    cluster: api\n",
        "    cluster: api\n    retry:\n      attempts: 0\n",
    ));
    result.assert_reports("attempts: 0", "routes[0].retry.attempts");
}

#[test]
fn yaml_syntax_error_is_reported_at_its_line() {
    let yaml = VALID.replace("      path_prefix: /api/", "      path_prefix: [/api/, {");
    let result = validate(&yaml);
    result.assert_failed();
    let bad = result.line_of("path_prefix: [");
    let reported: Vec<usize> = result
        .error_lines()
        .iter()
        .filter_map(|l| {
            l.split_once("levee.yaml:")?
                .1
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!reported.is_empty(), "no FILE:LINE in:\n{}", result.stderr);
    assert!(
        reported.iter().all(|line| *line >= bad && *line <= bad + 2),
        "syntax error at line {bad} reported at {reported:?}:\n{}",
        result.stderr
    );
}

#[test]
fn every_error_in_a_file_is_reported_in_one_run() {
    let yaml = VALID
        .replace(
            "    address: 127.0.0.1:8080\n",
            "    address: 127.0.0.1:8080\n    colour: red\n",
        )
        .replace("    cluster: api", "    cluster: nope")
        .replace(
            "      - address: 127.0.0.1:9001\n",
            "      - address: 127.0.0.1:9001\n        weight: 500\n",
        );
    let result = validate(&yaml);
    result.assert_reports("colour: red", "listeners[0].colour");
    result.assert_reports("cluster: nope", "routes[0].cluster");
    result.assert_reports("weight: 500", "clusters[0].endpoints[0].weight");
    assert_eq!(result.error_lines().len(), 3, "{}", result.stderr);
}

#[test]
fn schema_prints_json_schema_with_listeners() {
    let output = run_cli(levee_bin!(), &[OsStr::new("schema")], CLI_TIMEOUT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("schema is JSON");
    assert!(
        schema["properties"]["listeners"].is_object(),
        "no properties.listeners in {schema}"
    );
    assert!(schema["properties"]["clusters"].is_object());
    assert!(schema["properties"]["routes"].is_object());
}
