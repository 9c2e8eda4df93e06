//! `flowgate collector`, `flowgate replay` and `flowgate query` as an operator
//! runs them: the real binary, a YAML cluster, flows sent over gRPC.
//!
//! The restart test kills the collector with SIGKILL (no shutdown, no flush)
//! after its acknowledgements and starts it again on the same data folder:
//! every acknowledged flow must still be queryable, with its annotation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::{Collector, flowgate, http, sql, succeed};

fn collector_fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/tests/fixtures")
        .join(path)
}

fn start(data: &Path) -> Result<Collector> {
    Collector::start(&collector_fixture("cluster"), data)
}

const ANNOTATED: &str = "SELECT src_ip, dst_port, src_pod, dst_pod, verdict, denied_by, kernel_fate, \
                         enforcement_mismatch FROM flows ORDER BY src_ip, dst_port";

#[test]
fn acknowledged_flows_survive_a_killed_collector() -> Result<()> {
    let data = tempfile::tempdir()?;
    let flows = collector_fixture("e2e-flows.yaml");
    let first = start(data.path())?;
    // Two runs of the same file: 14 acknowledged flows, in 6 batches.
    for probe in ["probe-a", "probe-b"] {
        let out = succeed(&[
            "replay",
            flows.to_str().context("path")?,
            "--collector",
            &first.grpc,
            "--probe-id",
            probe,
            "--batch-size",
            "3",
        ])?;
        assert_eq!(out.trim(), "sent 7 flows in 3 batches; 7 stored");
    }
    let before = sql(&first.http, ANNOTATED)?;
    assert_eq!(before.len(), 14);
    first.kill()?;

    let second = start(data.path())?;
    let after = sql(&second.http, ANNOTATED)?;
    assert_eq!(after, before, "the same rows, with the same annotation");
    let mismatches: Vec<_> = after
        .iter()
        .filter(|r| r["enforcement_mismatch"] == true)
        .collect();
    assert_eq!(mismatches.len(), 4, "{after:#?}");

    // Flows sent after the restart are added, not mixed up with the old ones.
    succeed(&[
        "replay",
        flows.to_str().context("path")?,
        "--collector",
        &second.grpc,
        "--probe-id",
        "probe-c",
    ])?;
    let count = sql(&second.http, "SELECT count(*) AS n FROM flows")?;
    assert_eq!(count[0]["n"], 21);
    second.kill()?;
    Ok(())
}

