//! Read-only, sandboxed SQL over the store and the cluster tables.
//!
//! User SQL goes through DataFusion's `SQLOptions` with DDL, DML and
//! statements off: no `CREATE` (so no external tables), no `INSERT`, no
//! `COPY`, no `SET`. URL tables (`SELECT * FROM 'file.parquet'`) are never
//! enabled, so queries reach only the registered tables. Every query has a
//! time limit, a row limit and a share of one memory pool (nothing spills to
//! disk: a query that needs more fails), and only so many run at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, ListBuilder, StringArray, StringBuilder, TimestampNanosecondArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::Expr;
use datafusion::prelude::col;
use futures::StreamExt;

use crate::connections::ConnectionsTable;
use crate::coverage::{PodIsolationRow, RuleHitsTable, pod_isolation_batch};
use crate::format::QueryResult;
use crate::map::MapLevel;
use crate::observed::DistinctConnection;
use crate::provider::FlowsTable;
use crate::store::FlowStore;

#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Bytes all running queries may hold together (sorts, joins,
    /// aggregations); a query that needs more fails.
    pub memory_bytes: usize,
    /// Queries running at once; one more is refused, not queued, so a
    /// client hammering the API cannot pile work up behind the limit.
    pub max_concurrent: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            memory_bytes: default_memory_bytes(),
            max_concurrent: 4,
        }
    }
}

/// The memory the collector may use: the cgroup's limit (a container's
/// `resources.limits.memory`), else the machine's.
fn available_memory() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// A quarter of [`available_memory`]: the store's buffers, ingest and the
/// cluster snapshot need the rest. 1 GiB when the memory is unknown.
fn default_memory_bytes() -> usize {
    let bytes = available_memory().map_or(1 << 30, |m| m / 4);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query's fault: syntax, unknown table or column, a refused
    /// statement. The message is DataFusion's.
    #[error("{message}")]
    BadQuery { message: String },
    #[error("query exceeded its time limit of {limit:?} (--query-timeout)")]
    Timeout { limit: Duration },
    /// The query needed more memory than the pool had left; `detail` is
    /// DataFusion's account of which operator asked for how much.
    #[error(
        "query exceeded the memory limit of {limit} bytes shared by running queries (--query-memory-limit): {detail}"
    )]
    Memory { limit: usize, detail: String },
    #[error(
        "{limit} queries are already running, the limit (--max-concurrent-queries); retry when one has finished"
    )]
    Busy { limit: usize },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let message = e.to_string();
        match e.find_root() {
            // Only the engine's own runs know the pool's size; see `run`.
            DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
                limit: 0,
                detail: detail.clone(),
            },
            DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::ParquetError(_)
            | DataFusionError::Internal(_) => QueryError::Internal { message },
            _ => QueryError::BadQuery { message },
        }
    }
}

pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
    pub node: Option<String>,
    /// JSON object text.
    pub labels: String,
    pub workload_kind: Option<String>,
    pub workload: Option<String>,
    pub host_network: bool,
    pub phase: Option<String>,
}

pub struct NamespaceRow {
    pub name: String,
    pub labels: String,
}

pub struct PolicyRow {
    pub namespace: String,
    pub name: String,
    pub pod_selector: String,
    pub policy_types: Vec<String>,
    pub ingress_rules: u32,
    pub egress_rules: u32,
    /// `namespace/pod` of every selected pod.
    pub selected_pods: Vec<String>,
    pub yaml: String,
}

/// One row of `policy_history`: a NetworkPolicy created, modified or deleted.
pub struct PolicyHistoryRow {
    pub time_ns: i64,
    pub generation: u64,
    pub namespace: String,
    pub name: String,
    /// `created`, `modified` or `deleted`.
    pub change: &'static str,
    pub before_yaml: Option<String>,
    pub after_yaml: Option<String>,
}

/// One row of `label_history`: a Pod's labels or addresses, or a
/// Namespace's labels, changed.
pub struct LabelHistoryRow {
    pub time_ns: i64,
    pub generation: u64,
    /// `Pod` or `Namespace`.
    pub kind: &'static str,
    /// The pod's namespace; a Namespace's own name.
    pub namespace: String,
    pub name: String,
    /// JSON object text; NULL when the object did not exist.
    pub before_labels: Option<String>,
    pub after_labels: Option<String>,
    /// A pod's addresses; NULL for a Namespace or a pod that did not exist.
    pub before_ips: Option<Vec<String>>,
    pub after_ips: Option<Vec<String>>,
}

