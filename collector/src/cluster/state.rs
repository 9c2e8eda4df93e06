//! The cluster state every flow is judged against: one writer, many readers.
//!
//! The writer (a watcher task, or the file loader) hands complete object sets
//! to [`StateWriter::rebuild`], which compiles a new `flowgate_policy::Cluster`
//! under the next generation, folds the pods' addresses into the time-aware
//! [`IpIndex`], and swaps the new [`Snapshot`] in atomically: a reader sees
//! the old snapshot or the new one, never a half-built one. Changes are
//! debounced by [`rebuild_loop`] so that a burst of pod churn costs one
//! rebuild.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flowgate_policy::crd::ClusterPolicyObject;
use flowgate_policy::{Cluster, ClusterObjects};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::mpsc;

use super::history::{History, SharedHistory};
use super::ip_index::{Holder, IpIndex, PodIdentity};
use crate::enrich::PolicyNames;
use crate::metrics::Metrics;

/// An immutable view of the cluster, swapped as a whole.
#[derive(Debug)]
pub struct Snapshot {
    pub cluster: Arc<Cluster>,
    pub ips: IpIndex,
    /// The policies' and rules' names, for the rows judged under it.
    pub names: PolicyNames,
    /// False until the first complete object set arrived.
    pub synced: bool,
    /// The objects it was built from (a what-if rebuilds from them).
    pub inputs: Arc<ClusterInputs>,
}

impl Snapshot {
    fn empty() -> Self {
        let (cluster, _) = Cluster::build_lenient([], [], [], 0);
        Snapshot {
            cluster: Arc::new(cluster),
            ips: IpIndex::default(),
            names: PolicyNames::default(),
            synced: false,
            inputs: Arc::default(),
        }
    }
}

/// Called with each new snapshot (the query engine's `pods`, `namespaces`
/// and `policies` tables are refreshed this way).
pub type SnapshotHook = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// The readers' side: cheap to clone, lock-free to read.
#[derive(Clone)]
pub struct ClusterState {
    current: Arc<ArcSwap<Snapshot>>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::empty())),
        }
    }
}

impl ClusterState {
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Everything the state is built from: complete sets, as listed.
#[derive(Debug, Default, Clone)]
pub struct ClusterInputs {
    pub namespaces: Vec<Arc<Namespace>>,
    pub pods: Vec<Arc<Pod>>,
    pub policies: Vec<Arc<NetworkPolicy>>,
    /// For ReplicaSet → Deployment resolution; may be empty (then the
    /// engine's pod-template-hash naming rule is used).
    pub replica_sets: Vec<Arc<ReplicaSet>>,
    /// Nodes, for the cluster tiers' `nodes` peers (from YAML; may be empty).
    pub nodes: Vec<Arc<Node>>,
    /// AdminNetworkPolicies, BaselineAdminNetworkPolicies and
    /// ClusterNetworkPolicies (from YAML; may be empty).
    pub cluster_policies: Vec<Arc<ClusterPolicyObject>>,
}

impl From<ClusterObjects> for ClusterInputs {
    fn from(o: ClusterObjects) -> Self {
        ClusterInputs {
            namespaces: o.namespaces.into_iter().map(Arc::new).collect(),
            pods: o.pods.into_iter().map(Arc::new).collect(),
            policies: o.policies.into_iter().map(Arc::new).collect(),
            replica_sets: Vec::new(),
            nodes: o.nodes.into_iter().map(Arc::new).collect(),
            cluster_policies: o.cluster_policies.into_iter().map(Arc::new).collect(),
        }
    }
}

impl ClusterInputs {
    /// The objects the policy engine reads, copied out.
    pub fn objects(&self) -> ClusterObjects {
        fn copy<T: Clone>(v: &[Arc<T>]) -> Vec<T> {
            v.iter().map(|o| T::clone(o)).collect()
        }
        ClusterObjects {
            namespaces: copy(&self.namespaces),
            pods: copy(&self.pods),
            policies: copy(&self.policies),
            nodes: copy(&self.nodes),
            cluster_policies: copy(&self.cluster_policies),
            ignored: Vec::new(),
        }
    }
}

/// The one writer of a [`ClusterState`].
pub struct StateWriter {
    state: ClusterState,
    generation: u64,
    ips: IpIndex,
    tombstone_retention: Duration,
    metrics: Arc<Metrics>,
    hook: Option<SnapshotHook>,
    history: Option<SharedHistory>,
}

impl StateWriter {
    pub fn new(state: ClusterState, tombstone_retention: Duration, metrics: Arc<Metrics>) -> Self {
        StateWriter {
            state,
            generation: 0,
            ips: IpIndex::default(),
            tombstone_retention,
            metrics,
            hook: None,
            history: None,
        }
    }

