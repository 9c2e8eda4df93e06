//! The `connections` table: the four observations of a connection (its
//! packets leaving the source and arriving at the destination, its replies
//! both ways) become one row, with where it was seen and where it was dropped.

use flowgate_query::{
    Direction, DirectionVerdict, FlowRow, FlowStore, KernelFate, Protocol, QueryEngine,
    QueryLimits, StoreConfig, Tier, Verdict,
};
use serde_json::{Value, json};

const T0: i64 = 1_764_028_800_000_000_000; // on a minute boundary

/// One observation of web-1 (10.0.0.10:40000) → api-1 (10.0.0.2:8080), or of
/// its reply when `reply`.
fn observation(direction: Direction, reply: bool, packets: u64, dropped: bool) -> FlowRow {
    let (client, server) = (("10.0.0.10", 40000, "web-1"), ("10.0.0.2", 8080, "api-1"));
    let (src, dst) = if reply {
        (server, client)
    } else {
        (client, server)
    };
    FlowRow {
        time: T0 + 1_000_000_000,
        last_seen: T0 + 2_000_000_000,
        node: "node-1".into(),
        interface: format!("veth-{}", if reply { dst.2 } else { src.2 }),
        direction,
        ip_version: 4,
        src_ip: src.0.into(),
        dst_ip: dst.0.into(),
        src_port: src.1,
        dst_port: dst.1,
        protocol: Protocol::Tcp,
        packets,
        bytes: packets * 100,
        tcp_flags: 0x12,
        is_reply: reply,
        src_namespace: Some("shop".into()),
        src_pod: Some(src.2.into()),
        src_workload: Some(src.2.trim_end_matches("-1").into()),
        src_workload_kind: Some("Deployment".into()),
        src_labels: Some("{}".into()),
        src_dns_name: None,
        dst_namespace: Some("shop".into()),
        dst_pod: Some(dst.2.into()),
        dst_workload: Some(dst.2.trim_end_matches("-1").into()),
        dst_workload_kind: Some("Deployment".into()),
        dst_labels: Some("{}".into()),
        dst_dns_name: None,
        verdict: Verdict::from(!dropped),
        egress_verdict: DirectionVerdict::Allowed,
        ingress_verdict: if dropped {
            DirectionVerdict::Denied
        } else {
            DirectionVerdict::Allowed
        },
        egress_tier: Some(Tier::Default),
        ingress_tier: Some(Tier::NetworkPolicy),
        allowed_by: vec![],
        allowed_rules: vec![],
        denied_by: if dropped {
            vec!["shop/default-deny".into()]
        } else {
            vec![]
        },
        decided_by: vec![],
        policy_generation: 1,
        kernel_fate: if dropped {
            KernelFate::Dropped
        } else {
            KernelFate::Forwarded
        },
        drop_reason: dropped.then(|| "NETFILTER_DROP".into()),
        outcome: None,
        failure: None,
        enforcement_mismatch: false,
    }
}

async fn connections(rows: &[FlowRow], flush_first: usize) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    store.append(&rows[..flush_first]).unwrap();
    store.flush().unwrap();
    store.append(&rows[flush_first..]).unwrap();
    let engine = QueryEngine::new(store, QueryLimits::default()).unwrap();
    let answer = engine
        .sql(
            "SELECT src_ip, src_port, dst_ip, dst_port, src_pod, dst_pod, verdict, observed_at, \
             packets_sent, packets_delivered, reply_packets, kernel_fate, drop_reason, dropped_at, \
             observations FROM connections ORDER BY time",
        )
        .await
        .unwrap()
        .to_json();
    answer["rows"].as_array().unwrap().clone()
}

