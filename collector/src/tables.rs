//! The cluster as the query engine's `pods`, `namespaces` and `policies`
//! tables, refreshed with each snapshot, and the store's size as metrics.

use flowgate_policy::Cluster;
use flowgate_query::{FlowStore, NamespaceRow, PodRow, PolicyRow};

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

pub fn refresh_store_metrics(store: &FlowStore, metrics: &Metrics) {
    let stats = store.stats();
    metrics
        .store_rows
        .set(i64::try_from(stats.memory_rows + stats.disk_rows).unwrap_or(i64::MAX));
    metrics.store_bytes.set(
        i64::try_from(stats.memory_bytes + stats.disk_bytes + stats.wal_bytes).unwrap_or(i64::MAX),
    );
}
