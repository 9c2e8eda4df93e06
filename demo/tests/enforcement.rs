//! The nftables compiler checked against the policy engine in the real
//! kernel: each scenario is built in network namespaces, its policies
//! compiled and loaded, and every pod sends TCP, UDP and ICMP to every pod
//! port and external address; what gets through must be exactly what the
//! engine allows. With a feature's enforcement left out, the disagreements
//! must be exactly the flows that need that feature.
//!
//! Needs root, `ip`, `nft` and `ping`; without them the test says so loudly
//! and skips, except in CI (CI=true) where it fails.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flowgate_demo::nft::{self, Enforcement};
use flowgate_demo::scenario::{Flow, Placed, Scenario, Target};
use flowgate_demo::topology::{self, Topology};
use flowgate_demo::traffic::{Servers, attempt_all};
use flowgate_policy::Protocol;

/// The topology names are fixed (`fg-…`): one scenario at a time.
static KERNEL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_millis(700);

fn prerequisites() -> Result<bool> {
    match topology::preflight() {
        Ok(()) => Ok(true),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            bail!("kernel test cannot run in CI: {e}")
        }
        Err(e) => {
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("!!!!! SKIPPED: nftables enforcement test needs root, ip and nft: {e}\n")
                    .as_bytes(),
            );
            Ok(false)
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn default_scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/default-scenario.yaml")
}

fn tiers_scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiers-scenario.yaml")
}

fn place(path: &Path) -> Result<Placed> {
    Ok(Scenario::from_file(path)?.place()?)
}

/// Every pod to every served port of every pod and external address, by
/// protocol, plus ICMP to each.
fn matrix(placed: &Placed) -> Vec<Flow> {
    let mut targets: Vec<Target> = (0..placed.pods.len()).map(Target::Pod).collect();
    targets.extend(
        placed
            .scenario
            .external
            .addresses
            .iter()
            .map(|&a| Target::External(a)),
    );
    let mut flows = Vec::new();
    for from in 0..placed.pods.len() {
        for &to in &targets {
            if to == Target::Pod(from) {
                continue; // never leaves the pod: nothing to enforce
            }
            flows.push(Flow {
                from,
                to,
                protocol: Protocol::Icmp,
                port: 0,
            });
            let mut ports = placed.served_ports(to);
            if let Target::External(_) = to {
                for &a in &placed.scenario.external.addresses {
                    ports.extend(placed.served_ports(Target::External(a)));
                }
                ports.sort_by_key(|(p, n)| (p.as_str(), *n));
                ports.dedup();
            }
            flows.extend(ports.into_iter().map(|(protocol, port)| Flow {
                from,
                to,
                protocol,
                port,
            }));
        }
    }
    flows
}

fn describe(placed: &Placed, f: &Flow) -> String {
    let to = match f.to {
        Target::Pod(i) => placed.pod_name(i),
        Target::External(a) => a.to_string(),
    };
    format!(
        "{} -> {to} {} {}",
        placed.pod_name(f.from),
        f.protocol,
        f.port
    )
}

/// Builds the scenario with `enforcement` and returns the flows where the
/// kernel disagrees with the engine, and how many flows were tried.
fn disagreements(placed: &Placed, enforcement: Enforcement, flows: &[Flow]) -> Result<Vec<String>> {
    topology::remove_leftovers()?;
    let topo = Topology::build(placed)?;
    let link_of = |id| {
        placed
            .pods
            .iter()
            .position(|p| placed.cluster.find_pod(&p.spec.namespace, &p.spec.name) == Some(id))
    };
    let ruleset = nft::compile(&placed.cluster, enforcement, &link_of);
    topo.load_nft(&ruleset)
        .with_context(|| format!("loading ruleset:\n{ruleset}"))?;
    let servers = Servers::start(placed)?;
    let got = attempt_all(placed, flows, TIMEOUT)?;
    drop(servers);
    drop(topo);
    let mut out = Vec::new();
    for (f, through) in flows.iter().zip(got) {
        let allowed = placed.allowed(f);
        if allowed != through {
            out.push(format!(
                "{} (engine: {}, kernel: {})",
                describe(placed, f),
                verdict(allowed),
                verdict(through)
            ));
        }
    }
    Ok(out)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "allowed" } else { "denied" }
}

