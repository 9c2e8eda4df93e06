//! The rows in memory: the newest appends as Arrow batches, and every
//! `chunk_rows` rows of them (see [`crate::StoreConfig`]) encoded once as a
//! Parquet file image (a [`Chunk`]), sorted and compressed as it will lie on disk. Encoding runs
//! without the store's lock: the rows stay queried as Arrow meanwhile. A chunk costs
//! about a tenth of its Arrow form, a query decodes only the columns it
//! reads, and a flush writes the chunks' bytes as they are.

use std::sync::Arc;

use bytes::Bytes;
use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, concat, interleave_record_batch, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use crate::model::flows_schema;

/// Rows are encoded in this order: one source pod's rows sit together, so
/// row-group and page statistics of the pod columns let a query naming a
/// pod skip the rest, and runs of equal source columns compress to almost
/// nothing; within a pod, by time.
const SORT_COLUMNS: [&str; 3] = ["src_namespace", "src_pod", "time"];
/// Rows per Parquet page: small enough for the page index to prune by.
const PAGE_ROWS: usize = 8_192;
/// Columns with a bloom filter (a pod looked up by name skips the files
/// that do not hold it), and the distinct values a file is expected to
/// hold (it sizes the filter).
const BLOOM_COLUMNS: [&str; 2] = ["src_pod", "dst_pod"];
const BLOOM_NDV: u64 = 8_192;
/// Timestamps grow within a pod's run: delta-encoded, not dictionary-encoded.
const DELTA_COLUMNS: [&str; 2] = ["time", "last_seen"];

/// A Parquet file image of rows of one time partition.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub parquet: Bytes,
    /// Its footer and page index, parsed once: a query prunes by them
    /// without parsing them again.
    pub metadata: Arc<ParquetMetaData>,
    pub rows: usize,
    pub partition_start_ns: i64,
    pub min_ns: i64,
    pub max_ns: i64,
}

/// What a flush takes from memory: chunks already encoded, and Arrow rows
/// it encodes itself (off the store's lock).
#[derive(Clone, Debug)]
pub(crate) enum Frozen {
    Chunk(Chunk),
    Rows(RecordBatch),
}

impl Frozen {
    fn bytes(&self) -> u64 {
        match self {
            Frozen::Chunk(c) => c.bytes(),
            Frozen::Rows(b) => arrow_bytes(b),
        }
    }
}

/// Arrow rows taken out to be encoded without the store's lock; they stay
/// queried as Arrow until [`Memory::finish`] swaps the chunks in.
pub(crate) struct ToEncode {
    id: u64,
    pub batches: Vec<RecordBatch>,
}

/// Rows appended since the last flush began.
pub(crate) struct Memory {
    /// Arrow rows gathered before they are encoded as one chunk.
    chunk_rows: usize,
    pub chunks: Vec<Chunk>,
    /// The newest rows, not yet encoded.
    small: Vec<RecordBatch>,
    small_rows: usize,
    /// Rows being encoded off the lock, by [`ToEncode`] id.
    encoding: Vec<(u64, Vec<RecordBatch>)>,
    /// Rows whose encoding failed: kept as Arrow, a flush encodes them again.
    unencoded: Vec<RecordBatch>,
    /// Ids stay unique across [`Memory::freeze`], so an encoding that ends
    /// after a flush took its rows is recognised and dropped.
    next_id: u64,
    /// Rows in memory, in any form.
    pub rows: usize,
    /// Bytes held: the chunks' images and the Arrow rows' buffers, kept
    /// up to date on every change (it decides when to flush).
    bytes: u64,
}

