//! Explaining the cluster-scoped tiers: for one direction, the walk through
//! the Admin tier, NetworkPolicy and the Baseline tier, which decided and
//! why, the nearest miss inside a tier, and which rule passed it on.

use serde::Serialize;

use crate::cluster::{Cluster, DirectionVerdict, Endpoint};
use crate::model::{Direction, PodId, PodInfo, Protocol};
use crate::tier::{
    ClusterPolicyKind, NamespaceMatch, PolicyTier, Tier, TierAction, TierPeer, TierPort, TierRuleId,
};

/// A rule of an Admin or Baseline policy.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TierRuleRef {
    pub tier: PolicyTier,
    pub kind: ClusterPolicyKind,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    pub direction: Direction,
    pub rule_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    pub action: TierAction,
    /// `tier/policy/direction/rule`, as in the flows' `decided_by` column.
    pub key: String,
}

/// The rule of a tier that came closest to matching.
#[derive(Clone, Debug, Serialize)]
pub struct TierRuleMiss {
    pub rule: TierRuleRef,
    pub peer_matched: bool,
    pub port_matched: bool,
    /// What did not match, in words.
    pub reasons: Vec<String>,
}

/// What one tier did with the connection.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// A rule accepted or denied: final.
    Decided,
    /// A Pass rule handed the connection to the next tier.
    Passed,
    /// The tier had policies for this pod but none of their rules matched.
    NoMatch,
    /// No policy of the tier applies to this pod in this direction.
    NoPolicies,
    /// An earlier tier decided.
    NotReached,
}

/// One tier of the walk (Admin or Baseline).
#[derive(Clone, Debug, Serialize)]
pub struct TierStep {
    pub tier: PolicyTier,
    pub outcome: StepOutcome,
    /// Policies of this tier whose subject the pod is, in evaluation order.
    pub policies: Vec<String>,
    /// The deciding or passing rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<TierRuleRef>,
    /// No match: the closest rule. Denied: the closest earlier rule that
    /// would have accepted or passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest: Option<TierRuleMiss>,
    pub text: String,
}

impl Cluster {
    pub fn tier_rule_ref(&self, id: TierRuleId) -> TierRuleRef {
        let p = self.cluster_policy(id.policy);
        let rule = self.tier_rule(id);
        TierRuleRef {
            tier: p.tier,
            kind: p.kind,
            policy: p.name.clone(),
            priority: p.priority,
            direction: id.direction,
            rule_index: id.index,
            rule_name: rule.name.clone().filter(|n| !n.is_empty()),
            action: rule.action,
            key: self.decided_by_key(id),
        }
    }

    /// "AdminNetworkPolicy `x` (priority 10) ingress rule `name`".
    pub fn describe_tier_rule(&self, id: TierRuleId) -> String {
        let r = self.tier_rule_ref(id);
        let priority = r
            .priority
            .map(|p| format!(" (priority {p})"))
            .unwrap_or_default();
        let rule = match &r.rule_name {
            Some(n) => format!("rule `{n}`"),
            None => format!("rule {}", r.rule_index),
        };
        format!(
            "{} `{}`{priority} {} {rule}",
            r.kind.as_str(),
            r.policy,
            r.direction
        )
    }

