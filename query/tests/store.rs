//! Durability: what `append` returned for survives restarts and crashes,
//! exactly once, at every step of a flush (failpoints); a batch resent by
//! its probe is stored once; retention removes whole partitions.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowgate_query::{
    Appended, FlowRow, FlowStore, FlushPoint, QueryEngine, QueryLimits, StoreConfig, StoreError,
};
use support::{HOUR_NS, fixture_rows};

/// Tiny chunks: most tests' rows then pass through every state in memory
/// (Arrow, being encoded, encoded as a Parquet image) before a flush.
const CHUNK_ROWS: usize = 5;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        flush_rows: 1_000_000,
        flush_bytes: u64::MAX,
        chunk_rows: CHUNK_ROWS,
        ..StoreConfig::new(dir)
    }
}

fn count(store: &FlowStore) -> u64 {
    let s = store.stats();
    s.memory_rows + s.disk_rows
}

/// The log segment appends go to (the newest).
fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

/// Every file under `flows/`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(dir.join("flows")).unwrap() {
        for f in std::fs::read_dir(part.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn appended_rows_survive_a_restart_from_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    let rows = fixture_rows();
    store.append(&rows[..3]).unwrap();
    store.append(&rows[3..]).unwrap();
    assert_eq!(store.stats().memory_rows, 6);
    drop(store); // no flush: as if killed
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(count(&store), 6);
    assert_eq!(store.stats().disk_rows, 0);
}

#[test]
fn a_torn_log_tail_is_cut_and_whole_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    let rows = fixture_rows();
    store.append(&rows[..2]).unwrap();
    store.append(&rows[2..]).unwrap();
    drop(store);
    // A crash in the middle of the last record.
    let wal = last_segment(dir.path());
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(count(&store), 2, "the torn record was never acknowledged");
    store.append(&rows[2..3]).unwrap();
    drop(store);
    assert_eq!(
        count(&FlowStore::open(config(dir.path())).unwrap()),
        3,
        "appends after the cut are whole"
    );
}

#[test]
fn a_log_from_another_program_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wal"), b"not a wal at all").unwrap();
    let err = FlowStore::open(config(dir.path())).unwrap_err().to_string();
    assert!(err.contains("is not a flowgate write-ahead log"), "{err}");
}

#[test]
fn flush_writes_time_partitions_and_a_stale_log_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    store.append(&fixture_rows()).unwrap();
    let segment = last_segment(dir.path());
    let wal_before = std::fs::read(&segment).unwrap();
    store.flush().unwrap();
    let s = store.stats();
    assert_eq!(
        (s.memory_rows, s.disk_rows, s.partitions),
        (0, 6, 3),
        "rows span three hours"
    );
    assert!(!segment.exists(), "the flushed log segment is deleted");
    drop(store);
    // The old segment comes back (a trim that never reached the disk):
    // the manifest says its records are in Parquet.
    std::fs::write(&segment, wal_before).unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(
        (store.stats().memory_rows, store.stats().disk_rows),
        (0, 6),
        "no row twice"
    );
    assert!(!segment.exists(), "the stale segment is removed on open");
}

#[test]
fn memory_full_flushes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        flush_rows: 4,
        ..config(dir.path())
    })
    .unwrap();
    let rows = fixture_rows();
    store.append(&rows[..3]).unwrap();
    assert_eq!(store.stats().disk_rows, 0);
    store.append(&rows[3..]).unwrap();
    // The flush runs in the background; appends do not wait for it.
    store.wait_idle();
    assert_eq!((store.stats().memory_rows, store.stats().disk_rows), (0, 6));
}

#[test]
fn retention_drops_old_partitions_then_oldest_while_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture_rows();
    let t0 = rows[0].time;
    let cfg = StoreConfig {
        retention: Duration::from_secs(3600),
        ..config(dir.path())
    };
    let store = FlowStore::open(cfg.clone()).unwrap();
    store.append(&rows).unwrap();
    store.flush().unwrap();
    // Now = start of hour 3: the hour-0 partition is older than 1 h.
    let r = store
        .enforce_retention(t0 - t0 % HOUR_NS + 3 * HOUR_NS)
        .unwrap();
    assert_eq!(
        r.removed_partitions, 2,
        "hours 0 and 1 end at or before now - 1h"
    );
    assert_eq!(store.stats().disk_rows, 1);

    let dir2 = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        max_size_bytes: Some(1),
        ..config(dir2.path())
    })
    .unwrap();
    store.append(&rows).unwrap();
    store.flush().unwrap();
    let r = store.enforce_retention(t0).unwrap();
    assert_eq!(r.removed_partitions, 3);
    assert_eq!(store.stats().disk_bytes, 0);
}

