//! The compiled, indexed cluster snapshot and the fast verdict.
//!
//! Built once per cluster-state generation, then read by many threads. At
//! build time every pod learns which policies isolate it in each direction,
//! and every namespace selector is evaluated against every namespace into a
//! bitset, so a verdict only touches the policies of the two endpoints and
//! never the cluster's unrelated policies. The cluster-scoped tiers follow
//! the same design (see [`tiers`]): every pod knows, per direction, the
//! Admin and Baseline policies whose subject it is, in evaluation order.

mod change;
mod tiers;

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use rustc_hash::FxHashMap;

use crate::convert;
use crate::crd::ClusterPolicyObject;
use crate::error::BuildError;
use crate::model::{
    Direction, NamespaceInfo, Peer, PodId, PodInfo, PolicyId, PolicyInfo, PortMatch, PortSpec,
    Protocol, RuleId, namespace_default_labels,
};
use crate::selector::Selector;
use crate::tier::{self, Tier, TierRuleId};
use crate::yaml::ClusterObjects;

/// One side of a connection: an address, and the pod holding it if any.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// `None`: outside the cluster ("world").
    pub pod: Option<PodId>,
}

/// The other end of a direction, and the DNS name it was reached by if
/// known (egress only: `domainNames` peers read it).
#[derive(Clone, Copy)]
struct Remote<'a> {
    endpoint: &'a Endpoint,
    name: Option<&'a str>,
}

/// The verdict for one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionVerdict {
    /// False when this side is not a pod that policies can select (outside
    /// the cluster, or hostNetwork): the direction is then not evaluated.
    pub applicable: bool,
    pub isolated: bool,
    pub allowed: bool,
    /// Every rule admitting the flow.
    pub allowed_by: Vec<RuleId>,
    /// Every policy isolating the endpoint in this direction.
    pub isolated_by: Arc<[PolicyId]>,
    /// Allowed whatever the policies say (pod to itself, node to its pod).
    pub exempt: Option<Exemption>,
    /// The tier that decided this direction.
    pub tier: Tier,
    /// The Admin or Baseline rule that decided (Accept or Deny), if one did.
    pub decided_by: Option<TierRuleId>,
    /// The Pass rule that handed the direction to the next tier, if any.
    pub passed_by: Option<TierRuleId>,
}

impl DirectionVerdict {
    /// Exempt traffic is allowed whatever any tier said; no rule decided it.
    fn exempt(&mut self, why: Exemption) {
        self.allowed = true;
        self.exempt = Some(why);
        self.tier = Tier::Default;
        self.decided_by = None;
    }
}

/// Traffic NetworkPolicy cannot block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// A pod talking to itself never leaves its network namespace.
    SamePod,
    /// Pods cannot block traffic from the node they run on (kubelet probes).
    OwnNode,
}

/// The verdict for a connection: egress at the source AND ingress at the
/// destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
    pub generation: u64,
}

/// Namespaces as a bitset over namespace indexes.
#[derive(Clone, Debug)]
struct NsSet(Vec<u64>);

impl NsSet {
    fn contains(&self, ns: u32) -> bool {
        self.0
            .get(ns as usize / 64)
            .is_some_and(|w| w & (1 << (ns % 64)) != 0)
    }
}

#[derive(Clone, Debug)]
enum CompiledPeer {
    Pods {
        namespaces: NsSet,
        pod_selector: Option<Selector>,
    },
    IpBlock,
}

/// Per policy and direction, per rule, per peer.
type CompiledRules = Vec<Vec<CompiledPeer>>;

/// An immutable, indexed snapshot of namespaces, pods and policies.
#[derive(Debug)]
pub struct Cluster {
    generation: u64,
    namespaces: Vec<NamespaceInfo>,
    ns_index: FxHashMap<String, u32>,
    pods: Vec<PodInfo>,
    pod_ns: Vec<u32>,
    pod_index: FxHashMap<(String, String), PodId>,
    ip_index: FxHashMap<IpAddr, PodId>,
    policies: Vec<PolicyInfo>,
    policy_ns: Vec<u32>,
    /// `[ingress, egress]` peers of each policy, compiled.
    compiled: Vec<[CompiledRules; 2]>,
    /// Per pod, what a verdict reads first about it.
    pod_policies: Vec<PodPolicies>,
    selected: Vec<Vec<PodId>>,
    no_policies: Arc<[PolicyId]>,
    /// Shared with what-if variants of this snapshot: the cluster tiers
    /// depend on pods and namespaces only, never on NetworkPolicies.
    tiers: Arc<tiers::Tiers>,
}

