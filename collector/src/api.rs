//! The HTTP API: sandboxed SQL, flow listing with common filters, policy
//! explanations next to the flows observed for the pair, the policies with
//! the pods they select, health, readiness and Prometheus metrics.
//!
//! [`app`] builds the router from an [`AppState`]; every failure is an
//! [`ApiError`], rendered as `{"error": "..."}` with its status.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowgate_policy::{Cluster, Endpoint, Protocol};
use flowgate_query::filter::{self, Expr};
use flowgate_query::map::MapLevel;
use flowgate_query::{FlowStore, QueryEngine, QueryError, QueryResult, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::ClusterState;
use crate::metrics::Metrics;

/// What every handler reads.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<QueryEngine>,
    pub store: FlowStore,
    pub cluster: ClusterState,
    /// Every recorded change: judging under past generations.
    pub history: crate::cluster::history::SharedHistory,
    pub metrics: Arc<Metrics>,
    /// What probes reported losing.
    pub losses: Arc<crate::losses::Losses>,
    /// Upper bound of `limit` on `/api/v1/flows`.
    pub max_rows: usize,
}

/// Every way a request can fail, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("query timed out: {message}")]
    Timeout { message: String },
    #[error("internal error: {message}")]
    Internal { message: String },
    #[error("{message}")]
    NotReady { message: String },
    /// A query limit other than time: memory, or too many at once.
    #[error("{message}")]
    Limit { message: String, busy: bool },
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Limit { busy: true, .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Limit { busy: false, .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadQuery { .. } => ApiError::BadRequest {
                message: e.to_string(),
            },
            QueryError::Timeout { .. } => ApiError::Timeout {
                message: e.to_string(),
            },
            QueryError::Memory { .. } | QueryError::Busy { .. } => ApiError::Limit {
                busy: matches!(e, QueryError::Busy { .. }),
                message: e.to_string(),
            },
            other => ApiError::Internal {
                message: other.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The router. Mount other routers (the dashboard) with `merge`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/map", get(map))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/policies", get(policies))
        .route("/api/v1/lint", get(lint))
        .route("/api/v1/blame", get(blame))
        .route("/api/v1/whatif", post(whatif))
        .route("/api/v1/advise", get(advise))
        .route("/api/v1/losses", get(losses))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Debug, Deserialize)]
struct QueryBody {
    sql: String,
}

#[derive(Debug, Deserialize)]
struct FormatParam {
    format: Option<String>,
}

fn format(param: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = param {
        return match f {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(ApiError::bad(format!(
                "unknown format {other:?}: use json, csv or arrow"
            ))),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else {
        Format::Json
    })
}

async fn run_sql(state: &AppState, sql: &str) -> Result<QueryResult, ApiError> {
    let started = Instant::now();
    let result = state.engine.sql(sql).await;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(result?)
}

async fn query(
    State(state): State<AppState>,
    Query(param): Query<FormatParam>,
    headers: HeaderMap,
    // Any content type: `curl -d '{"sql": …}'` sends form encoding's.
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: QueryBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body must be {{\"sql\": \"...\"}}: {e}")))?;
    let format = format(param.format.as_deref(), &headers)?;
    let result = run_sql(&state, &body.sql).await?;
    let internal = |e: QueryError| ApiError::Internal {
        message: e.to_string(),
    };
    Ok(match format {
        Format::Json => Json(result.to_json()).into_response(),
        Format::Csv => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
            result.to_csv().map_err(internal)?,
        )
            .into_response(),
        Format::Arrow => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
            result.to_arrow_ipc().map_err(internal)?,
        )
            .into_response(),
    })
}

