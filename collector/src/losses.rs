//! What probes lost, as they report it in-band: every batch carries the
//! probe's counters since it started ([`LossReport`]). The collector turns
//! the growth between two reports of one probe into
//! `flowgate_collector_probe_losses_total{node,kind}` and keeps the recent
//! growth by time, so the dashboard can warn about losses in its window.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use flowgate_proto::v1::LossReport;
use prometheus_client::encoding::EncodeLabelSet;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::metrics::Metrics;

/// One kind of loss a probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Kernel events the ring buffer had no room for.
    RingbufLostEvents,
    /// Records the probe's buffer dropped while the collector was away.
    BufferOverflowRecords,
    /// Kernel flow-table entries evicted before export.
    FlowTableEvictions,
    /// Kernel flow-table inserts that failed (the packets went uncounted).
    KernelFlowUpdateFailures,
    /// Packets too short for their headers, not turned into flows.
    KernelTruncatedPackets,
}

/// How many kinds there are.
const KINDS: usize = 5;

impl LossKind {
    pub const ALL: [LossKind; KINDS] = [
        LossKind::RingbufLostEvents,
        LossKind::BufferOverflowRecords,
        LossKind::FlowTableEvictions,
        LossKind::KernelFlowUpdateFailures,
        LossKind::KernelTruncatedPackets,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::RingbufLostEvents => "ringbuf_lost_events",
            LossKind::BufferOverflowRecords => "buffer_overflow_records",
            LossKind::FlowTableEvictions => "flow_table_evictions",
            LossKind::KernelFlowUpdateFailures => "kernel_flow_update_failures",
            LossKind::KernelTruncatedPackets => "kernel_truncated_packets",
        }
    }

    fn of(self, r: &LossReport) -> u64 {
        match self {
            LossKind::RingbufLostEvents => r.ringbuf_lost_events,
            LossKind::BufferOverflowRecords => r.buffer_overflow_records,
            LossKind::FlowTableEvictions => r.flow_table_evictions,
            LossKind::KernelFlowUpdateFailures => r.kernel_flow_update_failures,
            LossKind::KernelTruncatedPackets => r.kernel_truncated_packets,
        }
    }
}

/// The labels of `flowgate_collector_probe_losses_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LossLabels {
    pub node: String,
    pub kind: &'static str,
}

/// Loss growth seen in one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossEvent {
    pub time_ns: i64,
    pub node: String,
    pub kind: LossKind,
    pub count: u64,
}

/// Probes remembered before those silent for [`FORGET_AFTER_NS`] are forgotten.
const PROBES_KEPT: usize = 1024;
const FORGET_AFTER_NS: i64 = 3600 * 1_000_000_000;
/// Growth events kept for windowed views; older ones fall off first (the
/// counter keeps the totals).
const EVENTS_KEPT: usize = 10_000;

#[derive(Default)]
struct Seen {
    /// Per probe id: when it last reported, and its counters then.
    probes: FxHashMap<String, (i64, [u64; KINDS])>,
    events: VecDeque<LossEvent>,
}

/// Probe losses; shared by the ingest service and the API.
pub struct Losses {
    metrics: Arc<Metrics>,
    seen: Mutex<Seen>,
}

impl Losses {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Losses {
            metrics,
            seen: Mutex::default(),
        }
    }

    /// Takes the report of a stored batch of `probe_id` on `node`.
    pub fn record(&self, probe_id: &str, node: &str, report: &LossReport, now_ns: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.probes.len() >= PROBES_KEPT && !seen.probes.contains_key(probe_id) {
            seen.probes
                .retain(|_, (last, _)| now_ns.saturating_sub(*last) < FORGET_AFTER_NS);
        }
        let now: [u64; KINDS] = LossKind::ALL.map(|k| k.of(report));
        let before = seen
            .probes
            .insert(probe_id.to_owned(), (now_ns, now))
            .map_or([0; KINDS], |(_, c)| c);
        for (i, kind) in LossKind::ALL.into_iter().enumerate() {
            // Counters only grow within one probe id; a smaller value is a
            // restarted counter, all of it new.
            let grown = if now[i] >= before[i] {
                now[i] - before[i]
            } else {
                now[i]
            };
            if grown == 0 {
                continue;
            }
            self.metrics
                .probe_losses
                .get_or_create(&LossLabels {
                    node: node.to_owned(),
                    kind: kind.as_str(),
                })
                .inc_by(grown);
            if seen.events.len() == EVENTS_KEPT {
                seen.events.pop_front();
            }
            seen.events.push_back(LossEvent {
                time_ns: now_ns,
                node: node.to_owned(),
                kind,
                count: grown,
            });
        }
    }

    /// Losses reported at or after `since_ns`, summed per node and kind,
    /// largest first; and the time of the oldest growth still kept (views
    /// reaching further back may miss some).
    pub fn since(&self, since_ns: i64) -> (Vec<LossEvent>, Option<i64>) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut sums: FxHashMap<(&str, LossKind), (i64, u64)> = FxHashMap::default();
        for e in seen.events.iter().filter(|e| e.time_ns >= since_ns) {
            let s = sums.entry((e.node.as_str(), e.kind)).or_default();
            s.0 = s.0.max(e.time_ns);
            s.1 += e.count;
        }
        let mut out: Vec<LossEvent> = sums
            .into_iter()
            .map(|((node, kind), (time_ns, count))| LossEvent {
                time_ns,
                node: node.to_owned(),
                kind,
                count,
            })
            .collect();
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.node.cmp(&b.node))
                .then_with(|| a.kind.as_str().cmp(b.kind.as_str()))
        });
        (out, seen.events.front().map(|e| e.time_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ringbuf: u64, evictions: u64) -> LossReport {
        LossReport {
            ringbuf_lost_events: ringbuf,
            flow_table_evictions: evictions,
            ..LossReport::default()
        }
    }

    #[test]
    fn growth_between_reports_is_counted_once_per_node_and_kind() {
        let metrics = Arc::new(Metrics::new());
        let losses = Losses::new(metrics.clone());
        losses.record("a/1", "a", &report(5, 0), 10);
        // The same counters again (a resent batch, or nothing new): nothing.
        losses.record("a/1", "a", &report(5, 0), 20);
        losses.record("a/1", "a", &report(7, 3), 30);
        // A restarted probe under a new id starts from zero.
        losses.record("a/2", "a", &report(1, 0), 40);
        losses.record("b/1", "b", &report(0, 0), 40);
        let text = metrics.render();
        for line in [
            "flowgate_collector_probe_losses_total{node=\"a\",kind=\"ringbuf_lost_events\"} 8",
            "flowgate_collector_probe_losses_total{node=\"a\",kind=\"flow_table_evictions\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("node=\"b\""), "{text}");
        let (recent, oldest) = losses.since(25);
        assert_eq!(oldest, Some(10));
        assert_eq!(
            recent
                .iter()
                .map(|e| (e.node.as_str(), e.kind, e.count, e.time_ns))
                .collect::<Vec<_>>(),
            vec![
                ("a", LossKind::FlowTableEvictions, 3, 30),
                ("a", LossKind::RingbufLostEvents, 3, 40),
            ]
        );
    }
}
