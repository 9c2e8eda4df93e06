//! Reading the fixtures: `semantics/*.yaml` over the shared cluster in
//! `semantics/_base.yaml`, and `tiers/*.yaml` over that cluster plus the
//! Nodes of `tiers/_nodes.yaml`; each file holds policies and a
//! `kind: FlowgateTest` document of cases.

#![allow(dead_code, reason = "each test binary uses part of this module")]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowgate_policy::{Cluster, ClusterObjects, Endpoint, Protocol};
use serde::Deserialize;

/// The fields of a case every fixture set has; the sets' own tests check
/// the rest.
#[derive(Deserialize, Clone)]
pub struct Case {
    pub from: String,
    pub to: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub allowed: bool,
}

impl Case {
    pub fn protocol(&self) -> Protocol {
        self.protocol.parse().unwrap()
    }

    pub fn name(&self, file: &str) -> String {
        format!(
            "{file}: {} -> {} {}/{}",
            self.from, self.to, self.protocol, self.port
        )
    }
}

#[derive(Deserialize)]
struct TestDoc {
    #[serde(default)]
    cases: Vec<Case>,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Clone, Copy, Debug)]
pub enum Set {
    Semantics,
    Tiers,
}

impl Set {
    fn dir(self) -> PathBuf {
        let sub = match self {
            Set::Semantics => "semantics",
            Set::Tiers => "tiers",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(sub)
    }

    fn bases(self) -> &'static [&'static str] {
        match self {
            Set::Semantics => &["semantics/_base.yaml"],
            Set::Tiers => &["semantics/_base.yaml", "tiers/_nodes.yaml"],
        }
    }

    /// Every fixture file but the `_` bases, sorted.
    pub fn files(self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !file_name(p).starts_with('_'))
            .collect();
        files.sort();
        files
    }

    /// The objects of the bases, plus those of `file` when given.
    pub fn objects(self, file: Option<&Path>) -> ClusterObjects {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut objects = ClusterObjects::default();
        for base in self.bases() {
            let text = std::fs::read_to_string(root.join(base)).unwrap();
            objects.parse_yaml(base, &text).unwrap();
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).unwrap();
            objects.parse_yaml(&file_name(file), &text).unwrap();
        }
        objects
    }
}

pub fn file_name(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().to_string()
}

pub fn cases(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut cases = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = serde_norway::Value::deserialize(doc).unwrap();
        if v.get("kind").and_then(|k| k.as_str()) == Some("FlowgateTest") {
            let d: TestDoc = serde_norway::from_value(v).unwrap();
            cases.extend(d.cases);
        }
    }
    cases
}

pub fn endpoint(cluster: &Cluster, s: &str) -> Endpoint {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return cluster.endpoint_for_ip(ip);
    }
    let (ns, name) = s.split_once('/').unwrap();
    cluster.pod_endpoint(
        cluster
            .find_pod(ns, name)
            .unwrap_or_else(|| panic!("no pod {s}")),
        None,
    )
}

/// Every pod (at each of its addresses) and a few outside addresses.
pub fn endpoints(c: &Cluster) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (id, p) in c.pods() {
        if p.ips.is_empty() {
            out.push(c.pod_endpoint(id, None));
        }
        for ip in &p.ips {
            out.push(c.pod_endpoint(id, Some(*ip)));
        }
    }
    for ip in ["8.8.8.8", "10.0.9.9", "192.168.1.1", "2001:db8::1"] {
        out.push(c.endpoint_for_ip(ip.parse::<IpAddr>().unwrap()));
    }
    out
}

/// Ports every fixture uses, one per protocol at least.
pub const PORTS: [(u16, Protocol); 9] = [
    (80, Protocol::Tcp),
    (443, Protocol::Tcp),
    (8080, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (53, Protocol::Udp),
    (5353, Protocol::Udp),
    (3868, Protocol::Sctp),
    (0, Protocol::Icmp),
    (0, Protocol::Icmpv6),
];
