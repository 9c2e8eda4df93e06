//! Delivery to the collector: a bounded buffer of batches and a gRPC stream.
//!
//! A batch leaves the buffer only when the collector acknowledges it
//! (STORED or DUPLICATE) or refuses it for good (REJECTED, counted). While
//! the collector is away, batches wait; when the buffer is full, the oldest
//! batches are dropped and their records counted as overflow, never
//! silently. After a reconnect, every unacknowledged batch is sent again
//! with its sequence number, so the collector can drop duplicates.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate_proto::v1::flow_ingest_client::FlowIngestClient;
use flowgate_proto::v1::{AckStatus, Flow, FlowBatch, LossReport, SchemaVersion};
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::metrics::Metrics;

#[derive(Debug)]
struct Pending {
    sequence: u64,
    flows: Vec<Flow>,
}

/// Batches waiting for an acknowledgement.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Pending>,
    records: usize,
    max_records: usize,
    next_sequence: u64,
    /// Batches of `queue` already sent on the current stream.
    sent: usize,
    pub overflow_records: u64,
}

impl Buffer {
    pub fn new(max_records: usize) -> Self {
        Buffer {
            queue: VecDeque::new(),
            records: 0,
            max_records,
            next_sequence: 1,
            sent: 0,
            overflow_records: 0,
        }
    }

    /// Adds flows as batches of at most `max_batch`; returns the records
    /// dropped to make room (oldest first).
    pub fn push(&mut self, flows: Vec<Flow>, max_batch: usize) -> u64 {
        let mut dropped = 0;
        let mut flows = flows;
        while !flows.is_empty() {
            let rest = flows.split_off(flows.len().min(max_batch.max(1)));
            self.records += flows.len();
            self.queue.push_back(Pending {
                sequence: self.next_sequence,
                flows,
            });
            self.next_sequence += 1;
            flows = rest;
        }
        while self.records > self.max_records {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.records -= old.flows.len();
            dropped += old.flows.len() as u64;
            self.sent = self.sent.saturating_sub(1);
        }
        self.overflow_records += dropped;
        dropped
    }

    /// Removes an acknowledged batch; returns its record count.
    pub fn ack(&mut self, sequence: u64) -> Option<usize> {
        let pos = self.queue.iter().position(|p| p.sequence == sequence)?;
        let p = self.queue.remove(pos)?;
        self.records -= p.flows.len();
        if pos < self.sent {
            self.sent -= 1;
        }
        Some(p.flows.len())
    }

    pub fn records(&self) -> usize {
        self.records
    }

    pub fn batches(&self) -> usize {
        self.queue.len()
    }

    fn restart(&mut self) {
        self.sent = 0;
    }

    fn next_to_send(&mut self) -> Option<(u64, Vec<Flow>)> {
        let p = self.queue.get(self.sent)?;
        self.sent += 1;
        Some((p.sequence, p.flows.clone()))
    }
}

/// Loss counters reported in-band with every batch.
pub type Losses = Arc<dyn Fn() -> LossReport + Send + Sync>;

/// Everything the delivery loop needs.
pub struct Exporter {
    pub collector: String,
    /// TLS (and the client certificate) for the collector; `None`: plaintext.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub probe_id: String,
    pub node: String,
    pub buffer: Arc<Mutex<Buffer>>,
    /// Notified when the buffer has new batches.
    pub more: Arc<Notify>,
    pub losses: Losses,
    pub metrics: Arc<Metrics>,
}