/// Rows of batch `seq` of a probe: `n` copies of the fixture rows with
/// `src_port` = `seq`, so that a query can count each batch's rows.
fn batch_rows(seq: u64, n: usize) -> Vec<FlowRow> {
    fixture_rows()
        .into_iter()
        .cycle()
        .take(n)
        .map(|mut r| {
            r.src_port = seq as u16;
            r
        })
        .collect()
}

fn append_from(store: &FlowStore, probe: &str, seq: u64, n: usize) -> Result<Appended, StoreError> {
    store.append_from(probe, seq, flowgate_query::to_batch(&batch_rows(seq, n)))
}

/// Rows per `src_port` (= batch sequence), through SQL.
fn rows_per_batch(store: &FlowStore) -> BTreeMap<u64, u64> {
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v = rt
        .block_on(engine.sql("SELECT src_port, count(*) AS n FROM flows GROUP BY src_port"))
        .unwrap()
        .to_json();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["src_port"].as_u64().unwrap(), r["n"].as_u64().unwrap()))
        .collect()
}

/// A flush spanning three partitions stops at `point` as if the process
/// died there. After reopening, every acknowledged row is there once, no
/// file the manifest does not name is left, and resending every batch
/// stores nothing.
fn crash_during_flush_at(point: FlushPoint) {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    // An earlier flush: the store has files and a manifest already.
    assert_eq!(append_from(&store, "p", 1, 6).unwrap(), Appended::Stored);
    store.flush().unwrap();
    assert_eq!(append_from(&store, "p", 2, 6).unwrap(), Appended::Stored);
    assert_eq!(append_from(&store, "q", 1, 3).unwrap(), Appended::Stored);
    store.set_failpoint(Some(point));
    let err = store.flush().unwrap_err();
    assert!(matches!(err, StoreError::Crashed { .. }), "{err}");
    assert!(
        append_from(&store, "p", 3, 1).is_err(),
        "a crashed store takes nothing"
    );
    drop(store);

    let expected = BTreeMap::from([(1, 9), (2, 6)]); // src_port 1 from p/1 and q/1
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(count(&store), 15, "{point:?}");
    assert_eq!(rows_per_batch(&store), expected, "{point:?}");
    assert_eq!(
        parquet_files(dir.path()).len() as u64,
        store.stats().files,
        "{point:?}: only the manifest's files are left"
    );
    for (probe, seq) in [("p", 1), ("p", 2), ("q", 1)] {
        assert_eq!(
            append_from(&store, probe, seq, 6).unwrap(),
            Appended::Duplicate,
            "{point:?}: {probe}/{seq} resent"
        );
    }
    // The interrupted flush completes on the next one, and survives too.
    store.flush().unwrap();
    drop(store);
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(rows_per_batch(&store), expected, "{point:?}");
    assert_eq!(store.stats().memory_rows, 0);
    assert_eq!(append_from(&store, "p", 2, 6).unwrap(), Appended::Duplicate);
    assert_eq!(append_from(&store, "p", 3, 1).unwrap(), Appended::Stored);
}

macro_rules! crash_tests {
    ($($name:ident: $point:expr,)*) => {$(
        #[test]
        fn $name() {
            crash_during_flush_at($point);
        }
    )*};
}

crash_tests! {
    crash_before_the_first_file: FlushPoint::BeforeFile(0),
    crash_after_the_first_file: FlushPoint::AfterFile(0),
    crash_before_the_second_file: FlushPoint::BeforeFile(1),
    crash_after_the_second_file: FlushPoint::AfterFile(1),
    crash_before_the_last_file: FlushPoint::BeforeFile(2),
    crash_after_the_last_file: FlushPoint::AfterFile(2),
    crash_before_the_manifest: FlushPoint::BeforeManifest,
    crash_after_the_manifest: FlushPoint::AfterManifest,
    crash_before_the_log_trim: FlushPoint::BeforeTrim,
    crash_after_the_log_trim: FlushPoint::AfterTrim,
}

