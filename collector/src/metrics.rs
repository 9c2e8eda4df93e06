//! The collector's Prometheus metrics: what came in, what was refused or
//! lost (and why), how flows were judged, and how queries perform.

use std::collections::HashSet;
use std::sync::Mutex;

use flowgate_policy::{Cluster, Direction};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// All metrics, registered once; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    pub flows_ingested: Counter,
    pub batches_stored: Counter,
    pub batches_duplicate: Counter,
    /// Rejected batches by reason (schema, size, malformed, store).
    pub batches_rejected: Family<Labels, Counter>,
    /// Flows inside rejected batches, by reason.
    pub flows_rejected: Family<Labels, Counter>,
    /// Flows judged, by final verdict and the policy that decided it.
    pub verdicts: Family<Labels, Counter>,
    pub enforcement_mismatches: Counter,
    /// Probe losses reported in-band, by node and kind (see [`crate::losses`]).
    pub probe_losses: Family<crate::losses::LossLabels, Counter>,
    pub store_rows: Gauge<i64>,
    pub store_bytes: Gauge<i64>,
    pub query_seconds: Histogram,
    pub policy_generation: Gauge<i64>,
    /// Cluster changes folded into an already pending rebuild.
    pub rebuilds_coalesced: Counter,
    /// Invalid cluster objects skipped by the policy engine.
    pub cluster_objects_invalid: Gauge<i64>,
    /// Watched cluster policies (tier CRDs) that do not decode, left out.
    pub cluster_policies_undecodable: Gauge<i64>,
    /// Cluster changes the history log failed to record (history then lacks them).
    pub history_changes_lost: Counter,
    /// Edits of `--cluster` files that could not be applied (bad YAML…).
    pub cluster_file_reloads_failed: Counter,
    /// `flowgate_policy_rule_flows_total`: flows per NetworkPolicy rule.
    /// Only series of rules that exist now: see [`Metrics::set_policy_rules`].
    policy_rule_flows: Family<Labels, Counter>,
    /// The label sets `policy_rule_flows` may hold under the current snapshot.
    policy_rules: Mutex<HashSet<Labels>>,
}

