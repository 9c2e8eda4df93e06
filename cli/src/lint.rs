//! `flowgate lint`: the cluster's NetworkPolicies against the best
//! practices, offline (CI pipelines run it on their manifests).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flowgate_policy::{Cluster, Finding, Severity};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    /// One block per finding, for a person.
    Text,
    /// `{"findings": [{"rule", "severity", "namespace", "policy"?, "message", "fix"}]}`.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A YAML/JSON file or a folder of them holding Namespaces, Pods and
    /// NetworkPolicies. Repeat to combine several. Selectors are checked
    /// against the pods and namespaces given: leave them out and every
    /// non-empty selector "matches nothing".
    #[arg(
        long,
        required = true,
        value_name = "FILE_OR_DIR",
        env = "FLOWGATE_CLUSTER",
        value_delimiter = ','
    )]
    cluster: Vec<PathBuf>,
    /// How to print the findings.
    #[arg(long, value_enum, default_value_t = Output::Text, env = "FLOWGATE_OUTPUT")]
    output: Output,
}

/// Exits 1 when a finding is an error, so a pipeline stops on it.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let objects = flowgate_policy::load_paths(&args.cluster).context("reading the cluster")?;
    let cluster = Cluster::build(&objects, 1).context("invalid cluster object")?;
    let findings = flowgate_policy::lint(&cluster);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))?
        ),
        Output::Text => print!("{}", render_text(&findings)),
    }
    Ok(if flowgate_policy::has_errors(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let place = match &f.policy {
            Some(p) => format!("{}/{p}", f.namespace),
            None => format!("namespace {}", f.namespace),
        };
        out.push_str(&format!(
            "{}[{}] {place}\n  {}\n  fix: {}\n",
            f.severity, f.rule, f.message, f.fix
        ));
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let n = |s: Severity, word: &str| match count(s) {
        1 => format!("1 {word}"),
        k => format!("{k} {word}s"),
    };
    out.push_str(&format!(
        "{}, {}, {}\n",
        n(Severity::Error, "error"),
        n(Severity::Warning, "warning"),
        n(Severity::Info, "note")
    ));
    out
}
