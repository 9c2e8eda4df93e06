//! What-if: judge observed connections under the policies in force and
//! under a proposed change, and list those whose verdict would change.
//!
//! The pieces, in the order a caller uses them:
//! - [`ChangeSet`]: the proposal. [`ChangeSet::add_yaml`] reads policy
//!   objects (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//!   ClusterNetworkPolicy) that replace the same-named object in force or
//!   are added; [`ChangeSet::delete`] removes a NetworkPolicy by
//!   `namespace/name`. Anything else (bad YAML, a Pod, an unknown kind, a
//!   malformed delete) is a [`WhatIfError`] naming it.
//! - [`ObservedConnection`]: one distinct connection seen in a window
//!   (client and server endpoint as they were when observed, with the
//!   pod's labels then, server port, protocol), with how many flows records
//!   it had and when it was last seen. Callers aggregate their store into
//!   these (the collector: one GROUP BY over `flows`); many flows, few
//!   distinct connections.
//! - [`what_if`]: takes the objects in force ([`ClusterObjects`]), the
//!   change set and the observed connections, and returns a [`WhatIf`]:
//!   how many connections were judged, which would be newly denied (with
//!   the policies and nearest misses that would deny them) and which newly
//!   allowed. Errors: deleting a policy not in force, or a proposed object
//!   the API would reject.
//!
//! Endpoints are judged as they were observed, not as the cluster is now:
//! each distinct observed pod identity (namespace, name, labels) becomes a
//! pod of its own in both the "before" and the "after" snapshot, so a pod
//! whose labels changed, or which is gone, is judged with the labels it had
//! when its traffic was seen. Namespace labels, Nodes, and a pod's named
//! container ports and node come from the objects in force now (flows do
//! not record them). An endpoint observed outside the cluster stays an
//! address. The "before" verdict is recomputed under the policies in force
//! now (not read from the stored flow), so that only the change's own
//! effect is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::cluster::{Cluster, Endpoint};
use crate::crd::ClusterPolicyObject;
use crate::error::{BuildError, ParseError};
use crate::explain::{DirectionExplanation, PolicyMiss, PolicyRef};
use crate::explain_tiers::TierRuleRef;
use crate::model::{Direction, Protocol};
use crate::selector::Labels;
use crate::tier::Tier;
use crate::yaml::ClusterObjects;

/// Why a change set or a what-if cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(
        "{source_name}: {object}: a change set holds only NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy objects"
    )]
    NotAPolicy { source_name: String, object: String },
    #[error("{source_name}: NetworkPolicy without metadata.name")]
    Unnamed { source_name: String },
    #[error("delete {value:?}: expected namespace/name of a NetworkPolicy")]
    BadDelete { value: String },
    #[error("cannot delete NetworkPolicy {namespace}/{name}: no such policy is in force")]
    NoSuchPolicy { namespace: String, name: String },
    #[error("the change set is empty: give policies to apply or policies to delete")]
    Empty,
    #[error("the proposed change is invalid: {0}")]
    Invalid(BuildError),
}

/// A NetworkPolicy's `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    fn of(p: &NetworkPolicy) -> Option<PolicyKey> {
        Some(PolicyKey {
            namespace: p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: p.metadata.name.clone()?,
        })
    }
}

