//! Compiles the engine's view of the policies into an nftables ruleset, the
//! way an iptables/nftables CNI enforces NetworkPolicy, so that what the
//! kernel drops is what the engine denies.
//!
//! The ruleset (table `inet flowgate_demo`, in the node namespace) hooks
//! `forward`: replies of admitted connections pass by conntrack; a packet
//! leaving pod P (`iifname fg-vP`) runs P's egress chain if a policy isolates
//! P for egress, and a packet entering pod Q (`oifname fg-vQ`) runs Q's
//! ingress chain if Q is isolated for ingress. Each chain `return`s on the
//! first rule that admits the packet (so both sides are checked) and drops
//! at its end. Rules are generated from [`flowgate_policy::PolicyInfo`]:
//! peers become address sets (pods through `peer_pods`, ipBlocks minus their
//! `except` ranges), ports become `meta l4proto … th dport …`, named ports
//! resolve against the destination pod (per destination for egress).
//!
//! [`Enforcement`] leaves out features the way a CNI lacking them would:
//! - `endPort`: the range is ignored and only its start port is allowed (what
//!   a CNI that predates the field does: it reads `port` and never `endPort`).
//! - `namedPorts`: port entries naming a port are dropped from the rule; a
//!   rule left with only such entries admits nothing (never everything).
//! - `ipBlockExcept`: `except` is ignored, the whole `cidr` is admitted.
//! - `egress`: egress policies are not enforced at all.
//!
//! The demo topology is IPv4, so IPv6 ipBlocks never match and are left out.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use flowgate_policy::{Cluster, Direction, Peer, PodId, PortMatch, PortSpec, Protocol};
use ipnet::IpNet;

use crate::topology::pod_link;

/// The nftables table the demo owns.
pub const TABLE: &str = "flowgate_demo";

/// Which NetworkPolicy features the "CNI" enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforcement {
    pub enabled: bool,
    pub end_port: bool,
    pub named_ports: bool,
    pub ip_block_except: bool,
    pub egress: bool,
}

impl Enforcement {
    pub const ALL: Enforcement = Enforcement {
        enabled: true,
        end_port: true,
        named_ports: true,
        ip_block_except: true,
        egress: true,
    };
    pub const NONE: Enforcement = Enforcement {
        enabled: false,
        end_port: false,
        named_ports: false,
        ip_block_except: false,
        egress: false,
    };
}

/// `--enforce` is not `all`, `none` or `without:FEATURE,…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid enforcement {0:?}: expected all, none or without:FEATURE[,FEATURE…] with FEATURE one of endPort, namedPorts, ipBlockExcept, egress"
)]
pub struct InvalidEnforcement(pub String);

impl FromStr for Enforcement {
    type Err = InvalidEnforcement;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidEnforcement(s.to_owned());
        match s {
            "all" => return Ok(Enforcement::ALL),
            "none" => return Ok(Enforcement::NONE),
            _ => {}
        }
        let list = s.strip_prefix("without:").ok_or_else(err)?;
        let mut e = Enforcement::ALL;
        for feature in list.split(',') {
            match feature.trim() {
                "endPort" => e.end_port = false,
                "namedPorts" => e.named_ports = false,
                "ipBlockExcept" => e.ip_block_except = false,
                "egress" => e.egress = false,
                _ => return Err(err()),
            }
        }
        Ok(e)
    }
}

/// Inclusive IPv4 ranges.
type Ranges = Vec<(u32, u32)>;

fn net_range(net: &IpNet) -> Option<(u32, u32)> {
    match net {
        IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()))),
        IpNet::V6(_) => None,
    }
}

/// `ranges` minus `cut`.
fn subtract(ranges: Ranges, cut: (u32, u32)) -> Ranges {
    let mut out = Vec::new();
    for (lo, hi) in ranges {
        if cut.1 < lo || cut.0 > hi {
            out.push((lo, hi));
            continue;
        }
        if cut.0 > lo {
            out.push((lo, cut.0 - 1));
        }
        if cut.1 < hi {
            out.push((cut.1 + 1, hi));
        }
    }
    out
}