#[test]
fn query_prints_a_table_and_the_api_answers_filters_and_explanations() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = start(data.path())?;
    let flows = collector_fixture("e2e-flows.yaml");
    succeed(&[
        "replay",
        flows.to_str().context("path")?,
        "--collector",
        &collector.grpc,
    ])?;

    // `flowgate query`: an aligned table, the row count last.
    let table = succeed(&[
        "query",
        "SELECT src_pod, dst_pod, dst_port, verdict FROM flows WHERE verdict = 'denied' ORDER BY dst_port",
        "--collector-http",
        &collector.http,
    ])?;
    assert_eq!(
        table,
        "src_pod | dst_pod | dst_port | verdict\n\
         --------+---------+----------+--------\n\
         client  | db-0    | 5432     | denied\n\
         client  | db-0    | 5433     | denied\n\
         client  | db-0    | 6379     | denied\n\
         (3 rows)\n"
    );
    // A bad query: exit 1 and the engine's message naming the problem
    // (`--server` is kept as the older name of `--collector-http`).
    let bad = flowgate(&[
        "query",
        "SELECT nope FROM flows",
        "--server",
        &collector.http,
    ])?;
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("nope"), "{stderr}");
    // Writing is refused.
    let ddl = flowgate(&["query", "DROP TABLE flows", "--server", &collector.http])?;
    assert_eq!(ddl.status.code(), Some(1), "DDL must be refused");

    // GET /api/v1/flows with filters.
    let (status, body) = http(
        "GET",
        &collector.http,
        "/api/v1/flows?namespace=shop&verdict=denied&port=5432&since=1h",
        None,
    )?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    let listed = answer["flows"].as_array().context("flows")?;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["src_pod"], "client");
    assert_eq!(listed[0]["enforcement_mismatch"], true);
    let (status, body) = http("GET", &collector.http, "/api/v1/flows?verdict=maybe", None)?;
    assert_eq!(status, 400);
    assert!(body.contains("expected one of allowed, denied"), "{body}");
    // The same filters over connections: one row for that connection.
    let (status, body) = http(
        "GET",
        &collector.http,
        "/api/v1/connections?namespace=shop&verdict=denied&port=5432&since=1h",
        None,
    )?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    let listed = answer["connections"].as_array().context("connections")?;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["src_pod"], "client");
    assert_eq!(listed[0]["enforcement_mismatch"], true);

    // One end, a policy, mismatches: what the dashboard's map and policy
    // pages link to.
    for (query, want) in [
        ("from=other/client&to=shop&mismatch=true", vec![80, 5432]),
        ("from=shop/web", vec![53, 5432]),
        ("to=8.8.8.8", vec![53]),
        ("to=8.8.0.0/16", vec![53]),
        ("to=8.8.9.0/24", vec![]),
        ("policy=shop/web-allow-http", vec![80]),
        ("policy=shop/default-deny&mismatch=false", vec![5433, 6379]),
    ] {
        let (status, body) = http(
            "GET",
            &collector.http,
            &format!("/api/v1/flows?{query}"),
            None,
        )?;
        assert_eq!(status, 200, "{query}: {body}");
        let answer: Value = serde_json::from_str(&body)?;
        let mut ports: Vec<u64> = answer["flows"]
            .as_array()
            .context("flows")?
            .iter()
            .filter_map(|f| f["dst_port"].as_u64())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, want, "{query}");
    }
    for (query, message) in [
        ("policy=nameless", "expected namespace/name"),
        (
            "from=a/",
            "expected an IP, an IPv4 /8, /16 or /24 network, a namespace",
        ),
        ("mismatch=maybe", "expected true or false"),
    ] {
        let (status, body) = http(
            "GET",
            &collector.http,
            &format!("/api/v1/flows?{query}"),
            None,
        )?;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(message), "{query}: {body}");
    }

    // GET /api/v1/explain: the engine's words plus the flows seen for the pair.
    let (status, body) = http(
        "GET",
        &collector.http,
        "/api/v1/explain?from=other/client&to=shop/db-0&port=5432&protocol=TCP",
        None,
    )?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["explanation"]["allowed"], false, "{answer:#}");
    assert!(
        answer["explanation"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("db-allow-web")),
        "{answer:#}"
    );
    assert_eq!(answer["flows"].as_array().map(Vec::len), Some(1));
    let (status, body) = http(
        "GET",
        &collector.http,
        "/api/v1/explain?from=other/nobody&to=shop/db-0&port=5432",
        None,
    )?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no pod other/nobody"), "{body}");

    // GET /api/v1/policies: the pods each selects and its YAML.
    let (status, body) = http("GET", &collector.http, "/api/v1/policies", None)?;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body)?;
    let db = answer["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "db-allow-web"))
        .context("db-allow-web listed")?;
    assert_eq!(db["selected_pods"], serde_json::json!(["shop/db-0"]));
    assert!(
        db["yaml"]
            .as_str()
            .is_some_and(|y| y.contains("podSelector"))
    );

    // CSV on request.
    let (status, body) = http(
        "POST",
        &collector.http,
        "/api/v1/query?format=csv",
        Some(
            r#"{"sql": "SELECT dst_port FROM flows WHERE enforcement_mismatch ORDER BY dst_port"}"#,
        ),
    )?;
    assert_eq!(status, 200);
    assert_eq!(body, "dst_port\n80\n5432\n");

    // A body that is not {"sql": "..."} is named as such.
    for bad in ["{\"sq\": \"SELECT 1\"}", "SELECT 1", ""] {
        let (status, body) = http("POST", &collector.http, "/api/v1/query", Some(bad))?;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(
            body.contains("the body must be {\\\"sql\\\""),
            "{bad:?}: {body}"
        );
    }

    // Metrics name what was ingested.
    let (status, metrics) = http("GET", &collector.http, "/metrics", None)?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("flowgate_collector_flows_ingested_total 7"),
        "{metrics}"
    );
    Ok(())
}

/// `n` batches of `per_batch` flows from `probe`, every flow distinct by
/// its source port and address.
fn numbered_batches(probe: &str, n: u64, per_batch: u64) -> Vec<flowgate_proto::v1::FlowBatch> {
    use flowgate_proto::v1;
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    )
    .unwrap_or(0);
    (1..=n)
        .map(|sequence| v1::FlowBatch {
            schema_version: v1::SchemaVersion::V1 as i32,
            probe_id: probe.to_owned(),
            node: "node-k".to_owned(),
            sequence,
            flows: (0..per_batch)
                .map(|i| {
                    let id = (sequence - 1) * per_batch + i;
                    v1::Flow {
                        node: "node-k".to_owned(),
                        first_seen_ns: now - 1_000_000_000,
                        last_seen_ns: now,
                        interface: "veth-k".to_owned(),
                        direction: v1::Direction::Egress as i32,
                        ip_version: v1::IpVersion::V4 as i32,
                        src_ip: vec![10, 9, (id / 60_000) as u8, 1],
                        dst_ip: vec![10, 1, 0, 20],
                        protocol: v1::Protocol::Tcp as i32,
                        src_port: 1 + (id % 60_000) as u32,
                        dst_port: 8080,
                        packets: 1,
                        bytes: 100,
                        kernel_fate: v1::KernelFate::Forwarded as i32,
                        ..Default::default()
                    }
                })
                .collect(),
            losses: None,
        })
        .collect()
}

