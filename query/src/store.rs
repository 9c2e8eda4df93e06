//! The flow store: every append is written ahead (and synced) before it is
//! visible; recent rows live in memory (the newest as Arrow batches, the
//! rest as sorted, compressed Parquet images: [`crate::memory`]); a flush
//! writes those images as the Parquet files of their time partitions.
//!
//! Layout under `dir`: `log/<first seq>.wal` (log segments, see
//! [`crate::wal`]), `flows/<partition start ns>/<last seq>-<n>.parquet`, and
//! `manifest` (see [`crate::manifest`]), which alone says which files make
//! up the store and up to which log sequence they hold the rows.
//!
//! A flush, exact through a crash at any point:
//! 1. under the lock, the rows in memory are frozen (still queried) and
//!    the log rotates to a new segment, so ingest goes on;
//! 2. without the lock, the frozen rows not yet encoded are encoded, and
//!    every image is written as a Parquet file,
//!    then a new manifest names them and the last log sequence they hold,
//!    in one atomic rename;
//! 3. under the lock, the files replace the frozen images; then the old
//!    log segments are deleted.
//!
//! On open, files the manifest does not name are removed (a flush that
//! did not reach its manifest) and log records past its sequence are
//! replayed. Which (probe, sequence) batches are stored is kept with them,
//! in the log records and in the manifest, so a batch resent after a
//! restart is recognised ([`FlowStore::append_from`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::delivered::Delivered;
use crate::manifest::{FileEntry, Manifest, ManifestError};
use crate::memory::{Chunk, Frozen, Memory, ToEncode, encode_rows, frozen_bytes};
use crate::model::{FlowRow, flows_schema, to_batch};
use crate::wal::{Wal, WalError};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Partitions older than this are deleted.
    pub retention: Duration,
    /// Oldest partitions are deleted while the files exceed this.
    pub max_size_bytes: Option<u64>,
    /// Rows held in memory before they are written to Parquet: this also
    /// bounds the log replayed on a restart.
    pub flush_rows: usize,
    /// Bytes the rows in memory may take (their Parquet images, and the
    /// newest rows as Arrow) before they are written to Parquet.
    pub flush_bytes: u64,
    /// Rows gathered as Arrow before they are encoded as one Parquet image
    /// in memory (and written as one file): fewer saves memory sooner, more
    /// compress better and make fewer files.
    pub chunk_rows: usize,
    /// Width of a time partition (default one hour).
    pub partition: Duration,
}

impl StoreConfig {
    /// The defaults of the store (and of the collector flags that set it).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_FLUSH_ROWS: usize = 1_000_000;
    pub const DEFAULT_FLUSH_BYTES: u64 = 64 << 20;
    pub const DEFAULT_CHUNK_ROWS: usize = 65_536;
    pub const DEFAULT_PARTITION: Duration = Duration::from_secs(3600);

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            retention: Self::DEFAULT_RETENTION,
            max_size_bytes: None,
            flush_rows: Self::DEFAULT_FLUSH_ROWS,
            flush_bytes: Self::DEFAULT_FLUSH_BYTES,
            chunk_rows: Self::DEFAULT_CHUNK_ROWS,
            partition: Self::DEFAULT_PARTITION,
        }
    }

    /// Whether memory holding `rows` in `bytes` is due for a flush.
    fn full(&self, rows: usize, bytes: u64) -> bool {
        rows >= self.flush_rows || bytes >= self.flush_bytes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing Parquet {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{message}")]
    Schema { message: String },
    #[error(
        "{rows} rows in {bytes} bytes wait in memory (the limit is {limit} rows or {limit_bytes} bytes) and flushing them to Parquet fails: {message}"
    )]
    FlushFailing {
        rows: usize,
        bytes: u64,
        limit: usize,
        limit_bytes: u64,
        message: String,
    },
    #[error("the store stopped at failpoint {point:?} (a simulated crash): reopen it")]
    Crashed { point: FlushPoint },
}

