//! Durability: what `append` returned for survives restarts and crashes,
//! exactly once; retention removes whole partitions.

mod support;

use std::time::Duration;

use flowgate_query::{FlowRow, FlowStore, StoreConfig};
use support::{HOUR_NS, fixture_rows};

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        flush_rows: 1_000_000,
        ..StoreConfig::new(dir)
    }
}

fn count(store: &FlowStore) -> u64 {
    let s = store.stats();
    s.memory_rows + s.disk_rows
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
    let wal = dir.path().join("wal");
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
fn flush_writes_time_partitions_and_a_crash_before_the_log_reset_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    store.append(&fixture_rows()).unwrap();
    let wal_before = std::fs::read(dir.path().join("wal")).unwrap();
    store.flush().unwrap();
    let s = store.stats();
    assert_eq!(
        (s.memory_rows, s.disk_rows, s.partitions),
        (0, 6, 3),
        "rows span three hours"
    );
    drop(store);
    // Simulate a crash after the Parquet files were written but before the
    // log was emptied: the old log comes back.
    std::fs::write(dir.path().join("wal"), wal_before).unwrap();
    let store = FlowStore::open(config(dir.path())).unwrap();
    assert_eq!(
        (store.stats().memory_rows, store.stats().disk_rows),
        (0, 6),
        "no row twice"
    );
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
    assert_eq!((store.stats().memory_rows, store.stats().disk_rows), (0, 6));
}

#[test]
fn retention_drops_old_partitions_then_oldest_while_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture_rows();
    let t0 = rows[0].time_ns;
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

/// Random appends, flushes and "crashes" (drop without flush, sometimes a
/// torn tail): after every reopen the store holds exactly the acknowledged rows.
#[test]
fn randomized_append_crash_reopen_model() {
    let dir = tempfile::tempdir().unwrap();
    let rows = fixture_rows();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut acknowledged = 0u64;
    let mut store = FlowStore::open(config(dir.path())).unwrap();
    for step in 0..200 {
        match rnd(10) {
            0..=5 => {
                let n = 1 + rnd(6) as usize;
                let batch: Vec<FlowRow> = rows.iter().cycle().take(n).cloned().collect();
                store.append(&batch).unwrap();
                acknowledged += n as u64;
            }
            6 => store.flush().unwrap(),
            7 => {
                drop(store);
                if rnd(2) == 0 {
                    // A torn, never-acknowledged record at the end.
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(dir.path().join("wal"))
                        .unwrap();
                    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
                }
                store = FlowStore::open(config(dir.path())).unwrap();
            }
            _ => {}
        }
        assert_eq!(count(&store), acknowledged, "step {step}");
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
