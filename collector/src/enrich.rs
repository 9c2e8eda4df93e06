//! From a probe's flow to a stored row: check the record, find both
//! endpoints' identities at the flow's time, judge the connection with the
//! policy engine, and compare the verdict with what the kernel did.
//!
//! The verdict is about the connection, so a reply flow (`is_reply`) is
//! judged in the direction of the original connection: from its destination
//! to its source, on its source port. The replies of an allowed connection
//! are thus allowed too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowgate_policy::{
    Cluster, Direction as PolicyDirection, Endpoint, PolicyId, Protocol, Tier, Verdict,
    VerdictCache,
};
use flowgate_proto::v1::{self, Flow};
use flowgate_query::{
    Direction as FlowDirection, DirectionVerdict as FlowDirectionVerdict, Failure,
    FlowBatchBuilder, FlowRef, KernelFate, Outcome, Protocol as FlowProtocol, TextList,
    Tier as FlowTier, Verdict as FlowVerdict,
};
use rustc_hash::FxHashMap;

use crate::cluster::Snapshot;
use crate::cluster::ip_index::{Interval, PodIdentity};
use crate::metrics::{DENIED_RULE, Metrics, rule_labels};

/// Why a flow record cannot be stored: names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("ip_version is unspecified or unknown ({value})")]
    IpVersion { value: i32 },
    #[error("{field} has {len} bytes, {version} needs {want}")]
    IpLength {
        field: &'static str,
        len: usize,
        version: &'static str,
        want: usize,
    },
    #[error("protocol is unspecified or unknown ({value})")]
    Protocol { value: i32 },
    #[error("direction is unknown ({value})")]
    Direction { value: i32 },
    #[error(
        "direction is unspecified on a forwarded flow (only a drop that no TC hook saw may lack one)"
    )]
    DirectionMissing,
    #[error("kernel_fate is unspecified or unknown ({value})")]
    KernelFate { value: i32 },
    #[error("{field} {value} is out of range (max {max})")]
    OutOfRange {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("first_seen_ns {first} is after last_seen_ns {last}")]
    TimeOrder { first: u64, last: u64 },
    #[error("interface name has {len} bytes, Linux allows at most {max}")]
    InterfaceTooLong { len: usize, max: usize },
}

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
pub const MAX_INTERFACE_BYTES: usize = 15;

/// A flow whose fields have been checked and decoded.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// `Unknown` for a drop only the kernel's drop tracepoint saw (no TC
    /// hook, so no side of an interface).
    pub direction: FlowDirection,
    pub dropped: bool,
    pub first_ns: i64,
    pub last_ns: i64,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
}