#[test]
fn a_resent_batch_is_a_duplicate_in_memory_in_parquet_and_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    // Out of order within a window, with a gap (a batch the probe dropped).
    for seq in [2, 1, 4] {
        assert_eq!(append_from(&store, "p", seq, 2).unwrap(), Appended::Stored);
    }
    assert!(store.holds("p", 1) && !store.holds("p", 3) && !store.holds("other", 1));
    assert_eq!(append_from(&store, "p", 1, 2).unwrap(), Appended::Duplicate);
    assert_eq!(
        append_from(&store, "other", 1, 2).unwrap(),
        Appended::Stored
    );
    drop(store); // from the log alone
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(append_from(&store, "p", 4, 2).unwrap(), Appended::Duplicate);
    store.flush().unwrap();
    drop(store); // from the manifest alone
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(append_from(&store, "p", 2, 2).unwrap(), Appended::Duplicate);
    assert_eq!(append_from(&store, "p", 3, 2).unwrap(), Appended::Stored);
    assert_eq!(count(&store), 10);
}

/// Random appends from two probes, resends, flushes, crashes (plain, with
/// a torn log tail, or at a random failpoint of a flush): after every step
/// every acknowledged batch is in the store exactly once, and a resent
/// acknowledged batch is answered Duplicate.
#[test]
fn randomized_append_flush_crash_resend_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let points = |i: u64| match i {
        0..=2 => FlushPoint::BeforeFile(i as usize),
        3..=5 => FlushPoint::AfterFile(i as usize - 3),
        6 => FlushPoint::BeforeManifest,
        7 => FlushPoint::AfterManifest,
        8 => FlushPoint::BeforeTrim,
        _ => FlushPoint::AfterTrim,
    };
    // Batch sequences are src_ports: probe "a" uses odd, "b" even ones.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = [1u64, 2u64];
    let mut store = FlowStore::open(config(dir.path())).unwrap();
    for step in 0..300 {
        let mut reopen = false;
        match rnd(12) {
            0..=4 => {
                let p = rnd(2) as usize;
                let seq = next[p];
                next[p] += 2;
                let n = 1 + rnd(6) as usize;
                let probe = ["a", "b"][p];
                assert_eq!(
                    append_from(&store, probe, seq, n).unwrap(),
                    Appended::Stored
                );
                acked.insert(seq, n as u64);
            }
            5 | 6 => {
                if let Some((&seq, _)) = acked.iter().nth(rnd(acked.len() as u64 + 1) as usize) {
                    let probe = ["b", "a"][(seq % 2) as usize];
                    let again = append_from(&store, probe, seq, 3).unwrap();
                    assert_eq!(again, Appended::Duplicate, "step {step}: {probe}/{seq}");
                }
            }
            7 => store.flush().unwrap(),
            8 => {
                store.set_failpoint(Some(points(rnd(10))));
                // A flush with nothing to write reaches no failpoint.
                let _ = store.flush();
                reopen = true;
            }
            9 => {
                if rnd(2) == 0 {
                    // A torn, never-acknowledged record at the end.
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(last_segment(dir.path()))
                        .unwrap();
                    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
                }
                reopen = true;
            }
            _ => {}
        }
        if reopen {
            drop(store);
            store = FlowStore::open(config(dir.path())).unwrap();
        }
        let total: u64 = acked.values().sum();
        assert_eq!(count(&store), total, "step {step}");
        if reopen || step % 10 == 0 {
            assert_eq!(rows_per_batch(&store), acked, "step {step}");
        }
    }
}

