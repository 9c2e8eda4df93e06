//! Suggestions: the smallest NetworkPolicy change that admits a denied
//! connection.
//!
//! For each direction that denies, the candidates are: widen the nearest
//! miss of an isolating policy when only one thing is missing (add the peer,
//! or add the port), and a new policy admitting exactly this peer on this
//! port. A suggestion combines one candidate per denying direction, is
//! rendered as complete NetworkPolicy objects, and is kept only if the
//! engine, re-judging with the change applied, admits the connection.
//!
//! Peers in the cluster are named by their namespace's
//! `kubernetes.io/metadata.name` label and their workload labels, never by
//! pod name or address: a pod's name and IP change with every rollout.
//! Addresses are used only for what selectors cannot match (the world and
//! hostNetwork pods).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::cluster::{Cluster, Endpoint};
use crate::explain::{DirectionExplanation, PolicyRef};
use crate::explain_tiers::TierRuleRef;
use crate::model::{Direction, PodId, Protocol};
use crate::tier::Tier;
use crate::whatif::{
    ChangeSet, ObservedConnection, ObservedPods, VerdictChange, WhatIfError, judge,
};
use crate::yaml::ClusterObjects;

/// Labels controllers set per pod or per rollout: selecting by them would
/// pin one pod or one revision, so suggestions leave them out.
const UNSTABLE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
];

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A candidate per denying direction is kept only among the first few:
/// suggestions combine them, and a person reads them.
const MAX_FIXES_PER_DIRECTION: usize = 3;

/// One change a suggestion makes, for machines; the summary says it in words.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SuggestedEdit {
    /// Add the missing peer to a rule that already admits the port.
    AddPeer {
        direction: Direction,
        policy: PolicyRef,
        rule_index: u32,
    },
    /// Add the missing port to a rule that already admits the peer.
    AddPort {
        direction: Direction,
        policy: PolicyRef,
        rule_index: u32,
    },
    /// A new policy admitting just this peer on this port.
    NewPolicy {
        direction: Direction,
        policy: PolicyRef,
    },
}

/// Another observed connection whose verdict a suggestion would flip.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OtherConnection {
    /// `namespace/pod`, or the address.
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A change that admits the connection, verified by re-judging.
#[derive(Clone, Debug, Serialize)]
pub struct Suggestion {
    pub summary: String,
    pub edits: Vec<SuggestedEdit>,
    /// The complete objects to apply (changed or new), as the API takes them.
    pub policies: Vec<NetworkPolicy>,
    /// `policies` as a YAML stream, ready for `kubectl apply -f -`.
    pub yaml: String,
    /// Observed connections this change would newly admit besides the
    /// denied one; `None` when no observed traffic was consulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub also_admits: Option<Vec<OtherConnection>>,
    /// Observed connections this change would newly deny: only a new
    /// policy that isolates pods (see `newly_isolates`) can.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_denies: Vec<OtherConnection>,
    /// Pods the change newly isolates for a direction (a new policy
    /// selecting pods no policy selected): their traffic that the Baseline
    /// tier or the default allowed is then denied unless a rule admits it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub newly_isolates: Vec<String>,
    /// Lower is a smaller change; ties of blast radius are broken by it.
    #[serde(skip)]
    cost: u32,
}

impl Suggestion {
    /// The change set, for what-if questions (what else it admits).
    pub fn change(&self) -> ChangeSet {
        ChangeSet {
            policies: self.policies.clone(),
            ..ChangeSet::default()
        }
    }
}

/// Why no NetworkPolicy change is suggested.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoSuggestion {
    /// The connection is already allowed.
    Allowed,
    /// An Admin-tier rule denies it; the Admin tier is judged before any
    /// NetworkPolicy, so only a change to that cluster policy can help.
    AdminDeny {
        rules: Vec<TierRuleRef>,
        message: String,
    },
    /// Nothing that was tried admitted it on re-judging.
    NoneVerified { message: String },
}

impl NoSuggestion {
    pub fn message(&self) -> String {
        match self {
            NoSuggestion::Allowed => "the connection is already allowed: nothing to change.".into(),
            NoSuggestion::AdminDeny { message, .. } | NoSuggestion::NoneVerified { message } => {
                message.clone()
            }
        }
    }
}

