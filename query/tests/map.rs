//! The map's edges: connections (not observations) between the nodes of
//! one level, counted by verdict.

use flowgate_query::map::MapLevel;
use flowgate_query::{FlowRow, FlowStore, QueryEngine, QueryLimits, StoreConfig};
use serde_json::{Value, json};

const T0: i64 = 1_764_028_800_000_000_000; // on a minute boundary

/// An end: `(ip, namespace/workload/pod)` inside the cluster, or
/// `(ip, dns name)` outside it.
#[derive(Clone, Copy)]
enum End {
    Pod(&'static str, &'static str, &'static str, &'static str),
    Outside(&'static str, Option<&'static str>),
}

/// One observation of `src` → `dst` (client port `port`) at `point`
/// (`egress` or `ingress`).
fn observation(
    src: End,
    dst: End,
    port: u16,
    point: &str,
    verdict: &str,
    mismatch: bool,
) -> FlowRow {
    let mut row = json!({
        "time": T0 + 1_000_000_000, "last_seen": T0 + 2_000_000_000,
        "node": "node-1", "interface": "veth0", "direction": point, "ip_version": 4,
        "src_port": port, "dst_port": 8080, "protocol": "TCP", "packets": 3, "bytes": 300,
        "tcp_flags": 2, "is_reply": false,
        "verdict": verdict, "egress_verdict": "allowed", "ingress_verdict": verdict,
        "allowed_by": [], "allowed_rules": [], "denied_by": [], "policy_generation": 1,
        "kernel_fate": if verdict == "denied" && !mismatch { "dropped" } else { "forwarded" },
        "drop_reason": null, "enforcement_mismatch": mismatch,
    });
    for (side, end) in [("src", src), ("dst", dst)] {
        let o = row.as_object_mut().unwrap();
        match end {
            End::Pod(ip, ns, workload, pod) => {
                o.insert(format!("{side}_ip"), json!(ip));
                o.insert(format!("{side}_namespace"), json!(ns));
                o.insert(format!("{side}_workload"), json!(workload));
                o.insert(format!("{side}_workload_kind"), json!("Deployment"));
                o.insert(format!("{side}_pod"), json!(pod));
                o.insert(format!("{side}_labels"), json!("{}"));
            }
            End::Outside(ip, dns) => {
                o.insert(format!("{side}_ip"), json!(ip));
                o.insert(format!("{side}_dns_name"), json!(dns));
            }
        }
    }
    serde_json::from_value(row).unwrap()
}

const WEB_1: End = End::Pod("10.0.0.10", "shop", "web", "web-1");
const WEB_2: End = End::Pod("10.0.0.11", "shop", "web", "web-2");
const API_1: End = End::Pod("10.0.0.20", "shop", "api", "api-1");
const TOOL: End = End::Pod("10.0.1.5", "dev", "tool", "tool-1");
const DB: End = End::Pod("10.0.2.5", "data", "db", "db-0");

/// Both observation points of every connection, so that counting
/// observations would give twice the connections.
fn traffic() -> Vec<FlowRow> {
    let mut rows = Vec::new();
    let mut both = |src, dst, port, verdict, mismatch| {
        rows.push(observation(src, dst, port, "egress", verdict, mismatch));
        rows.push(observation(src, dst, port, "ingress", verdict, mismatch));
    };
    both(WEB_1, API_1, 40001, "allowed", false);
    both(WEB_2, API_1, 40002, "allowed", false);
    both(WEB_1, DB, 40003, "allowed", false);
    both(TOOL, API_1, 40004, "denied", false);
    both(TOOL, DB, 40005, "denied", true);
    both(TOOL, DB, 40006, "allowed", false);
    both(
        WEB_1,
        End::Outside("203.0.113.7", None),
        40007,
        "allowed",
        false,
    );
    both(
        WEB_2,
        End::Outside("203.0.113.9", None),
        40008,
        "allowed",
        false,
    );
    both(
        API_1,
        End::Outside("198.51.100.4", Some("api.example.com")),
        40009,
        "allowed",
        false,
    );
    rows
}