/// Checks one record; the error names the first problem found.
pub fn check(flow: &Flow) -> Result<Checked, Malformed> {
    let (version, want) = match v1::IpVersion::try_from(flow.ip_version) {
        Ok(v1::IpVersion::V4) => ("IPv4", 4),
        Ok(v1::IpVersion::V6) => ("IPv6", 16),
        _ => {
            return Err(Malformed::IpVersion {
                value: flow.ip_version,
            });
        }
    };
    let src = ip(&flow.src_ip, "src_ip", version, want)?;
    let dst = ip(&flow.dst_ip, "dst_ip", version, want)?;
    let protocol = match v1::Protocol::try_from(flow.protocol) {
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Sctp) => Protocol::Sctp,
        Ok(v1::Protocol::Icmp) => Protocol::Icmp,
        Ok(v1::Protocol::Icmpv6) => Protocol::Icmpv6,
        _ => {
            return Err(Malformed::Protocol {
                value: flow.protocol,
            });
        }
    };
    let dropped = match v1::KernelFate::try_from(flow.kernel_fate) {
        Ok(v1::KernelFate::Forwarded) => false,
        Ok(v1::KernelFate::Dropped) => true,
        _ => {
            return Err(Malformed::KernelFate {
                value: flow.kernel_fate,
            });
        }
    };
    let direction = match v1::Direction::try_from(flow.direction) {
        Ok(v1::Direction::Ingress) => FlowDirection::Ingress,
        Ok(v1::Direction::Egress) => FlowDirection::Egress,
        Ok(v1::Direction::Unspecified) if dropped => FlowDirection::Unknown,
        Ok(v1::Direction::Unspecified) => return Err(Malformed::DirectionMissing),
        Err(_) => {
            return Err(Malformed::Direction {
                value: flow.direction,
            });
        }
    };
    let port = |field, value: u32| {
        u16::try_from(value).map_err(|_| Malformed::OutOfRange {
            field,
            value: value.into(),
            max: 65535,
        })
    };
    let time = |field, value: u64| {
        i64::try_from(value).map_err(|_| Malformed::OutOfRange {
            field,
            value,
            max: i64::MAX as u64,
        })
    };
    if flow.interface.len() > MAX_INTERFACE_BYTES {
        return Err(Malformed::InterfaceTooLong {
            len: flow.interface.len(),
            max: MAX_INTERFACE_BYTES,
        });
    }
    if flow.first_seen_ns > flow.last_seen_ns {
        return Err(Malformed::TimeOrder {
            first: flow.first_seen_ns,
            last: flow.last_seen_ns,
        });
    }
    Ok(Checked {
        src,
        dst,
        protocol,
        direction,
        dropped,
        first_ns: time("first_seen_ns", flow.first_seen_ns)?,
        last_ns: time("last_seen_ns", flow.last_seen_ns)?,
        src_port: port("src_port", flow.src_port)?,
        dst_port: port("dst_port", flow.dst_port)?,
        tcp_flags: u8::try_from(flow.tcp_flags).map_err(|_| Malformed::OutOfRange {
            field: "tcp_flags",
            value: flow.tcp_flags.into(),
            max: 255,
        })?,
    })
}

fn ip(
    bytes: &[u8],
    field: &'static str,
    version: &'static str,
    want: usize,
) -> Result<IpAddr, Malformed> {
    let bad = || Malformed::IpLength {
        field,
        len: bytes.len(),
        version,
        want,
    };
    match want {
        4 => <[u8; 4]>::try_from(bytes)
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .map_err(|_| bad()),
        _ => <[u8; 16]>::try_from(bytes)
            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .map_err(|_| bad()),
    }
}

/// Per-batch tally of verdicts by deciding policy, folded into the metrics
/// once per batch rather than once per flow.
#[derive(Default)]
pub struct VerdictTally {
    counts: FxHashMap<(bool, Option<PolicyId>), u64>,
    /// By rule (`None`: the policy isolated the direction and denied).
    rules: FxHashMap<(PolicyId, PolicyDirection, Option<u32>), u64>,
    mismatches: u64,
}

impl VerdictTally {
    pub fn record(&self, metrics: &Metrics, cluster: &Cluster) {
        for (&(allowed, policy), &n) in &self.counts {
            let verdict = if allowed { "allowed" } else { "denied" };
            let policy = policy.map_or_else(|| "none".to_owned(), |p| cluster.policy(p).key());
            metrics
                .verdicts
                .get_or_create(&vec![("verdict", verdict.to_owned()), ("policy", policy)])
                .inc_by(n);
        }
        metrics.enforcement_mismatches.inc_by(self.mismatches);
        metrics.count_rule_flows(self.rules.iter().map(|(&(id, direction, rule), &n)| {
            let p = cluster.policy(id);
            let rule = rule.map_or_else(|| DENIED_RULE.to_owned(), |i| i.to_string());
            (rule_labels(&p.namespace, &p.name, direction, rule), n)
        }));
    }