/// Where a flush can be made to stop as if the process died there, to
/// test recovery from every step ([`FlowStore::set_failpoint`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPoint {
    /// Before the flush's n-th Parquet file (0-based) is written.
    BeforeFile(usize),
    /// After the n-th file is written and synced.
    AfterFile(usize),
    BeforeManifest,
    AfterManifest,
    /// After the files replaced the frozen batches, before the old log
    /// segments are deleted.
    BeforeTrim,
    AfterTrim,
    /// Before rows gathered in memory are encoded as a chunk (outside a
    /// flush; only [`FlowStore::set_pause`] acts on it).
    Encoding,
}

/// What [`FlowStore::append_from`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// The store already holds this (probe, sequence): nothing was added.
    Duplicate,
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
    pub bytes: u64,
    pub rows: u64,
}

/// A log segment that no longer takes appends.
#[derive(Debug)]
struct Sealed {
    path: PathBuf,
    bytes: u64,
}

struct State {
    /// The log segment appends go to.
    wal: Wal,
    sealed: Vec<Sealed>,
    next_seq: u64,
    mem: Memory,
    /// Rows a flush is writing; queried until its files replace them.
    frozen: Vec<Frozen>,
    frozen_rows: usize,
    frozen_bytes: u64,
    files: Vec<PartFile>,
    /// Every batch the store holds (log and Parquet), by probe.
    delivered: Delivered,
    generation: u64,
    flushed_through: u64,
    flush_requested: bool,
    flushing: bool,
    /// Why the last flush failed, until one succeeds.
    flush_error: Option<String>,
    failpoint: Option<FlushPoint>,
    crashed: Option<FlushPoint>,
    /// A flush reaching this point waits there until it is cleared.
    pause: Option<FlushPoint>,
    /// A flush is waiting at `pause`.
    paused: bool,
    /// Flushes fail to encode rows (tests).
    fail_encoding: bool,
}

impl State {
    fn check_alive(&self) -> Result<(), StoreError> {
        match self.crashed {
            Some(point) => Err(StoreError::Crashed { point }),
            None => Ok(()),
        }
    }
}

struct Inner {
    config: StoreConfig,
    state: Mutex<State>,
    /// Signalled when a flush ends (appends waiting for room, `wait_idle`)
    /// and when a paused flush waits or is let go (tests).
    flushed: Condvar,
    /// One flush or retention pass at a time: each writes a manifest.
    manifest_writer: Mutex<()>,
    /// Wakes the background flusher.
    wake: SyncSender<()>,
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

/// Appends wait for a flush once memory holds this many times `flush_rows`
/// (ingest faster than Parquet writing must not exhaust memory).
const MEMORY_LIMIT_FLUSHES: usize = 3;
/// A failed background flush is retried after this pause.
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// What a flush writes, taken under the lock.
struct FlushJob {
    frozen: Vec<Frozen>,
    through: u64,
    files: Vec<PartFile>,
    delivered: Delivered,
    generation: u64,
    /// Log segments holding only records up to `through`.
    sealed: usize,
}

impl FlowStore {
    /// Opens the store: reads the manifest, removes files it does not
    /// name, and replays the log records it does not cover into memory.
    pub fn open(config: StoreConfig) -> Result<FlowStore, StoreError> {
        let dir = config.dir.clone();
        for sub in ["flows", "log"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        let manifest = match Manifest::read(&dir)? {
            Some(m) => m,
            None => adopt_unlisted_store(&dir)?,
        };
        let files = listed_files(&dir, &manifest)?;
        remove_unlisted(&dir.join("flows"), &files)?;
        let mut delivered = manifest.delivered;
        let mut mem = Memory::new(config.chunk_rows);
        let width = partition_ns(&config);
        let (sealed, next_seq) = replay_log(
            &dir,
            manifest.flushed_through,
            &mut delivered,
            &mut mem,
            width,
        )?;
        let (wal, _, _) = Wal::open(&segment_path(&dir, next_seq))?;
        sync_dir(&dir.join("log"))?;
        let state = State {
            wal,
            sealed,
            next_seq,
            mem,
            frozen: Vec::new(),
            frozen_rows: 0,
            frozen_bytes: 0,
            files,
            delivered,
            generation: manifest.generation,
            flushed_through: manifest.flushed_through,
            flush_requested: false,
            flushing: false,
            flush_error: None,
            failpoint: None,
            crashed: None,
            pause: None,
            paused: false,
            fail_encoding: false,
        };
        let (wake, wakes) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(state),
            flushed: Condvar::new(),
            manifest_writer: Mutex::new(()),
            wake,
        });
        spawn_flusher(Arc::downgrade(&inner), wakes)?;
        Ok(FlowStore { inner })
    }

