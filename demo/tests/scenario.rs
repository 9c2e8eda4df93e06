//! Scenario files: the default scenario is valid and covers every policy both
//! ways; invalid files fail with an error naming the problem.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use flowgate_demo::nft::Enforcement;
use flowgate_demo::scenario::Scenario;

fn load(rel: &str) -> Result<flowgate_demo::scenario::Placed, flowgate_demo::DemoError> {
    Scenario::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))?.place()
}

#[test]
fn default_scenario_hits_every_policy_both_ways() -> Result<()> {
    let placed = load("../examples/default-scenario.yaml")?;
    for (id, policy) in placed.cluster.policies() {
        let selected = placed.cluster.selected_pods(id);
        let touching: Vec<_> = placed
            .flows
            .iter()
            .filter(|f| {
                let dst = match f.to {
                    flowgate_demo::scenario::Target::Pod(i) => Some(i),
                    flowgate_demo::scenario::Target::External(_) => None,
                };
                [Some(f.from), dst].into_iter().flatten().any(|i| {
                    let p = &placed.pods[i].spec;
                    placed
                        .cluster
                        .find_pod(&p.namespace, &p.name)
                        .is_some_and(|id| selected.contains(&id))
                })
            })
            .collect();
        let allowed = touching.iter().filter(|f| placed.allowed(f)).count();
        assert!(
            allowed > 0 && allowed < touching.len(),
            "policy {}/{}: traffic must pass and be denied ({allowed}/{})",
            policy.namespace,
            policy.name,
            touching.len()
        );
    }
    Ok(())
}

#[test]
fn invalid_scenarios_name_the_problem() {
    for (file, needle) in [
        ("tests/fixtures/invalid-unknown-pod.yaml", "a/nobody"),
        ("tests/fixtures/invalid-policy.yaml", "bad-range"),
        ("tests/fixtures/invalid-field.yaml", "lables"),
        ("tests/fixtures/does-not-exist.yaml", "does-not-exist.yaml"),
    ] {
        let err = load(file).expect_err(file);
        // The whole cause chain, as the CLI prints it.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        let err = text;
        assert!(
            err.contains(needle),
            "{file}: error {err:?} does not name {needle:?}"
        );
    }
}

#[test]
fn enforcement_flag_parses_features_and_rejects_unknown_ones() {
    assert_eq!("all".parse::<Enforcement>().ok(), Some(Enforcement::ALL));
    assert_eq!("none".parse::<Enforcement>().ok(), Some(Enforcement::NONE));
    let e: Enforcement = "without:endPort,egress".parse().expect("valid");
    assert!(e.enabled && !e.end_port && !e.egress && e.named_ports && e.ip_block_except);
    for bad in ["without:", "without:portRange", "some", ""] {
        assert!(bad.parse::<Enforcement>().is_err(), "{bad:?} accepted");
    }
}

/// The scenario shown in the top-level README is complete and valid, and the
/// engine judges each traffic line as its comment says ("dropped" or not).
#[test]
fn readme_scenario_is_valid_and_its_comments_are_true() -> Result<()> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let section = readme
        .split_once("### The demo scenario")
        .expect("README has a '### The demo scenario' section")
        .1;
    let yaml = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("that section has a yaml block")
        .0;
    let placed = Scenario::from_yaml("README.md", yaml)?.place()?;
    let lines: Vec<&str> = yaml
        .lines()
        .skip_while(|l| !l.starts_with("traffic:"))
        .skip(1)
        .filter(|l| l.trim_start().starts_with("- {"))
        .collect();
    assert_eq!(lines.len(), placed.flows.len(), "one flow per traffic line");
    assert!(
        lines.len() >= 5,
        "the example shows several kinds of traffic"
    );
    let mut outcomes = [0, 0];
    for (line, flow) in lines.iter().zip(&placed.flows) {
        let says_dropped = line.contains("dropped");
        assert_eq!(
            placed.allowed(flow),
            !says_dropped,
            "README traffic line judged otherwise than its comment: {line}"
        );
        outcomes[usize::from(says_dropped)] += 1;
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "allowed and dropped both shown"
    );
    // The `changes:` example that follows applies to that scenario.
    let changes = section
        .split("```yaml\n")
        .nth(2)
        .and_then(|rest| rest.split_once("```"))
        .expect("the section shows a `changes:` block")
        .0;
    assert!(changes.starts_with("changes:"), "{changes}");
    let placed = Scenario::from_yaml("README.md", &format!("{yaml}{changes}"))?.place()?;
    let stages: Vec<&str> = placed
        .stages
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    assert_eq!(
        stages,
        [
            "prod/allow-same-namespace created",
            "prod/allow-same-namespace deleted"
        ]
    );
    Ok(())
}