    /// The walk through the Admin and Baseline tiers for one direction.
    #[expect(clippy::too_many_arguments, reason = "one direction of one connection")]
    pub(crate) fn tier_steps(
        &self,
        direction: Direction,
        v: &DirectionVerdict,
        subject: PodId,
        (other, other_name): (&Endpoint, Option<&str>),
        port: u16,
        protocol: Protocol,
        dst_info: Option<&PodInfo>,
    ) -> Vec<TierStep> {
        let mut steps = Vec::new();
        for tier in [PolicyTier::Admin, PolicyTier::Baseline] {
            let policies = self.tier_subject_policies(tier, subject, direction);
            let names: Vec<String> = policies
                .iter()
                .map(|p| self.cluster_policy(*p).name.clone())
                .collect();
            let this = tier.tier();
            let reached = match tier {
                PolicyTier::Admin => true,
                PolicyTier::Baseline => !v.isolated && v.tier != Tier::Admin,
            };
            let decided_here = v
                .decided_by
                .filter(|r| self.cluster_policy(r.policy).tier == tier);
            let passed_here = v
                .passed_by
                .filter(|r| self.cluster_policy(r.policy).tier == tier);
            let ctx = MissCtx {
                direction,
                subject,
                other,
                other_name,
                port,
                protocol,
                dst_info,
            };
            let (outcome, rule, nearest, text) = if policies.is_empty() {
                let text = format!(
                    "no {this}-tier policy applies to {} for {direction}.",
                    self.pod_name(subject)
                );
                (StepOutcome::NoPolicies, None, None, text)
            } else if !reached {
                let text = if v.tier == Tier::Admin {
                    "not reached: the admin tier decided.".to_string()
                } else {
                    format!(
                        "not reached: a NetworkPolicy isolates {} for {direction}.",
                        self.pod_name(subject)
                    )
                };
                (StepOutcome::NotReached, None, None, text)
            } else if let Some(r) = decided_here {
                let nearest = self.tier_nearest(policies, &ctx, Some(r));
                let verb = match self.tier_rule(r).action {
                    TierAction::Accept => "accepted",
                    TierAction::Deny => "denied",
                    TierAction::Pass => "passed",
                };
                let mut text = format!("{verb} by {}.", self.describe_tier_rule(r));
                if let Some(n) = &nearest {
                    text.push_str(&format!(
                        " Nearest earlier non-deny rule: {} ({}).",
                        n.rule.key,
                        n.reasons.join("; ")
                    ));
                }
                (
                    StepOutcome::Decided,
                    Some(self.tier_rule_ref(r)),
                    nearest,
                    text,
                )
            } else if let Some(r) = passed_here {
                let next = match tier {
                    PolicyTier::Admin => "NetworkPolicy",
                    PolicyTier::Baseline => "the default (allow)",
                };
                let text = format!("passed to {next} by {}.", self.describe_tier_rule(r));
                (StepOutcome::Passed, Some(self.tier_rule_ref(r)), None, text)
            } else {
                let nearest = self.tier_nearest(policies, &ctx, None);
                let mut text = format!("no {this}-tier rule matched");
                if let Some(n) = &nearest {
                    text.push_str(&format!(
                        " (nearest miss: {}: {})",
                        n.rule.key,
                        n.reasons.join("; ")
                    ));
                }
                text.push('.');
                (StepOutcome::NoMatch, None, nearest, text)
            };
            let mut text = text;
            if matches!(outcome, StepOutcome::Decided | StepOutcome::NoMatch) {
                for r in self.unevaluable_before(policies, &ctx, decided_here) {
                    text.push_str(&format!(
                        " {} has domainNames peers that could not be evaluated (flowgate does not know which DNS name {} was reached by).",
                        self.describe_tier_rule(r),
                        other.ip
                    ));
                }
            }
            steps.push(TierStep {
                tier,
                outcome,
                policies: names,
                rule,
                nearest,
                text,
            });
        }
        steps
    }

    /// Rules before `until` (all without it) whose ports match but whose
    /// domainNames peers cannot be judged.
    fn unevaluable_before(
        &self,
        policies: &[crate::tier::ClusterPolicyId],
        ctx: &MissCtx<'_>,
        until: Option<TierRuleId>,
    ) -> Vec<TierRuleId> {
        let mut out = Vec::new();
        for &policy in policies {
            for (ri, rule) in self
                .cluster_policy(policy)
                .rules(ctx.direction)
                .iter()
                .enumerate()
            {
                let id = TierRuleId {
                    policy,
                    direction: ctx.direction,
                    index: ri as u32,
                };
                if Some(id) == until {
                    return out;
                }
                let domains = rule
                    .peers
                    .iter()
                    .any(|p| matches!(p, TierPeer::DomainNames(_)));
                // With a known name the rule was judged like any other.
                if domains
                    && ctx.other_name.is_none()
                    && Self::tier_rule_ports_match(rule, ctx.port, ctx.protocol, ctx.dst_info)
                {
                    out.push(id);
                }
            }
        }
        out
    }