#[test]
fn a_batch_of_another_schema_is_refused_by_name_and_nothing_is_stored() {
    use datafusion::arrow::array::{ArrayRef, UInt8Array};
    use datafusion::arrow::record_batch::RecordBatch;
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    let column: ArrayRef = std::sync::Arc::new(UInt8Array::from(vec![1, 2]));
    let foreign = RecordBatch::try_from_iter([("x", column)]).unwrap();
    let err = store.append_batch(foreign).unwrap_err().to_string();
    assert!(err.contains("does not have the flows schema"), "{err}");
    assert_eq!(count(&store), 0);
    // A batch from the builder is the same as the rows it was built from.
    let rows = fixture_rows();
    store.append_batch(flowgate_query::to_batch(&rows)).unwrap();
    assert_eq!(count(&store), rows.len() as u64);
}

/// Ingest goes on while a flush is writing: with the flush held between
/// its files and its manifest, batches are still stored (and queried),
/// and once the flush ends every row is there once, after a restart too.
#[test]
fn ingest_goes_on_while_a_flush_is_paused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(append_from(&store, "p", 1, 6).unwrap(), Appended::Stored);
    store.set_pause(Some(FlushPoint::BeforeManifest));
    let flusher = {
        let store = store.clone();
        std::thread::spawn(move || store.flush())
    };
    store.wait_paused();
    // Appends must not wait for the paused flush: run them on a thread and
    // give up (failing) if they have not returned in time.
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            for seq in 2..=4 {
                assert_eq!(append_from(&store, "p", seq, 6).unwrap(), Appended::Stored);
            }
            assert_eq!(append_from(&store, "p", 1, 6).unwrap(), Appended::Duplicate);
            done_tx.send(()).unwrap();
        })
    };
    let appended = done_rx.recv_timeout(Duration::from_secs(30));
    let during = rows_per_batch(&store);
    store.set_pause(None);
    flusher.join().unwrap().unwrap();
    appender.join().unwrap();
    assert!(appended.is_ok(), "appends waited for the paused flush");
    let expected = BTreeMap::from([(1, 6), (2, 6), (3, 6), (4, 6)]);
    assert_eq!(during, expected, "queried while the flush was paused");
    assert_eq!(
        store.stats().disk_rows,
        6,
        "the flush took only what it froze"
    );
    assert_eq!(store.stats().memory_rows, 18);
    drop(store);
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(rows_per_batch(&store), expected);
    assert_eq!(append_from(&store, "p", 3, 6).unwrap(), Appended::Duplicate);
}

/// A store from before the manifest (files named by the last log sequence
/// they hold, the log in one `wal` file) is adopted as it is: its files and
/// the log records past them are read once, and a manifest is written.
#[test]
fn a_store_from_before_the_manifest_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    store.append(&batch_rows(1, 6)).unwrap();
    store.append(&batch_rows(2, 5)).unwrap();
    store.flush().unwrap();
    store.append(&batch_rows(3, 4)).unwrap();
    drop(store);
    // The old layout: no manifest, and the log as `wal` beside `flows/`.
    std::fs::remove_file(dir.path().join("manifest")).unwrap();
    std::fs::rename(last_segment(dir.path()), dir.path().join("wal")).unwrap();
    assert!(
        std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .next()
            .is_none()
    );

    let store = FlowStore::open(config(dir.path())).unwrap();
    let expected = BTreeMap::from([(1, 6), (2, 5), (3, 4)]);
    assert_eq!(rows_per_batch(&store), expected);
    assert_eq!(
        (store.stats().disk_rows, store.stats().memory_rows),
        (11, 4)
    );
    assert!(
        dir.path().join("manifest").is_file(),
        "a first manifest is written"
    );
    store.flush().unwrap();
    drop(store);
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(rows_per_batch(&store), expected, "adopted once, not again");
    assert!(
        !dir.path().join("wal").exists(),
        "the old log is trimmed once flushed"
    );
}

