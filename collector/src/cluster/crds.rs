//! The cluster-scoped policy tiers from the Kubernetes API: watches on
//! AdminNetworkPolicy, BaselineAdminNetworkPolicy (`v1alpha1`) and
//! ClusterNetworkPolicy (`v1alpha2`) where their CRDs are installed.
//!
//! Most clusters have none of them, so absence is the normal case, not an
//! error. Each kind runs a small state machine:
//!
//! - **Absent**: the list answered 404 (CRD not installed, or that version
//!   not served). The kind counts as listed, with no objects; one info line
//!   is logged, and the list is tried again every `recheck`, quietly.
//! - **Watching**: a list succeeded; the watch follows it (other errors are
//!   retried with kube's backoff and logged). A 404 later (the CRD was
//!   removed) empties the kind and goes back to Absent.
//!
//! Objects are decoded with the same code as YAML files; one that does not
//! decode is logged once per change, left out and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flowgate_policy::ClusterObjects;
use flowgate_policy::crd::ClusterPolicyObject;
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::watch::signal;
use crate::metrics::Metrics;

/// The three kinds, with the API version flowgate reads each at.
const KINDS: [(&str, &str, &str); 3] = [
    ("v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies"),
    (
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies",
    ),
    ("v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies"),
];
const GROUP: &str = "policy.networking.k8s.io";

/// One kind's objects by name: decoded, or why not.
type Objects = BTreeMap<String, Result<Arc<ClusterPolicyObject>, String>>;

/// The tier policies of every kind, readable at any time.
#[derive(Clone, Default)]
pub struct TierStore {
    kinds: Arc<[KindState; 3]>,
}

#[derive(Default)]
struct KindState {
    /// Listed completely, or known absent.
    listed: AtomicBool,
    objects: Mutex<Objects>,
}

impl KindState {
    fn objects(&self) -> MutexGuard<'_, Objects> {
        // A panic while holding the lock leaves a whole map (every update is
        // one insert, remove or swap).
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TierStore {
    /// Whether every kind has listed (or is known absent).
    pub fn listed(&self) -> bool {
        self.kinds.iter().all(|k| k.listed.load(Ordering::Acquire))
    }

    /// The decoded policies of every kind, in kind then name order; the
    /// undecodable ones are counted in `metrics`.
    pub fn policies(&self, metrics: &Metrics) -> Vec<Arc<ClusterPolicyObject>> {
        let mut out = Vec::new();
        let mut undecodable = 0;
        for k in self.kinds.iter() {
            for o in k.objects().values() {
                match o {
                    Ok(p) => out.push(p.clone()),
                    Err(_) => undecodable += 1,
                }
            }
        }
        metrics.cluster_policies_undecodable.set(undecodable);
        out
    }
}

/// Starts one watch task per kind on `tasks`; each sends a signal on
/// `changes` when its objects change.
pub fn spawn(
    client: Client,
    recheck: Duration,
    changes: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
    tasks: &mut JoinSet<()>,
) -> TierStore {
    let store = TierStore::default();
    for (slot, (version, kind, plural)) in KINDS.into_iter().enumerate() {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, version, kind), plural);
        tasks.spawn(run_kind(
            Api::all_with(client.clone(), &resource),
            resource,
            store.clone(),
            slot,
            recheck,
            changes.clone(),
            metrics.clone(),
        ));
    }
    store
}

async fn run_kind(
    api: Api<DynamicObject>,
    resource: ApiResource,
    store: TierStore,
    slot: usize,
    recheck: Duration,
    changes: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
) {
    let state = &store.kinds[slot];
    let kind = resource.kind.as_str();
    let mut told_absent = false;
    loop {
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut pending: Option<Objects> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => pending = Some(Objects::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    let (name, decoded) = decode(&resource, &o);
                    pending.get_or_insert_default().insert(name, decoded);
                }
                Ok(watcher::Event::InitDone) => {
                    *state.objects() = pending.take().unwrap_or_default();
                    state.listed.store(true, Ordering::Release);
                    if told_absent {
                        tracing::info!(%kind, "the CRD is now installed: watching it");
                        told_absent = false;
                    }
                    signal(&changes, &metrics);
                }
                Ok(watcher::Event::Apply(o)) => {
                    let (name, decoded) = decode(&resource, &o);
                    state.objects().insert(name, decoded);
                    signal(&changes, &metrics);
                }
                Ok(watcher::Event::Delete(o)) => {
                    state.objects().remove(&o.metadata.name.unwrap_or_default());
                    signal(&changes, &metrics);
                }
                // A path the API server does not serve answers a plain-text
                // 404, which kube reads as a Status with that code and no
                // NotFound reason: check both.
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if status.code == 404 || status.is_not_found() =>
                {
                    break;
                }
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch failed; retrying with backoff");
                }
            }
        }
        // Absent (the only way out of the stream above).
        let had_objects = !std::mem::take(&mut *state.objects()).is_empty();
        let first = !state.listed.swap(true, Ordering::AcqRel);
        if first || had_objects {
            signal(&changes, &metrics);
        }
        if !told_absent {
            tracing::info!(
                %kind,
                api_version = %resource.api_version,
                "the CRD is not installed: no {kind} applies; checking again every {recheck:?}"
            );
            told_absent = true;
        }
        tokio::time::sleep(recheck).await;
    }
}

/// The object's name, and the policy it decodes to (with the checks YAML
/// files get) or why it does not.
fn decode(
    resource: &ApiResource,
    o: &DynamicObject,
) -> (String, Result<Arc<ClusterPolicyObject>, String>) {
    let name = o.metadata.name.clone().unwrap_or_default();
    let decoded = (|| {
        let mut value = serde_json::to_value(o).map_err(|e| e.to_string())?;
        // List items may come without their type; the watch knows it.
        if let Some(m) = value.as_object_mut() {
            m.entry("apiVersion")
                .or_insert_with(|| resource.api_version.clone().into());
            m.entry("kind")
                .or_insert_with(|| resource.kind.clone().into());
        }
        let mut objects = ClusterObjects::default();
        objects
            .add_json(&format!("{} {name}", resource.kind), value)
            .map_err(|e| e.to_string())?;
        objects
            .cluster_policies
            .pop()
            .map(Arc::new)
            .ok_or_else(|| format!("not a {}", resource.kind))
    })();
    if let Err(error) = &decoded {
        tracing::warn!(kind = %resource.kind, %name, %error, "skipping a cluster policy that does not decode");
    }
    (name, decoded)
}
