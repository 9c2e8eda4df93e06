//! Known flows from a file, turned into the batches a probe would send
//! (`flowgate replay`, the demo, the dashboard's tests).
//!
//! The file is YAML or JSON: a list of flows, each an object with
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `src`, `dst` | IP addresses (v4 or v6, both the same family) | required |
//! | `src_port`, `dst_port` | ports (ICMP: type and code) | 0 |
//! | `protocol` | `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` | `TCP` |
//! | `direction` | `egress` (leaving the pod), `ingress`, or `unknown` (a drop only the kernel saw) | `egress` |
//! | `packets`, `bytes` | counters | 1, 100 |
//! | `tcp_flags` | OR of the TCP flag bits | 0 |
//! | `is_reply` | the answer direction of a connection | false |
//! | `kernel_fate` | `forwarded` or `dropped` | `forwarded` |
//! | `drop_reason` | e.g. `NETFILTER_DROP` (with `dropped`) | none |
//! | `outcome` | `established`, `refused`, `unanswered`, `dropped`, `reset`, `closed` | none |
//! | `failure` | `policy`, `no_listener`, `conntrack`, `routing`, `other` | none |
//! | `node`, `interface` | where it was seen | `replay`, empty |
//! | `ago` | first packet this long before now (`5m`, `1h`) | `0s` |
//! | `duration` | last packet this long after the first | `0s` |
//!
//! Unknown fields are an error, so that a typo does not silently change a
//! flow.

use std::net::IpAddr;
use std::time::Duration;

use flowgate_proto::v1::{self, Flow, FlowBatch};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{source_name}: not a YAML/JSON list of flows: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: flow {index}: {message}")]
    Flow {
        source_name: String,
        index: usize,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplayDirection {
    #[default]
    Egress,
    Ingress,
    /// A drop seen only by the kernel's drop tracepoint, as probes send it.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplayFate {
    #[default]
    Forwarded,
    Dropped,
}

/// How the connection went, as the probe judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    Established,
    Refused,
    Unanswered,
    Dropped,
    Reset,
    Closed,
}

impl From<ReplayOutcome> for v1::Outcome {
    fn from(o: ReplayOutcome) -> Self {
        match o {
            ReplayOutcome::Established => v1::Outcome::Established,
            ReplayOutcome::Refused => v1::Outcome::Refused,
            ReplayOutcome::Unanswered => v1::Outcome::Unanswered,
            ReplayOutcome::Dropped => v1::Outcome::Dropped,
            ReplayOutcome::Reset => v1::Outcome::Reset,
            ReplayOutcome::Closed => v1::Outcome::Closed,
        }
    }
}

/// Why the connection failed, as the probe tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFailure {
    Policy,
    NoListener,
    Conntrack,
    Routing,
    Other,
}

impl From<ReplayFailure> for v1::Failure {
    fn from(f: ReplayFailure) -> Self {
        match f {
            ReplayFailure::Policy => v1::Failure::Policy,
            ReplayFailure::NoListener => v1::Failure::NoListener,
            ReplayFailure::Conntrack => v1::Failure::Conntrack,
            ReplayFailure::Routing => v1::Failure::Routing,
            ReplayFailure::Other => v1::Failure::Other,
        }
    }
}

/// One flow as written in a replay file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(default)]
    pub src_port: u16,
    #[serde(default)]
    pub dst_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub direction: ReplayDirection,
    #[serde(default = "one")]
    pub packets: u64,
    #[serde(default = "hundred")]
    pub bytes: u64,
    #[serde(default)]
    pub tcp_flags: u8,
    #[serde(default)]
    pub is_reply: bool,
    #[serde(default)]
    pub kernel_fate: ReplayFate,
    #[serde(default)]
    pub drop_reason: Option<String>,
    #[serde(default)]
    pub outcome: Option<ReplayOutcome>,
    #[serde(default)]
    pub failure: Option<ReplayFailure>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub ago: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub duration: Option<Duration>,
}

fn default_protocol() -> String {
    "TCP".to_owned()
}
fn one() -> u64 {
    1
}
fn hundred() -> u64 {
    100
}

/// `5m`-style durations in serde.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t)
                .map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}")))
        })
        .transpose()
    }
}

/// Parses a replay file's text.
pub fn parse(source_name: &str, text: &str) -> Result<Vec<ReplayFlow>, ReplayError> {
    serde_norway::from_str(text).map_err(|e| ReplayError::Parse {
        source_name: source_name.to_owned(),
        message: e.to_string(),
    })
}

