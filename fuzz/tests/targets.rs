//! The fuzz targets: every parser that reads what others wrote, each for
//! the budget of `flowgate_fuzz::budget` (see the crate docs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowgate_collector::cluster::{ClusterState, StateWriter};
use flowgate_collector::enrich::Enricher;
use flowgate_collector::ingest::Ingest;
use flowgate_collector::metrics::Metrics;
use flowgate_fuzz::{Rng, fuzz, fuzz_bytes, regressions};
use flowgate_proto::v1::{AckStatus, FlowBatch, SchemaVersion};
use flowgate_query::{FlowStore, QueryEngine, QueryLimits, StoreConfig};
use prost::Message;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Seeds of a text target: its fixtures and its regression files.
fn text_seeds(target: &str, fixtures: &[&str]) -> Vec<Vec<u8>> {
    fixtures
        .iter()
        .map(|f| read(f).into_bytes())
        .chain(regressions(target).into_iter().map(|(_, b)| b))
        .collect()
}

/// The flows of the collector's end-to-end fixture, as a probe sends them.
fn fixture_flows() -> Vec<flowgate_proto::v1::Flow> {
    let name = "collector/tests/fixtures/e2e-flows.yaml";
    let parsed = flowgate_client::replay::parse(name, &read(name)).expect("fixture parses");
    flowgate_client::replay::to_flows(name, &parsed, flowgate_collector::now_ns())
        .expect("fixture converts")
}

/// The real ingest path: a store in `dir` and the fixture cluster.
fn ingest(dir: &Path) -> Ingest {
    let store = FlowStore::open(StoreConfig::new(dir)).expect("store opens");
    let metrics = Arc::new(Metrics::new());
    let state = ClusterState::default();
    let mut writer = StateWriter::new(state.clone(), Duration::from_secs(60), metrics.clone());
    let inputs =
        flowgate_collector::cluster::files::load(&[repo("collector/tests/fixtures/cluster")])
            .expect("fixture cluster loads");
    writer.rebuild(&inputs, flowgate_collector::now_ns());
    Ingest::new(store, state, metrics, 100, 1024)
}

/// What the collector must do with any batch: answer STORED, DUPLICATE or
/// REJECTED with a reason, or end the stream with a status (a store
/// failure); never panic.
fn handle(rt: &tokio::runtime::Runtime, ingest: &Ingest, batch: FlowBatch) -> Result<(), String> {
    let mut enricher = Enricher::new(64);
    let Ok(ack) = rt.block_on(ingest.handle(&mut enricher, batch.clone())) else {
        return Ok(());
    };
    match AckStatus::try_from(ack.status) {
        Ok(AckStatus::Stored | AckStatus::Duplicate) => Ok(()),
        Ok(AckStatus::Rejected) if !ack.reason.is_empty() => Ok(()),
        other => Err(format!("ack {other:?} without a reason: {ack:?}")),
    }
}

fn encoded_seeds() -> Vec<Vec<u8>> {
    let flows = fixture_flows();
    let mut seeds: Vec<Vec<u8>> = flowgate_client::replay::batches("n/1", "node-a", flows, 3)
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    seeds.extend(regressions("grpc_frames").into_iter().map(|(_, b)| b));
    seeds
}

#[test]
fn grpc_frames() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = ingest(dir.path());
    let rt = runtime();
    fuzz_bytes("grpc_frames", &encoded_seeds(), |bytes| {
        // Bytes that do not decode are INVALID_ARGUMENT in tonic's codec;
        // those that do go through the whole validation path.
        match FlowBatch::decode(bytes) {
            Ok(batch) => handle(&rt, &ingest, batch),
            Err(_) => Ok(()),
        }
    });
}

/// A flow with fields drawn anywhere in their types: short and long
/// addresses, unknown enums, huge counters, odd names.
fn any_flow(rng: &mut Rng) -> flowgate_proto::v1::Flow {
    let ip = |rng: &mut Rng| match rng.below(3) {
        0 => vec![10, 1, 0, 10],
        1 => vec![10, 1, 0, 20],
        _ => rng.bytes(20),
    };
    let int = |rng: &mut Rng| {
        if rng.chance(2) {
            rng.below(8) as i32
        } else {
            rng.next_u64() as i32
        }
    };
    flowgate_proto::v1::Flow {
        node: rng.text(300),
        first_seen_ns: rng.u64_edgy(),
        last_seen_ns: rng.u64_edgy(),
        interface: rng.text(40),
        direction: int(rng),
        ip_version: int(rng),
        src_ip: ip(rng),
        dst_ip: ip(rng),
        protocol: int(rng),
        src_port: rng.u64_edgy() as u32,
        dst_port: rng.u64_edgy() as u32,
        packets: rng.u64_edgy(),
        bytes: rng.u64_edgy(),
        kernel_fate: int(rng),
        drop_reason_code: rng.next_u64() as u32,
        drop_reason: rng.text(300),
        dropped_packets: rng.u64_edgy(),
        outcome: int(rng),
        failure: int(rng),
        src_dns_name: rng.text(300),
        dst_dns_name: rng.text(300),
        ..Default::default()
    }
}