    /// Stores rows durably: written ahead and synced before this returns,
    /// then visible to queries. A flush to Parquet starts in the background
    /// when memory is full.
    pub fn append(&self, rows: &[FlowRow]) -> Result<(), StoreError> {
        // Encode outside the lock: many writers share one store.
        self.append_batch(to_batch(rows))
    }

    /// Like [`append`](Self::append), for a batch already in the `flows`
    /// schema (built with [`crate::FlowBatchBuilder`]).
    pub fn append_batch(&self, batch: RecordBatch) -> Result<(), StoreError> {
        self.append_inner(None, batch).map(|_| ())
    }

    /// Stores the batch `sequence` of `probe` unless the store already
    /// holds it: exactly once per (probe, sequence), across restarts and
    /// crashes, because the pair is logged with the rows.
    pub fn append_from(
        &self,
        probe: &str,
        sequence: u64,
        batch: RecordBatch,
    ) -> Result<Appended, StoreError> {
        self.append_inner(Some((probe, sequence)), batch)
    }

    /// Whether the store holds the batch `sequence` of `probe` (a cheap
    /// check before the work of enriching a resent batch).
    pub fn holds(&self, probe: &str, sequence: u64) -> bool {
        self.lock().delivered.contains(probe, sequence)
    }

    fn append_inner(
        &self,
        origin: Option<(&str, u64)>,
        batch: RecordBatch,
    ) -> Result<Appended, StoreError> {
        if batch.num_rows() == 0 && origin.is_none() {
            return Ok(Appended::Stored);
        }
        if batch.schema() != flows_schema() {
            return Err(StoreError::Schema {
                message: format!(
                    "a batch to append does not have the flows schema: {:?}",
                    batch.schema()
                ),
            });
        }
        let Some(mut s) = self.wait_for_room(origin)? else {
            return Ok(Appended::Duplicate);
        };
        let seq = s.next_seq;
        s.wal.append(seq, origin, &batch)?;
        s.next_seq += 1;
        if let Some((probe, sequence)) = origin {
            s.delivered.insert(probe, sequence);
        }
        let to_encode = if batch.num_rows() > 0 {
            s.mem.push(batch)
        } else {
            None
        };
        match to_encode {
            // Whether memory is full is judged by the rows' encoded size.
            Some(job) => {
                drop(s);
                self.encode_chunk(job);
            }
            None => self.flush_if_full(&mut s),
        }
        Ok(Appended::Stored)
    }

    fn flush_if_full(&self, s: &mut State) {
        if self.inner.config.full(s.mem.rows, s.mem.bytes()) {
            self.request_flush(s);
        }
    }

    /// Encodes rows gathered in memory as a chunk, without the lock (it
    /// takes a while: other appends and queries go on), then swaps it in.
    fn encode_chunk(&self, job: ToEncode) {
        let fail = self.failpoint_pause(FlushPoint::Encoding).fail_encoding;
        let encoded = if fail {
            Err(ArrowError::ComputeError(
                "encoding refused (set_fail_encoding)".into(),
            ))
        } else {
            encode_rows(&job.batches, partition_ns(&self.inner.config))
        };
        let mut s = self.lock();
        if let Err(e) = s.mem.finish(job, encoded) {
            // The rows are logged and stay in memory as Arrow.
            tracing::error!(error = %e, "cannot encode rows in memory as Parquet");
        }
        self.flush_if_full(&mut s);
        // Encoded rows take less room: appends waiting for it may go on.
        drop(s);
        self.inner.flushed.notify_all();
    }

