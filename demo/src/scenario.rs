//! The scenario file: a small cluster (namespaces, pods, NetworkPolicies),
//! the external addresses it talks to, and the traffic to generate.
//!
//! Reading a scenario assigns every pod an address from the pod CIDR (in file
//! order, after the node's first address) and renders the cluster as real
//! Kubernetes objects, the same YAML the collector and `flowgate explain`
//! read, so the policy engine sees exactly what the kernel enforces.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use flowgate_policy::{Cluster, ClusterObjects, Protocol};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::DemoError;

/// The scenario as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Pod addresses come from here; the first address is the node's.
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: Ipv4Net,
    /// Addresses outside the cluster that answer like servers on the internet.
    #[serde(default)]
    pub external: External,
    pub namespaces: Vec<NamespaceSpec>,
    pub pods: Vec<PodSpec>,
    /// NetworkPolicies, exactly as `kubectl apply` takes them.
    #[serde(default)]
    pub policies: Vec<Value>,
    #[serde(default)]
    pub traffic: Vec<TrafficSpec>,
    /// Policy edits while the demo runs, to watch history and blame at work.
    #[serde(default)]
    pub changes: Vec<ChangeSpec>,
}

/// One edit of the policies, `after` the demo started: a NetworkPolicy
/// created or replaced (`apply`, matched by namespace and name), or one
/// deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeSpec {
    /// Time since the start, e.g. `20s` or `1m30s`.
    pub after: String,
    /// A NetworkPolicy, exactly as `kubectl apply` takes it.
    #[serde(default)]
    pub apply: Option<Value>,
    /// The NetworkPolicy to delete.
    #[serde(default)]
    pub delete: Option<PolicyName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The cluster after one of the scenario's `changes`.
#[derive(Debug)]
pub struct Stage {
    /// When it takes effect, from the start of the demo.
    pub after: std::time::Duration,
    /// What changed, e.g. `prod/allow-same-namespace modified`.
    pub description: String,
    pub cluster_yaml: String,
    pub cluster: Cluster,
}

fn default_pod_cidr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct External {
    /// Each address is held by the "external" network namespace.
    #[serde(default)]
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Container ports; named ones can be used by policies. The pod serves
    /// every port listed here.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// The owning workload, shown as the flow's workload name.
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "TCP".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    pub name: String,
}

/// One stream of connections, repeated while the demo runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// The client pod, `namespace/name`.
    pub from: String,
    /// The server: a pod (`namespace/name`) or an external address.
    pub to: String,
    /// TCP (connect, send data, read the echo), UDP (datagram and echo) or ICMP (echo request).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Destination port (TCP, UDP).
    #[serde(default)]
    pub port: Option<u16>,
}

/// A pod with its place in the topology.
#[derive(Debug, Clone)]
pub struct PlacedPod {
    pub spec: PodSpec,
    pub ip: Ipv4Addr,
    /// Index in the scenario; names the pod's netns and interfaces.
    pub index: usize,
}

/// Where traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Pod(usize),
    External(Ipv4Addr),
}

/// One resolved traffic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub from: usize,
    pub to: Target,
    pub protocol: Protocol,
    /// 0 for ICMP.
    pub port: u16,
}

/// A checked scenario: addresses assigned, policies compiled by the engine.
#[derive(Debug)]
pub struct Placed {
    pub scenario: Scenario,
    pub node_ip: Ipv4Addr,
    pub pods: Vec<PlacedPod>,
    pub flows: Vec<Flow>,
    /// The cluster as Kubernetes YAML (namespaces, pods, policies).
    pub cluster_yaml: String,
    pub cluster: Cluster,
    /// The cluster after each of the scenario's `changes`, in time order.
    pub stages: Vec<Stage>,
}

/// The node every demo pod runs on.
pub const NODE_NAME: &str = "fg-node";