/// The suggestions for one connection, best first.
#[derive(Clone, Debug, Serialize)]
pub struct Suggestions {
    pub suggestions: Vec<Suggestion>,
    /// Set when `suggestions` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub none: Option<NoSuggestion>,
    /// The connection being fixed, to leave it out of `also_admits`.
    #[serde(skip)]
    connection: OtherConnection,
}

/// One way to fix one direction.
#[derive(Clone, Debug)]
struct Fix {
    edit: SuggestedEdit,
    apply: FixApply,
    words: String,
    cost: u32,
    newly_isolates: Vec<String>,
}

#[derive(Clone, Debug)]
enum FixApply {
    Peer(NetworkPolicyPeer),
    Port(NetworkPolicyPort),
    Policy(Box<NetworkPolicy>),
}

/// The connection being fixed, and the peer and port to admit.
struct Target<'a> {
    cluster: &'a Cluster,
    src: &'a Endpoint,
    dst: &'a Endpoint,
    port: u16,
    protocol: Protocol,
}

impl Cluster {
    /// Changes that would admit a denied connection, verified, best first
    /// (fewest edits; call [`Suggestions::rank_by_blast_radius`] once
    /// `also_admits` is known).
    pub fn suggest(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        port: u16,
        protocol: Protocol,
    ) -> Suggestions {
        let connection = OtherConnection {
            src: self.endpoint_name(src),
            dst: self.endpoint_name(dst),
            port,
            protocol,
        };
        let none = |why| Suggestions {
            suggestions: Vec::new(),
            none: Some(why),
            connection: connection.clone(),
        };
        let explanation = self.explain(src, dst, port, protocol);
        if explanation.allowed {
            return none(NoSuggestion::Allowed);
        }
        let denying: Vec<&DirectionExplanation> = [&explanation.egress, &explanation.ingress]
            .into_iter()
            .filter(|d| !d.allowed)
            .collect();
        let admin: Vec<&DirectionExplanation> = denying
            .iter()
            .copied()
            .filter(|d| d.tier == Tier::Admin)
            .collect();
        if !admin.is_empty() {
            return none(admin_deny(&admin));
        }
        let t = Target {
            cluster: self,
            src,
            dst,
            port,
            protocol,
        };
        let per_direction: Vec<Vec<Fix>> = denying.iter().map(|d| t.fixes(d)).collect();
        let mut out: Vec<Suggestion> = combinations(&per_direction)
            .iter()
            .filter_map(|combo| t.verified(combo))
            .collect();
        out.sort_by_key(|s| (s.newly_isolates.len(), s.cost));
        if out.is_empty() {
            return none(NoSuggestion::NoneVerified {
                message: format!(
                    "no NetworkPolicy change tried admits {}: {}",
                    t.connection(),
                    explanation.summary
                ),
            });
        }
        Suggestions {
            suggestions: out,
            none: None,
            connection,
        }
    }
}

impl Suggestions {
    /// Judges every observed connection (the what-if core: endpoints as
    /// they were observed) under the objects in force and under each
    /// suggestion; fills `also_admits` and `also_denies` with those that
    /// flip, the connection being fixed left out, and ranks by blast
    /// radius. `current` must be the objects the suggesting snapshot was
    /// built from.
    pub fn judge_observed(
        &mut self,
        current: &ClusterObjects,
        observed: &[ObservedConnection],
    ) -> Result<(), WhatIfError> {
        let pods = ObservedPods::new(current, observed);
        let (before, _) = pods.cluster(current, 0);
        for s in &mut self.suggestions {
            let after = before.with_policy_changes(&s.change())?;
            let w = judge(&pods, &before, &after, observed);
            let others = |v: Vec<VerdictChange>| -> Vec<OtherConnection> {
                v.into_iter()
                    .map(|c| OtherConnection {
                        src: c.src,
                        dst: c.dst,
                        port: c.port,
                        protocol: c.protocol,
                    })
                    .filter(|c| !self.connection.same(c))
                    .collect()
            };
            s.also_admits = Some(others(w.newly_allowed));
            s.also_denies = others(w.newly_denied);
        }
        self.rank_by_blast_radius();
        Ok(())
    }