/// A flush whose encoding fails is an error its caller sees, and appends
/// past the memory limit are refused with it, never left waiting; once
/// encoding works again every row is stored once, after a restart too.
#[test]
fn a_failing_encode_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        flush_rows: 6,
        ..config(dir.path())
    };
    let store = FlowStore::open(cfg.clone()).unwrap();
    store.set_fail_encoding(true);
    assert_eq!(append_from(&store, "p", 1, 6).unwrap(), Appended::Stored);
    let err = store.flush().unwrap_err();
    assert!(matches!(err, StoreError::Parquet { .. }), "{err}");
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    {
        let store = store.clone();
        std::thread::spawn(move || {
            let results: Vec<_> = (2..=5)
                .map(|seq| append_from(&store, "p", seq, 6))
                .collect();
            done_tx.send(results).unwrap();
        });
    }
    let results = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("appends waited for a flush that cannot succeed");
    assert!(
        matches!(results.last(), Some(Err(StoreError::FlushFailing { .. }))),
        "{results:?}"
    );
    let mut expected = BTreeMap::from([(1, 6)]);
    for (seq, r) in (2..=5).zip(&results) {
        if matches!(r, Ok(Appended::Stored)) {
            expected.insert(seq, 6);
        }
    }
    assert_eq!(rows_per_batch(&store), expected, "queried meanwhile");
    store.set_fail_encoding(false);
    store.flush().unwrap();
    assert_eq!(rows_per_batch(&store), expected);
    drop(store);
    let store = FlowStore::open(cfg).unwrap();
    assert_eq!(rows_per_batch(&store), expected, "after a restart");
}

/// Rows are queried exactly once in every state they pass through: Arrow,
/// being encoded (held there), an encoded image, frozen by a flush (held
/// before its manifest), and on disk; an encoding that ends after a flush
/// took its rows is dropped, not added again.
#[test]
fn rows_are_queried_once_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    let mut expected = BTreeMap::new();
    let stored = |store: &FlowStore, expected: &mut BTreeMap<u64, u64>, seq: u64, n: usize| {
        assert_eq!(append_from(store, "p", seq, n).unwrap(), Appended::Stored);
        expected.insert(seq, n as u64);
    };
    stored(&store, &mut expected, 1, CHUNK_ROWS); // encoded at once
    // Batch 3 completes a chunk whose encoding is held.
    stored(&store, &mut expected, 2, 2);
    store.set_pause(Some(FlushPoint::Encoding));
    let encoder = {
        let store = store.clone();
        std::thread::spawn(move || append_from(&store, "p", 3, CHUNK_ROWS - 2))
    };
    store.wait_paused();
    expected.insert(3, (CHUNK_ROWS - 2) as u64);
    stored(&store, &mut expected, 4, 1); // Arrow
    assert_eq!(rows_per_batch(&store), expected, "chunk, encoding, Arrow");
    // A flush takes everything, the rows being encoded too.
    store.flush().unwrap();
    assert_eq!(rows_per_batch(&store), expected, "on disk");
    store.set_pause(None);
    assert_eq!(encoder.join().unwrap().unwrap(), Appended::Stored);
    assert_eq!(
        rows_per_batch(&store),
        expected,
        "the late encoding adds nothing"
    );
    assert_eq!(store.stats().memory_rows, 0);

    stored(&store, &mut expected, 5, CHUNK_ROWS);
    stored(&store, &mut expected, 6, 2);
    store.set_pause(Some(FlushPoint::BeforeManifest));
    let flusher = {
        let store = store.clone();
        std::thread::spawn(move || store.flush())
    };
    store.wait_paused();
    stored(&store, &mut expected, 7, CHUNK_ROWS + 1);
    let during = expected;
    assert_eq!(rows_per_batch(&store), during, "frozen, and newer rows");
    store.set_pause(None);
    flusher.join().unwrap().unwrap();
    assert_eq!(rows_per_batch(&store), during, "after the flush");
    drop(store);
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(rows_per_batch(&store), during, "after a restart");
    for seq in 1..=7 {
        assert_eq!(
            append_from(&store, "p", seq, 1).unwrap(),
            Appended::Duplicate
        );
    }
}

