//! `flowgate explain --suggest` as a user runs it: the real binary, offline
//! on cluster files, and against a running collector whose observed traffic
//! says what else each suggestion admits. Every first suggestion is applied
//! (its YAML added to the cluster files) and `flowgate explain` must then
//! say allowed; the collector's what-if of it must flip nothing beyond what
//! `also_admits` lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

mod support;
use support::{Collector, http, succeed};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/suggest")
        .join(name)
}

fn cluster() -> String {
    fixture("cluster").to_string_lossy().into_owned()
}

/// `flowgate explain --output json` over the cluster files plus `extra`.
fn explain_offline(extra: &[&Path], from: &str, to: &str, port: u16) -> Result<Value> {
    let cluster = cluster();
    let port = port.to_string();
    let mut args = vec!["explain", "--cluster", &cluster];
    let extra: Vec<String> = extra
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for e in &extra {
        args.extend(["--cluster", e]);
    }
    args.extend([
        "--from", from, "--to", to, "--port", &port, "--output", "json",
    ]);
    Ok(serde_json::from_str(&succeed(&args)?)?)
}

/// Applies the YAML as `kubectl apply` would: the widened policies replace
/// the same-named ones, which they contain, so adding them beside the
/// originals admits exactly the same.
fn allowed_with(yaml: &str, from: &str, to: &str, port: u16) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("suggestion.yaml");
    std::fs::write(&file, yaml)?;
    let v = explain_offline(&[&file], from, to, port)?;
    v["allowed"].as_bool().context("allowed")
}

fn others(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} -> {} {} {}",
                c["src"].as_str().unwrap_or("?"),
                c["dst"].as_str().unwrap_or("?"),
                c["protocol"].as_str().unwrap_or("?"),
                c["port"]
            )
        })
        .collect()
}

