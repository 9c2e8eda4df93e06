//! Bounded queries: a query that outgrows the memory pool, one over the
//! concurrency limit and one over the time limit each fail with a message
//! naming the limit, and probes' batches keep being stored meanwhile.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flowgate_client::{self as client, ClientError, replay};
use flowgate_collector::{ClusterSource, Config};
use flowgate_proto::v1::{FlowBatch, SchemaVersion};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Runs until the time limit: about 20 billion rows to count.
const ENDLESS: &str =
    "SELECT count(*) FROM generate_series(1, 2000000000) a, generate_series(1, 10) b";
/// Sorts 50 million integers: 400 MB of keys, far beyond the pool.
const SORT_EVERYTHING: &str = "SELECT value FROM generate_series(1, 50000000) ORDER BY value DESC";

const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

async fn start(data: &std::path::Path) -> Result<flowgate_collector::Collector> {
    let mut config = Config::new(
        ClusterSource::Files(vec![fixture("cluster")]),
        data.to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.query_memory_limit = 32 << 20;
    config.max_concurrent_queries = 1;
    config.query_timeout = QUERY_TIMEOUT;
    Ok(flowgate_collector::run(config).await?)
}

/// A probe sending batches one by one, numbered from `next`.
struct Prober {
    grpc: String,
    flows: Vec<flowgate_proto::v1::Flow>,
    next: u64,
}

impl Prober {
    async fn send_one(&mut self) -> Result<()> {
        let batch = FlowBatch {
            schema_version: SchemaVersion::V1 as i32,
            probe_id: "node-a/limits".into(),
            node: "node-a".into(),
            sequence: self.next,
            flows: self.flows.clone(),
            losses: None,
        };
        self.next += 1;
        let acks = client::send_batches(&self.grpc, vec![batch]).await?;
        if acks.len() != 1 || acks[0].flows_stored == 0 {
            bail!("batch not stored: {acks:?}");
        }
        Ok(())
    }

    /// Batches stored in `span`; the span starts now.
    async fn stored_during(&mut self, span: Duration) -> Result<u32> {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < span {
            self.send_one().await?;
            n += 1;
        }
        Ok(n)
    }
}

fn status_of(e: &ClientError) -> Option<(u16, &str)> {
    match e {
        ClientError::Status {
            status, message, ..
        } => Some((*status, message.as_str())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_a_limit_fail_saying_which_and_ingest_goes_on() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = start(data.path()).await?;
    let http = format!("http://{}", collector.http_addr());
    let name = "e2e-flows.yaml";
    let text = std::fs::read_to_string(fixture(name))?;
    let flows = replay::to_flows(
        name,
        &replay::parse(name, &text)?,
        flowgate_collector::now_ns(),
    )?;
    let mut prober = Prober {
        grpc: format!("http://{}", collector.grpc_addr()),
        flows,
        next: 1,
    };

    // Memory: the sort fails at the pool's edge instead of spilling or
    // growing the process.
    let err = client::query(&http, SORT_EVERYTHING)
        .await
        .expect_err("a sort of 50 million rows in a 32 MiB pool must fail");
    let (status, message) = status_of(&err).with_context(|| format!("{err}"))?;
    assert_eq!(status, 422, "{message}");
    assert!(
        message.contains("--query-memory-limit") && message.contains("33554432 bytes"),
        "the error names the memory limit: {message}"
    );
    // The pool is whole again: a small query runs.
    client::query(&http, "SELECT count(*) FROM flows").await?;

    let baseline = prober.stored_during(QUERY_TIMEOUT).await?;

    // Time and concurrency: one query runs into its time limit while a
    // second is refused and batches keep arriving.
    let spawn_endless = || {
        let http = http.clone();
        tokio::spawn(async move { client::query(&http, ENDLESS).await })
    };
    let mut endless = spawn_endless();
    let mut running = Instant::now();
    // A short query may run before the long one has taken its turn (on a
    // busy machine that can take a while); once it has, every other query
    // is refused until it ends. If the limit did not hold, none would be.
    // The long one may itself be refused, when it arrived while a short
    // one held the only slot: then it is sent again.
    let refused = loop {
        if endless.is_finished() {
            match endless.await? {
                Err(e) if status_of(&e).is_some_and(|(s, _)| s == 429) => {
                    endless = spawn_endless();
                    running = Instant::now();
                    continue;
                }
                other => bail!("no query was refused while the long one ran: {other:?}"),
            }
        }
        match client::query(&http, "SELECT 1").await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    let (status, message) = status_of(&refused).with_context(|| format!("{refused}"))?;
    assert_eq!(status, 429, "{message}");
    assert!(
        message.contains("--max-concurrent-queries"),
        "the refusal names the concurrency limit: {message}"
    );

    let mut during = 0u32;
    while !endless.is_finished() {
        prober.send_one().await?;
        during += 1;
    }
    let query_ran = running.elapsed();
    let err = endless
        .await?
        .expect_err("the endless query must hit its time limit");
    let (status, message) = status_of(&err).with_context(|| format!("{err}"))?;
    assert_eq!(status, 504, "{message}");
    assert!(message.contains("--query-timeout"), "{message}");

    let base_rate = f64::from(baseline) / QUERY_TIMEOUT.as_secs_f64();
    let during_rate = f64::from(during) / query_ran.as_secs_f64();
    eprintln!(
        "ingest: {base_rate:.1} batches/s idle, {during_rate:.1} batches/s during a CPU-bound query \
         ({:.0}% of idle; query ran {query_ran:.2?})",
        100.0 * during_rate / base_rate
    );
    // Probes must not stall: at least a fifth of the idle rate, and
    // every one of those batches stored (send_one checks the ack).
    assert!(
        during_rate >= base_rate / 5.0 && during >= 5,
        "ingest starved by a query: {during} batches in {query_ran:?}, {baseline} idle in {QUERY_TIMEOUT:?}"
    );

    let rows = client::query(&http, "SELECT count(*) AS n FROM flows").await?;
    let per_batch = prober.flows.len() as u64;
    assert_eq!(
        rows["rows"][0]["n"].as_u64(),
        Some((prober.next - 1) * per_batch),
        "every acknowledged batch is queryable"
    );
    collector.shutdown().await?;
    Ok(())
}
