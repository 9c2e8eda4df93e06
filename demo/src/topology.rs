//! The scenario built in the kernel: one network namespace per pod, a "node"
//! namespace that routes between them (the host stays untouched), and an
//! "external" namespace holding the addresses outside the cluster.
//!
//! ```text
//!  fg-pod-0 [eth0 10.244.0.2/32] ── fg-v0 ┐
//!  fg-pod-1 [eth0 10.244.0.3/32] ── fg-v1 ┤ fg-node (10.244.0.1 on every link,
//!  ...                                    │   /32 route per pod, forwarding on,
//!  fg-ext   [eth0 203.0.113.10/32] ─ fg-ext┘   nft table inet flowgate_demo)
//! ```
//! Links are routed point-to-point (as Calico does), not bridged, so every
//! packet between pods crosses the node's netfilter `forward` hook where the
//! policies are enforced, and its pod-facing interfaces where the probe looks.
//! Everything is named `fg-…`; [`Topology`] removes it on drop and
//! [`remove_leftovers`] removes what a killed run left behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use crate::DemoError;
use crate::scenario::Placed;

/// The namespace standing for the node.
pub const NODE_NS: &str = "fg-node";
/// The namespace holding the external addresses.
pub const EXTERNAL_NS: &str = "fg-ext";
/// The node-side interface towards the external namespace.
pub const EXTERNAL_LINK: &str = "fg-ext";
/// The veth from the host's namespace to the node's, which carries only the
/// probe's gRPC stream to the collector and the probe's metrics.
pub const UPLINK_HOST: &str = "fg-uplink";
pub const UPLINK_NODE: &str = "fg-uplink0";
/// The host's and the node's address on the uplink (link-local, unrouted).
pub const UPLINK_HOST_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 77, 1);
pub const UPLINK_NODE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 77, 2);
/// Prefix of every pod's node-side interface: `fg-v<index>`.
pub const POD_LINK_PREFIX: &str = "fg-v";

pub fn pod_ns(index: usize) -> String {
    format!("fg-pod-{index}")
}

pub fn pod_link(index: usize) -> String {
    format!("{POD_LINK_PREFIX}{index}")
}

