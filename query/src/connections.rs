//! The `connections` table: the observations of one connection merged into
//! one row per window (docs/flow-model.md).
//!
//! A connection is seen up to four times in `flows`: leaving the source's
//! pod, arriving at the destination's pod, and its replies at both. Each
//! observation is mapped to the point that saw it (`source` or
//! `destination`) and to the connection it belongs to (a reply's source is
//! the connection's destination), then grouped per protocol, both addresses
//! and ports, and window. The plan is built from one fixed SQL text with the
//! time bounds as parameters, so that time filters on `connections` prune
//! `flows` partitions like they do on `flows`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::provider::time_bounds;

/// Width of a connection window: observations of one connection within it
/// become one row. Longer than a probe's export window, so that the source's
/// and the destination's reports of the same packets meet.
pub const WINDOW_NS: i64 = 60_000_000_000;

/// Observations of a connection (`$1`, `$2`: time bounds, whole windows).
const SQL: &str = r#"
WITH o AS (
  SELECT
    time, last_seen, protocol, is_reply, packets, bytes,
    CASE WHEN is_reply THEN dst_ip ELSE src_ip END AS c_ip,
    CASE WHEN is_reply THEN dst_port ELSE src_port END AS c_port,
    CASE WHEN is_reply THEN src_ip ELSE dst_ip END AS s_ip,
    CASE WHEN is_reply THEN src_port ELSE dst_port END AS s_port,
    CASE WHEN is_reply THEN dst_namespace ELSE src_namespace END AS c_namespace,
    CASE WHEN is_reply THEN dst_pod ELSE src_pod END AS c_pod,
    CASE WHEN is_reply THEN dst_workload ELSE src_workload END AS c_workload,
    CASE WHEN is_reply THEN dst_workload_kind ELSE src_workload_kind END AS c_workload_kind,
    CASE WHEN is_reply THEN dst_labels ELSE src_labels END AS c_labels,
    CASE WHEN is_reply THEN dst_dns_name ELSE src_dns_name END AS c_dns_name,
    CASE WHEN is_reply THEN src_namespace ELSE dst_namespace END AS s_namespace,
    CASE WHEN is_reply THEN src_pod ELSE dst_pod END AS s_pod,
    CASE WHEN is_reply THEN src_workload ELSE dst_workload END AS s_workload,
    CASE WHEN is_reply THEN src_workload_kind ELSE dst_workload_kind END AS s_workload_kind,
    CASE WHEN is_reply THEN src_labels ELSE dst_labels END AS s_labels,
    CASE WHEN is_reply THEN src_dns_name ELSE dst_dns_name END AS s_dns_name,
    verdict, egress_verdict, ingress_verdict, egress_tier, ingress_tier,
    allowed_by, denied_by, decided_by, policy_generation,
    kernel_fate, drop_reason, outcome, failure, enforcement_mismatch,
    -- Leaving a pod is the source's point for the connection's packets and
    -- the destination's for its replies.
    CASE WHEN direction = 'unknown' THEN NULL
         WHEN (direction = 'egress') <> is_reply THEN 'source'
         ELSE 'destination' END AS point,
    date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS win
  FROM flows
  WHERE time >= $1 AND time <= $2
)
SELECT
  min(time) AS time,
  max(last_seen) AS last_seen,
  protocol,
  c_ip AS src_ip, c_port AS src_port, s_ip AS dst_ip, s_port AS dst_port,
  max(c_namespace) AS src_namespace, max(c_pod) AS src_pod,
  max(c_workload) AS src_workload, max(c_workload_kind) AS src_workload_kind,
  max(c_labels) AS src_labels, max(c_dns_name) AS src_dns_name,
  max(s_namespace) AS dst_namespace, max(s_pod) AS dst_pod,
  max(s_workload) AS dst_workload, max(s_workload_kind) AS dst_workload_kind,
  max(s_labels) AS dst_labels, max(s_dns_name) AS dst_dns_name,
  -- last_value has a fast grouped form for plain text, not for dictionaries
  -- or lists: enums are compared as text and cast back, and a list travels
  -- as one comma-joined text (Kubernetes names have no comma).
  arrow_cast(last_value(CAST(verdict AS VARCHAR) ORDER BY last_seen), 'Dictionary(Int32, Utf8)') AS verdict,
  arrow_cast(last_value(CAST(egress_verdict AS VARCHAR) ORDER BY last_seen), 'Dictionary(Int32, Utf8)') AS egress_verdict,
  arrow_cast(last_value(CAST(ingress_verdict AS VARCHAR) ORDER BY last_seen), 'Dictionary(Int32, Utf8)') AS ingress_verdict,
  arrow_cast(last_value(CAST(egress_tier AS VARCHAR) ORDER BY last_seen), 'Dictionary(Int32, Utf8)') AS egress_tier,
  arrow_cast(last_value(CAST(ingress_tier AS VARCHAR) ORDER BY last_seen), 'Dictionary(Int32, Utf8)') AS ingress_tier,
  string_to_array(last_value(array_to_string(allowed_by, ',') ORDER BY last_seen), ',') AS allowed_by,
  string_to_array(last_value(array_to_string(denied_by, ',') ORDER BY last_seen), ',') AS denied_by,
  string_to_array(last_value(array_to_string(decided_by, ',') ORDER BY last_seen), ',') AS decided_by,
  max(policy_generation) AS policy_generation,
  CASE WHEN bool_or(point = 'source') AND bool_or(point = 'destination') THEN 'both'
       WHEN bool_or(point = 'source') THEN 'source'
       WHEN bool_or(point = 'destination') THEN 'destination' END AS observed_at,
  CAST(COALESCE(
    sum(CASE WHEN NOT is_reply AND point = 'source' THEN packets END),
    sum(CASE WHEN NOT is_reply AND point = 'destination' THEN packets END),
    sum(CASE WHEN NOT is_reply THEN packets END), 0) AS BIGINT UNSIGNED) AS packets_sent,
  CAST(COALESCE(
    sum(CASE WHEN NOT is_reply AND point = 'source' THEN bytes END),
    sum(CASE WHEN NOT is_reply AND point = 'destination' THEN bytes END),
    sum(CASE WHEN NOT is_reply THEN bytes END), 0) AS BIGINT UNSIGNED) AS bytes_sent,
  CAST(COALESCE(sum(CASE WHEN NOT is_reply AND point = 'destination' AND kernel_fate = 'forwarded'
    THEN packets END), 0) AS BIGINT UNSIGNED) AS packets_delivered,
  CAST(COALESCE(sum(CASE WHEN NOT is_reply AND point = 'destination' AND kernel_fate = 'forwarded'
    THEN bytes END), 0) AS BIGINT UNSIGNED) AS bytes_delivered,
  CAST(COALESCE(
    sum(CASE WHEN is_reply AND point = 'source' THEN packets END),
    sum(CASE WHEN is_reply THEN packets END), 0) AS BIGINT UNSIGNED) AS reply_packets,
  CAST(COALESCE(
    sum(CASE WHEN is_reply AND point = 'source' THEN bytes END),
    sum(CASE WHEN is_reply THEN bytes END), 0) AS BIGINT UNSIGNED) AS reply_bytes,
  CASE WHEN bool_or(kernel_fate = 'dropped') THEN 'dropped' ELSE 'forwarded' END AS kernel_fate,
  max(drop_reason) AS drop_reason,
  -- Where it was dropped: the denying direction's side when the policies
  -- deny one side only; else the side whose observation was dropped.
  CASE WHEN NOT bool_or(kernel_fate = 'dropped') THEN NULL
       WHEN last_value(CAST(egress_verdict AS VARCHAR) ORDER BY last_seen) = 'denied' THEN 'source_egress'
       WHEN last_value(CAST(ingress_verdict AS VARCHAR) ORDER BY last_seen) = 'denied' THEN 'destination_ingress'
       WHEN bool_or(kernel_fate = 'dropped' AND point = 'destination') THEN 'destination_ingress'
       ELSE 'source_egress' END AS dropped_at,
  max(outcome) AS outcome,
  max(failure) AS failure,
  bool_or(enforcement_mismatch) AS enforcement_mismatch,
  CAST(count(*) AS BIGINT UNSIGNED) AS observations