    /// The state lock, once memory has room for more rows; `None` when the
    /// store already holds the batch from `origin` (a resend is answered
    /// even while memory is full).
    fn wait_for_room(
        &self,
        origin: Option<(&str, u64)>,
    ) -> Result<Option<MutexGuard<'_, State>>, StoreError> {
        let cfg = &self.inner.config;
        let limit = cfg.flush_rows.max(1).saturating_mul(MEMORY_LIMIT_FLUSHES);
        let limit_bytes = cfg
            .flush_bytes
            .max(1)
            .saturating_mul(MEMORY_LIMIT_FLUSHES as u64);
        let mut s = self.lock();
        loop {
            s.check_alive()?;
            if let Some((probe, sequence)) = origin
                && s.delivered.contains(probe, sequence)
            {
                return Ok(None);
            }
            let rows = s.mem.rows + s.frozen_rows;
            let bytes = s.mem.bytes() + s.frozen_bytes;
            if rows < limit && bytes < limit_bytes {
                return Ok(Some(s));
            }
            if let Some(message) = &s.flush_error {
                return Err(StoreError::FlushFailing {
                    rows,
                    bytes,
                    limit,
                    limit_bytes,
                    message: message.clone(),
                });
            }
            self.request_flush(&mut s);
            s = self
                .inner
                .flushed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_flush(&self, s: &mut State) {
        if s.flush_requested || s.flushing {
            return;
        }
        match self.inner.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => s.flush_requested = true,
            Err(TrySendError::Disconnected(())) => {
                tracing::error!("the background flusher is gone: memory is flushed only on demand")
            }
        }
    }