#[test]
fn flow_batch_validation() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = ingest(dir.path());
    let rt = runtime();
    let valid = fixture_flows();
    let batch = |rng: &mut Rng| {
        let flows = if rng.chance(2) {
            (0..rng.below(8)).map(|_| any_flow(rng)).collect()
        } else {
            // Valid flows with one bent: the check must name that one.
            let mut v = valid.clone();
            let i = rng.below(v.len());
            v[i] = any_flow(rng);
            v
        };
        let name = |rng: &mut Rng| match rng.below(3) {
            0 => "node-a".to_owned(),
            1 => "n".repeat(250 + rng.below(10)),
            _ => rng.text(300),
        };
        FlowBatch {
            schema_version: if rng.chance(8) {
                rng.next_u64() as i32
            } else {
                SchemaVersion::V1 as i32
            },
            probe_id: name(rng),
            node: name(rng),
            sequence: rng.u64_edgy(),
            flows,
            losses: None,
        }
    };
    fuzz("flow_batch_validation", batch, |b| {
        handle(&rt, &ingest, b.clone())?;
        if b.probe_id.len() > flowgate_collector::ingest::MAX_NAME_BYTES
            || b.node.len() > flowgate_collector::ingest::MAX_NAME_BYTES
        {
            let mut enricher = Enricher::new(8);
            let ack = rt
                .block_on(ingest.handle(&mut enricher, b.clone()))
                .map_err(|s| s.to_string())?;
            if ack.status != AckStatus::Rejected as i32 {
                return Err(format!("an over-long name was not rejected: {ack:?}"));
            }
        }
        Ok(())
    });
}

#[test]
fn cluster_yaml() {
    let seeds = text_seeds(
        "cluster_yaml",
        &[
            "collector/tests/fixtures/cluster/shop.yaml",
            "web/tests/fixtures/cluster.yaml",
            "policy/tests/fixtures/lists.yaml",
        ],
    );
    fuzz_bytes("cluster_yaml", &seeds, |bytes| {
        let text = &String::from_utf8_lossy(bytes);
        let mut objects = flowgate_policy::ClusterObjects::default();
        if objects.parse_yaml("fuzz.yaml", text).is_ok() {
            let (_cluster, _invalid) = flowgate_policy::Cluster::build_lenient_with_tiers(
                &objects.namespaces,
                &objects.pods,
                &objects.policies,
                &objects.nodes,
                &objects.cluster_policies,
                1,
            );
        }
        Ok(())
    });
}

#[test]
fn replay_files() {
    let seeds = text_seeds(
        "replay_files",
        &[
            "collector/tests/fixtures/e2e-flows.yaml",
            "web/tests/fixtures/flows.yaml",
        ],
    );
    fuzz_bytes("replay_files", &seeds, |bytes| {
        let text = &String::from_utf8_lossy(bytes);
        if let Ok(flows) = flowgate_client::replay::parse("fuzz.yaml", text) {
            let _ =
                flowgate_client::replay::to_flows("fuzz.yaml", &flows, 1_700_000_000_000_000_000);
        }
        Ok(())
    });
}

/// A write-ahead log segment holding the fixture's flows, as the store
/// writes it.
fn wal_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let ingest = ingest(dir.path());
    let rt = runtime();
    for batch in flowgate_client::replay::batches("n/1", "node-a", fixture_flows(), 3) {
        handle(&rt, &ingest, batch).expect("fixture stored");
    }
    let log = dir.path().join("log");
    let segment = std::fs::read_dir(&log)
        .expect("the store has a log folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a log segment");
    std::fs::read(segment).unwrap()
}

#[test]
fn wal_reader() {
    let mut seeds = vec![wal_seed()];
    seeds.extend(regressions("wal_reader").into_iter().map(|(_, b)| b));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.wal");
    fuzz_bytes("wal_reader", &seeds, |bytes| {
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        // A refused file is fine; one that opens must account for every byte.
        if let Ok((wal, records, cut)) = flowgate_query::wal::Wal::open(&path) {
            let kept = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
            // An empty file gets a fresh header.
            let read = if bytes.is_empty() {
                10
            } else {
                bytes.len() as u64
            };
            if kept + cut != read {
                return Err(format!(
                    "{} bytes read, {kept} kept and {cut} cut",
                    bytes.len()
                ));
            }
            if wal.bytes() != kept {
                return Err(format!(
                    "the log says {} bytes, the file has {kept}",
                    wal.bytes()
                ));
            }
            drop(records);
        }
        Ok(())
    });
}

