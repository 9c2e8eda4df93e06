//! `flowgate replay`: send known flows from a file to a collector exactly as
//! a probe would (the file format is documented in
//! `flowgate_client::replay`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flowgate_client::replay;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// YAML or JSON file: a list of flows (src, dst, ports, protocol,
    /// packets, bytes, kernel_fate, drop_reason, ago, duration…).
    file: PathBuf,
    /// The collector's gRPC address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:4245",
        env = "FLOWGATE_COLLECTOR"
    )]
    collector: String,
    /// Flows per batch.
    #[arg(long, default_value_t = 1000, env = "FLOWGATE_REPLAY_BATCH")]
    batch_size: usize,
    /// Probe identity the batches carry (deduplication is per probe id and
    /// sequence; the default is unique per run).
    #[arg(long, env = "FLOWGATE_REPLAY_PROBE_ID")]
    probe_id: Option<String>,
    /// Node name put on flows that do not name one.
    #[arg(long, default_value = "replay", env = "FLOWGATE_REPLAY_NODE")]
    node: String,
    /// CA (PEM) that signed the collector's certificate: speak TLS (use an
    /// `https://` collector URL), as a probe does.
    #[arg(long, env = "FLOWGATE_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a collector started with --client-ca;
    /// its names must include --node.
    #[arg(long, env = "FLOWGATE_TLS_CERT", value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FLOWGATE_TLS_KEY", value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {name}"))?;
    let flows = replay::to_flows(
        &name,
        &replay::parse(&name, &text)?,
        flowgate_collector::now_ns(),
    )?;
    let probe_id = args.probe_id.unwrap_or_else(|| {
        format!(
            "replay-{}-{}",
            std::process::id(),
            flowgate_collector::now_ns()
        )
    });
    let count = flows.len();
    let batches = replay::batches(&probe_id, &args.node, flows, args.batch_size);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tls = args
        .tls_ca
        .as_deref()
        .map(|ca| {
            let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
            flowgate_client::grpc_tls(ca, identity)
        })
        .transpose()?;
    let acks = runtime.block_on(flowgate_client::send_batches_with(
        &args.collector,
        tls,
        batches,
    ))?;
    let stored: u64 = acks.iter().map(|a| u64::from(a.flows_stored)).sum();
    println!(
        "sent {count} flows in {} batches; {stored} stored",
        acks.len()
    );
    Ok(ExitCode::SUCCESS)
}