    /// Orders by blast radius: fewest other observed connections newly
    /// denied, then newly admitted, then fewest pods newly isolated, then
    /// the smallest change.
    pub fn rank_by_blast_radius(&mut self) {
        self.suggestions.sort_by_key(|s| {
            (
                s.also_denies.len(),
                s.also_admits.as_ref().map_or(0, Vec::len),
                s.newly_isolates.len(),
                s.cost,
            )
        });
    }
}

impl OtherConnection {
    /// The same connection; the port does not count for ICMP.
    fn same(&self, o: &OtherConnection) -> bool {
        self.src == o.src
            && self.dst == o.dst
            && self.protocol == o.protocol
            && (self.port == o.port || !self.protocol.has_ports())
    }
}

fn admin_deny(admin: &[&DirectionExplanation]) -> NoSuggestion {
    let rules: Vec<TierRuleRef> = admin.iter().filter_map(|d| d.decided_by.clone()).collect();
    let named: Vec<String> = rules
        .iter()
        .map(|r| format!("{} {} rule {}", r.kind.as_str(), r.policy, r.rule_index))
        .collect();
    let message = format!(
        "denied by the Admin tier ({}): Admin rules are judged before any NetworkPolicy, so no NetworkPolicy can admit this connection. \
         Change the cluster policy instead: add a higher-priority Allow (or Pass, to let NetworkPolicies decide) rule for this peer and port, \
         or narrow the Deny rule.",
        named.join(", ")
    );
    NoSuggestion::AdminDeny { rules, message }
}

/// Every way of picking one fix per direction.
fn combinations(per_direction: &[Vec<Fix>]) -> Vec<Vec<Fix>> {
    let mut out: Vec<Vec<Fix>> = vec![Vec::new()];
    for fixes in per_direction {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                fixes.iter().map(move |f| {
                    let mut v = prefix.clone();
                    v.push(f.clone());
                    v
                })
            })
            .collect();
    }
    out
}

