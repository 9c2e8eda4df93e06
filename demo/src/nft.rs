//! Compiles the engine's view of the policies into an nftables ruleset, the
//! way an iptables/nftables CNI enforces NetworkPolicy, so that what the
//! kernel drops is what the engine denies.
//!
//! The ruleset (table `inet flowgate_demo`, in the node namespace) hooks
//! `forward`: replies of admitted connections pass by conntrack; a packet
//! leaving pod P (`iifname fg-vP`) runs P's egress chain, and a packet
//! entering pod Q (`oifname fg-vQ`) runs Q's ingress chain, when any tier
//! has something to say about that pod and direction. The chains follow the
//! tiers in order:
//!
//! 1. `egress_P` holds the Admin tier's rules (AdminNetworkPolicy and Admin
//!    ClusterNetworkPolicy), by priority then rule order: `Accept` returns
//!    (this side admitted, NetworkPolicies not consulted), `Deny` drops,
//!    `Pass` jumps (`goto`) to the next tier; at its end it goes there too.
//! 2. `egress_P_np`: if NetworkPolicies isolate P, their rules `return` on
//!    the first that admits the packet (so both sides are checked) and the
//!    chain drops at its end. Otherwise the Baseline tier's rules: `Accept`
//!    and `Pass` return, `Deny` drops, and the end returns (allowed).
//!
//! NetworkPolicy rules are generated from [`flowgate_policy::PolicyInfo`]:
//! peers become address sets (pods through `peer_pods`, ipBlocks minus their
//! `except` ranges), ports become `meta l4proto … th dport …`, named ports
//! resolve against the destination pod (per destination for egress). Tier
//! rules likewise: `namespaces`/`pods` peers become the addresses of the
//! pods they match for P, `nodes` the Nodes' addresses, `networks` their
//! CIDRs; `domainNames` match nothing (as in the engine).
//!
//! [`Enforcement`] leaves out features the way a CNI lacking them would:
//! - `endPort`: the range is ignored and only its start port is allowed (what
//!   a CNI that predates the field does: it reads `port` and never `endPort`).
//! - `namedPorts`: port entries naming a port are dropped from the rule; a
//!   rule left with only such entries admits nothing (never everything).
//! - `ipBlockExcept`: `except` is ignored, the whole `cidr` is admitted.
//! - `egress`: egress policies are not enforced at all (of any tier).
//! - `adminTier`: the Admin tier is ignored (a CNI without
//!   AdminNetworkPolicy/ClusterNetworkPolicy support).
//! - `baselineTier`: the Baseline tier is ignored.
//!
//! The demo topology is IPv4, so IPv6 ipBlocks never match and are left out.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use flowgate_policy::{
    Cluster, Direction, Peer, PodId, PolicyTier, PortMatch, PortSpec, Protocol, TierAction,
    TierPeer, TierPort, TierRuleId,
};
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
    pub admin_tier: bool,
    pub baseline_tier: bool,
}

impl Enforcement {
    pub const ALL: Enforcement = Enforcement {
        enabled: true,
        end_port: true,
        named_ports: true,
        ip_block_except: true,
        egress: true,
        admin_tier: true,
        baseline_tier: true,
    };
    pub const NONE: Enforcement = Enforcement {
        enabled: false,
        end_port: false,
        named_ports: false,
        ip_block_except: false,
        egress: false,
        admin_tier: false,
        baseline_tier: false,
    };
}

/// `--enforce` is not `all`, `none` or `without:FEATURE,…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid enforcement {0:?}: expected all, none or without:FEATURE[,FEATURE…] with FEATURE one of endPort, namedPorts, ipBlockExcept, egress, adminTier, baselineTier"
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
                "adminTier" => e.admin_tier = false,
                "baselineTier" => e.baseline_tier = false,
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
                let (name, hook) = match direction {
                    Direction::Egress => (format!("egress_{index}"), "iifname"),
                    Direction::Ingress => (format!("ingress_{index}"), "oifname"),
                };
                let Some(body) = pod_chains(cluster, enforcement, pod, direction, &name) else {
                    continue;
                };
                let _ = writeln!(forward, "    {hook} \"{}\" jump {name}", pod_link(index));
                chains.push_str(&body);
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

/// The two chains of one pod and direction (see the module docs), or
/// `None` when no tier applies to it.
fn pod_chains(
    cluster: &Cluster,
    enforcement: Enforcement,
    pod: PodId,
    direction: Direction,
    name: &str,
) -> Option<String> {
    let tier = |t: PolicyTier, on: bool| {
        if on {
            cluster.tier_subject_policies(t, pod, direction)
        } else {
            &[]
        }
    };
    let admin = tier(PolicyTier::Admin, enforcement.admin_tier);
    let isolating = cluster.isolating_policies(pod, direction);
    let baseline = tier(PolicyTier::Baseline, enforcement.baseline_tier);
    let baseline = if isolating.is_empty() { baseline } else { &[] };
    if admin.is_empty() && isolating.is_empty() && baseline.is_empty() {
        return None;
    }
    let rest = format!("{name}_np");
    let mut out = String::new();
    let _ = writeln!(out, "  chain {name} {{");
    tier_rules(cluster, enforcement, pod, direction, admin, &rest, &mut out);
    let _ = writeln!(out, "    goto {rest}\n  }}\n  chain {rest} {{");
    if isolating.is_empty() {
        tier_rules(
            cluster,
            enforcement,
            pod,
            direction,
            baseline,
            &rest,
            &mut out,
        );
    } else {
        for &policy in isolating.iter() {
            let info = cluster.policy(policy);
            for (ri, rule) in info.rules(direction).iter().enumerate() {
                let comment = format!("{}/{} {direction:?} rule {ri}", info.namespace, info.name);
                for line in rule_lines(
                    cluster,
                    enforcement,
                    policy,
                    pod,
                    direction,
                    &rule.peers,
                    &rule.ports,
                ) {
                    let _ = writeln!(out, "    {line} return comment \"{comment}\"");
                }
            }
        }
        let _ = writeln!(out, "    counter drop comment \"isolated, no rule admits\"");
    }
    let _ = writeln!(out, "  }}");
    Some(out)
}

