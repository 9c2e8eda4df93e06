//! Blame: which recorded change flipped a connection's verdict. Each
//! generation of the history is rebuilt and the connection re-judged under
//! it, so a flip is found even if no traffic flowed when it happened.

mod words;

use serde::Serialize;

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
            detail: words::policy(
                &format!("{namespace}/{name}"),
                before.as_deref(),
                after.as_deref(),
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
                words::labels(before.as_ref()),
                words::labels(after.as_ref())
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
            detail: words::pod(namespace, name, before.as_deref(), after.as_deref()),
        },
    }
}
