//! `flowgate advise`: least-privilege NetworkPolicies for a namespace from
//! the connections a running collector observed, with their proof.

use std::process::ExitCode;

use serde_json::Value;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    /// The policies for `kubectl apply -f -`, the proof as leading comments.
    Yaml,
    /// `{"namespace", "since", "policies", "yaml", "admitted", "left_denied", "notes", "proof"}`.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The namespace to write policies for.
    #[arg(long, env = "FLOWGATE_NAMESPACE")]
    namespace: String,
    /// The window of observed traffic: a duration ago (`7d`) or RFC 3339.
    /// The collector's default (a week) when omitted.
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    api: crate::http::CollectorApi,
    #[arg(long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut query = vec![("namespace", args.namespace.clone())];
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    let answer = args.api.get("/api/v1/advise", &query)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Yaml => print!("{}", render(&answer)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The YAML, headed by the proof as comments (so the output still applies).
fn render(a: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let proof = &a["proof"];
    let count = |k: &str| proof[k].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "# flowgate advise: namespace {}, connections observed since {}\n\
         # admits the {} observed connections of {} allowed now; {} denied now stay denied\n\
         # proof: applied, these policies newly deny {} and newly allow {} of the {} distinct connections observed\n",
        s(&a["namespace"]),
        s(&a["since"]),
        a["admitted"],
        s(&a["namespace"]),
        a["left_denied"],
        count("newly_denied"),
        count("newly_allowed"),
        proof["connections_judged"],
    );
    for c in proof["newly_denied"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "#   NEWLY DENIED: {} → {} {} {}\n",
            s(&c["src"]),
            s(&c["dst"]),
            s(&c["protocol"]),
            c["port"]
        ));
    }
    for note in a["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("# note: {}\n", s(note)));
    }
    out.push_str("---\n");
    out.push_str(&s(&a["yaml"]));
    out
}