/// One end of a flow (`side` is `src` or `dst`) as a user names it: an IP,
/// a namespace, or `namespace/name` where name is a workload or a pod.
fn end_filter(side: &str, param: &str, value: &str) -> Result<Expr, ApiError> {
    let column = |name: &str| format!("{side}_{name}");
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(filter::eq(&column("ip"), ip.to_string()));
    }
    if let Some(prefix) = ipv4_octet_prefix(value) {
        return Ok(filter::prefix(&column("ip"), prefix));
    }
    match value.split_once('/') {
        // A namespace name has no dot (RFC 1123 label): a dotted name is
        // the DNS name a pod resolved for an external address.
        None if value.contains('.') => Ok(filter::eq(&column("dns_name"), value)),
        None if !value.is_empty() => Ok(filter::eq(&column("namespace"), value)),
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok(filter::eq(&column("namespace"), ns)
                .and(filter::eq(&column("workload"), name).or(filter::eq(&column("pod"), name))))
        }
        _ => Err(ApiError::bad(format!(
            "{param}={value:?}: expected an IP, an IPv4 /8, /16 or /24 network, a namespace, namespace/workload-or-pod, or a DNS name"
        ))),
    }
}

/// `192.0.2.0/24` → `"192.0.2."`: an IPv4 network on an octet boundary as
/// the text prefix its addresses share (the map groups external addresses so).
fn ipv4_octet_prefix(value: &str) -> Option<String> {
    let (net, len) = value.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let octets = match len.parse::<u8>().ok()? {
        8 => 1,
        16 => 2,
        24 => 3,
        _ => return None,
    };
    let kept: Vec<String> = net.octets()[..octets].iter().map(u8::to_string).collect();
    Some(format!("{}.", kept.join(".")))
}

/// The `rows` of a query's JSON answer.
fn rows(result: QueryResult) -> Value {
    result
        .to_json()
        .get("rows")
        .cloned()
        .unwrap_or_else(|| json!([]))
}

/// The newest `limit` rows of `table` matching `filter`, as JSON rows.
async fn newest_rows(
    state: &AppState,
    table: &str,
    filter: Option<Expr>,
    limit: usize,
) -> Result<Value, ApiError> {
    let started = Instant::now();
    let result = state.engine.newest(table, filter, limit).await;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(rows(result?))
}

/// `1h` (that long ago) or nanoseconds since the epoch.
fn time_bound(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(ns) = value.parse::<i64>() {
        return Ok(ns);
    }
    let ago: Duration = humantime::parse_duration(value).map_err(|e| {
        ApiError::bad(format!(
            "{name}={value:?}: expected a duration like 1h or nanoseconds since the epoch ({e})"
        ))
    })?;
    Ok(crate::now_ns().saturating_sub(i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX)))
}

#[derive(Debug, Deserialize)]
struct FlowsParams {
    namespace: Option<String>,
    pod: Option<String>,
    /// One end only: `namespace`, `namespace/workload-or-pod` or an IP.
    from: Option<String>,
    to: Option<String>,
    /// `namespace/name`: flows this policy allowed or denied.
    policy: Option<String>,
    /// `true`: only flows whose kernel fate disagrees with the verdict.
    mismatch: Option<String>,
    verdict: Option<String>,
    port: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

async fn flows(
    State(state): State<AppState>,
    Query(p): Query<FlowsParams>,
) -> Result<Json<Value>, ApiError> {
    let (filter, limit) = list_filter(&p, state.max_rows)?;
    let rows = newest_rows(&state, "flows", filter, limit).await?;
    Ok(Json(json!({ "flows": rows })))
}

/// The same filters over `connections`: one row per connection and minute.
async fn connections(
    State(state): State<AppState>,
    Query(p): Query<FlowsParams>,
) -> Result<Json<Value>, ApiError> {
    let (filter, limit) = list_filter(&p, state.max_rows)?;
    let rows = newest_rows(&state, "connections", filter, limit).await?;
    Ok(Json(json!({ "connections": rows })))
}

/// `time` from `since` to before `until` (either may be absent).
fn time_window(since: Option<&str>, until: Option<&str>) -> Result<Vec<Expr>, ApiError> {
    let mut filters = Vec::new();
    if let Some(since) = since {
        filters.push(filter::col("time").gt_eq(filter::timestamp(time_bound("since", since)?)));
    }
    if let Some(until) = until {
        filters.push(filter::col("time").lt(filter::timestamp(time_bound("until", until)?)));
    }
    Ok(filters)
}

#[derive(Debug, Deserialize)]
struct MapParams {
    /// `namespace` (default), `workload` or `pod`.
    level: Option<String>,
    /// The namespace expanded into workloads (`workload` and `pod` levels).
    namespace: Option<String>,
    /// The workload expanded into pods (`pod` level).
    workload: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl MapParams {
    fn level(&self) -> Result<MapLevel, ApiError> {
        let level = self.level.as_deref().unwrap_or("namespace");
        let need = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ApiError::bad(format!("level={level} needs {name}=...")))
        };
        match level {
            "namespace" => Ok(MapLevel::Namespace),
            "workload" => Ok(MapLevel::Workload {
                namespace: need("namespace", &self.namespace)?,
            }),
            "pod" => Ok(MapLevel::Pod {
                namespace: need("namespace", &self.namespace)?,
                workload: need("workload", &self.workload)?,
            }),
            other => Err(ApiError::bad(format!(
                "level={other:?}: expected namespace, workload or pod"
            ))),
        }
    }
}