    /// Counts one flow under the rules that admitted it, or the policies
    /// that isolated a direction and denied it.
    fn count_rules(&mut self, v: &Verdict) {
        for r in v.egress.allowed_by.iter().chain(&v.ingress.allowed_by) {
            *self
                .rules
                .entry((r.policy, r.direction, Some(r.index)))
                .or_default() += 1;
        }
        for (d, direction) in [
            (&v.egress, PolicyDirection::Egress),
            (&v.ingress, PolicyDirection::Ingress),
        ] {
            if d.tier == Tier::NetworkPolicy && !d.allowed {
                for p in d.isolated_by.iter() {
                    *self.rules.entry((*p, direction, None)).or_default() += 1;
                }
            }
        }
    }
}

/// Turns checked flows into rows. Owns a verdict cache (one per ingest
/// stream, so that the hot path takes no lock) and the text buffers of the
/// addresses, so that a row costs no allocation of its own.
pub struct Enricher {
    cache: VerdictCache,
    src_ip: String,
    dst_ip: String,
}

impl Enricher {
    pub fn new(cache_entries: usize) -> Self {
        Enricher {
            cache: VerdictCache::new(cache_entries),
            src_ip: String::with_capacity(40),
            dst_ip: String::with_capacity(40),
        }
    }

    /// Appends the stored row for `flow` (already [`check`]ed as `c`), judged
    /// under `snapshot`, to `out`. `node` is the batch's node, used when the
    /// flow has none.
    pub fn append(
        &mut self,
        snapshot: &Snapshot,
        flow: &Flow,
        c: &Checked,
        node: &str,
        tally: &mut VerdictTally,
        out: &mut FlowBatchBuilder,
    ) {
        use std::fmt::Write;
        let cluster = &snapshot.cluster;
        let src_at = snapshot.ips.lookup(c.src, c.first_ns);
        let dst_at = snapshot.ips.lookup(c.dst, c.first_ns);
        let src_ep = endpoint(cluster, c.src, src_at);
        let dst_ep = endpoint(cluster, c.dst, dst_at);
        // Judge the original connection: for a reply, that is dst → src on
        // the reply's source port.
        // The DNS name the server was reached by judges domainNames peers.
        let verdict = if flow.is_reply {
            self.cache.verdict_named(
                cluster,
                &dst_ep,
                &src_ep,
                non_empty(&flow.src_dns_name),
                c.src_port,
                c.protocol,
            )
        } else {
            self.cache.verdict_named(
                cluster,
                &src_ep,
                &dst_ep,
                non_empty(&flow.dst_dns_name),
                c.dst_port,
                c.protocol,
            )
        };
        let allowed = verdict.allowed;
        let mismatch = allowed == c.dropped;
        let deciding = deciding_policy(verdict);
        *tally.counts.entry((allowed, deciding)).or_default() += 1;
        tally.count_rules(verdict);
        tally.mismatches += u64::from(mismatch);
        let (allowed_by, allowed_rules, denied_by) = policy_names(&snapshot.names, verdict);
        let dir = |d: &flowgate_policy::DirectionVerdict| match (d.applicable, d.allowed) {
            (false, _) => FlowDirectionVerdict::NotApplicable,
            (true, true) => FlowDirectionVerdict::Allowed,
            (true, false) => FlowDirectionVerdict::Denied,
        };
        let tier = |d: &flowgate_policy::DirectionVerdict| match d.tier {
            Tier::Admin => FlowTier::Admin,
            Tier::NetworkPolicy => FlowTier::NetworkPolicy,
            Tier::Baseline => FlowTier::Baseline,
            Tier::Default => FlowTier::Default,
            Tier::NotApplicable => FlowTier::NotApplicable,
        };
        // `tier/policy/direction/rule`; only flows a cluster tier decided
        // pay for the text.
        let decided_by: Vec<String> = [
            (&verdict.egress, PolicyDirection::Egress),
            (&verdict.ingress, PolicyDirection::Ingress),
        ]
        .into_iter()
        .filter_map(|(d, direction)| {
            let id = d.decided_by?;
            let p = cluster.cluster_policy(id.policy);
            let dir = match direction {
                PolicyDirection::Ingress => "ingress",
                PolicyDirection::Egress => "egress",
            };
            Some(format!(
                "{}/{}/{dir}/{}",
                tier(d),
                p.name,
                p.rule_label(id.direction, id.index)
            ))
        })
        .collect();
        self.src_ip.clear();
        self.dst_ip.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.src_ip, "{}", c.src);
        let _ = write!(self.dst_ip, "{}", c.dst);
        let (src_id, dst_id) = (identity(src_at), identity(dst_at));
        out.push(&FlowRef {
            time: c.first_ns,
            last_seen: c.last_ns,
            node: if flow.node.is_empty() {
                node
            } else {
                &flow.node
            },
            interface: &flow.interface,
            direction: c.direction,
            ip_version: if c.src.is_ipv4() { 4 } else { 6 },
            src_ip: &self.src_ip,
            dst_ip: &self.dst_ip,
            src_port: c.src_port,
            dst_port: c.dst_port,
            protocol: flow_protocol(c.protocol),
            packets: flow.packets,
            bytes: flow.bytes,
            tcp_flags: c.tcp_flags,
            is_reply: flow.is_reply,
            src_namespace: src_id.map(|i| i.namespace.as_str()),
            src_pod: src_id.map(|i| i.name.as_str()),
            src_workload: src_id.and_then(|i| i.workload.as_deref()),
            src_workload_kind: src_id.and_then(|i| i.workload_kind.as_deref()),
            src_labels: src_id.map(|i| i.labels_json.as_str()),
            dst_namespace: dst_id.map(|i| i.namespace.as_str()),
            dst_pod: dst_id.map(|i| i.name.as_str()),
            dst_workload: dst_id.and_then(|i| i.workload.as_deref()),
            dst_workload_kind: dst_id.and_then(|i| i.workload_kind.as_deref()),
            dst_labels: dst_id.map(|i| i.labels_json.as_str()),
            src_dns_name: non_empty(&flow.src_dns_name),
            dst_dns_name: non_empty(&flow.dst_dns_name),
            verdict: FlowVerdict::from(allowed),
            egress_verdict: dir(&verdict.egress),
            ingress_verdict: dir(&verdict.ingress),
            egress_tier: Some(tier(&verdict.egress)),
            ingress_tier: Some(tier(&verdict.ingress)),
            allowed_by: TextList::Borrowed(&allowed_by),
            allowed_rules: TextList::Borrowed(&allowed_rules),
            denied_by: TextList::Borrowed(&denied_by),
            decided_by: TextList::Owned(&decided_by),
            policy_generation: verdict.generation,
            kernel_fate: if c.dropped {
                KernelFate::Dropped
            } else {
                KernelFate::Forwarded
            },
            drop_reason: (!flow.drop_reason.is_empty()).then_some(flow.drop_reason.as_str()),
            outcome: outcome(flow.outcome),
            failure: failure(flow.failure),
            enforcement_mismatch: mismatch,
        });
    }
}

