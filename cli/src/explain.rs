//! `flowgate explain`: the policy verdict for one connection, explained.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use flowgate_policy::{
    Cluster, DirectionExplanation, Endpoint, Explanation, Protocol, StepOutcome,
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Output {
    /// Sentences for a person.
    Text,
    /// One JSON object; its top-level boolean `allowed` is the final verdict.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A YAML/JSON file or a folder of them holding Namespaces, Pods, Nodes,
    /// NetworkPolicies and the cluster tiers (AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy, ClusterNetworkPolicy); multi-document and
    /// `kind: List` files are fine. Repeat to combine several.
    /// Without `--cluster`, the collector at `--collector-http` is asked:
    /// its current state, or the one at `--at`.
    #[arg(long, value_name = "FILE_OR_DIR", conflicts_with = "collector_http")]
    cluster: Vec<PathBuf>,
    #[command(flatten)]
    api: crate::http::CollectorApi,
    /// Judge under the policies, labels and addresses in force at this time
    /// (RFC 3339 like `2026-12-03T10:00:00Z`, or a duration ago like `2h`),
    /// from the collector's recorded history.
    #[arg(long, value_name = "TIME", conflicts_with = "cluster")]
    at: Option<String>,
    /// Source: `namespace/pod`, or an IP address (a pod's IP means that pod).
    #[arg(long, value_name = "SRC")]
    from: String,
    /// Destination: `namespace/pod`, or an IP address.
    #[arg(long, value_name = "DST")]
    to: String,
    /// The DNS name the source resolved `--to` from (as in a flow's
    /// `dst_dns_name`): cluster policies' `domainNames` peers are judged
    /// against it; without it they cannot match.
    #[arg(long, value_name = "NAME")]
    to_name: Option<String>,
    /// Destination port (1-65535; ignored for ICMP).
    #[arg(long, value_parser = clap::value_parser!(u16))]
    port: u16,
    /// Protocol: TCP, UDP, SCTP (or ICMP/ICMPv6, which only port-less rules admit).
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    protocol: Protocol,
    /// How to print the verdict.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// For a denied connection, also propose the smallest NetworkPolicy
    /// changes that admit it, as YAML ready for `kubectl apply`. With
    /// `--collector-http` each says which other connections observed in the
    /// `--since` window it would also admit (ranked by that); offline there
    /// is no observed traffic to consult.
    #[arg(long, conflicts_with = "at")]
    suggest: bool,
    /// With `--suggest --collector-http`: the window of observed
    /// connections a suggestion is checked against (a duration ago like
    /// `24h`, or RFC 3339). Longer windows catch rarer traffic.
    #[arg(
        long,
        value_name = "TIME",
        requires = "suggest",
        conflicts_with = "cluster"
    )]
    since: Option<String>,
}

