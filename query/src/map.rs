//! The traffic map's data: `connections` aggregated into edges between
//! nodes of one level (docs/flow-model.md, "The map").
//!
//! Every namespace is one node, except the one namespace the person
//! expanded, whose workloads are nodes, and the one workload expanded in it,
//! whose pods are nodes. Addresses outside the cluster are one node per DNS
//! name where the pod resolved one, else per IPv4 /24 (IPv6: per address).
//! The plan is built from DataFusion expressions: names the person typed
//! are literals, never SQL text.

use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::functions::expr_fn::{coalesce, concat, contains, split_part};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, when};
use datafusion::prelude::{col, lit};

/// What the map shows, from the widest view to the narrowest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapLevel {
    /// One node per namespace.
    Namespace,
    /// The workloads of `namespace` (a bare pod is its own workload), the
    /// other namespaces as one node each.
    Workload { namespace: String },
    /// The pods of `workload` in `namespace`, its sibling workloads, and the
    /// other namespaces.
    Pod { namespace: String, workload: String },
}

/// What a map node stands for (`src_kind`, `dst_kind` in the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Namespace,
    Workload,
    Pod,
    /// External addresses of one IPv4 /24, or one IPv6 address.
    Network,
    /// External addresses a pod resolved from this DNS name.
    DnsName,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Namespace => "namespace",
            NodeKind::Workload => "workload",
            NodeKind::Pod => "pod",
            NodeKind::Network => "network",
            NodeKind::DnsName => "dns_name",
        }
    }
}

/// One side's columns in `connections`.
fn side(side: &str, name: &str) -> Expr {
    col(format!("{side}_{name}"))
}

/// `a.b.c.d` → `a.b.c.0/24`; an IPv6 address stays itself.
fn network(ip: Expr) -> Expr {
    let octet = |n: i64| split_part(ip.clone(), lit("."), lit(n));
    when(
        contains(ip.clone(), lit(".")),
        concat(vec![
            octet(1),
            lit("."),
            octet(2),
            lit("."),
            octet(3),
            lit(".0/24"),
        ]),
    )
    .otherwise(ip)
    .expect("a CASE with a WHEN")
}

/// The expanded namespace and workload as predicates on one side.
struct Expanded {
    namespace: Option<Expr>,
    workload: Option<Expr>,
}

impl Expanded {
    fn new(level: &MapLevel, s: &str) -> Expanded {
        let workload = || coalesce(vec![side(s, "workload"), side(s, "pod")]);
        match level {
            MapLevel::Namespace => Expanded {
                namespace: None,
                workload: None,
            },
            MapLevel::Workload { namespace } => Expanded {
                namespace: Some(side(s, "namespace").eq(lit(namespace.as_str()))),
                workload: None,
            },
            MapLevel::Pod {
                namespace,
                workload: w,
            } => {
                let ns = side(s, "namespace").eq(lit(namespace.as_str()));
                Expanded {
                    namespace: Some(ns.clone()),
                    workload: Some(ns.and(workload().eq(lit(w.as_str())))),
                }
            }
        }
    }
}

/// The node one side belongs to at `level`: its id and its kind. Ids are
/// what the flows page's `from`/`to` filters take (`ns`, `ns/workload`,
/// `ns/pod`, a /24, an IP, a DNS name).
fn node(level: &MapLevel, s: &str) -> (Expr, Expr) {
    let ns = side(s, "namespace");
    let outside = ns.clone().is_null();
    let dns = side(s, "dns_name");
    let mut id = when(
        outside.clone(),
        coalesce(vec![dns.clone(), network(side(s, "ip"))]),
    );
    let mut kind = when(
        outside.and(dns.is_not_null()),
        lit(NodeKind::DnsName.as_str()),
    );
    kind = kind.when(ns.clone().is_null(), lit(NodeKind::Network.as_str()));
    let expanded = Expanded::new(level, s);
    let joined = |name: Expr| concat(vec![ns.clone(), lit("/"), name]);
    if let Some(w) = expanded.workload {
        id = id.when(w.clone(), joined(side(s, "pod")));
        kind = kind.when(w, lit(NodeKind::Pod.as_str()));
    }
    if let Some(n) = expanded.namespace {
        let workload = coalesce(vec![side(s, "workload"), side(s, "pod")]);
        id = id.when(n.clone(), joined(workload));
        kind = kind.when(n, lit(NodeKind::Workload.as_str()));
    }
    let id = id.otherwise(ns).expect("a CASE with a WHEN");
    let kind = kind
        .otherwise(lit(NodeKind::Namespace.as_str()))
        .expect("a CASE with a WHEN");
    (id, kind)
}

/// 1 where `cond` holds, else 0: summed, a count of connections.
fn counted(cond: Expr) -> Expr {
    sum(when(cond, lit(1u64))
        .otherwise(lit(0u64))
        .expect("a CASE with a WHEN"))
}

/// `connections` (already time-filtered) → one row per (source node,
/// destination node): `src`, `src_kind`, `dst`, `dst_kind`, `connections`,
/// `allowed`, `denied`, `mismatched` (connection counts; a mismatched one is
/// also counted under its verdict), `bytes_sent`; most connections first.
pub(crate) fn edges(connections: DataFrame, level: &MapLevel) -> Result<DataFrame> {
    let (src, src_kind) = node(level, "src");
    let (dst, dst_kind) = node(level, "dst");
    connections
        .aggregate(
            vec![
                src.alias("src"),
                src_kind.alias("src_kind"),
                dst.alias("dst"),
                dst_kind.alias("dst_kind"),
            ],
            vec![
                count(lit(1)).alias("connections"),
                counted(col("verdict").eq(lit("allowed"))).alias("allowed"),
                counted(col("verdict").eq(lit("denied"))).alias("denied"),
                counted(col("enforcement_mismatch").is_true()).alias("mismatched"),
                sum(col("bytes_sent")).alias("bytes_sent"),
            ],
        )?
        .sort(vec![
            col("connections").sort(false, false),
            col("src").sort(true, false),
            col("dst").sort(true, false),
        ])
}