/// The probe's outcome; unspecified (or a value newer than this collector)
/// stores NULL: nothing could be said.
fn outcome(value: i32) -> Option<Outcome> {
    Some(match v1::Outcome::try_from(value).ok()? {
        v1::Outcome::Unspecified => return None,
        v1::Outcome::Established => Outcome::Established,
        v1::Outcome::Refused => Outcome::Refused,
        v1::Outcome::Unanswered => Outcome::Unanswered,
        v1::Outcome::Dropped => Outcome::Dropped,
        v1::Outcome::Reset => Outcome::Reset,
        v1::Outcome::Closed => Outcome::Closed,
    })
}

fn failure(value: i32) -> Option<Failure> {
    Some(match v1::Failure::try_from(value).ok()? {
        v1::Failure::Unspecified => return None,
        v1::Failure::Policy => Failure::Policy,
        v1::Failure::NoListener => Failure::NoListener,
        v1::Failure::Conntrack => Failure::Conntrack,
        v1::Failure::Routing => Failure::Routing,
        v1::Failure::Other => Failure::Other,
    })
}

fn flow_protocol(p: Protocol) -> FlowProtocol {
    match p {
        Protocol::Tcp => FlowProtocol::Tcp,
        Protocol::Udp => FlowProtocol::Udp,
        Protocol::Sctp => FlowProtocol::Sctp,
        Protocol::Icmp => FlowProtocol::Icmp,
        Protocol::Icmpv6 => FlowProtocol::Icmpv6,
    }
}

