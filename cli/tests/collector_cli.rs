//! `flowgate collector`, `flowgate replay` and `flowgate query` as an operator
//! runs them: the real binary, a YAML cluster, flows sent over gRPC.
//!
//! The restart test kills the collector with SIGKILL (no shutdown, no flush)
//! after its acknowledgements and starts it again on the same data folder:
//! every acknowledged flow must still be queryable, with its annotation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
        "--server",
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
    // A bad query: exit 1 and the engine's message naming the problem.
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
    assert!(body.contains("expected allowed or denied"), "{body}");

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
