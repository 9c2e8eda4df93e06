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
    // A pod that moves to another address is recorded too.
    std::fs::write(
        files.path().join("cluster.yaml"),
        CLUSTER.replace("10.244.1.5", "10.244.1.7"),
    )?;
    wait_for_row(
        &collector.http,
        "SELECT 1 FROM label_history WHERE name = 'web' AND array_has(after_ips, '10.244.1.7')",
    )?;
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
        "SELECT kind, namespace, name, before_labels, after_labels, before_ips, after_ips \
         FROM label_history ORDER BY kind, name, time",
    )?;
    ensure!(labels.len() == 4, "{labels:#?}");
    ensure!(
        labels[0]["kind"] == "Namespace" && labels[0]["after_labels"] == r#"{"team":"a"}"#,
        "{labels:#?}"
    );
    ensure!(
        labels[1]["name"] == "db" && labels[1]["before_labels"].is_null(),
        "{labels:#?}"
    );
    // web: created, then moved from .5 to .7 with the same labels.
    ensure!(
        labels[3]["name"] == "web"
            && labels[3]["before_ips"] == serde_json::json!(["10.244.1.5"])
            && labels[3]["after_ips"] == serde_json::json!(["10.244.1.7"])
            && labels[3]["before_labels"] == labels[3]["after_labels"],
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
        detail
            == "prod/db-ingress ingress rule 0 lost the peer namespaceSelector team=a; \
                prod/db-ingress ingress rule 0 gained the peer namespaceSelector team=b",
        "{detail}"
    );
    let text = blame("prod/db", "prod/web", "text")?;
    ensure!(
        text.contains("allowed now") && text.contains("no change"),
        "{text}"
    );
    Ok(())
}

/// `explain --collector-http` and `blame` send the API token, from
/// `--token`, `--token-file` or `FLOWGATE_API_TOKEN`, like `query` does.
#[test]
fn explain_and_blame_send_the_api_token() -> Result<()> {
    let data = tempfile::tempdir()?;
    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("cluster.yaml"), CLUSTER)?;
    std::fs::write(files.path().join("policy.yaml"), policy("a"))?;
    let token_file = files.path().join("tokens");
    std::fs::write(&token_file, "s3cret\n")?;
    let token_path = token_file.to_str().unwrap_or_default();
    let collector =
        Collector::start_with(files.path(), data.path(), &["--api-token-file", token_path])?;
    let http = collector.http.as_str();
    let ask = [
        "--collector-http",
        http,
        "--from",
        "prod/web",
        "--to",
        "prod/db",
        "--port",
        "5432",
    ];
    for command in ["explain", "blame"] {
        let mut args = vec![command];
        args.extend_from_slice(&ask);
        let out = support::flowgate(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("401"),
            "{command} without a token: {out:?}"
        );
        let mut with_token = args.clone();
        with_token.extend_from_slice(&["--token", "s3cret"]);
        let out = succeed(&with_token)?;
        ensure!(
            out.contains("ALLOWED") || out.contains("allowed now"),
            "{out}"
        );
        let mut with_file = args.clone();
        with_file.extend_from_slice(&["--token-file", token_path]);
        succeed(&with_file)?;
        let out = std::process::Command::new(support::FLOWGATE)
            .args(&args)
            .env("FLOWGATE_API_TOKEN", "s3cret")
            .output()?;
        ensure!(
            out.status.success(),
            "{command} with FLOWGATE_API_TOKEN: {out:?}"
        );
    }
    Ok(())
}

/// The demo's `changes:` against the file-watching collector: the default
/// scenario narrows prod/allow-same-namespace at 1m and puts it back at 2m.
/// The schedule is driven with chosen times (no waiting for minutes); the
/// collector sees each cluster file as the demo writes it. Blame names the
/// edit that broke frontend → backend, rule by rule, then the fix, and says
/// "no change" for a connection the edits never flipped.
#[test]
fn blame_names_the_demo_change_that_broke_a_connection() -> Result<()> {
    use flowgate_demo::changes::{Schedule, write_cluster};
    let placed = flowgate_demo::run::load_scenario(None)?;
    let data = tempfile::tempdir()?;
    let files = tempfile::tempdir()?;
    write_cluster(files.path(), &placed.cluster_yaml)?;
    let collector = Collector::start_with(files.path(), data.path(), &["--cluster-poll", "100ms"])?;
    let http = collector.http.as_str();
    let mut schedule = Schedule::new(files.path().to_path_buf());
    let blame = |from: &str, to: &str, port: &str| -> Result<serde_json::Value> {
        let out = succeed(&[
            "blame",
            "--collector-http",
            http,
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "--output",
            "json",
        ])?;
        Ok(serde_json::from_str(&out)?)
    };
    let modified = |n: usize| {
        wait_for_row(
            http,
            &format!(
                "SELECT 1 FROM (SELECT count(*) AS n FROM policy_history \
                 WHERE name = 'allow-same-namespace' AND change = 'modified') WHERE n = {n}"
            ),
        )
    };
    ensure!(
        schedule
            .apply_due(&placed, Duration::from_secs(59))?
            .is_empty()
    );

    let applied = schedule.apply_due(&placed, Duration::from_secs(60))?;
    ensure!(applied.len() == 1, "{applied:?}");
    modified(1)?;
    let json = blame("prod/frontend", "prod/backend", "8080")?;
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
            && cause["name"] == "allow-same-namespace"
            && cause["change"] == "modified",
        "{json:#}"
    );
    ensure!(
        cause["detail"]
            == "prod/allow-same-namespace ingress rule 0 lost the peer podSelector {} (all); \
                prod/allow-same-namespace ingress rule 0 gained the peer podSelector app=backend",
        "{json:#}"
    );
    // prod → shop never depended on allow-same-namespace.
    let json = blame("prod/frontend", "shop/cart", "8000")?;
    ensure!(
        json["verdict_now"] == "allowed" && json["changes"] == serde_json::json!([]),
        "{json:#}"
    );
    let text = succeed(&[
        "blame",
        "--collector-http",
        http,
        "--from",
        "prod/frontend",
        "--to",
        "shop/cart",
        "--port",
        "8000",
    ])?;
    ensure!(text.contains("no change"), "{text}");

    let applied = schedule.apply_due(&placed, Duration::from_secs(600))?;
    ensure!(applied.len() == 1 && schedule.done(&placed), "{applied:?}");
    modified(2)?;
    let json = blame("prod/frontend", "prod/backend", "8080")?;
    let flips: Vec<(String, String)> = json["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["before"].to_string(), c["after"].to_string()))
        .collect();
    ensure!(
        json["verdict_now"] == "allowed"
            && flips
                == [
                    ("\"allowed\"".into(), "\"denied\"".into()),
                    ("\"denied\"".into(), "\"allowed\"".into())
                ],
        "{json:#}"
    );
    Ok(())
}
