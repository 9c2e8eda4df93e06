//! `flowgate`: one binary for every part of flowgate. Each subcommand lives in
//! its own module here and calls into the crate that does the work.

use clap::{Parser, Subcommand};

mod advise;
mod blame;
mod certs;
mod collector;
mod demo;
mod explain;
mod http;
mod lint;
mod probe;
mod query;
mod replay;
mod whatif;

/// Kubernetes flow observability and NetworkPolicy audit: see every flow,
/// and why the policies in force allow or deny it.
#[derive(Debug, Parser)]
#[command(name = "flowgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decide whether NetworkPolicies allow a connection, and explain why.
    Explain(explain::Args),
    /// When a connection's verdict flipped and which cluster change did it,
    /// from a collector's recorded history.
    Blame(blame::Args),
    /// What a proposed policy change would newly deny or allow among the
    /// connections a collector observed; `--fail-on-breakage` exits 3.
    Whatif(whatif::Args),
    /// Least-privilege NetworkPolicies for a namespace from the traffic a
    /// collector observed, with the what-if of applying them as proof.
    Advise(advise::Args),
    /// Check NetworkPolicies against the best practices (default deny, stale
    /// selectors, ignored rules, DNS under egress isolation…); exits 1 on an error.
    Lint(lint::Args),
    /// Observe every packet on this node's pod interfaces with eBPF and
    /// stream flow records to the collector (run as root, one per node).
    Probe(probe::Args),
    /// Build a small cluster in network namespaces, enforce its policies with
    /// nftables, and watch flowgate observe it (run as root).
    Demo(demo::Args),
    /// Receive flows from every probe, judge them against the cluster's
    /// NetworkPolicies, store them, and serve SQL, the API and the dashboard.
    Collector(collector::Args),
    /// Run read-only SQL on a running collector and print the result table.
    Query(query::Args),
    /// Send known flows from a YAML/JSON file to a collector as a probe would.
    Replay(replay::Args),
    /// Create a CA, the collector's certificate and probe client
    /// certificates for mutual TLS (when cert-manager is not at hand).
    Certs(certs::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Explain(args) => explain::run(args),
        Command::Blame(args) => blame::run(args),
        Command::Whatif(args) => whatif::run(args),
        Command::Advise(args) => advise::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Collector(args) => collector::run(args),
        Command::Query(args) => query::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Certs(args) => certs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line naming the problem: the whole cause chain, no backtrace.
            eprintln!("flowgate: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (how Kubernetes stops a pod).
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        _ = term.recv() => tracing::info!("terminated: shutting down"),
    }
}

/// Logs go to stderr so that stdout stays machine-readable (`--output json`).
/// `RUST_LOG` picks the level; the default is `info`.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    /// Clap checks flag conflicts, requirements and flattened groups of
    /// every subcommand here, not only those a test happens to run.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
