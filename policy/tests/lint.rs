//! Each lint rule against fixtures that must trigger it (with the policies
//! named) and fixtures that must not.

use flowgate_policy::{
    Cluster, ClusterObjects, Direction, Finding, LintRule, Severity, has_errors, lint,
    rule_never_hit,
};

fn cluster(name: &str) -> Cluster {
    let path = format!(
        "{}/tests/fixtures/lint/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut objects = ClusterObjects::default();
    objects.parse_yaml(&path, &text).expect("fixture parses");
    Cluster::build(&objects, 1).expect("fixture is valid")
}

/// `(namespace, policy, severity)` of the findings of `rule`, in order.
fn hits(findings: &[Finding], rule: LintRule) -> Vec<(String, Option<String>, Severity)> {
    findings
        .iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.namespace.clone(), f.policy.clone(), f.severity))
        .collect()
}

fn of(ns: &str, policy: Option<&str>, severity: Severity) -> (String, Option<String>, Severity) {
    (ns.to_string(), policy.map(str::to_string), severity)
}

fn assert_clean(fixture: &str, rule: LintRule) {
    let findings = lint(&cluster(fixture));
    let found: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
    assert!(found.is_empty(), "{fixture}: unexpected {rule}: {found:#?}");
}

/// The findings of `rule` in `fixture`, after checking every one says what to do.
fn triggered(fixture: &str, rule: LintRule) -> Vec<Finding> {
    let findings = lint(&cluster(fixture));
    for f in &findings {
        assert!(!f.message.is_empty() && !f.fix.is_empty(), "{f:?}");
    }
    findings.into_iter().filter(|f| f.rule == rule).collect()
}

#[test]
fn namespace_without_default_deny() {
    let rule = LintRule::NamespaceWithoutDefaultDeny;
    let found = triggered("namespace-without-default-deny", rule);
    assert_eq!(
        hits(&found, rule),
        vec![
            of("prod", None, Severity::Warning),
            of("shop", None, Severity::Warning),
            of("prod", None, Severity::Info),
            of("shop", None, Severity::Info),
        ]
    );
    assert!(
        found[0].message.contains("prod/web"),
        "{}",
        found[0].message
    );
    assert!(
        found[1].message.contains("a new pod"),
        "{}",
        found[1].message
    );
    assert!(found[0].fix.contains("podSelector: {}"), "{}", found[0].fix);
    assert_clean("namespace-without-default-deny-ok", rule);
}

#[test]
fn selector_matches_nothing() {
    let rule = LintRule::SelectorMatchesNothing;
    let found = triggered("selector-matches-nothing", rule);
    assert_eq!(
        hits(&found, rule),
        vec![
            of("prod", Some("peer-namespace"), Severity::Warning),
            of("prod", Some("peer-pod"), Severity::Warning),
            of("prod", Some("typo"), Severity::Warning),
        ]
    );
    // The message shows the values that exist, next to the typo.
    let typo = &found[2].message;
    assert!(
        typo.contains("app=wbe") && typo.contains("app is one of (db, web)"),
        "{typo}"
    );
    assert!(found[0].message.contains("env=prd"), "{}", found[0].message);
    assert!(
        found[1].message.contains("app=frontend"),
        "{}",
        found[1].message
    );
    assert_clean("selector-matches-nothing-ok", rule);
}

#[test]
fn inert_rules() {
    let rule = LintRule::InertRules;
    let found = triggered("inert-rules", rule);
    assert_eq!(
        hits(&found, rule),
        vec![
            of(
                "prod",
                Some("egress-only-with-ingress-rules"),
                Severity::Error
            ),
            of(
                "prod",
                Some("ingress-only-with-egress-rules"),
                Severity::Error
            ),
        ]
    );
    assert!(
        found[1].message.contains("2 egress rules"),
        "{}",
        found[1].message
    );
    assert!(
        found[1].fix.contains("add Egress to policyTypes"),
        "{}",
        found[1].fix
    );
    assert!(has_errors(&found));
    assert_clean("inert-rules-ok", rule);
}

