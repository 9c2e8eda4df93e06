//! The Admin and Baseline tiers inside the snapshot.
//!
//! Cluster policies are stored in evaluation order (every Admin policy by
//! ascending priority, then every Baseline one; ties by kind, then name).
//! At build time each pod learns, per direction, the ids of the policies
//! whose subject it is and that have rules in that direction, ascending, so
//! a verdict walks only those; namespace selectors are precompiled into
//! bitsets and node selectors into bitsets over the nodes.
//!
//! The hot path does not walk policies but a [`Walk`]: for each distinct
//! subject list (pods sharing one share it), the rules of those policies
//! flattened in evaluation order, each with an inline port prefilter, and
//! without the rules no connection in this snapshot can match (every peer
//! selects nothing that exists). A verdict then reads one short contiguous
//! array per direction and touches a rule's peers only when its port fits.

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
    /// A `pods` peer with a namespace selector, evaluated at build time:
    /// a bitset over pod indexes (shared by equal peers).
    PodSet(Arc<NsSet>),
    /// Bitset over node indexes.
    Nodes(NsSet),
    Networks(Box<[ipnet::IpNet]>),
    DomainNames(Box<[crate::tier::DomainName]>),
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
    /// The rule's id, for the verdict to name it.
    id: TierRuleId,
    /// Some peer may match something in this snapshot.
    live: bool,
}

fn protocol_bit(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
        Protocol::Sctp => 4,
        // No port clause names ICMP; only a rule without ports matches it.
        Protocol::Icmp | Protocol::Icmpv6 => 8,
    }
}

/// One rule in a [`Walk`]: its port prefilter inline, so that rejecting it
/// reads nothing else.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    lo: u16,
    hi: u16,
    /// Bit per protocol the rule may match (every bit: no `ports`).
    protocols: u8,
    /// The prefilter is not the whole port check (several clauses, or a
    /// named port).
    full_check: bool,
    /// Index into [`Tiers::rules`].
    rule: u32,
}

impl Candidate {
    fn port_may_match(&self, port: u16, protocol: Protocol) -> bool {
        self.protocols & protocol_bit(protocol) != 0 && self.lo <= port && port <= self.hi
    }
}

/// The rules a pod meets in one direction, Admin first, in evaluation order.
#[derive(Debug, Default)]
struct Walk {
    candidates: Box<[Candidate]>,
    /// `candidates[..admin_end]` are the Admin tier's.
    admin_end: u32,
}

impl CompiledRule {
    fn new(rule: &TierRule, id: TierRuleId, peers: Box<[CompiledPeer]>, live: bool) -> Self {
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
            id,
            live,
        }
    }

    fn candidate(&self, rule: u32) -> Candidate {
        if self.any_port {
            return Candidate {
                lo: 0,
                hi: u16::MAX,
                protocols: u8::MAX,
                full_check: false,
                rule,
            };
        }
        Candidate {
            lo: self.lo,
            hi: self.hi,
            protocols: self.protocols,
            full_check: !self.exact,
            rule,
        }
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
    walks: Vec<Walk>,
    selected: Vec<Vec<PodId>>,
    /// Some rule has a `domainNames` peer: only then does a verdict depend
    /// on the destination's DNS name.
    domain_peers: bool,
}

impl Tiers {
    /// One [`Walk`] per distinct (direction, subject list); returns each
    /// pod's `[ingress, egress]` walk.
    fn compile_walks(&mut self) -> Vec<[u32; 2]> {
        let mut index: FxHashMap<(usize, *const ClusterPolicyId), u32> = FxHashMap::default();
        let mut walk_of = Vec::with_capacity(self.subjects.len());
        for lists in &self.subjects {
            let mut of = [0u32; 2];
            for (d, list) in lists.iter().enumerate() {
                // Equal lists share one allocation (interned), so the
                // pointer identifies the list.
                let key = (d, list.as_ptr());
                of[d] = match index.get(&key) {
                    Some(&w) => w,
                    None => {
                        let w = self.walks.len() as u32;
                        let walk = self.walk(list, d);
                        self.walks.push(walk);
                        index.insert(key, w);
                        w
                    }
                };
            }
            walk_of.push(of);
        }
        walk_of
    }