/// The map's edges: connections between the nodes of one level, counted
/// by verdict, most connections first.
async fn map(
    State(state): State<AppState>,
    Query(p): Query<MapParams>,
) -> Result<Json<Value>, ApiError> {
    let level = p.level()?;
    let window = time_window(p.since.as_deref(), p.until.as_deref())?;
    let result = state.engine.map(&level, filter::all(window)).await;
    state
        .metrics
        .query_seconds
        .observe(result.as_ref().map_or(0.0, |r| r.elapsed.as_secs_f64()));
    let result = result?;
    let (truncated, elapsed) = (result.truncated, result.elapsed);
    Ok(Json(json!({
        "edges": rows(result),
        "truncated": truncated,
        "query_ms": elapsed.as_secs_f64() * 1000.0,
    })))
}

/// The filter and row count that list parameters ask for (columns both
/// `flows` and `connections` have).
fn list_filter(p: &FlowsParams, max_rows: usize) -> Result<(Option<Expr>, usize), ApiError> {
    let mut filters = Vec::new();
    if let Some(ns) = &p.namespace {
        filters.push(filter::eq("src_namespace", ns).or(filter::eq("dst_namespace", ns)));
    }
    if let Some(pod) = &p.pod {
        // `ns/pod` or a bare pod name.
        filters.push(match pod.split_once('/') {
            Some((ns, name)) => filter::eq("src_namespace", ns)
                .and(filter::eq("src_pod", name))
                .or(filter::eq("dst_namespace", ns).and(filter::eq("dst_pod", name))),
            None => filter::eq("src_pod", pod).or(filter::eq("dst_pod", pod)),
        });
    }
    if let Some(from) = &p.from {
        filters.push(end_filter("src", "from", from)?);
    }
    if let Some(to) = &p.to {
        filters.push(end_filter("dst", "to", to)?);
    }
    if let Some(policy) = &p.policy {
        if policy
            .split_once('/')
            .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
        {
            return Err(ApiError::bad(format!(
                "policy={policy:?}: expected namespace/name"
            )));
        }
        filters
            .push(filter::list_has("allowed_by", policy).or(filter::list_has("denied_by", policy)));
    }
    match p.mismatch.as_deref() {
        None | Some("") => {}
        Some("true") => filters.push(filter::col("enforcement_mismatch")),
        Some("false") => filters.push(filter::not(filter::col("enforcement_mismatch"))),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "mismatch={other:?}: expected true or false"
            )));
        }
    }
    if let Some(v) = &p.verdict {
        let v: Verdict = v
            .parse()
            .map_err(|e| ApiError::bad(format!("verdict={v:?}: {e}")))?;
        filters.push(filter::eq("verdict", v.as_str()));
    }
    if let Some(port) = &p.port {
        let port: u16 = port
            .parse()
            .map_err(|_| ApiError::bad(format!("port={port:?}: expected 0-65535")))?;
        filters.push(filter::col("dst_port").eq(filter::lit(port)));
    }
    filters.extend(time_window(p.since.as_deref(), p.until.as_deref())?);
    let limit = match &p.limit {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad(format!("limit={l:?}: expected a number")))?,
        None => 100,
    }
    .min(max_rows);
    Ok((filter::all(filters), limit))
}