/// Encoding rows as a Parquet image shrinks what memory holds, by the
/// store's own accounting; memory past `flush_bytes` flushes by itself, and
/// appends past three times it are refused when flushing fails.
#[test]
fn memory_is_counted_in_bytes_and_shrinks_when_encoded() {
    let dir = tempfile::tempdir().unwrap();
    // Enough rows that the image's metadata (parsed, kept for queries)
    // does not outweigh them.
    let rows = 20_000;
    let store = FlowStore::open(StoreConfig {
        chunk_rows: rows,
        ..config(dir.path())
    })
    .unwrap();
    append_from(&store, "p", 1, rows - 1).unwrap();
    let arrow = store.stats().memory_bytes;
    assert!(arrow > 0);
    append_from(&store, "p", 2, 1).unwrap();
    let encoded = store.stats().memory_bytes;
    assert!(
        encoded * 3 < arrow,
        "{rows} rows take {encoded} bytes encoded, {arrow} as Arrow"
    );
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        flush_bytes: arrow,
        ..config(dir.path())
    };
    let store = FlowStore::open(cfg.clone()).unwrap();
    store.set_fail_encoding(true);
    let mut results = Vec::new();
    for seq in 1..=4 {
        results.push(append_from(&store, "p", seq, rows));
        store.wait_idle();
    }
    assert!(
        matches!(results.last(), Some(Err(StoreError::FlushFailing { .. }))),
        "{results:?}"
    );
    assert_eq!(
        append_from(&store, "p", 1, rows).unwrap(),
        Appended::Duplicate,
        "a resend is answered while memory is full"
    );
    store.set_fail_encoding(false);
    store.flush().unwrap();
    let s = store.stats();
    assert_eq!(s.memory_rows, 0);
    let stored = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(s.disk_rows, stored * rows as u64);
    drop(store);

    // Memory past `flush_bytes` (and far below `flush_rows`) is flushed.
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        flush_bytes: 1,
        ..config(dir.path())
    })
    .unwrap();
    append_from(&store, "p", 1, 3).unwrap();
    store.wait_idle();
    assert_eq!(
        (store.stats().memory_rows, store.stats().disk_rows),
        (0, 3),
        "flushed by bytes"
    );
}

/// A query over the Parquet images in memory prunes them as a scan of
/// files does: with one batch per image, a filter on the batch's
/// `src_port` reads the row groups of that batch only, over more than one
/// partition, and counts right.
#[test]
fn a_query_prunes_the_images_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        chunk_rows: 6,
        ..config(dir.path())
    })
    .unwrap();
    for seq in 1..=8 {
        append_from(&store, "p", seq, 6).unwrap();
    }
    assert_eq!(store.stats().disk_rows, 0);
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = rt
        .block_on(engine.sql("EXPLAIN ANALYZE SELECT count(*) AS n FROM flows WHERE src_port = 3"))
        .unwrap()
        .to_json();
    let plan = plan["rows"][0]["plan"].as_str().unwrap().to_owned();
    // Each batch spans three hours: three images, one row group each.
    assert!(
        plan.contains("flowgate-memory/chunk-")
            && plan.contains("row_groups_pruned_statistics=24 total → 3 matched"),
        "{plan}"
    );
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    if parallel > 1 {
        assert!(
            plan.contains(&format!("file_groups={{{} groups", parallel.min(24))),
            "{plan}"
        );
    }
    let n = rt
        .block_on(engine.sql("SELECT count(*) AS n FROM flows WHERE src_port = 3"))
        .unwrap()
        .to_json();
    assert_eq!(n["rows"][0]["n"], 6);
}

/// Every column reads back the same whichever form the rows are in: Arrow,
/// Parquet images in memory, or files on disk (dictionaries, lists, NULLs
/// and timestamps through the Parquet round trip).
#[test]
fn rows_read_the_same_as_arrow_images_and_files() {
    let rows = fixture_rows();
    let read = |chunk_rows: usize, flush: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = FlowStore::open(StoreConfig {
            chunk_rows,
            ..config(dir.path())
        })
        .unwrap();
        store.append(&rows).unwrap();
        if flush {
            store.flush().unwrap();
        }
        let engine = QueryEngine::new(store, QueryLimits::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(engine.sql("SELECT * FROM flows ORDER BY time, src_ip, dst_ip, direction"))
            .unwrap()
            .to_json()["rows"]
            .clone()
    };
    let arrow = read(1_000_000, false);
    assert_eq!(arrow.as_array().unwrap().len(), rows.len());
    assert_eq!(read(1, false), arrow, "images in memory");
    assert_eq!(read(1, true), arrow, "files on disk");
}