    /// The closest rule among `policies` (all of them, or those before
    /// `until` that do not deny).
    fn tier_nearest(
        &self,
        policies: &[crate::tier::ClusterPolicyId],
        ctx: &MissCtx<'_>,
        until: Option<TierRuleId>,
    ) -> Option<TierRuleMiss> {
        let mut best: Option<(u8, TierRuleMiss)> = None;
        'outer: for &policy in policies {
            let rules = self.cluster_policy(policy).rules(ctx.direction);
            for (ri, rule) in rules.iter().enumerate() {
                let id = TierRuleId {
                    policy,
                    direction: ctx.direction,
                    index: ri as u32,
                };
                if Some(id) == until {
                    break 'outer;
                }
                if until.is_some() && rule.action == TierAction::Deny {
                    continue;
                }
                let peer_ok = (0..rule.peers.len()).any(|pi| {
                    self.tier_peer_matches(id, pi, ctx.subject, ctx.other, ctx.other_name)
                });
                let port_ok =
                    Self::tier_rule_ports_match(rule, ctx.port, ctx.protocol, ctx.dst_info);
                let mut reasons = Vec::new();
                if !peer_ok {
                    let closest = rule
                        .peers
                        .iter()
                        .map(|p| self.tier_peer_misses(p, ctx))
                        .min_by_key(Vec::len)
                        .unwrap_or_default();
                    reasons.extend(closest);
                }
                if !port_ok {
                    reasons.push(self.tier_port_miss(rule.ports.as_deref(), ctx));
                }
                let score = u8::from(!peer_ok) + u8::from(!port_ok);
                if best.as_ref().is_none_or(|(s, _)| score < *s) {
                    best = Some((
                        score,
                        TierRuleMiss {
                            rule: self.tier_rule_ref(id),
                            peer_matched: peer_ok,
                            port_matched: port_ok,
                            reasons,
                        },
                    ));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    fn tier_peer_misses(&self, peer: &TierPeer, ctx: &MissCtx<'_>) -> Vec<String> {
        let other = ctx.other;
        let pod_peer = |ns: &NamespaceMatch, pods: Option<&crate::Selector>| -> Vec<String> {
            let Some(pod) = other.pod else {
                return vec![format!(
                    "{} is not a pod in the cluster, and namespaces/pods peers match only pods",
                    other.ip
                )];
            };
            let p = self.pod(pod);
            if p.host_network {
                return vec![format!(
                    "{}/{} uses the host network, and namespaces/pods peers do not match host-network pods",
                    p.namespace, p.name
                )];
            }
            let empty = Default::default();
            let labels = self.namespace(&p.namespace).map_or(&empty, |n| &n.labels);
            let subject_ns = &self.pod(ctx.subject).namespace;
            let subject_labels = self.namespace(subject_ns).map_or(&empty, |n| &n.labels);
            let mut out = Vec::new();
            match ns {
                NamespaceMatch::Selector(sel) => {
                    for m in sel.misses(labels) {
                        out.push(format!("namespace `{}` {m}", p.namespace));
                    }
                }
                rel => {
                    if !crate::tier::related_labels(rel, subject_labels, labels) {
                        let (how, keys) = match rel {
                            NamespaceMatch::SameLabels(k) => ("the same", k),
                            NamespaceMatch::NotSameLabels(k) => ("different", k),
                            NamespaceMatch::Selector(_) => unreachable!("handled above"),
                        };
                        out.push(format!(
                            "namespace `{}` does not have {how} values as `{subject_ns}` for label(s) {}",
                            p.namespace,
                            keys.join(", ")
                        ));
                    }
                }
            }
            if let Some(sel) = pods {
                for m in sel.misses(&p.labels) {
                    out.push(format!("pod {}/{} {m}", p.namespace, p.name));
                }
            }
            out
        };
        match peer {
            TierPeer::Namespaces(ns) => pod_peer(ns, None),
            TierPeer::Pods { namespaces, pods } => pod_peer(namespaces, Some(pods)),
            TierPeer::Nodes(sel) => match self.node_of(other) {
                None => vec![format!("{} is not the address of a known Node", other.ip)],
                Some(n) => {
                    let node = self.node_info(n);
                    sel.misses(&node.labels)
                        .into_iter()
                        .map(|m| format!("node `{}` {m}", node.name))
                        .collect()
                }
            },
            TierPeer::Networks(nets) => {
                if nets.iter().any(|n| n.contains(&other.ip)) {
                    Vec::new()
                } else {
                    let list: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
                    vec![format!(
                        "{} is not in networks [{}]",
                        other.ip,
                        list.join(", ")
                    )]
                }
            }
            TierPeer::DomainNames(names) => {
                let list: Vec<&str> = names.iter().map(|n| n.text.as_str()).collect();
                match ctx.other_name {
                    Some(q) if names.iter().any(|n| n.matches(q)) => Vec::new(),
                    Some(q) => vec![format!(
                        "{} was reached as `{q}`, which is not in domainNames [{}]",
                        other.ip,
                        list.join(", ")
                    )],
                    None => vec![format!(
                        "domainNames [{}] could not be evaluated: flowgate does not know which DNS name {} was reached by",
                        list.join(", "),
                        other.ip
                    )],
                }
            }
        }
    }

    fn tier_port_miss(&self, ports: Option<&[TierPort]>, ctx: &MissCtx<'_>) -> String {
        let text = if ctx.protocol.has_ports() {
            format!("{} {}", ctx.protocol, ctx.port)
        } else {
            ctx.protocol.to_string()
        };
        let listed: Vec<String> = ports
            .unwrap_or_default()
            .iter()
            .map(|tp| match (tp, ctx.dst_info) {
                (TierPort::Named(n), Some(d)) => match d.ports.iter().find(|p| &p.name == n) {
                    Some(p) => format!(
                        "{tp} (= {} {} on {}/{})",
                        p.protocol, p.port, d.namespace, d.name
                    ),
                    None => format!("{tp} (not declared by {}/{})", d.namespace, d.name),
                },
                (TierPort::Named(_), None) => {
                    format!("{tp} (unresolvable: the destination is not a pod)")
                }
                _ => tp.to_string(),
            })
            .collect();
        format!("{text} is not in [{}]", listed.join(", "))
    }
}

/// One direction of one connection, for nearest-miss reasons.
pub(crate) struct MissCtx<'a> {
    direction: Direction,
    subject: PodId,
    other: &'a Endpoint,
    /// The DNS name `other` was reached by, if known.
    other_name: Option<&'a str>,
    port: u16,
    protocol: Protocol,
    dst_info: Option<&'a PodInfo>,
}