impl Scenario {
    pub fn from_file(path: &Path) -> Result<Scenario, DemoError> {
        let text = std::fs::read_to_string(path).map_err(|source| DemoError::ReadScenario {
            path: path.to_owned(),
            source,
        })?;
        Scenario::from_yaml(&path.display().to_string(), &text)
    }

    pub fn from_yaml(source_name: &str, text: &str) -> Result<Scenario, DemoError> {
        serde_norway::from_str(text).map_err(|source| DemoError::ParseScenario {
            source_name: source_name.to_owned(),
            source,
        })
    }

    /// Assigns addresses, resolves traffic and compiles the policies.
    pub fn place(self) -> Result<Placed, DemoError> {
        let invalid = |m: String| DemoError::InvalidScenario(m);
        let mut hosts = self.pod_cidr.hosts();
        let node_ip = hosts
            .next()
            .ok_or_else(|| invalid(format!("pod CIDR {} has no addresses", self.pod_cidr)))?;
        let mut pods = Vec::new();
        for (index, spec) in self.pods.iter().enumerate() {
            if !self.namespaces.iter().any(|n| n.name == spec.namespace) {
                return Err(invalid(format!(
                    "pod {}/{}: namespace {} is not declared",
                    spec.namespace, spec.name, spec.namespace
                )));
            }
            if pods
                .iter()
                .any(|p: &PlacedPod| p.spec.name == spec.name && p.spec.namespace == spec.namespace)
            {
                return Err(invalid(format!(
                    "pod {}/{} is declared twice",
                    spec.namespace, spec.name
                )));
            }
            for port in &spec.ports {
                parse_protocol(&port.protocol)
                    .map_err(|e| invalid(format!("pod {}/{}: {e}", spec.namespace, spec.name)))?;
            }
            let ip = hosts.next().ok_or_else(|| {
                invalid(format!(
                    "pod CIDR {} is too small for {} pods",
                    self.pod_cidr,
                    self.pods.len()
                ))
            })?;
            pods.push(PlacedPod {
                spec: spec.clone(),
                ip,
                index,
            });
        }
        for a in &self.external.addresses {
            if self.pod_cidr.contains(a) {
                return Err(invalid(format!(
                    "external address {a} is inside the pod CIDR {}",
                    self.pod_cidr
                )));
            }
        }
        let mut flows = Vec::new();
        for t in &self.traffic {
            let find = |name: &str| {
                let (ns, n) = name.split_once('/')?;
                pods.iter()
                    .position(|p| p.spec.namespace == ns && p.spec.name == n)
            };
            let from = find(&t.from).ok_or_else(|| {
                invalid(format!(
                    "traffic from {:?}: no such pod (expected namespace/name)",
                    t.from
                ))
            })?;
            let to = match (find(&t.to), t.to.parse::<Ipv4Addr>()) {
                (Some(i), _) => Target::Pod(i),
                (None, Ok(a)) if self.external.addresses.contains(&a) => Target::External(a),
                (None, Ok(a)) => {
                    return Err(invalid(format!(
                        "traffic to {a}: not one of external.addresses"
                    )));
                }
                (None, Err(_)) => {
                    return Err(invalid(format!(
                        "traffic to {:?}: neither a pod (namespace/name) nor an address",
                        t.to
                    )));
                }
            };
            let protocol = parse_protocol(&t.protocol)
                .map_err(|e| invalid(format!("traffic {} -> {}: {e}", t.from, t.to)))?;
            let port = match (protocol, t.port) {
                (Protocol::Icmp, _) => 0,
                (Protocol::Tcp | Protocol::Udp, Some(p)) if p > 0 => p,
                (Protocol::Tcp | Protocol::Udp, _) => {
                    return Err(invalid(format!(
                        "traffic {} -> {}: {protocol} needs a port",
                        t.from, t.to
                    )));
                }
                (other, _) => {
                    return Err(invalid(format!(
                        "traffic {} -> {}: the demo generates TCP, UDP and ICMP, not {other}",
                        t.from, t.to
                    )));
                }
            };
            flows.push(Flow {
                from,
                to,
                protocol,
                port,
            });
        }
        let cluster_yaml = cluster_yaml(&self, &self.policies, &pods, node_ip)?;
        let cluster = compile("scenario", &cluster_yaml, 1)?;
        let stages = stages(&self, &pods, node_ip)?;
        Ok(Placed {
            scenario: self,
            node_ip,
            pods,
            flows,
            cluster_yaml,
            cluster,
            stages,
        })
    }
}