fn history_head() -> Vec<Field> {
    vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("generation", DataType::UInt64, false),
    ]
}

fn history_head_columns(rows: impl Iterator<Item = (i64, u64)> + Clone) -> Vec<ArrayRef> {
    vec![
        Arc::new(
            TimestampNanosecondArray::from(rows.clone().map(|r| r.0).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(rows.map(|r| r.1).collect::<UInt64Array>()),
    ]
}

fn policy_history_batch(rows: &[PolicyHistoryRow]) -> (SchemaRef, RecordBatch) {
    let mut fields = history_head();
    fields.extend([
        utf8("namespace", false),
        utf8("name", false),
        utf8("change", false),
        utf8("before_yaml", true),
        utf8("after_yaml", true),
    ]);
    let schema = Arc::new(Schema::new(fields));
    let mut cols = history_head_columns(rows.iter().map(|r| (r.time_ns, r.generation)));
    cols.extend([
        str_array(rows.iter().map(|r| Some(r.namespace.as_str()))),
        str_array(rows.iter().map(|r| Some(r.name.as_str()))),
        str_array(rows.iter().map(|r| Some(r.change))),
        str_array(rows.iter().map(|r| r.before_yaml.as_deref())),
        str_array(rows.iter().map(|r| r.after_yaml.as_deref())),
    ]);
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("policy_history schema"),
    )
}

fn label_history_batch(rows: &[LabelHistoryRow]) -> (SchemaRef, RecordBatch) {
    let mut fields = history_head();
    fields.extend([
        utf8("kind", false),
        utf8("namespace", false),
        utf8("name", false),
        utf8("before_labels", true),
        utf8("after_labels", true),
        nullable_list_field("before_ips"),
        nullable_list_field("after_ips"),
    ]);
    let schema = Arc::new(Schema::new(fields));
    let mut cols = history_head_columns(rows.iter().map(|r| (r.time_ns, r.generation)));
    cols.extend([
        str_array(rows.iter().map(|r| Some(r.kind))),
        str_array(rows.iter().map(|r| Some(r.namespace.as_str()))),
        str_array(rows.iter().map(|r| Some(r.name.as_str()))),
        str_array(rows.iter().map(|r| r.before_labels.as_deref())),
        str_array(rows.iter().map(|r| r.after_labels.as_deref())),
        nullable_list_array(rows.iter().map(|r| r.before_ips.as_ref())),
        nullable_list_array(rows.iter().map(|r| r.after_ips.as_ref())),
    ]);
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("label_history schema"),
    )
}

/// The query engine; clones share the session.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    limits: QueryLimits,
    rule_hits: Arc<RuleHitsTable>,
    running: Arc<tokio::sync::Semaphore>,
}

fn utf8(n: &str, nullable: bool) -> Field {
    Field::new(n, DataType::Utf8, nullable)
}

pub(crate) fn list_field(n: &str) -> Field {
    Field::new(
        n,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    )
}

pub(crate) fn list_array<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for v in r {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn nullable_list_field(n: &str) -> Field {
    Field::new(
        n,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

fn nullable_list_array<'a>(rows: impl Iterator<Item = Option<&'a Vec<String>>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for v in r.into_iter().flatten() {
            b.values().append_value(v);
        }
        b.append(r.is_some());
    }
    Arc::new(b.finish())
}

fn str_array<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn pods_batch(rows: &[PodRow]) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        utf8("namespace", false),
        utf8("name", false),
        list_field("ips"),
        utf8("node", true),
        utf8("labels", false),
        utf8("workload_kind", true),
        utf8("workload", true),
        Field::new("host_network", DataType::Boolean, false),
        utf8("phase", true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        str_array(rows.iter().map(|r| Some(r.namespace.as_str()))),
        str_array(rows.iter().map(|r| Some(r.name.as_str()))),
        list_array(rows.iter().map(|r| &r.ips)),
        str_array(rows.iter().map(|r| r.node.as_deref())),
        str_array(rows.iter().map(|r| Some(r.labels.as_str()))),
        str_array(rows.iter().map(|r| r.workload_kind.as_deref())),
        str_array(rows.iter().map(|r| r.workload.as_deref())),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.host_network))
                .collect::<BooleanArray>(),
        ),
        str_array(rows.iter().map(|r| r.phase.as_deref())),
    ];
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("pods schema"),
    )
}