#[derive(Debug, Deserialize)]
struct LossesParams {
    since: Option<String>,
}

/// Losses probes reported since `since` (default: the last hour), per node
/// and kind: the dashboard's loss banner.
async fn losses(
    State(state): State<AppState>,
    Query(p): Query<LossesParams>,
) -> Result<Json<Value>, ApiError> {
    let since = time_bound("since", p.since.as_deref().unwrap_or("1h"))?;
    let (losses, oldest_kept) = state.losses.since(since);
    Ok(Json(json!({
        "since_ns": since,
        "oldest_kept_ns": oldest_kept,
        "total": losses.iter().map(|l| l.count).sum::<u64>(),
        "losses": losses,
    })))
}

#[derive(Debug, Deserialize)]
struct ExplainParams {
    from: Option<String>,
    to: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    /// The DNS name the source resolved `to` from: `domainNames` peers are
    /// judged against it.
    to_name: Option<String>,
    /// Judge under the state in force at this time (RFC 3339, `1h` ago, or
    /// nanoseconds since the epoch) instead of now.
    at: Option<String>,
    /// `true`: also suggest changes that admit a denied connection.
    suggest: Option<String>,
    /// With `suggest`: the window of observed connections each suggestion
    /// is judged against (`24h` ago by default).
    since: Option<String>,
}

/// A boolean query parameter: `true` or `false`; absent is false.
fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad(format!(
            "{name}={other:?}: expected true or false"
        ))),
    }
}

/// A point in time as a user writes it: RFC 3339 (`2026-12-03T10:00:00Z`),
/// a duration ago (`1h`), or nanoseconds since the epoch.
fn time_point(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        let since = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| ApiError::bad(format!("{name}={value:?} is before 1970")))?;
        return Ok(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
    }
    time_bound(name, value)
}

/// The cluster in force at `at`, rebuilt from the history, or the current
/// snapshot when `at` is absent.
fn cluster_at(state: &AppState, at: Option<&str>) -> Result<Arc<Cluster>, ApiError> {
    let Some(at) = at.filter(|a| !a.is_empty()) else {
        return Ok(state.cluster.load().cluster.clone());
    };
    let t = time_point("at", at)?;
    let history = crate::cluster::state::lock(&state.history);
    let Some((inputs, generation)) = history.inputs_at(t) else {
        return Err(ApiError::NotFound {
            message: format!(
                "at={at:?}: the cluster history starts later (no state recorded then)"
            ),
        });
    };
    drop(history);
    let (cluster, _invalid) = Cluster::build_lenient(
        inputs.namespaces.iter().map(|n| n.as_ref()),
        inputs.pods.iter().map(|p| p.as_ref()),
        inputs.policies.iter().map(|p| p.as_ref()),
        generation,
    );
    Ok(Arc::new(cluster))
}

/// A side of a connection as the user named it.
enum Side {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
}

