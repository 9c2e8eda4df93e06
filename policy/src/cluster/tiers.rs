//! The Admin and Baseline tiers inside the snapshot.
//!
//! Cluster policies are stored in evaluation order (every Admin policy by
//! ascending priority, then every Baseline one; ties by kind, then name).
//! At build time each pod learns, per direction, the ids of the policies
//! whose subject it is and that have rules in that direction, ascending, so
//! a verdict walks only those; namespace selectors are precompiled into
//! bitsets and node selectors into bitsets over the nodes.

use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Cluster, Endpoint, NsSet, dir_index};
use crate::model::{Direction, PodId, PodInfo, Protocol};
use crate::selector::Selector;
use crate::tier::{
    ClusterPolicyId, ClusterPolicyInfo, NamespaceMatch, NodeInfo, PolicyTier, TierAction, TierPeer,
    TierPort, TierRule, TierRuleId, TierSubject, related_labels,
};

#[derive(Clone, Debug)]
enum CompiledNs {
    Set(NsSet),
    /// sameLabels / notSameLabels: depends on the subject's namespace.
    Related(NamespaceMatch),
}

#[derive(Clone, Debug)]
enum CompiledPeer {
    Namespaces(CompiledNs),
    Pods {
        ns: CompiledNs,
        pods: Selector,
    },
    /// Bitset over node indexes.
    Nodes(NsSet),
    Networks(Box<[ipnet::IpNet]>),
    DomainNames,
}

/// A rule as the hot path reads it: contiguous with the other rules of its
/// policy, with a port prefilter so most rules are rejected without
/// touching anything else.
#[derive(Clone, Debug)]
struct CompiledRule {
    action: TierAction,
    /// No `ports`: every port and protocol.
    any_port: bool,
    /// Bit per protocol (TCP 1, UDP 2, SCTP 4) any port clause names.
    protocols: u8,
    /// Bounds of every port clause (named ports: 1-65535).
    lo: u16,
    hi: u16,
    /// Exactly one numeric clause, so the prefilter is the whole check.
    exact: bool,
    peers: Box<[CompiledPeer]>,
}

fn protocol_bit(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
        Protocol::Sctp => 4,
        Protocol::Icmp | Protocol::Icmpv6 => 0,
    }
}

impl CompiledRule {
    fn new(rule: &TierRule, peers: Box<[CompiledPeer]>) -> Self {
        let ports = rule.ports.as_deref().unwrap_or_default();
        let (mut protocols, mut lo, mut hi) = (0u8, u16::MAX, 0u16);
        for p in ports {
            let (bits, a, b) = match p {
                TierPort::Number { protocol, port } => (protocol_bit(*protocol), *port, *port),
                TierPort::Range {
                    protocol,
                    start,
                    end,
                } => (protocol_bit(*protocol), *start, *end),
                TierPort::Named(_) => (1 | 2 | 4, 1, u16::MAX),
            };
            protocols |= bits;
            lo = lo.min(a);
            hi = hi.max(b);
        }
        CompiledRule {
            action: rule.action,
            any_port: rule.ports.is_none(),
            protocols,
            lo,
            hi,
            exact: ports.len() == 1 && !matches!(ports[0], TierPort::Named(_)),
            peers,
        }
    }

    /// False only when no port clause can match.
    fn port_may_match(&self, port: u16, protocol: Protocol) -> bool {
        self.any_port
            || (self.protocols & protocol_bit(protocol) != 0 && (self.lo..=self.hi).contains(&port))
    }
}

