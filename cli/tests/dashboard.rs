//! The dashboard in real headless Chromium: a collector loaded with the
//! cluster and flows of `web/tests/fixtures/`, plus 20,000 generated flows,
//! then `web/tests/dashboard.mjs` (playwright-core) drives the pages and
//! checks what a person would see. Screenshots of every page land in
//! `target/web-screenshots/` (the CI artifact folder).
//!
//! Needs node, Debian's chromium and `npm ci` in web/tests (all done by
//! `scripts/setup.sh`); without them it says so loudly and skips, except in
//! CI (CI=true) where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

mod support;
use support::{Collector, sql};

/// Generated flows on top of the fixture: enough that a table which put
/// every row in the page would crawl.
const BIG: usize = 20_000;

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

/// Flows from the frontend pod to many external addresses, 30 minutes old:
/// older than every fixture flow and judged by no policy, so the fixture's
/// answers stay what they are.
fn big_flows(path: &Path) -> Result<()> {
    let flows: Vec<serde_json::Value> = (0..BIG)
        .map(|i| {
            serde_json::json!({
                "src": "10.244.1.10",
                "dst": format!("192.0.2.{}", 1 + i % 250),
                "src_port": 20_000 + i % 40_000,
                "dst_port": 443,
                "node": "node-a",
                "packets": 1 + i % 7,
                "bytes": 60 + i % 1400,
                "ago": "30m",
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&flows)?)?;
    Ok(())
}

/// One empty batch from `node-loss` whose probe lost events: the loss
/// banner must name it.
fn report_losses(grpc: &str) -> Result<()> {
    let batch = flowgate_proto::v1::FlowBatch {
        schema_version: flowgate_proto::v1::SchemaVersion::V1 as i32,
        probe_id: "node-loss/1".into(),
        node: "node-loss".into(),
        sequence: 1,
        flows: Vec::new(),
        losses: Some(flowgate_proto::v1::LossReport {
            ringbuf_lost_events: 42,
            flow_table_evictions: 3,
            ..Default::default()
        }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let acks = runtime.block_on(flowgate_client::send_batches(grpc, vec![batch]))?;
    ensure!(acks.len() == 1, "{acks:?}");
    Ok(())
}

#[test]
fn the_dashboard_shows_flows_verdicts_explanations_sql_map_and_policies() -> Result<()> {
    if let Some(missing) = missing_prerequisite() {
        let message = format!("dashboard browser test: {missing}; run scripts/setup.sh");
        if std::env::var_os("CI").is_some() {
            bail!("{message} (CI must run it)");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let fixtures = web_tests().join("fixtures");
    // A copy the browser test may edit (the History section needs a change).
    let cluster = data.path().join("cluster.yaml");
    std::fs::copy(fixtures.join("cluster.yaml"), &cluster)?;
    let collector = Collector::start_with(&cluster, data.path(), &["--cluster-poll", "200ms"])?;
    let out = collector.replay(&fixtures.join("flows.yaml"), &[])?;
    ensure!(out.contains("12 stored"), "{out}");
    let big = data.path().join("big-flows.json");
    big_flows(&big)?;
    let out = collector.replay(&big, &["--batch-size", "5000"])?;
    ensure!(out.contains(&format!("{BIG} stored")), "{out}");
    let n = sql(&collector.http, "SELECT count(*) AS n FROM flows")?;
    ensure!(n[0]["n"] == BIG + 12, "{n:?}");
    report_losses(&collector.grpc)?;

    let shots = target_dir().join("web-screenshots");
    // Only this run's pictures (and a failure's) in the artifact folder.
    if shots.exists() {
        std::fs::remove_dir_all(&shots)?;
    }
    let output = Command::new("node")
        .arg(web_tests().join("dashboard.mjs"))
        .arg(&collector.http)
        .arg(&shots)
        .arg(BIG.to_string())
        .arg(support::FLOWGATE)
        .arg(&collector.grpc)
        .env("FLOWGATE_TEST_CLUSTER_FILE", &cluster)
        .output()
        .context("run node web/tests/dashboard.mjs")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    ensure!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\n(screenshot of the failure in {})",
        shots.display()
    );
    for page in [
        "flows",
        "why-blocked",
        "why-history",
        "map",
        "policies",
        "lint",
        "whatif",
        "advise",
        "sql",
    ] {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot)
            .with_context(|| format!("no screenshot {}", shot.display()))?
            .len();
        ensure!(size > 10_000, "{} is only {size} bytes", shot.display());
    }
    Ok(())
}