/// The tiers scenario: every Admin and Baseline rule decides (or passes on)
/// some of its traffic, and the nftables ruleset puts a pod's Admin rules
/// before its NetworkPolicy or Baseline rules.
#[test]
fn tiers_scenario_exercises_every_tier_rule_in_order() -> Result<()> {
    use std::net::IpAddr;
    let placed = load("../examples/tiers-scenario.yaml")?;
    let c = &placed.cluster;
    let mut used = std::collections::BTreeSet::new();
    for f in &placed.flows {
        let src = c.endpoint_for_ip(IpAddr::V4(placed.pods[f.from].ip));
        let dst = c.endpoint_for_ip(IpAddr::V4(placed.target_ip(f.to)));
        let v = c.verdict(&src, &dst, f.port, f.protocol);
        for d in [&v.egress, &v.ingress] {
            used.extend(
                d.decided_by
                    .iter()
                    .chain(&d.passed_by)
                    .map(|r| c.decided_by_key(*r)),
            );
        }
    }
    let mut every = std::collections::BTreeSet::new();
    for (id, p) in c.cluster_policies() {
        for direction in [
            flowgate_policy::Direction::Ingress,
            flowgate_policy::Direction::Egress,
        ] {
            for index in 0..p.rules(direction).len() as u32 {
                every.insert(c.decided_by_key(flowgate_policy::TierRuleId {
                    policy: id,
                    direction,
                    index,
                }));
            }
        }
    }
    assert_eq!(used, every, "tier rules the scenario traffic never reaches");

    let link_of = |id| {
        placed
            .pods
            .iter()
            .position(|p| c.find_pod(&p.spec.namespace, &p.spec.name) == Some(id))
    };
    let ruleset = flowgate_demo::nft::compile(c, Enforcement::ALL, &link_of);
    // prod/frontend (pod 0): the Admin chain passes dev's TCP 8080 on to the
    // NetworkPolicy chain, accepts monitoring's scrapes and dev's rest.
    let chain = |name: &str| -> String {
        let start = ruleset
            .find(&format!("chain {name} {{"))
            .unwrap_or_else(|| panic!("no chain {name} in\n{ruleset}"));
        let body = &ruleset[start..];
        body[..body.find("\n  }").unwrap_or(body.len())].to_owned()
    };
    let admin = chain("ingress_0");
    let scrape = admin
        .find("admin/allow-monitoring/ingress/scrape")
        .unwrap_or(usize::MAX);
    let pass = admin.find("goto ingress_0_np comment \"admin/guard-prod/ingress/web-from-dev\"");
    let rest = admin.find("return comment \"admin/guard-prod/ingress/rest-from-dev\"");
    assert!(
        matches!((pass, rest), (Some(p), Some(r)) if scrape < p && p < r),
        "Admin rules out of order:\n{admin}"
    );
    assert!(admin.trim_end().ends_with("goto ingress_0_np"), "{admin}");
    let np = chain("ingress_0_np");
    assert!(
        np.contains("prod/allow-same-namespace") && np.contains("drop"),
        "{np}"
    );
    // dev/tool (pod 2) is not isolated for egress: its Baseline rule.
    let baseline = chain("egress_2_np");
    assert!(
        baseline.contains("203.0.113.0-203.0.113.255")
            && baseline.contains("drop comment \"baseline/dev-egress/egress/no-test-net\""),
        "{baseline}"
    );
    // Without the Admin tier, its rules are gone and the rest stays.
    let without = flowgate_demo::nft::compile(c, "without:adminTier".parse()?, &link_of);
    assert!(!without.contains("admin/"), "{without}");
    assert!(without.contains("baseline/dev-egress"), "{without}");
    Ok(())
}

