//! Suggestions for every denial in the fixtures: the first one, applied as
//! the YAML it renders, makes the engine say allowed, and a what-if over
//! every connection among the fixture's endpoints shows it changes nothing
//! beyond what `also_admits` (and `also_denies`) list.

mod common;

use std::collections::BTreeSet;

use common::{PORTS, Set, endpoints};
use flowgate_policy::{
    ChangeSet, Cluster, ClusterObjects, Endpoint, NoSuggestion, ObservedConnection,
    ObservedEndpoint, ObservedPod, OtherConnection, SuggestedEdit, Suggestion, Tier, what_if,
};

/// Every endpoint pair on every port: the "observed window" of a fixture.
fn observed_everything(c: &Cluster) -> Vec<ObservedConnection> {
    let ends = endpoints(c);
    let observed = |e: &Endpoint| ObservedEndpoint {
        ip: e.ip,
        pod: e.pod.map(|p| {
            let p = c.pod(p);
            ObservedPod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                labels: p.labels.clone(),
            }
        }),
    };
    let mut out = Vec::new();
    for s in &ends {
        for d in &ends {
            if s.ip.is_ipv4() != d.ip.is_ipv4() {
                continue;
            }
            for (port, protocol) in PORTS {
                out.push(ObservedConnection {
                    src: observed(s),
                    dst: observed(d),
                    port,
                    protocol,
                    flows: 1,
                    last_seen_ns: 0,
                });
            }
        }
    }
    out
}

fn key(c: &OtherConnection) -> (String, String, u16, String) {
    (c.src.clone(), c.dst.clone(), c.port, c.protocol.to_string())
}

/// Applies the suggestion's YAML (what a person pastes into kubectl) and
/// asks the engine again, from the objects.
fn allowed_after(
    objects: &ClusterObjects,
    s: &Suggestion,
    from: &str,
    to: &str,
    case: &common::Case,
) -> Result<bool, String> {
    let mut change = ChangeSet::default();
    change
        .add_yaml("suggestion", &s.yaml)
        .map_err(|e| format!("the YAML does not read back: {e}\n{}", s.yaml))?;
    if change.policies.len() != s.policies.len() {
        return Err(format!(
            "the YAML holds {} policies, not {}",
            change.policies.len(),
            s.policies.len()
        ));
    }
    let changed = change.apply(objects).map_err(|e| e.to_string())?;
    let cluster = Cluster::build(&changed, 2).map_err(|e| format!("invalid: {e}"))?;
    let (src, dst) = (
        common::endpoint(&cluster, from),
        common::endpoint(&cluster, to),
    );
    Ok(cluster
        .explain(&src, &dst, case.port, case.protocol())
        .allowed)
}