    /// Blocks until no flush is running or requested (tests, benchmarks).
    #[doc(hidden)]
    pub fn wait_idle(&self) {
        let mut s = self.lock();
        while (s.flushing || s.flush_requested) && s.crashed.is_none() {
            s = self
                .inner
                .flushed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Makes the next flush stop at `point` as if the process died there:
    /// the store then refuses everything until reopened.
    #[doc(hidden)]
    pub fn set_failpoint(&self, point: Option<FlushPoint>) {
        self.lock().failpoint = point;
    }

    /// Makes the next flush wait at `point` (`None` lets it go on), to test
    /// what happens meanwhile; [`wait_paused`](Self::wait_paused) returns
    /// once it waits there.
    #[doc(hidden)]
    pub fn set_pause(&self, point: Option<FlushPoint>) {
        self.lock().pause = point;
        self.inner.flushed.notify_all();
    }

    /// Makes encoding rows as Parquet fail, in flushes and in memory
    /// (`false` lets it succeed again), to test that the failure reaches
    /// the callers and loses nothing.
    #[doc(hidden)]
    pub fn set_fail_encoding(&self, fail: bool) {
        self.lock().fail_encoding = fail;
    }

    /// Blocks until a flush waits at the point [`set_pause`](Self::set_pause) named.
    #[doc(hidden)]
    pub fn wait_paused(&self) {
        let mut s = self.lock();
        while !s.paused {
            s = self
                .inner
                .flushed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits while a test holds `point` ([`set_pause`](Self::set_pause)).
    fn failpoint_pause(&self, point: FlushPoint) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        if s.pause == Some(point) {
            s.paused = true;
            self.inner.flushed.notify_all();
            while s.pause == Some(point) {
                s = self
                    .inner
                    .flushed
                    .wait(s)
                    .unwrap_or_else(|p| p.into_inner());
            }
            s.paused = false;
        }
        s
    }

    fn failpoint(&self, point: FlushPoint) -> Result<(), StoreError> {
        let mut s = self.failpoint_pause(point);
        if s.failpoint == Some(point) {
            s.crashed = Some(point);
            drop(s);
            self.inner.flushed.notify_all();
            return Err(StoreError::Crashed { point });
        }
        Ok(())
    }

    /// Writes the rows in memory to Parquet (one file per time partition),
    /// records them in the manifest, then deletes the log they were in.
    /// Appends go on meanwhile.
    pub fn flush(&self) -> Result<(), StoreError> {
        let _writer = self
            .inner
            .manifest_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(job) = self.begin_flush()? else {
            return Ok(());
        };
        let result = self.write_flush(&job);
        self.end_flush(job, result)
    }

    /// Freezes memory and rotates the log, under the lock: no disk work
    /// but creating the new segment.
    fn begin_flush(&self) -> Result<Option<FlushJob>, StoreError> {
        let mut s = self.lock();
        s.check_alive()?;
        s.flush_requested = false;
        if s.mem.rows == 0 && s.frozen.is_empty() {
            return Ok(None);
        }
        let through = s.next_seq - 1;
        // An empty segment (nothing appended since the last rotation or the
        // open) has nothing to seal, and its name is the next one's.
        if !s.wal.is_empty() {
            let next = segment_path(&self.inner.config.dir, s.next_seq);
            let (fresh, _, _) = Wal::open(&next)?;
            sync_dir(&self.inner.config.dir.join("log"))?;
            let old = std::mem::replace(&mut s.wal, fresh);
            let bytes = old.bytes();
            s.sealed.push(Sealed {
                path: old.path().to_path_buf(),
                bytes,
            });
        }
        let (frozen, rows) = s.mem.freeze();
        s.frozen_bytes += frozen_bytes(&frozen);
        s.frozen.extend(frozen);
        s.frozen_rows += rows;
        s.flushing = true;
        Ok(Some(FlushJob {
            frozen: s.frozen.clone(),
            through,
            files: s.files.clone(),
            delivered: s.delivered.clone(),
            generation: s.generation,
            sealed: s.sealed.len(),
        }))
    }

    /// The chunks of the frozen rows: those encoded in memory as they are,
    /// the Arrow rows encoded now. No lock held.
    fn flush_chunks(&self, frozen: &[Frozen]) -> Result<Vec<Chunk>, StoreError> {
        let mut chunks = Vec::new();
        let mut rows = Vec::new();
        for f in frozen {
            match f {
                Frozen::Chunk(c) => chunks.push(c.clone()),
                Frozen::Rows(b) => rows.push(b.clone()),
            }
        }
        if rows.is_empty() {
            return Ok(chunks);
        }
        let err = |message: String| StoreError::Parquet {
            path: self.inner.config.dir.clone(),
            message,
        };
        if self.lock().fail_encoding {
            return Err(err("encoding refused (set_fail_encoding)".into()));
        }
        let width = partition_ns(&self.inner.config);
        chunks.extend(encode_rows(&rows, width).map_err(|e| err(e.to_string()))?);
        Ok(chunks)
    }

    /// The Parquet files (the chunks' bytes as they are), then the
    /// manifest naming them. No lock held.
    fn write_flush(&self, job: &FlushJob) -> Result<Vec<PartFile>, StoreError> {
        let dir = &self.inner.config.dir;
        let mut written = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for (i, chunk) in self.flush_chunks(&job.frozen)?.iter().enumerate() {
            self.failpoint(FlushPoint::BeforeFile(i))?;
            let part_dir = dir.join("flows").join(chunk.partition_start_ns.to_string());
            std::fs::create_dir_all(&part_dir).map_err(io_err("creating", &part_dir))?;
            let path = part_dir.join(format!("{:020}-{i:05}.parquet", job.through));
            write_file(&path, &chunk.parquet)?;
            written.push(PartFile {
                path,
                partition_start_ns: chunk.partition_start_ns,
                bytes: chunk.parquet.len() as u64,
                rows: chunk.rows as u64,
            });
            dirs.insert(part_dir);
            self.failpoint(FlushPoint::AfterFile(i))?;
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        self.failpoint(FlushPoint::BeforeManifest)?;
        let files: Vec<PartFile> = job.files.iter().chain(&written).cloned().collect();
        Manifest {
            generation: job.generation + 1,
            flushed_through: job.through,
            files: entries(dir, &files),
            delivered: job.delivered.clone(),
        }
        .write(dir)?;
        self.failpoint(FlushPoint::AfterManifest)?;
        Ok(written)
    }

    /// Swaps the files in for the frozen batches, then trims the log.
    fn end_flush(
        &self,
        job: FlushJob,
        result: Result<Vec<PartFile>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.flushing = false;
        let written = match result {
            Ok(written) => written,
            Err(e) => {
                // The frozen rows stay queried and logged: the next flush
                // takes them again.
                s.flush_error = Some(e.to_string());
                drop(s);
                self.inner.flushed.notify_all();
                return Err(e);
            }
        };
        s.files.extend(written);
        s.frozen.clear();
        s.frozen_rows = 0;
        s.frozen_bytes = 0;
        s.generation = job.generation + 1;
        s.flushed_through = job.through;
        s.flush_error = None;
        let trimmed: Vec<Sealed> = s.sealed.drain(..job.sealed).collect();
        drop(s);
        self.inner.flushed.notify_all();
        self.failpoint(FlushPoint::BeforeTrim)?;
        for segment in &trimmed {
            std::fs::remove_file(&segment.path).map_err(io_err("removing", &segment.path))?;
        }
        self.failpoint(FlushPoint::AfterTrim)
    }

    /// Deletes partitions older than the retention, then the oldest ones
    /// while the files exceed the size limit. The manifest drops them
    /// before their files go.
    pub fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StoreError> {
        let cfg = &self.inner.config;
        let _writer = cfg_lock(&self.inner.manifest_writer);
        let (doomed, manifest, report) = {
            let s = self.lock();
            s.check_alive()?;
            let (doomed, report) = doomed_partitions(cfg, &s.files, now_ns);
            if doomed.is_empty() {
                return Ok(report);
            }
            let kept: Vec<PartFile> = s
                .files
                .iter()
                .filter(|f| !doomed.contains(&f.partition_start_ns))
                .cloned()
                .collect();
            let manifest = Manifest {
                generation: s.generation + 1,
                flushed_through: s.flushed_through,
                files: entries(&cfg.dir, &kept),
                delivered: s.delivered.clone(),
            };
            (doomed, manifest, report)
        };
        manifest.write(&cfg.dir)?;
        {
            let mut s = self.lock();
            s.generation = manifest.generation;
            s.files.retain(|f| !doomed.contains(&f.partition_start_ns));
        }
        for start in doomed {
            let dir = cfg.dir.join("flows").join(start.to_string());
            std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        Ok(report)
    }

    pub fn stats(&self) -> StoreStats {
        let s = self.lock();
        let mut parts: Vec<i64> = s.files.iter().map(|f| f.partition_start_ns).collect();
        parts.sort();
        parts.dedup();
        StoreStats {
            memory_rows: (s.mem.rows + s.frozen_rows) as u64,
            memory_bytes: s.mem.bytes() + s.frozen_bytes,
            disk_rows: s.files.iter().map(|f| f.rows).sum(),
            disk_bytes: s.files.iter().map(|f| f.bytes).sum(),
            partitions: parts.len() as u64,
            files: s.files.len() as u64,
            wal_bytes: s.wal.bytes() + s.sealed.iter().map(|x| x.bytes).sum::<u64>(),
        }
    }

    pub(crate) fn partition_width_ns(&self) -> i64 {
        self.inner.config.partition.as_nanos() as i64
    }

    /// What a query reads: the rows in memory and the Parquet files
    /// overlapping `[lo, hi]` (inclusive, ns).
    pub(crate) fn snapshot(&self, lo: i64, hi: i64) -> Snapshot {
        let s = self.lock();
        let width = self.partition_width_ns();
        let frozen_chunks = s.frozen.iter().filter_map(|f| match f {
            Frozen::Chunk(c) => Some(c),
            Frozen::Rows(_) => None,
        });
        let chunks = s
            .mem
            .chunks
            .iter()
            .chain(frozen_chunks)
            .filter(|c| c.max_ns >= lo && c.min_ns <= hi)
            .cloned()
            .collect();
        let frozen_rows = s.frozen.iter().filter_map(|f| match f {
            Frozen::Rows(b) => Some(b),
            Frozen::Chunk(_) => None,
        });
        let batches = s.mem.arrow().chain(frozen_rows).cloned().collect();
        let files = s
            .files
            .iter()
            .filter(|f| f.partition_start_ns + width > lo && f.partition_start_ns <= hi)
            .cloned()
            .collect();
        Snapshot {
            batches,
            chunks,
            files,
        }
    }
}

/// What one query reads, taken at once.
pub(crate) struct Snapshot {
    /// The newest rows, as Arrow.
    pub batches: Vec<RecordBatch>,
    /// Parquet images in memory.
    pub chunks: Vec<Chunk>,
    pub files: Vec<PartFile>,
}

fn partition_ns(config: &StoreConfig) -> i64 {
    config.partition.as_nanos().clamp(1, i64::MAX as u128) as i64
}

fn cfg_lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Partitions to delete: too old, then the oldest while too big.
fn doomed_partitions(
    cfg: &StoreConfig,
    files: &[PartFile],
    now_ns: i64,
) -> (Vec<i64>, RetentionReport) {
    let width = cfg.partition.as_nanos() as i64;
    let horizon = now_ns - cfg.retention.as_nanos() as i64;
    let mut starts: Vec<i64> = files.iter().map(|f| f.partition_start_ns).collect();
    starts.sort();
    starts.dedup();
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut report = RetentionReport::default();
    let mut doomed = Vec::new();
    for start in starts {
        let too_old = start + width <= horizon;
        let too_big = cfg.max_size_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            break;
        }
        let bytes: u64 = files
            .iter()
            .filter(|f| f.partition_start_ns == start)
            .map(|f| f.bytes)
            .sum();
        doomed.push(start);
        total -= bytes;
        report.removed_partitions += 1;
        report.removed_bytes += bytes;
    }
    (doomed, report)
}

/// The background flusher: flushes when woken, until the store is gone.
fn spawn_flusher(store: Weak<Inner>, wakes: Receiver<()>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("flowgate-flush".into())
        .spawn(move || {
            while wakes.recv().is_ok() {
                let Some(inner) = store.upgrade() else { return };
                let store = FlowStore { inner };
                if let Err(e) = store.flush() {
                    if matches!(e, StoreError::Crashed { .. }) {
                        return;
                    }
                    tracing::error!(error = %e, "flushing the store to Parquet failed; retrying");
                    drop(store);
                    std::thread::sleep(FLUSH_RETRY);
                }
            }
        })
        .map(|_| ())
        .map_err(io_err("starting the flush thread for", Path::new("flows")))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join("log").join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Replays every log segment (oldest first; a `wal` file from before
/// segments first of all): records past `flushed_through` go to memory,
/// every record's origin to `delivered`. Segments left with nothing to
/// replay are deleted (a trim the crash interrupted); the others stay
/// sealed until the next flush. Returns them and the next log sequence.
fn replay_log(
    dir: &Path,
    flushed_through: u64,
    delivered: &mut Delivered,
    mem: &mut Memory,
    partition_ns: i64,
) -> Result<(Vec<Sealed>, u64), StoreError> {
    let log = dir.join("log");
    let mut segments: Vec<PathBuf> = Vec::new();
    let legacy = dir.join("wal");
    if legacy.is_file() {
        segments.push(legacy);
    }
    let mut named: Vec<PathBuf> = std::fs::read_dir(&log)
        .map_err(io_err("listing", &log))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    named.sort();
    segments.extend(named);
    let mut sealed = Vec::new();
    let mut next_seq = flushed_through + 1;
    for path in segments {
        let (wal, records, _torn) = Wal::open(&path)?;
        let mut live = false;
        for r in records {
            next_seq = next_seq.max(r.seq + 1);
            if let Some((probe, sequence)) = &r.origin {
                delivered.insert(probe, *sequence);
            }
            if r.seq <= flushed_through {
                continue; // already in Parquet
            }
            live = true;
            if r.batch.num_rows() > 0
                && let Err(e) = mem.push_encoded(r.batch, partition_ns)
            {
                tracing::error!(error = %e, "cannot encode replayed rows as Parquet");
            }
        }
        if live {
            sealed.push(Sealed {
                bytes: wal.bytes(),
                path,
            });
        } else {
            drop(wal);
            std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
        }
    }
    if mem.rows > 0 {
        tracing::info!(rows = mem.rows, "replayed the write-ahead log");
    }
    Ok((sealed, next_seq))
}

/// A store without a manifest: new, or written before manifests, when a
/// file's name was the last log sequence it held. Its files are taken as
/// they are and a first manifest is written.
fn adopt_unlisted_store(dir: &Path) -> Result<Manifest, StoreError> {
    let found = scan_files(&dir.join("flows"))?;
    let manifest = Manifest {
        generation: 1,
        flushed_through: found.iter().map(|(_, seq)| *seq).max().unwrap_or(0),
        files: entries(dir, &found.into_iter().map(|(f, _)| f).collect::<Vec<_>>()),
        delivered: Delivered::default(),
    };
    manifest.write(dir)?;
    Ok(manifest)
}

fn entries(dir: &Path, files: &[PartFile]) -> Vec<FileEntry> {
    files
        .iter()
        .map(|f| FileEntry {
            path: f
                .path
                .strip_prefix(dir)
                .unwrap_or(&f.path)
                .to_string_lossy()
                .into_owned(),
            partition_start_ns: f.partition_start_ns,
            rows: f.rows,
            bytes: f.bytes,
        })
        .collect()
}

/// The manifest's files; one missing on disk is reported and left out.
fn listed_files(dir: &Path, manifest: &Manifest) -> Result<Vec<PartFile>, StoreError> {
    let mut out = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let path = dir.join(&f.path);
        if !path.is_file() {
            tracing::error!(path = %path.display(), rows = f.rows, "a Parquet file of the store is missing: its rows are lost");
            continue;
        }
        out.push(PartFile {
            path,
            partition_start_ns: f.partition_start_ns,
            bytes: f.bytes,
            rows: f.rows,
        });
    }
    Ok(out)
}

/// Removes what a flush that never reached its manifest left behind.
fn remove_unlisted(flows: &Path, files: &[PartFile]) -> Result<(), StoreError> {
    let listed: std::collections::HashSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    for part in std::fs::read_dir(flows).map_err(io_err("listing", flows))? {
        let part = part.map_err(io_err("listing", flows))?.path();
        if !part.is_dir() {
            continue;
        }
        let mut kept = 0;
        for f in std::fs::read_dir(&part).map_err(io_err("listing", &part))? {
            let path = f.map_err(io_err("listing", &part))?.path();
            if listed.contains(path.as_path()) {
                kept += 1;
                continue;
            }
            tracing::info!(path = %path.display(), "removing a file no manifest names (an unfinished flush)");
            std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
        }
        if kept == 0 {
            std::fs::remove_dir(&part).map_err(io_err("removing", &part))?;
        }
    }
    Ok(())
}

/// Writes `bytes` as `path`, synced; the directory is synced by the caller.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("parquet.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    std::io::Write::write_all(&mut file, bytes).map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))
}

/// Files of a store from before manifests, named by the last log
/// sequence they hold.
fn scan_files(flows: &Path) -> Result<Vec<(PartFile, u64)>, StoreError> {
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
            let Some(last_seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue; // a .tmp of a crashed flush: removed as unlisted
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
            out.push((
                PartFile {
                    path,
                    partition_start_ns: start,
                    bytes,
                    rows,
                },
                last_seq,
            ));
        }
    }
    Ok(out)
}
