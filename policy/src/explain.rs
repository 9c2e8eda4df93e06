//! Explanations for people: which policies decided, and for a denial, the
//! nearest miss of every isolating policy in words.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::{Cluster, DirectionVerdict, Endpoint, Exemption};
use crate::explain_tiers::{StepOutcome, TierRuleRef, TierStep};
use crate::model::{Direction, Peer, PodId, PolicyId, Protocol, Workload};
use crate::tier::Tier;

/// One side of the connection, described.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointView {
    /// `pod`, `host-network` (a hostNetwork pod: node traffic) or `external`.
    pub kind: &'static str,
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleRef {
    pub namespace: String,
    pub name: String,
    pub rule_index: u32,
}

/// The rule of a policy that came closest to admitting the connection.
#[derive(Clone, Debug, Serialize)]
pub struct RuleMiss {
    pub rule_index: u32,
    pub peer_matched: bool,
    pub port_matched: bool,
    /// What did not match, in words.
    pub reasons: Vec<String>,
}

/// Why one isolating policy did not admit the connection.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyMiss {
    pub policy: PolicyRef,
    pub explanation: String,
    /// `None` when the policy has no rules for the direction (it denies all).
    pub nearest: Option<RuleMiss>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirectionExplanation {
    pub direction: Direction,
    pub applicable: bool,
    pub isolated: bool,
    pub allowed: bool,
    pub allowed_by: Vec<RuleRef>,
    pub isolated_by: Vec<PolicyRef>,
    pub reason: String,
    pub misses: Vec<PolicyMiss>,
    /// The tier that decided this direction.
    pub tier: Tier,
    /// The Admin or Baseline rule that accepted or denied, if one did.
    pub decided_by: Option<TierRuleRef>,
    /// The Pass rule that handed the direction on, if any.
    pub passed_by: Option<TierRuleRef>,
    /// The walk through the Admin and Baseline tiers (empty when the
    /// direction is not applicable).
    pub tiers: Vec<TierStep>,
}

/// The verdict with everything a person needs to understand it.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub allowed: bool,
    pub summary: String,
    pub src: EndpointView,
    pub dst: EndpointView,
    pub port: u16,
    pub protocol: Protocol,
    pub egress: DirectionExplanation,
    pub ingress: DirectionExplanation,
    pub egress_tier: Tier,
    pub ingress_tier: Tier,
    /// Cluster-tier rules that decided a direction, as `tier/policy/direction/rule`.
    pub decided_by: Vec<String>,
    pub generation: u64,
}

impl Cluster {
    pub fn describe_endpoint(&self, e: &Endpoint) -> EndpointView {
        match e.pod.map(|p| self.pod(p)) {
            None => EndpointView {
                kind: "external",
                ip: e.ip.to_string(),
                namespace: None,
                pod: None,
                labels: None,
                workload: None,
            },
            Some(p) => EndpointView {
                kind: if p.host_network {
                    "host-network"
                } else {
                    "pod"
                },
                ip: e.ip.to_string(),
                namespace: Some(p.namespace.clone()),
                pod: Some(p.name.clone()),
                labels: Some(p.labels.clone()),
                workload: p.workload.clone(),
            },
        }
    }

    /// `ns/pod`, or the address for the world.
    pub fn endpoint_name(&self, e: &Endpoint) -> String {
        match e.pod.map(|p| self.pod(p)) {
            Some(p) => format!("{}/{}", p.namespace, p.name),
            None => e.ip.to_string(),
        }
    }

