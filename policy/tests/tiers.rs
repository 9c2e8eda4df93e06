//! The cluster-scoped tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//! ClusterNetworkPolicy), each rule of their semantics with allowed and
//! denied cases. Fixtures: `tests/fixtures/tiers/*.yaml`, each holding
//! policies plus a `kind: FlowgateTest` document of cases, over the cluster
//! of `semantics/_base.yaml` plus the Nodes of `tiers/_nodes.yaml`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowgate_policy::{Cluster, ClusterObjects, Endpoint, Protocol, Tier};
use serde::Deserialize;

#[derive(Deserialize)]
struct TestDoc {
    #[serde(default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    from: String,
    to: String,
    /// The DNS name `to` was reached by, as the probe saw it answered.
    to_name: Option<String>,
    port: u16,
    #[serde(default = "tcp")]
    protocol: String,
    allowed: bool,
    egress_tier: Option<String>,
    ingress_tier: Option<String>,
    /// Every deciding Admin/Baseline rule, as `tier/policy/direction/rule`.
    decided_by: Option<Vec<String>>,
    /// Every Pass rule that handed a direction on.
    passed_by: Option<Vec<String>>,
    /// Text the explanation's summary must contain.
    reason: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn endpoint(cluster: &Cluster, s: &str) -> Endpoint {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return cluster.endpoint_for_ip(ip);
    }
    let (ns, name) = s.split_once('/').unwrap();
    cluster.pod_endpoint(
        cluster
            .find_pod(ns, name)
            .unwrap_or_else(|| panic!("no pod {s}")),
        None,
    )
}

fn load(file: &Path) -> (Cluster, Vec<Case>) {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(file).unwrap();
    let mut objects = ClusterObjects::default();
    for base in ["semantics/_base.yaml", "tiers/_nodes.yaml"] {
        let t = std::fs::read_to_string(fixtures().join(base)).unwrap();
        objects.parse_yaml(base, &t).unwrap();
    }
    objects
        .parse_yaml(&name, &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::build(&objects, 7).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut cases = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = serde_norway::Value::deserialize(doc).unwrap();
        if v.get("kind").and_then(|k| k.as_str()) == Some("FlowgateTest") {
            let d: TestDoc = serde_norway::from_value(v).unwrap();
            cases.extend(d.cases);
        }
    }
    (cluster, cases)
}

fn check(name: &str, cluster: &Cluster, c: Case, failures: &mut Vec<String>) {
    let what = format!(
        "{name}: {} -> {}{} {}/{}",
        c.from,
        c.to,
        c.to_name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        c.protocol,
        c.port
    );
    let protocol: Protocol = c.protocol.parse().unwrap();
    let (src, dst) = (endpoint(cluster, &c.from), endpoint(cluster, &c.to));
    let name = c.to_name.as_deref();
    let v = cluster.verdict_named(&src, &dst, name, c.port, protocol);
    let e = cluster.explain_named(&src, &dst, name, c.port, protocol);
    if v.allowed != c.allowed {
        failures.push(format!(
            "{what}: allowed={}, expected {}: {}",
            v.allowed, c.allowed, e.summary
        ));
    }
    for (want, got, dir) in [
        (&c.egress_tier, v.egress.tier, "egress"),
        (&c.ingress_tier, v.ingress.tier, "ingress"),
    ] {
        if let Some(want) = want {
            let want: Tier = want.parse().unwrap();
            if want != got {
                failures.push(format!("{what}: {dir} tier {got}, expected {want}"));
            }
        }
    }
    let keys = |ids: [Option<flowgate_policy::TierRuleId>; 2]| {
        let mut k: Vec<String> = ids
            .into_iter()
            .flatten()
            .map(|r| cluster.decided_by_key(r))
            .collect();
        k.sort();
        k
    };
    let decided = keys([v.egress.decided_by, v.ingress.decided_by]);
    let mut from_explain = e.decided_by.clone();
    from_explain.sort();
    assert_eq!(
        decided, from_explain,
        "{what}: explain and verdict disagree"
    );
    if let Some(mut want) = c.decided_by {
        want.sort();
        if decided != want {
            failures.push(format!("{what}: decided_by {decided:?}, expected {want:?}"));
        }
    }
    if let Some(mut want) = c.passed_by {
        want.sort();
        let got = keys([v.egress.passed_by, v.ingress.passed_by]);
        if got != want {
            failures.push(format!("{what}: passed_by {got:?}, expected {want:?}"));
        }
    }
    if let Some(reason) = c.reason
        && !e.summary.contains(&reason)
    {
        failures.push(format!(
            "{what}: explanation lacks {reason:?}:\n  {}",
            e.summary
        ));
    }
}