#[derive(Debug, Default)]
pub(super) struct Tiers {
    nodes: Vec<NodeInfo>,
    node_by_ip: FxHashMap<IpAddr, u32>,
    node_by_name: FxHashMap<String, u32>,
    policies: Vec<ClusterPolicyInfo>,
    /// Policies `0..admin_count` are the Admin tier.
    admin_count: u32,
    /// Every rule of every policy; per policy and direction contiguous.
    rules: Vec<CompiledRule>,
    /// Per policy, `[ingress, egress]`: `(first, end)` indexes into `rules`.
    rule_ranges: Vec<[(u32, u32); 2]>,
    /// Per pod `[ingress, egress]`: policies whose subject it is, ascending.
    subjects: Vec<[Arc<[ClusterPolicyId]>; 2]>,
    selected: Vec<Vec<PodId>>,
}

fn bitset(n: usize, hit: impl Fn(usize) -> bool) -> NsSet {
    let mut words = vec![0u64; n.div_ceil(64)];
    for i in (0..n).filter(|i| hit(*i)) {
        words[i / 64] |= 1 << (i % 64);
    }
    NsSet(words)
}

impl Cluster {
    pub(super) fn compile_tiers(
        &mut self,
        nodes: Vec<NodeInfo>,
        mut policies: Vec<ClusterPolicyInfo>,
    ) {
        policies.sort_by_key(ClusterPolicyInfo::order_key);
        let mut t = Tiers {
            admin_count: policies
                .iter()
                .filter(|p| p.tier == PolicyTier::Admin)
                .count() as u32,
            ..Tiers::default()
        };
        for (i, n) in nodes.iter().enumerate() {
            // When two nodes claim an address, the one read last wins.
            for ip in &n.addresses {
                t.node_by_ip.insert(*ip, i as u32);
            }
            t.node_by_name.insert(n.name.clone(), i as u32);
        }
        let mut subjects: Vec<[Vec<ClusterPolicyId>; 2]> =
            vec![Default::default(); self.pods.len()];
        for (pi, p) in policies.iter().enumerate() {
            let mut ranges = [(0u32, 0u32); 2];
            for d in [Direction::Ingress, Direction::Egress] {
                let first = t.rules.len() as u32;
                for r in p.rules(d) {
                    let peers = r
                        .peers
                        .iter()
                        .map(|p| self.compile_peer(p, &nodes))
                        .collect();
                    t.rules.push(CompiledRule::new(r, peers));
                }
                ranges[dir_index(d)] = (first, t.rules.len() as u32);
            }
            t.rule_ranges.push(ranges);
            let mut sel = Vec::new();
            for (id, pod) in self.pods() {
                if !pod.selectable() || !self.subject_matches(&p.subject, id, pod) {
                    continue;
                }
                sel.push(id);
                // A policy with no rules in a direction does not affect it.
                for d in [Direction::Ingress, Direction::Egress] {
                    if !p.rules(d).is_empty() {
                        subjects[id.0 as usize][dir_index(d)].push(ClusterPolicyId(pi as u32));
                    }
                }
            }
            t.selected.push(sel);
        }
        // Pods with the same subject lists share one allocation: few
        // distinct lists, so the hot path stays in cache.
        let mut interned: FxHashMap<Vec<ClusterPolicyId>, Arc<[ClusterPolicyId]>> =
            FxHashMap::default();
        let mut share = |v: Vec<ClusterPolicyId>| {
            interned
                .entry(v)
                .or_insert_with_key(|v| Arc::from(v.as_slice()))
                .clone()
        };
        t.subjects = subjects
            .into_iter()
            .map(|[i, e]| [share(i), share(e)])
            .collect();
        t.nodes = nodes;
        t.policies = policies;
        self.tiers = Arc::new(t);
    }

    fn subject_matches(&self, s: &TierSubject, id: PodId, pod: &PodInfo) -> bool {
        let ns = &self.namespaces[self.pod_ns[id.0 as usize] as usize];
        match s {
            TierSubject::Namespaces(sel) => sel.matches(&ns.labels),
            TierSubject::Pods { namespaces, pods } => {
                namespaces.matches(&ns.labels) && pods.matches(&pod.labels)
            }
        }
    }

