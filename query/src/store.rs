//! The flow store: every append is written ahead (and synced) before it is
//! visible; recent rows live as Arrow record batches in memory; a flush
//! writes them as Parquet files partitioned by time and empties the log.
//!
//! Layout under `dir`: `wal` (see [`crate::wal`]) and
//! `flows/<partition start ns>/<first seq>-<last seq>.parquet`. A Parquet
//! file's name carries the last log sequence it holds, so after a crash
//! between writing Parquet and emptying the log, replay skips what Parquet
//! already has: nothing acknowledged is lost, nothing is counted twice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::schema::{FlowRow, flows_schema, to_batch};
use crate::wal::{Wal, WalError};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Partitions older than this are deleted.
    pub retention: Duration,
    /// Oldest partitions are deleted while the files exceed this.
    pub max_size_bytes: Option<u64>,
    /// Rows held in memory before they are written to Parquet.
    pub flush_rows: usize,
    /// Width of a time partition (default one hour).
    pub partition: Duration,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_size_bytes: None,
            flush_rows: 1_000_000,
            partition: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing Parquet {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{message}")]
    Schema { message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub memory_rows: u64,
    pub memory_bytes: u64,
    pub disk_rows: u64,
    pub disk_bytes: u64,
    pub partitions: u64,
    pub files: u64,
    pub wal_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed_partitions: u64,
    pub removed_bytes: u64,
}

/// A Parquet file of the store.
#[derive(Clone, Debug)]
pub(crate) struct PartFile {
    pub path: PathBuf,
    pub partition_start_ns: i64,
    pub last_seq: u64,
    pub bytes: u64,
    pub rows: u64,
}

/// A batch in memory with its time range, for pruning.
#[derive(Clone, Debug)]
pub(crate) struct MemBatch {
    pub batch: RecordBatch,
    pub min_ns: i64,
    pub max_ns: i64,
}

struct State {
    wal: Wal,
    next_seq: u64,
    memory: Vec<MemBatch>,
    /// Rows of small appends not yet merged into one batch.
    small: Vec<RecordBatch>,
    memory_rows: usize,
    files: Vec<PartFile>,
}

struct Inner {
    config: StoreConfig,
    state: Mutex<State>,
}

/// A handle to the store; clones share it.
#[derive(Clone)]
pub struct FlowStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowStore")
            .field("dir", &self.inner.config.dir)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

const MERGE_ROWS: usize = 65_536;

impl FlowStore {
    /// Opens the store, replaying the log into memory.
    pub fn open(config: StoreConfig) -> Result<FlowStore, StoreError> {
        let flows = config.dir.join("flows");
        std::fs::create_dir_all(&flows).map_err(io_err("creating", &flows))?;
        let files = scan_files(&flows)?;
        let persisted = files.iter().map(|f| f.last_seq).max().unwrap_or(0);
        let (wal, records, _torn) = Wal::open(&config.dir.join("wal"))?;
        let mut state = State {
            wal,
            next_seq: persisted + 1,
            memory: Vec::new(),
            small: Vec::new(),
            memory_rows: 0,
            files,
        };
        let mut replayed = 0;
        for r in records {
            state.next_seq = state.next_seq.max(r.seq + 1);
            if r.seq <= persisted || r.batch.num_rows() == 0 {
                continue; // already in Parquet
            }
            replayed += r.batch.num_rows();
            push_memory(&mut state, r.batch);
        }
        if replayed > 0 {
            tracing::info!(rows = replayed, "replayed the write-ahead log");
        }
        Ok(FlowStore {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
            }),
        })
    }

    /// Stores rows durably: written ahead and synced before this returns,
    /// then visible to queries. Flushes to Parquet when memory is full.
    pub fn append(&self, rows: &[FlowRow]) -> Result<(), StoreError> {
        // Encode outside the lock: many writers share one store.
        self.append_batch(to_batch(rows))
    }

    /// Like [`append`](Self::append), for a batch already in the `flows`
    /// schema (built with [`crate::FlowBatchBuilder`]).
    pub fn append_batch(&self, batch: RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema() != flows_schema() {
            return Err(StoreError::Schema {
                message: format!(
                    "a batch to append does not have the flows schema: {:?}",
                    batch.schema()
                ),
            });
        }
        let mut s = self.inner.state.lock().unwrap();
        let seq = s.next_seq;
        s.wal.append(seq, &batch)?;
        s.next_seq += 1;
        push_memory(&mut s, batch);
        if s.memory_rows >= self.inner.config.flush_rows {
            self.flush_locked(&mut s)?;
        }
        Ok(())
    }

    /// Writes memory to Parquet (one file per time partition) and empties
    /// the log.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut s = self.inner.state.lock().unwrap();
        self.flush_locked(&mut s)
    }

    fn flush_locked(&self, s: &mut State) -> Result<(), StoreError> {
        merge_small(s);
        if s.memory.is_empty() {
            return Ok(());
        }
        let batches: Vec<RecordBatch> = s.memory.iter().map(|m| m.batch.clone()).collect();
        let all = concat_batches(&flows_schema(), &batches).map_err(|e| StoreError::Parquet {
            path: self.inner.config.dir.clone(),
            message: e.to_string(),
        })?;
        let width = self.inner.config.partition.as_nanos().max(1) as i64;
        let last_seq = s.next_seq - 1;
        let times = all
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
            .expect("time column");
        let mut partitions: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
        for (i, t) in times.values().iter().enumerate() {
            partitions
                .entry(t.div_euclid(width) * width)
                .or_default()
                .push(i as u32);
        }
        let single = partitions.len() == 1;
        for (start, idx) in partitions {
            // Usually every row is in one partition: no copy needed.
            let part = if single {
                all.clone()
            } else {
                let take = datafusion::arrow::array::UInt32Array::from(idx);
                datafusion::arrow::compute::take_record_batch(&all, &take).map_err(|e| {
                    StoreError::Parquet {
                        path: self.inner.config.dir.clone(),
                        message: e.to_string(),
                    }
                })?
            };
            let dir = self.inner.config.dir.join("flows").join(start.to_string());
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            let path = dir.join(format!("{last_seq:020}.parquet"));
            let bytes = write_parquet(&path, &part)?;
            s.files.push(PartFile {
                path,
                partition_start_ns: start,
                last_seq,
                bytes,
                rows: part.num_rows() as u64,
            });
        }
        s.memory.clear();
        s.memory_rows = 0;
        s.wal.reset()?;
        Ok(())
    }

    /// Deletes partitions older than the retention, then the oldest ones
    /// while the files exceed the size limit.
    pub fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StoreError> {
        let cfg = &self.inner.config;
        let mut s = self.inner.state.lock().unwrap();
        let width = cfg.partition.as_nanos() as i64;
        let horizon = now_ns - cfg.retention.as_nanos() as i64;
        let mut starts: Vec<i64> = s.files.iter().map(|f| f.partition_start_ns).collect();
        starts.sort();
        starts.dedup();
        let mut total: u64 = s.files.iter().map(|f| f.bytes).sum();
        let mut report = RetentionReport::default();
        for start in starts {
            let too_old = start + width <= horizon;
            let too_big = cfg.max_size_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            let bytes: u64 = s
                .files
                .iter()
                .filter(|f| f.partition_start_ns == start)
                .map(|f| f.bytes)
                .sum();
            let dir = cfg.dir.join("flows").join(start.to_string());
            std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
            s.files.retain(|f| f.partition_start_ns != start);
            total -= bytes;
            report.removed_partitions += 1;
            report.removed_bytes += bytes;
        }
        Ok(report)
    }

    pub fn stats(&self) -> StoreStats {
        let s = self.inner.state.lock().unwrap();
        let mut parts: Vec<i64> = s.files.iter().map(|f| f.partition_start_ns).collect();
        parts.sort();
        parts.dedup();
        StoreStats {
            memory_rows: s.memory_rows as u64,
            memory_bytes: s
                .memory
                .iter()
                .map(|m| m.batch.get_array_memory_size() as u64)
                .sum::<u64>()
                + s.small
                    .iter()
                    .map(|b| b.get_array_memory_size() as u64)
                    .sum::<u64>(),
            disk_rows: s.files.iter().map(|f| f.rows).sum(),
            disk_bytes: s.files.iter().map(|f| f.bytes).sum(),
            partitions: parts.len() as u64,
            files: s.files.len() as u64,
            wal_bytes: s.wal.bytes(),
        }
    }

    pub(crate) fn partition_width_ns(&self) -> i64 {
        self.inner.config.partition.as_nanos() as i64
    }

    /// What a query reads: memory batches and Parquet files overlapping
    /// `[lo, hi]` (inclusive, ns).
    pub(crate) fn snapshot(&self, lo: i64, hi: i64) -> (Vec<RecordBatch>, Vec<PathBuf>) {
        let mut s = self.inner.state.lock().unwrap();
        merge_small(&mut s);
        let width = self.partition_width_ns();
        let mem = s
            .memory
            .iter()
            .filter(|m| m.max_ns >= lo && m.min_ns <= hi)
            .map(|m| m.batch.clone())
            .collect();
        let files = s
            .files
            .iter()
            .filter(|f| f.partition_start_ns + width > lo && f.partition_start_ns <= hi)
            .map(|f| f.path.clone())
            .collect();
        (mem, files)
    }
}

