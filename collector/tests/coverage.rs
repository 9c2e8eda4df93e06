//! Policy coverage: `rule_hits` and `pod_isolation` in SQL and
//! `flowgate_policy_rule_flows_total` in the metrics, from flows sent as
//! probes send them, and bounded to the policies that exist: deleting a
//! policy file drops its series and rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flowgate_client::{self as client, replay};
use flowgate_collector::{ClusterSource, Config};
use serde_json::{Value, json};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

async fn start(cluster: &Path, data: &Path) -> Result<flowgate_collector::Collector> {
    let mut config = Config::new(
        ClusterSource::Files(vec![cluster.to_path_buf()]),
        data.to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.cluster_poll = Duration::from_millis(100);
    Ok(flowgate_collector::run(config).await?)
}

async fn rows(http: &str, sql: &str) -> Result<Value> {
    Ok(client::query(http, sql).await?["rows"].clone())
}

/// `/metrics` is text, not JSON: read it with a plain HTTP/1.1 request.
async fn metrics(http: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = http.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

fn series(policy: &str, rule: &str, n: u64) -> String {
    format!(
        "flowgate_policy_rule_flows_total{{namespace=\"shop\",policy=\"{policy}\",direction=\"ingress\",rule=\"{rule}\"}} {n}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_hits_pod_isolation_and_rule_metrics_follow_the_flows_and_the_policies() -> Result<()>
{
    let files = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let shop = std::fs::read_to_string(fixture("cluster/shop.yaml"))?;
    let cluster = files.path().join("shop.yaml");
    std::fs::write(&cluster, &shop)?;
    let collector = start(files.path(), data.path()).await?;
    let grpc = format!("http://{}", collector.grpc_addr());
    let http = format!("http://{}", collector.http_addr());

    let name = "e2e-flows.yaml";
    let text = std::fs::read_to_string(fixture(name))?;
    let flows = replay::to_flows(
        name,
        &replay::parse(name, &text)?,
        flowgate_collector::now_ns(),
    )?;
    client::send_batches(&grpc, replay::batches("p", "node-a", flows, 100)).await?;

    // web → db and its reply: one connection, two flows, through rule 0 of
    // db-allow-web; client → web on http through web-allow-http. default-deny
    // has no rule, so no row.
    let hits = rows(
        &http,
        "SELECT policy, direction, rule_index, connections, flows, first_hit IS NOT NULL AS hit \
         FROM rule_hits ORDER BY policy",
    )
    .await?;
    assert_eq!(
        hits,
        json!([
            {"policy": "db-allow-web", "direction": "ingress", "rule_index": 0, "connections": 1, "flows": 2, "hit": true},
            {"policy": "web-allow-http", "direction": "ingress", "rule_index": 0, "connections": 1, "flows": 1, "hit": true},
        ])
    );
    let isolation = rows(
        &http,
        "SELECT namespace, pod, ingress_isolated, egress_isolated, policies FROM pod_isolation ORDER BY pod",
    )
    .await?;
    assert_eq!(
        isolation,
        json!([
            {"namespace": "other", "pod": "client", "ingress_isolated": false, "egress_isolated": false, "policies": []},
            {"namespace": "shop", "pod": "db-0", "ingress_isolated": true, "egress_isolated": false,
             "policies": ["shop/db-allow-web", "shop/default-deny"]},
            {"namespace": "shop", "pod": "web-7d4b9c8f6-x2x9q", "ingress_isolated": true, "egress_isolated": false,
             "policies": ["shop/default-deny", "shop/web-allow-http"]},
        ])
    );

    // The three denied flows to db-0 (5432, 6379, 5433) count against both
    // policies isolating it, under rule="none".
    let text = metrics(&http).await?;
    for want in [
        series("db-allow-web", "0", 2),
        series("web-allow-http", "0", 1),
        series("db-allow-web", "none", 3),
        series("default-deny", "none", 3),
    ] {
        assert!(text.contains(&want), "metrics lack {want:?}:\n{text}");
    }
    assert!(
        !text.contains("direction=\"egress\""),
        "no policy isolates egress:\n{text}"
    );

    // db-allow-web deleted: its series and its rule_hits rows go with it.
    let without = shop
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: db-allow-web"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    std::fs::write(&cluster, without)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(&http).await?;
        if !text.contains("policy=\"db-allow-web\"") {
            assert!(text.contains(&series("web-allow-http", "0", 1)), "{text}");
            break;
        }
        if Instant::now() > deadline {
            bail!("db-allow-web's series outlived the policy:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = rows(&http, "SELECT policy FROM rule_hits").await?;
    assert_eq!(hits, json!([{"policy": "web-allow-http"}]));
    let db = rows(
        &http,
        "SELECT policies FROM pod_isolation WHERE pod = 'db-0'",
    )
    .await?;
    assert_eq!(
        db.get(0).context("db-0")?["policies"],
        json!(["shop/default-deny"])
    );
    collector.shutdown().await?;
    Ok(())
}

/// The SQL blocks of the README's "Policy coverage" section, in order.
fn readme_coverage_queries() -> Result<Vec<String>> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let section = readme
        .split("\n### ")
        .find(|s| s.starts_with("Policy coverage"))
        .context("README has no '### Policy coverage' section")?;
    Ok(section
        .split("```sql\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|sql| {
            sql.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect())
}

/// The README's example queries, run as written: a rule no flow went
/// through is a removal candidate, and a pod no policy isolates shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_coverage_queries_find_unused_rules_and_unprotected_pods() -> Result<()> {
    let queries = readme_coverage_queries()?;
    assert_eq!(queries.len(), 2, "{queries:#?}");
    let files = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    std::fs::copy(fixture("cluster/shop.yaml"), files.path().join("shop.yaml"))?;
    // A rule for a metrics port nothing ever scraped.
    std::fs::write(
        files.path().join("metrics.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: db-allow-metrics, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  \
         ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 9187}]}]\n",
    )?;
    let collector = start(files.path(), data.path()).await?;
    let grpc = format!("http://{}", collector.grpc_addr());
    let http = format!("http://{}", collector.http_addr());
    let name = "e2e-flows.yaml";
    let text = std::fs::read_to_string(fixture(name))?;
    let flows = replay::to_flows(
        name,
        &replay::parse(name, &text)?,
        flowgate_collector::now_ns(),
    )?;
    client::send_batches(&grpc, replay::batches("p", "node-a", flows, 100)).await?;

    assert_eq!(
        rows(&http, &queries[0]).await?,
        json!([{"namespace": "shop", "policy": "db-allow-metrics", "direction": "ingress", "rule_index": 0}])
    );
    assert_eq!(
        rows(&http, &queries[1]).await?,
        json!([{"namespace": "other", "pod": "client"}])
    );
    collector.shutdown().await?;
    Ok(())
}
