//! Policy coverage tables: `rule_hits` (which rules of the current policies
//! admitted stored traffic, and which never fired) and `pod_isolation`
//! (which pods no policy selects, per direction).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::PolicyRow;

/// The rules of the current policies, one row each; `rule` is the text
/// `allowed_rules` holds (`namespace/name/ingress/0`).
const RULES: &str = "policy_rules";

/// Hits per rule over every stored flow. A connection is counted as in the
/// `connections` table: one per protocol, client and server address and
/// port, and one-minute window (replies fold into the connection).
const SQL: &str = r#"
WITH hit AS (
  SELECT
    unnest(allowed_rules) AS rule, time, last_seen, protocol,
    CASE WHEN is_reply THEN dst_ip ELSE src_ip END AS c_ip,
    CASE WHEN is_reply THEN dst_port ELSE src_port END AS c_port,
    CASE WHEN is_reply THEN src_ip ELSE dst_ip END AS s_ip,
    CASE WHEN is_reply THEN src_port ELSE dst_port END AS s_port,
    date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS win
  FROM flows
), per_connection AS (
  SELECT rule, count(*) AS flows, min(time) AS first_hit, max(last_seen) AS last_hit
  FROM hit
  GROUP BY rule, win, protocol, c_ip, c_port, s_ip, s_port
), per_rule AS (
  SELECT rule, count(*) AS connections, sum(flows) AS flows,
    min(first_hit) AS first_hit, max(last_hit) AS last_hit
  FROM per_connection
  GROUP BY rule
)
SELECT
  r.namespace, r.policy, r.direction, r.rule_index,
  CAST(COALESCE(h.connections, 0) AS BIGINT UNSIGNED) AS connections,
  CAST(COALESCE(h.flows, 0) AS BIGINT UNSIGNED) AS flows,
  h.first_hit, h.last_hit
FROM policy_rules r LEFT JOIN per_rule h ON h.rule = r.rule
"#;

/// The `rule_hits` table: planned at each query over the context's `flows`
/// and the rules of the snapshot last given to [`RuleHitsTable::set_rules`].
pub(crate) struct RuleHitsTable {
    /// Holds `flows` and `policy_rules` only: users never see the latter.
    ctx: SessionContext,
    schema: SchemaRef,
}

impl std::fmt::Debug for RuleHitsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHitsTable").finish_non_exhaustive()
    }
}

impl RuleHitsTable {
    /// `ctx` must hold `flows`.
    pub(crate) fn new(ctx: SessionContext) -> Result<Self> {
        let table = RuleHitsTable {
            ctx,
            schema: Arc::new(Schema::empty()),
        };
        table.set_rules(&[])?;
        // Planning reads only in-memory catalogs: nothing here really waits.
        let df = futures::executor::block_on(table.ctx.sql(SQL))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok(RuleHitsTable { schema, ..table })
    }

    /// Replaces the rules with those of `policies`.
    pub(crate) fn set_rules(&self, policies: &[PolicyRow]) -> Result<()> {
        let batch = rules_batch(policies);
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        // Replaces the previous snapshot's rules.
        self.ctx.deregister_table(RULES)?;
        self.ctx.register_table(RULES, Arc::new(table))?;
        Ok(())
    }
}

fn rules_batch(policies: &[PolicyRow]) -> RecordBatch {
    let (mut rule, mut namespace, mut policy, mut direction, mut index) =
        (vec![], vec![], vec![], vec![], vec![]);
    for p in policies {
        for (dir, count) in [("ingress", p.ingress_rules), ("egress", p.egress_rules)] {
            for i in 0..count {
                rule.push(format!("{}/{}/{dir}/{i}", p.namespace, p.name));
                namespace.push(p.namespace.as_str());
                policy.push(p.name.as_str());
                direction.push(dir);
                index.push(i);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("rule", DataType::Utf8, false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        Field::new("rule_index", DataType::UInt32, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(rule)),
        Arc::new(StringArray::from(namespace)),
        Arc::new(StringArray::from(policy)),
        Arc::new(StringArray::from(direction)),
        Arc::new(UInt32Array::from(index)),
    ];
    RecordBatch::try_new(schema, cols).expect("policy_rules schema")
}

#[async_trait]
impl TableProvider for RuleHitsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut df = self.ctx.sql(SQL).await?;
        if let Some(p) = projection {
            let names: Vec<&str> = p
                .iter()
                .map(|i| self.schema.field(*i).name().as_str())
                .collect();
            df = df.select_columns(&names)?;
        }
        if let Some(n) = limit {
            df = df.limit(0, Some(n))?;
        }
        state.create_physical_plan(df.logical_plan()).await
    }
}

/// One row of `pod_isolation`: whether any NetworkPolicy selects the pod,
/// per direction, and which.
pub struct PodIsolationRow {
    pub namespace: String,
    pub pod: String,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    /// `namespace/name` of every NetworkPolicy selecting the pod.
    pub policies: Vec<String>,
}

pub(crate) fn pod_isolation_batch(rows: &[PodIsolationRow]) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("pod", DataType::Utf8, false),
        Field::new("ingress_isolated", DataType::Boolean, false),
        Field::new("egress_isolated", DataType::Boolean, false),
        crate::engine::list_field("policies"),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.namespace),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.pod))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.ingress_isolated)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.egress_isolated)),
        )),
        crate::engine::list_array(rows.iter().map(|r| &r.policies)),
    ];
    (
        schema.clone(),
        RecordBatch::try_new(schema, cols).expect("pod_isolation schema"),
    )
}