FROM o
GROUP BY win, protocol, c_ip, c_port, s_ip, s_port
"#;

/// The `connections` table over the `flows` table of `flows_ctx`.
pub(crate) struct ConnectionsTable {
    /// A context holding only `flows`: the plan is made there.
    flows_ctx: SessionContext,
    schema: SchemaRef,
}

fn ts(ns: i64) -> ScalarValue {
    ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into()))
}

impl ConnectionsTable {
    pub(crate) fn new(flows_ctx: SessionContext) -> Result<Self> {
        // Planning reads only in-memory catalogs: nothing here really waits.
        let df = futures::executor::block_on(flows_ctx.sql(SQL))?.with_param_values(
            ParamValues::List(vec![ts(i64::MIN).into(), ts(i64::MAX).into()]),
        )?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok(ConnectionsTable { flows_ctx, schema })
    }
}

impl std::fmt::Debug for ConnectionsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionsTable").finish_non_exhaustive()
    }
}

/// `[lo, hi]` widened to whole windows: a connection's row needs every
/// observation of its window.
fn whole_windows(lo: i64, hi: i64) -> (i64, i64) {
    let lo = if lo == i64::MIN {
        lo
    } else {
        lo - lo.rem_euclid(WINDOW_NS)
    };
    let hi = if hi == i64::MAX {
        hi
    } else {
        (hi - hi.rem_euclid(WINDOW_NS)).saturating_add(WINDOW_NS - 1)
    };
    (lo, hi)
}

#[async_trait]
impl TableProvider for ConnectionsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Time bounds only prune; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (lo, hi) = time_bounds(filters);
        let (lo, hi) = whole_windows(lo, hi);
        let mut df = self
            .flows_ctx
            .sql(SQL)
            .await?
            .with_param_values(ParamValues::List(vec![ts(lo).into(), ts(hi).into()]))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_widen_to_whole_windows() {
        let w = WINDOW_NS;
        assert_eq!(whole_windows(w + 5, 2 * w + 1), (w, 3 * w - 1));
        assert_eq!(whole_windows(i64::MIN, i64::MAX), (i64::MIN, i64::MAX));
        assert_eq!(whole_windows(-1, -1), (-w, -1));
    }
}
