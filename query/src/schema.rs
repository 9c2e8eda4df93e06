//! The `flows` table: its Arrow schema, and rows to record batches.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, ListBuilder, StringBuilder, TimestampNanosecondBuilder, UInt8Builder,
    UInt16Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// One stored flow: every column of the `flows` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    /// Column `time`: the window's first packet, ns since the Unix epoch.
    pub time_ns: i64,
    /// Column `last_seen`.
    pub last_seen_ns: i64,
    pub node: String,
    pub interface: String,
    /// `ingress` or `egress`, from the pod's point of view.
    pub direction: String,
    pub ip_version: u8,
    pub src_ip: String,
    pub dst_ip: String,
    /// ICMP: type and code.
    pub src_port: u16,
    pub dst_port: u16,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`.
    pub protocol: String,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub is_reply: bool,
    pub src_namespace: Option<String>,
    pub src_pod: Option<String>,
    pub src_workload: Option<String>,
    pub src_workload_kind: Option<String>,
    /// JSON object text; NULL outside the cluster.
    pub src_labels: Option<String>,
    pub dst_namespace: Option<String>,
    pub dst_pod: Option<String>,
    pub dst_workload: Option<String>,
    pub dst_workload_kind: Option<String>,
    pub dst_labels: Option<String>,
    /// `allowed` or `denied`.
    pub verdict: String,
    /// `allowed`, `denied` or `not_applicable`.
    pub egress_verdict: String,
    pub ingress_verdict: String,
    /// Policies (`namespace/name`) that admitted the flow.
    pub allowed_by: Vec<String>,
    /// Rules that admitted it: `namespace/name/ingress/0`.
    pub allowed_rules: Vec<String>,
    /// Policies isolating an endpoint that did not admit it.
    pub denied_by: Vec<String>,
    pub policy_generation: u64,
    /// `forwarded` or `dropped`.
    pub kernel_fate: String,
    pub drop_reason: Option<String>,
    pub enforcement_mismatch: bool,
}

fn list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

static FLOWS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let o = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("time", ts.clone(), false),
        Field::new("last_seen", ts, false),
        s("node"),
        s("interface"),
        s("direction"),
        Field::new("ip_version", DataType::UInt8, false),
        s("src_ip"),
        s("dst_ip"),
        Field::new("src_port", DataType::UInt16, false),
        Field::new("dst_port", DataType::UInt16, false),
        s("protocol"),
        Field::new("packets", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("tcp_flags", DataType::UInt8, false),
        Field::new("is_reply", DataType::Boolean, false),
        o("src_namespace"),
        o("src_pod"),
        o("src_workload"),
        o("src_workload_kind"),
        o("src_labels"),
        o("dst_namespace"),
        o("dst_pod"),
        o("dst_workload"),
        o("dst_workload_kind"),
        o("dst_labels"),
        s("verdict"),
        s("egress_verdict"),
        s("ingress_verdict"),
        Field::new("allowed_by", list(), false),
        Field::new("allowed_rules", list(), false),
        Field::new("denied_by", list(), false),
        Field::new("policy_generation", DataType::UInt64, false),
        s("kernel_fate"),
        o("drop_reason"),
        Field::new("enforcement_mismatch", DataType::Boolean, false),
    ]))
});

/// The schema of the `flows` table.
pub fn flows_schema() -> SchemaRef {
    FLOWS.clone()
}

/// One flow, borrowed from wherever its parts live: what
/// [`FlowBatchBuilder::push`] appends. The collector builds these straight from
/// probe records and the cluster snapshot, so a stored row costs no
/// allocation of its own; a [`FlowRow`] appends itself with [`FlowRow::push_to`].
#[derive(Clone, Copy, Debug)]
pub struct FlowRef<'a> {
    pub time_ns: i64,
    pub last_seen_ns: i64,
    pub node: &'a str,
    pub interface: &'a str,
    pub direction: &'a str,
    pub ip_version: u8,
    pub src_ip: &'a str,
    pub dst_ip: &'a str,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: &'a str,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub is_reply: bool,
    pub src_namespace: Option<&'a str>,
    pub src_pod: Option<&'a str>,
    pub src_workload: Option<&'a str>,
    pub src_workload_kind: Option<&'a str>,
    pub src_labels: Option<&'a str>,
    pub dst_namespace: Option<&'a str>,
    pub dst_pod: Option<&'a str>,
    pub dst_workload: Option<&'a str>,
    pub dst_workload_kind: Option<&'a str>,
    pub dst_labels: Option<&'a str>,
    pub verdict: &'a str,
    pub egress_verdict: &'a str,
    pub ingress_verdict: &'a str,
    pub allowed_by: &'a [&'a str],
    pub allowed_rules: &'a [&'a str],
    pub denied_by: &'a [&'a str],
    pub policy_generation: u64,
    pub kernel_fate: &'a str,
    pub drop_reason: Option<&'a str>,
    pub enforcement_mismatch: bool,
}

impl FlowRow {
    /// Appends this row to `out` (the list columns need borrowed slices).
    pub fn push_to(&self, out: &mut FlowBatchBuilder) {
        fn strs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let (allowed_by, allowed_rules, denied_by) = (
            strs(&self.allowed_by),
            strs(&self.allowed_rules),
            strs(&self.denied_by),
        );
        out.push(&FlowRef {
            time_ns: self.time_ns,
            last_seen_ns: self.last_seen_ns,
            node: &self.node,
            interface: &self.interface,
            direction: &self.direction,
            ip_version: self.ip_version,
            src_ip: &self.src_ip,
            dst_ip: &self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: &self.protocol,
            packets: self.packets,
            bytes: self.bytes,
            tcp_flags: self.tcp_flags,
            is_reply: self.is_reply,
            src_namespace: self.src_namespace.as_deref(),
            src_pod: self.src_pod.as_deref(),
            src_workload: self.src_workload.as_deref(),
            src_workload_kind: self.src_workload_kind.as_deref(),
            src_labels: self.src_labels.as_deref(),
            dst_namespace: self.dst_namespace.as_deref(),
            dst_pod: self.dst_pod.as_deref(),
            dst_workload: self.dst_workload.as_deref(),
            dst_workload_kind: self.dst_workload_kind.as_deref(),
            dst_labels: self.dst_labels.as_deref(),
            verdict: &self.verdict,
            egress_verdict: &self.egress_verdict,
            ingress_verdict: &self.ingress_verdict,
            allowed_by: &allowed_by,
            allowed_rules: &allowed_rules,
            denied_by: &denied_by,
            policy_generation: self.policy_generation,
            kernel_fate: &self.kernel_fate,
            drop_reason: self.drop_reason.as_deref(),
            enforcement_mismatch: self.enforcement_mismatch,
        });
    }
}

/// Column builders of the `flows` schema: push rows, then [`finish`](Self::finish)
/// into one record batch.
pub struct FlowBatchBuilder {
    time: TimestampNanosecondBuilder,
    last_seen: TimestampNanosecondBuilder,
    node: StringBuilder,
    interface: StringBuilder,
    direction: StringBuilder,
    ip_version: UInt8Builder,
    src_ip: StringBuilder,
    dst_ip: StringBuilder,
    src_port: UInt16Builder,
    dst_port: UInt16Builder,
    protocol: StringBuilder,
    packets: UInt64Builder,
    bytes: UInt64Builder,
    tcp_flags: UInt8Builder,
    is_reply: BooleanBuilder,
    /// namespace, pod, workload, workload_kind, labels
    src: [StringBuilder; 5],
    dst: [StringBuilder; 5],
    verdict: StringBuilder,
    egress_verdict: StringBuilder,
    ingress_verdict: StringBuilder,
    allowed_by: ListBuilder<StringBuilder>,
    allowed_rules: ListBuilder<StringBuilder>,
    denied_by: ListBuilder<StringBuilder>,
    policy_generation: UInt64Builder,
    kernel_fate: StringBuilder,
    drop_reason: StringBuilder,
    enforcement_mismatch: BooleanBuilder,
    len: usize,
}

impl FlowBatchBuilder {
    /// Builders sized for `rows` rows (they grow past it if needed).
    pub fn with_capacity(rows: usize) -> Self {
        let time = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        // Bytes per row guessed per column kind, to avoid regrowing.
        let text = |bytes: usize| StringBuilder::with_capacity(rows, rows * bytes);
        let list = || ListBuilder::with_capacity(StringBuilder::new(), rows);
        FlowBatchBuilder {
            time: time(),
            last_seen: time(),
            node: text(12),
            interface: text(12),
            direction: text(7),
            ip_version: UInt8Builder::with_capacity(rows),
            src_ip: text(12),
            dst_ip: text(12),
            src_port: UInt16Builder::with_capacity(rows),
            dst_port: UInt16Builder::with_capacity(rows),
            protocol: text(3),
            packets: UInt64Builder::with_capacity(rows),
            bytes: UInt64Builder::with_capacity(rows),
            tcp_flags: UInt8Builder::with_capacity(rows),
            is_reply: BooleanBuilder::with_capacity(rows),
            src: [text(8), text(24), text(12), text(10), text(32)],
            dst: [text(8), text(24), text(12), text(10), text(32)],
            verdict: text(7),
            egress_verdict: text(7),
            ingress_verdict: text(7),
            allowed_by: list(),
            allowed_rules: list(),
            denied_by: list(),
            policy_generation: UInt64Builder::with_capacity(rows),
            kernel_fate: text(9),
            drop_reason: text(0),
            enforcement_mismatch: BooleanBuilder::with_capacity(rows),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, r: &FlowRef<'_>) {
        self.time.append_value(r.time_ns);
        self.last_seen.append_value(r.last_seen_ns);
        self.node.append_value(r.node);
        self.interface.append_value(r.interface);
        self.direction.append_value(r.direction);
        self.ip_version.append_value(r.ip_version);
        self.src_ip.append_value(r.src_ip);
        self.dst_ip.append_value(r.dst_ip);
        self.src_port.append_value(r.src_port);
        self.dst_port.append_value(r.dst_port);
        self.protocol.append_value(r.protocol);
        self.packets.append_value(r.packets);
        self.bytes.append_value(r.bytes);
        self.tcp_flags.append_value(r.tcp_flags);
        self.is_reply.append_value(r.is_reply);
        let src = [
            r.src_namespace,
            r.src_pod,
            r.src_workload,
            r.src_workload_kind,
            r.src_labels,
        ];
        for (b, v) in self.src.iter_mut().zip(src) {
            b.append_option(v);
        }
        let dst = [
            r.dst_namespace,
            r.dst_pod,
            r.dst_workload,
            r.dst_workload_kind,
            r.dst_labels,
        ];
        for (b, v) in self.dst.iter_mut().zip(dst) {
            b.append_option(v);
        }
        self.verdict.append_value(r.verdict);
        self.egress_verdict.append_value(r.egress_verdict);
        self.ingress_verdict.append_value(r.ingress_verdict);
        for (b, values) in [
            (&mut self.allowed_by, r.allowed_by),
            (&mut self.allowed_rules, r.allowed_rules),
            (&mut self.denied_by, r.denied_by),
        ] {
            for v in values {
                b.values().append_value(v);
            }
            b.append(true);
        }
        self.policy_generation.append_value(r.policy_generation);
        self.kernel_fate.append_value(r.kernel_fate);
        self.drop_reason.append_option(r.drop_reason);
        self.enforcement_mismatch
            .append_value(r.enforcement_mismatch);
        self.len += 1;
    }

    /// The rows pushed so far as one batch; the builder is left empty.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.last_seen.finish()),
            Arc::new(self.node.finish()),
            Arc::new(self.interface.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.ip_version.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.dst_ip.finish()),
            Arc::new(self.src_port.finish()),
            Arc::new(self.dst_port.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.packets.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.tcp_flags.finish()),
            Arc::new(self.is_reply.finish()),
        ];
        for b in self.src.iter_mut().chain(self.dst.iter_mut()) {
            columns.push(Arc::new(b.finish()));
        }
        columns.extend([
            Arc::new(self.verdict.finish()) as ArrayRef,
            Arc::new(self.egress_verdict.finish()),
            Arc::new(self.ingress_verdict.finish()),
            Arc::new(self.allowed_by.finish()),
            Arc::new(self.allowed_rules.finish()),
            Arc::new(self.denied_by.finish()),
            Arc::new(self.policy_generation.finish()),
            Arc::new(self.kernel_fate.finish()),
            Arc::new(self.drop_reason.finish()),
            Arc::new(self.enforcement_mismatch.finish()),
        ]);
        self.len = 0;
        RecordBatch::try_new(flows_schema(), columns).expect("columns follow the flows schema")
    }
}

/// Rows as one record batch of the `flows` schema.
pub fn to_batch(rows: &[FlowRow]) -> RecordBatch {
    let mut b = FlowBatchBuilder::with_capacity(rows.len());
    for r in rows {
        r.push_to(&mut b);
    }
    b.finish()
}