    /// Records every change in `history`; generations continue from the
    /// newest it holds, so they stay unique across restarts.
    pub fn set_history(&mut self, history: SharedHistory) {
        let last = lock(&history).last_generation();
        self.generation = self.generation.max(last);
        self.history = Some(history);
    }

    pub fn set_hook(&mut self, hook: SnapshotHook) {
        self.hook = Some(hook);
    }

    /// Compiles `inputs` into a new snapshot observed at `now_ns` and swaps
    /// it in. Invalid objects are skipped, logged and counted.
    pub fn rebuild(&mut self, inputs: &ClusterInputs, now_ns: i64) {
        self.generation += 1;
        let (cluster, errors) = Cluster::build_lenient_with_tiers(
            inputs.namespaces.iter().map(|n| n.as_ref()),
            inputs.pods.iter().map(|p| p.as_ref()),
            inputs.policies.iter().map(|p| p.as_ref()),
            inputs.nodes.iter().map(|n| n.as_ref()),
            inputs.cluster_policies.iter().map(|p| p.as_ref()),
            self.generation,
        );
        for e in &errors {
            tracing::warn!(error = %e, "skipping an invalid cluster object");
        }
        if let Some(history) = &self.history {
            match lock(history).observe(inputs, self.generation, now_ns) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    generation = self.generation,
                    changes = n,
                    "cluster changes recorded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record cluster changes: history lacks this generation");
                    self.metrics.history_changes_lost.inc();
                }
            }
        }
        self.metrics
            .cluster_objects_invalid
            .set(errors.len() as i64);
        self.metrics.set_policy_rules(&cluster);
        let holders = holders(inputs, &cluster);
        let retention = i64::try_from(self.tombstone_retention.as_nanos()).unwrap_or(i64::MAX);
        self.ips.observe(now_ns, &holders, retention, &cluster);
        let snapshot = Snapshot {
            names: PolicyNames::of(&cluster),
            cluster: Arc::new(cluster),
            ips: self.ips.clone(),
            synced: true,
            inputs: Arc::new(inputs.clone()),
        };
        if let Some(hook) = &self.hook {
            hook(&snapshot);
        }
        self.metrics.policy_generation.set(self.generation as i64);
        tracing::debug!(
            generation = self.generation,
            pods = inputs.pods.len(),
            "cluster snapshot rebuilt"
        );
        self.state.current.store(Arc::new(snapshot));
    }
}

/// Rebuilds from `inputs()` after each change signal, waiting `debounce`
/// after the first signal so that a burst of changes costs one rebuild.
/// The channel has room for one pending signal: when full, a rebuild is
/// already due, so senders drop theirs (counted as coalesced).
pub async fn rebuild_loop(
    mut writer: StateWriter,
    mut changes: mpsc::Receiver<()>,
    debounce: Duration,
    inputs: impl Fn() -> Option<ClusterInputs>,
) {
    while changes.recv().await.is_some() {
        tokio::time::sleep(debounce).await;
        while changes.try_recv().is_ok() {}
        // `None`: not every watcher has listed yet; a later signal will come.
        if let Some(inputs) = inputs() {
            writer.rebuild(&inputs, crate::now_ns());
        }
    }
}