#[test]
fn the_first_suggestion_admits_every_fixture_denial_and_nothing_unlisted() {
    let mut failures = Vec::new();
    let (mut fixed, mut admin, mut judged_all) = (0, 0, 0);
    let files = Set::Semantics
        .files()
        .into_iter()
        .map(|f| (Set::Semantics, f))
        .chain(Set::Tiers.files().into_iter().map(|f| (Set::Tiers, f)));
    for (set, file) in files {
        let name = common::file_name(&file);
        let objects = set.objects(Some(&file));
        let cluster = Cluster::build(&objects, 1).unwrap();
        let observed = observed_everything(&cluster);
        for case in common::cases(&file).into_iter().filter(|c| !c.allowed) {
            let what = case.name(&name);
            let (src, dst) = (
                common::endpoint(&cluster, &case.from),
                common::endpoint(&cluster, &case.to),
            );
            let mut s = cluster.suggest(&src, &dst, case.port, case.protocol());
            match &s.none {
                Some(NoSuggestion::AdminDeny { message, rules }) => {
                    let e = cluster.explain(&src, &dst, case.port, case.protocol());
                    let admin_denies = [&e.egress, &e.ingress]
                        .iter()
                        .any(|d| !d.allowed && d.tier == Tier::Admin);
                    if !admin_denies
                        || rules.is_empty()
                        || !message.contains("no NetworkPolicy can admit")
                    {
                        failures.push(format!(
                            "{what}: AdminDeny without an Admin denial: {message}"
                        ));
                    }
                    admin += 1;
                    continue;
                }
                Some(other) => {
                    failures.push(format!("{what}: no suggestion: {}", other.message()));
                    continue;
                }
                None => {}
            }
            s.judge_observed(&objects, &observed).unwrap();
            for (i, sug) in s.suggestions.iter().enumerate() {
                match allowed_after(&objects, sug, &case.from, &case.to, &case) {
                    Ok(true) => {}
                    Ok(false) => failures.push(format!(
                        "{what}: suggestion {i} does not admit it: {}\n{}",
                        sug.summary, sug.yaml
                    )),
                    Err(e) => failures.push(format!("{what}: suggestion {i}: {e}")),
                }
                for np in &sug.policies {
                    let json = serde_json::to_value(np).unwrap();
                    if json["apiVersion"] != "networking.k8s.io/v1"
                        || json["kind"] != "NetworkPolicy"
                        || json["metadata"].get("resourceVersion").is_some()
                    {
                        failures.push(format!(
                            "{what}: suggestion {i}: not an applyable object: {json}"
                        ));
                    }
                }
                // In-cluster peers by selectors only: no added address of
                // a pod that selectors can match.
                let pod_ips: BTreeSet<String> = cluster
                    .pods()
                    .filter(|(_, p)| p.selectable())
                    .flat_map(|(_, p)| p.ips.iter().map(|ip| ip.to_string()))
                    .collect();
                for cidr in added_cidrs(&objects, sug) {
                    let ip = cidr.split('/').next().unwrap_or_default();
                    if pod_ips.contains(ip) {
                        failures.push(format!(
                            "{what}: suggestion {i} names pod address {cidr}:\n{}",
                            sug.yaml
                        ));
                    }
                }
            }
            let first = &s.suggestions[0];
            // The what-if core, from the objects: exactly what the
            // suggestion says it admits (and denies) besides the case.
            let w = what_if(&objects, &first.change(), &observed).unwrap();
            let target = (
                case.from.clone(),
                case.to.clone(),
                case.port,
                case.protocol().to_string(),
            );
            let flipped =
                |v: &[flowgate_policy::VerdictChange]| -> BTreeSet<(String, String, u16, String)> {
                    v.iter()
                        .map(|c| (c.src.clone(), c.dst.clone(), c.port, c.protocol.to_string()))
                        .filter(|k| *k != target)
                        .collect()
                };
            let listed: BTreeSet<_> = first
                .also_admits
                .as_ref()
                .unwrap()
                .iter()
                .map(key)
                .collect();
            if flipped(&w.newly_allowed) != listed {
                failures.push(format!(
                    "{what}: also_admits {listed:?}, but the what-if newly allows {:?}",
                    flipped(&w.newly_allowed)
                ));
            }
            let denies: BTreeSet<_> = first.also_denies.iter().map(key).collect();
            if flipped(&w.newly_denied) != denies {
                failures.push(format!(
                    "{what}: also_denies {denies:?}, what-if {:?}",
                    flipped(&w.newly_denied)
                ));
            }
            if !denies.is_empty() && first.newly_isolates.is_empty() {
                failures.push(format!("{what}: denies {denies:?} without isolating a pod"));
            }
            // Ranked by blast radius.
            let radius =
                |s: &Suggestion| (s.also_denies.len(), s.also_admits.as_ref().unwrap().len());
            if s.suggestions
                .windows(2)
                .any(|w| radius(&w[0]) > radius(&w[1]))
            {
                failures.push(format!("{what}: not ranked by blast radius"));
            }
            fixed += 1;
            judged_all += w.connections_judged;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{fixed} denials fixed, {admin} Admin denials explained, {judged_all} observed connections judged"
    );
    assert!(fixed >= 40, "only {fixed} denials");
    assert!(admin >= 2, "only {admin} Admin-tier denials");
}

/// The ipBlock CIDRs a suggestion adds to the objects in force.
fn added_cidrs(objects: &ClusterObjects, s: &Suggestion) -> Vec<String> {
    let cidrs = |np: &k8s_openapi::api::networking::v1::NetworkPolicy| -> Vec<String> {
        let v = serde_json::to_value(np).unwrap();
        let mut out = Vec::new();
        for dir in ["ingress", "egress"] {
            for rule in v["spec"][dir].as_array().into_iter().flatten() {
                for peer in rule["from"]
                    .as_array()
                    .or(rule["to"].as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = peer["ipBlock"]["cidr"].as_str() {
                        out.push(c.to_string());
                    }
                }
            }
        }
        out
    };
    let mut out = Vec::new();
    for np in &s.policies {
        let before = objects
            .policies
            .iter()
            .find(|p| {
                p.metadata.name == np.metadata.name && p.metadata.namespace == np.metadata.namespace
            })
            .map(cidrs)
            .unwrap_or_default();
        out.extend(cidrs(np).into_iter().filter(|c| !before.contains(c)));
    }
    out
}

fn fixture(set: Set, file: &str) -> (ClusterObjects, Cluster) {
    let path = set
        .files()
        .into_iter()
        .find(|f| common::file_name(f) == file)
        .unwrap();
    let objects = set.objects(Some(&path));
    let cluster = Cluster::build(&objects, 1).unwrap();
    (objects, cluster)
}

fn suggest(c: &Cluster, from: &str, to: &str, port: u16) -> flowgate_policy::Suggestions {
    let (s, d) = (common::endpoint(c, from), common::endpoint(c, to));
    c.suggest(&s, &d, port, flowgate_policy::Protocol::Tcp)
}

#[test]
fn a_missing_peer_widens_the_nearest_rule_by_namespace_and_workload_labels() {
    let (_, c) = fixture(Set::Semantics, "both-ends.yaml");
    // web admits only namespace `other`; dev/client is missing.
    let s = suggest(&c, "dev/client", "prod/web", 80);
    let first = &s.suggestions[0];
    assert_eq!(
        first.edits,
        [SuggestedEdit::AddPeer {
            direction: flowgate_policy::Direction::Ingress,
            policy: flowgate_policy::PolicyRef {
                namespace: "prod".into(),
                name: "web-from-other".into()
            },
            rule_index: 0,
        }]
    );
    assert!(
        first.yaml.contains("kubernetes.io/metadata.name: dev"),
        "{}",
        first.yaml
    );
    assert!(first.yaml.contains("app: client"), "{}", first.yaml);
    assert!(
        !first.yaml.contains("10.0.2.1") && !first.yaml.contains("name: client\n"),
        "{}",
        first.yaml
    );
    assert!(
        first
            .summary
            .contains("widen prod/web-from-other ingress rule 0"),
        "{}",
        first.summary
    );
    // The alternative: a new policy for web.
    assert!(
        s.suggestions
            .iter()
            .any(|s| matches!(s.edits[..], [SuggestedEdit::NewPolicy { .. }]))
    );
}

#[test]
fn both_directions_denying_get_one_fix_each() {
    let (_, c) = fixture(Set::Semantics, "both-ends.yaml");
    // other/tool's egress is denied by deny-clients (no rules: not close),
    // web's ingress admits namespace other: only egress denies here.
    let s = suggest(&c, "other/tool", "prod/web", 80);
    assert!(s.suggestions.iter().all(|s| s.edits.len() == 1));
    // dev/client → prod/db: client's egress admits only web; db is not
    // isolated. One fix, egress.
    let s = suggest(&c, "dev/client", "prod/db", 5432);
    assert!(s.suggestions.iter().all(|s| matches!(
        &s.edits[..],
        [SuggestedEdit::AddPeer {
            direction: flowgate_policy::Direction::Egress,
            ..
        } | SuggestedEdit::NewPolicy {
            direction: flowgate_policy::Direction::Egress,
            ..
        }]
    )));
    let mut both = 0;
    for file in Set::Semantics.files() {
        let c = Cluster::build(&Set::Semantics.objects(Some(&file)), 1).unwrap();
        let ends = endpoints(&c);
        for s in &ends {
            for d in &ends {
                for (port, protocol) in PORTS {
                    let v = c.verdict(s, d, port, protocol);
                    if v.egress.allowed || v.ingress.allowed {
                        continue;
                    }
                    both += 1;
                    let sug = c.suggest(s, d, port, protocol);
                    let first = &sug.suggestions[0];
                    let dirs: BTreeSet<String> = first
                        .edits
                        .iter()
                        .map(|e| match e {
                            SuggestedEdit::AddPeer { direction, .. }
                            | SuggestedEdit::AddPort { direction, .. }
                            | SuggestedEdit::NewPolicy { direction, .. } => direction.to_string(),
                        })
                        .collect();
                    assert_eq!(
                        dirs,
                        BTreeSet::from(["egress".to_string(), "ingress".to_string()]),
                        "{}",
                        first.summary
                    );
                }
            }
        }
    }
    assert!(both > 0, "no fixture has a connection denied both ways");
}

#[test]
fn a_missing_port_is_added_to_the_rule_that_admits_the_peer() {
    let (_, c) = fixture(Set::Semantics, "ports.yaml");
    let s = suggest(&c, "other/tool", "prod/web", 9090);
    let first = &s.suggestions[0];
    assert!(
        matches!(
            first.edits[..],
            [SuggestedEdit::AddPort { rule_index: 0, .. }]
        ),
        "{}",
        first.summary
    );
    assert!(first.summary.contains("add TCP 9090"), "{}", first.summary);
}

#[test]
fn an_admin_deny_is_said_to_be_out_of_networkpolicy_reach() {
    let (_, c) = fixture(Set::Tiers, "actions.yaml");
    let ends = endpoints(&c);
    let mut denied = Vec::new();
    for s in &ends {
        for d in &ends {
            for (port, protocol) in PORTS {
                let v = c.verdict(s, d, port, protocol);
                if [v.egress, v.ingress]
                    .iter()
                    .any(|d| !d.allowed && d.tier == Tier::Admin)
                {
                    denied.push((*s, *d, port, protocol));
                }
            }
        }
    }
    assert!(!denied.is_empty());
    for (s, d, port, protocol) in denied {
        let sug = c.suggest(&s, &d, port, protocol);
        assert!(sug.suggestions.is_empty());
        let Some(NoSuggestion::AdminDeny { rules, message }) = &sug.none else {
            panic!("{:?}", sug.none);
        };
        assert!(!rules.is_empty());
        assert!(
            message.contains("Change the cluster policy instead"),
            "{message}"
        );
    }
}

#[test]
fn an_allowed_connection_needs_nothing() {
    let (_, c) = fixture(Set::Semantics, "ports.yaml");
    let s = suggest(&c, "other/tool", "prod/web", 80);
    assert!(s.suggestions.is_empty());
    assert!(matches!(s.none, Some(NoSuggestion::Allowed)));
}

#[test]
fn a_baseline_deny_gets_a_new_policy_that_says_what_it_isolates() {
    let (objects, c) = fixture(Set::Tiers, "baseline.yaml");
    let mut s = suggest(&c, "dev/client", "prod/db", 80);
    s.judge_observed(&objects, &observed_everything(&c))
        .unwrap();
    let first = &s.suggestions[0];
    assert!(matches!(first.edits[..], [SuggestedEdit::NewPolicy { .. }]));
    assert!(
        first.newly_isolates.contains(&"prod/db".to_string()),
        "{:?}",
        first.newly_isolates
    );
    // prod/web → prod/db was allowed by the baseline; isolating db denies it.
    assert!(
        first
            .also_denies
            .iter()
            .any(|c| c.src == "prod/web" && c.dst == "prod/db"),
        "{:?}",
        first.also_denies
    );
    assert!(
        first
            .summary
            .contains("it also isolates prod/db for ingress"),
        "{}",
        first.summary
    );
}
