//! SQL over the store: the `flows` contract, memory and Parquet as one
//! table, time pruning, joins with the cluster tables, the sandbox, the
//! limits and the output formats.

mod support;

use std::time::Duration;

use flowgate_query::{
    Direction, FlowStore, NamespaceRow, PodIsolationRow, PodRow, PolicyRow, QueryEngine,
    QueryError, QueryLimits, StoreConfig,
};
use serde_json::{Value, json};
use support::{HOUR_NS, fixture_rows};

struct Fixture {
    _dir: tempfile::TempDir,
    store: FlowStore,
    engine: QueryEngine,
}

/// The fixture rows: the first three flushed to Parquet, the rest in memory.
fn fixture(limits: QueryLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    let rows = fixture_rows();
    store.append(&rows[..3]).unwrap();
    store.flush().unwrap();
    store.append(&rows[3..]).unwrap();
    let engine = QueryEngine::new(store.clone(), limits).unwrap();
    engine.set_cluster_tables(
        vec![PodRow {
            namespace: "shop".into(),
            name: "api-1".into(),
            ips: vec!["10.0.0.2".into()],
            node: Some("node-1".into()),
            labels: r#"{"app":"api"}"#.into(),
            workload_kind: Some("Deployment".into()),
            workload: Some("api".into()),
            host_network: false,
            phase: Some("Running".into()),
        }],
        vec![NamespaceRow {
            name: "shop".into(),
            labels: r#"{"team":"shop"}"#.into(),
        }],
        vec![PolicyRow {
            namespace: "shop".into(),
            name: "default-deny".into(),
            pod_selector: "<all>".into(),
            policy_types: vec!["Ingress".into()],
            ingress_rules: 0,
            egress_rules: 0,
            selected_pods: vec!["shop/api-1".into()],
            yaml: "kind: NetworkPolicy".into(),
        }],
    );
    Fixture {
        _dir: dir,
        store,
        engine,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn query(f: &Fixture, sql: &str) -> Value {
    rt().block_on(f.engine.sql(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .to_json()
}

#[test]
fn flows_has_the_contract_columns_and_spans_memory_and_parquet() {
    let f = fixture(QueryLimits::default());
    let v = query(&f, "SELECT * FROM flows ORDER BY time");
    let cols: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "time",
        "node",
        "src_ip",
        "dst_ip",
        "src_port",
        "dst_port",
        "protocol",
        "packets",
        "bytes",
        "tcp_flags",
        "src_namespace",
        "src_pod",
        "src_workload",
        "src_labels",
        "dst_namespace",
        "dst_pod",
        "dst_workload",
        "dst_labels",
        "verdict",
        "egress_verdict",
        "ingress_verdict",
        "allowed_by",
        "denied_by",
        "kernel_fate",
        "drop_reason",
        "enforcement_mismatch",
    ] {
        assert!(cols.contains(&c), "missing column {c}");
    }
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "3 rows in Parquet + 3 in memory");
    assert_eq!(rows[1]["drop_reason"], "NETFILTER_DROP");
    assert_eq!(rows[1]["denied_by"], json!(["shop/default-deny"]));
    assert_eq!(rows[0]["allowed_by"], json!(["shop/api-from-web"]));
    assert_eq!(
        rows[3]["dst_pod"],
        Value::Null,
        "pod columns are NULL outside the cluster"
    );
    assert!(
        rows[0]["time"]
            .as_str()
            .unwrap()
            .starts_with("2025-11-25T00:00:00"),
        "{}",
        rows[0]["time"]
    );
    assert_eq!(v["truncated"], false);
}

#[test]
fn group_by_and_joins_with_cluster_tables() {
    let f = fixture(QueryLimits::default());
    let v = query(
        &f,
        "SELECT src_namespace, dst_namespace, verdict, count(*) AS flows, sum(bytes) AS bytes \
         FROM flows WHERE dst_namespace IS NOT NULL GROUP BY 1, 2, 3 ORDER BY bytes DESC, dst_namespace",
    );
    assert_eq!(
        v["rows"],
        json!([
            {"src_namespace": "shop", "dst_namespace": "kube-system", "verdict": "allowed", "flows": 1, "bytes": 6000},
            {"src_namespace": "shop", "dst_namespace": "shop", "verdict": "allowed", "flows": 2, "bytes": 6000},
            {"src_namespace": "dev", "dst_namespace": "shop", "verdict": "denied", "flows": 2, "bytes": 5000},
        ])
    );
    let v = query(
        &f,
        "SELECT p.name, n.labels, count(*) AS denied FROM flows f \
         JOIN policies p ON array_has(f.denied_by, p.namespace || '/' || p.name) \
         JOIN namespaces n ON n.name = p.namespace GROUP BY 1, 2",
    );
    assert_eq!(
        v["rows"],
        json!([{"name": "default-deny", "labels": "{\"team\":\"shop\"}", "denied": 2}])
    );
    let v = query(
        &f,
        "SELECT count(*) AS c FROM flows WHERE enforcement_mismatch",
    );
    assert_eq!(v["rows"][0]["c"], 2);
    let v = query(
        &f,
        "SELECT workload FROM pods WHERE array_has(ips, '10.0.0.2')",
    );
    assert_eq!(v["rows"], json!([{"workload": "api"}]));
}

fn policy(name: &str, ingress_rules: u32, egress_rules: u32) -> PolicyRow {
    PolicyRow {
        namespace: "shop".into(),
        name: name.into(),
        pod_selector: "<all>".into(),
        policy_types: vec!["Ingress".into(), "Egress".into()],
        ingress_rules,
        egress_rules,
        selected_pods: vec![],
        yaml: String::new(),
    }
}

/// `rule_hits` lists every rule of the current policies, with the
/// connections and flows it admitted (none for a rule that never fired);
/// a rule of a deleted policy leaves with its policy.
#[test]
fn rule_hits_counts_connections_and_flows_per_rule_of_the_current_policies() {
    let f = fixture(QueryLimits::default());
    // The destination's egress report of the first connection: one more
    // flow, the same connection.
    let mut reply = fixture_rows()[0].clone();
    reply.direction = Direction::Egress;
    reply.last_seen += 5_000;
    f.store.append(&[reply]).unwrap();
    let hits = |f: &Fixture| {
        query(
            f,
            "SELECT policy, direction, rule_index, connections, flows, \
             CAST(first_hit AS BIGINT) AS first, CAST(last_hit AS BIGINT) AS last \
             FROM rule_hits ORDER BY policy, direction, rule_index",
        )["rows"]
            .clone()
    };
    f.engine.set_cluster_tables(
        vec![],
        vec![],
        vec![policy("api-from-web", 1, 0), policy("db-from-api", 2, 1)],
    );
    let first = fixture_rows()[0].time;
    assert_eq!(
        hits(&f),
        json!([
            {"policy": "api-from-web", "direction": "ingress", "rule_index": 0, "connections": 1, "flows": 2,
             "first": first, "last": first + 6_000},
            {"policy": "db-from-api", "direction": "egress", "rule_index": 0, "connections": 0, "flows": 0,
             "first": null, "last": null},
            {"policy": "db-from-api", "direction": "ingress", "rule_index": 0, "connections": 1, "flows": 1,
             "first": 1764032760000000000_i64, "last": 1764032760000001000_i64},
            {"policy": "db-from-api", "direction": "ingress", "rule_index": 1, "connections": 0, "flows": 0,
             "first": null, "last": null},
        ])
    );
    f.engine
        .set_cluster_tables(vec![], vec![], vec![policy("db-from-api", 0, 1)]);
    assert_eq!(
        hits(&f),
        json!([{"policy": "db-from-api", "direction": "egress", "rule_index": 0, "connections": 0, "flows": 0,
                "first": null, "last": null}])
    );
}

#[test]
fn pod_isolation_lists_pods_and_the_policies_selecting_them() {
    let f = fixture(QueryLimits::default());
    f.engine.set_pod_isolation(&[
        PodIsolationRow {
            namespace: "shop".into(),
            pod: "api-1".into(),
            ingress_isolated: true,
            egress_isolated: false,
            policies: vec!["shop/default-deny".into()],
        },
        PodIsolationRow {
            namespace: "shop".into(),
            pod: "web-1".into(),
            ingress_isolated: false,
            egress_isolated: false,
            policies: vec![],
        },
    ]);
    let v = query(
        &f,
        "SELECT namespace, pod, policies FROM pod_isolation WHERE NOT ingress_isolated",
    );
    assert_eq!(
        v["rows"],
        json!([{"namespace": "shop", "pod": "web-1", "policies": []}])
    );
    let v = query(
        &f,
        "SELECT pod FROM pod_isolation WHERE array_has(policies, 'shop/default-deny')",
    );
    assert_eq!(v["rows"], json!([{"pod": "api-1"}]));
}

#[test]
fn time_filters_prune_partitions_before_reading() {
    let f = fixture(QueryLimits::default());
    let t0 = fixture_rows()[0].time;
    let lit = |ns: i64| format!("to_timestamp_nanos({ns})");
    let v = query(
        &f,
        &format!(
            "SELECT count(*) AS c FROM flows WHERE time >= {} AND time < {}",
            lit(t0 + HOUR_NS),
            lit(t0 + 2 * HOUR_NS)
        ),
    );
    assert_eq!(v["rows"][0]["c"], 2);
    // The planner hands the literal bounds to the table, which keeps only
    // the matching partition's files.
    let plan = query(
        &f,
        &format!(
            "EXPLAIN SELECT count(*) FROM flows WHERE time < {}",
            lit(t0 + HOUR_NS)
        ),
    );
    let text = plan.to_string();
    assert!(
        text.contains(".parquet"),
        "hour 0 is read from Parquet: {text}"
    );
    let plan = query(
        &f,
        &format!(
            "EXPLAIN SELECT count(*) FROM flows WHERE time > {}",
            lit(t0 + 2 * HOUR_NS)
        ),
    );
    assert!(
        !plan.to_string().contains(".parquet"),
        "no Parquet file holds hour 2: {plan}"
    );
    // Bounds extraction itself.
    use datafusion::prelude::{col, lit as dlit};
    let filter = col("time")
        .gt_eq(dlit(datafusion::scalar::ScalarValue::TimestampNanosecond(
            Some(5),
            None,
        )))
        .and(
            dlit(datafusion::scalar::ScalarValue::TimestampNanosecond(
                Some(9),
                None,
            ))
            .gt(col("time")),
        );
    assert_eq!(flowgate_query::time_bounds(&[filter]), (5, 9));
    drop(f.store);
}

#[test]
fn the_sandbox_refuses_writes_files_and_settings() {
    let f = fixture(QueryLimits::default());
    for (sql, why) in [
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "DDL",
        ),
        ("DROP TABLE flows", "DDL"),
        ("INSERT INTO flows SELECT * FROM flows", "DML"),
        ("COPY (SELECT 1) TO '/tmp/flowgate-escape.csv'", "DML"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
        ("SELECT * FROM '/etc/passwd'", "passwd"),
    ] {
        match rt().block_on(f.engine.sql(sql)) {
            Err(QueryError::BadQuery { message }) => {
                assert!(message.contains(why), "{sql}: {message}")
            }
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/flowgate-escape.csv").exists());
    // A bad query gets DataFusion's own message.
    match rt().block_on(f.engine.sql("SELECT nope FROM flows")) {
        Err(QueryError::BadQuery { message }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    match rt().block_on(f.engine.sql("SELEC 1")) {
        Err(QueryError::BadQuery { message }) => assert!(message.contains("SELEC"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_and_time_limits() {
    let f = fixture(QueryLimits {
        timeout: Duration::from_secs(10),
        max_rows: 4,
        ..QueryLimits::default()
    });
    let v = query(&f, "SELECT * FROM flows");
    assert_eq!(
        (v["rows"].as_array().unwrap().len(), v["truncated"].clone()),
        (4, json!(true))
    );
    let slow = fixture(QueryLimits {
        timeout: Duration::from_millis(50),
        max_rows: 10,
        ..QueryLimits::default()
    });
    let err =
        rt().block_on(slow.engine.sql(
            "SELECT count(*) FROM generate_series(1, 2000000000) a, generate_series(1, 10) b",
        ))
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout { .. }), "{err:?}");
}

#[test]
fn csv_and_arrow_ipc() {
    let f = fixture(QueryLimits::default());
    let r = rt()
        .block_on(
            f.engine
                .sql("SELECT dst_port, verdict FROM flows ORDER BY time LIMIT 2"),
        )
        .unwrap();
    let csv = String::from_utf8(r.to_csv().unwrap()).unwrap();
    assert_eq!(csv, "dst_port,verdict\n8080,allowed\n8080,denied\n");
    let ipc = r.to_arrow_ipc().unwrap();
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);
}
