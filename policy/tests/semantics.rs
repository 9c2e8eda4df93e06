//! Every semantic rule of the NetworkPolicy API, each with allowed and
//! denied cases. Fixtures: `tests/fixtures/semantics/*.yaml`, each holding
//! NetworkPolicies plus a `kind: FlowgateTest` document of cases, over the
//! shared cluster in `_base.yaml`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowgate_policy::{Cluster, ClusterObjects, Endpoint, Protocol};
use serde::Deserialize;

#[derive(Deserialize)]
struct TestDoc {
    kind: String,
    #[serde(default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    from: String,
    to: String,
    port: u16,
    #[serde(default = "tcp")]
    protocol: String,
    allowed: bool,
    /// Every admitting rule, as `namespace/name/direction/index`.
    allowed_by: Option<Vec<String>>,
    /// Text the explanation's summary must contain.
    reason: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/semantics")
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

fn run_fixture(file: &Path) -> Vec<String> {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let base = std::fs::read_to_string(fixtures().join("_base.yaml")).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let mut objects = ClusterObjects::default();
    objects.parse_yaml("_base.yaml", &base).unwrap();
    objects.parse_yaml(&name, &text).unwrap();
    let cluster = Cluster::build(&objects, 7).unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut cases = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = serde_norway::Value::deserialize(doc).unwrap();
        if v.get("kind").and_then(|k| k.as_str()) == Some("FlowgateTest") {
            let d: TestDoc = serde_norway::from_value(v).unwrap();
            assert_eq!(d.kind, "FlowgateTest");
            cases.extend(d.cases);
        }
    }
    assert!(
        cases.len() >= 2,
        "{name}: a fixture needs allowed and denied cases"
    );
    assert!(
        cases.iter().any(|c| c.allowed) && cases.iter().any(|c| !c.allowed),
        "{name}: needs both verdicts"
    );

    let mut failures = Vec::new();
    for c in cases {
        let what = format!("{name}: {} -> {} {}/{}", c.from, c.to, c.protocol, c.port);
        let protocol: Protocol = c.protocol.parse().unwrap();
        let (src, dst) = (endpoint(&cluster, &c.from), endpoint(&cluster, &c.to));
        let v = cluster.verdict(&src, &dst, c.port, protocol);
        let e = cluster.explain(&src, &dst, c.port, protocol);
        assert_eq!(
            v.allowed, e.allowed,
            "{what}: verdict and explanation disagree"
        );
        assert_eq!(v.generation, 7);
        if v.allowed != c.allowed {
            failures.push(format!(
                "{what}: expected allowed={} got {}\n  {}",
                c.allowed, v.allowed, e.summary
            ));
            continue;
        }
        if let Some(mut want) = c.allowed_by {
            let mut got: Vec<String> = v
                .egress
                .allowed_by
                .iter()
                .chain(&v.ingress.allowed_by)
                .map(|r| format!("{}/{}/{}", cluster.rule_ref(*r), r.direction, r.index))
                .collect();
            got.sort();
            want.sort();
            if got != want {
                failures.push(format!("{what}: allowed_by {got:?}, expected {want:?}"));
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
    failures
}

#[test]
fn semantic_fixtures() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    let failures: Vec<String> = files.iter().flat_map(|f| run_fixture(f)).collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
