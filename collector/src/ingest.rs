//! The gRPC `FlowIngest` service: many probes stream batches at once; each
//! batch is checked, deduplicated by (probe_id, sequence), enriched, stored,
//! and only then acknowledged STORED. The store keeps which (probe,
//! sequence) it holds durably, with the rows: a batch resent after a
//! collector crash is answered DUPLICATE and stored once.
//!
//! A batch that cannot be stored as sent (unknown schema version, too many
//! flows, a malformed record) gets a REJECTED ack whose reason names the
//! problem, and the stream goes on. A store failure is not the sender's
//! fault: the stream ends with UNAVAILABLE and the probe resends unacked
//! batches after reconnecting.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use flowgate_proto::v1::flow_ingest_server::{FlowIngest, FlowIngestServer};
use flowgate_proto::v1::{AckStatus, BatchAck, FlowBatch, SchemaVersion};
use flowgate_query::{Appended, FlowBatchBuilder, FlowStore};
use futures::{Stream, StreamExt};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::ClusterState;
use crate::enrich::{Enricher, VerdictTally, check};
use crate::losses::Losses;
use crate::metrics::{Metrics, RejectKind};
use crate::tls::Peer;

/// Acks queued per stream before the stream stops reading batches (the
/// probe then waits: backpressure, nothing dropped).
const ACK_QUEUE: usize = 16;
pub use flowgate_proto::MAX_MESSAGE_BYTES;
/// Kubernetes object names (and so node names) are DNS subdomains: at most
/// 253 bytes. A probe id is "node/probe", bounded the same way.
pub const MAX_NAME_BYTES: usize = 253;

/// The ingest service; clone it freely.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    store: FlowStore,
    state: ClusterState,
    metrics: Arc<Metrics>,
    losses: Arc<Losses>,
    max_batch_flows: usize,
    cache_entries: usize,
    /// One batch of a probe at a time, so that a concurrent resend waits
    /// and is then found stored, without enriching it twice.
    probes: Mutex<FxHashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// For unary `Push`, which has no stream to own a cache.
    push_enricher: tokio::sync::Mutex<Enricher>,
}

impl Ingest {
    pub fn new(
        store: FlowStore,
        state: ClusterState,
        metrics: Arc<Metrics>,
        max_batch_flows: usize,
        cache_entries: usize,
    ) -> Self {
        Ingest {
            inner: Arc::new(Inner {
                store,
                state,
                losses: Arc::new(Losses::new(metrics.clone())),
                metrics,
                max_batch_flows,
                cache_entries,
                probes: Mutex::default(),
                push_enricher: tokio::sync::Mutex::new(Enricher::new(cache_entries)),
            }),
        }
    }