impl Side {
    fn parse(name: &str, value: Option<&str>) -> Result<Side, ApiError> {
        let value = value.ok_or_else(|| {
            ApiError::bad(format!(
                "{name} is required: namespace/pod or an IP address"
            ))
        })?;
        if let Ok(ip) = value.parse() {
            return Ok(Side::Ip(ip));
        }
        match value.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Ok(Side::Pod {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
            }),
            _ => Err(ApiError::bad(format!(
                "{name}={value:?}: expected namespace/pod or an IP address"
            ))),
        }
    }

    fn endpoint(&self, cluster: &Cluster) -> Result<Endpoint, ApiError> {
        match self {
            Side::Ip(ip) => Ok(cluster.endpoint_for_ip(*ip)),
            Side::Pod { namespace, name } => cluster
                .find_pod(namespace, name)
                .map(|pod| cluster.pod_endpoint(pod, None))
                .ok_or_else(|| ApiError::NotFound {
                    message: format!("no pod {namespace}/{name} in the cluster"),
                }),
        }
    }

    /// This side in the `src` or `dst` columns.
    fn predicate(&self, side: &str) -> Expr {
        match self {
            Side::Ip(ip) => filter::eq(&format!("{side}_ip"), ip.to_string()),
            Side::Pod { namespace, name } => filter::eq(&format!("{side}_namespace"), namespace)
                .and(filter::eq(&format!("{side}_pod"), name)),
        }
    }
}

/// A connection as the user names it: both ends, the port, the protocol
/// (TCP unless given).
fn connection(
    from: Option<&str>,
    to: Option<&str>,
    port: Option<&str>,
    protocol: Option<&str>,
) -> Result<(Side, Side, u16, Protocol), ApiError> {
    let from = Side::parse("from", from)?;
    let to = Side::parse("to", to)?;
    let port_text = port.ok_or_else(|| ApiError::bad("port is required"))?;
    let port: u16 = port_text
        .parse()
        .map_err(|_| ApiError::bad(format!("port={port_text:?}: expected 0-65535")))?;
    let protocol: Protocol = match protocol {
        None => Protocol::Tcp,
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::bad(format!("protocol={text:?}: {e}")))?,
    };
    Ok((from, to, port, protocol))
}

async fn explain(
    State(state): State<AppState>,
    Query(p): Query<ExplainParams>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, port, protocol) = connection(
        p.from.as_deref(),
        p.to.as_deref(),
        p.port.as_deref(),
        p.protocol.as_deref(),
    )?;
    let suggest = flag("suggest", p.suggest.as_deref())?;
    let at = p.at.as_deref().filter(|a| !a.is_empty());
    let since = p.since.as_deref().filter(|s| !s.is_empty());
    if suggest && at.is_some() {
        return Err(ApiError::bad(
            "suggest=true proposes changes to the policies in force now: it cannot be combined with at",
        ));
    }
    if !suggest && since.is_some() {
        return Err(ApiError::bad(
            "since is the window of suggest=true: give both",
        ));
    }
    // Suggestions are built on the snapshot's objects: one snapshot for both.
    let snapshot = suggest.then(|| state.cluster.load());
    let cluster = &match &snapshot {
        Some(s) => s.cluster.clone(),
        None => cluster_at(&state, at)?,
    };
    let (src, dst) = (from.endpoint(cluster)?, to.endpoint(cluster)?);
    let to_name = p.to_name.as_deref().filter(|n| !n.is_empty());
    let explanation = cluster.explain_named(&src, &dst, to_name, port, protocol);
    let allowed = explanation.allowed;
    let explanation = serde_json::to_value(&explanation).map_err(|e| ApiError::Internal {
        message: e.to_string(),
    })?;
    // The connection's own packets, and its replies (which go the other way).
    let port_is = |column: &str| filter::col(column).eq(filter::lit(port));
    let forward = from
        .predicate("src")
        .and(to.predicate("dst"))
        .and(port_is("dst_port"))
        .and(filter::not(filter::col("is_reply")));
    let replies = to
        .predicate("src")
        .and(from.predicate("dst"))
        .and(port_is("src_port"))
        .and(filter::col("is_reply"));
    let seen = filter::eq("protocol", protocol.as_str()).and(forward.or(replies));
    let rows = newest_rows(&state, "flows", Some(seen), 100).await?;
    let mut answer = json!({
        "generation": cluster.generation(),
        "explanation": explanation,
        "not_policy": not_policy(allowed, port, &rows),
        "flows": rows,
    });
    if let Some(snapshot) = &snapshot {
        let c = crate::suggest::Connection {
            src,
            dst,
            port,
            protocol,
        };
        let suggestions = suggestions(&state, snapshot, &c, since).await?;
        if let (Some(a), Value::Object(s)) = (answer.as_object_mut(), suggestions) {
            a.extend(s);
        }
    }
    Ok(Json(answer))
}

