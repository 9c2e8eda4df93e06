//! Advise: least-privilege NetworkPolicies for one namespace from the
//! connections observed there, with their own proof.
//!
//! [`advise`] takes the objects in force, a namespace and the distinct
//! connections observed in a window (see [`crate::whatif`]) and writes:
//! - `default-deny`: every pod of the namespace isolated for ingress and
//!   egress, DNS egress to kube-dns (`kube-system`, `k8s-app: kube-dns`,
//!   port 53 UDP and TCP) kept open;
//! - one policy per workload (pods sharing the same stable labels, i.e.
//!   without `pod-template-hash` and the like), selecting it by those
//!   labels, with Ingress and Egress in one object, and one rule per peer
//!   listing the ports seen by number and protocol. In-cluster peers are
//!   named by namespace (`kubernetes.io/metadata.name`) plus their workload
//!   labels, never by pod name or address; peers outside the cluster by the
//!   smallest CIDR covering the addresses seen with the same ports (within
//!   a /24, or a /64 for IPv6: scattered addresses stay separate /32s).
//!
//! Only connections allowed under the policies in force now are admitted:
//! advice never widens what is already denied. The [`Advice::proof`] is the
//! what-if of the advised set against the same observations; it newly denies
//! nothing by construction, and the caller shows it so a person need not
//! take that on trust.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::Protocol;
use crate::selector::Labels;
use crate::whatif::{
    ChangeSet, ObservedConnection, ObservedEndpoint, ObservedPods, WhatIf, WhatIfError, what_if,
};
use crate::yaml::ClusterObjects;

/// Labels that differ between pods of one workload (or between its
/// revisions): never used to select a workload.
const UNSTABLE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
];

/// Labels a workload's name is read from, in order.
const NAME_LABELS: &[&str] = &["app.kubernetes.io/name", "app", "k8s-app", "name"];

const NAMESPACE_LABEL: &str = "kubernetes.io/metadata.name";

/// The advised policies and their proof.
#[derive(Clone, Debug)]
pub struct Advice {
    pub namespace: String,
    /// `default-deny` first, then one per workload, by name.
    pub policies: Vec<NetworkPolicy>,
    /// Observed connections of the namespace the advice admits.
    pub admitted: usize,
    /// Observed connections of the namespace denied now, left denied.
    pub left_denied: usize,
    /// What a person should know (pods without stable labels, ICMP).
    pub notes: Vec<String>,
    /// The what-if of applying `policies`, over the same observations.
    pub proof: WhatIf,
}

