//! Versioned cluster state end to end: a collector on `--cluster DIR`
//! notices a policy file edited, records the change durably, judges under
//! the old state with `--at`, and keeps all of it across a restart.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail, ensure};

mod support;
use support::{Collector, sql, succeed};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: web}]}
status: {podIP: 10.244.1.5, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: db}]}
status: {podIP: 10.244.1.6, phase: Running}
"#;

fn policy(team: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db-ingress, namespace: prod}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: {team}}}}}}}]}}]
"#
    )
}

/// Polls `sql` until it returns a row: the collector checks its files
/// every second, so the change shows up within a few.
fn wait_for_row(http: &str, query: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !sql(http, query)?.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no row after 30s: {query}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn explain(http: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec![
        "explain",
        "--collector-http",
        http,
        "--from",
        "prod/web",
        "--to",
        "prod/db",
        "--port",
        "5432",
    ];
    args.extend_from_slice(extra);
    succeed(&args)
}

#[test]
fn a_policy_edit_is_recorded_judged_at_the_old_time_and_survives_a_restart() -> Result<()> {
    let data = tempfile::tempdir()?;
    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("cluster.yaml"), CLUSTER)?;
    let policy_file = files.path().join("policy.yaml");
    std::fs::write(&policy_file, policy("a"))?;

    let collector = Collector::start(files.path(), data.path())?;
    let now = explain(&collector.http, &[])?;
    ensure!(now.starts_with("ALLOWED"), "{now}");
    let before_edit = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();

    // The edit that breaks web → db: the peer now wants team=b.
    std::fs::write(&policy_file, policy("b"))?;
    wait_for_row(
        &collector.http,
        "SELECT 1 FROM policy_history WHERE name = 'db-ingress' AND change = 'modified'",
    )?;
    let now = explain(&collector.http, &[])?;
    ensure!(now.starts_with("DENIED"), "{now}");
    let then = explain(&collector.http, &["--at", &before_edit])?;
    ensure!(then.starts_with("ALLOWED"), "--at before the edit: {then}");
    check_history(&collector.http)?;
    check_blame(&collector.http)?;
    let generation_before = current_generation(&collector.http)?;
    collector.kill()?;

    // A restart reads the same files: nothing new to record, and the
    // history, old verdicts and generation numbering carry on.
    let collector = Collector::start(files.path(), data.path())?;
    check_history(&collector.http)?;
    let then = explain(&collector.http, &["--at", &before_edit])?;
    ensure!(then.starts_with("ALLOWED"), "--at after a restart: {then}");
    let now = explain(&collector.http, &[])?;
    ensure!(now.starts_with("DENIED"), "{now}");
    let generation_after = current_generation(&collector.http)?;
    ensure!(
        generation_after > generation_before,
        "generations restarted: {generation_before} then {generation_after}"
    );
    // Before anything was recorded there is no state to judge under.
    let out = support::flowgate(&[
        "explain",
        "--collector-http",
        &collector.http,
        "--from",
        "prod/web",
        "--to",
        "prod/db",
        "--port",
        "5432",
        "--at",
        "2000-01-01T00:00:00Z",
    ])?;
    ensure!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("history starts later"), "{err}");
    Ok(())
}

fn check_history(http: &str) -> Result<()> {
    let rows = sql(
        http,
        "SELECT generation, change, before_yaml, after_yaml FROM policy_history WHERE name = 'db-ingress' ORDER BY time",
    )?;
    ensure!(rows.len() == 2, "{rows:#?}");
    ensure!(
        rows[0]["change"] == "created" && rows[0]["before_yaml"].is_null(),
        "{rows:#?}"
    );
    ensure!(rows[1]["change"] == "modified", "{rows:#?}");
    let before = rows[1]["before_yaml"].as_str().unwrap_or_default();
    let after = rows[1]["after_yaml"].as_str().unwrap_or_default();
    ensure!(
        before.contains("team: a") && after.contains("team: b"),
        "{before}\n{after}"
    );
    ensure!(
        rows[1]["generation"].as_u64() > rows[0]["generation"].as_u64(),
        "{rows:#?}"
    );
    let labels = sql(
        http,
        "SELECT kind, namespace, name, before_labels, after_labels FROM label_history ORDER BY kind, name",
    )?;
    ensure!(labels.len() == 3, "{labels:#?}");
    ensure!(
        labels[0]["kind"] == "Namespace" && labels[0]["after_labels"] == r#"{"team":"a"}"#,
        "{labels:#?}"
    );
    ensure!(
        labels[1]["name"] == "db" && labels[1]["before_labels"].is_null(),
        "{labels:#?}"
    );
    Ok(())
}

fn current_generation(http: &str) -> Result<u64> {
    let (status, body) = support::http("GET", http, "/api/v1/policies", None)?;
    ensure!(status == 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["generation"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no generation: {body}"))
}

/// Blame names the edit that broke web → db, rule by rule, and says "no
/// change" for a connection whose verdict never flipped.
fn check_blame(http: &str) -> Result<()> {
    let blame = |from: &str, to: &str, output: &str| {
        succeed(&[
            "blame",
            "--collector-http",
            http,
            "--from",
            from,
            "--to",
            to,
            "--port",
            "5432",
            "--output",
            output,
        ])
    };
    let json: serde_json::Value = serde_json::from_str(&blame("prod/web", "prod/db", "json")?)?;
    ensure!(json["verdict_now"] == "denied", "{json:#}");
    let changes = json["changes"].as_array().cloned().unwrap_or_default();
    ensure!(changes.len() == 1, "{json:#}");
    ensure!(
        changes[0]["before"] == "allowed" && changes[0]["after"] == "denied",
        "{json:#}"
    );
    let cause = &changes[0]["causes"][0];
    ensure!(
        cause["kind"] == "NetworkPolicy"
            && cause["namespace"] == "prod"
            && cause["name"] == "db-ingress"
            && cause["change"] == "modified",
        "{json:#}"
    );
    let detail = cause["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("prod/db-ingress ingress rule 0 changed")
            && detail.contains("\"team\":\"a\"")
            && detail.contains("\"team\":\"b\""),
        "{detail}"
    );
    let text = blame("prod/db", "prod/web", "text")?;
    ensure!(
        text.contains("allowed now") && text.contains("no change"),
        "{text}"
    );
    Ok(())
}
