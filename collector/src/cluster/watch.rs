//! Cluster state from the Kubernetes API: kube-runtime reflectors for Pods,
//! Namespaces, NetworkPolicies, ReplicaSets (for ReplicaSet → Deployment)
//! and Nodes (for the tiers' `nodes` peers and host-network pods), and the
//! cluster policy tiers where their CRDs are installed ([`super::crds`]).
//!
//! Each reflector keeps its own store, replaced atomically on a relist (a
//! 410 Gone restarts the list; the store swaps at `InitDone`). Every change
//! sends a signal on a channel with room for one; when it is full a rebuild
//! is already pending, so the signal is folded into it and counted.
//! The snapshot is first built once every kind has listed completely.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::crds::{self, TierStore};
use super::state::{ClusterInputs, StateWriter, rebuild_loop};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {source}")]
    Config {
        source: kube::config::InferConfigError,
    },
    #[error("cannot build a Kubernetes client: {source}")]
    Client { source: kube::Error },
}

/// A client from the in-cluster configuration, else the kubeconfig.
pub async fn default_client() -> Result<Client, WatchError> {
    let config = kube::Config::infer()
        .await
        .map_err(|source| WatchError::Config { source })?;
    Client::try_from(config).map_err(|source| WatchError::Client { source })
}

/// How the watches pace themselves.
#[derive(Clone, Copy, Debug)]
pub struct WatchTiming {
    /// Wait after a change before rebuilding, so a burst costs one rebuild.
    pub debounce: Duration,
    /// How often to look again for a tier CRD that is not installed.
    pub crd_recheck: Duration,
}

/// The stores of the watched kinds, readable at any time.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub policies: Store<NetworkPolicy>,
    pub replica_sets: Store<ReplicaSet>,
    pub nodes: Store<Node>,
    pub tiers: TierStore,
    listed: Arc<[AtomicBool; 5]>,
    metrics: Arc<Metrics>,
}

impl Stores {
    /// The current object sets, once every kind has listed completely (a
    /// tier CRD that is not installed counts as listed, empty).
    pub fn inputs(&self) -> Option<ClusterInputs> {
        if !self.listed.iter().all(|l| l.load(Ordering::Acquire)) || !self.tiers.listed() {
            return None;
        }
        Some(ClusterInputs {
            namespaces: self.namespaces.state(),
            pods: self.pods.state(),
            policies: self.policies.state(),
            replica_sets: self.replica_sets.state(),
            nodes: self.nodes.state(),
            cluster_policies: self.tiers.policies(&self.metrics),
        })
    }
}

/// Starts the reflectors, the tier CRD watches and the rebuild loop on
/// `tasks`; returns the stores. The tasks run until the set is dropped;
/// watch errors are retried with kube's default backoff and logged.
pub fn spawn(
    client: Client,
    writer: StateWriter,
    timing: WatchTiming,
    metrics: Arc<Metrics>,
    tasks: &mut JoinSet<()>,
) -> Stores {
    let (tx, rx) = mpsc::channel::<()>(1);
    let listed: Arc<[AtomicBool; 5]> = Arc::new(Default::default());
    let stores = Stores {
        pods: reflect::<Pod>(Api::all(client.clone()), 0, &listed, &tx, &metrics, tasks),
        namespaces: reflect::<Namespace>(
            Api::all(client.clone()),
            1,
            &listed,
            &tx,
            &metrics,
            tasks,
        ),
        policies: reflect::<NetworkPolicy>(
            Api::all(client.clone()),
            2,
            &listed,
            &tx,
            &metrics,
            tasks,
        ),
        replica_sets: reflect::<ReplicaSet>(
            Api::all(client.clone()),
            3,
            &listed,
            &tx,
            &metrics,
            tasks,
        ),
        nodes: reflect::<Node>(Api::all(client.clone()), 4, &listed, &tx, &metrics, tasks),
        tiers: crds::spawn(client, timing.crd_recheck, tx, metrics.clone(), tasks),
        listed,
        metrics,
    };
    let reader = stores.clone();
    tasks.spawn(rebuild_loop(writer, rx, timing.debounce, move || {
        reader.inputs()
    }));
    stores
}

fn reflect<K>(
    api: Api<K>,
    slot: usize,
    listed: &Arc<[AtomicBool; 5]>,
    changes: &mpsc::Sender<()>,
    metrics: &Arc<Metrics>,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let listed = listed.clone();
    let changes = changes.clone();
    let metrics = metrics.clone();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {
                    // The store swaps in the new list at InitDone.
                }
                Ok(watcher::Event::InitDone) => {
                    listed[slot].store(true, Ordering::Release);
                    signal(&changes, &metrics);
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    signal(&changes, &metrics)
                }
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}

pub(super) fn signal(changes: &mpsc::Sender<()>, metrics: &Metrics) {
    if changes.try_send(()).is_err() {
        metrics.rebuilds_coalesced.inc();
    }
}