impl Advice {
    /// The policies as one multi-document YAML stream, for `kubectl apply -f`.
    pub fn yaml(&self) -> String {
        self.policies
            .iter()
            .map(|p| serde_norway::to_string(p).expect("a NetworkPolicy serializes"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// A workload: pods of the namespace with the same stable labels.
#[derive(Default)]
struct Workload {
    /// Ingress and egress peers, each with the ports seen.
    rules: [BTreeMap<PeerKey, BTreeSet<PortKey>>; 2],
    /// External addresses per direction, with the ports seen for each.
    external: [BTreeMap<IpAddr, BTreeSet<PortKey>>; 2],
    /// A pod name, for naming when no label gives one.
    pod: String,
}

const INGRESS: usize = 0;
const EGRESS: usize = 1;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PeerKey {
    Pods { namespace: String, labels: Labels },
    Cidr(IpNet),
}

/// `(protocol, port)`; port 0 for protocols without ports (ICMP).
type PortKey = (ProtocolKey, u16);

/// [`Protocol`] ordered, for sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ProtocolKey(u8);

const PROTOCOLS: [Protocol; 5] = [
    Protocol::Tcp,
    Protocol::Udp,
    Protocol::Sctp,
    Protocol::Icmp,
    Protocol::Icmpv6,
];

impl ProtocolKey {
    fn of(p: Protocol) -> Self {
        ProtocolKey(PROTOCOLS.iter().position(|q| *q == p).unwrap_or(0) as u8)
    }
    fn protocol(self) -> Protocol {
        PROTOCOLS[self.0 as usize]
    }
}

/// Least-privilege policies for `namespace` from `observed` (see the module
/// docs); errors only if the advised set could not be judged (a bug).
pub fn advise(
    current: &ClusterObjects,
    namespace: &str,
    observed: &[ObservedConnection],
) -> Result<Advice, WhatIfError> {
    let pods = ObservedPods::new(current, observed);
    let (now, _) = pods.cluster(current, 0);
    let mut workloads: BTreeMap<Labels, Workload> = BTreeMap::new();
    let (mut admitted, mut left_denied) = (0, 0);
    let mut notes = BTreeSet::new();
    for c in observed {
        let src_here = in_namespace(&c.src, namespace);
        let dst_here = in_namespace(&c.dst, namespace);
        if !src_here && !dst_here {
            continue;
        }
        let (Some(src), Some(dst)) = (pods.endpoint(&now, &c.src), pods.endpoint(&now, &c.dst))
        else {
            continue; // unreachable: every observed pod is in the cluster
        };
        let verdict = now.verdict(&src, &dst, c.port, c.protocol);
        if !verdict.allowed {
            left_denied += 1;
            continue;
        }
        admitted += 1;
        let port: PortKey = (
            ProtocolKey::of(c.protocol),
            if c.protocol.has_ports() { c.port } else { 0 },
        );
        if !c.protocol.has_ports() {
            notes.insert(format!(
                "{} traffic is admitted by rules without ports (NetworkPolicy cannot name {} types)",
                c.protocol, c.protocol
            ));
        }
        // Exempt directions (a pod to itself, a node to its pods) need no rule.
        if src_here && verdict.egress.exempt.is_none() && !is_dns(&c.dst, c.port, c.protocol) {
            record(&mut workloads, &c.src, EGRESS, &c.dst, port, &mut notes);
        }
        if dst_here && verdict.ingress.exempt.is_none() {
            record(&mut workloads, &c.dst, INGRESS, &c.src, port, &mut notes);
        }
    }
    let mut policies = vec![default_deny(namespace)];
    let mut names = BTreeSet::from(["default-deny".to_string()]);
    for (labels, w) in workloads {
        let name = unique(
            &mut names,
            format!("allow-{}", workload_name(&labels, &w.pod)),
        );
        policies.push(workload_policy(namespace, &name, labels, w));
    }
    let change = ChangeSet {
        policies: policies.clone(),
        ..ChangeSet::default()
    };
    let proof = what_if(current, &change, observed)?;
    Ok(Advice {
        namespace: namespace.to_string(),
        policies,
        admitted,
        left_denied,
        notes: notes.into_iter().collect(),
        proof,
    })
}

fn in_namespace(e: &ObservedEndpoint, namespace: &str) -> bool {
    e.pod.as_ref().is_some_and(|p| p.namespace == namespace)
}

/// Admitted by default-deny's DNS rule.
fn is_dns(dst: &ObservedEndpoint, port: u16, protocol: Protocol) -> bool {
    port == 53
        && matches!(protocol, Protocol::Udp | Protocol::Tcp)
        && dst.pod.as_ref().is_some_and(|p| {
            p.namespace == "kube-system"
                && p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
        })
}

/// `subject`'s workload gets `peer` on `port` in `direction`.
fn record(
    workloads: &mut BTreeMap<Labels, Workload>,
    subject: &ObservedEndpoint,
    direction: usize,
    peer: &ObservedEndpoint,
    port: PortKey,
    notes: &mut BTreeSet<String>,
) {
    let Some(pod) = &subject.pod else { return };
    let labels = stable(&pod.labels);
    if labels.is_empty() {
        notes.insert(format!(
            "{}/{} has no stable labels: its rules select every pod of the namespace",
            pod.namespace, pod.name
        ));
    }
    let w = workloads.entry(labels).or_default();
    if w.pod.is_empty() {
        w.pod = pod.name.clone();
    }
    match &peer.pod {
        Some(p) => {
            let key = PeerKey::Pods {
                namespace: p.namespace.clone(),
                labels: stable(&p.labels),
            };
            w.rules[direction].entry(key).or_default().insert(port);
        }
        None => {
            w.external[direction]
                .entry(peer.ip)
                .or_default()
                .insert(port);
        }
    }
}

fn stable(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| !UNSTABLE_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A name for the workload's policy: its name label, else its pod's name
/// without the generated suffixes.
fn workload_name(labels: &Labels, pod: &str) -> String {
    let raw = NAME_LABELS
        .iter()
        .find_map(|k| labels.get(*k).cloned())
        .unwrap_or_else(|| {
            let parts: Vec<&str> = pod.split('-').collect();
            // `web-7d4b9c8f6-x2x9q` → `web`; `db-0` → `db`.
            let keep = parts
                .iter()
                .take_while(|p| !p.chars().any(|c| c.is_ascii_digit()))
                .count()
                .max(1);
            parts[..keep].join("-")
        });
    let clean: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        "pods".into()
    } else {
        clean.chars().take(50).collect()
    }
}

fn unique(taken: &mut BTreeSet<String>, name: String) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "flowgate-advise".to_string(),
        )])),
        ..Default::default()
    }
}

fn selector(labels: Labels) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: None,
    }
}

fn namespace_peer(namespace: &str, pods: Labels) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector(BTreeMap::from([(
            NAMESPACE_LABEL.to_string(),
            namespace.to_string(),
        )]))),
        pod_selector: Some(selector(pods)),
        ip_block: None,
    }
}

fn np_port(protocol: Protocol, port: Option<u16>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.as_str().to_string()),
        port: port.map(|p| IntOrString::Int(i32::from(p))),
        end_port: None,
    }
}