/// Pieces of SQL that try to leave the sandbox, change it, or outgrow it.
const SQL_PIECES: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "flows",
    "connections",
    "pods",
    "namespaces",
    "policies",
    "policy_history",
    "label_history",
    "information_schema.df_settings",
    "WHERE",
    "true",
    "1",
    ",",
    "(",
    ")",
    ";",
    "AS",
    "x",
    "JOIN",
    "ON",
    "UNION ALL",
    "ORDER BY 1",
    "LIMIT 5",
    "GROUP BY 1",
    "count(*)",
    "COPY",
    "TO",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "VIEW",
    "STORED AS CSV",
    "LOCATION",
    "SET",
    "datafusion.execution.batch_size",
    "=",
    "INSERT INTO",
    "VALUES",
    "DROP",
    "DELETE FROM",
    "UPDATE",
    "EXPLAIN",
    "ANALYZE",
    "PREPARE",
    "EXECUTE",
    "DESCRIBE",
    "SHOW ALL",
    "WITH",
    "generate_series(1, 100000)",
    "unnest(",
    "array_agg(",
    "read_csv(",
    "read_parquet(",
    "'",
    "\"",
    "--",
    "/*",
    "*/",
];

/// Whole statements that must be refused, with the canary and output
/// paths filled in.
fn escapes(canary: &str, out: &str) -> Vec<String> {
    vec![
        format!("SELECT * FROM '{canary}'"),
        format!("COPY (SELECT 1) TO '{out}'"),
        format!("COPY flows TO '{out}' STORED AS PARQUET"),
        format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{canary}'"),
        format!("SELECT * FROM read_csv('{canary}')"),
        format!("INSERT INTO '{out}' VALUES (1)"),
        "SET datafusion.execution.batch_size = 1".into(),
        "SET datafusion.runtime.memory_limit = '100G'".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        "CREATE VIEW v AS SELECT * FROM flows".into(),
        "DROP TABLE flows".into(),
        "DELETE FROM pods".into(),
        "SELECT * FROM flows".into(),
        "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100) b".into(),
        "SELECT value FROM generate_series(1, 100000000) ORDER BY value DESC".into(),
    ]
}

/// A statement: a whole escape attempt, a soup of pieces, or both, with
/// the canary's and the output's paths among the pieces.
fn sql_statement(rng: &mut Rng, escapes: &[String], paths: &[String]) -> String {
    let soup = |rng: &mut Rng| {
        let n = 1 + rng.below(13);
        (0..n)
            .map(|_| {
                if rng.chance(8) {
                    rng.pick(paths).clone()
                } else {
                    (*rng.pick(SQL_PIECES)).to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    match rng.below(4) {
        0 => rng.pick(escapes).clone(),
        1 => soup(rng),
        _ => format!("{} {}", rng.pick(escapes), soup(rng)),
    }
}

/// The settings and tables a statement must not change.
fn sandbox_state(rt: &tokio::runtime::Runtime, engine: &QueryEngine) -> String {
    let sql = "SELECT name, value FROM information_schema.df_settings \
               UNION ALL SELECT table_name, table_type FROM information_schema.tables \
               ORDER BY 1, 2";
    let r = rt
        .block_on(engine.sql(sql))
        .expect("the sandbox describes itself");
    r.to_json().to_string()
}

#[test]
fn sql_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary.csv");
    let secret = "flowgate-canary-7f3a";
    std::fs::write(&canary, format!("a\n{secret}\n")).unwrap();
    let out = outside.path().join("out.csv");
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    let limits = QueryLimits {
        timeout: Duration::from_millis(500),
        max_rows: 100,
        memory_bytes: 16 << 20,
        max_concurrent: 1,
    };
    let engine = QueryEngine::new(store, limits).unwrap();
    let rt = runtime();
    let before = sandbox_state(&rt, &engine);
    let escapes = escapes(&canary.display().to_string(), &out.display().to_string());
    let paths = [
        format!("'{}'", canary.display()),
        format!("'{}'", out.display()),
    ];
    fuzz(
        "sql_sandbox",
        |rng| sql_statement(rng, &escapes, &paths),
        |sql| {
            match rt.block_on(engine.sql(sql)) {
                Ok(result) => {
                    let rows: usize = result.batches.iter().map(|b| b.num_rows()).sum();
                    if rows > limits.max_rows {
                        return Err(format!("{rows} rows, the limit is {}", limits.max_rows));
                    }
                    if result.to_json().to_string().contains(secret) {
                        return Err("the statement read a file outside the sandbox".into());
                    }
                }
                Err(e) if e.to_string().contains(secret) => {
                    return Err(format!("a file's content leaked into an error: {e}"));
                }
                Err(_) => {}
            }
            if out.exists() {
                return Err(format!("the statement wrote {}", out.display()));
            }
            let now = sandbox_state(&rt, &engine);
            if now != before {
                return Err("the statement changed a setting or a table".into());
            }
            Ok(())
        },
    );
}