fn compile(source: &str, cluster_yaml: &str, generation: u64) -> Result<Cluster, DemoError> {
    let mut objects = ClusterObjects::default();
    objects
        .parse_yaml(source, cluster_yaml)
        .map_err(|e| DemoError::Policy(e.to_string()))?;
    Cluster::build(&objects, generation).map_err(|e| DemoError::Policy(e.to_string()))
}

/// `namespace/name` of a NetworkPolicy object.
fn policy_name(policy: &Value) -> Option<PolicyName> {
    let meta = policy.get("metadata")?;
    Some(PolicyName {
        namespace: meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned(),
        name: meta.get("name")?.as_str()?.to_owned(),
    })
}

/// The cluster after each change, in time order; each is checked now, so
/// a bad change fails before anything is built.
fn stages(s: &Scenario, pods: &[PlacedPod], node_ip: Ipv4Addr) -> Result<Vec<Stage>, DemoError> {
    let mut changes: Vec<(std::time::Duration, usize, &ChangeSpec)> = Vec::new();
    for (i, c) in s.changes.iter().enumerate() {
        let after = crate::run::parse_duration(&c.after)
            .map_err(|e| DemoError::InvalidScenario(format!("changes[{i}].after: {e}")))?;
        changes.push((after, i, c));
    }
    changes.sort_by_key(|(after, i, _)| (*after, *i));
    let mut policies = s.policies.clone();
    let mut out = Vec::new();
    for (after, i, change) in changes {
        let invalid = |m: String| DemoError::InvalidScenario(format!("changes[{i}]: {m}"));
        let description = match (&change.apply, &change.delete) {
            (Some(policy), None) => {
                if policy.get("kind").and_then(Value::as_str) != Some("NetworkPolicy") {
                    return Err(invalid("`apply` takes a NetworkPolicy".into()));
                }
                let name = policy_name(policy)
                    .ok_or_else(|| invalid("the NetworkPolicy has no metadata.name".into()))?;
                match policies
                    .iter()
                    .position(|p| policy_name(p).as_ref() == Some(&name))
                {
                    Some(at) => {
                        policies[at] = policy.clone();
                        format!("{name} modified")
                    }
                    None => {
                        policies.push(policy.clone());
                        format!("{name} created")
                    }
                }
            }
            (None, Some(name)) => {
                let at = policies
                    .iter()
                    .position(|p| policy_name(p).as_ref() == Some(name))
                    .ok_or_else(|| invalid(format!("deletes {name}, which does not exist then")))?;
                policies.remove(at);
                format!("{name} deleted")
            }
            _ => return Err(invalid("give exactly one of `apply` and `delete`".into())),
        };
        let cluster_yaml = cluster_yaml(s, &policies, pods, node_ip)?;
        let cluster = compile(&format!("changes[{i}]"), &cluster_yaml, 1)
            .map_err(|e| invalid(e.to_string()))?;
        out.push(Stage {
            after,
            description,
            cluster_yaml,
            cluster,
        });
    }
    Ok(out)
}

fn parse_protocol(text: &str) -> Result<Protocol, DemoError> {
    match text.parse::<Protocol>() {
        Ok(p @ (Protocol::Tcp | Protocol::Udp | Protocol::Icmp)) => Ok(p),
        Ok(other) => Err(DemoError::InvalidScenario(format!(
            "the demo supports TCP, UDP and ICMP, not {other}"
        ))),
        Err(e) => Err(DemoError::InvalidScenario(e.to_string())),
    }
}