/// Every pod isolated both ways; DNS to kube-dns stays open.
fn default_deny(namespace: &str) -> NetworkPolicy {
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![namespace_peer(
            "kube-system",
            BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
        )]),
        ports: Some(vec![
            np_port(Protocol::Udp, Some(53)),
            np_port(Protocol::Tcp, Some(53)),
        ]),
    };
    NetworkPolicy {
        metadata: meta(namespace, "default-deny"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: Some(vec![dns]),
        }),
    }
}

/// The ports of a rule; `None` (any port) when a port-less protocol was
/// seen, since a rule's ports cannot name it.
fn rule_ports(ports: &BTreeSet<PortKey>) -> Option<Vec<NetworkPolicyPort>> {
    if ports.iter().any(|(p, _)| !p.protocol().has_ports()) {
        return None;
    }
    Some(
        ports
            .iter()
            .map(|(p, n)| np_port(p.protocol(), Some(*n)))
            .collect(),
    )
}

/// Per direction, `(peer, ports)` rules: pods as seen, external addresses
/// merged into covering CIDRs.
fn direction_rules(
    w: &Workload,
    direction: usize,
) -> Vec<(NetworkPolicyPeer, Option<Vec<NetworkPolicyPort>>)> {
    let mut rules: BTreeMap<PeerKey, BTreeSet<PortKey>> = w.rules[direction].clone();
    // Addresses with the same ports in the same /24 (/64) share a CIDR.
    let mut groups: BTreeMap<(IpNet, BTreeSet<PortKey>), Vec<IpAddr>> = BTreeMap::new();
    for (ip, ports) in &w.external[direction] {
        let bucket = match ip {
            IpAddr::V4(_) => 24,
            IpAddr::V6(_) => 64,
        };
        let net = IpNet::new(*ip, bucket).expect("a valid prefix").trunc();
        groups.entry((net, ports.clone())).or_default().push(*ip);
    }
    for ((_, ports), ips) in groups {
        rules
            .entry(PeerKey::Cidr(covering(&ips)))
            .or_default()
            .extend(ports);
    }
    rules
        .into_iter()
        .map(|(peer, ports)| {
            let peer = match peer {
                PeerKey::Pods { namespace, labels } => namespace_peer(&namespace, labels),
                PeerKey::Cidr(net) => NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: net.to_string(),
                        except: None,
                    }),
                    ..Default::default()
                },
            };
            (peer, rule_ports(&ports))
        })
        .collect()
}

/// The smallest CIDR holding every address of `ips` (one family, sorted).
fn covering(ips: &[IpAddr]) -> IpNet {
    let (first, last) = (ips[0], ips[ips.len() - 1]);
    let (bits, max) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => ((u32::from(a) ^ u32::from(b)).leading_zeros(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => ((u128::from(a) ^ u128::from(b)).leading_zeros(), 128),
        _ => (0, 0),
    };
    IpNet::new(first, bits.min(max) as u8)
        .expect("a prefix within the family")
        .trunc()
}

fn workload_policy(namespace: &str, name: &str, labels: Labels, w: Workload) -> NetworkPolicy {
    let ingress = direction_rules(&w, INGRESS)
        .into_iter()
        .map(|(peer, ports)| NetworkPolicyIngressRule {
            from: Some(vec![peer]),
            ports,
        })
        .collect::<Vec<_>>();
    let egress = direction_rules(&w, EGRESS)
        .into_iter()
        .map(|(peer, ports)| NetworkPolicyEgressRule {
            to: Some(vec![peer]),
            ports,
        })
        .collect::<Vec<_>>();
    NetworkPolicy {
        metadata: meta(namespace, name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(labels)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_cidrs_are_the_smallest() {
        let ips = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            covering(&ips(&["203.0.113.7"])).to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            covering(&ips(&["203.0.113.4", "203.0.113.7"])).to_string(),
            "203.0.113.4/30"
        );
        assert_eq!(
            covering(&ips(&["203.0.113.1", "203.0.113.200"])).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            covering(&ips(&["2001:db8::1"])).to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn workload_names_come_from_labels_or_the_pod() {
        let l = |k: &str, v: &str| Labels::from([(k.to_string(), v.to_string())]);
        assert_eq!(workload_name(&l("app", "Web_UI"), "x"), "web-ui");
        assert_eq!(workload_name(&Labels::new(), "web-7d4b9c8f6-x2x9q"), "web");
        assert_eq!(workload_name(&Labels::new(), "db-0"), "db");
        assert_eq!(workload_name(&Labels::new(), "7abc"), "7abc");
    }

    #[test]
    fn unstable_labels_are_dropped() {
        let labels = Labels::from([
            ("app".to_string(), "web".to_string()),
            ("pod-template-hash".to_string(), "7d4b9c8f6".to_string()),
        ]);
        assert_eq!(
            stable(&labels),
            Labels::from([("app".into(), "web".into())])
        );
    }
}