impl Exporter {
    /// Streams the buffer to the collector until `shutdown` completes,
    /// reconnecting with exponential backoff (100 ms to 10 s). The backoff
    /// starts over once a stream has delivered an acknowledgement, so a
    /// collector restart after a long healthy stream is retried quickly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::default();
        loop {
            let mut acked = false;
            tokio::select! {
                _ = &mut shutdown => return,
                e = self.stream_once(&mut acked) => {
                    if acked {
                        backoff.reset();
                    }
                    self.metrics.set_link(crate::metrics::Link::Buffering {
                        reason: format!("collector {} unavailable: {}", self.collector, e.message()),
                    });
                    tracing::warn!(collector = %self.collector, error = %e, retry_in = ?backoff.current(), "collector unavailable");
                }
            }
            self.metrics.reconnects.inc();
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff.current()) => {}
            }
            backoff.grow();
        }
    }

    async fn connect(&self) -> Result<FlowIngestClient<tonic::transport::Channel>, tonic::Status> {
        let unavailable = |e: tonic::transport::Error| {
            // The cause chain says why (refused, certificate unknown…).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            tonic::Status::unavailable(format!("connect: {text}"))
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.collector.clone())
            .map_err(|e| tonic::Status::invalid_argument(format!("collector URL: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(unavailable)?;
        }
        let channel = endpoint.connect().await.map_err(unavailable)?;
        Ok(FlowIngestClient::new(channel))
    }

    /// One stream, until it fails (it never ends otherwise). Sets `acked`
    /// once the collector acknowledged a batch on it.
    async fn stream_once(&self, acked: &mut bool) -> tonic::Status {
        match self.stream_inner(acked).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn stream_inner(
        &self,
        acked: &mut bool,
    ) -> Result<std::convert::Infallible, tonic::Status> {
        let mut client = self.connect().await?;
        let Exporter {
            collector,
            probe_id,
            node,
            buffer,
            more,
            losses,
            metrics,
            tls: _,
        } = self;
        // Bounded: at most 16 batches in flight on the wire; the buffer holds the rest.
        let (tx, rx) = mpsc::channel::<FlowBatch>(16);
        let mut acks = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        tracing::info!(collector, "streaming flows to the collector");
        metrics.set_link(crate::metrics::Link::Streaming);
        buffer.lock().unwrap().restart();
        loop {
            // Send everything not yet sent on this stream.
            loop {
                let next = buffer.lock().unwrap().next_to_send();
                let Some((sequence, flows)) = next else { break };
                let batch = FlowBatch {
                    schema_version: SchemaVersion::V1 as i32,
                    probe_id: probe_id.to_string(),
                    node: node.to_string(),
                    sequence,
                    flows,
                    losses: Some(losses()),
                };
                if tx.send(batch).await.is_err() {
                    return Err(tonic::Status::unavailable("stream closed"));
                }
                metrics.batches_sent.inc();
            }
            tokio::select! {
                _ = more.notified() => {}
                ack = acks.next() => {
                    let ack = match ack {
                        None => return Err(tonic::Status::unavailable("collector closed the stream")),
                        Some(ack) => ack?,
                    };
                    *acked = true;
                    let status = ack.status();
                    let released = buffer.lock().unwrap().ack(ack.sequence);
                    match status {
                        AckStatus::Stored | AckStatus::Duplicate => {
                            metrics.batches_acked.inc();
                        }
                        AckStatus::Rejected => {
                            metrics.batches_rejected.inc();
                            metrics.records_rejected.inc_by(released.unwrap_or(0) as u64);
                            tracing::error!(sequence = ack.sequence, reason = %ack.reason, "collector rejected a batch; its records are dropped");
                        }
                        AckStatus::Unspecified => {
                            tracing::warn!(sequence = ack.sequence, "acknowledgement without a status");
                        }
                    }
                    metrics.buffer_records.set(buffer.lock().unwrap().records() as i64);
                }
            }
        }
    }
}

/// Reconnect delays: 100 ms doubling to 10 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    pub fn current(&self) -> Duration {
        self.0
    }

    pub fn grow(&mut self) {
        self.0 = (self.0 * 2).min(Self::MAX);
    }

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(n: usize) -> Vec<Flow> {
        (0..n)
            .map(|i| Flow {
                packets: i as u64,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn batches_leave_only_when_acknowledged() {
        let mut b = Buffer::new(100);
        assert_eq!(b.push(flows(25), 10), 0);
        assert_eq!((b.batches(), b.records()), (3, 25));
        let (s1, f1) = b.next_to_send().unwrap();
        let (s2, _) = b.next_to_send().unwrap();
        assert_eq!((s1, s2, f1.len()), (1, 2, 10));
        assert_eq!(b.ack(1), Some(10));
        assert_eq!(b.ack(1), None, "an ack is applied once");
        // A reconnect resends what is not acknowledged, with the same numbers.
        b.restart();
        assert_eq!(b.next_to_send().unwrap().0, 2);
        assert_eq!(b.next_to_send().unwrap().0, 3);
        assert!(b.next_to_send().is_none());
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_every_record() {
        let mut b = Buffer::new(30);
        b.push(flows(20), 10);
        let dropped = b.push(flows(25), 10);
        assert_eq!(dropped, 20);
        assert_eq!(b.overflow_records, 20);
        assert_eq!(b.records(), 25);
        assert_eq!(
            b.next_to_send().unwrap().0,
            3,
            "the oldest batches went first"
        );
    }
}