    /// The probes' losses as reported with their batches.
    pub fn losses(&self) -> Arc<Losses> {
        self.inner.losses.clone()
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_service(self) -> FlowIngestServer<Self> {
        FlowIngestServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Handles one batch from a plaintext peer: the ack to send, or a status
    /// ending the exchange when the store failed.
    pub async fn handle(
        &self,
        enricher: &mut Enricher,
        batch: FlowBatch,
    ) -> Result<BatchAck, Status> {
        self.handle_from(&Peer::Unverified, enricher, batch).await
    }

    /// [`Ingest::handle`] for a batch from `peer`, whose certificate must
    /// name the batch's node.
    pub async fn handle_from(
        &self,
        peer: &Peer,
        enricher: &mut Enricher,
        batch: FlowBatch,
    ) -> Result<BatchAck, Status> {
        let inner = &self.inner;
        let ack = |status: AckStatus, reason: String, stored: u32| BatchAck {
            probe_id: batch.probe_id.clone(),
            sequence: batch.sequence,
            status: status as i32,
            reason,
            flows_stored: stored,
        };
        let reject = |kind: RejectKind, reason: String| {
            inner.metrics.rejected(kind, batch.flows.len());
            tracing::debug!(probe = %batch.probe_id, sequence = batch.sequence, %reason, "batch rejected");
            Ok(ack(AckStatus::Rejected, reason, 0))
        };
        if batch.schema_version != SchemaVersion::V1 as i32 {
            return reject(
                RejectKind::SchemaVersion,
                format!(
                    "unknown schema_version {} (this collector accepts {} = SCHEMA_VERSION_V1)",
                    batch.schema_version,
                    SchemaVersion::V1 as i32
                ),
            );
        }
        if batch.probe_id.is_empty() {
            return reject(
                RejectKind::Malformed,
                "probe_id is empty (needed to deduplicate resent batches)".into(),
            );
        }
        for (field, value) in [("probe_id", &batch.probe_id), ("node", &batch.node)] {
            if value.len() > MAX_NAME_BYTES {
                return reject(
                    RejectKind::Malformed,
                    format!(
                        "{field} has {} bytes, the limit is {MAX_NAME_BYTES}",
                        value.len()
                    ),
                );
            }
        }
        if let Err(reason) = peer.may_report_as(&batch.node) {
            return reject(RejectKind::Identity, reason);
        }
        if batch.flows.len() > inner.max_batch_flows {
            return reject(
                RejectKind::TooLarge,
                format!(
                    "batch has {} flows, the limit is {} (--max-batch-flows)",
                    batch.flows.len(),
                    inner.max_batch_flows
                ),
            );
        }
        if let Some(losses) = &batch.losses {
            // Counted even when the flows are refused below: the report
            // comes from a probe whose identity was checked.
            inner
                .losses
                .record(&batch.probe_id, &batch.node, losses, crate::now_ns());
        }
        let turn = {
            let mut probes = inner.probes.lock().unwrap_or_else(|p| p.into_inner());
            probes.entry(batch.probe_id.clone()).or_default().clone()
        };
        let turn = turn.lock().await;
        if inner.store.holds(&batch.probe_id, batch.sequence) {
            inner.metrics.batches_duplicate.inc();
            return Ok(ack(AckStatus::Duplicate, String::new(), 0));
        }
        let mut checked = Vec::with_capacity(batch.flows.len());
        for (i, flow) in batch.flows.iter().enumerate() {
            match check(flow) {
                Ok(c) => checked.push(c),
                Err(e) => return reject(RejectKind::Malformed, format!("flow {i}: {e}")),
            }
        }
        let snapshot = inner.state.load();
        let mut tally = VerdictTally::default();
        let mut rows = FlowBatchBuilder::with_capacity(batch.flows.len());
        for (flow, c) in batch.flows.iter().zip(&checked) {
            enricher.append(&snapshot, flow, c, &batch.node, &mut tally, &mut rows);
        }
        let n = rows.len();
        let rows = rows.finish();
        let store = inner.store.clone();
        let (probe, sequence) = (batch.probe_id.clone(), batch.sequence);
        let stored =
            tokio::task::spawn_blocking(move || store.append_from(&probe, sequence, rows)).await;
        drop(turn);
        match stored {
            Ok(Ok(Appended::Stored)) => {}
            Ok(Ok(Appended::Duplicate)) => {
                inner.metrics.batches_duplicate.inc();
                return Ok(ack(AckStatus::Duplicate, String::new(), 0));
            }
            Ok(Err(e)) => {
                inner.metrics.rejected(RejectKind::Store, n);
                let e = with_causes(&e);
                tracing::error!(error = %e, probe = %batch.probe_id, "cannot store a batch");
                return Err(Status::unavailable(format!("the flow store failed: {e}")));
            }
            Err(e) => {
                inner.metrics.rejected(RejectKind::Store, n);
                return Err(Status::internal(format!("the store task failed: {e}")));
            }
        }
        tally.record(&inner.metrics, &snapshot.cluster);
        inner.metrics.flows_ingested.inc_by(n as u64);
        inner.metrics.batches_stored.inc();
        Ok(ack(
            AckStatus::Stored,
            String::new(),
            u32::try_from(n).unwrap_or(u32::MAX),
        ))
    }
}

/// An error and its causes on one line (`a: b: c`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

type AckStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlowIngest for Ingest {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<FlowBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let peer = peer_of(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            let mut enricher = Enricher::new(this.inner.cache_entries);
            while let Some(message) = inbound.next().await {
                let result = match message {
                    Ok(batch) => this.handle_from(&peer, &mut enricher, batch).await,
                    Err(status) => match this.refuse_frame(status) {
                        Some(refusal) => Err(refusal),
                        None => break,
                    },
                };
                let failed = result.is_err();
                // The receiver is gone when the probe hung up.
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn push(&self, request: Request<FlowBatch>) -> Result<Response<BatchAck>, Status> {
        let peer = peer_of(&request);
        let mut enricher = self.inner.push_enricher.lock().await;
        self.handle_from(&peer, &mut enricher, request.into_inner())
            .await
            .map(Response::new)
    }
}

fn peer_of<T>(request: &Request<T>) -> Peer {
    match request.peer_certs() {
        Some(chain) => Peer::Certificate(chain),
        None => Peer::Unverified,
    }
}

/// What prost says when bytes are not a FlowBatch (tonic reports it as INTERNAL).
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

impl Ingest {
    /// The status to end a stream with when a frame could not be read as a
    /// FlowBatch: the sender's fault, so not INTERNAL. `None` when the
    /// stream just ended (the probe went away).
    fn refuse_frame(&self, status: Status) -> Option<Status> {
        let (kind, refusal) = match status.code() {
            tonic::Code::OutOfRange => (
                RejectKind::TooLarge,
                Status::resource_exhausted(format!(
                    "a message is larger than the collector's limit of {MAX_MESSAGE_BYTES} bytes: {}",
                    status.message()
                )),
            ),
            tonic::Code::Internal if status.message().starts_with(DECODE_FAILURE) => (
                RejectKind::Malformed,
                Status::invalid_argument(format!(
                    "a message is not a flowgate.v1.FlowBatch: {}",
                    status.message()
                )),
            ),
            _ => {
                tracing::debug!(%status, "probe stream ended");
                return None;
            }
        };
        self.inner.metrics.rejected(kind, 0);
        tracing::warn!(status = %refusal.message(), "refused a frame");
        Some(refusal)
    }
}
