//! The flow model: the closed value sets as enums, and one column table from
//! which the `flows` Arrow schema, the batch builder ([`FlowBatchBuilder`]),
//! the borrowed row ([`FlowRef`]) and the owned row ([`FlowRow`]) are all
//! generated, so a column is declared once. `docs/flow-model.md` is the
//! contract these names and values follow.
//!
//! Low-cardinality text (nodes, interfaces, namespaces, pods, workloads,
//! labels) and every enum are `Dictionary(Int32, Utf8)` columns, in memory and
//! in Parquet; SQL still compares them with plain strings.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Int32Array, ListBuilder, StringArray, StringBuilder,
    TimestampNanosecondBuilder, UInt8Builder, UInt16Builder, UInt64Builder,
};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A text that is not one of a value set's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {set} {value:?}: expected one of {expected}")]
pub struct UnknownValue {
    pub set: &'static str,
    pub value: String,
    pub expected: String,
}

/// A closed set of values stored as text: the enums of the flow model.
pub trait ValueSet: Copy + Eq + fmt::Debug + 'static {
    /// Every value, in declaration order (the order of its dictionary).
    const ALL: &'static [Self];
    /// The set's name in errors.
    const NAME: &'static str;
    /// The value as stored and compared in SQL.
    fn as_str(self) -> &'static str;
    /// Position in [`ALL`](Self::ALL): the dictionary key.
    fn index(self) -> usize;

    fn parse(text: &str) -> Result<Self, UnknownValue> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| UnknownValue {
                set: Self::NAME,
                value: text.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

macro_rules! value_set {
    ($(#[$m:meta])* $name:ident = $set:literal { $($(#[$vm:meta])* $var:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $var),+
        }

        impl ValueSet for $name {
            const ALL: &'static [Self] = &[$($name::$var),+];
            const NAME: &'static str = $set;
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $text),+
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                ValueSet::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                <Self as ValueSet>::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

value_set!(
    /// The transport protocol of a flow.
    Protocol = "protocol" {
        Tcp = "TCP",
        Udp = "UDP",
        Sctp = "SCTP",
        Icmp = "ICMP",
        Icmpv6 = "ICMPv6",
    }
);

value_set!(
    /// Where a flow was observed, from the pod's side of its interface.
    Direction = "direction" {
        Ingress = "ingress",
        Egress = "egress",
        /// A drop only the kernel's drop tracepoint saw.
        Unknown = "unknown",
    }
);

value_set!(
    /// The policy verdict on a connection.
    Verdict = "verdict" {
        Allowed = "allowed",
        Denied = "denied",
    }
);

value_set!(
    /// The policy verdict of one direction (egress at the source, ingress at
    /// the destination).
    DirectionVerdict = "direction verdict" {
        Allowed = "allowed",
        Denied = "denied",
        /// That endpoint is not a pod of the cluster.
        NotApplicable = "not_applicable",
    }
);

value_set!(
    /// What the kernel did with the flow's packets.
    KernelFate = "kernel fate" {
        Forwarded = "forwarded",
        Dropped = "dropped",
    }
);

value_set!(
    /// The policy tier that decided one direction.
    Tier = "tier" {
        Admin = "admin",
        NetworkPolicy = "networkpolicy",
        Baseline = "baseline",
        /// Nothing isolates the endpoint: allowed by default.
        Default = "default",
        NotApplicable = "not_applicable",
    }
);

value_set!(
    /// How a connection (or UDP/ICMP exchange) went.
    Outcome = "outcome" {
        Established = "established",
        Refused = "refused",
        Unanswered = "unanswered",
        Dropped = "dropped",
        Reset = "reset",
        Closed = "closed",
    }
);

value_set!(
    /// Why a connection failed.
    Failure = "failure" {
        Policy = "policy",
        NoListener = "no_listener",
        Conntrack = "conntrack",
        Routing = "routing",
        Other = "other",
    }
);

value_set!(
    /// Which observation points saw a connection.
    ObservedAt = "observation point" {
        Source = "source",
        Destination = "destination",
        Both = "both",
    }
);

value_set!(
    /// Where a connection's packets were dropped.
    DroppedAt = "drop point" {
        SourceEgress = "source_egress",
        DestinationIngress = "destination_ingress",
    }
);

impl From<bool> for Verdict {
    fn from(allowed: bool) -> Self {
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// How one kind of column is typed in Arrow and in Rust: the column table
/// names a kind per column, and the generated types follow from it.
pub trait ColumnKind {
    type Owned: Clone + fmt::Debug + PartialEq;
    type Ref<'a>: Copy + fmt::Debug;
    type Builder;
    fn data_type() -> DataType;
    fn nullable() -> bool;
    fn builder(rows: usize) -> Self::Builder;
    fn append(b: &mut Self::Builder, v: Self::Ref<'_>);
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    fn borrow(v: &Self::Owned) -> Self::Ref<'_>;
}

fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Timestamp, ns since the Unix epoch, UTC.
pub struct Ts;
impl ColumnKind for Ts {
    type Owned = i64;
    type Ref<'a> = i64;
    type Builder = TimestampNanosecondBuilder;
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    }
    fn nullable() -> bool {
        false
    }
    fn builder(rows: usize) -> Self::Builder {
        TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC")
    }
    fn append(b: &mut Self::Builder, v: i64) {
        b.append_value(v)
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn borrow(v: &i64) -> i64 {
        *v
    }
}

macro_rules! primitive_kind {
    ($kind:ident, $t:ty, $builder:ty, $dt:expr) => {
        pub struct $kind;
        impl ColumnKind for $kind {
            type Owned = $t;
            type Ref<'a> = $t;
            type Builder = $builder;
            fn data_type() -> DataType {
                $dt
            }
            fn nullable() -> bool {
                false
            }
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            fn append(b: &mut Self::Builder, v: $t) {
                b.append_value(v)
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn borrow(v: &$t) -> $t {
                *v
            }
        }
    };
}
primitive_kind!(U8, u8, UInt8Builder, DataType::UInt8);
primitive_kind!(U16, u16, UInt16Builder, DataType::UInt16);
primitive_kind!(U64, u64, UInt64Builder, DataType::UInt64);
primitive_kind!(Bool, bool, BooleanBuilder, DataType::Boolean);

/// Plain UTF-8 text (high cardinality: addresses).
pub struct Text;
impl ColumnKind for Text {
    type Owned = String;
    type Ref<'a> = &'a str;
    type Builder = StringBuilder;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn nullable() -> bool {
        false
    }
    fn builder(rows: usize) -> Self::Builder {
        StringBuilder::with_capacity(rows, rows * 12)
    }
    fn append(b: &mut Self::Builder, v: &str) {
        b.append_value(v)
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn borrow(v: &String) -> &str {
        v
    }
}

/// Keys and validity of a dictionary column being built.
#[derive(Default)]
pub struct Keys {
    keys: Vec<i32>,
    valid: Vec<bool>,
    nulls: usize,
}

impl Keys {
    fn with_capacity(rows: usize) -> Self {
        Keys {
            keys: Vec::with_capacity(rows),
            valid: Vec::with_capacity(rows),
            nulls: 0,
        }
    }

    fn push(&mut self, key: Option<i32>) {
        self.keys.push(key.unwrap_or(0));
        self.valid.push(key.is_some());
        self.nulls += usize::from(key.is_none());
    }

    fn finish(&mut self, values: ArrayRef) -> ArrayRef {
        let keys = std::mem::take(&mut self.keys);
        let valid = std::mem::take(&mut self.valid);
        let nulls = (std::mem::take(&mut self.nulls) > 0).then(|| NullBuffer::from(valid));
        let keys = Int32Array::new(ScalarBuffer::from(keys), nulls);
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values)
                .expect("every key indexes the values"),
        )
    }
}

/// Dictionary-encoded text: each distinct value is stored once per batch.
/// The last key is remembered because rows of one probe batch repeat the
/// node and interface; it is compared in place, so a row allocates nothing.
pub struct DictBuilder {
    keys: Keys,
    values: StringBuilder,
    index: FxHashMap<Box<str>, i32>,
    last: Option<i32>,
}

impl DictBuilder {
    fn new(rows: usize) -> Self {
        DictBuilder {
            keys: Keys::with_capacity(rows),
            values: StringBuilder::new(),
            index: FxHashMap::default(),
            last: None,
        }
    }

    /// The value of `key`, as appended.
    fn value(&self, key: i32) -> &[u8] {
        let offsets = self.values.offsets_slice();
        let k = key as usize;
        &self.values.values_slice()[offsets[k] as usize..offsets[k + 1] as usize]
    }

    fn key(&mut self, v: &str) -> i32 {
        if let Some(key) = self.last
            && self.value(key) == v.as_bytes()
        {
            return key;
        }
        let key = match self.index.get(v) {
            Some(k) => *k,
            None => {
                let k = i32::try_from(self.index.len()).expect("fewer than 2^31 distinct values");
                self.values.append_value(v);
                self.index.insert(v.into(), k);
                k
            }
        };
        self.last = Some(key);
        key
    }

    fn push(&mut self, v: Option<&str>) {
        let key = v.map(|v| self.key(v));
        self.keys.push(key);
    }

    fn finish(&mut self) -> ArrayRef {
        self.index.clear();
        self.last = None;
        let values = Arc::new(self.values.finish());
        self.keys.finish(values)
    }
}

/// Dictionary-encoded text, never NULL.
pub struct Dict;
impl ColumnKind for Dict {
    type Owned = String;
    type Ref<'a> = &'a str;
    type Builder = DictBuilder;
    fn data_type() -> DataType {
        dictionary()
    }
    fn nullable() -> bool {
        false
    }
    fn builder(rows: usize) -> Self::Builder {
        DictBuilder::new(rows)
    }
    fn append(b: &mut Self::Builder, v: &str) {
        b.push(Some(v))
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        b.finish()
    }
    fn borrow(v: &String) -> &str {
        v
    }
}

/// Dictionary-encoded text or NULL.
pub struct OptDict;
impl ColumnKind for OptDict {
    type Owned = Option<String>;
    type Ref<'a> = Option<&'a str>;
    type Builder = DictBuilder;
    fn data_type() -> DataType {
        dictionary()
    }
    fn nullable() -> bool {
        true
    }
    fn builder(rows: usize) -> Self::Builder {
        DictBuilder::new(rows)
    }
    fn append(b: &mut Self::Builder, v: Option<&str>) {
        b.push(v)
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        b.finish()
    }
    fn borrow(v: &Option<String>) -> Option<&str> {
        v.as_deref()
    }
}

fn value_set_strings<E: ValueSet>() -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        E::ALL.iter().map(|v| v.as_str()),
    ))
}

fn enum_key<E: ValueSet>(v: E) -> i32 {
    // A value set has a handful of values.
    v.index() as i32
}

/// An enum column: a dictionary whose values are the set's values in
/// declaration order, so a row costs one key and no lookup.
pub struct Enum<E>(PhantomData<E>);
impl<E: ValueSet> ColumnKind for Enum<E> {
    type Owned = E;
    type Ref<'a> = E;
    type Builder = Keys;
    fn data_type() -> DataType {
        dictionary()
    }
    fn nullable() -> bool {
        false
    }
    fn builder(rows: usize) -> Self::Builder {
        Keys::with_capacity(rows)
    }
    fn append(b: &mut Keys, v: E) {
        b.push(Some(enum_key(v)))
    }
    fn finish(b: &mut Keys) -> ArrayRef {
        b.finish(value_set_strings::<E>())
    }
    fn borrow(v: &E) -> E {
        *v
    }
}

/// An enum column that may be NULL.
pub struct OptEnum<E>(PhantomData<E>);
impl<E: ValueSet> ColumnKind for OptEnum<E> {
    type Owned = Option<E>;
    type Ref<'a> = Option<E>;
    type Builder = Keys;
    fn data_type() -> DataType {
        dictionary()
    }
    fn nullable() -> bool {
        true
    }
    fn builder(rows: usize) -> Self::Builder {
        Keys::with_capacity(rows)
    }
    fn append(b: &mut Keys, v: Option<E>) {
        b.push(v.map(enum_key))
    }
    fn finish(b: &mut Keys) -> ArrayRef {
        b.finish(value_set_strings::<E>())
    }
    fn borrow(v: &Option<E>) -> Option<E> {
        *v
    }
}

/// A list of texts in a borrowed row: from owned strings or borrowed ones.
#[derive(Clone, Copy, Debug)]
pub enum TextList<'a> {
    Owned(&'a [String]),
    Borrowed(&'a [&'a str]),
}

impl TextList<'_> {
    pub const EMPTY: TextList<'static> = TextList::Borrowed(&[]);
}

/// A list of texts (policy and rule names).
pub struct List;
impl ColumnKind for List {
    type Owned = Vec<String>;
    type Ref<'a> = TextList<'a>;
    type Builder = ListBuilder<StringBuilder>;
    fn data_type() -> DataType {
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
    }
    fn nullable() -> bool {
        false
    }
    fn builder(rows: usize) -> Self::Builder {
        ListBuilder::with_capacity(StringBuilder::new(), rows)
    }
    fn append(b: &mut Self::Builder, v: TextList<'_>) {
        match v {
            TextList::Owned(v) => v.iter().for_each(|s| b.values().append_value(s)),
            TextList::Borrowed(v) => v.iter().for_each(|s| b.values().append_value(s)),
        }
        b.append(true);
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn borrow(v: &Vec<String>) -> TextList<'_> {
        TextList::Owned(v)
    }
}

/// Generates, from one list of `column: Kind`, the owned row, the borrowed
/// row, the builder and the schema.
macro_rules! flow_columns {
    ($($(#[$attr:meta])* $col:ident: $kind:ty,)+) => {
        /// One stored flow, owned: every column of the `flows` table (test
        /// fixtures, benchmarks, replay).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FlowRow {
            $($(#[$attr])* pub $col: <$kind as ColumnKind>::Owned,)+
        }

        /// One flow, borrowed from wherever its parts live: what
        /// [`FlowBatchBuilder::push`] appends. The collector builds these
        /// straight from probe records and the cluster snapshot, so a stored
        /// row costs no allocation of its own.
        #[derive(Clone, Copy, Debug)]
        pub struct FlowRef<'a> {
            $(pub $col: <$kind as ColumnKind>::Ref<'a>,)+
        }

        impl FlowRow {
            pub fn as_ref(&self) -> FlowRef<'_> {
                FlowRef {
                    $($col: <$kind as ColumnKind>::borrow(&self.$col),)+
                }
            }
        }

        /// Column builders of the `flows` schema: push rows, then
        /// [`finish`](Self::finish) into one record batch.
        pub struct FlowBatchBuilder {
            $($col: <$kind as ColumnKind>::Builder,)+
            len: usize,
        }

        impl FlowBatchBuilder {
            /// Builders sized for `rows` rows (they grow past it if needed).
            pub fn with_capacity(rows: usize) -> Self {
                FlowBatchBuilder {
                    $($col: <$kind as ColumnKind>::builder(rows),)+
                    len: 0,
                }
            }

            pub fn push(&mut self, r: &FlowRef<'_>) {
                $(<$kind as ColumnKind>::append(&mut self.$col, r.$col);)+
                self.len += 1;
            }

            /// The rows pushed so far as one batch; the builder is left empty.
            pub fn finish(&mut self) -> RecordBatch {
                let columns: Vec<ArrayRef> = vec![$(<$kind as ColumnKind>::finish(&mut self.$col),)+];
                self.len = 0;
                RecordBatch::try_new(flows_schema(), columns)
                    .expect("columns follow the flows schema")
            }
        }

        static FLOWS: LazyLock<SchemaRef> = LazyLock::new(|| {
            Arc::new(Schema::new(vec![
                $(Field::new(stringify!($col), <$kind as ColumnKind>::data_type(), <$kind as ColumnKind>::nullable()),)+
            ]))
        });
    };
}

flow_columns! {
    /// The window's first packet, ns since the Unix epoch.
    time: Ts,
    last_seen: Ts,
    node: Dict,
    interface: Dict,
    direction: Enum<Direction>,
    ip_version: U8,
    src_ip: Text,
    dst_ip: Text,
    /// ICMP: type and code.
    src_port: U16,
    dst_port: U16,
    protocol: Enum<Protocol>,
    packets: U64,
    bytes: U64,
    tcp_flags: U8,
    is_reply: Bool,
    src_namespace: OptDict,
    src_pod: OptDict,
    src_workload: OptDict,
    src_workload_kind: OptDict,
    /// JSON object text; NULL outside the cluster.
    src_labels: OptDict,
    /// The DNS name the pod resolved for this (external) address.
    #[serde(default)]
    src_dns_name: OptDict,
    dst_namespace: OptDict,
    dst_pod: OptDict,
    dst_workload: OptDict,
    dst_workload_kind: OptDict,
    dst_labels: OptDict,
    #[serde(default)]
    dst_dns_name: OptDict,
    verdict: Enum<Verdict>,
    egress_verdict: Enum<DirectionVerdict>,
    ingress_verdict: Enum<DirectionVerdict>,
    /// The tier that decided each direction.
    #[serde(default)]
    egress_tier: OptEnum<Tier>,
    #[serde(default)]
    ingress_tier: OptEnum<Tier>,
    /// NetworkPolicies (`namespace/name`) that admitted the flow.
    allowed_by: List,
    /// Rules that admitted it: `namespace/name/ingress/0`.
    allowed_rules: List,
    /// NetworkPolicies isolating an endpoint that did not admit it.
    denied_by: List,
    /// Cluster-tier rules that decided a direction: `tier/policy/direction/rule`.
    #[serde(default)]
    decided_by: List,
    policy_generation: U64,
    kernel_fate: Enum<KernelFate>,
    drop_reason: OptDict,
    #[serde(default)]
    outcome: OptEnum<Outcome>,
    #[serde(default)]
    failure: OptEnum<Failure>,
    enforcement_mismatch: Bool,
}

/// The schema of the `flows` table.
pub fn flows_schema() -> SchemaRef {
    FLOWS.clone()
}

impl FlowBatchBuilder {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rows as one record batch of the `flows` schema.
pub fn to_batch(rows: &[FlowRow]) -> RecordBatch {
    let mut b = FlowBatchBuilder::with_capacity(rows.len());
    for r in rows {
        b.push(&r.as_ref());
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};

    use super::*;

    /// The text at `row` of a dictionary or plain text column.
    fn text_at(array: &dyn Array, row: usize) -> Option<String> {
        if array.is_null(row) {
            return None;
        }
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(row).to_owned()),
            DataType::Dictionary(..) => {
                let d = array.as_dictionary::<Int32Type>();
                let key = d.keys().value(row) as usize;
                Some(d.values().as_string::<i32>().value(key).to_owned())
            }
            _ => None,
        }
    }

    #[test]
    fn value_sets_round_trip_and_name_the_unknown() {
        for v in Direction::ALL {
            assert_eq!(v.as_str().parse::<Direction>().unwrap(), *v);
        }
        let e = "sideways".parse::<Direction>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown direction \"sideways\": expected one of ingress, egress, unknown"
        );
        assert_eq!(Tier::NetworkPolicy.to_string(), "networkpolicy");
        assert_eq!(
            serde_json::to_string(&Outcome::Unanswered).unwrap(),
            "\"unanswered\""
        );
    }

    #[test]
    fn dictionary_columns_keep_values_and_nulls() {
        let mut b = DictBuilder::new(4);
        for v in [Some("a"), Some("a"), None, Some("b"), Some("a")] {
            b.push(v);
        }
        let a = b.finish();
        let got: Vec<_> = (0..a.len()).map(|i| text_at(a.as_ref(), i)).collect();
        assert_eq!(
            got,
            [Some("a"), Some("a"), None, Some("b"), Some("a")].map(|v| v.map(String::from))
        );
        let d = a
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .unwrap();
        assert_eq!(d.values().len(), 2, "each distinct value once");
        // The builder starts a fresh dictionary after finish.
        b.push(Some("c"));
        let a = b.finish();
        assert_eq!(text_at(a.as_ref(), 0).as_deref(), Some("c"));
    }

    #[test]
    fn enum_columns_use_the_value_set_as_dictionary() {
        let mut b = OptEnum::<Outcome>::builder(2);
        OptEnum::<Outcome>::append(&mut b, Some(Outcome::Refused));
        OptEnum::<Outcome>::append(&mut b, None);
        let a = OptEnum::<Outcome>::finish(&mut b);
        assert_eq!(text_at(a.as_ref(), 0).as_deref(), Some("refused"));
        assert_eq!(text_at(a.as_ref(), 1), None);
    }

    #[test]
    fn schema_follows_the_column_table() {
        let s = flows_schema();
        assert_eq!(s.field(0).name(), "time");
        let v = s.field_with_name("verdict").unwrap();
        assert_eq!(v.data_type(), &dictionary());
        assert!(!v.is_nullable());
        assert!(s.field_with_name("outcome").unwrap().is_nullable());
        assert_eq!(
            s.field_with_name("src_ip").unwrap().data_type(),
            &DataType::Utf8
        );
    }
}
