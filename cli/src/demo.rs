//! `flowgate demo`: a cluster in network namespaces, its NetworkPolicies
//! enforced by nftables, observed by the real probe and collector.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowgate_demo::nft::Enforcement;
use flowgate_demo::run::{
    Demo, DemoConfig, install_stop_signals, load_scenario, parse_duration, stop_requested,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scenario file (namespaces, pods, NetworkPolicies, traffic; see
    /// examples/default-scenario.yaml). Omitted: the built-in default scenario.
    #[arg(long, env = "FLOWGATE_DEMO_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Where the dashboard and the SQL API listen. Keep it on 127.0.0.1
    /// unless others should see the demo's flows.
    #[arg(
        long,
        env = "FLOWGATE_DEMO_HTTP_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    http_listen: SocketAddr,
    /// Stop and clean up after this long (e.g. `60s`, `10m`). Omitted: run
    /// until Ctrl-C.
    #[arg(long, env = "FLOWGATE_DEMO_DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Which policy features the nftables "CNI" enforces: `all`, `none`, or
    /// `without:FEATURE,…` (endPort, namedPorts, ipBlockExcept, egress,
    /// adminTier, baselineTier) to see what flowgate reports when a CNI
    /// leaves them out.
    #[arg(long, env = "FLOWGATE_DEMO_ENFORCE", default_value = "all")]
    enforce: Enforcement,
    /// Time between two rounds of the scenario's traffic. Shorter shows
    /// more flows and costs more CPU.
    #[arg(long, env = "FLOWGATE_DEMO_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Keep the collector's flow store here. Omitted: a temporary directory,
    /// removed on exit.
    #[arg(long, env = "FLOWGATE_DEMO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the demo writes the API's bearer token (mode 0600, owned by the
    /// user behind sudo; removed on exit). The API answers 401 without it.
    #[arg(long, env = "FLOWGATE_DEMO_API_TOKEN_FILE", default_value = flowgate_demo::trust::DEFAULT_TOKEN_FILE)]
    api_token_file: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let placed = load_scenario(args.scenario.as_deref())?;
    // Name a missing capability or kernel feature before building anything.
    flowgate_probe::preflight::check()
        .context("the demo runs the eBPF probe, which cannot start here")?;
    let config = DemoConfig {
        exe: std::env::current_exe().context("locating the flowgate binary")?,
        http_listen: args.http_listen,
        enforcement: args.enforce,
        interval: args.interval,
        data_dir: args.data_dir,
        token_file: args.api_token_file,
    };
    // Before anything is built: Ctrl-C during the start still cleans up.
    install_stop_signals()?;
    let mut demo = Demo::start(placed, &config)?;
    let token = demo.token_file().display().to_string();
    println!(
        "flowgate demo: {pods} pods, {streams} traffic streams, enforcement {enforce}; the probe streams over mutual TLS.\n  \
         The API wants the token in {token} (the dashboard asks for it once):\n    \
         export FLOWGATE_API_TOKEN_FILE={token}\n  \
         dashboard: http://{http}\n  \
         SQL:       flowgate query --collector-http http://{http} \"SELECT src_pod, dst_pod, dst_port, verdict, kernel_fate FROM flows LIMIT 20\"\n  \
         curl:      curl -s -H \"Authorization: Bearer $(cat {token})\" 'http://{http}/api/v1/explain?from=dev/tool&to=prod/backend&port=8080'\n  \
         Ctrl-C stops and cleans up.",
        pods = demo.placed().pods.len(),
        streams = demo.placed().flows.len(),
        enforce = describe(args.enforce),
        http = demo.http_addr(),
    );
    let deadline = args.duration.map(|d| Instant::now() + d);
    let outcome = loop {
        if stop_requested() || deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        if let Err(e) = demo.check_children() {
            break Err(e);
        }
        match demo.apply_due_changes() {
            Ok(applied) => {
                for change in applied {
                    println!("  scenario change: {change}");
                }
            }
            Err(e) => break Err(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stats = &demo.stats;
    tracing::info!(
        rounds = stats.rounds.load(Ordering::Relaxed),
        attempts = stats.attempts.load(Ordering::Relaxed),
        got_through = stats.got_through.load(Ordering::Relaxed),
        "demo stopped; cleaning up"
    );
    demo.stop();
    outcome.map_err(|e: flowgate_demo::DemoError| anyhow::anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

fn describe(e: Enforcement) -> String {
    if e == Enforcement::ALL {
        return "of every policy feature".into();
    }
    if !e.enabled {
        return "off (nothing is dropped)".into();
    }
    let left_out: Vec<&str> = [
        (e.end_port, "endPort"),
        (e.named_ports, "namedPorts"),
        (e.ip_block_except, "ipBlockExcept"),
        (e.egress, "egress"),
    ]
    .into_iter()
    .filter(|(on, _)| !on)
    .map(|(_, n)| n)
    .collect();
    format!("without {}", left_out.join(", "))
}
