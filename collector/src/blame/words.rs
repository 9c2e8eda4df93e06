//! A change of cluster object in words, rule by rule: "prod/db-ingress
//! ingress rule 0 lost the peer namespaceSelector team=a".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::history::pod_ips;

/// A rule of either direction: its peers (`from` or `to`) and ports.
struct RuleView<'a> {
    peers: &'a [NetworkPolicyPeer],
    ports: &'a [NetworkPolicyPort],
}

impl RuleView<'_> {
    fn describe(&self, direction: &str) -> String {
        let word = if direction == "ingress" { "from" } else { "to" };
        format!(
            "{word} {}, {}",
            list(&peer_words(self.peers)),
            list(&port_words(self.ports))
        )
    }
}

fn rules<'a>(spec: &'a NetworkPolicySpec, direction: &str) -> Vec<RuleView<'a>> {
    if direction == "ingress" {
        spec.ingress
            .iter()
            .flatten()
            .map(|r| RuleView {
                peers: r.from.as_deref().unwrap_or_default(),
                ports: r.ports.as_deref().unwrap_or_default(),
            })
            .collect()
    } else {
        spec.egress
            .iter()
            .flatten()
            .map(|r| RuleView {
                peers: r.to.as_deref().unwrap_or_default(),
                ports: r.ports.as_deref().unwrap_or_default(),
            })
            .collect()
    }
}

/// What changed in a NetworkPolicy, in words: its creation or deletion
/// with what it says, else each changed field and rule.
pub(crate) fn policy(
    key: &str,
    before: Option<&NetworkPolicy>,
    after: Option<&NetworkPolicy>,
) -> String {
    let spec = |p: Option<&NetworkPolicy>| p.map(|p| p.spec.clone().unwrap_or_default());
    match (spec(before), spec(after)) {
        (None, None) => format!("{key} did not exist"),
        (None, Some(a)) => format!("{key} was created: {}", summary(&a)),
        (Some(b), None) => format!("{key} was deleted (it said: {})", summary(&b)),
        (Some(b), Some(a)) => {
            let parts = spec_changes(key, &b, &a);
            if parts.is_empty() {
                format!("{key} was modified (no change policies look at)")
            } else {
                parts.join("; ")
            }
        }
    }
}

/// The whole of a spec in a sentence.
fn summary(spec: &NetworkPolicySpec) -> String {
    let mut parts = vec![format!("podSelector {}", pod_selector(spec))];
    for direction in isolated(spec) {
        let rules = rules(spec, direction);
        if rules.is_empty() {
            parts.push(format!("{direction}: no rule (denies all)"));
        }
        for (i, r) in rules.iter().enumerate() {
            parts.push(format!("{direction} rule {i} {}", r.describe(direction)));
        }
    }
    parts.join("; ")
}

/// The directions a spec isolates, as Kubernetes defaults `policyTypes`.
fn isolated(spec: &NetworkPolicySpec) -> Vec<&'static str> {
    match &spec.policy_types {
        Some(types) => ["ingress", "egress"]
            .into_iter()
            .filter(|d| types.iter().any(|t| t.eq_ignore_ascii_case(d)))
            .collect(),
        None if spec.egress.is_some() => vec!["ingress", "egress"],
        None => vec!["ingress"],
    }
}

fn spec_changes(key: &str, b: &NetworkPolicySpec, a: &NetworkPolicySpec) -> Vec<String> {
    let mut parts = Vec::new();
    if b.pod_selector != a.pod_selector {
        parts.push(format!(
            "{key} podSelector {} → {}",
            pod_selector(b),
            pod_selector(a)
        ));
    }
    let (bi, ai) = (isolated(b), isolated(a));
    if bi != ai {
        parts.push(format!(
            "{key} now isolates {} (was {})",
            list(&ai.iter().map(ToString::to_string).collect::<Vec<_>>()),
            list(&bi.iter().map(ToString::to_string).collect::<Vec<_>>())
        ));
    }
    for direction in ["ingress", "egress"] {
        let (br, ar) = (rules(b, direction), rules(a, direction));
        for i in 0..br.len().max(ar.len()) {
            match (br.get(i), ar.get(i)) {
                (Some(x), Some(y)) => parts.extend(rule_changes(key, direction, i, x, y)),
                (Some(x), None) => parts.push(format!(
                    "{key} {direction} rule {i} ({}) was removed",
                    x.describe(direction)
                )),
                (None, Some(y)) => parts.push(format!(
                    "{key} {direction} rule {i} ({}) was added",
                    y.describe(direction)
                )),
                (None, None) => {}
            }
        }
    }
    parts
}

