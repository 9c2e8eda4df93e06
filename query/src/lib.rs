//! The flow store (Arrow in memory, Parquet on disk) and sandboxed DataFusion SQL over it.
