//! Blame: which recorded change flipped a connection's verdict. Each
//! generation of the history is rebuilt and the connection re-judged under
//! it, so a flip is found even if no traffic flowed when it happened.

use serde::Serialize;
use serde_json::Value;

use crate::cluster::history::{Change, History, ObjectChange};
use flowgate_policy::Cluster;

/// One flip of the verdict and the changes of the generation that made it.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub time: String,
    pub generation: u64,
    pub before: &'static str,
    pub after: &'static str,
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub change: &'static str,
    pub detail: String,
}

fn word(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "denied" }
}

/// Re-judges with `judge` (`None`: an endpoint did not exist then) under
/// every generation since `since_ns`, and returns the flips, oldest first.
pub fn flips(
    history: &History,
    since_ns: i64,
    judge: impl Fn(&Cluster) -> Option<bool>,
) -> Vec<Flip> {
    let mut out = Vec::new();
    let mut previous: Option<bool> = None;
    for (generation, time_ns) in history.generations() {
        let Some((inputs, _)) = history.inputs_at_generation(generation) else {
            continue;
        };
        let (cluster, _) = Cluster::build_lenient(
            inputs.namespaces.iter().map(|n| n.as_ref()),
            inputs.pods.iter().map(|p| p.as_ref()),
            inputs.policies.iter().map(|p| p.as_ref()),
            generation,
        );
        let verdict = judge(&cluster);
        if let (Some(before), Some(after)) = (previous, verdict)
            && before != after
            && time_ns >= since_ns
        {
            let causes = history
                .changes()
                .iter()
                .filter(|c| c.generation == generation)
                .map(cause)
                .collect();
            out.push(Flip {
                time: rfc3339(time_ns),
                generation,
                before: word(before),
                after: word(after),
                causes,
            });
        }
        if verdict.is_some() {
            previous = verdict;
        }
    }
    out
}

pub fn verdict_word(allowed: bool) -> &'static str {
    word(allowed)
}

fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

fn cause(c: &Change) -> Cause {
    let change = c.object.change().as_str();
    match &c.object {
        ObjectChange::NetworkPolicy {
            namespace,
            name,
            before,
            after,
        } => Cause {
            kind: "NetworkPolicy",
            namespace: namespace.clone(),
            name: name.clone(),
            change,
            detail: policy_detail(
                &format!("{namespace}/{name}"),
                before
                    .as_deref()
                    .map(|p| serde_json::to_value(&p.spec).unwrap_or_default()),
                after
                    .as_deref()
                    .map(|p| serde_json::to_value(&p.spec).unwrap_or_default()),
            ),
        },
        ObjectChange::Namespace {
            name,
            before,
            after,
        } => Cause {
            kind: "Namespace",
            namespace: name.clone(),
            name: name.clone(),
            change,
            detail: format!(
                "namespace {name} labels {} → {}",
                labels(before.as_ref()),
                labels(after.as_ref())
            ),
        },
        ObjectChange::Pod {
            namespace,
            name,
            before,
            after,
        } => Cause {
            kind: "Pod",
            namespace: namespace.clone(),
            name: name.clone(),
            change,
            detail: format!(
                "pod {namespace}/{name} labels {} → {}",
                labels(before.as_ref().and_then(|p| p.metadata.labels.as_ref())),
                labels(after.as_ref().and_then(|p| p.metadata.labels.as_ref()))
            ),
        },
    }
}

fn labels(l: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match l {
        None => "(none: the object did not exist)".into(),
        Some(l) if l.is_empty() => "{}".into(),
        Some(l) => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The rule-level difference between two specs, in words.
fn policy_detail(key: &str, before: Option<Value>, after: Option<Value>) -> String {
    let (before, after) = match (before, after) {
        (None, _) => return format!("{key} was created"),
        (_, None) => return format!("{key} was deleted"),
        (Some(b), Some(a)) => (b, a),
    };
    let mut parts = Vec::new();
    for field in ["podSelector", "policyTypes"] {
        if before.get(field) != after.get(field) {
            parts.push(format!(
                "{key} {field} {} → {}",
                compact(before.get(field)),
                compact(after.get(field))
            ));
        }
    }
    for direction in ["ingress", "egress"] {
        let rules = |v: &Value| {
            v.get(direction)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (b, a) = (rules(&before), rules(&after));
        for i in 0..b.len().max(a.len()) {
            match (b.get(i), a.get(i)) {
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) => parts.push(format!(
                    "{key} {direction} rule {i} changed from {} to {}",
                    compact(Some(x)),
                    compact(Some(y))
                )),
                (Some(x), None) => parts.push(format!(
                    "{key} {direction} rule {i} ({}) was removed",
                    compact(Some(x))
                )),
                (None, Some(y)) => parts.push(format!(
                    "{key} {direction} rule {i} ({}) was added",
                    compact(Some(y))
                )),
                (None, None) => {}
            }
        }
    }
    if parts.is_empty() {
        format!("{key} was modified")
    } else {
        parts.join("; ")
    }
}

fn compact(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_string(), Value::to_string)
}
