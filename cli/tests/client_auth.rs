//! Every client command (`query`, `explain`, `blame`, `whatif`, `advise`)
//! reaches a collector started with `--api-token-file` through the one
//! shared `--collector-http`/`--token`/`--token-file` flag set: refused
//! with the collector's 401 without a token, answered with it from any of
//! the three sources, and a wrong token is refused too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Result, ensure};

mod support;
use support::{Collector, FLOWGATE, flowgate};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/suggest")
        .join(name)
}

fn run_with_env(args: &[&str], token: &str) -> Result<Output> {
    Ok(Command::new(FLOWGATE)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("FLOWGATE_API_TOKEN", token)
        .output()?)
}

#[test]
fn every_client_command_sends_the_api_token() -> Result<()> {
    let data = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "s3cret\n")?;
    let token_path = token_file.to_str().unwrap_or_default();
    let narrow = dir.path().join("narrow.yaml");
    std::fs::write(
        &narrow,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: web-allow-http, namespace: shop}\n\
         spec: {podSelector: {matchLabels: {app: web}}, ingress: []}\n",
    )?;
    let narrow = narrow.to_str().unwrap_or_default();
    let collector = Collector::start_with(
        &fixture("cluster"),
        data.path(),
        &["--api-token-file", token_path],
    )?;
    collector.replay(&fixture("flows.yaml"), &[])?;
    let http = collector.http.as_str();
    let connection = [
        "--from",
        "other/client",
        "--to",
        "shop/db-0",
        "--port",
        "5432",
    ];
    let mut commands: Vec<(&str, Vec<&str>)> = vec![
        ("query", vec!["query", "SELECT count(*) AS n FROM flows"]),
        ("explain", [&["explain"][..], &connection].concat()),
        (
            "explain --suggest",
            [
                &["explain"][..],
                &connection,
                &["--suggest", "--since", "1h"],
            ]
            .concat(),
        ),
        ("blame", [&["blame"][..], &connection].concat()),
        (
            "whatif",
            vec!["whatif", "--policies", narrow, "--since", "1h"],
        ),
        (
            "advise",
            vec!["advise", "--namespace", "shop", "--since", "1h"],
        ),
    ];
    for (name, args) in &mut commands {
        args.extend_from_slice(&["--collector-http", http]);
        let out = flowgate(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1) && err.contains("401"),
            "{name} without a token: {out:?}"
        );
        let wrong = flowgate(&[args.as_slice(), &["--token", "wrong"]].concat())?;
        ensure!(
            !wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"),
            "{name} with a wrong token: {wrong:?}"
        );
        for (how, out) in [
            (
                "--token",
                flowgate(&[args.as_slice(), &["--token", "s3cret"]].concat())?,
            ),
            (
                "--token-file",
                flowgate(&[args.as_slice(), &["--token-file", token_path]].concat())?,
            ),
            ("FLOWGATE_API_TOKEN", run_with_env(args, "s3cret")?),
        ] {
            ensure!(out.status.success(), "{name} with {how}: {out:?}");
            ensure!(!out.stdout.is_empty(), "{name} with {how} printed nothing");
        }
    }
    Ok(())
}