fn push_memory(s: &mut State, batch: RecordBatch) {
    s.memory_rows += batch.num_rows();
    s.small.push(batch);
    if s.small.iter().map(|b| b.num_rows()).sum::<usize>() >= MERGE_ROWS {
        merge_small(s);
    }
}

/// Many small appends become one batch: fewer, larger batches scan faster.
fn merge_small(s: &mut State) {
    if s.small.is_empty() {
        return;
    }
    let small = std::mem::take(&mut s.small);
    let batch = concat_batches(&flows_schema(), &small).expect("same schema");
    let times = batch
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
        .expect("time column");
    let min_ns = times.values().iter().copied().min().unwrap_or(0);
    let max_ns = times.values().iter().copied().max().unwrap_or(0);
    s.memory.push(MemBatch {
        batch,
        min_ns,
        max_ns,
    });
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<u64, StoreError> {
    let tmp = path.with_extension("parquet.tmp");
    let err = |message: String| StoreError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .build();
    let mut w =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| err(e.to_string()))?;
    w.write(batch).map_err(|e| err(e.to_string()))?;
    let file = w.into_inner().map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", dir))?;
    }
    Ok(std::fs::metadata(path)
        .map_err(io_err("reading", path))?
        .len())
}

fn scan_files(flows: &Path) -> Result<Vec<PartFile>, StoreError> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(flows).map_err(io_err("listing", flows))? {
        let part = part.map_err(io_err("listing", flows))?.path();
        let Some(start) = part
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        for f in std::fs::read_dir(&part).map_err(io_err("listing", &part))? {
            let path = f.map_err(io_err("listing", &part))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".parquet.tmp") {
                // A flush that crashed before its rename: the log still has it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(last_seq) = name
                .strip_suffix(".parquet")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = std::fs::metadata(&path)
                .map_err(io_err("reading", &path))?
                .len();
            let rows = datafusion::parquet::file::reader::FileReader::metadata(
                &datafusion::parquet::file::reader::SerializedFileReader::new(
                    std::fs::File::open(&path).map_err(io_err("opening", &path))?,
                )
                .map_err(|e| StoreError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                })?,
            )
            .file_metadata()
            .num_rows() as u64;
            out.push(PartFile {
                path,
                partition_start_ns: start,
                last_seq,
                bytes,
                rows,
            });
        }
    }
    Ok(out)
}
