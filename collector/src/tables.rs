//! The cluster as the query engine's `pods`, `namespaces` and `policies`
//! tables, refreshed with each snapshot, and the store's size as metrics.

use flowgate_policy::Cluster;
use flowgate_query::{
    FlowStore, LabelHistoryRow, NamespaceRow, PodRow, PolicyHistoryRow, PolicyRow,
};

use crate::cluster::history::{Change, History, ObjectChange};

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

/// `label_history`: Pods and Namespaces whose labels changed (created and
/// deleted ones included); a pod that only changed address is left out.
pub fn label_history_rows(history: &History) -> Vec<LabelHistoryRow> {
    let json = |l: Option<&std::collections::BTreeMap<String, String>>| {
        l.map(|l| serde_json::to_string(l).unwrap_or_else(|_| "{}".to_owned()))
    };
    let row = |c: &Change, kind, namespace: &str, name: &str, before, after| LabelHistoryRow {
        time_ns: c.time_ns,
        generation: c.generation,
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        before_labels: before,
        after_labels: after,
    };
    let pod_labels =
        |p: &k8s_openapi::api::core::v1::Pod| p.metadata.labels.clone().unwrap_or_default();
    history
        .changes()
        .iter()
        .filter_map(|c| match &c.object {
            ObjectChange::Namespace {
                name,
                before,
                after,
            } => Some(row(
                c,
                "Namespace",
                name,
                name,
                json(before.as_ref()),
                json(after.as_ref()),
            )),
            ObjectChange::Pod {
                namespace,
                name,
                before,
                after,
            } => {
                let before = before.as_deref().map(pod_labels);
                let after = after.as_deref().map(pod_labels);
                let same = before.is_some() && after.is_some() && before == after;
                (!same).then(|| {
                    row(
                        c,
                        "Pod",
                        namespace,
                        name,
                        json(before.as_ref()),
                        json(after.as_ref()),
                    )
                })
            }
            ObjectChange::NetworkPolicy { .. } => None,
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
