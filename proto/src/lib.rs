//! The flow record and the ingest service shared by every flowgate part.
//!
//! Probes build [`v1::Flow`]s and send them in [`v1::FlowBatch`]es over the
//! [`v1::flow_ingest_client::FlowIngestClient`]; the collector serves
//! [`v1::flow_ingest_server::FlowIngest`], enriches each flow and stores it.
//! The schema lives in `proto/flowgate/v1/flow.proto`.

/// `flowgate.v1`: flows, batches, acknowledgements and the ingest service.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("flowgate.v1");
}

/// The collector's default gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 4245;
/// The collector's default HTTP port (API, dashboard, metrics).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