fn namespaces_batch(rows: &[NamespaceRow]) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        utf8("name", false),
        utf8("labels", false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        str_array(rows.iter().map(|r| Some(r.name.as_str()))),
        str_array(rows.iter().map(|r| Some(r.labels.as_str()))),
    ];
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("namespaces schema"),
    )
}

fn policies_batch(rows: &[PolicyRow]) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        utf8("namespace", false),
        utf8("name", false),
        utf8("pod_selector", false),
        list_field("policy_types"),
        Field::new("ingress_rules", DataType::UInt32, false),
        Field::new("egress_rules", DataType::UInt32, false),
        list_field("selected_pods"),
        utf8("yaml", false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        str_array(rows.iter().map(|r| Some(r.namespace.as_str()))),
        str_array(rows.iter().map(|r| Some(r.name.as_str()))),
        str_array(rows.iter().map(|r| Some(r.pod_selector.as_str()))),
        list_array(rows.iter().map(|r| &r.policy_types)),
        Arc::new(
            rows.iter()
                .map(|r| r.ingress_rules)
                .collect::<UInt32Array>(),
        ),
        Arc::new(rows.iter().map(|r| r.egress_rules).collect::<UInt32Array>()),
        list_array(rows.iter().map(|r| &r.selected_pods)),
        str_array(rows.iter().map(|r| Some(r.yaml.as_str()))),
    ];
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("policies schema"),
    )
}

/// Filters are evaluated while Parquet is decoded (most selective first),
/// so the other columns are decoded only for the rows that pass.
fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    config
}