fn identity(at: Option<&Interval>) -> Option<&PodIdentity> {
    at.map(|i| &*i.identity)
}

/// The text of every policy and rule of one cluster snapshot, made once per
/// snapshot so that rows only borrow it.
#[derive(Debug, Default)]
pub struct PolicyNames {
    /// `namespace/name` by policy index.
    keys: Vec<String>,
    /// `namespace/name/ingress/0`: by policy index, then direction
    /// (ingress, egress), then rule index.
    rules: Vec<[Vec<String>; 2]>,
}

impl PolicyNames {
    pub fn of(cluster: &Cluster) -> Self {
        let mut names = PolicyNames::default();
        for (id, p) in cluster.policies() {
            let i = id.0 as usize;
            if names.keys.len() <= i {
                names.keys.resize_with(i + 1, String::new);
                names.rules.resize_with(i + 1, Default::default);
            }
            let key = p.key();
            names.rules[i] = [
                (0..p.ingress.len())
                    .map(|r| format!("{key}/ingress/{r}"))
                    .collect(),
                (0..p.egress.len())
                    .map(|r| format!("{key}/egress/{r}"))
                    .collect(),
            ];
            names.keys[i] = key;
        }
        names
    }

    fn key(&self, id: PolicyId) -> &str {
        self.keys.get(id.0 as usize).map_or("?", String::as_str)
    }

    fn rule(&self, id: PolicyId, direction: PolicyDirection, index: u32) -> &str {
        let d = match direction {
            PolicyDirection::Ingress => 0,
            PolicyDirection::Egress => 1,
        };
        self.rules
            .get(id.0 as usize)
            .and_then(|r| r[d].get(index as usize))
            .map_or("?", String::as_str)
    }
}

/// The policy endpoint for an address at the flow's time. A pod that held the
/// address then but is gone from the current snapshot cannot be judged as a
/// pod any more; it is judged by address (as the rest of the world is).
fn endpoint(cluster: &Cluster, ip: IpAddr, at: Option<&Interval>) -> Endpoint {
    match at.and_then(|i| i.pod) {
        Some(pod) => cluster.pod_endpoint(pod, Some(ip)),
        None if at.is_some() => Endpoint { ip, pod: None },
        // Not a pod address: hostNetwork pods and nodes are known to the
        // engine by address; everything else is the world.
        None => {
            let e = cluster.endpoint_for_ip(ip);
            if e.pod.is_some() {
                Endpoint { ip, pod: None }
            } else {
                e
            }
        }
    }
}

/// The policy a verdict is counted under: the first admitting one, or the
/// first isolating one for a denial.
fn deciding_policy(v: &Verdict) -> Option<PolicyId> {
    if v.allowed {
        v.egress
            .allowed_by
            .iter()
            .chain(&v.ingress.allowed_by)
            .map(|r| r.policy)
            .next()
    } else {
        [&v.egress, &v.ingress]
            .into_iter()
            .filter(|d| d.tier == Tier::NetworkPolicy && !d.allowed)
            .flat_map(|d| d.isolated_by.iter())
            .copied()
            .next()
    }
}