/// [`crate::suggest::suggest`] under `snapshot`, as JSON.
async fn suggestions(
    state: &AppState,
    snapshot: &crate::cluster::Snapshot,
    c: &crate::suggest::Connection,
    since: Option<&str>,
) -> Result<Value, ApiError> {
    let since = time_point("since", since.unwrap_or(crate::whatif::DEFAULT_SINCE))?;
    let started = Instant::now();
    let answer = crate::suggest::suggest(&state.engine, snapshot, c, since, crate::now_ns()).await;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    let answer = answer.map_err(|e| match e {
        // The engine's own suggestions failing to apply is a bug, not input.
        crate::whatif::WhatIfRunError::Change(e) => ApiError::Internal {
            message: format!("a suggestion does not apply: {e}"),
        },
        e => whatif_error(e),
    })?;
    serde_json::to_value(&answer).map_err(|e| ApiError::Internal {
        message: e.to_string(),
    })
}

/// When the policies allow a connection and the newest judged flow of it
/// still failed for a reason that is not policy (nothing listening, no
/// route, connection tracking), what the flows say — so that Why-blocked
/// says first that the policies are not the problem. `null` otherwise.
fn not_policy(allowed: bool, port: u16, flows: &Value) -> Value {
    use flowgate_query::model::Failure;
    if !allowed {
        return Value::Null;
    }
    // Newest first; replies carry the answer, the request the judgement.
    let judged = flows.as_array().into_iter().flatten().find(|f| {
        f["is_reply"] != json!(true) && f["outcome"].as_str().is_some_and(|o| !o.is_empty())
    });
    let Some(flow) = judged else {
        return Value::Null;
    };
    let failure: Option<Failure> = flow["failure"].as_str().and_then(|f| f.parse().ok());
    let reason = flow["drop_reason"].as_str().filter(|r| !r.is_empty());
    let because = match failure {
        Some(Failure::NoListener) => {
            format!("nothing listens on port {port} at the destination: the connection was refused")
        }
        Some(Failure::Routing) => format!(
            "the kernel found no route or neighbour for it{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        Some(Failure::Conntrack) => format!(
            "connection tracking dropped its packets as invalid{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        _ => return Value::Null,
    };
    json!({
        "outcome": flow["outcome"],
        "failure": flow["failure"],
        "drop_reason": reason,
        "time": flow["time"],
        "message": format!("Not a policy problem: the policies allow this connection, but {because}."),
    })
}

async fn policies(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snapshot = state.cluster.load();
    let policies: Vec<Value> = crate::tables::policy_rows(&snapshot.cluster)
        .into_iter()
        .map(|p| {
            json!({
                "namespace": p.namespace,
                "name": p.name,
                "pod_selector": p.pod_selector,
                "policy_types": p.policy_types,
                "ingress_rules": p.ingress_rules,
                "egress_rules": p.egress_rules,
                "selected_pods": p.selected_pods,
                "yaml": p.yaml,
            })
        })
        .collect();
    let cluster_policies = cluster_policies_json(&snapshot.cluster);
    Ok(Json(json!({
        "generation": snapshot.cluster.generation(),
        "policies": policies,
        "cluster_policies": cluster_policies,
    })))
}

/// The Admin and Baseline tiers' policies, in evaluation order, with their
/// rules (as `decided_by` names them) and the pods they apply to.
fn cluster_policies_json(cluster: &Cluster) -> Vec<Value> {
    use flowgate_policy::{Direction, TierRuleId, TierSubject};
    cluster
        .cluster_policies()
        .map(|(id, p)| {
            let rules = |direction: Direction| -> Vec<Value> {
                (0..p.rules(direction).len() as u32)
                    .map(|index| {
                        let rule = cluster.tier_rule_ref(TierRuleId {
                            policy: id,
                            direction,
                            index,
                        });
                        json!({ "label": p.rule_label(direction, index), "action": rule.action, "key": rule.key })
                    })
                    .collect()
            };
            let subject = match &p.subject {
                TierSubject::Namespaces(ns) => format!("pods in namespaces {ns}"),
                TierSubject::Pods { namespaces, pods } => {
                    format!("pods {pods} in namespaces {namespaces}")
                }
            };
            let selected: Vec<String> = cluster
                .tier_selected_pods(id)
                .iter()
                .map(|pod| {
                    let pod = cluster.pod(*pod);
                    format!("{}/{}", pod.namespace, pod.name)
                })
                .collect();
            json!({
                "kind": p.kind.as_str(),
                "name": p.name,
                "tier": p.tier,
                "priority": p.priority,
                "subject": subject,
                "ingress": rules(Direction::Ingress),
                "egress": rules(Direction::Egress),
                "selected_pods": selected,
                "yaml": serde_norway::to_string(&p.object).unwrap_or_default(),
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct BlameParams {
    from: Option<String>,
    to: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    /// Only flips since then (`7d` ago by default).
    since: Option<String>,
}

/// The verdict now and every flip of it in the recorded history, with the
/// changes that caused each.
async fn blame(
    State(state): State<AppState>,
    Query(p): Query<BlameParams>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, port, protocol) = connection(
        p.from.as_deref(),
        p.to.as_deref(),
        p.port.as_deref(),
        p.protocol.as_deref(),
    )?;
    let since = time_point("since", p.since.as_deref().unwrap_or("7d"))?;
    let judge = |c: &Cluster| {
        let (src, dst) = (from.endpoint(c).ok()?, to.endpoint(c).ok()?);
        Some(c.verdict(&src, &dst, port, protocol).allowed)
    };
    let now = state.cluster.load();
    let verdict_now = judge(&now.cluster).ok_or_else(|| ApiError::NotFound {
        message: "an endpoint is not in the cluster now".into(),
    })?;
    let changes = {
        let history = crate::cluster::state::lock(&state.history);
        crate::blame::flips(&history, since, judge)
    };
    Ok(Json(json!({
        "verdict_now": crate::blame::verdict_word(verdict_now),
        "changes": changes,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfBody {
    /// Policies to apply: replace the same-named ones or add.
    #[serde(default)]
    policies_yaml: String,
    /// NetworkPolicies to delete, `namespace/name`.
    #[serde(default)]
    delete: Vec<String>,
    /// The window of observed connections (`24h` ago by default).
    since: Option<String>,
}

/// Every distinct connection observed since `since`, judged under the
/// policies in force and under the proposed change: those that flip.
async fn whatif(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<crate::whatif::Report>, ApiError> {
    let body: WhatIfBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be {{\"policies_yaml\": \"...\", \"delete\": [\"ns/name\"], \"since\": \"24h\"}}: {e}"
        ))
    })?;
    let since = body
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(crate::whatif::DEFAULT_SINCE);
    let since = time_point("since", since)?;
    let mut change = flowgate_policy::ChangeSet::default();
    let bad = |e: flowgate_policy::WhatIfError| ApiError::bad(e.to_string());
    if !body.policies_yaml.trim().is_empty() {
        change
            .add_yaml("policies_yaml", &body.policies_yaml)
            .map_err(bad)?;
    }
    for d in &body.delete {
        change.delete(d).map_err(bad)?;
    }
    let current = state.cluster.load().inputs.objects();
    let started = Instant::now();
    let report = crate::whatif::run(&state.engine, &current, &change, since, crate::now_ns()).await;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    report.map(Json).map_err(whatif_error)
}

fn whatif_error(e: crate::whatif::WhatIfRunError) -> ApiError {
    use crate::whatif::WhatIfRunError;
    match e {
        WhatIfRunError::Change(e) => ApiError::bad(e.to_string()),
        WhatIfRunError::Query(e) => e.into(),
        e @ WhatIfRunError::NoNamespace { .. } => ApiError::NotFound {
            message: e.to_string(),
        },
        e @ WhatIfRunError::Stored { .. } => ApiError::Internal {
            message: e.to_string(),
        },
    }
}

#[derive(Debug, Deserialize)]
struct AdviseParams {
    namespace: Option<String>,
    /// The window of observed connections (`7d` ago by default).
    since: Option<String>,
}

/// Least-privilege NetworkPolicies for a namespace from what it was seen
/// doing, with the what-if of applying them as proof.
async fn advise(
    State(state): State<AppState>,
    Query(p): Query<AdviseParams>,
) -> Result<Json<crate::whatif::AdviceReport>, ApiError> {
    let namespace = p
        .namespace
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad("namespace is required"))?;
    let since = p
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(crate::whatif::DEFAULT_ADVISE_SINCE);
    let since = time_point("since", since)?;
    let current = state.cluster.load().inputs.objects();
    let started = Instant::now();
    let report =
        crate::whatif::advise(&state.engine, &current, &namespace, since, crate::now_ns()).await;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    report.map(Json).map_err(whatif_error)
}

/// Every rule some stored flow was admitted by, `namespace/name/direction/index`,
/// from `rule_hits` (so the Lint page and the table agree).
const HIT_RULES_SQL: &str = "SELECT namespace || '/' || policy || '/' || direction || '/' || \
     CAST(rule_index AS VARCHAR) AS rule FROM rule_hits WHERE flows > 0";

/// The lint findings for the current cluster, plus `rule-never-hit` over
/// the stored flows.
async fn lint(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snapshot = state.cluster.load();
    let cluster = &snapshot.cluster;
    let rows = rows(run_sql(&state, HIT_RULES_SQL).await?);
    let hit: std::collections::HashSet<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("rule").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut findings = flowgate_policy::lint(cluster);
    findings.extend(flowgate_policy::rule_never_hit(
        cluster,
        "the stored flows",
        |ns, name, direction, index| hit.contains(&format!("{ns}/{name}/{direction}/{index}")),
    ));
    Ok(Json(json!({
        "generation": cluster.generation(),
        "findings": findings,
    })))
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.cluster.load().synced {
        Ok("ready\n")
    } else {
        Err(ApiError::NotReady {
            message: "the cluster state has not been loaded yet".into(),
        })
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::tables::refresh_store_metrics(&state.store, &state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(is_reply: bool, outcome: &str, failure: Option<&str>) -> Value {
        json!({"is_reply": is_reply, "outcome": outcome, "failure": failure, "drop_reason": null, "time": "t"})
    }

    #[test]
    fn an_allowed_connection_that_failed_elsewhere_is_not_a_policy_problem() {
        let refused = json!([
            flow(true, "refused", Some("no_listener")),
            flow(false, "refused", Some("no_listener"))
        ]);
        let np = not_policy(true, 9090, &refused);
        let message = np["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Not a policy problem") && message.contains("port 9090"),
            "{np}"
        );
        assert_eq!(np["failure"], "no_listener");
        assert_eq!(
            not_policy(false, 9090, &refused),
            Value::Null,
            "denied: policy is the problem"
        );
        let routed = json!([flow(false, "dropped", Some("routing"))]);
        assert!(
            not_policy(true, 80, &routed)["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no route")
        );
        let policy = json!([flow(false, "dropped", Some("policy"))]);
        assert_eq!(
            not_policy(true, 80, &policy),
            Value::Null,
            "a policy drop is a policy problem"
        );
        // The newest judged flow decides: established since.
        let fixed = json!([
            flow(false, "established", None),
            flow(false, "refused", Some("no_listener"))
        ]);
        assert_eq!(not_policy(true, 80, &fixed), Value::Null);
        assert_eq!(not_policy(true, 80, &json!([])), Value::Null);
    }
}
