//! The flow store and SQL over it.
//!
//! Data flows in through [`FlowStore::append`]: rows are written ahead to a
//! checksummed log and synced ([`wal`]), then kept as Arrow record batches
//! in memory; [`FlowStore::flush`] writes them as zstd Parquet files
//! partitioned by time and empties the log; retention deletes whole
//! partitions by age and by size. [`QueryEngine`] runs read-only,
//! sandboxed DataFusion SQL over `flows` (memory and Parquet as one table,
//! time filters pruning partitions first), `connections` and `rule_hits`
//! over it, and the cluster tables the collector keeps current (`pods`,
//! `namespaces`, `policies`, `pod_isolation`, `policy_history`,
//! `label_history`), and returns JSON, CSV or
//! Arrow IPC ([`QueryResult`]).

mod connections;
mod coverage;
mod delivered;
mod engine;
pub mod filter;
mod format;
mod manifest;
pub mod map;
mod memory;
pub mod model;
pub mod observed;
mod provider;
mod store;
pub mod wal;

pub use coverage::PodIsolationRow;
pub use datafusion::arrow;
pub use engine::{
    LabelHistoryRow, NamespaceRow, PodRow, PolicyHistoryRow, PolicyRow, QueryEngine, QueryError,
    QueryLimits,
};
pub use format::QueryResult;
pub use manifest::ManifestError;
pub use model::{
    Direction, DirectionVerdict, DroppedAt, Failure, FlowBatchBuilder, FlowRef, FlowRow,
    KernelFate, ObservedAt, Outcome, Protocol, TextList, Tier, UnknownValue, ValueSet, Verdict,
    flows_schema, to_batch,
};
pub use observed::{DistinctConnection, ObservedEnd};
pub use store::{
    Appended, FlowStore, FlushPoint, RetentionReport, StoreConfig, StoreError, StoreStats,
};

#[doc(hidden)]
pub use provider::time_bounds;
