//! Suggestions against the collector's store: the policy engine's verified
//! changes for a denied connection ([`flowgate_policy::Cluster::suggest`]),
//! each judged by the what-if core against the distinct connections
//! observed in a window, so that the answer says what else each would admit
//! and the narrowest comes first. `GET /api/v1/explain?…&suggest=true`.

use flowgate_policy::{Endpoint, Protocol, Suggestions};
use flowgate_query::QueryEngine;
use serde::Serialize;

use crate::cluster::Snapshot;
use crate::whatif::{self, WhatIfRunError};

/// The suggestions, and the window they were checked against.
#[derive(Debug, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub suggestions: Suggestions,
    /// The window's start, RFC 3339.
    pub since: String,
    /// Distinct connections observed in the window (0 when there was no
    /// suggestion to judge: the store is not read then).
    pub connections_judged: usize,
}

/// The connection as the snapshot's cluster names it.
#[derive(Debug)]
pub struct Connection {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub port: u16,
    pub protocol: Protocol,
}

/// Suggestions under `snapshot` (the policies in force now), judged against
/// the connections observed from `since_ns` to `until_ns`.
pub async fn suggest(
    engine: &QueryEngine,
    snapshot: &Snapshot,
    c: &Connection,
    since_ns: i64,
    until_ns: i64,
) -> Result<Answer, WhatIfRunError> {
    let mut suggestions = snapshot.cluster.suggest(&c.src, &c.dst, c.port, c.protocol);
    let mut judged = 0;
    if !suggestions.suggestions.is_empty() {
        let observed = whatif::observed(engine, since_ns, until_ns).await?;
        judged = observed.len();
        suggestions.judge_observed(&snapshot.inputs.objects(), &observed)?;
    }
    Ok(Answer {
        suggestions,
        since: whatif::rfc3339(since_ns),
        connections_judged: judged,
    })
}