    fn policy_ref(&self, id: PolicyId) -> PolicyRef {
        let p = self.policy(id);
        PolicyRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        }
    }

    /// The verdict, explained.
    pub fn explain(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        port: u16,
        protocol: Protocol,
    ) -> Explanation {
        self.explain_named(src, dst, None, port, protocol)
    }

    /// The verdict, explained, when the DNS name `dst` was reached by is
    /// known (see [`Cluster::verdict_named`]).
    pub fn explain_named(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        dst_name: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> Explanation {
        let v = self.verdict_named(src, dst, dst_name, port, protocol);
        let conn = Conn {
            src,
            dst,
            dst_name,
            port,
            protocol,
        };
        let egress = self.explain_direction(Direction::Egress, &v.egress, &conn);
        let ingress = self.explain_direction(Direction::Ingress, &v.ingress, &conn);
        let dst_text = match dst_name {
            Some(name) => format!("{} ({name})", self.endpoint_name(dst)),
            None => self.endpoint_name(dst),
        };
        let conn = format!(
            "{} → {dst_text} {}",
            self.endpoint_name(src),
            port_text(port, protocol)
        );
        let summary = if v.allowed {
            format!(
                "allowed: {conn}. Egress: {} Ingress: {}",
                egress.reason, ingress.reason
            )
        } else {
            let denied: Vec<&str> = [&egress, &ingress]
                .into_iter()
                .filter(|d| !d.allowed)
                .map(|d| d.reason.as_str())
                .collect();
            format!("denied: {conn}. {}", denied.join(" "))
        };
        let decided_by = [&v.egress, &v.ingress]
            .into_iter()
            .filter_map(|d| d.decided_by)
            .map(|r| self.decided_by_key(r))
            .collect();
        Explanation {
            allowed: v.allowed,
            egress_tier: v.egress.tier,
            ingress_tier: v.ingress.tier,
            decided_by,
            summary,
            src: self.describe_endpoint(src),
            dst: self.describe_endpoint(dst),
            port,
            protocol,
            egress,
            ingress,
            generation: self.generation(),
        }
    }

    fn explain_direction(
        &self,
        direction: Direction,
        v: &DirectionVerdict,
        conn: &Conn<'_>,
    ) -> DirectionExplanation {
        let &Conn {
            src,
            dst,
            dst_name,
            port,
            protocol,
        } = conn;
        let (subject, other, other_name) = match direction {
            Direction::Egress => (src, dst, dst_name),
            Direction::Ingress => (dst, src, None),
        };
        let subject_name = self.endpoint_name(subject);
        let allowed_by: Vec<RuleRef> = v
            .allowed_by
            .iter()
            .map(|r| {
                let p = self.policy(r.policy);
                RuleRef {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    rule_index: r.index,
                }
            })
            .collect();
        let mut misses = Vec::new();
        let dst_info = self.selectable_pod(dst).map(|d| self.pod(d));
        let steps = match self.selectable_pod(subject) {
            Some(pod) if v.applicable => {
                let remote = (other, other_name);
                self.tier_steps(direction, v, pod, remote, port, protocol, dst_info)
            }
            _ => Vec::new(),
        };
        let step_text = |tier: crate::tier::PolicyTier| {
            steps
                .iter()
                .find(|s| s.tier == tier && s.outcome != StepOutcome::NoPolicies)
                .map(|s| s.text.clone())
        };
        let admin_text = step_text(crate::tier::PolicyTier::Admin);
        let reason = if let Some(ex) = v.exempt {
            match ex {
                Exemption::SamePod => {
                    "traffic from a pod to itself is not subject to NetworkPolicy.".into()
                }
                Exemption::OwnNode => format!(
                    "traffic from the node {subject_name} runs on is always allowed (pods cannot block their node)."
                ),
            }
        } else if !v.applicable {
            match subject.pod {
                Some(_) => format!(
                    "{subject_name} uses the host network, so no NetworkPolicy selects it: its {direction} is not restricted."
                ),
                None => format!(
                    "{subject_name} is outside the cluster: its {direction} is not subject to NetworkPolicy."
                ),
            }
        } else if v.tier == Tier::Admin {
            format!("admin tier: {}", admin_text.clone().unwrap_or_default())
        } else if !v.isolated {
            let baseline = step_text(crate::tier::PolicyTier::Baseline);
            let head = match v.tier {
                Tier::Baseline => format!(
                    "no NetworkPolicy selects {subject_name} for {direction}; baseline tier: {}",
                    baseline.unwrap_or_default()
                ),
                _ => match baseline {
                    Some(b) => format!(
                        "no NetworkPolicy selects {subject_name} for {direction} and the baseline tier does not decide ({b}): all {direction} is allowed."
                    ),
                    None => format!(
                        "no NetworkPolicy selects {subject_name} for {direction}: all {direction} is allowed."
                    ),
                },
            };
            with_admin_prefix(admin_text.as_deref(), head)
        } else if v.allowed {
            let rules: Vec<String> = allowed_by
                .iter()
                .map(|r| {
                    format!(
                        "{}/{} {direction} rule {}",
                        r.namespace, r.name, r.rule_index
                    )
                })
                .collect();
            with_admin_prefix(
                admin_text.as_deref(),
                format!("allowed by {}.", rules.join(", ")),
            )
        } else {
            for &policy in v.isolated_by.iter() {
                misses.push(self.policy_miss(policy, direction, other, port, protocol, dst_info));
            }
            let names: Vec<String> = v
                .isolated_by
                .iter()
                .map(|p| self.policy(*p).key())
                .collect();
            let text = format!(
                "{subject_name} is isolated for {direction} by {} and no rule admits {} on {}: {}",
                names.join(", "),
                self.endpoint_name(other),
                port_text(port, protocol),
                misses
                    .iter()
                    .map(|m| m.explanation.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            with_admin_prefix(admin_text.as_deref(), text)
        };
        DirectionExplanation {
            direction,
            applicable: v.applicable,
            isolated: v.isolated,
            allowed: v.allowed,
            allowed_by,
            isolated_by: v.isolated_by.iter().map(|p| self.policy_ref(*p)).collect(),
            reason,
            misses,
            tier: v.tier,
            decided_by: v.decided_by.map(|r| self.tier_rule_ref(r)),
            passed_by: v.passed_by.map(|r| self.tier_rule_ref(r)),
            tiers: steps,
        }
    }

    fn policy_miss(
        &self,
        policy: PolicyId,
        direction: Direction,
        other: &Endpoint,
        port: u16,
        protocol: Protocol,
        dst_info: Option<&crate::model::PodInfo>,
    ) -> PolicyMiss {
        let info = self.policy(policy);
        let rules = info.rules(direction);
        if rules.is_empty() {
            return PolicyMiss {
                policy: self.policy_ref(policy),
                explanation: format!(
                    "{} has no {direction} rules, so it denies all {direction} to the pods it selects.",
                    info.key()
                ),
                nearest: None,
            };
        }
        let mut best: Option<(u8, RuleMiss)> = None;
        for (ri, rule) in rules.iter().enumerate() {
            let mut reasons = Vec::new();
            let peer_ok = rule.peers.is_empty()
                || (0..rule.peers.len())
                    .any(|pi| self.peer_matches(policy, direction, ri, pi, other));
            if !peer_ok {
                // The peer needing the fewest changes speaks for the rule.
                let closest = rule
                    .peers
                    .iter()
                    .map(|p| self.peer_misses(policy, p, other))
                    .min_by_key(Vec::len)
                    .unwrap_or_default();
                reasons.extend(closest);
            }
            let port_ok = rule.ports.is_empty()
                || rule
                    .ports
                    .iter()
                    .any(|pm| Self::port_matches(pm, port, protocol, dst_info));
            if !port_ok {
                reasons.push(self.port_miss(&rule.ports, port, protocol, dst_info));
            }
            let score = u8::from(!peer_ok) + u8::from(!port_ok);
            if best.as_ref().is_none_or(|(s, _)| score < *s) {
                let miss = RuleMiss {
                    rule_index: ri as u32,
                    peer_matched: peer_ok,
                    port_matched: port_ok,
                    reasons,
                };
                best = Some((score, miss));
            }
        }
        let (_, nearest) = best.expect("rules is not empty");
        let explanation = format!(
            "{} {direction} rule {} is the nearest miss: {}.",
            info.key(),
            nearest.rule_index,
            nearest.reasons.join("; ")
        );
        PolicyMiss {
            policy: self.policy_ref(policy),
            explanation,
            nearest: Some(nearest),
        }
    }

    fn peer_misses(&self, policy: PolicyId, peer: &Peer, other: &Endpoint) -> Vec<String> {
        let info = self.policy(policy);
        match peer {
            Peer::IpBlock { cidr, except } => {
                if !cidr.contains(&other.ip) {
                    vec![format!("{} is not in ipBlock {cidr}", other.ip)]
                } else if let Some(e) = except.iter().find(|e| e.contains(&other.ip)) {
                    vec![format!(
                        "{} is in ipBlock {cidr} but excluded by except {e}",
                        other.ip
                    )]
                } else {
                    Vec::new()
                }
            }
            Peer::Pods {
                namespace_selector,
                pod_selector,
            } => {
                let Some(pod) = other.pod else {
                    return vec![format!(
                        "{} is not a pod in the cluster, and pod/namespace selectors match only pods",
                        other.ip
                    )];
                };
                let p = self.pod(pod);
                if p.host_network {
                    return vec![format!(
                        "{}/{} uses the host network, and pod/namespace selectors do not match host-network pods",
                        p.namespace, p.name
                    )];
                }
                let mut out = Vec::new();
                match namespace_selector {
                    None if p.namespace != info.namespace => out.push(format!(
                        "{}/{} is in namespace `{}`, but this peer (no namespaceSelector) selects only pods in `{}`",
                        p.namespace, p.name, p.namespace, info.namespace
                    )),
                    None => {}
                    Some(sel) => {
                        let labels = self.namespace(&p.namespace).map(|n| &n.labels);
                        let empty = Default::default();
                        for m in sel.misses(labels.unwrap_or(&empty)) {
                            out.push(format!("namespace `{}` {m}", p.namespace));
                        }
                    }
                }
                if let Some(sel) = pod_selector {
                    for m in sel.misses(&p.labels) {
                        out.push(format!("pod {}/{} {m}", p.namespace, p.name));
                    }
                }
                out
            }
        }
    }

    fn port_miss(
        &self,
        ports: &[crate::model::PortMatch],
        port: u16,
        protocol: Protocol,
        dst: Option<&crate::model::PodInfo>,
    ) -> String {
        if !protocol.has_ports() {
            return format!(
                "{protocol} has no ports, and rules that list ports admit only {}",
                ports
                    .iter()
                    .map(|p| p.protocol.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            );
        }
        let listed: Vec<String> = ports
            .iter()
            .map(|pm| match (&pm.port, dst) {
                (Some(crate::model::PortSpec::Name(n)), Some(d)) => {
                    match d.named_port(n, pm.protocol) {
                        Some(p) => format!("{pm} (= {p} on {}/{})", d.namespace, d.name),
                        None => format!("{pm} (not declared by {}/{})", d.namespace, d.name),
                    }
                }
                (Some(crate::model::PortSpec::Name(_)), None) => {
                    format!("{pm} (unresolvable: the destination is not a pod)")
                }
                _ => pm.to_string(),
            })
            .collect();
        format!(
            "{} is not in [{}]",
            port_text(port, protocol),
            listed.join(", ")
        )
    }

    /// Pods that `pod` may reach or be reached from is a what-if question;
    /// this helper names a pod for messages.
    pub fn pod_name(&self, pod: PodId) -> String {
        let p = self.pod(pod);
        format!("{}/{}", p.namespace, p.name)
    }
}

/// The Admin tier's word (a Pass, or no match) before the NetworkPolicy
/// or Baseline reason; nothing when no Admin policy applies.
fn with_admin_prefix(admin: Option<&str>, text: String) -> String {
    match admin {
        Some(a) => format!("admin tier: {a} {text}"),
        None => text,
    }
}

fn port_text(port: u16, protocol: Protocol) -> String {
    if protocol.has_ports() {
        format!("{protocol} {port}")
    } else {
        protocol.to_string()
    }
}

/// One connection as the explanation reads it.
struct Conn<'a> {
    src: &'a Endpoint,
    dst: &'a Endpoint,
    /// The DNS name `dst` was reached by, if known.
    dst_name: Option<&'a str>,
    port: u16,
    protocol: Protocol,
}
