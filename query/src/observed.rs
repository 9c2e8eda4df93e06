//! The distinct connections observed in a window: what a what-if judges.
//!
//! One GROUP BY over `flows` (fixed SQL text, the window as parameters):
//! per protocol, both addresses, the server port and both endpoints'
//! identities as recorded (namespace, pod, labels), how many rows and when
//! last seen. Reply rows are grouped as they are and folded into the
//! connection they answer afterwards, on the few grouped rows, so that a
//! connection seen only by its replies is judged too. Grouping by the
//! identities keeps a pod whose labels changed as two connections, each
//! judged with the labels it had.

use std::collections::HashMap;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt16Array, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ParamValues, ScalarValue};

use crate::engine::QueryError;

/// `$1`, `$2`: the window's time bounds (inclusive).
pub(crate) const SQL: &str = r#"
SELECT
  protocol, is_reply, src_ip, dst_ip,
  CASE WHEN is_reply THEN src_port ELSE dst_port END AS server_port,
  src_namespace, src_pod, src_labels, dst_namespace, dst_pod, dst_labels,
  CAST(count(*) AS BIGINT UNSIGNED) AS flows,
  max(last_seen) AS last_seen
FROM flows
WHERE time >= $1 AND time <= $2
GROUP BY protocol, is_reply, src_ip, dst_ip, server_port,
  src_namespace, src_pod, src_labels, dst_namespace, dst_pod, dst_labels
"#;

pub(crate) fn params(since_ns: i64, until_ns: i64) -> ParamValues {
    let ts = |ns| ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into()));
    ParamValues::List(vec![ts(since_ns).into(), ts(until_ns).into()])
}

/// One end of a distinct connection, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObservedEnd {
    pub ip: String,
    /// NULL outside the cluster.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// The pod's labels then, a JSON object.
    pub labels: Option<String>,
}

/// One distinct connection: `src` opened it to `dst` on `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistinctConnection {
    /// As in the flow model (`TCP`, `UDP`, …).
    pub protocol: String,
    pub src: ObservedEnd,
    pub dst: ObservedEnd,
    pub port: u16,
    /// `flows` rows of it (its packets' and its replies').
    pub flows: u64,
    /// Nanoseconds since the epoch.
    pub last_seen_ns: i64,
}

type Key = (String, ObservedEnd, ObservedEnd, u16);

/// The grouped rows folded into connections, replies into what they answer.
pub(crate) fn fold(batches: &[RecordBatch]) -> Result<Vec<DistinctConnection>, QueryError> {
    let mut out: HashMap<Key, (u64, i64)> = HashMap::new();
    for b in batches {
        let text = |name: &str| -> Result<StringArray, QueryError> {
            let col = column(b, name)?;
            let utf8 = cast(col, &DataType::Utf8).map_err(internal)?;
            Ok(utf8.as_string::<i32>().clone())
        };
        let protocol = text("protocol")?;
        let (src_ip, dst_ip) = (text("src_ip")?, text("dst_ip")?);
        let (src_ns, src_pod, src_labels) = (
            text("src_namespace")?,
            text("src_pod")?,
            text("src_labels")?,
        );
        let (dst_ns, dst_pod, dst_labels) = (
            text("dst_namespace")?,
            text("dst_pod")?,
            text("dst_labels")?,
        );
        let is_reply = typed::<BooleanArray>(b, "is_reply")?;
        let port = typed::<UInt16Array>(b, "server_port")?;
        let flows = typed::<UInt64Array>(b, "flows")?;
        let last_seen = column(b, "last_seen")?;
        let last_seen = match last_seen.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                last_seen.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
            }
            other => return Err(internal(format!("last_seen is {other}"))),
        };
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            let a = ObservedEnd {
                ip: src_ip.value(i).to_string(),
                namespace: opt(&src_ns, i),
                pod: opt(&src_pod, i),
                labels: opt(&src_labels, i),
            };
            let z = ObservedEnd {
                ip: dst_ip.value(i).to_string(),
                namespace: opt(&dst_ns, i),
                pod: opt(&dst_pod, i),
                labels: opt(&dst_labels, i),
            };
            // A reply's source is the connection's server.
            let (client, server) = if is_reply.value(i) { (z, a) } else { (a, z) };
            let key = (protocol.value(i).to_string(), client, server, port.value(i));
            let seen = last_seen.value(i);
            let entry = out.entry(key).or_insert((0, i64::MIN));
            entry.0 += flows.value(i);
            entry.1 = entry.1.max(seen);
        }
    }
    Ok(out
        .into_iter()
        .map(
            |((protocol, src, dst, port), (flows, last_seen_ns))| DistinctConnection {
                protocol,
                src,
                dst,
                port,
                flows,
                last_seen_ns,
            },
        )
        .collect())
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, QueryError> {
    b.column_by_name(name)
        .ok_or_else(|| internal(format!("observed connections: no column {name}")))
}

fn typed<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, QueryError> {
    column(b, name)?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            internal(format!(
                "observed connections: {name} has an unexpected type"
            ))
        })
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal {
        message: e.to_string(),
    }
}