/// The scenario's cluster as multi-document Kubernetes YAML.
fn cluster_yaml(
    s: &Scenario,
    policies: &[Value],
    pods: &[PlacedPod],
    node_ip: Ipv4Addr,
) -> Result<String, DemoError> {
    let mut docs: Vec<Value> = Vec::new();
    for ns in &s.namespaces {
        let mut labels = ns.labels.clone();
        // What the API server sets on every namespace.
        labels.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": labels}}));
    }
    for p in pods {
        let mut labels = p.spec.labels.clone();
        let mut owners = Vec::new();
        if let Some(w) = &p.spec.workload {
            if w.kind == "Deployment" {
                // Deployments own pods through a ReplicaSet named after the template hash.
                let hash = format!("{:x}", 0x5f00_0000_u32 + p.index as u32);
                labels.insert("pod-template-hash".into(), hash.clone());
                owners.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-{hash}", w.name), "uid": format!("fg-rs-{}", p.index), "controller": true}));
            } else {
                owners.push(json!({"apiVersion": "apps/v1", "kind": w.kind, "name": w.name, "uid": format!("fg-wl-{}", p.index), "controller": true}));
            }
        }
        let ports: Vec<Value> = p
            .spec
            .ports
            .iter()
            .map(|port| {
                let mut v = json!({"containerPort": port.port, "protocol": port.protocol.to_ascii_uppercase()});
                if let Some(n) = &port.name {
                    v["name"] = json!(n);
                }
                v
            })
            .collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.spec.name, "namespace": p.spec.namespace, "labels": labels, "ownerReferences": owners},
            "spec": {"nodeName": NODE_NAME, "containers": [{"name": "main", "image": "demo", "ports": ports}]},
            "status": {"phase": "Running", "podIP": p.ip.to_string(), "podIPs": [{"ip": p.ip.to_string()}], "hostIP": node_ip.to_string()}
        }));
    }
    docs.extend(policies.iter().cloned());
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(
            &serde_norway::to_string(&d)
                .map_err(|e| DemoError::InvalidScenario(format!("rendering cluster YAML: {e}")))?,
        );
    }
    Ok(out)
}

impl Placed {
    pub fn pod_name(&self, index: usize) -> String {
        let p = &self.pods[index].spec;
        format!("{}/{}", p.namespace, p.name)
    }

    /// The address a target answers on.
    pub fn target_ip(&self, t: Target) -> Ipv4Addr {
        match t {
            Target::Pod(i) => self.pods[i].ip,
            Target::External(a) => a,
        }
    }

    /// What the engine says about a flow.
    pub fn allowed(&self, flow: &Flow) -> bool {
        let src = self
            .cluster
            .endpoint_for_ip(IpAddr::V4(self.pods[flow.from].ip));
        let dst = self
            .cluster
            .endpoint_for_ip(IpAddr::V4(self.target_ip(flow.to)));
        self.cluster
            .verdict(&src, &dst, flow.port, flow.protocol)
            .allowed
    }

    /// Every (port, protocol) each pod or external address must serve: its
    /// declared ports plus every traffic destination port.
    pub fn served_ports(&self, target: Target) -> Vec<(Protocol, u16)> {
        let mut out: Vec<(Protocol, u16)> = Vec::new();
        if let Target::Pod(i) = target {
            for p in &self.pods[i].spec.ports {
                if let Ok(proto) = parse_protocol(&p.protocol) {
                    out.push((proto, p.port));
                }
            }
        }
        for f in &self.flows {
            if f.to == target && f.protocol != Protocol::Icmp {
                out.push((f.protocol, f.port));
            }
        }
        out.sort_by_key(|(p, n)| (p.as_str(), *n));
        out.dedup();
        out
    }
}
