//! `flowgate explain --suggest` as a user runs it: the real binary, offline
//! on cluster files. Every suggestion is applied (its YAML added to the
//! cluster files) and `flowgate explain` must then say allowed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

mod support;
use support::succeed;

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
