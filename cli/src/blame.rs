//! `flowgate blame`: when a connection's verdict flipped, and which change
//! (policy created/modified/deleted, labels changed) flipped it, from a
//! running collector's recorded history.

use std::process::ExitCode;

use flowgate_policy::Protocol;
use serde_json::Value;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    /// A timeline for a person.
    Text,
    /// `{"verdict_now", "changes": [{"time", "generation", "before", "after", "causes": [...]}]}`.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Source: `namespace/pod` or an IP address.
    #[arg(long, value_name = "SRC")]
    from: String,
    /// Destination: `namespace/pod` or an IP address.
    #[arg(long, value_name = "DST")]
    to: String,
    /// Destination port.
    #[arg(long)]
    port: u16,
    /// TCP, UDP, SCTP (or ICMP).
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    protocol: Protocol,
    /// Only flips since then: a duration ago (`7d`) or RFC 3339.
    #[arg(long, default_value = "7d")]
    since: String,
    #[command(flatten)]
    api: crate::http::CollectorApi,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
        .map_err(|e: flowgate_policy::UnknownProtocol| e.to_string())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let query = [
        ("from", args.from.clone()),
        ("to", args.to.clone()),
        ("port", args.port.to_string()),
        ("protocol", args.protocol.to_string()),
        ("since", args.since.clone()),
    ];
    let answer = args.api.get("/api/v1/blame", &query)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Text => print!("{}", render(&args, &answer)),
    }
    Ok(ExitCode::SUCCESS)
}

fn render(args: &Args, answer: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = format!(
        "{} → {} {} {}: {} now\n",
        args.from,
        args.to,
        args.protocol,
        args.port,
        s(&answer["verdict_now"])
    );
    let changes = answer["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        out.push_str(&format!(
            "  no change: the verdict did not flip since {}\n",
            args.since
        ));
    }
    for c in &changes {
        out.push_str(&format!(
            "  {} generation {}: {} → {}\n",
            s(&c["time"]),
            c["generation"],
            s(&c["before"]),
            s(&c["after"])
        ));
        for cause in c["causes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {} {} {}/{}: {}\n",
                s(&cause["kind"]),
                s(&cause["change"]),
                s(&cause["namespace"]),
                s(&cause["name"]),
                s(&cause["detail"])
            ));
        }
    }
    out
}