    fn compile_ns(&self, m: &NamespaceMatch) -> CompiledNs {
        match m {
            NamespaceMatch::Selector(s) => CompiledNs::Set(bitset(self.namespaces.len(), |i| {
                s.matches(&self.namespaces[i].labels)
            })),
            other => CompiledNs::Related(other.clone()),
        }
    }

    fn compile_peer(&self, p: &TierPeer, nodes: &[NodeInfo]) -> CompiledPeer {
        match p {
            TierPeer::Namespaces(m) => CompiledPeer::Namespaces(self.compile_ns(m)),
            TierPeer::Pods { namespaces, pods } => CompiledPeer::Pods {
                ns: self.compile_ns(namespaces),
                pods: pods.clone(),
            },
            TierPeer::Nodes(s) => {
                CompiledPeer::Nodes(bitset(nodes.len(), |i| s.matches(&nodes[i].labels)))
            }
            TierPeer::Networks(nets) => CompiledPeer::Networks(nets.clone().into_boxed_slice()),
            TierPeer::DomainNames(_) => CompiledPeer::DomainNames,
        }
    }

    fn ns_matches(&self, m: &CompiledNs, subject: PodId, peer: PodId) -> bool {
        let peer_ns = self.pod_ns[peer.0 as usize];
        match m {
            CompiledNs::Set(set) => set.contains(peer_ns),
            CompiledNs::Related(rel) => {
                let subject_ns = self.pod_ns[subject.0 as usize];
                related_labels(
                    rel,
                    &self.namespaces[subject_ns as usize].labels,
                    &self.namespaces[peer_ns as usize].labels,
                )
            }
        }
    }

    /// The node an endpoint is: by address, or the node a host-network pod
    /// runs on.
    pub(crate) fn node_of(&self, e: &Endpoint) -> Option<u32> {
        if self.tiers.nodes.is_empty() {
            return None;
        }
        if let Some(&n) = self.tiers.node_by_ip.get(&e.ip) {
            return Some(n);
        }
        let pod = self.pod(e.pod?);
        if !pod.host_network {
            return None;
        }
        self.tiers.node_by_name.get(pod.node.as_deref()?).copied()
    }

    fn compiled_rules(&self, policy: ClusterPolicyId, direction: Direction) -> &[CompiledRule] {
        let (first, end) = self.tiers.rule_ranges[policy.0 as usize][dir_index(direction)];
        &self.tiers.rules[first as usize..end as usize]
    }

    pub(crate) fn tier_peer_matches(
        &self,
        rule: TierRuleId,
        peer: usize,
        subject: PodId,
        other: &Endpoint,
    ) -> bool {
        let compiled = &self.compiled_rules(rule.policy, rule.direction)[rule.index as usize];
        self.compiled_peer_matches(&compiled.peers[peer], subject, other)
    }

    fn compiled_peer_matches(
        &self,
        compiled: &CompiledPeer,
        subject: PodId,
        other: &Endpoint,
    ) -> bool {
        match compiled {
            CompiledPeer::Namespaces(ns) => self
                .selectable_pod(other)
                .is_some_and(|o| self.ns_matches(ns, subject, o)),
            CompiledPeer::Pods { ns, pods } => self.selectable_pod(other).is_some_and(|o| {
                self.ns_matches(ns, subject, o) && pods.matches(&self.pod(o).labels)
            }),
            CompiledPeer::Nodes(set) => self.node_of(other).is_some_and(|n| set.contains(n)),
            CompiledPeer::Networks(nets) => nets.iter().any(|n| n.contains(&other.ip)),
            CompiledPeer::DomainNames => false,
        }
    }