/// Every address a running, policy-selectable pod holds now.
fn holders(inputs: &ClusterInputs, cluster: &Cluster) -> Vec<Holder> {
    let mut rs_owner: BTreeMap<(&str, &str), (&str, &str)> = BTreeMap::new();
    let mut rs_known: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for rs in &inputs.replica_sets {
        let (Some(ns), Some(name)) = (
            rs.metadata.namespace.as_deref(),
            rs.metadata.name.as_deref(),
        ) else {
            continue;
        };
        rs_known.insert((ns, name), ());
        if let Some(owner) = controller(&rs.metadata) {
            rs_owner.insert((ns, name), owner);
        }
    }
    let mut out = Vec::new();
    for pod in &inputs.pods {
        let meta = &pod.metadata;
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            continue;
        };
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            // Node traffic: the address is the node's, not the pod's.
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            // A finished pod has released its address.
            continue;
        }
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|v| v.iter().filter_map(|p| p.ip.parse().ok()).collect())
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok())
        {
            ips.push(ip);
        }
        if ips.is_empty() {
            continue;
        }
        let labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
        let (workload_kind, workload) = match controller(meta) {
            Some(("ReplicaSet", rs)) if rs_known.contains_key(&(ns, rs)) => {
                match rs_owner.get(&(ns, rs)) {
                    Some((kind, owner)) => (Some(kind.to_string()), Some(owner.to_string())),
                    None => (Some("ReplicaSet".to_owned()), Some(rs.to_owned())),
                }
            }
            Some(("ReplicaSet", _)) => {
                // ReplicaSets not watched (YAML input): the engine's naming rule.
                match cluster
                    .find_pod(ns, name)
                    .and_then(|id| cluster.pod(id).workload.clone())
                {
                    Some(w) => (Some(w.kind), Some(w.name)),
                    None => (None, None),
                }
            }
            Some((kind, owner)) => (Some(kind.to_owned()), Some(owner.to_owned())),
            None => (None, None),
        };
        let identity = Arc::new(PodIdentity {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: meta.uid.clone(),
            labels_json: serde_json::to_string(&labels).unwrap_or_else(|_| "{}".to_owned()),
            workload_kind,
            workload,
            node: spec.and_then(|s| s.node_name.clone()),
        });
        let since_ns = meta
            .creation_timestamp
            .as_ref()
            .map(|t| i64::try_from(t.0.as_nanosecond()).unwrap_or(i64::MAX));
        // Objects loaded from YAML have no creation time: they held their
        // address all along.
        let since_ns = since_ns.or(Some(i64::MIN));
        for ip in ips {
            out.push(Holder {
                ip,
                identity: identity.clone(),
                since_ns,
            });
        }
    }
    out
}

fn controller(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(&str, &str)> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// The history behind its lock; a panic while holding it left the changes
/// list whole (it is only extended after a successful write), so poisoning
/// is ignored.
pub fn lock(history: &SharedHistory) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_policy::{Protocol, Tier};

    /// `--cluster` YAML with cluster-tier policies and Nodes: the snapshot
    /// judges by them.
    #[test]
    fn yaml_tiers_and_nodes_reach_the_snapshot() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/fixtures");
        let objects = flowgate_policy::load_paths(&[
            dir.join("semantics/_base.yaml"),
            dir.join("tiers/_nodes.yaml"),
            dir.join("tiers/both-versions.yaml"),
        ])
        .unwrap();
        let state = ClusterState::default();
        let mut writer = StateWriter::new(
            state.clone(),
            Duration::from_secs(60),
            Arc::new(Metrics::new()),
        );
        writer.rebuild(&ClusterInputs::from(objects), 1);
        let snap = state.load();
        let c = &snap.cluster;
        assert_eq!(c.cluster_policies().count(), 4);
        assert_eq!(c.nodes().len(), 2);
        let client = c.pod_endpoint(c.find_pod("dev", "client").unwrap(), None);
        let web = c.pod_endpoint(c.find_pod("prod", "web").unwrap(), None);
        let v = c.verdict(&client, &web, 80, Protocol::Tcp);
        assert!(!v.allowed);
        assert_eq!(v.ingress.tier, Tier::Admin);
        assert_eq!(
            c.decided_by_key(v.ingress.decided_by.unwrap()),
            "admin/anp-10/ingress/deny-dev"
        );
    }
}
