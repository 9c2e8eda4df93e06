//! Checks that the probe can work here, and says exactly what is missing.

use std::path::Path;

use flowgate_proto::v1::Failure;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing capabilities: {missing} (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    )]
    Capabilities { missing: String },
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing (mount it: `mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    NoTracefs,
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF=y (Linux 5.5+)"
    )]
    NoBtf,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check() -> Result<(), PreflightError> {
    let caps = effective_caps();
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(bit, _)| caps & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        return Err(PreflightError::Capabilities {
            missing: missing.join(", "),
        });
    }
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        return Err(PreflightError::NoTracefs);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").is_file() {
        return Err(PreflightError::NoBtf);
    }
    Ok(())
}

/// Names of the kernel's `enum skb_drop_reason`, read from the running
/// kernel's tracepoint format (`__print_symbolic(REC->reason, { 2,
/// "NOT_SPECIFIED" }, …)`), so they are right for this kernel.
pub fn drop_reason_names() -> rustc_hash::FxHashMap<u32, String> {
    let text = std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format")
        .unwrap_or_default();
    parse_drop_reasons(&text)
}

/// Reasons for which a packet was delivered and then discarded by its
/// endpoint (no listening socket, socket teardown, TCP state, memory
/// accounting), or freed without a stated reason. These do not say the
/// network refused the packet, so they never make a flow "dropped"; they
/// are counted in metrics.
pub fn is_endpoint_reason(name: &str) -> bool {
    name == "NOT_SPECIFIED"
        || name == "NO_SOCKET"
        || name == "QUEUE_PURGE"
        || name == "PROTO_MEM"
        || name == "SOCKET_CLOSE"
        || name.starts_with("SOCKET_")
        || name.starts_with("TCP_")
        || name == "UDP_CSUM"
}

/// The failure class of a network drop reason (one that is not the
/// endpoint's, see [`is_endpoint_reason`]). Policy: where NetworkPolicy is
/// enforced (nftables/iptables, a CNI's TC or cgroup BPF program). This
/// kernel names no conntrack-specific reason: a `ct state invalid drop`
/// rule shows as NETFILTER_DROP, told apart by the drop path's
/// `DROP_CT_NONE` flag (see the aggregator), not by its name.
pub fn failure_of(name: &str) -> Failure {
    match name {
        "NETFILTER_DROP" | "TC_INGRESS" | "TC_EGRESS" | "BPF_CGROUP_EGRESS"
        | "BPF_CGROUP_INGRESS" => Failure::Policy,
        "IP_OUTNOROUTES" | "IP_INNOROUTES" | "IP_INADDRERRORS" | "IP_INVALID_DEST"
        | "IP_RPFILTER" | "NO_TX_TARGET" | "IPV6DISABLED" => Failure::Routing,
        n if n.starts_with("NEIGH_") => Failure::Routing,
        n if n.contains("CONNTRACK") || n.starts_with("NF_CT") => Failure::Conntrack,
        _ => Failure::Other,
    }
}

fn parse_drop_reasons(format: &str) -> rustc_hash::FxHashMap<u32, String> {
    let mut out = rustc_hash::FxHashMap::default();
    let Some(start) = format.find("__print_symbolic(REC->reason") else {
        return out;
    };
    for part in format[start..].split('{').skip(1) {
        let Some((num, rest)) = part.split_once(',') else {
            continue;
        };
        let Ok(n) = num.trim().parse::<u32>() else {
            continue;
        };
        if let Some(name) = rest.split('"').nth(1) {
            out.insert(n, name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn drop_reasons_parse_from_the_tracepoint_format() {
        let f = r#"print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 6, "NETFILTER_DROP" }, { 77, "MAX" })"#;
        let m = super::parse_drop_reasons(f);
        assert_eq!(m.get(&6).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn this_kernel_names_netfilter_drop() {
        let names = super::drop_reason_names();
        if names.is_empty() {
            let msg = "!! SKIPPED: no kfree_skb tracepoint format (tracefs not mounted?)";
            assert!(std::env::var_os("CI").is_none(), "{msg} (required in CI)");
            eprintln!("{msg}");
            return;
        }
        assert!(names.values().any(|n| n == "NETFILTER_DROP"), "{names:?}");
    }

    #[test]
    fn endpoint_reasons_are_not_network_verdicts() {
        for n in [
            "NO_SOCKET",
            "QUEUE_PURGE",
            "TCP_OLD_DATA",
            "SOCKET_RCVBUFF",
            "NOT_SPECIFIED",
        ] {
            assert!(super::is_endpoint_reason(n), "{n}");
        }
        for n in [
            "NETFILTER_DROP",
            "TC_INGRESS",
            "IP_OUTNOROUTES",
            "NEIGH_FAILED",
            "BPF_CGROUP_EGRESS",
        ] {
            assert!(!super::is_endpoint_reason(n), "{n}");
        }
    }

    #[test]
    fn network_drops_are_classed() {
        use super::{Failure, failure_of};
        assert_eq!(failure_of("NETFILTER_DROP"), Failure::Policy);
        assert_eq!(failure_of("TC_INGRESS"), Failure::Policy);
        assert_eq!(failure_of("IP_OUTNOROUTES"), Failure::Routing);
        assert_eq!(failure_of("NEIGH_FAILED"), Failure::Routing);
        assert_eq!(failure_of("QDISC_DROP"), Failure::Other);
    }
}
