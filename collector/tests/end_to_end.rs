//! A collector with a YAML cluster, flows sent over gRPC as probes send
//! them, and SQL over HTTP that must return the right identities, verdicts,
//! policy names and mismatch flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flowgate_client::{self as client, replay};
use flowgate_collector::{ClusterSource, Config};
use flowgate_proto::v1::flow_ingest_client::FlowIngestClient;
use flowgate_proto::v1::{AckStatus, FlowBatch, SchemaVersion};
use serde_json::{Value, json};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

async fn start(data: &std::path::Path) -> Result<flowgate_collector::Collector> {
    let mut config = Config::new(
        ClusterSource::Files(vec![fixture("cluster")]),
        data.to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.max_batch_flows = 100;
    Ok(flowgate_collector::run(config).await?)
}

fn flows_from_fixture() -> Result<Vec<flowgate_proto::v1::Flow>> {
    let name = "e2e-flows.yaml";
    let text = std::fs::read_to_string(fixture(name))?;
    Ok(replay::to_flows(
        name,
        &replay::parse(name, &text)?,
        flowgate_collector::now_ns(),
    )?)
}

fn row<'a>(rows: &'a [Value], src_ip: &str, dst_port: u64) -> Result<&'a Value> {
    rows.iter()
        .find(|r| r["src_ip"] == src_ip && r["dst_port"] == dst_port)
        .with_context(|| format!("no row for {src_ip} -> :{dst_port} in {rows:#?}"))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        // Some encoders give lists as JSON text.
        Value::String(s) => {
            serde_json::from_str::<Vec<String>>(s).unwrap_or_else(|_| vec![s.clone()])
        }
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_judged_stored_and_queryable() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = start(data.path()).await?;
    let grpc = format!("http://{}", collector.grpc_addr());
    let http = format!("http://{}", collector.http_addr());

    let batches = replay::batches("node-a/probe-1", "node-a", flows_from_fixture()?, 4);
    let acks = client::send_batches(&grpc, batches.clone()).await?;
    assert_eq!(
        acks.iter()
            .map(|a| (a.sequence, a.status, a.flows_stored))
            .collect::<Vec<_>>(),
        vec![
            (1, AckStatus::Stored as i32, 4),
            (2, AckStatus::Stored as i32, 3)
        ]
    );
    // A resend after a reconnect is recognised and not stored twice.
    let again = client::send_batches(&grpc, batches).await?;
    assert!(
        again
            .iter()
            .all(|a| a.status == AckStatus::Duplicate as i32),
        "{again:?}"
    );

    let sql = "SELECT src_ip, dst_ip, src_port, dst_port, protocol, node, src_namespace, src_pod, src_workload, \
               src_labels, dst_namespace, dst_pod, dst_workload, verdict, egress_verdict, ingress_verdict, \
               allowed_by, denied_by, kernel_fate, drop_reason, enforcement_mismatch, direction FROM flows";
    let answer = client::query(&http, sql).await?;
    let rows = answer["rows"].as_array().context("rows")?.clone();
    assert_eq!(rows.len(), 7, "every flow stored exactly once: {rows:#?}");

    let web_db = row(&rows, "10.1.0.10", 5432)?;
    assert_eq!(web_db["src_namespace"], "shop");
    assert_eq!(web_db["src_pod"], "web-7d4b9c8f6-x2x9q");
    assert_eq!(
        web_db["src_workload"], "web",
        "ReplicaSet resolved to its Deployment"
    );
    assert_eq!(web_db["dst_pod"], "db-0");
    assert_eq!(web_db["dst_workload"], "db");
    assert_eq!(web_db["verdict"], "allowed");
    assert_eq!(
        web_db["egress_verdict"], "allowed",
        "egress not isolated: allowed"
    );
    assert_eq!(web_db["ingress_verdict"], "allowed");
    assert_eq!(strings(&web_db["allowed_by"]), vec!["shop/db-allow-web"]);
    assert!(strings(&web_db["denied_by"]).is_empty());
    assert_eq!(web_db["enforcement_mismatch"], false);
    let labels: Value = serde_json::from_str(web_db["src_labels"].as_str().context("labels")?)?;
    assert_eq!(labels["app"], "web");

    let reply = row(&rows, "10.1.0.20", 40000)?;
    assert_eq!(
        reply["verdict"], "allowed",
        "a reply of an allowed connection is allowed"
    );
    assert_eq!(strings(&reply["allowed_by"]), vec!["shop/db-allow-web"]);
    assert_eq!(reply["enforcement_mismatch"], false);

    let sneaky = row(&rows, "10.2.0.5", 5432)?;
    assert_eq!(sneaky["src_namespace"], "other");
    assert_eq!(sneaky["src_pod"], "client");
    assert_eq!(sneaky["verdict"], "denied");
    assert_eq!(sneaky["ingress_verdict"], "denied");
    let mut denied_by = strings(&sneaky["denied_by"]);
    denied_by.sort();
    assert_eq!(denied_by, vec!["shop/db-allow-web", "shop/default-deny"]);
    assert_eq!(sneaky["kernel_fate"], "forwarded");
    assert_eq!(sneaky["enforcement_mismatch"], true, "denied but delivered");

    let dropped = row(&rows, "10.2.0.5", 80)?;
    assert_eq!(dropped["verdict"], "allowed");
    assert_eq!(strings(&dropped["allowed_by"]), vec!["shop/web-allow-http"]);
    assert_eq!(dropped["kernel_fate"], "dropped");
    assert_eq!(dropped["drop_reason"], "NETFILTER_DROP");
    assert_eq!(dropped["enforcement_mismatch"], true, "allowed but dropped");

    let world = row(&rows, "10.1.0.10", 53)?;
    assert_eq!(world["protocol"], "UDP");
    assert_eq!(world["verdict"], "allowed");
    assert_eq!(world["ingress_verdict"], "not_applicable");
    assert_eq!(world["dst_namespace"], Value::Null);
    assert_eq!(world["dst_pod"], Value::Null);

    let enforced = row(&rows, "10.2.0.5", 6379)?;
    assert_eq!(enforced["verdict"], "denied");
    assert_eq!(
        enforced["enforcement_mismatch"], false,
        "denied and dropped agree"
    );

    let kernel_only = row(&rows, "10.2.0.5", 5433)?;
    assert_eq!(kernel_only["direction"], "unknown");
    assert_eq!(kernel_only["verdict"], "denied");
    assert_eq!(kernel_only["kernel_fate"], "dropped");
    assert_eq!(kernel_only["enforcement_mismatch"], false);
    assert_eq!(sneaky["direction"], "ingress");

    // The mismatches, as an operator would ask for them.
    let mismatches = client::query(
        &http,
        "SELECT dst_port FROM flows WHERE enforcement_mismatch ORDER BY dst_port",
    )
    .await?;
    assert_eq!(
        mismatches["rows"],
        json!([{"dst_port": 80}, {"dst_port": 5432}])
    );

    // The map over HTTP: the namespace level has the namespaces and the
    // /24 outside; a level without its namespace is the caller's mistake.
    let map = client::http_json(http::Method::GET, &format!("{http}/api/v1/map"), None).await?;
    let edges: Vec<String> = map["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| {
            format!(
                "{} {} -> {} {}",
                e["src_kind"], e["src"], e["dst_kind"], e["dst"]
            )
        })
        .collect();
    assert!(
        edges.contains(&r#""namespace" "other" -> "namespace" "shop""#.to_owned()),
        "{edges:?}"
    );
    assert!(
        edges
            .iter()
            .all(|e| !e.contains("\"pod\"") && !e.contains("\"workload\"")),
        "{edges:?}"
    );
    match client::http_json(
        http::Method::GET,
        &format!("{http}/api/v1/map?level=workload"),
        None,
    )
    .await
    {
        Err(client::ClientError::Status {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("needs namespace"), "{message}"),
        other => bail!("expected a 400, got {other:?}"),
    }

    // A bad query is the caller's mistake: 400 with the engine's message.
    match client::query(&http, "SELECT nope FROM flows").await {
        Err(client::ClientError::Status {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("nope"), "{message}"),
        other => bail!("expected a 400, got {other:?}"),
    }
    collector.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_rejected_with_a_reason_and_the_stream_goes_on() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = start(data.path()).await?;
    let mut grpc = FlowIngestClient::connect(format!("http://{}", collector.grpc_addr())).await?;
    let good = flows_from_fixture()?;
    let batch = |sequence: u64, flows: Vec<flowgate_proto::v1::Flow>| FlowBatch {
        schema_version: SchemaVersion::V1 as i32,
        probe_id: "p".into(),
        node: "node-a".into(),
        sequence,
        flows,
        losses: Some(flowgate_proto::v1::LossReport {
            ringbuf_lost_events: 7,
            ..Default::default()
        }),
    };
    let mut short_ip = good.clone();
    short_ip[2].src_ip = vec![10, 2, 0];
    let mut no_protocol = good.clone();
    no_protocol[0].protocol = 0;
    let mut old_schema = batch(3, good.clone());
    old_schema.schema_version = 0;
    let too_many = batch(4, good.iter().cycle().take(101).cloned().collect());
    let sent = vec![
        batch(1, short_ip),
        batch(2, no_protocol),
        old_schema,
        too_many,
        batch(5, good.clone()),
    ];
    let acks = grpc.stream(tokio_stream::iter(sent)).await?.into_inner();
    let acks: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        futures::StreamExt::collect::<Vec<_>>(acks),
    )
    .await?;
    let acks: Vec<_> = acks.into_iter().collect::<Result<_, _>>()?;
    let view: Vec<(u64, i32, &str)> = acks
        .iter()
        .map(|a| (a.sequence, a.status, a.reason.as_str()))
        .collect();
    assert_eq!(view.len(), 5, "{view:?}");
    let rejected = AckStatus::Rejected as i32;
    assert_eq!((view[0].0, view[0].1), (1, rejected));
    assert!(
        view[0].2.contains("flow 2") && view[0].2.contains("src_ip has 3 bytes"),
        "{}",
        view[0].2
    );
    assert_eq!(view[1].1, rejected);
    assert!(
        view[1].2.contains("flow 0: protocol is unspecified"),
        "{}",
        view[1].2
    );
    assert_eq!(view[2].1, rejected);
    assert!(view[2].2.contains("schema_version 0"), "{}", view[2].2);
    assert_eq!(view[3].1, rejected);
    assert!(
        view[3].2.contains("101 flows") && view[3].2.contains("limit is 100"),
        "{}",
        view[3].2
    );
    assert_eq!(
        (view[4].0, view[4].1, acks[4].flows_stored),
        (5, AckStatus::Stored as i32, 7)
    );

    let metrics = client_text(&format!("http://{}/metrics", collector.http_addr())).await?;
    for want in [
        "flowgate_collector_batches_rejected_total{reason=\"malformed\"} 2",
        "flowgate_collector_batches_rejected_total{reason=\"schema_version\"} 1",
        "flowgate_collector_batches_rejected_total{reason=\"too_large\"} 1",
        "flowgate_collector_flows_ingested_total 7",
        "flowgate_collector_probe_losses_total{node=\"node-a\",kind=\"ringbuf_lost_events\"} 7",
        "flowgate_collector_enforcement_mismatches_total 2",
    ] {
        assert!(metrics.contains(want), "metrics lack {want:?}:\n{metrics}");
    }
    // Five batches carried the same report: the loss is counted once, and
    // the dashboard's window view names the node.
    let losses = client::http_json(
        http::Method::GET,
        &format!("http://{}/api/v1/losses?since=1h", collector.http_addr()),
        None,
    )
    .await?;
    assert_eq!(losses["total"], 7, "{losses}");
    assert_eq!(
        losses["losses"],
        json!([{"node": "node-a", "kind": "ringbuf_lost_events", "count": 7, "time_ns": losses["losses"][0]["time_ns"]}]),
        "{losses}"
    );
    collector.shutdown().await?;
    Ok(())
}

/// An Admin-tier allowlist by DNS name: the collector judges each flow
/// against the name the probe saw the pod resolve for its destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_names_are_judged_against_the_flows_dns_names() -> Result<()> {
    let cluster = tempfile::tempdir()?;
    std::fs::copy(
        fixture("cluster/shop.yaml"),
        cluster.path().join("shop.yaml"),
    )?;
    std::fs::write(
        cluster.path().join("allowlist.yaml"),
        "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: egress-allowlist}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {team: shop}}}
  egress:
  - {name: apis, action: Allow, to: [{domainNames: [\"*.example.com\"]}], ports: [{portNumber: {protocol: TCP, port: 443}}]}
  - {name: internet, action: Deny, to: [{networks: [203.0.113.0/24]}]}
",
    )?;
    let data = tempfile::tempdir()?;
    let mut config = Config::new(
        ClusterSource::Files(vec![cluster.path().to_path_buf()]),
        data.path().to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    let collector = flowgate_collector::run(config).await?;

    let text = "
- {src: 10.1.0.10, dst: 203.0.113.7, src_port: 40001, dst_port: 443, node: node-a, ago: 1m}
- {src: 10.1.0.10, dst: 203.0.113.7, src_port: 40002, dst_port: 443, node: node-a, ago: 1m}
- {src: 10.1.0.10, dst: 203.0.113.7, src_port: 40003, dst_port: 443, node: node-a, ago: 1m}
- {src: 203.0.113.7, dst: 10.1.0.10, src_port: 443, dst_port: 40001, node: node-a, direction: ingress, is_reply: true, ago: 1m}
";
    let mut flows = replay::to_flows(
        "dns.yaml",
        &replay::parse("dns.yaml", text)?,
        flowgate_collector::now_ns(),
    )?;
    flows[0].dst_dns_name = "api.example.com".into();
    flows[1].dst_dns_name = "example.com".into();
    // flows[2]: an address the pod never looked up.
    flows[3].src_dns_name = "api.example.com".into();
    let grpc = format!("http://{}", collector.grpc_addr());
    client::send_batches(&grpc, replay::batches("node-a/p", "node-a", flows, 10)).await?;

    let http = format!("http://{}", collector.http_addr());
    let answer = client::query(
        &http,
        "SELECT src_port, dst_port, verdict, egress_tier, decided_by FROM flows ORDER BY src_port, dst_port",
    )
    .await?;
    let rows = answer["rows"].as_array().context("rows")?;
    let view: Vec<(u64, u64, String, String, Vec<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["src_port"].as_u64().unwrap_or(0),
                r["dst_port"].as_u64().unwrap_or(0),
                r["verdict"].as_str().unwrap_or_default().to_owned(),
                r["egress_tier"].as_str().unwrap_or_default().to_owned(),
                strings(&r["decided_by"]),
            )
        })
        .collect();
    let apis = vec!["admin/egress-allowlist/egress/apis".to_owned()];
    let internet = vec!["admin/egress-allowlist/egress/internet".to_owned()];
    assert_eq!(
        view,
        vec![
            // The reply, judged as its connection with the server's name.
            (443, 40001, "allowed".into(), "admin".into(), apis.clone()),
            (40001, 443, "allowed".into(), "admin".into(), apis),
            // `*.example.com` is not example.com itself.
            (
                40002,
                443,
                "denied".into(),
                "admin".into(),
                internet.clone()
            ),
            // No name known: the Allow rule cannot match.
            (40003, 443, "denied".into(), "admin".into(), internet),
        ],
        "{rows:#?}"
    );
    collector.shutdown().await?;
    Ok(())
}

async fn client_text(url: &str) -> Result<String> {
    // /metrics is text, not JSON: read it with a plain TCP request.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().context("authority")?.as_str().to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await?;
    stream
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
                uri.path()
            )
            .as_bytes(),
        )
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}