impl std::str::FromStr for PolicyKey {
    type Err = WhatIfError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(PolicyKey {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(WhatIfError::BadDelete {
                value: value.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A proposed change: policies to apply (replace or add) and NetworkPolicies
/// to delete. Everything not named stays as in force.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    pub policies: Vec<NetworkPolicy>,
    pub cluster_policies: Vec<ClusterPolicyObject>,
    pub deletes: Vec<PolicyKey>,
}

impl ChangeSet {
    /// Adds the policy objects of a YAML (or JSON) text; `source` names the
    /// text in errors. Non-policy objects are refused, by name.
    pub fn add_yaml(&mut self, source: &str, text: &str) -> Result<(), WhatIfError> {
        let mut objects = ClusterObjects::default();
        objects.parse_yaml(source, text)?;
        let not_policy = objects
            .namespaces
            .iter()
            .map(|n| format!("Namespace {}", n.metadata.name.as_deref().unwrap_or("")))
            .chain(objects.pods.iter().map(|p| {
                format!(
                    "Pod {}/{}",
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or("")
                )
            }))
            .chain(
                objects
                    .nodes
                    .iter()
                    .map(|n| format!("Node {}", n.metadata.name.as_deref().unwrap_or(""))),
            )
            .chain(objects.ignored.iter().cloned())
            .next();
        if let Some(object) = not_policy {
            return Err(WhatIfError::NotAPolicy {
                source_name: source.to_string(),
                object,
            });
        }
        if objects.policies.iter().any(|p| p.metadata.name.is_none()) {
            return Err(WhatIfError::Unnamed {
                source_name: source.to_string(),
            });
        }
        self.policies.extend(objects.policies);
        self.cluster_policies.extend(objects.cluster_policies);
        Ok(())
    }

    /// Deletes the NetworkPolicy `namespace/name`.
    pub fn delete(&mut self, value: &str) -> Result<(), WhatIfError> {
        self.deletes.push(value.parse()?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.cluster_policies.is_empty() && self.deletes.is_empty()
    }

    /// `current` with the change applied: deletes first, then each proposed
    /// object replaces the one of the same kind and name, or is added.
    pub fn apply(&self, current: &ClusterObjects) -> Result<ClusterObjects, WhatIfError> {
        let mut out = current.clone();
        for key in &self.deletes {
            let before = out.policies.len();
            out.policies
                .retain(|p| PolicyKey::of(p).as_ref() != Some(key));
            if out.policies.len() == before {
                return Err(WhatIfError::NoSuchPolicy {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                });
            }
        }
        for p in &self.policies {
            let key = PolicyKey::of(p);
            match out.policies.iter_mut().find(|q| PolicyKey::of(q) == key) {
                Some(slot) => *slot = p.clone(),
                None => out.policies.push(p.clone()),
            }
        }
        for p in &self.cluster_policies {
            match out
                .cluster_policies
                .iter_mut()
                .find(|q| q.kind() == p.kind() && q.name() == p.name())
            {
                Some(slot) => *slot = p.clone(),
                None => out.cluster_policies.push(p.clone()),
            }
        }
        Ok(out)
    }
}

/// A pod as it was when a connection was observed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedPod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
}

/// One end of an observed connection: its address, and the pod holding it
/// then (`None`: outside the cluster).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservedEndpoint {
    pub ip: IpAddr,
    pub pod: Option<ObservedPod>,
}

impl ObservedEndpoint {
    /// `namespace/pod`, or the address.
    pub fn name(&self) -> String {
        match &self.pod {
            Some(p) => format!("{}/{}", p.namespace, p.name),
            None => self.ip.to_string(),
        }
    }
}

/// One distinct connection observed in a window: `src` opened it to `dst`
/// on `port` (ignored for ICMP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedConnection {
    pub src: ObservedEndpoint,
    pub dst: ObservedEndpoint,
    pub port: u16,
    pub protocol: Protocol,
    /// `flows` records of it in the window.
    pub flows: u64,
    /// Nanoseconds since the epoch.
    pub last_seen_ns: i64,
}

/// What would deny a connection in one direction after the change.
#[derive(Clone, Debug, Serialize)]
pub struct Denial {
    pub direction: Direction,
    /// The tier that would decide the direction.
    pub tier: Tier,
    /// NetworkPolicies isolating the endpoint in this direction,
    /// `namespace/name` (none when an Admin or Baseline rule decides).
    pub policies: Vec<String>,
    /// The Admin or Baseline rule that would deny, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<TierRuleRef>,
    /// In words.
    pub reason: String,
    /// Per isolating policy, the rule that came closest to admitting it.
    pub nearest_misses: Vec<PolicyMiss>,
}

/// An observed connection whose verdict the change would flip.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictChange {
    /// `namespace/pod` or an address.
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub protocol: Protocol,
    pub flows: u64,
    /// Nanoseconds since the epoch (callers render it as they show time).
    #[serde(skip)]
    pub last_seen_ns: i64,
    /// Newly denied only: each direction that would deny.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_by: Vec<Denial>,
}

/// The answer: every connection judged twice, those that flip listed
/// (busiest first).
#[derive(Clone, Debug, Serialize)]
pub struct WhatIf {
    pub connections_judged: usize,
    pub newly_denied: Vec<VerdictChange>,
    pub newly_allowed: Vec<VerdictChange>,
}

/// Judges every observed connection under `current` and under `current`
/// with `change` applied. An empty change set is an error (it is always a
/// mistake: an empty file or folder).
pub fn what_if(
    current: &ClusterObjects,
    change: &ChangeSet,
    observed: &[ObservedConnection],
) -> Result<WhatIf, WhatIfError> {
    if change.is_empty() {
        return Err(WhatIfError::Empty);
    }
    let proposed = change.apply(current)?;
    let pods = ObservedPods::new(current, observed);
    let (before, invalid_now) = pods.cluster(current, 0);
    let (after, invalid_then) = pods.cluster(&proposed, 1);
    // Objects in force that are invalid were skipped when the cluster was
    // loaded too; only what the change brings is an error.
    if let Some(e) = invalid_then.into_iter().find(|e| !invalid_now.contains(e)) {
        return Err(WhatIfError::Invalid(e));
    }
    Ok(judge(&pods, &before, &after, observed))
}

/// [`what_if`] over clusters already built by [`ObservedPods::cluster`]:
/// for callers judging many change sets against the same observations.
pub fn judge(
    pods: &ObservedPods,
    before: &Cluster,
    after: &Cluster,
    observed: &[ObservedConnection],
) -> WhatIf {
    let mut out = WhatIf {
        connections_judged: observed.len(),
        newly_denied: Vec::new(),
        newly_allowed: Vec::new(),
    };
    for c in observed {
        let (Some(src_b), Some(dst_b), Some(src_a), Some(dst_a)) = (
            pods.endpoint(before, &c.src),
            pods.endpoint(before, &c.dst),
            pods.endpoint(after, &c.src),
            pods.endpoint(after, &c.dst),
        ) else {
            continue; // unreachable: every observed pod is in both clusters
        };
        let was = before.verdict(&src_b, &dst_b, c.port, c.protocol).allowed;
        let will = after.verdict(&src_a, &dst_a, c.port, c.protocol).allowed;
        let item = |denied_by| VerdictChange {
            src: c.src.name(),
            dst: c.dst.name(),
            port: c.port,
            protocol: c.protocol,
            flows: c.flows,
            last_seen_ns: c.last_seen_ns,
            denied_by,
        };
        match (was, will) {
            (true, false) => {
                let e = after.explain(&src_a, &dst_a, c.port, c.protocol);
                let denials = [e.egress, e.ingress]
                    .into_iter()
                    .filter(|d| !d.allowed)
                    .map(denial)
                    .collect();
                out.newly_denied.push(item(denials));
            }
            (false, true) => out.newly_allowed.push(item(Vec::new())),
            _ => {}
        }
    }
    for list in [&mut out.newly_denied, &mut out.newly_allowed] {
        list.sort_by(|a, b| {
            b.flows
                .cmp(&a.flows)
                .then_with(|| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)))
        });
    }
    out
}