/// Sends `batches` on one stream; returns the statuses of the first
/// `acks` acknowledgements (the stream is left open, as when the process
/// dies under it).
fn stream(
    grpc: &str,
    batches: Vec<flowgate_proto::v1::FlowBatch>,
    acks: usize,
) -> Result<Vec<i32>> {
    use flowgate_proto::v1::flow_ingest_client::FlowIngestClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = FlowIngestClient::connect(grpc.to_owned()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(batches.len().max(1));
        for b in batches {
            tx.send(b).await?;
        }
        let mut inbound = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut statuses = Vec::new();
        while statuses.len() < acks {
            let ack = inbound
                .message()
                .await?
                .context("the stream ended before every ack")?;
            statuses.push(ack.status);
        }
        drop(tx);
        Ok(statuses)
    })
}

fn count_flows(http: &str) -> Result<u64> {
    let rows = sql(
        http,
        // DISTINCT by grouping: DataFusion charges `count(DISTINCT (a, b))`
        // the whole batch for every struct value it keeps, gigabytes for
        // 60,000 flows, which the query memory pool refuses.
        "SELECT (SELECT count(*) FROM flows) AS n, count(*) AS distinct_flows \
         FROM (SELECT DISTINCT src_ip, src_port FROM flows)",
    )?;
    let n = rows[0]["n"].as_u64().context("count")?;
    ensure!(
        rows[0]["distinct_flows"].as_u64() == Some(n),
        "a flow is stored twice: {rows:?}"
    );
    Ok(n)
}

/// The issue's scenario: 120 batches streamed, the collector SIGKILLed
/// after 41 acknowledgements (more may be stored, unacknowledged). After a
/// restart every acknowledged flow is there, and resending all 120 batches
/// (as the probe does, then once more) stores each flow exactly once.
#[test]
fn a_collector_killed_mid_stream_stores_every_resent_flow_exactly_once() -> Result<()> {
    use flowgate_proto::v1::AckStatus;
    const BATCHES: u64 = 120;
    const PER_BATCH: u64 = 500;
    let data = tempfile::tempdir()?;
    let batches = numbered_batches("node-k/killed", BATCHES, PER_BATCH);
    let first = start(data.path())?;
    let acked = stream(&first.grpc, batches.clone(), 41)?;
    ensure!(
        acked.iter().all(|s| *s == AckStatus::Stored as i32),
        "{acked:?}"
    );
    first.kill()?;

    let second = start(data.path())?;
    let before = count_flows(&second.http)?;
    ensure!(
        before >= 41 * PER_BATCH && before % PER_BATCH == 0,
        "{before} flows after the restart: every acknowledged batch, whole"
    );
    eprintln!(
        "killed after 41 acks: {} batches were stored",
        before / PER_BATCH
    );
    let resent = stream(&second.grpc, batches.clone(), BATCHES as usize)?;
    let duplicates = resent
        .iter()
        .filter(|s| **s == AckStatus::Duplicate as i32)
        .count() as u64;
    ensure!(
        resent[..41]
            .iter()
            .all(|s| *s == AckStatus::Duplicate as i32),
        "acknowledged batches are duplicates: {resent:?}"
    );
    ensure!(
        duplicates * PER_BATCH == before,
        "exactly the stored batches are duplicates: {duplicates} of {resent:?}"
    );
    ensure!(count_flows(&second.http)? == BATCHES * PER_BATCH);
    second.kill()?;

    // Killed again (nothing flushed): the log alone still knows.
    let third = start(data.path())?;
    let again = stream(&third.grpc, batches, BATCHES as usize)?;
    ensure!(
        again.iter().all(|s| *s == AckStatus::Duplicate as i32),
        "{again:?}"
    );
    ensure!(count_flows(&third.http)? == BATCHES * PER_BATCH);
    third.kill()?;
    Ok(())
}

/// SIGTERM stops the collector cleanly: exit status 0, the store flushed
/// to Parquet (the log holds nothing), and the flows there after a restart.
#[test]
fn sigterm_stops_the_collector_cleanly_and_flushes_the_store() -> Result<()> {
    let data = tempfile::tempdir()?;
    let first = start(data.path())?;
    let acked = stream(&first.grpc, numbered_batches("node-k/term", 3, 10), 3)?;
    ensure!(acked.len() == 3);
    let status = first.terminate()?;
    ensure!(status.success(), "exit status after SIGTERM: {status}");
    let parquet = std::fs::read_dir(data.path().join("flows"))?.count();
    ensure!(
        parquet == 1,
        "one partition written on shutdown, found {parquet}"
    );
    let second = start(data.path())?;
    ensure!(count_flows(&second.http)? == 30);
    second.kill()?;
    Ok(())
}