#[tokio::test]
async fn four_observations_of_one_connection_are_one_row() {
    let rows = [
        observation(Direction::Egress, false, 10, false),
        observation(Direction::Ingress, false, 10, false),
        observation(Direction::Egress, true, 8, false),
        observation(Direction::Ingress, true, 8, false),
    ];
    // Half in Parquet, half in memory: one table all the same.
    let got = connections(&rows, 2).await;
    assert_eq!(
        got,
        vec![json!({
            "src_ip": "10.0.0.10", "src_port": 40000, "dst_ip": "10.0.0.2", "dst_port": 8080,
            "src_pod": "web-1", "dst_pod": "api-1", "verdict": "allowed", "observed_at": "both",
            "packets_sent": 10, "packets_delivered": 10, "reply_packets": 8,
            "kernel_fate": "forwarded", "drop_reason": null, "dropped_at": null, "observations": 4
        })]
    );
}

#[tokio::test]
async fn a_connection_dropped_at_the_destination_says_so_in_one_row() {
    // It left the source and never reached the destination's pod.
    let rows = [observation(Direction::Egress, false, 3, true)];
    let got = connections(&rows, 0).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let c = &got[0];
    assert_eq!(c["dropped_at"], "destination_ingress");
    assert_eq!(c["observed_at"], "source");
    assert_eq!(c["verdict"], "denied");
    assert_eq!(c["packets_sent"], 3);
    assert_eq!(c["packets_delivered"], 0);
    assert_eq!(c["drop_reason"], "NETFILTER_DROP");
}

#[tokio::test]
async fn time_filters_keep_whole_connections() {
    // Observations 10 s apart inside one minute: a time filter that only the
    // earlier one passes still gives the connection all its observations.
    let mut early = observation(Direction::Egress, false, 5, false);
    let mut late = observation(Direction::Ingress, false, 5, false);
    early.time = T0 + 1_000_000_000;
    late.time = T0 + 11_000_000_000;
    late.last_seen = T0 + 12_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    store.append(&[early, late]).unwrap();
    let engine = QueryEngine::new(store, QueryLimits::default()).unwrap();
    let answer = engine
        .sql(&format!(
            "SELECT observed_at, packets_sent, observations FROM connections \
             WHERE time <= to_timestamp_nanos({})",
            T0 + 5_000_000_000
        ))
        .await
        .unwrap()
        .to_json();
    assert_eq!(
        answer["rows"],
        json!([{"observed_at": "both", "packets_sent": 5, "observations": 2}])
    );
}

#[tokio::test]
async fn the_judgement_is_the_newest_observations_with_its_lists_whole() {
    // Denied first; a policy change later in the minute admits it through
    // two policies. The row carries the newest judgement, lists intact, and
    // keeps the documented types.
    let mut old = observation(Direction::Egress, false, 2, true);
    let mut new = observation(Direction::Ingress, false, 2, false);
    old.last_seen = T0 + 3_000_000_000;
    new.last_seen = T0 + 9_000_000_000;
    new.allowed_by = vec!["shop/allow-web".into(), "shop/allow-all-8080".into()];
    new.decided_by = vec!["admin/ops/ingress/0".into()];
    new.ingress_tier = Some(Tier::Admin);
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig::new(dir.path())).unwrap();
    // The newer one stored first: order of storage is not order of time.
    store.append(&[new, old]).unwrap();
    let engine = QueryEngine::new(store, QueryLimits::default()).unwrap();
    let answer = engine
        .sql(
            "SELECT verdict, ingress_verdict, ingress_tier, allowed_by, denied_by, decided_by, \
             arrow_typeof(verdict) AS verdict_type, arrow_typeof(allowed_by) AS list_type \
             FROM connections",
        )
        .await
        .unwrap()
        .to_json();
    assert_eq!(
        answer["rows"],
        json!([{
            "verdict": "allowed", "ingress_verdict": "allowed", "ingress_tier": "admin",
            "allowed_by": ["shop/allow-web", "shop/allow-all-8080"], "denied_by": [],
            "decided_by": ["admin/ops/ingress/0"],
            "verdict_type": "Dictionary(Int32, Utf8)", "list_type": "List(Utf8)"
        }])
    );
}
