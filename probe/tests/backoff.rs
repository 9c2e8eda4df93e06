//! The exporter's reconnect backoff, under tokio's paused clock: it grows
//! while the collector cannot be reached, and starts over after a stream
//! that delivered an acknowledgement (so a collector that restarts after a
//! long healthy stream is found again within 100 ms, not 10 s).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate_probe::export::{Buffer, Exporter};
use flowgate_probe::metrics::Metrics;
use flowgate_proto::v1::flow_ingest_server::{FlowIngest, FlowIngestServer};
use flowgate_proto::v1::{AckStatus, BatchAck, FlowBatch, LossReport};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

/// A collector that acknowledges once on every stream and then drops it,
/// as one that restarts would.
struct AckThenDrop;

type Acks = Pin<Box<dyn futures::Stream<Item = Result<BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl FlowIngest for AckThenDrop {
    type StreamStream = Acks;

    async fn stream(
        &self,
        _request: Request<Streaming<FlowBatch>>,
    ) -> Result<Response<Acks>, Status> {
        let ack = BatchAck {
            probe_id: "p".into(),
            sequence: 0,
            status: AckStatus::Stored as i32,
            reason: String::new(),
            flows_stored: 0,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([
            Ok(ack),
            Err(Status::unavailable("restarting")),
        ]))))
    }

    async fn push(&self, _request: Request<FlowBatch>) -> Result<Response<BatchAck>, Status> {
        Err(Status::unimplemented("stream only"))
    }
}

fn exporter(collector: String, metrics: Arc<Metrics>) -> Exporter {
    Exporter {
        collector,
        tls: None,
        probe_id: "node-a/1".into(),
        node: "node-a".into(),
        buffer: Arc::new(Mutex::new(Buffer::new(100))),
        more: Arc::new(Notify::new()),
        losses: Arc::new(LossReport::default),
        metrics,
    }
}

/// Reconnects of an exporter to `collector` within `span` of paused time.
async fn reconnects_within(collector: String, span: Duration) -> u64 {
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(exporter(collector, metrics.clone()).run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(span).await;
    let _ = stop.send(());
    task.await.expect("the exporter stops when told");
    metrics.reconnects.get()
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_while_unreachable_and_resets_after_an_acknowledged_stream() {
    let span = Duration::from_secs(5);

    // Nobody listens on this port: 100 ms, 200, 400, 800, 1.6 s, 3.2 s…
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = reconnects_within(nobody, span).await;
    assert!(
        (4..=6).contains(&unreachable),
        "a growing backoff reconnects 5 or 6 times in {span:?}, not {unreachable}"
    );

    // Every stream is acknowledged, then dropped: always 100 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FlowIngestServer::new(AckThenDrop))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let healthy = reconnects_within(format!("http://{addr}"), span).await;
    assert!(
        healthy >= 30,
        "after acknowledged streams the backoff must start over at 100 ms: {healthy} reconnects in {span:?} ({unreachable} when unreachable)"
    );
}