#[test]
fn offline_suggestions_admit_the_connection_and_say_what_they_cannot_know() -> Result<()> {
    let cluster = cluster();
    let json_args = |port: &str| {
        vec![
            "explain",
            "--cluster",
            &cluster,
            "--from",
            "other/client",
            "--to",
            "shop/db-0",
            "--port",
            port,
            "--suggest",
            "--output",
            "json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for port in [5432u16, 6379] {
        let args = json_args(&port.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v: Value = serde_json::from_str(&succeed(&args)?)?;
        ensure!(v["explanation"]["allowed"] == false, "{v:#}");
        let list = v["suggestions"].as_array().context("suggestions")?;
        ensure!(!list.is_empty(), "{v:#}");
        ensure!(
            v["note"]
                .as_str()
                .is_some_and(|n| n.contains("also_admits not computed")),
            "{v:#}"
        );
        for s in list {
            ensure!(
                s.get("also_admits").is_none(),
                "offline has no observed traffic: {s:#}"
            );
            let yaml = s["yaml"].as_str().context("yaml")?;
            ensure!(
                allowed_with(yaml, "other/client", "shop/db-0", port)?,
                "not admitted by:\n{yaml}"
            );
            ensure!(
                !yaml.contains("10.2.0.5") && !yaml.contains("name: client\n"),
                "names the pod:\n{yaml}"
            );
        }
    }
    // The text: the explanation, then the suggestions with their YAML.
    let text = succeed(&[
        "explain",
        "--cluster",
        &cluster,
        "--from",
        "other/client",
        "--to",
        "shop/db-0",
        "--port",
        "5432",
        "--suggest",
    ])?;
    ensure!(text.starts_with("DENIED"), "{text}");
    ensure!(text.contains("Suggestions (best first):"), "{text}");
    ensure!(text.contains("1. to admit other/client → shop/db-0 TCP 5432: widen shop/db-allow-web ingress rule 0: add the peer pods app=client in namespace other."), "{text}");
    ensure!(
        text.contains("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"),
        "{text}"
    );
    ensure!(text.contains("(also_admits not computed"), "{text}");
    // Allowed already: nothing to change.
    let text = succeed(&[
        "explain",
        "--cluster",
        &cluster,
        "--from",
        "shop/web-7d4b9c8f6-x2x9q",
        "--to",
        "shop/db-0",
        "--port",
        "5432",
        "--suggest",
    ])?;
    ensure!(
        text.contains("No suggestion: the connection is already allowed"),
        "{text}"
    );
    Ok(())
}

#[test]
fn with_a_collector_each_suggestion_says_what_else_it_admits_and_the_whatif_agrees() -> Result<()> {
    let data = tempfile::tempdir()?;
    let collector = Collector::start(&fixture("cluster"), data.path())?;
    collector.replay(&fixture("flows.yaml"), &[])?;
    let denied = [
        ("other/client", "shop/db-0", 5432u16),
        ("other/client-2", "shop/db-0", 5432),
        ("other/client", "shop/db-0", 6379),
    ];
    for (from, to, port) in denied {
        let port_text = port.to_string();
        let out = succeed(&[
            "explain",
            "--collector-http",
            &collector.http,
            "--from",
            from,
            "--to",
            to,
            "--port",
            &port_text,
            "--suggest",
            "--since",
            "1h",
            "--output",
            "json",
        ])?;
        let v: Value = serde_json::from_str(&out)?;
        ensure!(v["explanation"]["allowed"] == false, "{v:#}");
        ensure!(
            v["connections_judged"].as_u64() == Some(5),
            "five distinct connections were observed: {v:#}"
        );
        let list = v["suggestions"].as_array().context("suggestions")?;
        ensure!(!list.is_empty(), "{v:#}");
        let first = &list[0];
        let yaml = first["yaml"].as_str().context("yaml")?;
        ensure!(
            allowed_with(yaml, from, to, port)?,
            "{from} -> {to} {port} not admitted by:\n{yaml}"
        );
        // The what-if of the same change over the same window.
        let body = json!({"policies_yaml": yaml, "since": "1h"}).to_string();
        let (status, answer) = http("POST", &collector.http, "/api/v1/whatif", Some(&body))?;
        ensure!(status == 200, "{answer}");
        let w: Value = serde_json::from_str(&answer)?;
        let target = format!("{from} -> {to} TCP {port}");
        let mut newly = others(&w["newly_allowed"]);
        ensure!(
            newly.remove(&target),
            "the what-if does not admit {target}: {w:#}"
        );
        ensure!(
            newly == others(&first["also_admits"]),
            "also_admits {} vs what-if {newly:?}",
            first["also_admits"]
        );
        ensure!(
            others(&w["newly_denied"]) == others(&first["also_denies"]),
            "{w:#}"
        );
        // Ranked: nothing admits fewer other observed connections.
        let radius = |s: &Value| s["also_admits"].as_array().map_or(usize::MAX, Vec::len);
        ensure!(list.iter().all(|s| radius(s) >= radius(first)), "{v:#}");
    }
    // One client's fix admits its replica too, and says so.
    let text = succeed(&[
        "explain",
        "--collector-http",
        &collector.http,
        "--from",
        "other/client",
        "--to",
        "shop/db-0",
        "--port",
        "5432",
        "--suggest",
        "--since",
        "1h",
    ])?;
    ensure!(
        text.contains(
            "also admits 1 other observed connection(s): other/client-2 → shop/db-0 TCP 5432"
        ),
        "{text}"
    );
    // Each miss once: on its own line, not also inside the direction's reason.
    ensure!(
        text.matches("ingress rule 0 is the nearest miss").count() == 1,
        "{text}"
    );

    // The API's own errors name the problem.
    for (query, message) in [
        (
            "from=other/client&to=shop/db-0&port=5432&suggest=maybe",
            "suggest=\"maybe\": expected true or false",
        ),
        (
            "from=other/client&to=shop/db-0&port=5432&suggest=true&at=1h",
            "cannot be combined with at",
        ),
        (
            "from=other/client&to=shop/db-0&port=5432&since=1h",
            "since is the window of suggest=true",
        ),
        (
            "from=other/client&to=shop/db-0&port=5432&suggest=true&since=yesterday",
            "since=\"yesterday\"",
        ),
    ] {
        let (status, body) = http(
            "GET",
            &collector.http,
            &format!("/api/v1/explain?{query}"),
            None,
        )?;
        let error: Value = serde_json::from_str(&body)?;
        ensure!(
            status == 400 && error["error"].as_str().is_some_and(|e| e.contains(message)),
            "{query}: {status} {body}"
        );
    }
    Ok(())
}
