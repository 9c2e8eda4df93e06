//! Talking to a running collector, for every client command (`flowgate
//! query`, `replay`, `explain --collector-http`, `blame`), the demo and
//! tests: SQL and the API over HTTP and batches over gRPC exactly as a probe
//! sends them ([`collector`]), and known flows from a file turned into those
//! batches ([`replay`]). It links neither DataFusion nor kube.

pub mod collector;
pub mod replay;

pub use collector::{
    ClientError, grpc_tls, http_json, http_json_as, query, query_as, send_batches,
    send_batches_with,
};
