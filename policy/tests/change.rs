//! What-if snapshots: a change set applied to a snapshot must judge every
//! connection exactly as a snapshot built from the changed objects.

mod common;

use common::{PORTS, Set, endpoints};
use flowgate_policy::{ChangeSet, Cluster, PolicyKey, Tier, Verdict, WhatIfError};

fn key(c: &Cluster, v: &Verdict) -> (bool, bool, bool, [Tier; 2], Vec<String>) {
    let rules = v
        .egress
        .allowed_by
        .iter()
        .chain(&v.ingress.allowed_by)
        .map(|r| format!("{}/{}/{}", c.rule_ref(*r), r.direction, r.index))
        .collect();
    (
        v.allowed,
        v.egress.allowed,
        v.ingress.allowed,
        [v.egress.tier, v.ingress.tier],
        rules,
    )
}

/// Both snapshots judge every endpoint pair on every port alike.
fn assert_same(what: &str, want: &Cluster, got: &Cluster) -> usize {
    let (ea, eb) = (endpoints(want), endpoints(got));
    assert_eq!(ea, eb, "{what}: endpoints differ");
    let mut n = 0;
    for s in &ea {
        for d in &ea {
            for (port, proto) in PORTS {
                let (a, b) = (
                    want.verdict(s, d, port, proto),
                    got.verdict(s, d, port, proto),
                );
                assert_eq!(
                    key(want, &a),
                    key(got, &b),
                    "{what}: {} -> {} {proto} {port}",
                    want.endpoint_name(s),
                    want.endpoint_name(d)
                );
                n += 1;
            }
        }
    }
    n
}

#[test]
fn applying_a_fixture_equals_building_it() {
    let mut judged = 0;
    let files = Set::Semantics
        .files()
        .into_iter()
        .map(|f| (Set::Semantics, f))
        .chain(Set::Tiers.files().into_iter().map(|f| (Set::Tiers, f)));
    for (set, file) in files {
        let name = common::file_name(&file);
        let objects = set.objects(Some(&file));
        // The same Namespaces, Pods and Nodes without any policy; and
        // without its NetworkPolicies only.
        let mut bare = objects.clone();
        bare.policies.clear();
        bare.cluster_policies.clear();
        let mut no_np = objects.clone();
        no_np.policies.clear();
        let bare = Cluster::build(&bare, 1).unwrap();
        let no_np = Cluster::build(&no_np, 1).unwrap();
        let built = Cluster::build(&objects, 1).unwrap();
        let change = ChangeSet {
            policies: objects.policies.clone(),
            cluster_policies: objects.cluster_policies.clone(),
            deletes: Vec::new(),
        };
        let changed = bare.with_policy_changes(&change).unwrap();
        judged += assert_same(&format!("{name}: apply"), &built, &changed);

        // And back: deleting every NetworkPolicy.
        let deletes = built
            .policies()
            .map(|(_, p)| PolicyKey {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect();
        let emptied = built
            .with_policy_changes(&ChangeSet {
                deletes,
                ..ChangeSet::default()
            })
            .unwrap();
        judged += assert_same(&format!("{name}: delete"), &no_np, &emptied);
    }
    assert!(judged > 10_000, "only {judged} verdicts compared");
}

#[test]
fn applying_replaces_the_same_named_policy() {
    let file = Set::Semantics
        .files()
        .into_iter()
        .find(|f| common::file_name(f) == "ports.yaml")
        .unwrap();
    let objects = Set::Semantics.objects(Some(&file));
    let built = Cluster::build(&objects, 1).unwrap();
    // web-ports with only port 80: replaced, not added beside the old one.
    let mut np = objects
        .policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web-ports"))
        .unwrap()
        .clone();
    let spec = np.spec.as_mut().unwrap();
    spec.ingress.as_mut().unwrap().truncate(1);
    let changed = built
        .with_policy_changes(&ChangeSet {
            policies: vec![np.clone()],
            ..ChangeSet::default()
        })
        .unwrap();
    assert_eq!(changed.policies().count(), built.policies().count());
    let mut expected = objects.clone();
    for p in &mut expected.policies {
        if p.metadata.name == np.metadata.name {
            *p = np.clone();
        }
    }
    assert_same(
        "replace web-ports",
        &Cluster::build(&expected, 1).unwrap(),
        &changed,
    );
}

#[test]
fn bad_change_sets_are_errors_naming_the_object() {
    let base = Cluster::build(&Set::Semantics.objects(None), 1).unwrap();
    let err = base
        .with_policy_changes(&ChangeSet {
            deletes: vec!["prod/nope".parse().unwrap()],
            ..ChangeSet::default()
        })
        .unwrap_err();
    assert!(matches!(err, WhatIfError::NoSuchPolicy { .. }));
    assert_eq!(
        err.to_string(),
        "cannot delete NetworkPolicy prod/nope: no such policy is in force"
    );

    let bad: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bad", "namespace": "prod"},
            "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}
        }))
        .unwrap();
    let err = base
        .with_policy_changes(&ChangeSet {
            policies: vec![bad],
            ..ChangeSet::default()
        })
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "the proposed change is invalid: NetworkPolicy prod/bad: unknown policyType `Sideways`"
        ),
        "{err}"
    );
}