    fn walk(&self, policies: &[ClusterPolicyId], d: usize) -> Walk {
        let mut candidates = Vec::new();
        let mut admin_end = 0;
        for &p in policies {
            let (first, end) = self.rule_ranges[p.0 as usize][d];
            for r in first..end {
                let rule = &self.rules[r as usize];
                if rule.live {
                    candidates.push(rule.candidate(r));
                }
            }
            if p.0 < self.admin_count {
                admin_end = candidates.len();
            }
        }
        Walk {
            candidates: candidates.into_boxed_slice(),
            admin_end: admin_end as u32,
        }
    }
}

/// The pod bitsets of `pods` peers, by (namespace selector, pod selector),
/// within a memory budget: past it, peers are matched by their selectors
/// at verdict time (slower, same answers).
#[derive(Default)]
struct PodSets {
    sets: FxHashMap<(String, String), Arc<NsSet>>,
    bits: usize,
}

impl PodSets {
    /// 64 MiB of bitsets.
    const BUDGET_BITS: usize = 64 << 23;

    fn key(ns: &NamespaceMatch, pods: &Selector) -> (String, String) {
        // Debug text: every string quoted, so equal keys mean equal selectors.
        (format!("{ns:?}"), format!("{pods:?}"))
    }

    fn get(&self, ns: &NamespaceMatch, pods: &Selector) -> Option<Arc<NsSet>> {
        self.sets.get(&Self::key(ns, pods)).cloned()
    }

    fn has_room(&self, pods: usize) -> bool {
        self.bits + pods <= Self::BUDGET_BITS
    }

