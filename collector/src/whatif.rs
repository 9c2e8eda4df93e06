//! What-if against the collector's store: the distinct connections observed
//! in a window, judged under the policies in force now and under a proposed
//! change (the judging itself is [`flowgate_policy::what_if`]).
//!
//! [`observed`] reads the window's distinct connections (one GROUP BY over
//! `flows`, see [`flowgate_query::observed`]) as the policy engine's
//! [`ObservedConnection`]s, endpoints as they were recorded, labels
//! included; [`run`] judges them against a [`ChangeSet`] and returns a
//! [`Report`], the JSON `POST /api/v1/whatif` answers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use flowgate_policy::{
    ChangeSet, ClusterObjects, ObservedConnection, ObservedEndpoint, ObservedPod, Protocol,
    VerdictChange, WhatIf, WhatIfError,
};
use flowgate_query::{DistinctConnection, ObservedEnd, QueryEngine, QueryError};
use serde::Serialize;

/// The what-if window when none is given: the last day.
pub const DEFAULT_SINCE: &str = "24h";

/// The advise window when none is given: a week, so that weekly jobs count.
pub const DEFAULT_ADVISE_SINCE: &str = "7d";

#[derive(Debug, thiserror::Error)]
pub enum WhatIfRunError {
    /// The change set: the caller's fault.
    #[error(transparent)]
    Change(#[from] WhatIfError),
    #[error("reading the observed connections: {0}")]
    Query(#[from] QueryError),
    /// A stored row the flow model does not allow (a store bug, not input).
    #[error("a stored flow {connection} has {problem}")]
    Stored { connection: String, problem: String },
    #[error("namespace {namespace:?} is not in the cluster")]
    NoNamespace { namespace: String },
}

/// The answer: the window, how many distinct connections were judged, and
/// those whose verdict the change flips.
#[derive(Debug, Serialize)]
pub struct Report {
    /// RFC 3339.
    pub since: String,
    pub connections_judged: usize,
    pub newly_denied: Vec<Item>,
    pub newly_allowed: Vec<Item>,
}

/// A flipped connection, its last sighting in RFC 3339.
#[derive(Debug, Serialize)]
pub struct Item {
    #[serde(flatten)]
    pub change: VerdictChange,
    pub last_seen: String,
}

/// Advice for one namespace, with its proof (a [`Report`] of applying it).
#[derive(Debug, Serialize)]
pub struct AdviceReport {
    pub namespace: String,
    /// RFC 3339.
    pub since: String,
    /// The NetworkPolicy objects, as JSON.
    pub policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    /// The same, as one YAML stream for `kubectl apply -f`.
    pub yaml: String,
    /// Observed connections of the namespace the advice admits.
    pub admitted: usize,
    /// Observed connections of the namespace denied now (left denied).
    pub left_denied: usize,
    pub notes: Vec<String>,
    pub proof: Report,
}

/// Least-privilege policies for `namespace` from the connections observed
/// from `since_ns` to `until_ns` (see [`flowgate_policy::advise`]).
pub async fn advise(
    engine: &QueryEngine,
    current: &ClusterObjects,
    namespace: &str,
    since_ns: i64,
    until_ns: i64,
) -> Result<AdviceReport, WhatIfRunError> {
    let known = current
        .namespaces
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(namespace))
        || current
            .pods
            .iter()
            .any(|p| p.metadata.namespace.as_deref() == Some(namespace));
    if !known {
        return Err(WhatIfRunError::NoNamespace {
            namespace: namespace.to_string(),
        });
    }
    let observed = observed(engine, since_ns, until_ns).await?;
    let advice = flowgate_policy::advise(current, namespace, &observed)?;
    Ok(AdviceReport {
        namespace: advice.namespace.clone(),
        since: rfc3339(since_ns),
        yaml: advice.yaml(),
        policies: advice.policies,
        admitted: advice.admitted,
        left_denied: advice.left_denied,
        notes: advice.notes,
        proof: Report::new(since_ns, advice.proof),
    })
}

impl Report {
    fn new(since_ns: i64, w: WhatIf) -> Report {
        let items = |v: Vec<VerdictChange>| {
            v.into_iter()
                .map(|change| Item {
                    last_seen: rfc3339(change.last_seen_ns),
                    change,
                })
                .collect()
        };
        Report {
            since: rfc3339(since_ns),
            connections_judged: w.connections_judged,
            newly_denied: items(w.newly_denied),
            newly_allowed: items(w.newly_allowed),
        }
    }
}

pub fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The distinct connections observed from `since_ns` to `until_ns`.
pub async fn observed(
    engine: &QueryEngine,
    since_ns: i64,
    until_ns: i64,
) -> Result<Vec<ObservedConnection>, WhatIfRunError> {
    engine
        .distinct_connections(since_ns, until_ns)
        .await?
        .into_iter()
        .map(convert)
        .collect()
}

/// Judges the window's observed connections under `current` and under
/// `current` with `change` applied.
pub async fn run(
    engine: &QueryEngine,
    current: &ClusterObjects,
    change: &ChangeSet,
    since_ns: i64,
    until_ns: i64,
) -> Result<Report, WhatIfRunError> {
    // A bad change set fails before the store is read.
    flowgate_policy::what_if(current, change, &[])?;
    let observed = observed(engine, since_ns, until_ns).await?;
    let w = flowgate_policy::what_if(current, change, &observed)?;
    Ok(Report::new(since_ns, w))
}

fn convert(c: DistinctConnection) -> Result<ObservedConnection, WhatIfRunError> {
    let name = || {
        format!(
            "{} {} -> {}:{}",
            c.protocol,
            end_name(&c.src),
            end_name(&c.dst),
            c.port
        )
    };
    let stored = |problem: String| WhatIfRunError::Stored {
        connection: name(),
        problem,
    };
    let protocol: Protocol = c.protocol.parse().map_err(|e| stored(format!("{e}")))?;
    Ok(ObservedConnection {
        src: endpoint(&c.src).map_err(stored)?,
        dst: endpoint(&c.dst).map_err(stored)?,
        port: c.port,
        protocol,
        flows: c.flows,
        last_seen_ns: c.last_seen_ns,
    })
}

fn end_name(e: &ObservedEnd) -> String {
    match (&e.namespace, &e.pod) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => e.ip.clone(),
    }
}

fn endpoint(e: &ObservedEnd) -> Result<ObservedEndpoint, String> {
    let ip: IpAddr =
        e.ip.parse()
            .map_err(|_| format!("address {:?}, not an IP", e.ip))?;
    let pod = match (&e.namespace, &e.pod) {
        (Some(namespace), Some(name)) => {
            let labels: BTreeMap<String, String> = match &e.labels {
                None => BTreeMap::new(),
                Some(json) => serde_json::from_str(json).map_err(|err| {
                    format!("labels {json:?}, not a JSON object of strings: {err}")
                })?,
            };
            Some(ObservedPod {
                namespace: namespace.clone(),
                name: name.clone(),
                labels,
            })
        }
        // No pod recorded: outside the cluster, judged by address.
        _ => None,
    };
    Ok(ObservedEndpoint { ip, pod })
}