/// The default scenario's `changes`: in time order, each a whole cluster
/// the engine compiles; the first breaks frontend → backend, the second
/// mends it.
#[test]
fn default_scenario_changes_break_and_mend_a_connection() -> Result<()> {
    let placed = load("../examples/default-scenario.yaml")?;
    let stages: Vec<(u64, &str)> = placed
        .stages
        .iter()
        .map(|s| (s.after.as_secs(), s.description.as_str()))
        .collect();
    assert_eq!(
        stages,
        [
            (60, "prod/allow-same-namespace modified"),
            (120, "prod/allow-same-namespace modified")
        ]
    );
    let frontend_backend = placed
        .flows
        .iter()
        .position(|f| {
            placed.pod_name(f.from) == "prod/frontend"
                && f.to == flowgate_demo::scenario::Target::Pod(1)
                && f.port == 8080
        })
        .expect("frontend -> backend 8080 in the traffic");
    let flow = placed.flows[frontend_backend];
    let verdict = |cluster: &flowgate_policy::Cluster| {
        let src = cluster.endpoint_for_ip(std::net::IpAddr::V4(placed.pods[flow.from].ip));
        let dst = cluster.endpoint_for_ip(std::net::IpAddr::V4(placed.target_ip(flow.to)));
        cluster
            .verdict(&src, &dst, flow.port, flow.protocol)
            .allowed
    };
    assert!(verdict(&placed.cluster));
    assert!(!verdict(&placed.stages[0].cluster));
    assert!(verdict(&placed.stages[1].cluster));
    assert!(placed.stages[0].cluster_yaml.contains("app: backend"));
    Ok(())
}

const BASE: &str = r#"
namespaces: [{name: a}]
pods: [{name: web, namespace: a}]
policies:
  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: deny, namespace: a}, spec: {podSelector: {}}}
"#;

#[test]
fn invalid_changes_name_the_change_and_the_problem() {
    for (changes, needle) in [
        (
            "changes: [{after: 5s, delete: {namespace: a, name: nope}}]",
            "changes[0]: deletes a/nope, which does not exist then",
        ),
        (
            "changes: [{after: 5s}]",
            "changes[0]: give exactly one of `apply` and `delete`",
        ),
        (
            "changes: [{after: soon, delete: {namespace: a, name: deny}}]",
            "changes[0].after: invalid duration",
        ),
        (
            "changes: [{after: 5s, apply: {kind: Pod, metadata: {name: x}}}]",
            "changes[0]: `apply` takes a NetworkPolicy",
        ),
        // Deleted at 5s, so the delete at 9s (listed first) finds nothing.
        (
            "changes: [{after: 9s, delete: {namespace: a, name: deny}}, {after: 5s, delete: {namespace: a, name: deny}}]",
            "changes[0]: deletes a/deny",
        ),
        (
            "changes: [{after: 5s, apply: {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: bad, namespace: a}, spec: {podSelector: {}, ingress: [{ports: [{port: 9, endPort: 1}]}]}}}]",
            "changes[0]",
        ),
    ] {
        let yaml = format!("{BASE}{changes}\n");
        let err = Scenario::from_yaml("test", &yaml)
            .and_then(Scenario::place)
            .expect_err(changes);
        assert!(
            err.to_string().contains(needle),
            "{changes}: {err} does not name {needle:?}"
        );
    }
}

/// A schedule writes each due stage's cluster once, in order, by rename.
#[test]
fn the_schedule_applies_each_stage_once_when_due() -> Result<()> {
    let yaml = format!(
        "{BASE}changes: [{{after: 10s, delete: {{namespace: a, name: deny}}}}, {{after: 20s, apply: {{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {{name: deny, namespace: a}}, spec: {{podSelector: {{}}}}}}}}]\n"
    );
    let placed = Scenario::from_yaml("test", &yaml)?.place()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(flowgate_demo::changes::CLUSTER_FILE);
    flowgate_demo::changes::write_cluster(dir.path(), &placed.cluster_yaml)?;
    let mut schedule = flowgate_demo::changes::Schedule::new(dir.path().to_path_buf());
    let applied = |s: Vec<&flowgate_demo::scenario::Stage>| {
        s.iter().map(|s| s.description.clone()).collect::<Vec<_>>()
    };
    assert!(
        schedule
            .apply_due(&placed, Duration::from_secs(9))?
            .is_empty()
    );
    assert!(std::fs::read_to_string(&file)?.contains("name: deny"));
    assert_eq!(
        applied(schedule.apply_due(&placed, Duration::from_secs(10))?),
        ["a/deny deleted"]
    );
    assert!(!std::fs::read_to_string(&file)?.contains("NetworkPolicy"));
    assert!(
        schedule
            .apply_due(&placed, Duration::from_secs(15))?
            .is_empty()
    );
    assert!(!schedule.done(&placed));
    assert_eq!(
        applied(schedule.apply_due(&placed, Duration::from_secs(60))?),
        ["a/deny created"]
    );
    assert!(schedule.done(&placed));
    assert!(std::fs::read_to_string(&file)?.contains("name: deny"));
    // Only the cluster file is left: the collector never sees a temporary.
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, [std::ffi::OsString::from("cluster.yaml")]);
    Ok(())
}