fn pod_v4(cluster: &Cluster, pod: PodId) -> Option<u32> {
    cluster.pod(pod).ips.iter().find_map(|ip| match ip {
        IpAddr::V4(a) => Some(u32::from(*a)),
        IpAddr::V6(_) => None,
    })
}

fn render_set(ranges: &Ranges) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                Ipv4Addr::from(lo).to_string()
            } else {
                format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn l4(protocol: Protocol) -> Option<&'static str> {
    match protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        Protocol::Icmp | Protocol::Icmpv6 => None,
    }
}

/// The demo pod index of a cluster pod (pods are named by the scenario; the
/// interface is `fg-v<index>` where index is the pod's position).
pub type LinkOf<'a> = &'a dyn Fn(PodId) -> Option<usize>;

/// Builds the ruleset. `link_of` maps a pod to its demo index (its interface).
pub fn compile(cluster: &Cluster, enforcement: Enforcement, link_of: LinkOf<'_>) -> String {
    let mut out = String::new();
    // `add table` + `delete table` makes loading idempotent.
    let _ = writeln!(
        out,
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    let mut forward = String::new();
    let mut chains = String::new();
    if enforcement.enabled {
        forward.push_str("    ct state established,related accept\n");
        let mut pods: Vec<(PodId, usize)> = cluster
            .pods()
            .filter_map(|(id, _)| Some((id, link_of(id)?)))
            .collect();
        pods.sort_by_key(|&(_, i)| i);
        for (pod, index) in pods {
            for direction in [Direction::Egress, Direction::Ingress] {
                if direction == Direction::Egress && !enforcement.egress {
                    continue;
                }
                let isolating = cluster.isolating_policies(pod, direction);
                if isolating.is_empty() {
                    continue;
                }
                let (name, hook) = match direction {
                    Direction::Egress => (format!("egress_{index}"), "iifname"),
                    Direction::Ingress => (format!("ingress_{index}"), "oifname"),
                };
                let _ = writeln!(forward, "    {hook} \"{}\" jump {name}", pod_link(index));
                let _ = writeln!(chains, "  chain {name} {{");
                for &policy in isolating.iter() {
                    let info = cluster.policy(policy);
                    for (ri, rule) in info.rules(direction).iter().enumerate() {
                        let comment =
                            format!("{}/{} {direction:?} rule {ri}", info.namespace, info.name);
                        for line in rule_lines(
                            cluster,
                            enforcement,
                            policy,
                            pod,
                            direction,
                            &rule.peers,
                            &rule.ports,
                        ) {
                            let _ = writeln!(chains, "    {line} return comment \"{comment}\"");
                        }
                    }
                }
                let _ = writeln!(
                    chains,
                    "    counter drop comment \"isolated, no rule admits\"\n  }}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}"
    );
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

/// The nft match expressions (without verdict) of one rule.
fn rule_lines(
    cluster: &Cluster,
    enforcement: Enforcement,
    policy: flowgate_policy::PolicyId,
    pod: PodId,
    direction: Direction,
    peers: &[Peer],
    ports: &[PortMatch],
) -> Vec<String> {
    let addr_key = match direction {
        Direction::Egress => "ip daddr",
        Direction::Ingress => "ip saddr",
    };
    // The peer addresses, and for egress named ports the peer pods.
    let mut ranges: Ranges = Vec::new();
    let mut peer_pods: Vec<PodId> = Vec::new();
    for peer in peers {
        match peer {
            Peer::Pods { .. } => {
                for p in cluster.peer_pods(policy, peer) {
                    if let Some(a) = pod_v4(cluster, p) {
                        ranges.push((a, a));
                        peer_pods.push(p);
                    }
                }
            }
            Peer::IpBlock { cidr, except } => {
                let Some(r) = net_range(cidr) else { continue };
                let mut block = vec![r];
                if enforcement.ip_block_except {
                    for e in except.iter().filter_map(net_range) {
                        block = subtract(block, e);
                    }
                }
                for (id, _) in cluster.pods() {
                    if let Some(a) = pod_v4(cluster, id)
                        && block.iter().any(|&(lo, hi)| lo <= a && a <= hi)
                    {
                        peer_pods.push(id);
                    }
                }
                ranges.extend(block);
            }
        }
    }
    let any_peer = peers.is_empty();
    if !any_peer && ranges.is_empty() {
        return Vec::new(); // the peers match nothing
    }
    let addr = |r: &Ranges| {
        if any_peer {
            String::new()
        } else {
            format!("{addr_key} {} ", render_set(r))
        }
    };
    if ports.is_empty() {
        // Every protocol and port; with any peer, every IPv4 packet.
        let line = addr(&ranges);
        let line = line.trim_end();
        return vec![if line.is_empty() {
            "meta nfproto ipv4".to_owned()
        } else {
            line.to_owned()
        }];
    }
    let mut lines = Vec::new();
    for pm in ports {
        let Some(proto) = l4(pm.protocol) else {
            continue;
        };
        match &pm.port {
            None => lines.push(format!("{}meta l4proto {proto}", addr(&ranges))),
            Some(PortSpec::Number(n)) => {
                let dport = match pm.end_port {
                    Some(e) if enforcement.end_port => format!("{n}-{e}"),
                    _ => n.to_string(),
                };
                lines.push(format!(
                    "{}meta l4proto {proto} th dport {dport}",
                    addr(&ranges)
                ));
            }
            Some(PortSpec::Name(name)) => {
                if !enforcement.named_ports {
                    continue;
                }
                let resolve = |p: PodId| {
                    cluster
                        .pod(p)
                        .ports
                        .iter()
                        .find(|np| &np.name == name && np.protocol == pm.protocol)
                        .map(|np| np.port)
                };
                match direction {
                    // The destination is the pod itself.
                    Direction::Ingress => {
                        if let Some(n) = resolve(pod) {
                            lines.push(format!(
                                "{}meta l4proto {proto} th dport {n}",
                                addr(&ranges)
                            ));
                        }
                    }
                    // Each destination pod resolves the name on its own.
                    Direction::Egress => {
                        let candidates: Vec<PodId> = if any_peer {
                            cluster.pods().map(|(id, _)| id).collect()
                        } else {
                            peer_pods.clone()
                        };
                        let mut by_port: Vec<(u16, u32)> = candidates
                            .into_iter()
                            .filter_map(|p| Some((resolve(p)?, pod_v4(cluster, p)?)))
                            .collect();
                        by_port.sort_unstable();
                        by_port.dedup();
                        let mut i = 0;
                        while i < by_port.len() {
                            let n = by_port[i].0;
                            let ips: Ranges = by_port[i..]
                                .iter()
                                .take_while(|x| x.0 == n)
                                .map(|x| (x.1, x.1))
                                .collect();
                            i += ips.len();
                            lines.push(format!(
                                "ip daddr {} meta l4proto {proto} th dport {n}",
                                render_set(&ips)
                            ));
                        }
                    }
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_cuts_holes_and_edges() {
        let r = |a: &str, b: &str| {
            (
                u32::from(a.parse::<Ipv4Addr>().unwrap()),
                u32::from(b.parse::<Ipv4Addr>().unwrap()),
            )
        };
        let whole = vec![r("10.0.0.0", "10.0.0.255")];
        assert_eq!(
            subtract(whole.clone(), r("10.0.0.128", "10.0.0.255")),
            vec![r("10.0.0.0", "10.0.0.127")]
        );
        assert_eq!(
            subtract(whole.clone(), r("10.0.0.0", "10.0.0.0")),
            vec![r("10.0.0.1", "10.0.0.255")]
        );
        assert_eq!(
            subtract(whole.clone(), r("10.0.0.5", "10.0.0.5")),
            vec![r("10.0.0.0", "10.0.0.4"), r("10.0.0.6", "10.0.0.255")]
        );
        assert_eq!(subtract(whole.clone(), r("9.0.0.0", "11.0.0.0")), vec![]);
        assert_eq!(subtract(whole.clone(), r("11.0.0.0", "11.0.0.1")), whole);
    }

    #[test]
    fn render_set_writes_single_addresses_and_ranges() {
        let ranges = vec![(0x0a00_0001, 0x0a00_0001), (0xcb00_7100, 0xcb00_717f)];
        assert_eq!(
            render_set(&ranges),
            "{ 10.0.0.1, 203.0.113.0-203.0.113.127 }"
        );
    }
}