impl Memory {
    pub fn new(chunk_rows: usize) -> Memory {
        Memory {
            chunk_rows: chunk_rows.max(1),
            chunks: Vec::new(),
            small: Vec::new(),
            small_rows: 0,
            encoding: Vec::new(),
            unencoded: Vec::new(),
            next_id: 0,
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds a batch; once `chunk_rows` Arrow rows are gathered they are
    /// returned, for the caller to encode without holding the store's lock.
    pub fn push(&mut self, batch: RecordBatch) -> Option<ToEncode> {
        self.rows += batch.num_rows();
        self.bytes += arrow_bytes(&batch);
        self.small_rows += batch.num_rows();
        self.small.push(batch);
        if self.small_rows < self.chunk_rows {
            return None;
        }
        let batches = std::mem::take(&mut self.small);
        self.small_rows = 0;
        let id = self.next_id;
        self.next_id += 1;
        self.encoding.push((id, batches.clone()));
        Some(ToEncode { id, batches })
    }

    /// Swaps in the chunks an encoding made. Rows a flush took meanwhile
    /// are the flush's: the chunks are dropped. On an error the rows stay
    /// as Arrow (still queried, and encoded again by the next flush).
    pub fn finish(
        &mut self,
        job: ToEncode,
        encoded: Result<Vec<Chunk>, ArrowError>,
    ) -> Result<(), ArrowError> {
        let Some(i) = self.encoding.iter().position(|(e, _)| *e == job.id) else {
            return Ok(());
        };
        let (_, batches) = self.encoding.swap_remove(i);
        match encoded {
            Ok(chunks) => {
                // The Arrow buffers are freed here (a query holding them
                // keeps them a little longer).
                self.bytes -= batches.iter().map(arrow_bytes).sum::<u64>();
                self.bytes += chunk_bytes(&chunks);
                self.chunks.extend(chunks);
                Ok(())
            }
            Err(e) => {
                self.unencoded.extend(batches);
                Err(e)
            }
        }
    }

    /// Adds a batch and encodes at once, where no lock is shared (replay).
    pub fn push_encoded(
        &mut self,
        batch: RecordBatch,
        partition_ns: i64,
    ) -> Result<(), ArrowError> {
        match self.push(batch) {
            Some(job) => {
                let encoded = encode_rows(&job.batches, partition_ns);
                self.finish(job, encoded)
            }
            None => Ok(()),
        }
    }

    /// The Arrow rows in memory, in every state.
    pub fn arrow(&self) -> impl Iterator<Item = &RecordBatch> {
        self.small
            .iter()
            .chain(self.encoding.iter().flat_map(|(_, b)| b))
            .chain(&self.unencoded)
    }

    /// Takes every row for a flush: `(what to write, rows)`.
    pub fn freeze(&mut self) -> (Vec<Frozen>, usize) {
        let mut out: Vec<Frozen> = std::mem::take(&mut self.chunks)
            .into_iter()
            .map(Frozen::Chunk)
            .collect();
        out.extend(self.arrow().cloned().map(Frozen::Rows));
        self.small.clear();
        self.small_rows = 0;
        self.encoding.clear();
        self.unencoded.clear();
        self.bytes = 0;
        (out, std::mem::take(&mut self.rows))
    }

    /// Bytes held: the chunks' images and the Arrow rows' buffers.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch.get_array_memory_size() as u64
}

pub(crate) fn frozen_bytes(frozen: &[Frozen]) -> u64 {
    frozen.iter().map(Frozen::bytes).sum()
}

/// Arrow rows as chunks, one per time partition. Only the sort keys are
/// gathered into one place and sorted; every row is then copied once,
/// straight from its batch into its sorted place.
pub(crate) fn encode_rows(
    batches: &[RecordBatch],
    partition_ns: i64,
) -> Result<Vec<Chunk>, ArrowError> {
    let keys = sort_keys(batches)?;
    let origin: Vec<(usize, usize)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)))
        .collect();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    partition_rows(&keys[TIME_KEY], partition_ns)
        .into_iter()
        .map(|(start, rows)| {
            let order: Vec<(usize, usize)> = sorted_order(&keys, rows)?
                .into_iter()
                .map(|i| origin[i as usize])
                .collect();
            encode(start, &interleave_record_batch(&refs, &order)?)
        })
        .collect()
}

/// Where `time` is among [`SORT_COLUMNS`].
const TIME_KEY: usize = 2;

/// The [`SORT_COLUMNS`] of every batch, one array each.
fn sort_keys(batches: &[RecordBatch]) -> Result<Vec<ArrayRef>, ArrowError> {
    SORT_COLUMNS
        .iter()
        .map(|name| {
            let i = flows_schema().index_of(name)?;
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            concat(&parts)
        })
        .collect()
}

/// Row numbers by time partition (start ns).
fn partition_rows(time: &ArrayRef, width: i64) -> BTreeMap<i64, Vec<u32>> {
    let mut partitions: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, t) in time
        .as_primitive::<TimestampNanosecondType>()
        .values()
        .iter()
        .enumerate()
    {
        partitions
            .entry(t.div_euclid(width) * width)
            .or_default()
            .push(i as u32);
    }
    partitions
}

/// `rows` in the order of their sort keys.
fn sorted_order(keys: &[ArrayRef], rows: Vec<u32>) -> Result<Vec<u32>, ArrowError> {
    let rows = UInt32Array::from(rows);
    let columns = keys
        .iter()
        .map(|k| {
            Ok(SortColumn {
                values: take(k.as_ref(), &rows, None)?,
                options: None,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    Ok(order
        .values()
        .iter()
        .map(|&o| rows.value(o as usize))
        .collect())
}

fn chunk_bytes(chunks: &[Chunk]) -> u64 {
    chunks.iter().map(Chunk::bytes).sum()
}

impl Chunk {
    /// Bytes held: the image and its parsed metadata.
    pub fn bytes(&self) -> u64 {
        (self.parquet.len() + self.metadata.memory_size()) as u64
    }
}

fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_data_page_row_count_limit(PAGE_ROWS);
    for col in BLOOM_COLUMNS {
        props = props
            .set_column_bloom_filter_enabled(ColumnPath::from(col), true)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(col), BLOOM_NDV);
    }
    for col in DELTA_COLUMNS {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    props.build()
}

fn parquet_error(e: ParquetError) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

/// Sorted rows of one partition as a compressed Parquet file image.
fn encode(partition_start_ns: i64, sorted: &RecordBatch) -> Result<Chunk, ArrowError> {
    let mut out = Vec::with_capacity(sorted.num_rows() * 24);
    let mut w = ArrowWriter::try_new(&mut out, flows_schema(), Some(writer_properties()))
        .map_err(parquet_error)?;
    w.write(sorted).map_err(parquet_error)?;
    w.close().map_err(parquet_error)?;
    // The image is held for long: without this it keeps the buffer's
    // spare capacity (up to as much again) beside it.
    out.shrink_to_fit();
    let parquet = Bytes::from(out);
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&parquet)
        .map_err(parquet_error)?;
    let t = sorted
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .values();
    Ok(Chunk {
        metadata: Arc::new(metadata),
        parquet,
        rows: sorted.num_rows(),
        partition_start_ns,
        min_ns: t.iter().copied().min().unwrap_or(0),
        max_ns: t.iter().copied().max().unwrap_or(0),
    })
}