    fn insert(&mut self, ns: &NamespaceMatch, pods: &Selector, set: Arc<NsSet>) {
        self.bits += set.0.len() * 64;
        self.sets.insert(Self::key(ns, pods), set);
    }
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
        let mut pod_sets = PodSets::default();
        for (pi, p) in policies.iter().enumerate() {
            let mut ranges = [(0u32, 0u32); 2];
            for d in [Direction::Ingress, Direction::Egress] {
                let first = t.rules.len() as u32;
                for (index, r) in p.rules(d).iter().enumerate() {
                    let peers: Box<[CompiledPeer]> = r
                        .peers
                        .iter()
                        .map(|p| self.compile_peer(p, &nodes, &mut pod_sets))
                        .collect();
                    let live = peers.iter().any(|p| self.peer_may_match(p));
                    t.domain_peers |= peers
                        .iter()
                        .any(|p| matches!(p, CompiledPeer::DomainNames(_)));
                    let id = TierRuleId {
                        policy: ClusterPolicyId(pi as u32),
                        direction: d,
                        index: index as u32,
                    };
                    t.rules.push(CompiledRule::new(r, id, peers, live));
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
        for (pod, walk) in self.pod_policies.iter_mut().zip(t.compile_walks()) {
            pod.walk = walk;
        }
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

    fn compile_peer(
        &self,
        p: &TierPeer,
        nodes: &[NodeInfo],
        pod_sets: &mut PodSets,
    ) -> CompiledPeer {
        match p {
            TierPeer::Namespaces(m) => CompiledPeer::Namespaces(self.compile_ns(m)),
            TierPeer::Pods {
                namespaces: namespaces @ NamespaceMatch::Selector(ns),
                pods,
            } => match pod_sets.get(namespaces, pods) {
                Some(set) => CompiledPeer::PodSet(set),
                None if pod_sets.has_room(self.pods.len()) => {
                    let set = Arc::new(bitset(self.pods.len(), |i| {
                        let pod = &self.pods[i];
                        pod.selectable()
                            && ns.matches(&self.namespaces[self.pod_ns[i] as usize].labels)
                            && pods.matches(&pod.labels)
                    }));
                    pod_sets.insert(namespaces, pods, set.clone());
                    CompiledPeer::PodSet(set)
                }
                None => CompiledPeer::Pods {
                    ns: self.compile_ns(namespaces),
                    pods: pods.clone(),
                },
            },
            TierPeer::Pods { namespaces, pods } => CompiledPeer::Pods {
                ns: self.compile_ns(namespaces),
                pods: pods.clone(),
            },
            TierPeer::Nodes(s) => {
                CompiledPeer::Nodes(bitset(nodes.len(), |i| s.matches(&nodes[i].labels)))
            }
            TierPeer::Networks(nets) => CompiledPeer::Networks(nets.clone().into_boxed_slice()),
            TierPeer::DomainNames(names) => CompiledPeer::DomainNames(names.clone().into()),
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

    /// Whether peer `peer` of `rule` matches `other` when `subject` is the
    /// pod the rule applies to (the subject matters for sameLabels).
    /// `other_name`: the DNS name `other` was reached by, if known (only
    /// `domainNames` peers read it).
    pub fn tier_peer_matches(
        &self,
        rule: TierRuleId,
        peer: usize,
        subject: PodId,
        other: &Endpoint,
        other_name: Option<&str>,
    ) -> bool {
        let compiled = &self.compiled_rules(rule.policy, rule.direction)[rule.index as usize];
        self.compiled_peer_matches(&compiled.peers[peer], subject, other, other_name)
    }

    fn compiled_peer_matches(
        &self,
        compiled: &CompiledPeer,
        subject: PodId,
        other: &Endpoint,
        other_name: Option<&str>,
    ) -> bool {
        match compiled {
            CompiledPeer::Namespaces(ns) => self
                .selectable_pod(other)
                .is_some_and(|o| self.ns_matches(ns, subject, o)),
            CompiledPeer::Pods { ns, pods } => self.selectable_pod(other).is_some_and(|o| {
                self.ns_matches(ns, subject, o) && pods.matches(&self.pod(o).labels)
            }),
            CompiledPeer::PodSet(set) => other.pod.is_some_and(|o| set.contains(o.0)),
            CompiledPeer::Nodes(set) => self.node_of(other).is_some_and(|n| set.contains(n)),
            CompiledPeer::Networks(nets) => nets.iter().any(|n| n.contains(&other.ip)),
            CompiledPeer::DomainNames(names) => {
                other_name.is_some_and(|q| names.iter().any(|n| n.matches(q)))
            }
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
    pub fn tier_subject_policies(
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
        other_name: Option<&str>,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> Option<(TierRuleId, TierAction)> {
        let walk = &self.tiers.walks
            [self.pod_policies[subject.0 as usize].walk[dir_index(direction)] as usize];
        let split = walk.admin_end as usize;
        let candidates = match tier {
            PolicyTier::Admin => &walk.candidates[..split],
            PolicyTier::Baseline => &walk.candidates[split..],
        };
        for c in candidates {
            if !c.port_may_match(port, protocol) {
                continue;
            }
            let rule = &self.tiers.rules[c.rule as usize];
            // Several clauses or a named port: the full check.
            if c.full_check
                && !Self::tier_rule_ports_match(self.tier_rule(rule.id), port, protocol, dst_pod)
            {
                continue;
            }
            if rule
                .peers
                .iter()
                .any(|p| self.compiled_peer_matches(p, subject, other, other_name))
            {
                return Some((rule.id, rule.action));
            }
        }
        None
    }

    /// False when the peer matches nothing in this snapshot, whoever the
    /// subject: its namespace or node set is empty, no selectable pod fits
    /// it.
    fn peer_may_match(&self, p: &CompiledPeer) -> bool {
        match p {
            CompiledPeer::Namespaces(CompiledNs::Set(set)) | CompiledPeer::Nodes(set) => {
                set.0.iter().any(|w| *w != 0)
            }
            CompiledPeer::PodSet(set) => set.0.iter().any(|w| *w != 0),
            CompiledPeer::Pods {
                ns: CompiledNs::Set(set),
                pods,
            } => self.pods().any(|(id, pod)| {
                pod.selectable()
                    && set.contains(self.pod_ns[id.0 as usize])
                    && pods.matches(&pod.labels)
            }),
            CompiledPeer::Namespaces(CompiledNs::Related(_))
            | CompiledPeer::Pods {
                ns: CompiledNs::Related(_),
                ..
            }
            | CompiledPeer::Networks(_)
            | CompiledPeer::DomainNames(_) => true,
        }
    }

    /// Whether a verdict can depend on the DNS name the destination was
    /// reached by (some cluster policy has a `domainNames` peer).
    pub fn judges_domain_names(&self) -> bool {
        self.tiers.domain_peers
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