fn rule_changes(key: &str, direction: &str, i: usize, b: &RuleView, a: &RuleView) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{key} {direction} rule {i}");
    let (bp, ap) = (peer_words(b.peers), peer_words(a.peers));
    for lost in bp.iter().filter(|p| !ap.contains(p)) {
        out.push(format!("{prefix} lost the peer {lost}"));
    }
    for gained in ap.iter().filter(|p| !bp.contains(p)) {
        out.push(format!("{prefix} gained the peer {gained}"));
    }
    let (bp, ap) = (port_words(b.ports), port_words(a.ports));
    for lost in bp.iter().filter(|p| !ap.contains(p)) {
        out.push(format!("{prefix} lost the port {lost}"));
    }
    for gained in ap.iter().filter(|p| !bp.contains(p)) {
        out.push(format!("{prefix} gained the port {gained}"));
    }
    out
}

/// Each peer in words; no peer at all means every peer.
fn peer_words(peers: &[NetworkPolicyPeer]) -> Vec<String> {
    if peers.is_empty() {
        return vec!["(any: the rule names no peer)".into()];
    }
    peers.iter().map(peer).collect()
}

fn peer(p: &NetworkPolicyPeer) -> String {
    let mut parts = Vec::new();
    if let Some(block) = &p.ip_block {
        let except = block.except.as_deref().unwrap_or_default();
        if except.is_empty() {
            parts.push(format!("ipBlock {}", block.cidr));
        } else {
            parts.push(format!(
                "ipBlock {} except {}",
                block.cidr,
                except.join(",")
            ));
        }
    }
    if p.namespace_selector.is_some() {
        parts.push(format!(
            "namespaceSelector {}",
            selector(p.namespace_selector.as_ref())
        ));
    }
    if p.pod_selector.is_some() {
        parts.push(format!("podSelector {}", selector(p.pod_selector.as_ref())));
    }
    if parts.is_empty() {
        "(an empty peer, which matches nothing)".into()
    } else {
        parts.join(" + ")
    }
}

fn port_words(ports: &[NetworkPolicyPort]) -> Vec<String> {
    if ports.is_empty() {
        return vec!["(any: the rule names no port)".into()];
    }
    ports.iter().map(port).collect()
}

fn port(p: &NetworkPolicyPort) -> String {
    let protocol = p.protocol.as_deref().unwrap_or("TCP");
    let number = match (&p.port, p.end_port) {
        (None, _) => "every port".to_owned(),
        (Some(IntOrString::Int(n)), Some(end)) => format!("{n}-{end}"),
        (Some(IntOrString::Int(n)), None) => n.to_string(),
        (Some(IntOrString::String(name)), _) => name.clone(),
    };
    format!("{protocol} {number}")
}

/// A policy's podSelector; left out, it selects every pod of the namespace.
fn pod_selector(spec: &NetworkPolicySpec) -> String {
    match &spec.pod_selector {
        Some(s) => selector(Some(s)),
        None => "{} (all)".into(),
    }
}

/// A label selector as `k=v,k2 In (a,b)`; `{}` selects everything.
fn selector(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else {
        return "(none)".into();
    };
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        parts.push(if values.is_empty() {
            format!("{} {}", e.key, e.operator)
        } else {
            format!("{} {} ({})", e.key, e.operator, values.join(","))
        });
    }
    if parts.is_empty() {
        "{} (all)".into()
    } else {
        parts.join(",")
    }
}

