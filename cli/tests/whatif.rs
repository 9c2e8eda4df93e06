//! `flowgate whatif` and `POST /api/v1/whatif` against a running collector
//! with replayed flows: fixtures with known newly denied and newly allowed
//! sets, `--fail-on-breakage`'s exit status, and bad input refused by name.
//!
//! The cluster and flows are the collector's end-to-end fixtures: six
//! distinct connections (web → db:5432 seen with its replies, other/client →
//! db on 5432, 6379 and 5433, other/client → web:80, web → 8.8.8.8:53/UDP).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

mod support;
use support::{Collector, flowgate, http};

const WEB: &str = "shop/web-7d4b9c8f6-x2x9q";
const DB: &str = "shop/db-0";
const CLIENT: &str = "other/client";

fn path(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn fixture(name: &str) -> String {
    path("tests/fixtures/whatif")
        .join(name)
        .display()
        .to_string()
}

fn start() -> Result<(tempfile::TempDir, Collector)> {
    let data = tempfile::tempdir()?;
    let collector = Collector::start(&path("../collector/tests/fixtures/cluster"), data.path())?;
    collector.replay(&path("../collector/tests/fixtures/e2e-flows.yaml"), &[])?;
    Ok((data, collector))
}

/// `flowgate whatif ARGS --output json`: the exit status and the answer.
fn whatif(c: &Collector, args: &[&str]) -> Result<(i32, Value, String)> {
    let mut all = vec!["whatif", "--collector-http", &c.http, "--output", "json"];
    all.extend_from_slice(args);
    let out = flowgate(&all)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().context("killed by a signal")?;
    let answer = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)?
    };
    Ok((code, answer, stderr))
}

fn set(answer: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = answer[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} -> {} {}/{}",
                c["src"].as_str().unwrap_or("?"),
                c["dst"].as_str().unwrap_or("?"),
                c["port"],
                c["protocol"].as_str().unwrap_or("?")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn whatif_reports_known_sets_and_gates_on_breakage() -> Result<()> {
    let (_data, c) = start()?;

    // Egress isolation of web: its DNS breaks, nothing else flips.
    let (code, a, err) = whatif(&c, &["--policies", &fixture("web-egress.yaml")])?;
    ensure!(code == 0, "{err}");
    assert_eq!(a["connections_judged"], 6, "{a:#}");
    assert_eq!(
        set(&a, "newly_denied"),
        [format!("{WEB} -> 8.8.8.8 53/UDP")]
    );
    assert!(set(&a, "newly_allowed").is_empty(), "{a:#}");
    let denial = &a["newly_denied"][0]["denied_by"][0];
    assert_eq!(denial["direction"], "egress");
    assert_eq!(denial["policies"], json!(["shop/web-egress"]));
    assert!(
        denial["nearest_misses"][0]["nearest"].is_object(),
        "{denial:#}"
    );
    assert!(a["newly_denied"][0]["last_seen"].as_str().is_some());

    // The same with --fail-on-breakage: exit 3.
    let (code, _, _) = whatif(
        &c,
        &[
            "--policies",
            &fixture("web-egress.yaml"),
            "--fail-on-breakage",
        ],
    )?;
    assert_eq!(code, 3);

    // A replaced policy flips both ways. web -> db was seen twice (the
    // connection and its replies, one connection).
    let (_, a, _) = whatif(&c, &["--policies", &fixture("db-from-other.yaml")])?;
    assert_eq!(set(&a, "newly_denied"), [format!("{WEB} -> {DB} 5432/TCP")]);
    assert_eq!(a["newly_denied"][0]["flows"], 2, "{a:#}");
    assert_eq!(
        set(&a, "newly_allowed"),
        [
            format!("{CLIENT} -> {DB} 5432/TCP"),
            format!("{CLIENT} -> {DB} 6379/TCP")
        ]
    );

    // A delete: db is still isolated by default-deny.
    let (_, a, _) = whatif(&c, &["--delete", "shop/db-allow-web"])?;
    assert_eq!(set(&a, "newly_denied"), [format!("{WEB} -> {DB} 5432/TCP")]);
    assert_eq!(
        a["newly_denied"][0]["denied_by"][0]["policies"],
        json!(["shop/default-deny"])
    );

    // A change that flips nothing: exit 0 even
    // when gating.
    let (code, a, err) = whatif(
        &c,
        &[
            "--policies",
            &fixture("harmless.yaml"),
            "--fail-on-breakage",
        ],
    )?;
    ensure!(code == 0, "{err}");
    assert!(set(&a, "newly_denied").is_empty() && set(&a, "newly_allowed").is_empty());

    // A window that holds none of the flows judges nothing.
    let (_, a, _) = whatif(
        &c,
        &["--policies", &fixture("web-egress.yaml"), "--since", "1s"],
    )?;
    assert_eq!(a["connections_judged"], 0, "{a:#}");

    // Text output for a person.
    let out = support::succeed(&[
        "whatif",
        "--collector-http",
        &c.http,
        "--policies",
        &fixture("db-from-other.yaml"),
    ])?;
    assert!(out.contains("1 newly denied, 2 newly allowed"), "{out}");
    assert!(out.contains(&format!("{WEB} → {DB} TCP 5432")), "{out}");
    Ok(())
}

#[test]
fn bad_input_is_refused_by_name() -> Result<()> {
    let (_data, c) = start()?;
    let cases: [(&[&str], &str); 5] = [
        (&["--delete", "shop/nope"], "shop/nope"),
        (&["--delete", "nope"], "namespace/name"),
        (
            &["--policies", &fixture("not-a-policy.yaml")],
            "ConfigMap shop/settings",
        ),
        (&["--policies", &fixture("bad.yaml")], "bad.yaml"),
        (&[], "nothing to judge"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = whatif(&c, args)?;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // The API says the same with 400.
    let post = |body: Value| http("POST", &c.http, "/api/v1/whatif", Some(&body.to_string()));
    let (status, text) = post(json!({"delete": ["shop/nope"]}))?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("shop/nope"), "{text}");
    let (status, text) = post(json!({"policies_yaml": "kind: Pod\nmetadata: {name: p}\n"}))?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Pod default/p"), "{text}");
    let (status, text) = post(json!({"delete": ["shop/db-allow-web"], "since": "yesterday"}))?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("since"), "{text}");
    let (status, text) = post(json!({"policy": "typo"}))?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("policy"), "{text}");

    // And a good request over the API: the JSON the issue names.
    let (status, text) = post(json!({"delete": ["shop/db-allow-web"], "since": "24h"}))?;
    assert_eq!(status, 200, "{text}");
    let a: Value = serde_json::from_str(&text)?;
    for key in [
        "since",
        "connections_judged",
        "newly_denied",
        "newly_allowed",
    ] {
        assert!(a.get(key).is_some(), "{key} missing: {a:#}");
    }
    let item = &a["newly_denied"][0];
    for key in [
        "src",
        "dst",
        "port",
        "protocol",
        "flows",
        "last_seen",
        "denied_by",
    ] {
        assert!(item.get(key).is_some(), "{key} missing: {item:#}");
    }
    Ok(())
}
