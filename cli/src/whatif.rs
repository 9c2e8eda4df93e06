//! `flowgate whatif`: what a proposed policy change would do to the traffic
//! a running collector actually observed, before it is applied.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use flowgate_policy::ChangeSet;
use serde_json::{Value, json};

/// Exit status when `--fail-on-breakage` finds a newly denied connection
/// (1 stays "bad input or failure").
const BREAKAGE: u8 = 3;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    /// A summary and the flipped connections, for a person.
    Text,
    /// `{"since", "connections_judged", "newly_denied": [...], "newly_allowed": [...]}`.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policies to apply (NetworkPolicy, AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy, ClusterNetworkPolicy): each replaces the
    /// same-named one in force, or is added. A YAML/JSON file or a folder of
    /// them; repeat to combine.
    #[arg(long, value_name = "FILE_OR_DIR")]
    policies: Vec<PathBuf>,
    /// A NetworkPolicy to delete, as `namespace/name`; repeat for several.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    delete: Vec<String>,
    /// The window of observed traffic: a duration ago (`24h`, `7d`) or RFC
    /// 3339. The collector's default (the last day) when omitted.
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    api: crate::http::CollectorApi,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Exit with status 3 when any observed connection would newly be
    /// denied (gate a policy change in CI on real traffic).
    #[arg(long)]
    fail_on_breakage: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = request(&args)?;
    let answer = args.api.post("/api/v1/whatif", body)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Text => print!("{}", render(&answer)),
    }
    let breaks = answer["newly_denied"]
        .as_array()
        .is_some_and(|d| !d.is_empty());
    Ok(if breaks && args.fail_on_breakage {
        ExitCode::from(BREAKAGE)
    } else {
        ExitCode::SUCCESS
    })
}

/// The request body. The files are checked here first, so that an error
/// names the file it is in.
fn request(args: &Args) -> anyhow::Result<Value> {
    let mut change = ChangeSet::default();
    let mut texts = Vec::new();
    for file in policy_files(&args.policies)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        change.add_yaml(&file.display().to_string(), &text)?;
        texts.push(text);
    }
    for d in &args.delete {
        change.delete(d)?;
    }
    if change.is_empty() {
        anyhow::bail!("nothing to judge: give --policies FILE_OR_DIR or --delete NAMESPACE/NAME");
    }
    let mut body = json!({
        // Documents of separate files stay separate documents.
        "policies_yaml": texts.join("\n---\n"),
        "delete": args.delete,
    });
    if let Some(since) = &args.since {
        body["since"] = json!(since);
    }
    Ok(body)
}

/// Every `.yaml`, `.yml` and `.json` file of the given files and folders
/// (folders recursively, in name order).
fn policy_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let before = out.len();
        collect(p, &mut out).with_context(|| format!("cannot read {}", p.display()))?;
        if out.len() == before {
            anyhow::bail!("{}: no .yaml, .yml or .json files found", p.display());
        }
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        // A file named explicitly is read whatever its extension.
        std::fs::metadata(path)?;
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for e in entries {
        let wanted = e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
        if e.is_dir() {
            collect(&e, out)?;
        } else if wanted {
            out.push(e);
        }
    }
    Ok(())
}

fn render(answer: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |k: &str| answer[k].as_array().cloned().unwrap_or_default();
    let (denied, allowed) = (list("newly_denied"), list("newly_allowed"));
    let mut out = format!(
        "{} distinct connections observed since {} judged: {} newly denied, {} newly allowed\n",
        answer["connections_judged"],
        s(&answer["since"]),
        denied.len(),
        allowed.len()
    );
    let line = |c: &Value| {
        format!(
            "  {} → {} {} {} ({} flows, last seen {})\n",
            s(&c["src"]),
            s(&c["dst"]),
            s(&c["protocol"]),
            c["port"],
            c["flows"],
            s(&c["last_seen"])
        )
    };
    if !denied.is_empty() {
        out.push_str("newly denied:\n");
    }
    for c in &denied {
        out.push_str(&line(c));
        for d in c["denied_by"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {}: {}\n",
                s(&d["direction"]),
                s(&d["reason"])
            ));
        }
    }
    if !allowed.is_empty() {
        out.push_str("newly allowed:\n");
    }
    for c in &allowed {
        out.push_str(&line(c));
    }
    out
}
