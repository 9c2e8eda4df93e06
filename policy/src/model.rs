//! The engine's compiled form of namespaces, pods and NetworkPolicies.
//!
//! Everything here is validated: a value of these types always means what the
//! Kubernetes API says it means, so evaluation never has to re-check input.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

use crate::selector::{Labels, Selector};

/// Index of a pod in a [`crate::Cluster`]; valid for that snapshot only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PodId(pub u32);

/// Index of a policy in a [`crate::Cluster`]; valid for that snapshot only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PolicyId(pub u32);

/// A rule of a policy: its index in the policy's `ingress` or `egress` list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RuleId {
    pub policy: PolicyId,
    pub direction: Direction,
    pub index: u32,
}

/// Policy direction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Transport protocol of a connection. NetworkPolicy ports name only TCP,
/// UDP and SCTP; ICMP is matched only by rules without `ports`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
    #[serde(rename = "ICMP")]
    Icmp,
    #[serde(rename = "ICMPv6")]
    Icmpv6,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }

    /// Whether the protocol has ports that policies can name.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of TCP, UDP, SCTP, ICMP, ICMPv6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (expected TCP, UDP, SCTP, ICMP or ICMPv6)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ICMP" => Ok(Protocol::Icmp),
            "ICMPV6" => Ok(Protocol::Icmpv6),
            _ => Err(UnknownProtocol(s.to_string())),
        }
    }
}

/// A port in a policy: a number, or a container port name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Number(u16),
    Name(String),
}

/// One entry of a rule's `ports` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortSpec>,
    /// Last port of a range starting at a numeric `port`.
    pub end_port: Option<u16>,
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.port, self.end_port) {
            (None, _) => write!(f, "{} (all ports)", self.protocol),
            (Some(PortSpec::Number(p)), None) => write!(f, "{} {p}", self.protocol),
            (Some(PortSpec::Number(p)), Some(e)) => write!(f, "{} {p}-{e}", self.protocol),
            (Some(PortSpec::Name(n)), _) => write!(f, "{} named `{n}`", self.protocol),
        }
    }
}

/// One entry of a rule's `from` or `to` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by selectors. `namespace_selector: None` means the
    /// policy's own namespace; `pod_selector: None` means every pod.
    Pods {
        namespace_selector: Option<Selector>,
        pod_selector: Option<Selector>,
    },
    /// An address range, minus the `except` ranges.
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

/// One ingress or egress rule. Empty `peers` or `ports` match everything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortMatch>,
}

/// A container port a pod declares, which policies may name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// The workload owning a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub node: Option<String>,
    pub host_ip: Option<IpAddr>,
    pub host_network: bool,
    /// Pods in phase Succeeded or Failed hold no IP any more.
    pub terminated: bool,
    pub phase: Option<String>,
    pub ports: Vec<NamedPort>,
    pub workload: Option<Workload>,
}

impl PodInfo {
    /// Whether NetworkPolicies can select this pod and peers match it by
    /// selectors. hostNetwork pods are node traffic (see the crate docs).
    pub fn selectable(&self) -> bool {
        !self.host_network
    }

    pub(crate) fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A compiled NetworkPolicy.
#[derive(Clone, Debug)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    pub isolates_ingress: bool,
    pub isolates_egress: bool,
    /// Rules of the directions the policy isolates (others are ignored, as
    /// in Kubernetes).
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// The object as read, to render it back.
    pub object: NetworkPolicy,
}

impl PolicyInfo {
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub(crate) fn namespace_default_labels(name: &str, labels: &mut BTreeMap<String, String>) {
    // The API server sets this label on every namespace (since 1.21), and
    // policies commonly select namespaces by it.
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| name.to_string());
}
