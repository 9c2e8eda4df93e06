//! The trust story through the binary, as an operator runs it: `flowgate
//! certs` makes the certificates, the collector requires client
//! certificates on gRPC and a token on the API, `flowgate replay` streams
//! over mutual TLS (and is refused without it, or for another node), and
//! `flowgate query` reads with the token (and is refused without it).

use std::path::Path;

use anyhow::{Context, Result, ensure};

mod support;
use support::{Collector, flowgate, succeed};

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web/tests/fixtures"
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn replay_streams_over_mutual_tls_and_query_reads_with_a_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().context("path")?;
    succeed(&[
        "certs",
        "--out",
        certs_dir,
        "--collector-dns",
        "127.0.0.1",
        "--probe-node",
        "node-a",
    ])?;
    let pem = |name: &str| certs.join(name).display().to_string();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# who may read flows\ns3cret-token\n")?;
    let collector = Collector::start_with(
        &fixtures().join("cluster.yaml"),
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &pem("collector.pem"),
            "--tls-key",
            &pem("collector-key.pem"),
            "--client-ca",
            &pem("ca.pem"),
            "--api-token-file",
            tokens.to_str().context("path")?,
        ],
    )?;
    let grpc = collector.grpc.replacen("http://", "https://", 1);
    let flows = fixtures().join("flows.yaml");
    let flows = flows.to_str().context("path")?;
    let replay = |node: &str, tls: bool| {
        let mut args = vec!["replay", flows, "--collector", &grpc, "--node", node];
        let (ca, cert, key) = (
            pem("ca.pem"),
            pem("probe-node-a.pem"),
            pem("probe-node-a-key.pem"),
        );
        if tls {
            args.extend(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
            flowgate(&args)
        } else {
            let plain = collector.grpc.clone();
            flowgate(&["replay", flows, "--collector", &plain, "--node", node])
        }
    };

    let out = replay("node-a", true)?;
    ensure!(
        out.status.success() && text(&out.stdout).contains("; "),
        "replay over mTLS as node-a: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // "sent N flows in B batches; S stored": every flow of the fixture.
    let sent = text(&out.stdout);
    let stored = sent
        .split("; ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .context("replay's summary")?
        .to_owned();
    ensure!(
        sent.starts_with(&format!("sent {stored} flows")),
        "not every flow was stored: {sent}"
    );
    let other = replay("node-b", true)?;
    ensure!(
        !other.status.success() && text(&other.stderr).contains("node-b"),
        "node-a's certificate must not vouch for node-b: {}{}",
        text(&other.stdout),
        text(&other.stderr)
    );
    let plain = replay("node-a", false)?;
    ensure!(
        !plain.status.success(),
        "a plaintext replay reached a collector that requires client certificates: {}",
        text(&plain.stdout)
    );

    let sql = "SELECT count(*) AS n FROM flows";
    let refused = flowgate(&["query", "--collector-http", &collector.http, sql])?;
    ensure!(
        !refused.status.success() && text(&refused.stderr).contains("401"),
        "a query without the token: {}{}",
        text(&refused.stdout),
        text(&refused.stderr)
    );
    let answer = succeed(&[
        "query",
        "--collector-http",
        &collector.http,
        "--token-file",
        tokens.to_str().context("path")?,
        sql,
    ])?;
    ensure!(answer.contains(&stored), "the stored flows: {answer}");
    // As the README has it: the token file named in the environment.
    let by_env = std::process::Command::new(support::FLOWGATE)
        .args(["query", "--collector-http", &collector.http, sql])
        .env("FLOWGATE_API_TOKEN_FILE", &tokens)
        .env("RUST_LOG", "warn")
        .output()?;
    ensure!(
        by_env.status.success() && text(&by_env.stdout).contains(&stored),
        "query with FLOWGATE_API_TOKEN_FILE: {}{}",
        text(&by_env.stdout),
        text(&by_env.stderr)
    );
    Ok(())
}