/// Runs a command, failing with its stderr.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, DemoError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|source| DemoError::MissingTool {
        program: program.to_owned(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(DemoError::io(format!("writing to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(DemoError::io(format!("waiting for {program}")))?;
    if !out.status.success() {
        return Err(DemoError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<(), DemoError> {
    run("ip", args, None).map(drop)
}

/// Checks what building a topology needs, naming what is missing.
pub fn preflight() -> Result<(), DemoError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(DemoError::Prerequisite(
            "flowgate demo needs root: it creates network namespaces, loads nftables rules and eBPF programs (run it as root: scripts/as-root target/release/flowgate demo)".into(),
        ));
    }
    for (program, arg) in [("ip", "-V"), ("nft", "--version")] {
        run(program, &[arg], None)?;
    }
    Ok(())
}

/// Deletes every `fg-` network namespace (and with them their links and
/// nftables tables), left over by a run that was killed.
pub fn remove_leftovers() -> Result<usize, DemoError> {
    let list = run("ip", &["netns", "list"], None)?;
    let mut removed = 0;
    for name in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("fg-"))
    {
        ip(&["netns", "delete", name])?;
        removed += 1;
    }
    // Normally gone with fg-node; a half-built run may leave it alone.
    if ip(&["link", "show", UPLINK_HOST]).is_ok() {
        ip(&["link", "delete", UPLINK_HOST])?;
        removed += 1;
    }
    Ok(removed)
}

/// The built topology; dropping it deletes every namespace it created.
#[derive(Debug)]
pub struct Topology {
    namespaces: Vec<String>,
    uplink: bool,
}

impl Topology {
    pub fn build(placed: &Placed) -> Result<Topology, DemoError> {
        let mut topo = Topology {
            namespaces: Vec::new(),
            uplink: false,
        };
        let node_ip = placed.node_ip.to_string();
        topo.add_ns(NODE_NS)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                NODE_NS,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
            None,
        )?;
        for pod in &placed.pods {
            let ns = pod_ns(pod.index);
            topo.add_ns(&ns)?;
            topo.link(&ns, &pod_link(pod.index), &node_ip, &[pod.ip.to_string()])?;
        }
        if !placed.scenario.external.addresses.is_empty() {
            topo.add_ns(EXTERNAL_NS)?;
            let addrs: Vec<String> = placed
                .scenario
                .external
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect();
            topo.link(EXTERNAL_NS, EXTERNAL_LINK, &node_ip, &addrs)?;
        }
        Ok(topo)
    }

    /// Connects the host's namespace to the node's (see [`UPLINK_HOST`]).
    /// Deleting the node namespace deletes the pair.
    pub fn add_uplink(&mut self) -> Result<(), DemoError> {
        ip(&[
            "link",
            "add",
            UPLINK_HOST,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK_NODE,
            "netns",
            NODE_NS,
        ])?;
        self.uplink = true;
        ip(&[
            "addr",
            "add",
            &format!("{UPLINK_HOST_IP}/30"),
            "dev",
            UPLINK_HOST,
        ])?;
        ip(&["link", "set", UPLINK_HOST, "up"])?;
        ip(&[
            "-n",
            NODE_NS,
            "addr",
            "add",
            &format!("{UPLINK_NODE_IP}/30"),
            "dev",
            UPLINK_NODE,
        ])?;
        ip(&["-n", NODE_NS, "link", "set", UPLINK_NODE, "up"])
    }

    fn add_ns(&mut self, name: &str) -> Result<(), DemoError> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        // IPv4 only: IPv6 router and neighbour solicitations would be noise
        // in the flows (and the demo's policies and rules are IPv4). ping
        // sockets for everyone: `ping` then uses an ICMP datagram socket that
        // consumes the echo reply, rather than a raw socket beside which the
        // kernel frees the reply as NO_SOCKET (a "drop" in the flows).
        run(
            "ip",
            &[
                "netns",
                "exec",
                name,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; \
                 echo 0 2147483647 > /proc/sys/net/ipv4/ping_group_range",
            ],
            None,
        )?;
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A routed veth between the node and `ns`, which holds `addrs`.
    fn link(
        &self,
        ns: &str,
        node_side: &str,
        node_ip: &str,
        addrs: &[String],
    ) -> Result<(), DemoError> {
        ip(&[
            "link", "add", node_side, "netns", NODE_NS, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        ip(&[
            "-n",
            NODE_NS,
            "addr",
            "add",
            &format!("{node_ip}/32"),
            "dev",
            node_side,
        ])?;
        ip(&["-n", NODE_NS, "link", "set", node_side, "up"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        for a in addrs {
            ip(&["-n", ns, "addr", "add", &format!("{a}/32"), "dev", "eth0"])?;
            ip(&[
                "-n",
                NODE_NS,
                "route",
                "add",
                &format!("{a}/32"),
                "dev",
                node_side,
            ])?;
        }
        ip(&[
            "-n", ns, "route", "add", node_ip, "dev", "eth0", "scope", "link",
        ])?;
        ip(&[
            "-n", ns, "route", "add", "default", "via", node_ip, "dev", "eth0",
        ])?;
        Ok(())
    }

    /// Loads an nftables ruleset into the node namespace.
    pub fn load_nft(&self, ruleset: &str) -> Result<(), DemoError> {
        run(
            "ip",
            &["netns", "exec", NODE_NS, "nft", "-f", "-"],
            Some(ruleset),
        )
        .map(drop)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleted with fg-node too, but only once the kernel's namespace
        // cleanup runs; delete it now so the host is clean on return.
        if self.uplink
            && let Err(e) = ip(&["link", "delete", UPLINK_HOST])
        {
            tracing::warn!(link = UPLINK_HOST, error = %e, "could not delete the uplink");
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", ns]) {
                tracing::warn!(netns = %ns, error = %e, "could not delete network namespace");
            }
        }
    }
}

/// Moves the calling thread into a named network namespace. Only for threads
/// the demo owns (listeners, clients): a thread's namespace is its own.
pub fn enter_netns(name: &str) -> Result<(), DemoError> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(DemoError::io(format!("opening {path}")))?;
    // SAFETY: the fd is valid for the duration of the call (owned by `file`).
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(DemoError::Io {
            op: format!("setns into {name}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