impl Target<'_> {
    fn connection(&self) -> String {
        format!(
            "{} → {} {}",
            self.cluster.endpoint_name(self.src),
            self.cluster.endpoint_name(self.dst),
            port_words(self.port, self.protocol)
        )
    }

    /// The side the direction restricts, and the other side.
    fn sides(&self, direction: Direction) -> (&Endpoint, &Endpoint) {
        match direction {
            Direction::Egress => (self.src, self.dst),
            Direction::Ingress => (self.dst, self.src),
        }
    }

    fn fixes(&self, d: &DirectionExplanation) -> Vec<Fix> {
        let mut fixes: Vec<Fix> = d
            .misses
            .iter()
            .filter_map(|m| {
                let nearest = m.nearest.as_ref()?;
                self.widen(d.direction, &m.policy, nearest.rule_index, nearest)
            })
            .collect();
        fixes.sort_by_key(|f| f.cost);
        fixes.truncate(MAX_FIXES_PER_DIRECTION - 1);
        fixes.extend(self.new_policy(d.direction));
        fixes
    }

    /// Widening is close only when one thing is missing; a rule missing
    /// both would admit the peer on all its ports and all its peers on
    /// this port, so a new policy is the narrower fix.
    fn widen(
        &self,
        direction: Direction,
        policy: &PolicyRef,
        rule_index: u32,
        miss: &crate::explain::RuleMiss,
    ) -> Option<Fix> {
        let (_, other) = self.sides(direction);
        let rule = format!(
            "{}/{} {direction} rule {rule_index}",
            policy.namespace, policy.name
        );
        if miss.port_matched && !miss.peer_matched {
            let (peer, peer_words) = self.peer(other);
            let words = format!("widen {rule}: add the peer {peer_words}");
            return Some(Fix {
                edit: SuggestedEdit::AddPeer {
                    direction,
                    policy: policy.clone(),
                    rule_index,
                },
                apply: FixApply::Peer(peer),
                words,
                cost: 1,
                newly_isolates: Vec::new(),
            });
        }
        if miss.peer_matched && !miss.port_matched && self.protocol.has_ports() {
            let words = format!("widen {rule}: add {}", port_words(self.port, self.protocol));
            return Some(Fix {
                edit: SuggestedEdit::AddPort {
                    direction,
                    policy: policy.clone(),
                    rule_index,
                },
                apply: FixApply::Port(self.policy_port()),
                words,
                cost: 1,
                newly_isolates: Vec::new(),
            });
        }
        None
    }

    fn policy_port(&self) -> NetworkPolicyPort {
        NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(self.port))),
            protocol: Some(self.protocol.as_str().to_string()),
            end_port: None,
        }
    }

    /// The peer clause for the other side, and how to say it.
    fn peer(&self, other: &Endpoint) -> (NetworkPolicyPeer, String) {
        let c = self.cluster;
        match c.selectable_pod(other) {
            Some(pod) => {
                let p = c.pod(pod);
                let labels = workload_labels(c, pod);
                let words = if labels.is_empty() {
                    format!(
                        "every pod in namespace {} ({}/{} has no workload labels to select it by)",
                        p.namespace, p.namespace, p.name
                    )
                } else {
                    format!("pods {} in namespace {}", label_words(&labels), p.namespace)
                };
                let peer = NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_string(),
                            p.namespace.clone(),
                        )])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: (!labels.is_empty()).then_some(labels),
                        match_expressions: None,
                    }),
                    ip_block: None,
                };
                (peer, words)
            }
            None => {
                let prefix = if other.ip.is_ipv4() { 32 } else { 128 };
                let cidr = format!("{}/{prefix}", other.ip);
                let words = match other.pod {
                    // Selectors never match hostNetwork pods: the address
                    // is the only way to name one.
                    Some(pod) => format!(
                        "ipBlock {cidr} ({} uses the host network, which selectors cannot match)",
                        c.pod_name(pod)
                    ),
                    None => format!("ipBlock {cidr}"),
                };
                let peer = NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr, except: None }),
                    ..Default::default()
                };
                (peer, words)
            }
        }
    }

    /// `None` only when the direction's side is no pod (then it cannot deny).
    fn new_policy(&self, direction: Direction) -> Option<Fix> {
        let c = self.cluster;
        let (subject, other) = self.sides(direction);
        let subject_pod = subject.pod?;
        let sp = c.pod(subject_pod);
        let subject_labels = workload_labels(c, subject_pod);
        let (peer, peer_words) = self.peer(other);
        let ports = self.protocol.has_ports().then(|| vec![self.policy_port()]);
        let name = self.new_policy_name(direction, &sp.namespace, other);
        let spec = match direction {
            Direction::Ingress => NetworkPolicySpec {
                pod_selector: Some(selector_of(&subject_labels)),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![peer]),
                    ports,
                }]),
                egress: None,
            },
            Direction::Egress => NetworkPolicySpec {
                pod_selector: Some(selector_of(&subject_labels)),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![peer]),
                    ports,
                }]),
                ingress: None,
            },
        };
        let np = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(sp.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "flowgate-suggest".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(spec),
        };
        let selected = if subject_labels.is_empty() {
            format!("every pod in namespace {}", sp.namespace)
        } else {
            format!(
                "pods {} in namespace {}",
                label_words(&subject_labels),
                sp.namespace
            )
        };
        let what = if self.protocol.has_ports() {
            format!("on {}", port_words(self.port, self.protocol))
        } else {
            // Ports can name only TCP, UDP and SCTP: the rule must list none.
            format!(
                "on every port and protocol ({} cannot be named in a rule's ports)",
                self.protocol
            )
        };
        let (verb, prep) = match direction {
            Direction::Ingress => ("ingress", "from"),
            Direction::Egress => ("egress", "to"),
        };
        let newly_isolates = self.newly_isolated(direction, &sp.namespace, &subject_labels);
        let mut words = format!(
            "new NetworkPolicy {}/{name} for {selected}: allow {verb} {prep} {peer_words} {what}",
            sp.namespace
        );
        if !newly_isolates.is_empty() {
            let _ = write!(
                words,
                " (it also isolates {} for {direction}, which no NetworkPolicy selects now: their other {direction} would then need rules too)",
                newly_isolates.join(", ")
            );
        }
        Some(Fix {
            edit: SuggestedEdit::NewPolicy {
                direction,
                policy: PolicyRef {
                    namespace: sp.namespace.clone(),
                    name,
                },
            },
            apply: FixApply::Policy(Box::new(np)),
            words,
            cost: 3,
            newly_isolates,
        })
    }

    /// Pods the new policy would select that no policy isolates yet for
    /// the direction.
    fn newly_isolated(
        &self,
        direction: Direction,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let c = self.cluster;
        c.pods()
            .filter(|(id, p)| {
                p.namespace == namespace
                    && p.selectable()
                    && !p.terminated
                    && labels.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    && c.isolating_policies(*id, direction).is_empty()
            })
            .map(|(id, _)| c.pod_name(id))
            .collect()
    }

    /// `allow-<direction>-<from|to>-<peer>-<protocol>-<port>`, a valid
    /// object name not used by a policy in the namespace.
    fn new_policy_name(&self, direction: Direction, namespace: &str, other: &Endpoint) -> String {
        let c = self.cluster;
        let peer = match c.selectable_pod(other) {
            Some(pod) => {
                let p = c.pod(pod);
                let workload = p
                    .workload
                    .as_ref()
                    .map(|w| w.name.clone())
                    .or_else(|| p.labels.get("app").cloned())
                    .unwrap_or_else(|| p.name.clone());
                format!("{}-{workload}", p.namespace)
            }
            None => other.ip.to_string(),
        };
        let prep = match direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        let port = if self.protocol.has_ports() {
            format!("-{}", self.port)
        } else {
            String::new()
        };
        let raw = format!(
            "allow-{direction}-{prep}-{peer}-{}{port}",
            self.protocol.as_str()
        );
        let base = dns_label(&raw);
        let taken = |n: &str| {
            c.policies()
                .any(|(_, p)| p.namespace == namespace && p.name == n)
        };
        let mut name = base.clone();
        let mut i = 2;
        while taken(&name) {
            name = format!("{}-{i}", truncate(&base, 60));
            i += 1;
        }
        name
    }

    /// Applies one fix per direction, re-judges, and renders the result.
    fn verified(&self, fixes: &[Fix]) -> Option<Suggestion> {
        let mut objects: BTreeMap<(String, String), NetworkPolicy> = BTreeMap::new();
        for f in fixes {
            apply_fix(self.cluster, &mut objects, f);
        }
        let change = ChangeSet {
            policies: objects.into_values().collect(),
            ..ChangeSet::default()
        };
        let changed = self.cluster.with_policy_changes(&change).ok()?;
        if !changed
            .verdict(self.src, self.dst, self.port, self.protocol)
            .allowed
        {
            return None;
        }
        let yaml = render_yaml(&change.policies);
        let words: Vec<&str> = fixes.iter().map(|f| f.words.as_str()).collect();
        let summary = format!("to admit {}: {}.", self.connection(), words.join("; and "));
        let mut newly_isolates: Vec<String> = fixes
            .iter()
            .flat_map(|f| f.newly_isolates.iter().cloned())
            .collect();
        newly_isolates.sort();
        newly_isolates.dedup();
        Some(Suggestion {
            summary,
            edits: fixes.iter().map(|f| f.edit.clone()).collect(),
            policies: change.policies,
            yaml,
            also_admits: None,
            also_denies: Vec::new(),
            newly_isolates,
            cost: fixes.iter().map(|f| f.cost).sum(),
        })
    }
}

