//! `flowgate certs`: a CA, the collector's certificate and probe client
//! certificates, for the demo and clusters without cert-manager.

use std::path::PathBuf;
use std::process::ExitCode;

use flowgate_collector::certs::{CertsRequest, generate};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory for the PEM files (created if missing; keys are mode 0600
    /// and never overwritten).
    #[arg(long, env = "FLOWGATE_CERTS_OUT")]
    out: PathBuf,
    /// Names (DNS or IP) probes and API clients reach the collector by, e.g.
    /// `flowgate-collector.flowgate.svc`; the first is also its common name.
    #[arg(long = "collector-dns", value_name = "NAME", required = true, num_args = 1.., value_delimiter = ',')]
    collector_dns: Vec<String>,
    /// A client certificate is made for each node name: the collector
    /// accepts from it only flows of that node.
    #[arg(long = "probe-node", value_name = "NODE", num_args = 1.., value_delimiter = ',')]
    probe_node: Vec<String>,
    /// How long the certificates are valid, in days.
    #[arg(long, default_value_t = 365)]
    valid_days: u32,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = generate(&CertsRequest {
        out: args.out,
        collector_names: args.collector_dns,
        probe_nodes: args.probe_node,
        valid_days: args.valid_days,
    })?;
    println!(
        "CA:        {} (key {})",
        files.ca_cert.display(),
        files.ca_key.display()
    );
    println!(
        "collector: --tls-cert {} --tls-key {} --client-ca {}",
        files.collector_cert.display(),
        files.collector_key.display(),
        files.ca_cert.display()
    );
    for (node, cert, key) in &files.probes {
        println!(
            "probe {node}: --node-name {node} --tls-ca {} --tls-cert {} --tls-key {}",
            files.ca_cert.display(),
            cert.display(),
            key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
