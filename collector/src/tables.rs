//! The cluster as the query engine's `pods`, `namespaces` and `policies`
//! tables, refreshed with each snapshot, and the store's size as metrics.

use flowgate_policy::{Cluster, Direction};
use flowgate_query::{
    FlowStore, LabelHistoryRow, NamespaceRow, PodIsolationRow, PodRow, PolicyHistoryRow, PolicyRow,
};

use k8s_openapi::api::core::v1::Pod;

use crate::cluster::history::{History, ObjectChange, pod_ips};

use crate::metrics::Metrics;

pub fn pod_rows(cluster: &Cluster) -> Vec<PodRow> {
    cluster
        .pods()
        .map(|(_, p)| PodRow {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            ips: p.ips.iter().map(ToString::to_string).collect(),
            node: p.node.clone(),
            labels: serde_json::to_string(&p.labels).unwrap_or_else(|_| "{}".to_owned()),
            workload_kind: p.workload.as_ref().map(|w| w.kind.clone()),
            workload: p.workload.as_ref().map(|w| w.name.clone()),
            host_network: p.host_network,
            phase: p.phase.clone(),
        })
        .collect()
}

pub fn namespace_rows(cluster: &Cluster) -> Vec<NamespaceRow> {
    cluster
        .namespaces()
        .map(|n| NamespaceRow {
            name: n.name.clone(),
            labels: serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".to_owned()),
        })
        .collect()
}

pub fn policy_rows(cluster: &Cluster) -> Vec<PolicyRow> {
    cluster
        .policies()
        .map(|(id, p)| {
            let mut types = Vec::new();
            if p.isolates_ingress {
                types.push("Ingress".to_owned());
            }
            if p.isolates_egress {
                types.push("Egress".to_owned());
            }
            PolicyRow {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                pod_selector: p.pod_selector.to_string(),
                policy_types: types,
                ingress_rules: u32::try_from(p.ingress.len()).unwrap_or(u32::MAX),
                egress_rules: u32::try_from(p.egress.len()).unwrap_or(u32::MAX),
                selected_pods: cluster
                    .selected_pods(id)
                    .iter()
                    .map(|pod| {
                        let pod = cluster.pod(*pod);
                        format!("{}/{}", pod.namespace, pod.name)
                    })
                    .collect(),
                yaml: serde_norway::to_string(&p.object).unwrap_or_default(),
            }
        })
        .collect()
}

/// `pod_isolation`: per pod, whether a NetworkPolicy isolates it in each
/// direction, and which policies select it. hostNetwork pods are left out:
/// no NetworkPolicy can select them.
pub fn pod_isolation_rows(cluster: &Cluster) -> Vec<PodIsolationRow> {
    let mut selecting: Vec<Vec<String>> = vec![Vec::new(); cluster.pod_count()];
    for (id, policy) in cluster.policies() {
        for pod in cluster.selected_pods(id) {
            if let Some(keys) = selecting.get_mut(pod.0 as usize) {
                keys.push(policy.key());
            }
        }
    }
    cluster
        .pods()
        .filter(|(_, p)| p.selectable())
        .map(|(id, p)| {
            let mut policies = std::mem::take(&mut selecting[id.0 as usize]);
            policies.sort();
            PodIsolationRow {
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
                ingress_isolated: !cluster
                    .isolating_policies(id, Direction::Ingress)
                    .is_empty(),
                egress_isolated: !cluster.isolating_policies(id, Direction::Egress).is_empty(),
                policies,
            }
        })
        .collect()
}

/// `policy_history`: every NetworkPolicy change, with the YAML before and after.
pub fn policy_history_rows(history: &History) -> Vec<PolicyHistoryRow> {
    let yaml = |p: &Option<Box<k8s_openapi::api::networking::v1::NetworkPolicy>>| {
        p.as_deref()
            .map(|p| serde_norway::to_string(p).unwrap_or_default())
    };
    history
        .changes()
        .iter()
        .filter_map(|c| match &c.object {
            ObjectChange::NetworkPolicy {
                namespace,
                name,
                before,
                after,
            } => Some(PolicyHistoryRow {
                time_ns: c.time_ns,
                generation: c.generation,
                namespace: namespace.clone(),
                name: name.clone(),
                change: c.object.change().as_str(),
                before_yaml: yaml(before),
                after_yaml: yaml(after),
            }),
            _ => None,
        })
        .collect()
}

/// `label_history`: Pods whose labels or addresses changed and Namespaces
/// whose labels changed (created and deleted ones included).
pub fn label_history_rows(history: &History) -> Vec<LabelHistoryRow> {
    let json = |l: Option<&std::collections::BTreeMap<String, String>>| {
        l.map(|l| serde_json::to_string(l).unwrap_or_else(|_| "{}".to_owned()))
    };
    history
        .changes()
        .iter()
        .filter_map(|c| {
            let row = |kind, namespace: &str, name: &str| LabelHistoryRow {
                time_ns: c.time_ns,
                generation: c.generation,
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                before_labels: None,
                after_labels: None,
                before_ips: None,
                after_ips: None,
            };
            match &c.object {
                ObjectChange::Namespace {
                    name,
                    before,
                    after,
                } => Some(LabelHistoryRow {
                    before_labels: json(before.as_ref()),
                    after_labels: json(after.as_ref()),
                    ..row("Namespace", name, name)
                }),
                ObjectChange::Pod {
                    namespace,
                    name,
                    before,
                    after,
                } => {
                    let labels =
                        |p: &Pod| json(Some(&p.metadata.labels.clone().unwrap_or_default()));
                    Some(LabelHistoryRow {
                        before_labels: before.as_deref().and_then(labels),
                        after_labels: after.as_deref().and_then(labels),
                        before_ips: before.as_deref().map(pod_ips),
                        after_ips: after.as_deref().map(pod_ips),
                        ..row("Pod", namespace, name)
                    })
                }
                ObjectChange::NetworkPolicy { .. } => None,
            }
        })
        .collect()
}

pub fn refresh_store_metrics(store: &FlowStore, metrics: &Metrics) {
    let stats = store.stats();
    metrics
        .store_rows
        .set(i64::try_from(stats.memory_rows + stats.disk_rows).unwrap_or(i64::MAX));
    metrics.store_bytes.set(
        i64::try_from(stats.memory_bytes + stats.disk_bytes + stats.wal_bytes).unwrap_or(i64::MAX),
    );
}
