//! `flowgate collector`, `flowgate replay` and `flowgate query` as an operator
//! runs them: the real binary, a YAML cluster, flows sent over gRPC.
//!
//! The restart test kills the collector with SIGKILL (no shutdown, no flush)
//! after its acknowledgements and starts it again on the same data folder:
//! every acknowledged flow must still be queryable, with its annotation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

const FLOWGATE: &str = env!("CARGO_BIN_EXE_flowgate");

fn collector_fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/tests/fixtures")
        .join(path)
}

/// A running `flowgate collector`, killed when dropped.
struct Collector {
    child: Child,
    grpc: String,
    http: String,
}

impl Collector {
    fn start(data: &Path) -> Result<Collector> {
        let mut child = Command::new(FLOWGATE)
            .arg("collector")
            .arg("--cluster")
            .arg(collector_fixture("cluster"))
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("start flowgate collector")?;
        let stdout = child.stdout.take().context("collector stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut grpc, mut http) = (None, None);
        while grpc.is_none() || http.is_none() {
            let line = lines
                .next()
                .context("the collector exited before printing its addresses")??;
            if let Some(addr) = line.strip_prefix("grpc listening on ") {
                grpc = Some(format!("http://{addr}"));
            } else if let Some(addr) = line.strip_prefix("http listening on ") {
                http = Some(format!("http://{addr}"));
            }
        }
        Ok(Collector {
            child,
            grpc: grpc.unwrap_or_default(),
            http: http.unwrap_or_default(),
        })
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flowgate(args: &[&str]) -> Result<Output> {
    Ok(Command::new(FLOWGATE)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

fn succeed(args: &[&str]) -> Result<String> {
    let out = flowgate(args)?;
    ensure!(
        out.status.success(),
        "flowgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `POST /api/v1/query` through curl-free plain HTTP (std only).
fn http(method: &str, base: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let authority = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(tail.get(..size).context("short chunk")?);
        rest = tail.get(size + 2..).context("chunk end")?;
    }
}

fn sql(base: &str, query: &str) -> Result<Vec<Value>> {
    let body = serde_json::json!({ "sql": query }).to_string();
    let (status, text) = http("POST", base, "/api/v1/query", Some(&body))?;
    ensure!(status == 200, "{query}: HTTP {status}: {text}");
    let answer: Value = serde_json::from_str(&text)?;
    Ok(answer["rows"].as_array().context("rows")?.clone())
}

fn wait_ready(base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http("GET", base, "/readyz", None) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{base}/readyz never answered 200");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ANNOTATED: &str = "SELECT src_ip, dst_port, src_pod, dst_pod, verdict, denied_by, kernel_fate, \
                         enforcement_mismatch FROM flows ORDER BY src_ip, dst_port";

#[test]
fn acknowledged_flows_survive_a_killed_collector() -> Result<()> {
    let data = tempfile::tempdir()?;
    let flows = collector_fixture("e2e-flows.yaml");
    let first = Collector::start(data.path())?;
    wait_ready(&first.http)?;
    // Two runs of the same file: 12 acknowledged flows, in 4 batches.
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
        assert_eq!(out.trim(), "sent 6 flows in 2 batches; 6 stored");
    }
    let before = sql(&first.http, ANNOTATED)?;
    assert_eq!(before.len(), 12);
    first.kill()?;

    let second = Collector::start(data.path())?;
    wait_ready(&second.http)?;
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
    assert_eq!(count[0]["n"], 18);
    second.kill()?;
    Ok(())
}

#[test]
fn query_prints_a_table_and_the_api_answers_filters_and_explanations() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = Collector::start(data.path())?;
    wait_ready(&collector.http)?;
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
         client  | db-0    | 6379     | denied\n\
         (2 rows)\n"
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

    // Metrics name what was ingested.
    let (status, metrics) = http("GET", &collector.http, "/metrics", None)?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("flowgate_collector_flows_ingested_total 6"),
        "{metrics}"
    );
    Ok(())
}
