//! `flowgate lint` as a pipeline runs it: the real binary on fixture files,
//! exit 1 on an error-level finding, and the collector's `GET /api/v1/lint`
//! with `rule-never-hit` from the flows it stored.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Result, ensure};

mod support;

fn lint_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/tests/fixtures/lint")
        .join(name)
}

fn lint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("lint")
        .args(args)
        .output()
        .expect("run flowgate")
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn an_error_level_finding_fails_the_run_and_names_rule_policy_and_fix() {
    let fixture = lint_fixture("inert-rules.yaml");
    let out = lint(&["--cluster", path(&fixture)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error[inert-rules] prod/egress-only-with-ingress-rules"),
        "{text}"
    );
    assert!(text.contains("fix: add Ingress to policyTypes"), "{text}");
    assert!(text.contains("2 errors"), "{text}");
}

#[test]
fn warnings_alone_pass_and_json_has_the_documented_fields() {
    let fixture = lint_fixture("duplicate-policy.yaml");
    let out = lint(&["--cluster", path(&fixture), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = json["findings"].as_array().expect("findings");
    let dup = findings
        .iter()
        .find(|f| f["rule"] == "duplicate-policy")
        .expect("a duplicate-policy finding");
    assert_eq!(dup["severity"], "warning");
    assert_eq!(dup["namespace"], "prod");
    assert_eq!(dup["policy"], "allow-web-copy");
    assert!(dup["message"].is_string() && dup["fix"].is_string());
    assert!(findings.iter().all(|f| f["severity"] != "error"));
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let out = lint(&["--cluster", "/nonexistent/cluster.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cluster.yaml"), "{err}");
}

/// The collector reports, on top of the offline rules, each rule no stored
/// flow went through.
#[test]
fn the_collector_lints_with_rule_never_hit_from_its_flows() -> Result<()> {
    let data = tempfile::tempdir()?;
    let cluster = lint_fixture("duplicate-policy.yaml");
    let collector = support::Collector::start(&cluster, data.path())?;
    let (status, body) = support::http("GET", &collector.http, "/api/v1/lint", None)?;
    ensure!(status == 200, "{status}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let findings = answer["findings"].as_array().cloned().unwrap_or_default();
    let never: Vec<&str> = findings
        .iter()
        .filter(|f| f["rule"] == "rule-never-hit")
        .filter_map(|f| f["message"].as_str())
        .collect();
    // Two policies of two ingress rules each, no flow stored: all four.
    ensure!(never.len() == 4, "{never:#?}");
    ensure!(
        never.contains(&"ingress rule 0 of prod/allow-web admitted no flow in the stored flows"),
        "{never:#?}"
    );
    ensure!(
        findings.iter().any(|f| f["rule"] == "duplicate-policy"),
        "{findings:#?}"
    );
    Ok(())
}
