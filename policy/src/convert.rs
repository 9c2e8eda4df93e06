//! From k8s-openapi objects to the engine's validated model, rejecting what
//! the Kubernetes API server would reject.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    NamedPort, NamespaceInfo, Peer, PodInfo, PolicyInfo, PortMatch, PortSpec, Protocol, Rule,
    Workload, namespace_default_labels,
};
use crate::selector::{Labels, Requirement, Selector};

pub(crate) fn namespace(ns: &Namespace) -> NamespaceInfo {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels: Labels = ns.metadata.labels.clone().unwrap_or_default();
    namespace_default_labels(&name, &mut labels);
    NamespaceInfo { name, labels }
}

/// Converts a pod. Errors are strings; the caller adds the pod's name.
pub(crate) fn pod(p: &Pod) -> Result<PodInfo, String> {
    let meta = &p.metadata;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().ok_or("metadata.name is missing")?;
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();

    let mut ips = Vec::new();
    let mut push_ip = |s: &str| -> Result<(), String> {
        let ip = IpAddr::from_str(s).map_err(|_| format!("pod IP `{s}` is not an IP address"))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
        Ok(())
    };
    if let Some(st) = status {
        if let Some(ip) = &st.pod_ip {
            push_ip(ip)?;
        }
        for ip in st.pod_ips.iter().flatten() {
            push_ip(&ip.ip)?;
        }
    }
    let host_ip = match status.and_then(|s| s.host_ip.as_deref()) {
        Some(s) => {
            Some(IpAddr::from_str(s).map_err(|_| format!("host IP `{s}` is not an IP address"))?)
        }
        None => None,
    };

    let mut ports = Vec::new();
    for c in spec.iter().flat_map(|s| s.containers.iter()) {
        for cp in c.ports.iter().flatten() {
            let Some(port_name) = &cp.name else { continue };
            let protocol = protocol(cp.protocol.as_deref())?;
            let port = u16::try_from(cp.container_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!(
                        "container port {} is out of range 1-65535",
                        cp.container_port
                    )
                })?;
            ports.push(NamedPort {
                name: port_name.clone(),
                port,
                protocol,
            });
        }
    }

    let phase = status.and_then(|s| s.phase.clone());
    let terminated = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
    Ok(PodInfo {
        namespace,
        name,
        labels: meta.labels.clone().unwrap_or_default(),
        ips,
        node: spec.and_then(|s| s.node_name.clone()),
        host_ip,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        terminated,
        phase,
        ports,
        workload: workload(p),
    })
}

/// The controlling owner; a ReplicaSet made by a Deployment (it carries the
/// pod-template-hash label and is named `<deployment>-<hash>`) is reported
/// as that Deployment. The collector refines this with the real ReplicaSet.
fn workload(p: &Pod) -> Option<Workload> {
    let owner = p
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet" {
        let hash = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
            return Some(Workload {
                kind: "Deployment".into(),
                name: deployment.to_string(),
            });
        }
    }
    Some(Workload {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    })
}

fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(format!(
            "unsupported protocol `{other}` (expected TCP, UDP or SCTP)"
        )),
    }
}

pub(crate) fn selector(s: &LabelSelector) -> Result<Selector, String> {
    let match_labels = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut expressions = Vec::new();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let key = e.key.clone();
        let req = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "invalid selector: operator {} on key `{key}` needs at least one value",
                    e.operator
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "invalid selector: operator {} on key `{key}` takes no values",
                    e.operator
                ));
            }
            "In" => Requirement::In { key, values },
            "NotIn" => Requirement::NotIn { key, values },
            "Exists" => Requirement::Exists { key },
            "DoesNotExist" => Requirement::DoesNotExist { key },
            other => {
                return Err(format!(
                    "invalid selector: unknown operator `{other}` on key `{key}` \
                     (expected In, NotIn, Exists or DoesNotExist)"
                ));
            }
        };
        expressions.push(req);
    }
    Ok(Selector::new(match_labels, expressions))
}

fn peer(p: &NetworkPolicyPeer) -> Result<Peer, String> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(
                "a peer with ipBlock may not also have podSelector or namespaceSelector".into(),
            );
        }
        let cidr = cidr(&block.cidr)?;
        let mut except = Vec::new();
        for e in block.except.iter().flatten() {
            let e = cidr_in(e, &cidr)?;
            except.push(e);
        }
        return Ok(Peer::IpBlock { cidr, except });
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err("a peer must set podSelector, namespaceSelector or ipBlock".into());
    }
    Ok(Peer::Pods {
        namespace_selector: p.namespace_selector.as_ref().map(selector).transpose()?,
        pod_selector: p.pod_selector.as_ref().map(selector).transpose()?,
    })
}