/// Edits the policy a fix touches, starting from the object in force (or
/// from this suggestion's earlier edit of it).
fn apply_fix(
    cluster: &Cluster,
    objects: &mut BTreeMap<(String, String), NetworkPolicy>,
    fix: &Fix,
) {
    let (direction, policy, rule_index) = match &fix.edit {
        SuggestedEdit::AddPeer {
            direction,
            policy,
            rule_index,
        }
        | SuggestedEdit::AddPort {
            direction,
            policy,
            rule_index,
        } => (*direction, policy, *rule_index as usize),
        SuggestedEdit::NewPolicy { policy, .. } => {
            if let FixApply::Policy(np) = &fix.apply {
                objects.insert(
                    (policy.namespace.clone(), policy.name.clone()),
                    (**np).clone(),
                );
            }
            return;
        }
    };
    let key = (policy.namespace.clone(), policy.name.clone());
    let np = objects.entry(key).or_insert_with(|| {
        let current = cluster
            .policies()
            .find(|(_, p)| p.namespace == policy.namespace && p.name == policy.name)
            .map(|(_, p)| p.object.clone())
            .unwrap_or_default();
        applyable(current)
    });
    let Some(spec) = np.spec.as_mut() else {
        return;
    };
    match (direction, &fix.apply) {
        (Direction::Ingress, FixApply::Peer(peer)) => {
            if let Some(r) = spec.ingress.as_mut().and_then(|r| r.get_mut(rule_index)) {
                r.from.get_or_insert_with(Vec::new).push(peer.clone());
            }
        }
        (Direction::Egress, FixApply::Peer(peer)) => {
            if let Some(r) = spec.egress.as_mut().and_then(|r| r.get_mut(rule_index)) {
                r.to.get_or_insert_with(Vec::new).push(peer.clone());
            }
        }
        (Direction::Ingress, FixApply::Port(port)) => {
            if let Some(r) = spec.ingress.as_mut().and_then(|r| r.get_mut(rule_index)) {
                r.ports.get_or_insert_with(Vec::new).push(port.clone());
            }
        }
        (Direction::Egress, FixApply::Port(port)) => {
            if let Some(r) = spec.egress.as_mut().and_then(|r| r.get_mut(rule_index)) {
                r.ports.get_or_insert_with(Vec::new).push(port.clone());
            }
        }
        (_, FixApply::Policy(_)) => {}
    }
}

