//! The `flows` table: memory batches and Parquet partitions as one table,
//! pruned by the query's time filters before any file is opened.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{ScalarValue, internal_datafusion_err};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::{ParquetError, Result as ParquetResult};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::union::UnionExec;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::memory::Chunk;
use crate::model::flows_schema;
use crate::store::{FlowStore, PartFile};

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

/// Where the images in memory seem to lie, for DataFusion's file scan: a
/// path names the chunk by its place in the query's snapshot.
const CHUNK_PREFIX: &str = "flowgate-memory/chunk-";

/// Opens the Parquet images in memory of one query's snapshot, with the
/// metadata parsed when they were encoded: a scan of them prunes and
/// decodes as a scan of files does, without a copy.
#[derive(Debug)]
struct ChunkReaders {
    chunks: Vec<Chunk>,
}

impl ParquetFileReaderFactory for ChunkReaders {
    fn create_reader(
        &self,
        _partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.as_ref();
        let chunk = location
            .strip_prefix(CHUNK_PREFIX)
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| self.chunks.get(i))
            .ok_or_else(|| internal_datafusion_err!("no chunk in memory at {location}"))?;
        Ok(Box::new(ChunkReader {
            bytes: chunk.parquet.clone(),
            metadata: chunk.metadata.clone(),
        }))
    }
}

struct ChunkReader {
    bytes: Bytes,
    metadata: Arc<ParquetMetaData>,
}

impl AsyncFileReader for ChunkReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        let len = self.bytes.len() as u64;
        let out = if range.start <= range.end && range.end <= len {
            Ok(self.bytes.slice(range.start as usize..range.end as usize))
        } else {
            Err(ParquetError::EOF(format!(
                "bytes {range:?} of a {len}-byte chunk in memory"
            )))
        };
        futures::future::ready(out).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        futures::future::ready(Ok(self.metadata.clone())).boxed()
    }
}

/// `files` spread over `n` groups (one per partition of the query), the
/// biggest first, each to the group with the fewest bytes so far.
fn file_groups(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n.max(1)];
    for f in files {
        let g = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        g.0 += f.object_meta.size;
        g.1.push(f);
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// A Parquet scan of `files` with the session's Parquet options (filters
/// evaluated while decoding, page index, bloom filters): the predicate is
/// pushed in by DataFusion's optimizer, as for a listing table.
fn parquet_scan(
    state: &dyn Session,
    files: Vec<PartitionedFile>,
    readers: Arc<dyn ParquetFileReaderFactory>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let options = TableParquetOptions {
        global: state.config_options().execution.parquet.clone(),
        ..TableParquetOptions::default()
    };
    let source = ParquetSource::new(flows_schema())
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(readers);
    let n = state.config().target_partitions();
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(file_groups(files, n))
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// The Parquet images in memory, scanned like files.
fn chunk_scan(
    state: &dyn Session,
    chunks: Vec<Chunk>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let files = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| PartitionedFile::new(format!("{CHUNK_PREFIX}{i}"), c.parquet.len() as u64))
        .collect();
    parquet_scan(
        state,
        files,
        Arc::new(ChunkReaders { chunks }),
        projection,
        limit,
    )
}

/// The store's Parquet files: their sizes are known, so nothing is listed;
/// their footers are cached by the session (the files never change).
fn file_scan(
    state: &dyn Session,
    files: Vec<PartFile>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let url = ObjectStoreUrl::local_filesystem();
    let store = state.runtime_env().object_store(&url)?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let files = files
        .iter()
        .map(|f| Ok(PartitionedFile::new(location(&f.path)?, f.bytes)))
        .collect::<Result<Vec<_>>>()?;
    let readers = Arc::new(CachedParquetFileReaderFactory::new(store, cache));
    parquet_scan(state, files, readers, projection, limit)
}

/// Where the local file store finds `path` (a relative one is taken from
/// the working directory, as the store's directory may be given).
fn location(path: &std::path::Path) -> Result<String> {
    let not_a_path = |e: &dyn std::fmt::Display| {
        internal_datafusion_err!("{}: not a path for a scan: {e}", path.display())
    };
    let absolute = std::path::absolute(path).map_err(|e| not_a_path(&e))?;
    datafusion::object_store::path::Path::from_absolute_path(&absolute)
        .map(|p| p.to_string())
        .map_err(|e| not_a_path(&e))
}

/// The newest rows, still Arrow, spread over the session's partitions.
async fn arrow_scan(
    state: &dyn Session,
    batches: Vec<RecordBatch>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let n = state.config().target_partitions().max(1);
    let mut parts = vec![Vec::new(); n];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % n].push(b);
    }
    MemTable::try_new(flows_schema(), parts)?
        .scan(state, projection, filters, limit)
        .await
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
        let mut plans = Vec::new();
        // An empty memory table stands in when there is nothing at all.
        if !snapshot.batches.is_empty() || snapshot.chunks.is_empty() && snapshot.files.is_empty() {
            plans.push(arrow_scan(state, snapshot.batches, projection, filters, limit).await?);
        }
        if !snapshot.chunks.is_empty() {
            plans.push(chunk_scan(state, snapshot.chunks, projection, limit)?);
        }
        if !snapshot.files.is_empty() {
            plans.push(file_scan(state, snapshot.files, projection, limit)?);
        }
        if plans.len() == 1 {
            return Ok(plans.remove(0));
        }
        UnionExec::try_new(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_store_path_is_found_from_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        let relative = location(std::path::Path::new("data/flows/0/1-00000.parquet")).unwrap();
        let absolute = location(&cwd.join("data/flows/0/1-00000.parquet")).unwrap();
        assert_eq!(relative, absolute);
        assert!(
            relative.ends_with("data/flows/0/1-00000.parquet"),
            "{relative}"
        );
    }

    #[test]
    fn files_are_spread_over_the_partitions_by_size() {
        let files = [50, 10, 30, 30, 20]
            .iter()
            .enumerate()
            .map(|(i, size)| PartitionedFile::new(format!("f{i}"), *size))
            .collect();
        let sizes: Vec<u64> = file_groups(files, 2)
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(sizes, vec![70, 70]);
        let one = vec![PartitionedFile::new("f", 1)];
        assert_eq!(file_groups(one, 4).len(), 1, "no empty groups");
    }
}
