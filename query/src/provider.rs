//! The `flows` table: memory batches and Parquet partitions as one table,
//! pruned by the query's time filters before any file is opened.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use crate::memory::decode;
use crate::model::flows_schema;
use crate::store::FlowStore;

#[derive(Debug)]
pub(crate) struct FlowsTable {
    pub store: FlowStore,
}

/// The `[lo, hi]` (ns, inclusive) that the filters allow for `time`.
pub fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let mut b = (i64::MIN, i64::MAX);
    for f in filters {
        narrow(f, &mut b);
    }
    b
}

fn ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn narrow(e: &Expr, b: &mut (i64, i64)) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return;
    };
    if *op == Operator::And {
        narrow(left, b);
        narrow(right, b);
        return;
    }
    // `time OP literal`, or `literal OP time` (flipped).
    let (op, lit) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == "time" => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == "time" => match op.swap() {
            Some(o) => (o, v),
            None => return,
        },
        _ => return,
    };
    let Some(t) = ns(lit) else { return };
    match op {
        Operator::Gt | Operator::GtEq => b.0 = b.0.max(t),
        Operator::Lt | Operator::LtEq => b.1 = b.1.min(t),
        Operator::Eq => {
            b.0 = b.0.max(t);
            b.1 = b.1.min(t);
        }
        _ => {}
    }
}

/// The rows in memory with only the projected columns: the Arrow batches
/// projected, the Parquet chunks decoded.
fn memory_batches(
    batches: Vec<RecordBatch>,
    chunks: &[Bytes],
    projection: Option<&Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = match projection {
        Some(p) => Arc::new(flows_schema().project(p)?),
        None => flows_schema(),
    };
    let mut out = Vec::with_capacity(batches.len() + chunks.len());
    for b in batches {
        out.push(match projection {
            Some(p) => b.project(p)?,
            None => b,
        });
    }
    for c in chunks {
        out.extend(decode(c, projection.map(Vec::as_slice))?);
    }
    Ok((schema, out))
}

#[async_trait]
impl TableProvider for FlowsTable {
    fn schema(&self) -> SchemaRef {
        flows_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still applies every filter.
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
        let snapshot = self.store.snapshot(lo, hi);
        let files = snapshot.files;
        let (schema, memory) = memory_batches(snapshot.batches, &snapshot.chunks, projection)?;
        // Spread memory batches over the session's partitions for parallelism.
        let n = state.config().target_partitions().max(1);
        let mut parts = vec![Vec::new(); n];
        for (i, b) in memory.into_iter().enumerate() {
            parts[i % n].push(b);
        }
        let mut plans = vec![
            MemTable::try_new(schema, parts)?
                .scan(state, None, filters, limit)
                .await?,
        ];
        if !files.is_empty() {
            let urls = files
                .iter()
                .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
                .collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(flows_schema());
            let table = ListingTable::try_new(config)?;
            plans.push(table.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}