/// The rules of the tier policies `policies` (in evaluation order) for
/// `pod`: Accept returns, Deny drops, Pass goes to `next` (in the Baseline
/// tier, whose `next` is its own chain's end, Pass returns).
fn tier_rules(
    cluster: &Cluster,
    enforcement: Enforcement,
    pod: PodId,
    direction: Direction,
    policies: &[flowgate_policy::ClusterPolicyId],
    next: &str,
    out: &mut String,
) {
    for &policy in policies {
        let info = cluster.cluster_policy(policy);
        for index in 0..info.rules(direction).len() as u32 {
            let id = TierRuleId {
                policy,
                direction,
                index,
            };
            let verdict = match (cluster.tier_rule(id).action, info.tier) {
                (TierAction::Accept, _) | (TierAction::Pass, PolicyTier::Baseline) => {
                    "return".to_owned()
                }
                (TierAction::Deny, _) => "drop".to_owned(),
                (TierAction::Pass, PolicyTier::Admin) => format!("goto {next}"),
            };
            let comment = cluster.decided_by_key(id);
            for line in tier_rule_lines(cluster, enforcement, id, pod) {
                let _ = writeln!(out, "    {line} {verdict} comment \"{comment}\"");
            }
        }
    }
}

/// The nft match expressions (without verdict) of one Admin or Baseline
/// rule applied to `pod`.
fn tier_rule_lines(
    cluster: &Cluster,
    enforcement: Enforcement,
    id: TierRuleId,
    pod: PodId,
) -> Vec<String> {
    let rule = cluster.tier_rule(id);
    let addr_key = match id.direction {
        Direction::Egress => "ip daddr",
        Direction::Ingress => "ip saddr",
    };
    let mut ranges: Ranges = Vec::new();
    let mut peer_pods: Vec<PodId> = Vec::new();
    for (pi, peer) in rule.peers.iter().enumerate() {
        match peer {
            TierPeer::Namespaces(_) | TierPeer::Pods { .. } => {
                for (other, _) in cluster.pods() {
                    let endpoint = cluster.pod_endpoint(other, None);
                    if cluster.tier_peer_matches(id, pi, pod, &endpoint, None)
                        && let Some(a) = pod_v4(cluster, other)
                    {
                        ranges.push((a, a));
                        peer_pods.push(other);
                    }
                }
            }
            TierPeer::Nodes(selector) => {
                for node in cluster
                    .nodes()
                    .iter()
                    .filter(|n| selector.matches(&n.labels))
                {
                    ranges.extend(node.addresses.iter().filter_map(|a| match a {
                        IpAddr::V4(a) => Some((u32::from(*a), u32::from(*a))),
                        IpAddr::V6(_) => None,
                    }));
                }
            }
            TierPeer::Networks(nets) => ranges.extend(nets.iter().filter_map(net_range)),
            // Never matched from an address, as in the engine.
            TierPeer::DomainNames(_) => {}
        }
    }
    if ranges.is_empty() {
        return Vec::new();
    }
    let addr = format!("{addr_key} {}", render_set(&ranges));
    let Some(ports) = &rule.ports else {
        return vec![addr];
    };
    let mut lines = Vec::new();
    for port in ports {
        match port {
            TierPort::Number { protocol, port } => {
                if let Some(proto) = l4(*protocol) {
                    lines.push(format!("{addr} meta l4proto {proto} th dport {port}"));
                }
            }
            TierPort::Range {
                protocol,
                start,
                end,
            } => {
                if let Some(proto) = l4(*protocol) {
                    lines.push(format!(
                        "{addr} meta l4proto {proto} th dport {start}-{end}"
                    ));
                }
            }
            TierPort::Named(name) if enforcement.named_ports => {
                // The destination pod's container port of that name, with
                // its own protocol.
                let resolve = |p: PodId| {
                    cluster
                        .pod(p)
                        .ports
                        .iter()
                        .find(|np| &np.name == name)
                        .and_then(|np| Some((l4(np.protocol)?, np.port)))
                };
                match id.direction {
                    Direction::Ingress => {
                        if let Some((proto, n)) = resolve(pod) {
                            lines.push(format!("{addr} meta l4proto {proto} th dport {n}"));
                        }
                    }
                    Direction::Egress => {
                        for p in &peer_pods {
                            if let (Some((proto, n)), Some(a)) = (resolve(*p), pod_v4(cluster, *p))
                            {
                                lines.push(format!(
                                    "ip daddr {} meta l4proto {proto} th dport {n}",
                                    render_set(&vec![(a, a)])
                                ));
                            }
                        }
                    }
                }
            }
            TierPort::Named(_) => {}
        }
    }
    lines
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