/// What a verdict reads about a pod, together, so that it costs one cache
/// line: per direction `[ingress, egress]`, the NetworkPolicies isolating it
/// and its walk through the cluster tiers (see [`tiers`]).
#[derive(Debug)]
struct PodPolicies {
    isolating: [Arc<[PolicyId]>; 2],
    walk: [u32; 2],
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Cluster {
    /// Builds a snapshot; any object the API would reject is an error.
    pub fn build(objects: &ClusterObjects, generation: u64) -> Result<Cluster, BuildError> {
        let (cluster, errors) = Self::build_inner(
            &objects.namespaces,
            &objects.pods,
            &objects.policies,
            &objects.nodes,
            &objects.cluster_policies,
            generation,
        );
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(cluster),
        }
    }

    /// Builds a snapshot, leaving out (and returning) invalid objects.
    pub fn build_lenient<'a>(
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        pods: impl IntoIterator<Item = &'a Pod>,
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
        generation: u64,
    ) -> (Cluster, Vec<BuildError>) {
        Self::build_inner(namespaces, pods, policies, [], [], generation)
    }

    /// [`Cluster::build_lenient`] with Nodes and the cluster-scoped policy
    /// tiers too.
    pub fn build_lenient_with_tiers<'a>(
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        pods: impl IntoIterator<Item = &'a Pod>,
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
        nodes: impl IntoIterator<Item = &'a Node>,
        cluster_policies: impl IntoIterator<Item = &'a ClusterPolicyObject>,
        generation: u64,
    ) -> (Cluster, Vec<BuildError>) {
        Self::build_inner(
            namespaces,
            pods,
            policies,
            nodes,
            cluster_policies,
            generation,
        )
    }

    fn build_inner<'a>(
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        pods: impl IntoIterator<Item = &'a Pod>,
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
        nodes: impl IntoIterator<Item = &'a Node>,
        cluster_policies: impl IntoIterator<Item = &'a ClusterPolicyObject>,
        generation: u64,
    ) -> (Cluster, Vec<BuildError>) {
        let mut errors = Vec::new();
        let mut c = Cluster {
            generation,
            namespaces: Vec::new(),
            ns_index: FxHashMap::default(),
            pods: Vec::new(),
            pod_ns: Vec::new(),
            pod_index: FxHashMap::default(),
            ip_index: FxHashMap::default(),
            policies: Vec::new(),
            policy_ns: Vec::new(),
            compiled: Vec::new(),
            pod_policies: Vec::new(),
            selected: Vec::new(),
            no_policies: Arc::from(Vec::new()),
            tiers: Arc::default(),
        };
        for ns in namespaces {
            let info = convert::namespace(ns);
            match c.ns_index.get(&info.name) {
                Some(&i) => c.namespaces[i as usize] = info,
                None => {
                    c.ns_index
                        .insert(info.name.clone(), c.namespaces.len() as u32);
                    c.namespaces.push(info);
                }
            }
        }
        for p in pods {
            match convert::pod(p) {
                Ok(info) => {
                    let ns = c.ensure_namespace(&info.namespace);
                    let id = PodId(c.pods.len() as u32);
                    c.pod_index
                        .insert((info.namespace.clone(), info.name.clone()), id);
                    c.pod_ns.push(ns);
                    c.pods.push(info);
                }
                Err(problem) => errors.push(BuildError::Pod {
                    namespace: p
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    problem,
                }),
            }
        }
        // The IP index holds running, pod-network pods; when two claim an
        // address, the one read last wins (the newer object).
        for (i, pod) in c.pods.iter().enumerate() {
            if pod.host_network || pod.terminated {
                continue;
            }
            for ip in &pod.ips {
                c.ip_index.insert(*ip, PodId(i as u32));
            }
        }
        for np in policies {
            match convert::policy(np) {
                Ok(info) => {
                    let ns = c.ensure_namespace(&info.namespace);
                    c.policy_ns.push(ns);
                    c.policies.push(info);
                }
                Err(problem) => errors.push(BuildError::Policy {
                    namespace: np
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: np.metadata.name.clone().unwrap_or_default(),
                    problem,
                }),
            }
        }
        let mut node_infos = Vec::new();
        for n in nodes {
            match tier::node(n) {
                Ok(info) => node_infos.push(info),
                Err(problem) => errors.push(BuildError::Node {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    problem,
                }),
            }
        }
        let mut tier_policies = Vec::new();
        for o in cluster_policies {
            match tier::cluster_policy(o) {
                Ok(info) => tier_policies.push(info),
                Err(problem) => errors.push(BuildError::ClusterPolicy {
                    kind: o.kind(),
                    name: o.name().to_string(),
                    problem,
                }),
            }
        }
        c.compile();
        c.compile_tiers(node_infos, tier_policies);
        (c, errors)
    }

    /// Pods and policies may name a namespace no Namespace object describes
    /// (partial YAML); it then has just its name label, as the API sets it.
    fn ensure_namespace(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.ns_index.get(name) {
            return i;
        }
        let mut labels = Default::default();
        namespace_default_labels(name, &mut labels);
        let i = self.namespaces.len() as u32;
        self.namespaces.push(NamespaceInfo {
            name: name.to_string(),
            labels,
        });
        self.ns_index.insert(name.to_string(), i);
        i
    }

    fn ns_set(&self, selector: Option<&Selector>, own: u32) -> NsSet {
        let mut words = vec![0u64; self.namespaces.len().div_ceil(64)];
        for (i, ns) in self.namespaces.iter().enumerate() {
            let hit = match selector {
                None => i as u32 == own,
                Some(s) => s.matches(&ns.labels),
            };
            if hit {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        NsSet(words)
    }

    fn compile(&mut self) {
        let mut pods_by_ns: Vec<Vec<PodId>> = vec![Vec::new(); self.namespaces.len()];
        for (i, ns) in self.pod_ns.iter().enumerate() {
            pods_by_ns[*ns as usize].push(PodId(i as u32));
        }
        let mut isolating: Vec<[Vec<PolicyId>; 2]> = vec![Default::default(); self.pods.len()];
        let mut compiled = Vec::with_capacity(self.policies.len());
        let mut selected = Vec::with_capacity(self.policies.len());
        for (pi, policy) in self.policies.iter().enumerate() {
            let own = self.policy_ns[pi];
            let compile_rules = |rules: &[crate::model::Rule]| -> CompiledRules {
                rules
                    .iter()
                    .map(|r| {
                        r.peers
                            .iter()
                            .map(|p| match p {
                                Peer::Pods {
                                    namespace_selector,
                                    pod_selector,
                                } => CompiledPeer::Pods {
                                    namespaces: self.ns_set(namespace_selector.as_ref(), own),
                                    pod_selector: pod_selector.clone(),
                                },
                                Peer::IpBlock { .. } => CompiledPeer::IpBlock,
                            })
                            .collect()
                    })
                    .collect()
            };
            compiled.push([
                compile_rules(&policy.ingress),
                compile_rules(&policy.egress),
            ]);
            let mut sel = Vec::new();
            for &pod in &pods_by_ns[own as usize] {
                let info = &self.pods[pod.0 as usize];
                if !info.selectable() || !policy.pod_selector.matches(&info.labels) {
                    continue;
                }
                sel.push(pod);
                if policy.isolates_ingress {
                    isolating[pod.0 as usize][0].push(PolicyId(pi as u32));
                }
                if policy.isolates_egress {
                    isolating[pod.0 as usize][1].push(PolicyId(pi as u32));
                }
            }
            selected.push(sel);
        }
        let empty = self.no_policies.clone();
        let share = |v: Vec<PolicyId>| {
            if v.is_empty() {
                empty.clone()
            } else {
                Arc::from(v)
            }
        };
        self.pod_policies = isolating
            .into_iter()
            .map(|[i, e]| PodPolicies {
                isolating: [share(i), share(e)],
                walk: [0, 0],
            })
            .collect();
        self.compiled = compiled;
        self.selected = selected;
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The endpoint for an address: the running pod-network pod holding it,
    /// or the world.
    pub fn endpoint_for_ip(&self, ip: IpAddr) -> Endpoint {
        Endpoint {
            ip,
            pod: self.ip_index.get(&ip).copied(),
        }
    }

    pub fn find_pod(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.pod_index
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// The endpoint of a pod at `ip`, or at its first IP. A hostNetwork pod
    /// is node traffic: its endpoint is its address with no pod.
    pub fn pod_endpoint(&self, pod: PodId, ip: Option<IpAddr>) -> Endpoint {
        let info = self.pod(pod);
        let ip = ip
            .or_else(|| info.ips.first().copied())
            .or(info.host_ip)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Endpoint { ip, pod: Some(pod) }
    }

    pub fn pod(&self, id: PodId) -> &PodInfo {
        &self.pods[id.0 as usize]
    }

    pub fn pods(&self) -> impl Iterator<Item = (PodId, &PodInfo)> {
        self.pods
            .iter()
            .enumerate()
            .map(|(i, p)| (PodId(i as u32), p))
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn policy(&self, id: PolicyId) -> &PolicyInfo {
        &self.policies[id.0 as usize]
    }

    pub fn policies(&self) -> impl Iterator<Item = (PolicyId, &PolicyInfo)> {
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| (PolicyId(i as u32), p))
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceInfo> {
        self.namespaces.iter()
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.ns_index
            .get(name)
            .map(|&i| &self.namespaces[i as usize])
    }

    /// Pods the policy selects (and so isolates in its directions).
    pub fn selected_pods(&self, policy: PolicyId) -> &[PodId] {
        &self.selected[policy.0 as usize]
    }

    /// Policies isolating `pod` in `direction`.
    pub fn isolating_policies(&self, pod: PodId, direction: Direction) -> &Arc<[PolicyId]> {
        &self.pod_policies[pod.0 as usize].isolating[dir_index(direction)]
    }

    /// Pods a peer clause of `policy` matches by its selectors.
    pub fn peer_pods(&self, policy: PolicyId, peer: &Peer) -> Vec<PodId> {
        let own = self.policy_ns[policy.0 as usize];
        let Peer::Pods {
            namespace_selector,
            pod_selector,
        } = peer
        else {
            return Vec::new();
        };
        let namespaces = self.ns_set(namespace_selector.as_ref(), own);
        self.pods()
            .filter(|(id, p)| {
                p.selectable()
                    && namespaces.contains(self.pod_ns[id.0 as usize])
                    && pod_selector.as_ref().is_none_or(|s| s.matches(&p.labels))
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// `"namespace/name"` of the rule's policy.
    pub fn rule_ref(&self, r: RuleId) -> String {
        self.policy(r.policy).key()
    }

    /// The pod behind an endpoint if policies can select it.
    pub(crate) fn selectable_pod(&self, e: &Endpoint) -> Option<PodId> {
        e.pod.filter(|p| self.pod(*p).selectable())
    }

    pub(crate) fn peer_matches(
        &self,
        policy: PolicyId,
        direction: Direction,
        rule: usize,
        peer: usize,
        other: &Endpoint,
    ) -> bool {
        let p = policy.0 as usize;
        match &self.compiled[p][dir_index(direction)][rule][peer] {
            CompiledPeer::Pods {
                namespaces,
                pod_selector,
            } => match self.selectable_pod(other) {
                Some(pod) => {
                    namespaces.contains(self.pod_ns[pod.0 as usize])
                        && pod_selector
                            .as_ref()
                            .is_none_or(|s| s.matches(&self.pod(pod).labels))
                }
                None => false,
            },
            CompiledPeer::IpBlock => match &self.policies[p].rules(direction)[rule].peers[peer] {
                Peer::IpBlock { cidr, except } => {
                    cidr.contains(&other.ip) && !except.iter().any(|e| e.contains(&other.ip))
                }
                Peer::Pods { .. } => false,
            },
        }
    }

    pub(crate) fn port_matches(
        pm: &PortMatch,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> bool {
        if pm.protocol != protocol {
            return false;
        }
        match (&pm.port, pm.end_port) {
            (None, _) => true,
            (Some(PortSpec::Number(p)), None) => port == *p,
            (Some(PortSpec::Number(p)), Some(end)) => (*p..=end).contains(&port),
            // Named ports resolve against the destination pod's containers.
            (Some(PortSpec::Name(name)), _) => {
                dst_pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
            }
        }
    }

    fn direction_verdict(
        &self,
        direction: Direction,
        subject: Option<PodId>,
        remote: Remote<'_>,
        port: u16,
        protocol: Protocol,
        dst_pod: Option<&PodInfo>,
    ) -> DirectionVerdict {
        let other = remote.endpoint;
        let Some(subject) = subject else {
            return DirectionVerdict {
                applicable: false,
                isolated: false,
                allowed: true,
                allowed_by: Vec::new(),
                isolated_by: self.no_policies.clone(),
                exempt: None,
                tier: Tier::NotApplicable,
                decided_by: None,
                passed_by: None,
            };
        };
        let isolated_by = self.isolating_policies(subject, direction).clone();
        let decided = |allowed: bool, tier: Tier, decided_by, passed_by| DirectionVerdict {
            applicable: true,
            isolated: !isolated_by.is_empty(),
            allowed,
            allowed_by: Vec::new(),
            isolated_by: isolated_by.clone(),
            exempt: None,
            tier,
            decided_by,
            passed_by,
        };
        // Admin tier first: Accept and Deny are final, Pass goes on.
        let admin = self.tier_decision(
            tier::PolicyTier::Admin,
            direction,
            subject,
            other,
            remote.name,
            port,
            protocol,
            dst_pod,
        );
        let mut passed_by = None;
        match admin {
            Some((rule, tier::TierAction::Accept)) => {
                return decided(true, Tier::Admin, Some(rule), None);
            }
            Some((rule, tier::TierAction::Deny)) => {
                return decided(false, Tier::Admin, Some(rule), None);
            }
            Some((rule, tier::TierAction::Pass)) => passed_by = Some(rule),
            None => {}
        }
        if isolated_by.is_empty() {
            // No NetworkPolicy isolates: the Baseline tier, then the default.
            let baseline = self.tier_decision(
                tier::PolicyTier::Baseline,
                direction,
                subject,
                other,
                remote.name,
                port,
                protocol,
                dst_pod,
            );
            return match baseline {
                Some((rule, tier::TierAction::Accept)) => {
                    decided(true, Tier::Baseline, Some(rule), passed_by)
                }
                Some((rule, tier::TierAction::Deny)) => {
                    decided(false, Tier::Baseline, Some(rule), passed_by)
                }
                Some((rule, tier::TierAction::Pass)) => {
                    decided(true, Tier::Default, None, Some(rule))
                }
                None => decided(true, Tier::Default, None, passed_by),
            };
        }
        let mut allowed_by = Vec::new();
        for &policy in isolated_by.iter() {
            let rules = self.policy(policy).rules(direction);
            for (ri, rule) in rules.iter().enumerate() {
                let peer_ok = rule.peers.is_empty()
                    || (0..rule.peers.len())
                        .any(|pi| self.peer_matches(policy, direction, ri, pi, other));
                if peer_ok
                    && (rule.ports.is_empty()
                        || rule
                            .ports
                            .iter()
                            .any(|pm| Self::port_matches(pm, port, protocol, dst_pod)))
                {
                    allowed_by.push(RuleId {
                        policy,
                        direction,
                        index: ri as u32,
                    });
                }
            }
        }
        DirectionVerdict {
            applicable: true,
            isolated: true,
            allowed: !allowed_by.is_empty(),
            allowed_by,
            isolated_by,
            exempt: None,
            tier: Tier::NetworkPolicy,
            decided_by: None,
            passed_by,
        }
    }

    pub(crate) fn exemption(&self, src: &Endpoint, dst: &Endpoint) -> Option<Exemption> {
        let dst_pod = self.selectable_pod(dst)?;
        if src.pod == Some(dst_pod) {
            return Some(Exemption::SamePod);
        }
        let d = self.pod(dst_pod);
        let from_node = d.host_ip == Some(src.ip)
            || src.pod.is_some_and(|s| {
                let s = self.pod(s);
                s.host_network && s.node.is_some() && s.node == d.node
            });
        from_node.then_some(Exemption::OwnNode)
    }

    /// Whether the policies allow a connection from `src` to `dst` on `port`
    /// (ignored for ICMP), and by which rules.
    pub fn verdict(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        port: u16,
        protocol: Protocol,
    ) -> Verdict {
        self.verdict_named(src, dst, None, port, protocol)
    }

    /// [`Self::verdict`] when the DNS name `dst` was resolved from is known:
    /// cluster policies' `domainNames` egress peers are judged against it
    /// (without it they match nothing).
    pub fn verdict_named(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        dst_name: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> Verdict {
        let src_pod = self.selectable_pod(src);
        let dst_pod = self.selectable_pod(dst);
        let dst_info = dst_pod.map(|d| self.pod(d));
        let egress_to = Remote {
            endpoint: dst,
            name: dst_name,
        };
        let ingress_from = Remote {
            endpoint: src,
            name: None,
        };
        let mut egress = self.direction_verdict(
            Direction::Egress,
            src_pod,
            egress_to,
            port,
            protocol,
            dst_info,
        );
        let mut ingress = self.direction_verdict(
            Direction::Ingress,
            dst_pod,
            ingress_from,
            port,
            protocol,
            dst_info,
        );
        match self.exemption(src, dst) {
            Some(Exemption::SamePod) => {
                for d in [&mut egress, &mut ingress] {
                    d.exempt(Exemption::SamePod);
                }
            }
            Some(Exemption::OwnNode) => ingress.exempt(Exemption::OwnNode),
            None => {}
        }
        Verdict {
            allowed: egress.allowed && ingress.allowed,
            egress,
            ingress,
            generation: self.generation,
        }
    }
}
