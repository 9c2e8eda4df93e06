//! Lint: the NetworkPolicy best practices (default deny per namespace, no
//! stale selectors, no rules Kubernetes ignores, no duplicate policies, DNS
//! kept open under egress isolation…) checked against a cluster snapshot.
//!
//! Every [`Finding`] says what is wrong and how to fix it, for the person who
//! writes the policies. [`lint`] needs only the snapshot; [`rule_never_hit`]
//! also needs to know which rules admitted traffic (the collector has that).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::cluster::Cluster;
use crate::model::{
    Direction, NamedPort, Peer, PodId, PodInfo, PolicyId, PolicyInfo, PortSpec, Protocol, Rule,
};
use crate::selector::{Labels, Selector};

/// How bad a finding is. `Error`: the policies certainly do not do what
/// their author meant (a CI pipeline should fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// The lint rules, by their stable ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LintRule {
    NamespaceWithoutDefaultDeny,
    SelectorMatchesNothing,
    InertRules,
    IpblockCoversPods,
    NamedPortUnresolved,
    DuplicatePolicy,
    EgressWithoutDns,
    RuleNeverHit,
}

impl LintRule {
    pub const ALL: [LintRule; 8] = [
        LintRule::NamespaceWithoutDefaultDeny,
        LintRule::SelectorMatchesNothing,
        LintRule::InertRules,
        LintRule::IpblockCoversPods,
        LintRule::NamedPortUnresolved,
        LintRule::DuplicatePolicy,
        LintRule::EgressWithoutDns,
        LintRule::RuleNeverHit,
    ];

    pub fn id(self) -> &'static str {
        match self {
            LintRule::NamespaceWithoutDefaultDeny => "namespace-without-default-deny",
            LintRule::SelectorMatchesNothing => "selector-matches-nothing",
            LintRule::InertRules => "inert-rules",
            LintRule::IpblockCoversPods => "ipblock-covers-pods",
            LintRule::NamedPortUnresolved => "named-port-unresolved",
            LintRule::DuplicatePolicy => "duplicate-policy",
            LintRule::EgressWithoutDns => "egress-without-dns",
            LintRule::RuleNeverHit => "rule-never-hit",
        }
    }
}

impl fmt::Display for LintRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: LintRule,
    pub severity: Severity,
    pub namespace: String,
    /// The policy's name (in `namespace`), when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// Whether any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Every finding of every rule that needs only the cluster (all but
/// `rule-never-hit`), most severe first.
pub fn lint(cluster: &Cluster) -> Vec<Finding> {
    let mut out = Vec::new();
    namespace_without_default_deny(cluster, &mut out);
    selector_matches_nothing(cluster, &mut out);
    inert_rules(cluster, &mut out);
    ipblock_covers_pods(cluster, &mut out);
    named_port_unresolved(cluster, &mut out);
    duplicate_policy(cluster, &mut out);
    egress_without_dns(cluster, &mut out);
    sort(&mut out);
    out
}

/// `rule-never-hit`: every rule of an isolated direction for which `hit`
/// (namespace, policy, direction, rule index) says no traffic was admitted
/// during `window` (e.g. "the last 7 days").
pub fn rule_never_hit(
    cluster: &Cluster,
    window: &str,
    hit: impl Fn(&str, &str, Direction, u32) -> bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (_, p) in cluster.policies() {
        for direction in [Direction::Ingress, Direction::Egress] {
            for index in 0..p.rules(direction).len() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                if hit(&p.namespace, &p.name, direction, index) {
                    continue;
                }
                out.push(finding(
                    LintRule::RuleNeverHit,
                    Severity::Info,
                    p,
                    format!(
                        "{direction} rule {index} of {} admitted no flow in {window}",
                        p.key()
                    ),
                    "if the traffic it was written for is gone, delete the rule (fewer rules are easier to audit); \
                     if that traffic should flow, check the rule's selectors and ports against the pods' labels and ports"
                        .into(),
                ));
            }
        }
    }
    sort(&mut out);
    out
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (a.severity, &a.namespace, &a.policy, a.rule, &a.message).cmp(&(
            b.severity,
            &b.namespace,
            &b.policy,
            b.rule,
            &b.message,
        ))
    });
}

