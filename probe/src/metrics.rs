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

/// Where the probe's flows are going: the readiness `/readyz` reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Link {
    /// No stream yet: the first connection is being made.
    #[default]
    Connecting,
    /// A stream to the collector is open.
    Streaming,
    /// The collector cannot be reached; flows wait in the buffer.
    Buffering { reason: String },
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// The exporter's state, for `/readyz`.
    pub link: std::sync::Mutex<Link>,
    pub packets: Family<InterfaceLabel, Counter>,
    pub flows: Family<InterfaceLabel, Counter>,
    pub ringbuf_lost: Counter,
    pub kernel_drops: Family<ReasonLabel, Counter>,
    pub unrelated_drops: Counter,
    pub flow_table_evictions: Counter,
    pub endpoint_drops: Counter,
    pub other_protocol_packets: Counter,
    /// The kernel's FG_CTR_TRUNCATED: packets too short for their headers.
    pub kernel_truncated_packets: Counter,
    /// The kernel's FG_CTR_FLOW_UPDATE_FAIL: flow-table inserts that failed.
    pub kernel_flow_update_failures: Counter,
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
            "flow_table_evictions",
            "Kernel flow-table entries evicted before the probe exported them",
            self.flow_table_evictions.clone(),
        );
        r.register(
            "endpoint_drops",
            "Kernel drops at a socket endpoint (not a policy decision), not exported as flow drops",
            self.endpoint_drops.clone(),
        );
        r.register(
            "other_protocol_packets",
            "Packets of protocols flowgate does not record as flows",
            self.other_protocol_packets.clone(),
        );
        r.register(
            "kernel_truncated_packets",
            "Packets too short for the headers they announce (the kernel's FG_CTR_TRUNCATED)",
            self.kernel_truncated_packets.clone(),
        );
        r.register(
            "kernel_flow_update_failures",
            "Flow-table inserts that failed in the kernel, so those packets were not counted (FG_CTR_FLOW_UPDATE_FAIL)",
            self.kernel_flow_update_failures.clone(),
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

impl Metrics {
    pub fn set_link(&self, link: Link) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }

    /// `/readyz`: served only once the programs are attached, so ready
    /// means attached and either streaming or buffering for a reason.
    fn readiness(&self) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        let link = self.link.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match link {
            Link::Connecting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "attached; connecting to the collector\n".into(),
            ),
            Link::Streaming => (
                StatusCode::OK,
                "ready: attached, streaming to the collector\n".into(),
            ),
            Link::Buffering { reason } => (
                StatusCode::OK,
                format!(
                    "ready: attached, buffering {} records: {reason}\n",
                    self.buffer_records.get()
                ),
            ),
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
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
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.readiness() }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loss the probe counts is exposed, so none is silent.
    #[test]
    fn every_loss_counter_is_exposed() {
        let metrics = Arc::new(Metrics::default());
        metrics.flow_table_evictions.inc_by(3);
        metrics.endpoint_drops.inc();
        metrics.other_protocol_packets.inc_by(2);
        metrics.kernel_truncated_packets.inc();
        metrics.kernel_flow_update_failures.inc_by(4);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        for line in [
            "flowgate_probe_flow_table_evictions_total 3",
            "flowgate_probe_endpoint_drops_total 1",
            "flowgate_probe_other_protocol_packets_total 2",
            "flowgate_probe_kernel_truncated_packets_total 1",
            "flowgate_probe_kernel_flow_update_failures_total 4",
            "flowgate_probe_ringbuf_lost_events_total 0",
            "flowgate_probe_buffer_overflow_records_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