/// The flows as probe records, times relative to `now_ns`.
pub fn to_flows(
    source_name: &str,
    flows: &[ReplayFlow],
    now_ns: i64,
) -> Result<Vec<Flow>, ReplayError> {
    flows
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let err = |message: String| ReplayError::Flow {
                source_name: source_name.to_owned(),
                index,
                message,
            };
            let protocol = match f.protocol.parse::<flowgate_policy::Protocol>() {
                Ok(flowgate_policy::Protocol::Tcp) => v1::Protocol::Tcp,
                Ok(flowgate_policy::Protocol::Udp) => v1::Protocol::Udp,
                Ok(flowgate_policy::Protocol::Sctp) => v1::Protocol::Sctp,
                Ok(flowgate_policy::Protocol::Icmp) => v1::Protocol::Icmp,
                Ok(flowgate_policy::Protocol::Icmpv6) => v1::Protocol::Icmpv6,
                Err(e) => return Err(err(e.to_string())),
            };
            let (version, src_ip, dst_ip) = match (f.src, f.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    (v1::IpVersion::V4, s.octets().to_vec(), d.octets().to_vec())
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    (v1::IpVersion::V6, s.octets().to_vec(), d.octets().to_vec())
                }
                _ => {
                    return Err(err(format!(
                        "src {} and dst {} are of different IP versions",
                        f.src, f.dst
                    )));
                }
            };
            let nanos = |d: Option<Duration>| {
                i64::try_from(d.unwrap_or_default().as_nanos()).unwrap_or(i64::MAX)
            };
            let first = now_ns.saturating_sub(nanos(f.ago)).max(0);
            let last = first.saturating_add(nanos(f.duration));
            let dropped = f.kernel_fate == ReplayFate::Dropped;
            Ok(Flow {
                node: f.node.clone().unwrap_or_else(|| "replay".to_owned()),
                first_seen_ns: first as u64,
                last_seen_ns: last as u64,
                interface: f.interface.clone().unwrap_or_default(),
                ifindex: 0,
                direction: match f.direction {
                    ReplayDirection::Egress => v1::Direction::Egress,
                    ReplayDirection::Ingress => v1::Direction::Ingress,
                    ReplayDirection::Unknown => v1::Direction::Unspecified,
                } as i32,
                ip_version: version as i32,
                src_ip,
                dst_ip,
                protocol: protocol as i32,
                src_port: f.src_port.into(),
                dst_port: f.dst_port.into(),
                packets: f.packets,
                bytes: f.bytes,
                tcp_flags: f.tcp_flags.into(),
                is_reply: f.is_reply,
                kernel_fate: if dropped {
                    v1::KernelFate::Dropped
                } else {
                    v1::KernelFate::Forwarded
                } as i32,
                drop_reason_code: 0,
                drop_reason: f.drop_reason.clone().unwrap_or_default(),
                dropped_packets: if dropped { f.packets } else { 0 },
                outcome: f.outcome.map_or(v1::Outcome::Unspecified, Into::into) as i32,
                failure: f.failure.map_or(v1::Failure::Unspecified, Into::into) as i32,
                src_dns_name: String::new(),
                dst_dns_name: String::new(),
                enrichment: None,
            })
        })
        .collect()
}

/// Splits flows into schema-v1 batches of at most `batch_size`, numbered
/// from 1 under `probe_id`.
pub fn batches(probe_id: &str, node: &str, flows: Vec<Flow>, batch_size: usize) -> Vec<FlowBatch> {
    flows
        .chunks(batch_size.max(1))
        .enumerate()
        .map(|(i, chunk)| FlowBatch {
            schema_version: v1::SchemaVersion::V1 as i32,
            probe_id: probe_id.to_owned(),
            node: node.to_owned(),
            sequence: i as u64 + 1,
            flows: chunk.to_vec(),
            losses: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_file_becomes_probe_records() {
        let text = "- {src: 10.0.0.1, dst: 10.0.0.2, dst_port: 80, ago: 1m, duration: 2s, kernel_fate: dropped, drop_reason: NETFILTER_DROP}\n\
                    - {src: 'fd00::1', dst: 'fd00::2', protocol: udp, dst_port: 53, is_reply: true}\n";
        let flows = to_flows("t", &parse("t", text).unwrap(), 100_000_000_000).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].first_seen_ns, 40_000_000_000);
        assert_eq!(flows[0].last_seen_ns, 42_000_000_000);
        assert_eq!(flows[0].kernel_fate, v1::KernelFate::Dropped as i32);
        assert_eq!(flows[0].drop_reason, "NETFILTER_DROP");
        assert_eq!(flows[1].protocol, v1::Protocol::Udp as i32);
        assert_eq!(flows[1].src_ip.len(), 16);
        assert!(flows[1].is_reply);
    }

    #[test]
    fn mistakes_are_named() {
        let typo = parse("f.yaml", "- {src: 10.0.0.1, dst: 10.0.0.2, dst_prot: 80}")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("dst_prot"), "{typo}");
        let mixed = to_flows(
            "f.yaml",
            &parse("f.yaml", "- {src: 10.0.0.1, dst: 'fd00::2'}").unwrap(),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            mixed.contains("flow 0") && mixed.contains("different IP versions"),
            "{mixed}"
        );
        let proto = to_flows(
            "f.yaml",
            &parse("f.yaml", "- {src: 10.0.0.1, dst: 10.0.0.2, protocol: GRE}").unwrap(),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(proto.contains("GRE"), "{proto}");
    }

    #[test]
    fn batches_are_numbered_from_one() {
        let flows = to_flows("t", &parse("t", "[{src: 1.1.1.1, dst: 2.2.2.2}, {src: 1.1.1.1, dst: 2.2.2.2}, {src: 1.1.1.1, dst: 2.2.2.2}]").unwrap(), 0).unwrap();
        let b = batches("p", "n", flows, 2);
        assert_eq!(
            b.iter()
                .map(|b| (b.sequence, b.flows.len()))
                .collect::<Vec<_>>(),
            vec![(1, 2), (2, 1)]
        );
    }
}