impl QueryEngine {
    pub fn new(store: FlowStore, limits: QueryLimits) -> Result<QueryEngine, QueryError> {
        // No disk manager: a sort or join that outgrows the pool fails
        // instead of filling the store's disk with spill files.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let config = session_config().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime.clone());
        let flows: Arc<dyn TableProvider> = Arc::new(FlowsTable { store });
        ctx.register_table("flows", flows.clone())?;
        let flows_ctx = SessionContext::new_with_config_rt(session_config(), runtime.clone());
        flows_ctx.register_table("flows", flows.clone())?;
        ctx.register_table("connections", Arc::new(ConnectionsTable::new(flows_ctx)?))?;
        let rules_ctx = SessionContext::new_with_config_rt(session_config(), runtime);
        rules_ctx.register_table("flows", flows)?;
        let rule_hits = Arc::new(RuleHitsTable::new(rules_ctx)?);
        ctx.register_table("rule_hits", rule_hits.clone())?;
        let engine = QueryEngine {
            ctx,
            limits,
            rule_hits,
            running: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent)),
        };
        engine.set_cluster_tables(Vec::new(), Vec::new(), Vec::new());
        engine.set_pod_isolation(&[]);
        engine.set_history_tables(&[], &[]);
        Ok(engine)
    }

    /// Replaces the `pods`, `namespaces` and `policies` tables, and the
    /// rules `rule_hits` lists.
    pub fn set_cluster_tables(
        &self,
        pods: Vec<PodRow>,
        namespaces: Vec<NamespaceRow>,
        policies: Vec<PolicyRow>,
    ) {
        self.rule_hits
            .set_rules(&policies)
            .expect("an in-memory table registers");
        for (name, (schema, batch)) in [
            ("pods", pods_batch(&pods)),
            ("namespaces", namespaces_batch(&namespaces)),
            ("policies", policies_batch(&policies)),
        ] {
            self.replace_table(name, schema, batch);
        }
    }

    /// Replaces the `pod_isolation` table.
    pub fn set_pod_isolation(&self, rows: &[PodIsolationRow]) {
        let (schema, batch) = pod_isolation_batch(rows);
        self.replace_table("pod_isolation", schema, batch);
    }

    /// Replaces the `policy_history` and `label_history` tables.
    pub fn set_history_tables(&self, policies: &[PolicyHistoryRow], labels: &[LabelHistoryRow]) {
        let (schema, batch) = policy_history_batch(policies);
        self.replace_table("policy_history", schema, batch);
        let (schema, batch) = label_history_batch(labels);
        self.replace_table("label_history", schema, batch);
    }

    fn replace_table(&self, name: &str, schema: SchemaRef, batch: RecordBatch) {
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("batch matches schema");
        // register_table replaces a table of the same name.
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(name, Arc::new(table))
            .expect("register table");
    }

    /// Runs one read-only query within the limits.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.run(async { Ok(self.ctx.sql_with_options(sql, options).await?) })
            .await
    }

    /// The newest rows of `table` (`flows` or `connections`) matching
    /// `filter`, at most `limit` (and the row limit): the API's lists, built
    /// as expressions (see [`crate::filter`]), never as SQL text.
    pub async fn newest(
        &self,
        table: &str,
        filter: Option<Expr>,
        limit: usize,
    ) -> Result<QueryResult, QueryError> {
        self.run(async {
            let mut df = self.ctx.table(table).await?;
            if let Some(f) = filter {
                df = df.filter(f)?;
            }
            Ok(df
                .sort(vec![col("time").sort(false, true)])?
                .limit(0, Some(limit))?)
        })
        .await
    }

    /// The distinct connections observed with `time` in `[since_ns,
    /// until_ns]` (see [`crate::observed`]). More groups than the row limit
    /// is an error, never a silently shortened answer.
    pub async fn distinct_connections(
        &self,
        since_ns: i64,
        until_ns: i64,
    ) -> Result<Vec<DistinctConnection>, QueryError> {
        let result = self
            .run(async {
                Ok(self
                    .ctx
                    .sql(crate::observed::SQL)
                    .await?
                    .with_param_values(crate::observed::params(since_ns, until_ns))?)
            })
            .await?;
        if result.truncated {
            return Err(QueryError::BadQuery {
                message: format!(
                    "more than {} distinct connections in the window: choose a shorter one",
                    self.limits.max_rows
                ),
            });
        }
        crate::observed::fold(&result.batches)
    }

    /// The map's edges at `level` over the connections matching `filter`
    /// (see [`crate::map`]).
    pub async fn map(
        &self,
        level: &MapLevel,
        filter: Option<Expr>,
    ) -> Result<QueryResult, QueryError> {
        self.run(async {
            let mut df = self.ctx.table("connections").await?;
            if let Some(f) = filter {
                df = df.filter(f)?;
            }
            Ok(crate::map::edges(df, level)?)
        })
        .await
    }

    /// Plans with `plan`, then runs it within the limits.
    async fn run(
        &self,
        plan: impl Future<Output = Result<DataFrame, QueryError>>,
    ) -> Result<QueryResult, QueryError> {
        let limits = self.limits;
        let _turn = self.running.try_acquire().map_err(|_| QueryError::Busy {
            limit: limits.max_concurrent,
        })?;
        self.run_within(plan).await.map_err(|e| match e {
            QueryError::Memory { detail, .. } => QueryError::Memory {
                limit: limits.memory_bytes,
                detail,
            },
            other => other,
        })
    }

    async fn run_within(
        &self,
        plan: impl Future<Output = Result<DataFrame, QueryError>>,
    ) -> Result<QueryResult, QueryError> {
        let start = Instant::now();
        let limits = self.limits;
        let run = async {
            let df = plan.await?;
            let mut stream = df.execute_stream().await?;
            let schema = stream.schema();
            let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if rows + batch.num_rows() > limits.max_rows {
                    batches.push(batch.slice(0, limits.max_rows - rows));
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok::<_, QueryError>((schema, batches, truncated))
        };
        let (schema, batches, truncated) = tokio::time::timeout(limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout {
                limit: limits.timeout,
            })??;
        Ok(QueryResult {
            schema,
            batches,
            truncated,
            elapsed: start.elapsed(),
        })
    }
}