/// The `rule` label of flows a policy isolated and denied (no rule admitted them).
pub const DENIED_RULE: &str = "none";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let m = Self {
            registry: Registry::default(),
            flows_ingested: Counter::default(),
            batches_stored: Counter::default(),
            batches_duplicate: Counter::default(),
            batches_rejected: Family::default(),
            flows_rejected: Family::default(),
            verdicts: Family::default(),
            enforcement_mismatches: Counter::default(),
            probe_losses: Family::default(),
            store_rows: Gauge::default(),
            store_bytes: Gauge::default(),
            query_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            policy_generation: Gauge::default(),
            rebuilds_coalesced: Counter::default(),
            cluster_objects_invalid: Gauge::default(),
            cluster_policies_undecodable: Gauge::default(),
            history_changes_lost: Counter::default(),
            cluster_file_reloads_failed: Counter::default(),
            policy_rule_flows: Family::default(),
            policy_rules: Mutex::new(HashSet::new()),
        };
        // Named for what it counts, not who counts it: `flowgate_policy_*`.
        root.sub_registry_with_prefix("flowgate_policy").register(
            "rule_flows",
            "Flows per NetworkPolicy rule that admitted them (rule = its index in that direction), \
             and flows a policy isolated and denied (rule=\"none\"); only rules that exist now",
            m.policy_rule_flows.clone(),
        );
        let registry = root.sub_registry_with_prefix("flowgate_collector");
        registry.register("flows_ingested", "Flows stored", m.flows_ingested.clone());
        registry.register("batches_stored", "Batches stored", m.batches_stored.clone());
        registry.register(
            "batches_duplicate",
            "Batches received again after being stored (same probe and sequence)",
            m.batches_duplicate.clone(),
        );
        registry.register(
            "batches_rejected",
            "Batches rejected, by reason",
            m.batches_rejected.clone(),
        );
        registry.register(
            "flows_rejected",
            "Flows in rejected batches, by reason",
            m.flows_rejected.clone(),
        );
        registry.register(
            "verdicts",
            "Flows judged, by verdict and deciding policy (\"none\" when no policy applies)",
            m.verdicts.clone(),
        );
        registry.register(
            "enforcement_mismatches",
            "Flows whose policy verdict and kernel fate disagree",
            m.enforcement_mismatches.clone(),
        );
        registry.register(
            "probe_losses",
            "Flows or packets probes lost, as they reported in-band, by node and kind",
            m.probe_losses.clone(),
        );
        registry.register(
            "store_rows",
            "Flows held by the store",
            m.store_rows.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes used by the store (memory and disk)",
            m.store_bytes.clone(),
        );
        registry.register(
            "query_seconds",
            "SQL query latency",
            m.query_seconds.clone(),
        );
        registry.register(
            "policy_generation",
            "Generation of the cluster snapshot verdicts are computed under",
            m.policy_generation.clone(),
        );
        registry.register(
            "rebuilds_coalesced",
            "Cluster changes folded into an already pending snapshot rebuild",
            m.rebuilds_coalesced.clone(),
        );
        registry.register(
            "cluster_objects_invalid",
            "Cluster objects the policy engine skipped as invalid",
            m.cluster_objects_invalid.clone(),
        );
        registry.register(
            "cluster_policies_undecodable",
            "Watched AdminNetworkPolicies, BaselineAdminNetworkPolicies and ClusterNetworkPolicies left out because they do not decode",
            m.cluster_policies_undecodable.clone(),
        );
        registry.register(
            "history_changes_lost",
            "Cluster changes the history log could not record (disk errors)",
            m.history_changes_lost.clone(),
        );
        registry.register(
            "cluster_file_reloads_failed",
            "Edits of --cluster files that could not be loaded; the previous state stays in force",
            m.cluster_file_reloads_failed.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Bounds `flowgate_policy_rule_flows_total` to the rules of `cluster`:
    /// series of deleted policies and rules are dropped, and only these
    /// label sets are counted until the next snapshot.
    pub fn set_policy_rules(&self, cluster: &Cluster) {
        let mut allowed = HashSet::new();
        for (_, p) in cluster.policies() {
            for direction in [Direction::Ingress, Direction::Egress] {
                if !p.isolates(direction) {
                    continue;
                }
                let rules = (0..p.rules(direction).len()).map(|i| i.to_string());
                for rule in rules.chain([DENIED_RULE.to_owned()]) {
                    allowed.insert(rule_labels(&p.namespace, &p.name, direction, rule));
                }
            }
        }
        let mut current = lock(&self.policy_rules);
        for gone in current.difference(&allowed) {
            self.policy_rule_flows.remove(gone);
        }
        *current = allowed;
    }

    /// Adds `n` flows to a rule's series (`rule`: index or [`DENIED_RULE`]),
    /// if that rule exists under the current snapshot: a batch judged under
    /// an older one cannot bring back a deleted policy's series.
    pub fn count_rule_flows(&self, counts: impl IntoIterator<Item = (Labels, u64)>) {
        let allowed = lock(&self.policy_rules);
        for (labels, n) in counts {
            if allowed.contains(&labels) {
                self.policy_rule_flows.get_or_create(&labels).inc_by(n);
            }
        }
    }

    /// Counts a rejected batch and its flows under one reason label.
    pub fn rejected(&self, reason: RejectKind, flows: usize) {
        let labels = vec![("reason", reason.as_str().to_owned())];
        self.batches_rejected.get_or_create(&labels).inc();
        self.flows_rejected
            .get_or_create(&labels)
            .inc_by(flows as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The labels of one `flowgate_policy_rule_flows_total` series.
pub fn rule_labels(namespace: &str, policy: &str, direction: Direction, rule: String) -> Labels {
    vec![
        ("namespace", namespace.to_owned()),
        ("policy", policy.to_owned()),
        ("direction", direction.to_string()),
        ("rule", rule),
    ]
}

fn lock(m: &Mutex<HashSet<Labels>>) -> std::sync::MutexGuard<'_, HashSet<Labels>> {
    // The set is replaced whole: a panic elsewhere cannot leave it half-made.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a batch was rejected: the label of the rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    SchemaVersion,
    TooLarge,
    Malformed,
    Store,
    /// The batch's node is not the one the client certificate names.
    Identity,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::SchemaVersion => "schema_version",
            RejectKind::TooLarge => "too_large",
            RejectKind::Malformed => "malformed",
            RejectKind::Store => "store",
            RejectKind::Identity => "identity",
        }
    }
}