/// `allowed_by` ("ns/name", unique), `allowed_rules` ("ns/name/ingress/0")
/// and `denied_by` (policies isolating a denied direction), borrowed from
/// the snapshot's names. Most flows have none (no allocation) or one or two.
fn policy_names<'a>(
    names: &'a PolicyNames,
    v: &Verdict,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let mut allowed_by: Vec<&str> = Vec::new();
    let mut rules = Vec::new();
    for r in v.egress.allowed_by.iter().chain(&v.ingress.allowed_by) {
        let key = names.key(r.policy);
        rules.push(names.rule(r.policy, r.direction, r.index));
        if !allowed_by.contains(&key) {
            allowed_by.push(key);
        }
    }
    let mut denied_by: Vec<&str> = Vec::new();
    for d in [&v.egress, &v.ingress] {
        // Only where NetworkPolicies decided: an Admin/Baseline denial is
        // named in `decided_by`, not blamed on the namespace's policies.
        if d.tier == Tier::NetworkPolicy && !d.allowed {
            for p in d.isolated_by.iter() {
                let key = names.key(*p);
                if !denied_by.contains(&key) {
                    denied_by.push(key);
                }
            }
        }
    }
    (allowed_by, rules, denied_by)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            first_seen_ns: 1,
            last_seen_ns: 2,
            direction: v1::Direction::Egress as i32,
            ip_version: v1::IpVersion::V4 as i32,
            src_ip: vec![10, 0, 0, 1],
            dst_ip: vec![10, 0, 0, 2],
            protocol: v1::Protocol::Tcp as i32,
            src_port: 40000,
            dst_port: 80,
            kernel_fate: v1::KernelFate::Forwarded as i32,
            ..Flow::default()
        }
    }

    #[test]
    fn a_good_record_decodes() {
        let c = check(&flow()).unwrap();
        assert_eq!(c.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.dst_port, 80);
        assert!(c.direction == FlowDirection::Egress && !c.dropped);
    }

    #[test]
    fn only_a_drop_may_lack_a_direction() {
        let mut f = flow();
        f.direction = v1::Direction::Unspecified as i32;
        f.kernel_fate = v1::KernelFate::Dropped as i32;
        let c = check(&f).unwrap();
        assert!(c.direction == FlowDirection::Unknown && c.dropped);
        f.kernel_fate = v1::KernelFate::Forwarded as i32;
        assert_eq!(check(&f).unwrap_err(), Malformed::DirectionMissing);
    }

    #[test]
    fn each_malformed_field_is_named() {
        type Mutation = Box<dyn Fn(&mut Flow)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|f| f.src_ip = vec![1, 2, 3]),
                "src_ip has 3 bytes, IPv4 needs 4",
            ),
            (
                Box::new(|f| f.dst_ip = vec![0; 16]),
                "dst_ip has 16 bytes, IPv4 needs 4",
            ),
            (Box::new(|f| f.ip_version = 0), "ip_version is unspecified"),
            (Box::new(|f| f.protocol = 0), "protocol is unspecified"),
            (
                Box::new(|f| f.protocol = 99),
                "protocol is unspecified or unknown (99)",
            ),
            (
                Box::new(|f| f.direction = 0),
                "direction is unspecified on a forwarded flow",
            ),
            (Box::new(|f| f.direction = 7), "direction is unknown (7)"),
            (
                Box::new(|f| f.kernel_fate = 0),
                "kernel_fate is unspecified",
            ),
            (
                Box::new(|f| f.dst_port = 70000),
                "dst_port 70000 is out of range",
            ),
            (
                Box::new(|f| f.tcp_flags = 256),
                "tcp_flags 256 is out of range",
            ),
            (
                Box::new(|f| f.first_seen_ns = 5),
                "first_seen_ns 5 is after last_seen_ns 2",
            ),
        ];
        for (mutate, want) in cases {
            let mut f = flow();
            mutate(&mut f);
            let err = check(&f).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