/// Offline suggestions consult no traffic; said once, in both outputs.
const OFFLINE_NOTE: &str = "also_admits not computed: offline (--cluster) there is no observed traffic; ask a collector (--collector-http) to see what else each suggestion would admit";

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
        .map_err(|e: flowgate_policy::UnknownProtocol| e.to_string())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.port == 0
        && matches!(
            args.protocol,
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp
        )
    {
        bail!("port 0 is out of range 1-65535");
    }
    if args.cluster.is_empty() {
        return remote(&args);
    }
    let objects = flowgate_policy::load_paths(&args.cluster).context("reading the cluster")?;
    for ignored in &objects.ignored {
        tracing::debug!(object = %ignored, "not a kind policies depend on: ignored");
    }
    let cluster = Cluster::build(&objects, 1).context("invalid cluster object")?;
    let src = endpoint(&cluster, &args.from).context("--from")?;
    let dst = endpoint(&cluster, &args.to).context("--to")?;
    let explanation = cluster.explain_named(
        &src,
        &dst,
        args.to_name.as_deref(),
        args.port,
        args.protocol,
    );
    if !args.suggest {
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
            Output::Text => print!("{}", render_text(&explanation)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let suggestions = cluster.suggest(&src, &dst, args.port, args.protocol);
    match args.output {
        Output::Json => {
            let mut v = serde_json::to_value(&suggestions)?;
            v["explanation"] = serde_json::to_value(&explanation)?;
            v["note"] = OFFLINE_NOTE.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Text => {
            print!("{}", render_text(&explanation));
            let view: SuggestionsView =
                serde_json::from_value(serde_json::to_value(&suggestions)?)?;
            print!("{}", render_suggestions(&view, Some(OFFLINE_NOTE)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /api/v1/explain` on the collector; its `explanation`, after its
/// `not_policy` finding when there is one.
fn remote(args: &Args) -> anyhow::Result<ExitCode> {
    let mut query = vec![
        ("from", args.from.clone()),
        ("to", args.to.clone()),
        ("port", args.port.to_string()),
        ("protocol", args.protocol.to_string()),
    ];
    if let Some(name) = &args.to_name {
        query.push(("to_name", name.clone()));
    }
    if let Some(at) = &args.at {
        query.push(("at", at.clone()));
    }
    if args.suggest {
        query.push(("suggest", "true".into()));
    }
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    let mut answer = args.api.get("/api/v1/explain", &query)?;
    let explanation = answer["explanation"].take();
    match (args.output, args.suggest) {
        (Output::Json, false) => println!("{}", serde_json::to_string_pretty(&explanation)?),
        (Output::Json, true) => {
            let v = serde_json::json!({
                "explanation": explanation,
                "suggestions": answer["suggestions"].take(),
                "none": answer["none"].take(),
                "since": answer["since"].take(),
                "connections_judged": answer["connections_judged"].take(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        (Output::Text, suggest) => {
            let view: View = serde_json::from_value(explanation)
                .context("the collector's explanation lacks expected fields")?;
            // What the flows say comes first when the policies are not the problem.
            if let Some(message) = answer["not_policy"]["message"].as_str() {
                println!("{message}");
            }
            print!("{}", render_view(&view));
            if suggest {
                let s: SuggestionsView = serde_json::from_value(answer)
                    .context("the collector's answer lacks the suggestions")?;
                print!("{}", render_suggestions(&s, None));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the text shows of suggestions (ours, or a collector's JSON).
#[derive(Debug, serde::Deserialize)]
struct SuggestionsView {
    suggestions: Vec<SuggestionView>,
    none: Option<NoneView>,
    /// The collector's window, RFC 3339.
    since: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct SuggestionView {
    summary: String,
    yaml: String,
    also_admits: Option<Vec<OtherView>>,
    #[serde(default)]
    also_denies: Vec<OtherView>,
}

#[derive(Debug, serde::Deserialize)]
struct OtherView {
    src: String,
    dst: String,
    port: u16,
    protocol: String,
}

impl std::fmt::Display for OtherView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {} {}", self.src, self.dst, self.protocol)?;
        // ICMP has no port: the 0 stored for it means nothing to a reader.
        if self.protocol.starts_with("ICMP") {
            return Ok(());
        }
        write!(f, " {}", self.port)
    }
}

#[derive(Debug, serde::Deserialize)]
struct NoneView {
    kind: String,
    message: Option<String>,
}

/// At most this many other connections are named per suggestion in text;
/// the JSON has them all.
const OTHERS_SHOWN: usize = 5;

fn render_suggestions(s: &SuggestionsView, note: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(none) = &s.none {
        let why = match (none.kind.as_str(), &none.message) {
            ("allowed", _) => "the connection is already allowed: nothing to change.".to_string(),
            (_, Some(m)) => m.clone(),
            (kind, None) => kind.to_string(),
        };
        let _ = writeln!(out, "\nNo suggestion: {why}");
        return out;
    }
    let _ = writeln!(out, "\nSuggestions (best first):");
    for (i, sug) in s.suggestions.iter().enumerate() {
        let _ = writeln!(out, "{:>3}. {}", i + 1, sug.summary);
        let others = |what: &str, list: &[OtherView]| {
            let named: Vec<String> = list
                .iter()
                .take(OTHERS_SHOWN)
                .map(|o| o.to_string())
                .collect();
            let more = list.len().saturating_sub(OTHERS_SHOWN);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "     {what} {} other observed connection(s): {}{tail}\n",
                list.len(),
                named.join(", ")
            )
        };
        match &sug.also_admits {
            None => {}
            Some(list) if list.is_empty() => {
                let since = s
                    .since
                    .as_deref()
                    .map(|t| format!(" since {t}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "     also admits no other connection observed{since}");
            }
            Some(list) => out.push_str(&others("also admits", list)),
        }
        if !sug.also_denies.is_empty() {
            out.push_str(&others("NEWLY DENIES", &sug.also_denies));
        }
        // Unindented, so that it can be copied into `kubectl apply -f -`.
        let _ = write!(out, "---\n{}", sug.yaml);
    }
    if let Some(note) = note {
        let _ = writeln!(out, "({note})");
    }
    out
}

/// What the text shows of a collector's explanation, read from its JSON:
/// the verdict and per direction the reason (which names the deciding tier)
/// and the nearest misses.
#[derive(Debug, serde::Deserialize)]
struct View {
    allowed: bool,
    src: EndpointView,
    dst: EndpointView,
    port: u16,
    protocol: String,
    generation: u64,
    egress: DirectionView,
    ingress: DirectionView,
}

#[derive(Debug, serde::Deserialize)]
struct EndpointView {
    ip: String,
    namespace: Option<String>,
    pod: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct DirectionView {
    direction: String,
    applicable: bool,
    allowed: bool,
    reason: String,
    misses: Vec<MissView>,
}

#[derive(Debug, serde::Deserialize)]
struct MissView {
    explanation: String,
}

/// A collector's explanation as text: the verdict, each direction's reason
/// and nearest misses, and the generation it was judged under.
fn render_view(e: &View) -> String {
    let verdict = if e.allowed { "ALLOWED" } else { "DENIED" };
    let name = |v: &EndpointView| match (&v.namespace, &v.pod) {
        (Some(ns), Some(p)) => format!("{ns}/{p} ({})", v.ip),
        _ => format!("{} (outside the cluster)", v.ip),
    };
    let mut out = format!(
        "{verdict}: {} → {} {} {}\n",
        name(&e.src),
        name(&e.dst),
        e.protocol,
        e.port
    );
    for d in [&e.egress, &e.ingress] {
        let mark = if !d.applicable {
            "n/a"
        } else if d.allowed {
            "allow"
        } else {
            "DENY"
        };
        // The reason repeats the misses, which are printed one per line.
        let reason = d
            .misses
            .first()
            .and_then(|m| d.reason.find(&m.explanation))
            .map_or(d.reason.as_str(), |at| {
                d.reason[..at].trim_end_matches([' ', ':'])
            });
        out.push_str(&format!("  {:<8} [{mark}] {reason}\n", d.direction));
        for m in &d.misses {
            out.push_str(&format!("           - {}\n", m.explanation));
        }
    }
    out.push_str(&format!(
        "  (judged under policy generation {})\n",
        e.generation
    ));
    out
}

/// `namespace/pod` or an IP address.
fn endpoint(cluster: &Cluster, spec: &str) -> anyhow::Result<Endpoint> {
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(cluster.endpoint_for_ip(ip));
    }
    let Some((ns, name)) = spec.split_once('/') else {
        bail!("`{spec}` is neither `namespace/pod` nor an IP address");
    };
    match cluster.find_pod(ns, name) {
        Some(pod) => Ok(cluster.pod_endpoint(pod, None)),
        None => {
            let known: Vec<&str> = cluster
                .pods()
                .filter(|(_, p)| p.namespace == ns)
                .map(|(_, p)| p.name.as_str())
                .take(8)
                .collect();
            if known.is_empty() {
                bail!("unknown pod `{spec}`: the cluster has no pods in namespace `{ns}`")
            }
            bail!(
                "unknown pod `{spec}` (pods in `{ns}` include: {})",
                known.join(", ")
            )
        }
    }
}

fn render_text(e: &Explanation) -> String {
    let verdict = if e.allowed { "ALLOWED" } else { "DENIED" };
    let name = |v: &flowgate_policy::EndpointView| match (&v.namespace, &v.pod) {
        (Some(ns), Some(p)) => format!("{ns}/{p} ({})", v.ip),
        _ => format!("{} (outside the cluster)", v.ip),
    };
    let mut out = format!(
        "{verdict}: {} → {} {} {}\n",
        name(&e.src),
        name(&e.dst),
        e.protocol,
        e.port
    );
    for d in [&e.egress, &e.ingress] {
        out.push_str(&render_direction(d));
    }
    out
}

fn render_direction(d: &DirectionExplanation) -> String {
    let mark = if !d.applicable {
        "n/a"
    } else if d.allowed {
        "allow"
    } else {
        "DENY"
    };
    // Without cluster-tier policies for this pod the tier adds nothing.
    let tiered = d.tiers.iter().any(|s| s.outcome != StepOutcome::NoPolicies);
    let tier = if tiered {
        format!("({} tier) ", d.tier)
    } else {
        String::new()
    };
    let mut out = format!(
        "  {:<8} [{mark}] {tier}{}\n",
        d.direction.to_string(),
        first_sentence(&d.reason, d)
    );
    for m in &d.misses {
        out.push_str(&format!("           - {}\n", m.explanation));
    }
    // The walk through the cluster tiers, when any cluster policy applies.
    for step in d
        .tiers
        .iter()
        .filter(|s| s.outcome != StepOutcome::NoPolicies && !d.reason.contains(&s.text))
    {
        out.push_str(&format!(
            "           {} tier: {}\n",
            step.tier.tier(),
            step.text
        ));
    }
    out
}

/// The denial reason repeats the misses, which are printed one per line.
fn first_sentence<'a>(reason: &'a str, d: &DirectionExplanation) -> &'a str {
    match d.misses.first() {
        None => reason,
        Some(m) => reason
            .find(&m.explanation)
            .map_or(reason, |at| reason[..at].trim_end_matches([' ', ':'])),
    }
}