/// The object as `kubectl apply` takes it: name, namespace, labels and
/// annotations kept; server-set fields (uid, resourceVersion, managed
/// fields, timestamps, status) dropped.
fn applyable(np: NetworkPolicy) -> NetworkPolicy {
    let m = np.metadata;
    let annotations = m.annotations.map(|mut a| {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        a
    });
    NetworkPolicy {
        metadata: ObjectMeta {
            name: m.name,
            namespace: Some(m.namespace.unwrap_or_else(|| "default".into())),
            labels: m.labels.filter(|l| !l.is_empty()),
            annotations: annotations.filter(|a| !a.is_empty()),
            ..Default::default()
        },
        spec: np.spec,
    }
}

fn render_yaml(policies: &[NetworkPolicy]) -> String {
    policies
        .iter()
        .map(|np| serde_norway::to_string(np).expect("a NetworkPolicy always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A pod's labels minus the per-pod and per-revision ones.
fn workload_labels(cluster: &Cluster, pod: PodId) -> BTreeMap<String, String> {
    cluster
        .pod(pod)
        .labels
        .iter()
        .filter(|(k, _)| !UNSTABLE_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn selector_of(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    }
}

fn label_words(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn port_words(port: u16, protocol: Protocol) -> String {
    if protocol.has_ports() {
        format!("{protocol} {port}")
    } else {
        protocol.to_string()
    }
}

/// Lower-case letters, digits and dashes, at most 63 characters, starting
/// and ending with an alphanumeric: valid as a NetworkPolicy name.
fn dns_label(raw: &str) -> String {
    let mut out = String::new();
    for ch in raw.chars() {
        let c = ch.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    truncate(&out, 63)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_dns_labels() {
        assert_eq!(
            dns_label("allow-ingress-from-dev-client-TCP-5432"),
            "allow-ingress-from-dev-client-tcp-5432"
        );
        assert_eq!(
            dns_label("allow-egress-to-fd00::1-UDP-53"),
            "allow-egress-to-fd00-1-udp-53"
        );
        let long = dns_label(&format!("allow-{}-x", "a".repeat(100)));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }
}
