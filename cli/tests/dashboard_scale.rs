//! The dashboard at cluster scale in real headless Chromium: a generated,
//! deterministic cluster of 40 namespaces, 1,000 pods and 100
//! NetworkPolicies with 10,000 flows between them, then
//! `web/tests/scale.mjs` checks the map by levels (one node per namespace,
//! expanding one, finding a denied edge by search) and the policies page
//! (search, namespace filter, collapsed pods, sort by denials), prints the
//! map's data and render times, and saves screenshots in
//! `target/web-screenshots-scale/`.
//!
//! Prerequisites as in dashboard.rs: skipped loudly without them, except in
//! CI (CI=true) where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

mod support;
use support::{Collector, sql};

const NAMESPACES: usize = 40;
/// Five workloads of five pods in each namespace: 1,000 pods.
const WORKLOADS: [(&str, &str); 5] = [
    ("api", "Deployment"),
    ("web", "Deployment"),
    ("worker", "Deployment"),
    ("cache", "StatefulSet"),
    ("db", "StatefulSet"),
];
const PODS_PER_WORKLOAD: usize = 5;
const FLOWS: usize = 10_000;

fn web_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

fn missing_prerequisite() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is not installed"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("`node` is not installed".into());
    }
    if !web_tests().join("node_modules/playwright-core").exists() {
        return Some("web/tests/node_modules/playwright-core is missing (npm ci)".into());
    }
    None
}

fn ns_name(n: usize) -> String {
    format!("team-{n:02}")
}

fn pod_ip(ns: usize, workload: usize, i: usize) -> String {
    format!("10.60.{ns}.{}", 10 + workload * PODS_PER_WORKLOAD + i)
}

fn pod(ns: usize, workload: usize, i: usize) -> Value {
    let (name, kind) = WORKLOADS[workload];
    let namespace = ns_name(ns);
    let (pod_name, labels, owner) = if kind == "StatefulSet" {
        (
            format!("{name}-{i}"),
            json!({"app": name}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": format!("{namespace}-{name}"), "controller": true}),
        )
    } else {
        let hash = format!("{:x}", 0x5c9f_7b00 + ns * 16 + workload);
        (
            format!("{name}-{hash}-{:05x}", 0x1_0000 + ns * 64 + i),
            json!({"app": name, "pod-template-hash": hash}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"), "uid": format!("{namespace}-{name}-rs"), "controller": true}),
        )
    };
    let ip = pod_ip(ns, workload, i);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
        "spec": {"nodeName": format!("node-{}", ns % 4), "containers": [{"name": name, "image": name}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policy(ns: usize, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns_name(ns)}, "spec": spec,
    })
}

/// Every namespace denies ingress except from itself (80 policies); the
/// api of each even namespace also admits the next namespace on TCP 8080
/// (20 more).
fn policies() -> Vec<Value> {
    let mut out = Vec::new();
    for ns in 0..NAMESPACES {
        out.push(policy(
            ns,
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ));
        out.push(policy(
            ns,
            "allow-same-namespace",
            json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]}),
        ));
    }
    for ns in (0..NAMESPACES).step_by(2) {
        out.push(policy(
            ns,
            &format!("allow-api-from-{}", ns_name(ns + 1)),
            json!({
                "podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": ns_name(ns + 1)}}}],
                             "ports": [{"protocol": "TCP", "port": 8080}]}],
            }),
        ));
    }
    out
}

