//! The independent conformance suites, every row checked in-process:
//! ../shared/policy-conformance (NetworkPolicy: 102 scenarios, ~46k rows) and
//! ../shared/policy-conformance-tiers (AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy with NetworkPolicies: 67 scenarios, 6,743
//! rows), both with known answers from np-guard/netpol-analyzer. Cases we
//! believe the analyzer got wrong are listed with the reason in
//! `tests/fixtures/conformance-disagreements.yaml` (and
//! `conformance-tiers-disagreements.yaml`); each listed row must still
//! disagree, so the lists cannot go stale silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowgate_policy::{Cluster, ClusterObjects, Endpoint, Protocol};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    src: String,
    dst: String,
    protocol: String,
    port: u16,
    allowed: bool,
}

#[derive(Deserialize)]
struct Disagreement {
    case: String,
    src: String,
    dst: String,
    protocol: String,
    port: u16,
    /// Why the analyzer's answer is not the Kubernetes one.
    #[allow(dead_code, reason = "documentation for people reading the fixture")]
    reason: String,
}

fn suite_dir(suite: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(suite)
        .join("cases");
    dir.is_dir().then_some(dir)
}

fn endpoint(cluster: &Cluster, s: &str) -> Endpoint {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return cluster.endpoint_for_ip(ip);
    }
    let (ns, name) = s.split_once('/').expect("row endpoint is ns/pod or an IP");
    let pod = cluster
        .find_pod(ns, name)
        .unwrap_or_else(|| panic!("row names unknown pod {s}"));
    cluster.pod_endpoint(pod, None)
}

#[test]
fn conformance_suite_every_row() {
    run_suite("policy-conformance", "conformance-disagreements.yaml", 100);
}

#[test]
fn conformance_tiers_suite_every_row() {
    run_suite(
        "policy-conformance-tiers",
        "conformance-tiers-disagreements.yaml",
        67,
    );
}

fn run_suite(suite: &str, disagreements_file: &str, min_cases: usize) {
    let Some(dir) = suite_dir(suite) else {
        let msg = format!("!! SKIPPED: ../shared/{suite}/cases not found beside the checkout");
        assert!(std::env::var_os("CI").is_none(), "{msg} (required in CI)");
        eprintln!("{msg}");
        return;
    };
    let disagreements: Vec<Disagreement> = serde_norway::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(disagreements_file),
        )
        .expect("read disagreements"),
    )
    .expect("parse disagreements");
    let mut listed: BTreeMap<(String, String, String, String, u16), bool> = disagreements
        .iter()
        .map(|d| {
            (
                (
                    d.case.clone(),
                    d.src.clone(),
                    d.dst.clone(),
                    d.protocol.clone(),
                    d.port,
                ),
                false,
            )
        })
        .collect();

    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min_cases,
        "expected at least {min_cases} cases in {suite}, found {}",
        cases.len()
    );

    let (mut rows_total, mut failures) = (0usize, Vec::new());
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mut objects = ClusterObjects::default();
        let yaml = std::fs::read_to_string(case.join("cluster.yaml")).expect("cluster.yaml");
        objects
            .parse_yaml(&name, &yaml)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cluster = Cluster::build(&objects, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rows: Vec<Row> =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        for row in rows {
            rows_total += 1;
            let src = endpoint(&cluster, &row.src);
            let dst = endpoint(&cluster, &row.dst);
            let protocol: Protocol = row.protocol.parse().unwrap();
            let got = cluster.verdict(&src, &dst, row.port, protocol).allowed;
            let key = (
                name.clone(),
                row.src.clone(),
                row.dst.clone(),
                row.protocol.clone(),
                row.port,
            );
            if let Some(seen) = listed.get_mut(&key) {
                *seen = true;
                assert_ne!(
                    got, row.allowed,
                    "{key:?} is listed as a disagreement but now agrees: remove it"
                );
                continue;
            }
            if got != row.allowed {
                failures.push(format!(
                    "{name}: {} -> {} {}/{} expected allowed={} got {}",
                    row.src, row.dst, row.protocol, row.port, row.allowed, got
                ));
            }
        }
    }
    let unseen: Vec<_> = listed
        .iter()
        .filter(|(_, seen)| !**seen)
        .map(|(k, _)| k)
        .collect();
    assert!(
        unseen.is_empty(),
        "disagreements that match no row: {unseen:?}"
    );
    eprintln!(
        "{suite}: {} cases, {rows_total} rows, {} failures, {} documented disagreements",
        cases.len(),
        failures.len(),
        listed.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {rows_total} rows wrong; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