fn denial(d: DirectionExplanation) -> Denial {
    Denial {
        direction: d.direction,
        tier: d.tier,
        policies: d.isolated_by.iter().map(policy_name).collect(),
        decided_by: d.decided_by,
        reason: d.reason,
        nearest_misses: d.misses,
    }
}

fn policy_name(p: &PolicyRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The observed pod identities, each a pod of its own in the clusters the
/// connections are judged in.
#[derive(Debug)]
pub struct ObservedPods {
    /// Identity → the name it has in the judging clusters.
    names: HashMap<ObservedPod, String>,
    pods: Vec<Pod>,
}

impl ObservedPods {
    /// Every pod identity of `observed`, with the node and named ports of
    /// the same-named pod in `current` when it still exists.
    pub fn new(current: &ClusterObjects, observed: &[ObservedConnection]) -> ObservedPods {
        let mut ips: BTreeMap<&ObservedPod, BTreeSet<IpAddr>> = BTreeMap::new();
        for c in observed {
            for e in [&c.src, &c.dst] {
                if let Some(p) = &e.pod {
                    ips.entry(p).or_default().insert(e.ip);
                }
            }
        }
        let live: HashMap<(&str, &str), &Pod> = current
            .pods
            .iter()
            .filter_map(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                Some(((ns, p.metadata.name.as_deref()?), p))
            })
            .collect();
        let mut names = HashMap::new();
        let mut taken: HashMap<(&str, &str), usize> = HashMap::new();
        let mut pods = Vec::new();
        for (identity, addresses) in ips {
            // A pod seen with several label sets becomes several pods; the
            // later ones get a suffix no real pod name can have.
            let seen = taken
                .entry((&identity.namespace, &identity.name))
                .or_default();
            let name = match *seen {
                0 => identity.name.clone(),
                n => format!("{}.whatif-{n}", identity.name),
            };
            *seen += 1;
            let like = live
                .get(&(identity.namespace.as_str(), identity.name.as_str()))
                .copied();
            let mut pod = observed_pod(identity, &name, &addresses, like);
            if crate::convert::pod(&pod).is_err() {
                // The live pod's ports are invalid (it was left out of the
                // cluster too): judge without named ports rather than drop.
                pod = observed_pod(identity, &name, &addresses, None);
            }
            pods.push(pod);
            names.insert(identity.clone(), name);
        }
        ObservedPods { names, pods }
    }

    /// `objects`' namespaces, policies, nodes and cluster policies with the
    /// observed pods instead of the current ones.
    /// The invalid objects (left out) come back too.
    pub fn cluster(&self, objects: &ClusterObjects, generation: u64) -> (Cluster, Vec<BuildError>) {
        Cluster::build_lenient_with_tiers(
            &objects.namespaces,
            &self.pods,
            &objects.policies,
            &objects.nodes,
            &objects.cluster_policies,
            generation,
        )
    }

    /// The endpoint of an observed end in a cluster built by [`Self::cluster`].
    pub fn endpoint(&self, cluster: &Cluster, e: &ObservedEndpoint) -> Option<Endpoint> {
        let pod = match &e.pod {
            None => None,
            Some(p) => Some(cluster.find_pod(&p.namespace, self.names.get(p)?)?),
        };
        Some(Endpoint { ip: e.ip, pod })
    }
}

/// A running pod with the observed identity and addresses, and the node,
/// host IP and container ports of `like` (the same-named pod now).
fn observed_pod(
    identity: &ObservedPod,
    name: &str,
    addresses: &BTreeSet<IpAddr>,
    like: Option<&Pod>,
) -> Pod {
    let spec = like.and_then(|p| p.spec.as_ref());
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    ports: c.ports.clone(),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(identity.namespace.clone()),
            name: Some(name.to_string()),
            labels: Some(identity.labels.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            node_name: spec.and_then(|s| s.node_name.clone()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            host_ip: like
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.host_ip.clone()),
            pod_ips: Some(
                addresses
                    .iter()
                    .map(|ip| PodIP { ip: ip.to_string() })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}