#[test]
fn full_enforcement_drops_exactly_what_the_engine_denies() -> Result<()> {
    let _guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites()? {
        return Ok(());
    }
    for path in [
        default_scenario(),
        fixture("mixed-features.yaml"),
        tiers_scenario(),
    ] {
        let placed = place(&path)?;
        let flows = matrix(&placed);
        let denied = flows.iter().filter(|f| !placed.allowed(f)).count();
        // A matrix without both outcomes would prove nothing.
        assert!(
            denied > 0 && denied < flows.len(),
            "{}: {denied}/{} denied",
            path.display(),
            flows.len()
        );
        let bad = disagreements(&placed, Enforcement::ALL, &flows)?;
        assert!(
            bad.is_empty(),
            "{}: kernel and engine disagree on {} of {} flows:\n{}",
            path.display(),
            bad.len(),
            flows.len(),
            bad.join("\n")
        );
    }
    Ok(())
}

#[test]
fn leaving_a_feature_out_changes_exactly_the_flows_that_need_it() -> Result<()> {
    let _guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites()? {
        return Ok(());
    }
    let placed = place(&default_scenario())?;
    let flows = placed.flows.clone();
    let cases: [(&str, &[&str]); 4] = [
        (
            "without:endPort",
            &["prod/frontend -> shop/cart TCP 8050 (engine: allowed, kernel: denied)"],
        ),
        (
            "without:namedPorts",
            &["shop/worker -> shop/cart TCP 9090 (engine: allowed, kernel: denied)"],
        ),
        (
            "without:ipBlockExcept",
            &["prod/my-app -> 203.0.113.200 TCP 443 (engine: denied, kernel: allowed)"],
        ),
        (
            "without:egress",
            &[
                "prod/my-app -> 203.0.113.200 TCP 443 (engine: denied, kernel: allowed)",
                "prod/my-app -> 198.51.100.10 TCP 443 (engine: denied, kernel: allowed)",
                "prod/my-app -> prod/backend TCP 8080 (engine: denied, kernel: allowed)",
            ],
        ),
    ];
    for (flag, expected) in cases {
        let e: Enforcement = flag.parse()?;
        let got = disagreements(&placed, e, &flows)?;
        assert_eq!(got, expected.to_vec(), "--enforce {flag}");
    }
    // No enforcement: every denied flow gets through.
    let got = disagreements(&placed, Enforcement::NONE, &flows)?;
    let denied = flows.iter().filter(|f| !placed.allowed(f)).count();
    assert_eq!(got.len(), denied, "--enforce none: {got:#?}");
    assert!(
        got.iter()
            .all(|g| g.ends_with("(engine: denied, kernel: allowed)"))
    );
    Ok(())
}

/// The cluster tiers: a CNI that ignores the Admin tier (or the Baseline
/// tier) disagrees with the policies on exactly the flows a rule of that
/// tier decides; Pass rules change nothing (the NetworkPolicies decide
/// either way).
#[test]
fn leaving_a_tier_out_changes_exactly_the_flows_it_decides() -> Result<()> {
    let _guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites()? {
        return Ok(());
    }
    let placed = place(&tiers_scenario())?;
    let flows = placed.flows.clone();
    let cases: [(&str, &[&str]); 2] = [
        (
            "without:adminTier",
            &[
                "monitoring/prometheus -> prod/frontend TCP 9090 (engine: allowed, kernel: denied)",
                "dev/tool -> prod/db TCP 5432 (engine: allowed, kernel: denied)",
                "prod/frontend -> 198.51.100.10 TCP 443 (engine: denied, kernel: allowed)",
                "shop/cart -> 198.51.100.10 TCP 443 (engine: denied, kernel: allowed)",
            ],
        ),
        (
            "without:baselineTier",
            &[
                "dev/tool -> 203.0.113.10 TCP 443 (engine: denied, kernel: allowed)",
                "dev/tool -> shop/cart TCP 8000 (engine: denied, kernel: allowed)",
            ],
        ),
    ];
    for (flag, expected) in cases {
        let e: Enforcement = flag.parse()?;
        let got = disagreements(&placed, e, &flows)?;
        assert_eq!(got, expected.to_vec(), "--enforce {flag}");
    }
    Ok(())
}