/// Labels as `k=v,k2=v2`.
pub(crate) fn labels(l: Option<&BTreeMap<String, String>>) -> String {
    match l {
        None => "(none: the object did not exist)".into(),
        Some(l) if l.is_empty() => "{}".into(),
        Some(l) => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// What changed of a pod that policies look at: labels and addresses.
pub(crate) fn pod(
    namespace: &str,
    name: &str,
    before: Option<&Pod>,
    after: Option<&Pod>,
) -> String {
    let key = format!("{namespace}/{name}");
    match (before, after) {
        (None, None) => format!("pod {key} did not exist"),
        (None, Some(a)) => format!(
            "pod {key} appeared with labels {} and IPs {}",
            labels(a.metadata.labels.as_ref()),
            list(&pod_ips(a))
        ),
        (Some(b), None) => format!(
            "pod {key} went away (labels {}, IPs {})",
            labels(b.metadata.labels.as_ref()),
            list(&pod_ips(b))
        ),
        (Some(b), Some(a)) => {
            let mut parts = Vec::new();
            if b.metadata.labels != a.metadata.labels {
                parts.push(format!(
                    "pod {key} labels {} → {}",
                    labels(b.metadata.labels.as_ref()),
                    labels(a.metadata.labels.as_ref())
                ));
            }
            let (bi, ai) = (pod_ips(b), pod_ips(a));
            if bi != ai {
                parts.push(format!("pod {key} IPs {} → {}", list(&bi), list(&ai)));
            }
            if parts.is_empty() {
                format!("pod {key} changed (ports, node or owner)")
            } else {
                parts.join("; ")
            }
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(yaml: &str) -> NetworkPolicy {
        serde_norway::from_str(yaml).expect("policy yaml")
    }

    const BEFORE: &str = r#"
metadata: {name: allow-same-namespace, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}, {podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
"#;

    #[test]
    fn a_lost_peer_and_a_changed_port_are_named_per_rule() {
        let after = BEFORE
            .replace("{namespaceSelector: {matchLabels: {team: a}}}, ", "")
            .replace("port: 5432", "port: 5433, protocol: TCP");
        let words = policy(
            "prod/allow-same-namespace",
            Some(&np(BEFORE)),
            Some(&np(&after)),
        );
        assert_eq!(
            words,
            "prod/allow-same-namespace ingress rule 0 lost the peer namespaceSelector team=a; \
             prod/allow-same-namespace ingress rule 0 lost the port TCP 5432; \
             prod/allow-same-namespace ingress rule 0 gained the port TCP 5433"
        );
    }

    #[test]
    fn created_deleted_added_and_isolation_changes_read_as_sentences() {
        let p = np(BEFORE);
        assert_eq!(
            policy("prod/p", None, Some(&p)),
            "prod/p was created: podSelector app=db; ingress rule 0 from namespaceSelector team=a, \
             podSelector app=web, TCP 5432"
        );
        assert!(policy("prod/p", Some(&p), None).starts_with("prod/p was deleted (it said: "));
        let more = np(&format!(
            "{BEFORE}  - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]\n  policyTypes: [Ingress, Egress]\n"
        ));
        assert_eq!(
            policy("prod/p", Some(&p), Some(&more)),
            "prod/p now isolates ingress, egress (was ingress); prod/p ingress rule 1 (from ipBlock \
             10.0.0.0/8 except 10.1.0.0/16, (any: the rule names no port)) was added"
        );
        let same = np(&BEFORE.replace("prod}", "prod, labels: {x: y}}"));
        assert_eq!(
            policy("prod/p", Some(&p), Some(&same)),
            "prod/p was modified (no change policies look at)"
        );
    }

    #[test]
    fn pod_label_and_address_changes_are_both_named() {
        let pod = |labels: &str, ip: &str| -> Pod {
            serde_norway::from_str(&format!(
                "metadata: {{name: web, namespace: prod, labels: {{{labels}}}}}\nstatus: {{podIP: {ip}}}"
            ))
            .expect("pod yaml")
        };
        let (b, a) = (pod("app: web", "10.0.0.1"), pod("app: api", "10.0.0.2"));
        assert_eq!(
            super::pod("prod", "web", Some(&b), Some(&a)),
            "pod prod/web labels app=web → app=api; pod prod/web IPs 10.0.0.1 → 10.0.0.2"
        );
        let moved = pod("app: web", "10.0.0.9");
        assert_eq!(
            super::pod("prod", "web", Some(&b), Some(&moved)),
            "pod prod/web IPs 10.0.0.1 → 10.0.0.9"
        );
    }
}