fn cluster() -> Value {
    let mut items: Vec<Value> = (0..NAMESPACES)
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(ns), "labels": {"team": ns_name(ns)}}}))
        .collect();
    for ns in 0..NAMESPACES {
        for w in 0..WORKLOADS.len() {
            for i in 0..PODS_PER_WORKLOAD {
                items.push(pod(ns, w, i));
            }
        }
    }
    items.extend(policies());
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// xorshift64: the same fixture on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// 10,000 flows (replay format). Most connections stay in their namespace
/// (allowed, seen leaving the source and arriving at the destination: two
/// flows, one connection); some go to a few neighbour namespaces (denied,
/// dropped at the destination, except an api the policies admit; one in 25
/// denied ones delivered all the same: a mismatch); some leave the cluster.
fn flows() -> Vec<Value> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(FLOWS);
    let mut port = 20_000usize;
    while out.len() < FLOWS {
        let (ns, w, i) = (
            rng.below(NAMESPACES),
            rng.below(WORKLOADS.len()),
            rng.below(PODS_PER_WORKLOAD),
        );
        let src = pod_ip(ns, w, i);
        port = if port >= 60_000 { 20_000 } else { port + 1 };
        let ago = format!("{}s", 60 + rng.below(45 * 60));
        let base = json!({"src": src, "src_port": port, "node": format!("node-{}", ns % 4),
                          "packets": 1 + rng.below(20), "bytes": 100 + rng.below(20_000), "ago": ago});
        let roll = rng.below(100);
        let flow = |dst: String, dst_port: usize, extra: Value| {
            let mut f = base.clone();
            let o = f.as_object_mut().expect("an object");
            o.insert("dst".into(), json!(dst));
            o.insert("dst_port".into(), json!(dst_port));
            for (k, v) in extra.as_object().expect("an object") {
                o.insert(k.clone(), v.clone());
            }
            f
        };
        if roll < 8 {
            let external = ["198.51.100", "203.0.113", "192.0.2"][rng.below(3)];
            out.push(flow(
                format!("{external}.{}", 1 + rng.below(40)),
                443,
                json!({}),
            ));
        } else if roll < 78 || out.len() + 1 >= FLOWS {
            // Within the namespace: allowed, seen at both ends.
            let dst = pod_ip(ns, rng.below(WORKLOADS.len()), rng.below(PODS_PER_WORKLOAD));
            out.push(flow(dst.clone(), 8080, json!({"direction": "egress"})));
            if out.len() < FLOWS {
                out.push(flow(dst, 8080, json!({"direction": "ingress"})));
            }
        } else {
            // To a neighbour namespace's api: admitted from ns+1 into ns
            // (even ns), denied otherwise.
            let to = (ns + [NAMESPACES - 1, 1, 5][rng.below(3)]) % NAMESPACES;
            let dst = pod_ip(to, 0, rng.below(PODS_PER_WORKLOAD));
            let admitted = ns % 2 == 1 && to + 1 == ns;
            let delivered = admitted || rng.below(25) == 0;
            let fate = if delivered {
                json!({"direction": "ingress"})
            } else {
                json!({"direction": "ingress", "tcp_flags": 2, "kernel_fate": "dropped", "drop_reason": "NETFILTER_DROP"})
            };
            out.push(flow(dst, 8080, fate));
        }
    }
    out
}

#[test]
fn the_map_and_policies_pages_at_cluster_scale() -> Result<()> {
    if let Some(missing) = missing_prerequisite() {
        let message = format!("dashboard scale browser test: {missing}; run scripts/setup.sh");
        if std::env::var_os("CI").is_some() {
            bail!("{message} (CI must run it)");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let cluster_file = data.path().join("cluster.json");
    std::fs::write(&cluster_file, serde_json::to_string(&cluster())?)?;
    let flows_file = data.path().join("flows.json");
    std::fs::write(&flows_file, serde_json::to_string(&flows())?)?;
    let collector = Collector::start(&cluster_file, data.path())?;
    let out = collector.replay(&flows_file, &["--batch-size", "5000"])?;
    ensure!(out.contains(&format!("{FLOWS} stored")), "{out}");
    let pods = sql(&collector.http, "SELECT count(*) AS n FROM pods")?;
    ensure!(pods[0]["n"] == 1000, "{pods:?}");
    let policies = sql(&collector.http, "SELECT count(*) AS n FROM policies")?;
    ensure!(policies[0]["n"] == 100, "{policies:?}");

    let shots = target_dir().join("web-screenshots-scale");
    if shots.exists() {
        std::fs::remove_dir_all(&shots)?;
    }
    let output = Command::new("node")
        .arg(web_tests().join("scale.mjs"))
        .arg(&collector.http)
        .arg(&shots)
        .output()
        .context("run node web/tests/scale.mjs")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    ensure!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\n(screenshot of the failure in {})",
        shots.display()
    );
    for page in [
        "map-namespaces",
        "map-expanded",
        "map-search",
        "policies-scale",
    ] {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot)
            .with_context(|| format!("no screenshot {}", shot.display()))?
            .len();
        ensure!(size > 10_000, "{} is only {size} bytes", shot.display());
    }
    Ok(())
}
