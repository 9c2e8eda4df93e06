//! The probe's Prometheus metrics, served at `/metrics` on `--metrics-listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabel {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub packets: Family<InterfaceLabel, Counter>,
    pub flows: Family<InterfaceLabel, Counter>,
    pub ringbuf_lost: Counter,
    pub kernel_drops: Family<ReasonLabel, Counter>,
    pub unrelated_drops: Counter,
    pub flow_table_evictions: Counter,
    pub endpoint_drops: Counter,
    pub other_protocol_packets: Counter,
    pub batches_sent: Counter,
    pub batches_acked: Counter,
    pub batches_rejected: Counter,
    pub records_rejected: Counter,
    pub buffer_records: Gauge,
    pub buffer_overflow_records: Counter,
    pub reconnects: Counter,
    pub interfaces: Gauge,
    pub dns_responses: Counter,
    pub dns_malformed: Counter,
    pub dns_names_full: Counter,
    pub dns_names: Gauge,
}

impl Metrics {
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("flowgate_probe");
        r.register(
            "packets",
            "Packets seen, per interface",
            self.packets.clone(),
        );
        r.register(
            "flows",
            "Flow records produced, per interface",
            self.flows.clone(),
        );
        r.register(
            "ringbuf_lost_events",
            "Events lost because the ring buffer was full",
            self.ringbuf_lost.clone(),
        );
        r.register(
            "kernel_drops",
            "Packets of observed flows the kernel dropped, by reason",
            self.kernel_drops.clone(),
        );
        r.register(
            "unrelated_kernel_drops",
            "Kernel drops of traffic not seen on an observed interface (not exported)",
            self.unrelated_drops.clone(),
        );
        r.register(
            "export_batches_sent",
            "Batches sent to the collector (resends included)",
            self.batches_sent.clone(),
        );
        r.register(
            "export_batches_acked",
            "Batches the collector stored",
            self.batches_acked.clone(),
        );
        r.register(
            "export_batches_rejected",
            "Batches the collector refused",
            self.batches_rejected.clone(),
        );
        r.register(
            "export_records_rejected",
            "Flow records in refused batches",
            self.records_rejected.clone(),
        );
        r.register(
            "buffer_records",
            "Flow records waiting for the collector's acknowledgement",
            self.buffer_records.clone(),
        );
        r.register(
            "buffer_overflow_records",
            "Flow records dropped because the buffer was full",
            self.buffer_overflow_records.clone(),
        );
        r.register(
            "reconnects",
            "Reconnections to the collector",
            self.reconnects.clone(),
        );
        r.register(
            "attached_interfaces",
            "Interfaces the programs are attached to",
            self.interfaces.clone(),
        );
        r.register(
            "dns_responses",
            "DNS responses seen entering pods",
            self.dns_responses.clone(),
        );
        r.register(
            "dns_malformed_responses",
            "DNS responses that could not be parsed (their names are not learnt)",
            self.dns_malformed.clone(),
        );
        r.register(
            "dns_names_full",
            "DNS answers not remembered because the address-to-name map was full",
            self.dns_names_full.clone(),
        );
        r.register(
            "dns_names",
            "Addresses with a DNS name remembered, over all pods",
            self.dns_names.clone(),
        );
        r
    }
}

/// Serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    let registry = Arc::new(metrics.registry());
    let render = move || {
        let registry = registry.clone();
        async move {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &registry) {
                Ok(()) => {
                    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    ([(axum::http::header::CONTENT_TYPE, ct)], out).into_response()
                }
                Err(e) => {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app).await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