fn cidr(s: &str) -> Result<IpNet, String> {
    // Like the API server, accept host bits and keep the network.
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .map_err(|_| format!("ipBlock cidr `{s}` is not a CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)"))
}

fn cidr_in(s: &str, outer: &IpNet) -> Result<IpNet, String> {
    let n = IpNet::from_str(s)
        .map(|n| n.trunc())
        .map_err(|_| format!("ipBlock except `{s}` is not a CIDR"))?;
    if !outer.contains(&n) {
        return Err(format!("ipBlock except `{s}` is not inside cidr `{outer}`"));
    }
    Ok(n)
}

fn port(p: &NetworkPolicyPort) -> Result<PortMatch, String> {
    let protocol = protocol(p.protocol.as_deref())?;
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(PortSpec::Number(
            u16::try_from(*n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| format!("port {n} is out of range 1-65535"))?,
        )),
        Some(IntOrString::String(s)) => {
            // IANA service names: 1-15 characters, lowercase letters, digits
            // and '-', at least one letter (so "80" is not a name).
            let valid = !s.is_empty()
                && s.len() <= 15
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && s.chars().any(|c| c.is_ascii_lowercase());
            if !valid {
                return Err(format!(
                    "port `{s}` is neither a number nor a valid port name \
                     (1-15 lowercase letters, digits or '-', with at least one letter)"
                ));
            }
            Some(PortSpec::Name(s.clone()))
        }
    };
    let end_port = match (p.end_port, &port) {
        (None, _) => None,
        (Some(e), Some(PortSpec::Number(start))) => {
            let e = u16::try_from(e)
                .ok()
                .filter(|e| *e != 0)
                .ok_or_else(|| format!("endPort {e} is out of range 1-65535"))?;
            if e < *start {
                return Err(format!("endPort {e} is smaller than port {start}"));
            }
            Some(e)
        }
        (Some(_), Some(PortSpec::Name(n))) => {
            return Err(format!("endPort may not be used with the named port `{n}`"));
        }
        (Some(_), None) => return Err("endPort needs a numeric port".into()),
    };
    Ok(PortMatch {
        protocol,
        port,
        end_port,
    })
}

fn rule<'a>(
    peers: Option<&'a Vec<NetworkPolicyPeer>>,
    ports: Option<&'a Vec<NetworkPolicyPort>>,
    what: &str,
    index: usize,
) -> Result<Rule, String> {
    let ctx = |e: String| format!("{what}[{index}]: {e}");
    Ok(Rule {
        peers: peers
            .into_iter()
            .flatten()
            .map(peer)
            .collect::<Result<_, _>>()
            .map_err(ctx)?,
        ports: ports
            .into_iter()
            .flatten()
            .map(port)
            .collect::<Result<_, _>>()
            .map_err(ctx)?,
    })
}

/// Converts a policy. Errors are strings; the caller adds the policy's name.
pub(crate) fn policy(np: &NetworkPolicy) -> Result<PolicyInfo, String> {
    let namespace = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = np.metadata.name.clone().ok_or("metadata.name is missing")?;
    let spec = np.spec.clone().unwrap_or_default();
    // podSelector is required by the API; an absent one selects every pod.
    let pod_selector = match &spec.pod_selector {
        Some(s) => selector(s).map_err(|e| format!("podSelector: {e}"))?,
        None => Selector::everything(),
    };

    let has_egress_rules = spec.egress.as_ref().is_some_and(|r| !r.is_empty());
    let (isolates_ingress, isolates_egress) = match spec.policy_types.as_deref() {
        // Omitted: Ingress always, Egress when the policy has egress rules.
        None | Some([]) => (true, has_egress_rules),
        Some(types) => {
            let mut t = (false, false);
            for ty in types {
                match ty.as_str() {
                    "Ingress" => t.0 = true,
                    "Egress" => t.1 = true,
                    other => {
                        return Err(format!(
                            "unknown policyType `{other}` (expected Ingress or Egress)"
                        ));
                    }
                }
            }
            t
        }
    };

    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        ingress.push(rule(r.from.as_ref(), r.ports.as_ref(), "ingress", i)?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        egress.push(rule(r.to.as_ref(), r.ports.as_ref(), "egress", i)?);
    }
    // Rules of a direction the policy does not isolate have no effect.
    if !isolates_ingress {
        ingress.clear();
    }
    if !isolates_egress {
        egress.clear();
    }
    Ok(PolicyInfo {
        namespace,
        name,
        pod_selector,
        isolates_ingress,
        isolates_egress,
        ingress,
        egress,
        object: np.clone(),
    })
}
