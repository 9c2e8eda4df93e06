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

fn strings<'a>(rows: &'a [FlowRow], f: impl Fn(&'a FlowRow) -> &'a str) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
    rows.iter().for_each(|r| b.append_value(f(r)));
    Arc::new(b.finish())
}

fn optional<'a>(rows: &'a [FlowRow], f: impl Fn(&'a FlowRow) -> Option<&'a str>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}

fn lists<'a>(rows: &'a [FlowRow], f: impl Fn(&'a FlowRow) -> &'a [String]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for v in f(r) {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn times(rows: &[FlowRow], f: impl Fn(&FlowRow) -> i64) -> ArrayRef {
    let mut b = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    rows.iter().for_each(|r| b.append_value(f(r)));
    Arc::new(b.finish())
}

macro_rules! ints {
    ($builder:ty, $rows:expr, $f:expr) => {{
        let mut b = <$builder>::with_capacity($rows.len());
        $rows.iter().for_each(|r| b.append_value($f(r)));
        Arc::new(b.finish()) as ArrayRef
    }};
}

fn bools(rows: &[FlowRow], f: impl Fn(&FlowRow) -> bool) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_value(f(r)));
    Arc::new(b.finish())
}

/// Rows as one record batch of the `flows` schema.
pub fn to_batch(rows: &[FlowRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        times(rows, |r| r.time_ns),
        times(rows, |r| r.last_seen_ns),
        strings(rows, |r| &r.node),
        strings(rows, |r| &r.interface),
        strings(rows, |r| &r.direction),
        ints!(UInt8Builder, rows, |r: &FlowRow| r.ip_version),
        strings(rows, |r| &r.src_ip),
        strings(rows, |r| &r.dst_ip),
        ints!(UInt16Builder, rows, |r: &FlowRow| r.src_port),
        ints!(UInt16Builder, rows, |r: &FlowRow| r.dst_port),
        strings(rows, |r| &r.protocol),
        ints!(UInt64Builder, rows, |r: &FlowRow| r.packets),
        ints!(UInt64Builder, rows, |r: &FlowRow| r.bytes),
        ints!(UInt8Builder, rows, |r: &FlowRow| r.tcp_flags),
        bools(rows, |r| r.is_reply),
        optional(rows, |r| r.src_namespace.as_deref()),
        optional(rows, |r| r.src_pod.as_deref()),
        optional(rows, |r| r.src_workload.as_deref()),
        optional(rows, |r| r.src_workload_kind.as_deref()),
        optional(rows, |r| r.src_labels.as_deref()),
        optional(rows, |r| r.dst_namespace.as_deref()),
        optional(rows, |r| r.dst_pod.as_deref()),
        optional(rows, |r| r.dst_workload.as_deref()),
        optional(rows, |r| r.dst_workload_kind.as_deref()),
        optional(rows, |r| r.dst_labels.as_deref()),
        strings(rows, |r| &r.verdict),
        strings(rows, |r| &r.egress_verdict),
        strings(rows, |r| &r.ingress_verdict),
        lists(rows, |r| &r.allowed_by),
        lists(rows, |r| &r.allowed_rules),
        lists(rows, |r| &r.denied_by),
        ints!(UInt64Builder, rows, |r: &FlowRow| r.policy_generation),
        strings(rows, |r| &r.kernel_fate),
        optional(rows, |r| r.drop_reason.as_deref()),
        bools(rows, |r| r.enforcement_mismatch),
    ];
    RecordBatch::try_new(flows_schema(), columns).expect("columns follow the flows schema")
}