    pub(crate) fn tier_port_matches(
        tp: &TierPort,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> bool {
        match tp {
            TierPort::Number {
                protocol: p,
                port: n,
            } => *p == protocol && *n == port,
            TierPort::Range {
                protocol: p,
                start,
                end,
            } => *p == protocol && (*start..=*end).contains(&port),
            // The container port's own protocol must be the connection's.
            TierPort::Named(name) => {
                protocol.has_ports()
                    && dst_pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
            }
        }
    }

    pub(crate) fn tier_rule_ports_match(
        rule: &TierRule,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> bool {
        rule.ports.as_ref().is_none_or(|ports| {
            ports
                .iter()
                .any(|tp| Self::tier_port_matches(tp, port, protocol, dst_pod))
        })
    }

    /// The policies of `tier` whose subject `pod` is, in evaluation order.
    pub(crate) fn tier_subject_policies(
        &self,
        tier: PolicyTier,
        pod: PodId,
        direction: Direction,
    ) -> &[ClusterPolicyId] {
        let list = &self.tiers.subjects[pod.0 as usize][dir_index(direction)];
        let split = list.partition_point(|id| id.0 < self.tiers.admin_count);
        match tier {
            PolicyTier::Admin => &list[..split],
            PolicyTier::Baseline => &list[split..],
        }
    }

    /// The first rule of `tier` matching the connection, and its action.
    #[expect(
        clippy::too_many_arguments,
        reason = "the verdict's hot path, no allocation"
    )]
    pub(super) fn tier_decision(
        &self,
        tier: PolicyTier,
        direction: Direction,
        subject: PodId,
        other: &Endpoint,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> Option<(TierRuleId, TierAction)> {
        for &policy in self.tier_subject_policies(tier, subject, direction) {
            for (ri, rule) in self.compiled_rules(policy, direction).iter().enumerate() {
                if !rule.port_may_match(port, protocol) {
                    continue;
                }
                let id = TierRuleId {
                    policy,
                    direction,
                    index: ri as u32,
                };
                // Several clauses or a named port: the full check.
                if !rule.exact
                    && !rule.any_port
                    && !Self::tier_rule_ports_match(self.tier_rule(id), port, protocol, dst_pod)
                {
                    continue;
                }
                if rule
                    .peers
                    .iter()
                    .any(|p| self.compiled_peer_matches(p, subject, other))
                {
                    return Some((id, rule.action));
                }
            }
        }
        None
    }

    pub fn cluster_policy(&self, id: ClusterPolicyId) -> &ClusterPolicyInfo {
        &self.tiers.policies[id.0 as usize]
    }

    /// Cluster-scoped policies in evaluation order: Admin, then Baseline.
    pub fn cluster_policies(&self) -> impl Iterator<Item = (ClusterPolicyId, &ClusterPolicyInfo)> {
        self.tiers
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (ClusterPolicyId(i as u32), p))
    }

    pub fn tier_rule(&self, id: TierRuleId) -> &TierRule {
        &self.cluster_policy(id.policy).rules(id.direction)[id.index as usize]
    }

    /// `tier/policy/direction/rule`, as in the flows' `decided_by` column.
    pub fn decided_by_key(&self, id: TierRuleId) -> String {
        self.cluster_policy(id.policy)
            .decided_by_key(id.direction, id.index)
    }

    /// What the tiers were compiled from, to compile them again with
    /// changed cluster policies.
    pub(super) fn tier_inputs(&self) -> (Vec<NodeInfo>, Vec<ClusterPolicyInfo>) {
        (self.tiers.nodes.clone(), self.tiers.policies.clone())
    }

    /// Pods a cluster policy's subject selects.
    pub fn tier_selected_pods(&self, id: ClusterPolicyId) -> &[PodId] {
        &self.tiers.selected[id.0 as usize]
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.tiers.nodes
    }

    /// The node holding `ip`, if any.
    pub fn node_for_ip(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.tiers
            .node_by_ip
            .get(&ip)
            .map(|&n| &self.tiers.nodes[n as usize])
    }

    pub(crate) fn node_info(&self, n: u32) -> &NodeInfo {
        &self.tiers.nodes[n as usize]
    }
}