#[test]
fn ipblock_covers_pods() {
    let rule = LintRule::IpblockCoversPods;
    let found = triggered("ipblock-covers-pods", rule);
    assert_eq!(
        hits(&found, rule),
        vec![of("prod", Some("private-ranges"), Severity::Warning)]
    );
    assert!(found[0].message.contains("10.0.0.0/8") && found[0].message.contains("prod/web"));
    assert!(found[0].fix.contains("10.244.0.0/16"), "{}", found[0].fix);
    assert_clean("ipblock-covers-pods-ok", rule);
}

#[test]
fn named_port_unresolved() {
    let rule = LintRule::NamedPortUnresolved;
    let found = triggered("named-port-unresolved", rule);
    assert_eq!(
        hits(&found, rule),
        vec![
            of("prod", Some("http-out"), Severity::Warning),
            of("prod", Some("http-out"), Severity::Warning),
            of("prod", Some("metrics-in"), Severity::Warning),
        ]
    );
    let texts: Vec<&str> = found.iter().map(|f| f.message.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("`http` (UDP)")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("`https`") && t.contains("ipBlock")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("`metrics`")), "{texts:?}");
    assert_clean("named-port-unresolved-ok", rule);
}

#[test]
fn duplicate_policy() {
    let rule = LintRule::DuplicatePolicy;
    let found = triggered("duplicate-policy", rule);
    assert_eq!(
        hits(&found, rule),
        vec![of("prod", Some("allow-web-copy"), Severity::Warning)]
    );
    assert!(
        found[0].message.contains("allow-web"),
        "{}",
        found[0].message
    );
    assert_clean("duplicate-policy-ok", rule);
}

#[test]
fn egress_without_dns() {
    let rule = LintRule::EgressWithoutDns;
    let found = triggered("egress-without-dns", rule);
    assert_eq!(
        hits(&found, rule),
        vec![of("prod", Some("my-app-egress"), Severity::Error)]
    );
    assert!(
        found[0].message.contains("prod/my-app"),
        "{}",
        found[0].message
    );
    let found = triggered("egress-without-dns-nodns", rule);
    assert_eq!(
        hits(&found, rule),
        vec![of("prod", Some("same-namespace-only"), Severity::Error)]
    );
    assert_clean("egress-without-dns-ok", rule);
}

#[test]
fn rule_never_hit_names_the_rules_without_traffic() {
    let c = cluster("duplicate-policy");
    let hit = |ns: &str, name: &str, d: Direction, i: u32| {
        ns == "prod" && name == "allow-web" && d == Direction::Ingress && i == 0
    };
    let found = rule_never_hit(&c, "the last hour", hit);
    let rules: Vec<String> = found.iter().map(|f| f.message.clone()).collect();
    assert_eq!(
        rules,
        vec![
            "ingress rule 1 of prod/allow-web admitted no flow in the last hour",
            "ingress rule 0 of prod/allow-web-copy admitted no flow in the last hour",
            "ingress rule 1 of prod/allow-web-copy admitted no flow in the last hour",
        ]
    );
    assert!(
        found
            .iter()
            .all(|f| f.rule == LintRule::RuleNeverHit && f.severity == Severity::Info)
    );
    // Every rule hit: nothing to say.
    assert!(rule_never_hit(&c, "the last hour", |_, _, _, _| true).is_empty());
}

#[test]
fn findings_serialize_with_the_documented_fields() {
    let found = triggered("inert-rules", LintRule::InertRules);
    let json = serde_json::to_value(&found[0]).unwrap();
    assert_eq!(json["rule"], "inert-rules");
    assert_eq!(json["severity"], "error");
    assert_eq!(json["namespace"], "prod");
    assert_eq!(json["policy"], "egress-only-with-ingress-rules");
    assert!(json["message"].is_string() && json["fix"].is_string());
    let ns = triggered(
        "namespace-without-default-deny",
        LintRule::NamespaceWithoutDefaultDeny,
    );
    assert!(
        serde_json::to_value(&ns[0])
            .unwrap()
            .get("policy")
            .is_none()
    );
}