#[test]
fn tier_fixtures() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("tiers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let (cluster, cases) = load(file);
        assert!(
            cases.iter().any(|c| c.allowed) && cases.iter().any(|c| !c.allowed),
            "{name}: needs both verdicts"
        );
        for c in cases {
            check(&name, &cluster, c, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn explanation_json_carries_the_tier_fields() {
    let (cluster, _) = load(&fixtures().join("tiers/pass.yaml"));
    let src = endpoint(&cluster, "dev/client");
    let dst = endpoint(&cluster, "prod/db");
    let e = serde_json::to_value(cluster.explain(&src, &dst, 80, Protocol::Tcp)).unwrap();
    assert_eq!(e["allowed"], false);
    assert_eq!(e["ingress_tier"], "baseline");
    assert_eq!(e["egress_tier"], "default");
    assert_eq!(e["decided_by"][0], "baseline/baseline-deny/ingress/deny-in");
    let ingress = &e["ingress"];
    assert_eq!(ingress["tier"], "baseline");
    assert_eq!(ingress["decided_by"]["kind"], "ClusterNetworkPolicy");
    assert_eq!(ingress["decided_by"]["priority"], 1);
    assert_eq!(ingress["decided_by"]["action"], "Deny");
    assert_eq!(ingress["passed_by"]["policy"], "pass-all");
    assert_eq!(ingress["tiers"][0]["outcome"], "passed");
    assert_eq!(ingress["tiers"][1]["outcome"], "decided");
}

#[test]
fn without_cluster_policies_verdicts_name_only_networkpolicy_tiers() {
    let (cluster, _) = load(&fixtures().join("tiers/pass.yaml"));
    let mut objects = ClusterObjects::default();
    let base = std::fs::read_to_string(fixtures().join("semantics/_base.yaml")).unwrap();
    objects.parse_yaml("_base.yaml", &base).unwrap();
    let plain = Cluster::build(&objects, 1).unwrap();
    let src = endpoint(&plain, "dev/client");
    let dst = endpoint(&plain, "prod/db");
    let v = plain.verdict(&src, &dst, 80, Protocol::Tcp);
    assert_eq!(
        (v.egress.tier, v.ingress.tier),
        (Tier::Default, Tier::Default)
    );
    assert_eq!(cluster.cluster_policies().count(), 2);
    assert_eq!(plain.cluster_policies().count(), 0);
}

#[test]
fn a_malformed_domain_name_is_refused_with_its_place() {
    for (name, why) in [
        ("*", "two or more labels"),
        ("example", "two or more labels"),
        ("*.*.example.com", "two or more labels"),
        ("www.exa mple.com", "two or more labels"),
    ] {
        let yaml = format!(
            "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {{name: bad}}
spec:
  priority: 1
  subject: {{namespaces: {{}}}}
  egress:
  - {{name: a, action: Allow, to: [{{domainNames: [\"{name}\"]}}]}}
"
        );
        let mut objects = ClusterObjects::default();
        objects.parse_yaml("bad.yaml", &yaml).unwrap();
        let err = Cluster::build(&objects, 1).expect_err(name).to_string();
        assert!(
            err.contains("spec.egress[0]")
                && err.contains(&format!("`{name}`"))
                && err.contains(why),
            "{name}: {err}"
        );
    }
    // A name whose egress cannot match without DNS still leaves verdicts
    // cacheable for clusters without such peers.
    let (plain, _) = load(&fixtures().join("tiers/pass.yaml"));
    assert!(!plain.judges_domain_names());
    let (named, _) = load(&fixtures().join("tiers/domain-names.yaml"));
    assert!(named.judges_domain_names());
}