async fn edges(level: MapLevel) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    let rows = traffic();
    // Half in Parquet, half in memory.
    store.append(&rows[..8]).unwrap();
    store.flush().unwrap();
    store.append(&rows[8..]).unwrap();
    let engine = QueryEngine::new(store, QueryLimits::default()).unwrap();
    let answer = engine.map(&level, None).await.unwrap().to_json();
    let rows = answer["rows"].as_array().unwrap();
    let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_owned();
    rows.iter()
        .map(|r| {
            format!(
                "{}:{} -> {}:{} {} ({} allowed, {} denied, {} mismatched)",
                text(r, "src_kind"),
                text(r, "src"),
                text(r, "dst_kind"),
                text(r, "dst"),
                r["connections"],
                r["allowed"],
                r["denied"],
                r["mismatched"]
            )
        })
        .collect()
}

#[tokio::test]
async fn namespaces_are_one_node_each_and_counts_are_connections() {
    assert_eq!(
        edges(MapLevel::Namespace).await,
        [
            "namespace:dev -> namespace:data 2 (1 allowed, 1 denied, 1 mismatched)",
            "namespace:shop -> network:203.0.113.0/24 2 (2 allowed, 0 denied, 0 mismatched)",
            "namespace:shop -> namespace:shop 2 (2 allowed, 0 denied, 0 mismatched)",
            "namespace:dev -> namespace:shop 1 (0 allowed, 1 denied, 0 mismatched)",
            "namespace:shop -> dns_name:api.example.com 1 (1 allowed, 0 denied, 0 mismatched)",
            "namespace:shop -> namespace:data 1 (1 allowed, 0 denied, 0 mismatched)",
        ]
    );
}

#[tokio::test]
async fn an_expanded_namespace_shows_its_workloads_and_the_others_stay_whole() {
    assert_eq!(
        edges(MapLevel::Workload {
            namespace: "shop".into()
        })
        .await,
        [
            "namespace:dev -> namespace:data 2 (1 allowed, 1 denied, 1 mismatched)",
            "workload:shop/web -> network:203.0.113.0/24 2 (2 allowed, 0 denied, 0 mismatched)",
            "workload:shop/web -> workload:shop/api 2 (2 allowed, 0 denied, 0 mismatched)",
            "namespace:dev -> workload:shop/api 1 (0 allowed, 1 denied, 0 mismatched)",
            "workload:shop/api -> dns_name:api.example.com 1 (1 allowed, 0 denied, 0 mismatched)",
            "workload:shop/web -> namespace:data 1 (1 allowed, 0 denied, 0 mismatched)",
        ]
    );
}

#[tokio::test]
async fn an_expanded_workload_shows_its_pods() {
    assert_eq!(
        edges(MapLevel::Pod {
            namespace: "shop".into(),
            workload: "web".into()
        })
        .await,
        [
            "namespace:dev -> namespace:data 2 (1 allowed, 1 denied, 1 mismatched)",
            "namespace:dev -> workload:shop/api 1 (0 allowed, 1 denied, 0 mismatched)",
            "workload:shop/api -> dns_name:api.example.com 1 (1 allowed, 0 denied, 0 mismatched)",
            "pod:shop/web-1 -> network:203.0.113.0/24 1 (1 allowed, 0 denied, 0 mismatched)",
            "pod:shop/web-1 -> namespace:data 1 (1 allowed, 0 denied, 0 mismatched)",
            "pod:shop/web-1 -> workload:shop/api 1 (1 allowed, 0 denied, 0 mismatched)",
            "pod:shop/web-2 -> network:203.0.113.0/24 1 (1 allowed, 0 denied, 0 mismatched)",
            "pod:shop/web-2 -> workload:shop/api 1 (1 allowed, 0 denied, 0 mismatched)",
        ]
    );
}