fn finding(
    rule: LintRule,
    severity: Severity,
    policy: &PolicyInfo,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        rule,
        severity,
        namespace: policy.namespace.clone(),
        policy: Some(policy.name.clone()),
        message,
        fix,
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

fn policy_type(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

/// `a, b, c and 4 more`.
fn list<S: AsRef<str>>(items: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn pod_names(cluster: &Cluster, pods: &[PodId]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            let p = cluster.pod(*p);
            format!("{}/{}", p.namespace, p.name)
        })
        .collect()
}

/// Pods policies can select, by namespace.
fn pods_by_namespace(cluster: &Cluster) -> BTreeMap<&str, Vec<PodId>> {
    let mut by_ns: BTreeMap<&str, Vec<PodId>> = BTreeMap::new();
    for (id, p) in cluster.pods() {
        if p.selectable() && !p.terminated {
            by_ns.entry(p.namespace.as_str()).or_default().push(id);
        }
    }
    by_ns
}

fn namespace_without_default_deny(cluster: &Cluster, out: &mut Vec<Finding>) {
    for (ns, pods) in pods_by_namespace(cluster) {
        for direction in DIRECTIONS {
            let has_default = cluster.policies().any(|(_, p)| {
                p.namespace == ns && p.isolates(direction) && p.pod_selector.is_empty()
            });
            if has_default {
                continue;
            }
            let open: Vec<PodId> = pods
                .iter()
                .copied()
                .filter(|p| cluster.isolating_policies(*p, direction).is_empty())
                .collect();
            let (verb, severity) = match direction {
                Direction::Ingress => ("accept traffic from", Severity::Warning),
                // Egress default deny is good practice but less common, and
                // costs the DNS and API-server exceptions: a hint, not a warning.
                Direction::Egress => ("send traffic to", Severity::Info),
            };
            let message = if open.is_empty() {
                format!(
                    "namespace {ns} has no default-deny {direction} policy: every pod is isolated today by policies that select it by label, but a new pod with other labels will {verb} anywhere"
                )
            } else {
                format!(
                    "namespace {ns} has no default-deny {direction} policy: {} of its {} ({}) no policy selects for {direction}, so they {verb} anywhere",
                    open.len(),
                    plural(pods.len(), "pod"),
                    list(&pod_names(cluster, &open)),
                )
            };
            out.push(Finding {
                rule: LintRule::NamespaceWithoutDefaultDeny,
                severity,
                namespace: ns.to_string(),
                policy: None,
                message,
                fix: format!(
                    "add a NetworkPolicy in {ns} with `podSelector: {{}}`, `policyTypes: [{}]` and no {direction} rules, then allow what each workload needs with policies of its own",
                    policy_type(direction)
                ),
            });
        }
    }
}

/// `app in (frontend, backend)` for each key of the selector, from the
/// values the candidates carry: the likely typo is next to them.
fn label_hint(selector: &Selector, candidates: &[&Labels]) -> String {
    let mut keys: BTreeSet<&str> = selector
        .match_labels()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    for r in selector.expressions() {
        keys.insert(match r {
            crate::selector::Requirement::In { key, .. }
            | crate::selector::Requirement::NotIn { key, .. }
            | crate::selector::Requirement::Exists { key }
            | crate::selector::Requirement::DoesNotExist { key } => key.as_str(),
        });
    }
    let parts: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let values: BTreeSet<&str> = candidates
                .iter()
                .filter_map(|l| l.get(k).map(String::as_str))
                .collect();
            if values.is_empty() {
                format!("none has a label {k}")
            } else {
                format!(
                    "{k} is one of ({})",
                    values.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
        })
        .collect();
    parts.join("; ")
}

fn selector_matches_nothing(cluster: &Cluster, out: &mut Vec<Finding>) {
    let by_ns = pods_by_namespace(cluster);
    for (id, p) in cluster.policies() {
        if !p.pod_selector.is_empty() && cluster.selected_pods(id).is_empty() {
            let pods = by_ns
                .get(p.namespace.as_str())
                .map_or(&[][..], Vec::as_slice);
            let labels: Vec<&Labels> = pods.iter().map(|pod| &cluster.pod(*pod).labels).collect();
            let hint = if pods.is_empty() {
                format!("namespace {} has no pods", p.namespace)
            } else {
                format!(
                    "among the pods of {}, {}",
                    p.namespace,
                    label_hint(&p.pod_selector, &labels)
                )
            };
            out.push(finding(
                LintRule::SelectorMatchesNothing,
                Severity::Warning,
                p,
                format!(
                    "{} has podSelector {} which selects no pod ({hint}): the policy protects nothing",
                    p.key(),
                    p.pod_selector
                ),
                "correct the podSelector to labels the pods carry (`kubectl get pods --show-labels` shows them), or delete the policy if its workload is gone".into(),
            ));
        }
        for direction in DIRECTIONS {
            for (index, rule) in p.rules(direction).iter().enumerate() {
                for peer in &rule.peers {
                    if let Some(message) = peer_matches_nothing(cluster, id, p, peer) {
                        out.push(finding(
                            LintRule::SelectorMatchesNothing,
                            Severity::Warning,
                            p,
                            format!("{direction} rule {index} of {}: {message}", p.key()),
                            "correct the selector to labels that exist (a typo or a renamed label is the usual cause), or remove the peer if what it named is gone".into(),
                        ));
                    }
                }
            }
        }
    }
}

fn peer_matches_nothing(
    cluster: &Cluster,
    id: PolicyId,
    policy: &PolicyInfo,
    peer: &Peer,
) -> Option<String> {
    let Peer::Pods {
        namespace_selector,
        pod_selector,
    } = peer
    else {
        return None;
    };
    let namespaces: Vec<&str> = match namespace_selector {
        None => vec![policy.namespace.as_str()],
        Some(s) => cluster
            .namespaces()
            .filter(|n| s.matches(&n.labels))
            .map(|n| n.name.as_str())
            .collect(),
    };
    if let Some(s) = namespace_selector.as_ref().filter(|s| !s.is_empty())
        && namespaces.is_empty()
    {
        let labels: Vec<&Labels> = cluster.namespaces().map(|n| &n.labels).collect();
        let hint = label_hint(s, &labels);
        return Some(format!(
            "the peer's namespaceSelector {s} selects no namespace (among the namespaces, {hint}), so the peer admits nothing"
        ));
    }
    let s = pod_selector.as_ref().filter(|s| !s.is_empty())?;
    if !cluster.peer_pods(id, peer).is_empty() {
        return None;
    }
    let candidates: Vec<&PodInfo> = cluster
        .pods()
        .map(|(_, p)| p)
        .filter(|p| p.selectable() && namespaces.contains(&p.namespace.as_str()))
        .collect();
    let place = match namespace_selector {
        None => format!("namespace {}", policy.namespace),
        Some(ns) if ns.is_empty() => "any namespace".to_string(),
        Some(ns) => format!("the namespaces matching {ns} ({})", list(&namespaces)),
    };
    let hint = if candidates.is_empty() {
        "there are no pods there".to_string()
    } else {
        let labels: Vec<&Labels> = candidates.iter().map(|p| &p.labels).collect();
        format!("there, {}", label_hint(s, &labels))
    };
    Some(format!(
        "the peer's podSelector {s} selects no pod in {place} ({hint}), so the peer admits nothing"
    ))
}

fn inert_rules(cluster: &Cluster, out: &mut Vec<Finding>) {
    for (_, p) in cluster.policies() {
        let Some(spec) = &p.object.spec else { continue };
        // Without policyTypes Kubernetes derives them from the rules present,
        // so no rule can be left out.
        let Some(types) = &spec.policy_types else {
            continue;
        };
        let counts = [
            (
                Direction::Ingress,
                spec.ingress.as_ref().map_or(0, Vec::len),
            ),
            (Direction::Egress, spec.egress.as_ref().map_or(0, Vec::len)),
        ];
        for (direction, n) in counts {
            if n == 0 || types.iter().any(|t| t == policy_type(direction)) {
                continue;
            }
            out.push(finding(
                LintRule::InertRules,
                Severity::Error,
                p,
                format!(
                    "{} has {} but its policyTypes is [{}]: Kubernetes ignores the rules of a direction policyTypes leaves out, so these never apply",
                    p.key(),
                    plural(n, &format!("{direction} rule")),
                    types.join(", ")
                ),
                format!(
                    "add {} to policyTypes if these rules should govern {direction} traffic (the selected pods then become isolated for {direction}: only what the rules allow gets through), or delete the {direction} rules",
                    policy_type(direction)
                ),
            ));
        }
    }
}

fn ipblock_covers_pods(cluster: &Cluster, out: &mut Vec<Finding>) {
    for (_, p) in cluster.policies() {
        for direction in DIRECTIONS {
            for (index, rule) in p.rules(direction).iter().enumerate() {
                for peer in &rule.peers {
                    let Peer::IpBlock { cidr, except } = peer else {
                        continue;
                    };
                    let covered: Vec<String> = cluster
                        .pods()
                        .filter(|(_, pod)| pod.selectable() && !pod.terminated)
                        .filter(|(_, pod)| {
                            pod.ips.iter().any(|ip| {
                                cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
                            })
                        })
                        .map(|(_, pod)| format!("{}/{}", pod.namespace, pod.name))
                        .collect();
                    if covered.is_empty() {
                        continue;
                    }
                    out.push(finding(
                        LintRule::IpblockCoversPods,
                        Severity::Warning,
                        p,
                        format!(
                            "{direction} rule {index} of {} has ipBlock {cidr}, which contains the addresses of {} ({}): network plugins disagree on whether ipBlock matches pod traffic, so whether these pods are admitted depends on the CNI",
                            p.key(),
                            plural(covered.len(), "pod"),
                            list(&covered)
                        ),
                        format!(
                            "admit pods with podSelector/namespaceSelector peers and keep ipBlock for addresses outside the cluster: add the pod network to the ipBlock's `except` list (for these pods, e.g. `except: [{}]`)",
                            pod_range_hint(cluster, cidr)
                        ),
                    ));
                }
            }
        }
    }
}

/// The smallest /16 (IPv4) or /64 (IPv6) range of the first covered pod.
fn pod_range_hint(cluster: &Cluster, cidr: &ipnet::IpNet) -> String {
    cluster
        .pods()
        .flat_map(|(_, p)| p.ips.iter())
        .find(|ip| cidr.contains(*ip))
        .and_then(|ip| {
            let len = if ip.is_ipv4() { 16 } else { 64 };
            ipnet::IpNet::new(*ip, len)
                .ok()
                .map(|n| n.trunc().to_string())
        })
        .unwrap_or_else(|| cidr.to_string())
}

fn named_port_unresolved(cluster: &Cluster, out: &mut Vec<Finding>) {
    for (id, p) in cluster.policies() {
        for direction in DIRECTIONS {
            for (index, rule) in p.rules(direction).iter().enumerate() {
                let destinations = rule_destinations(cluster, id, direction, rule);
                for pm in &rule.ports {
                    let Some(PortSpec::Name(name)) = &pm.port else {
                        continue;
                    };
                    if let Some(message) =
                        unresolved(cluster, &destinations, rule, name, pm.protocol)
                    {
                        out.push(finding(
                            LintRule::NamedPortUnresolved,
                            Severity::Warning,
                            p,
                            format!(
                                "{direction} rule {index} of {} names port `{name}` ({}): {message}, so the rule admits nothing on it",
                                p.key(),
                                pm.protocol
                            ),
                            format!(
                                "declare a containerPort named `{name}` with protocol {} in the destination pods, or write the port number in the rule",
                                pm.protocol
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// Pods a rule's traffic goes to: the policy's pods for ingress, the peers'
/// pods for egress.
fn rule_destinations(
    cluster: &Cluster,
    id: PolicyId,
    direction: Direction,
    rule: &Rule,
) -> Vec<PodId> {
    match direction {
        Direction::Ingress => cluster.selected_pods(id).to_vec(),
        Direction::Egress if rule.peers.is_empty() => cluster
            .pods()
            .filter(|(_, p)| p.selectable())
            .map(|(id, _)| id)
            .collect(),
        Direction::Egress => {
            let mut pods: Vec<PodId> = rule
                .peers
                .iter()
                .flat_map(|peer| cluster.peer_pods(id, peer))
                .collect();
            pods.sort();
            pods.dedup();
            pods
        }
    }
}

fn unresolved(
    cluster: &Cluster,
    destinations: &[PodId],
    rule: &Rule,
    name: &str,
    protocol: Protocol,
) -> Option<String> {
    if destinations.is_empty() {
        // No pod to check against: only an ipBlock-only egress rule is sure
        // to miss, since named ports never match outside the cluster.
        let ip_only =
            !rule.peers.is_empty() && rule.peers.iter().all(|p| matches!(p, Peer::IpBlock { .. }));
        return ip_only.then(|| {
            "the rule's peers are all ipBlocks, and a named port never matches an address outside the cluster".to_string()
        });
    }
    let declares = |pod: &PodId| {
        cluster.pod(*pod).ports.iter().any(
            |NamedPort {
                 name: n,
                 protocol: p,
                 ..
             }| n == name && *p == protocol,
        )
    };
    if destinations.iter().any(declares) {
        return None;
    }
    Some(format!(
        "none of the {} it applies to ({}) declares a container port by that name",
        plural(destinations.len(), "pod"),
        list(&pod_names(cluster, destinations))
    ))
}

/// Two policies have the same effect when they select with the same
/// selector, isolate the same directions and hold the same rules (in any
/// order).
fn same_effect(a: &PolicyInfo, b: &PolicyInfo) -> bool {
    let same_rules =
        |x: &[Rule], y: &[Rule]| x.iter().all(|r| y.contains(r)) && y.iter().all(|r| x.contains(r));
    a.namespace == b.namespace
        && a.pod_selector == b.pod_selector
        && a.isolates_ingress == b.isolates_ingress
        && a.isolates_egress == b.isolates_egress
        && same_rules(&a.ingress, &b.ingress)
        && same_rules(&a.egress, &b.egress)
}

fn duplicate_policy(cluster: &Cluster, out: &mut Vec<Finding>) {
    let policies: Vec<&PolicyInfo> = cluster.policies().map(|(_, p)| p).collect();
    for (i, b) in policies.iter().enumerate() {
        // Reported once, on the later of the two, naming the first twin.
        let Some(a) = policies[..i].iter().find(|a| same_effect(a, b)) else {
            continue;
        };
        out.push(finding(
            LintRule::DuplicatePolicy,
            Severity::Warning,
            b,
            format!(
                "{} has the same effect as {}: both select {} and hold the same rules, so one is redundant, and editing one without the other changes nothing",
                b.key(),
                a.name,
                b.pod_selector
            ),
            format!(
                "delete {} and keep {} (one policy per set of pods avoids conflicting edits)",
                b.name, a.name
            ),
        ));
    }
}

const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
const DNS_NAMESPACE: &str = "kube-system";

fn is_dns_pod(p: &PodInfo) -> bool {
    p.labels.get(DNS_LABEL.0).map(String::as_str) == Some(DNS_LABEL.1)
}

fn egress_without_dns(cluster: &Cluster, out: &mut Vec<Finding>) {
    let dns_pods: Vec<PodId> = cluster
        .pods()
        .filter(|(_, p)| is_dns_pod(p) && p.selectable() && !p.terminated)
        .map(|(id, _)| id)
        .collect();
    for (id, p) in cluster.policies() {
        if !p.isolates_egress {
            continue;
        }
        let cut_off: Vec<PodId> = cluster
            .selected_pods(id)
            .iter()
            .copied()
            .filter(|pod| !is_dns_pod(cluster.pod(*pod)) && !reaches_dns(cluster, *pod, &dns_pods))
            .collect();
        if cut_off.is_empty() {
            continue;
        }
        out.push(finding(
            LintRule::EgressWithoutDns,
            Severity::Error,
            p,
            format!(
                "{} isolates {} ({}) for egress, and no egress rule of the policies selecting them admits DNS (UDP 53) to kube-dns: name lookups from these pods will fail",
                p.key(),
                plural(cut_off.len(), "pod"),
                list(&pod_names(cluster, &cut_off))
            ),
            format!(
                "add an egress rule to {}: `to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {DNS_NAMESPACE}}}}}, podSelector: {{matchLabels: {{{}: {}}}}}}}]` with `ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]`",
                p.key(),
                DNS_LABEL.0,
                DNS_LABEL.1
            ),
        ));
    }
}

/// Whether `pod` may send DNS queries to kube-dns: judged against the real
/// DNS pods when the cluster has them, otherwise against a DNS pod as
/// clusters deploy it (kube-system, `k8s-app: kube-dns`, port `dns` 53/UDP).
fn reaches_dns(cluster: &Cluster, pod: PodId, dns_pods: &[PodId]) -> bool {
    if !dns_pods.is_empty() {
        let src = cluster.pod_endpoint(pod, None);
        return dns_pods.iter().any(|d| {
            let dst = cluster.pod_endpoint(*d, None);
            cluster
                .verdict(&src, &dst, 53, Protocol::Udp)
                .egress
                .allowed
        });
    }
    let own_namespace = &cluster.pod(pod).namespace;
    let dns_ns_labels: Labels = match cluster.namespace(DNS_NAMESPACE) {
        Some(ns) => ns.labels.clone(),
        None => [(
            "kubernetes.io/metadata.name".to_string(),
            DNS_NAMESPACE.to_string(),
        )]
        .into(),
    };
    let dns_labels: Labels = [(DNS_LABEL.0.to_string(), DNS_LABEL.1.to_string())].into();
    let dns = PodInfo {
        namespace: DNS_NAMESPACE.into(),
        name: "kube-dns".into(),
        labels: dns_labels.clone(),
        ips: Vec::new(),
        node: None,
        host_ip: None,
        host_network: false,
        terminated: false,
        phase: None,
        ports: vec![NamedPort {
            name: "dns".into(),
            port: 53,
            protocol: Protocol::Udp,
        }],
        workload: None,
    };
    let peer_ok = |peer: &Peer| match peer {
        Peer::Pods {
            namespace_selector,
            pod_selector,
        } => {
            let ns_ok = match namespace_selector {
                None => own_namespace == DNS_NAMESPACE,
                Some(s) => s.matches(&dns_ns_labels),
            };
            ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&dns_labels))
        }
        // The DNS Service's address is unknown here: only "anywhere" surely
        // contains it.
        Peer::IpBlock { cidr, except } => cidr.prefix_len() == 0 && except.is_empty(),
    };
    cluster
        .isolating_policies(pod, Direction::Egress)
        .iter()
        .flat_map(|policy| cluster.policy(*policy).egress.iter())
        .any(|rule| {
            (rule.peers.is_empty() || rule.peers.iter().any(peer_ok))
                && (rule.ports.is_empty()
                    || rule
                        .ports
                        .iter()
                        .any(|pm| Cluster::port_matches(pm, 53, Protocol::Udp, Some(&dns))))
        })
}
