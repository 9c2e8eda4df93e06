//! Versioned cluster state: every change to a NetworkPolicy, a Namespace's
//! labels or a Pod's labels/IPs, with its time and the policy generation it
//! produced, kept durably so that any past generation can be rebuilt and
//! flows re-judged under the policies in force then.
//!
//! File layout (`cluster-history.log` in the data dir): a header (`FGHIST`
//! magic, format version u16), then records of `[len u32 LE][crc32 u32 LE]
//! [payload]`, the CRC covering the payload, which is one [`Change`] as JSON
//! (small, rare records: readability beats compactness here). A torn tail
//! (crash mid-write) ends the replay at the last whole record and is cut off.
//!
//! The log is small next to the flows: one record per object change, never
//! per pod status update (only labels and addresses are compared).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::state::ClusterInputs;

pub const FILE_NAME: &str = "cluster-history.log";
const MAGIC: &[u8; 6] = b"FGHIST";
const VERSION: u16 = 1;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cluster history {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a flowgate cluster history (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: cluster history format version {found} is not supported (expected {VERSION})")]
    Version { path: PathBuf, found: u16 },
    #[error("{path}: record at byte {offset} passes its checksum but is not a change")]
    Malformed {
        path: PathBuf,
        offset: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        }
    }

    fn of<T>(before: &Option<T>, after: &Option<T>) -> ChangeKind {
        match (before, after) {
            (None, _) => ChangeKind::Created,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(_), Some(_)) => ChangeKind::Modified,
        }
    }
}

/// The object a change is about, with its state before and after (`None`:
/// it did not exist). Objects are kept trimmed to what policies look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ObjectChange {
    NetworkPolicy {
        namespace: String,
        name: String,
        before: Option<Box<NetworkPolicy>>,
        after: Option<Box<NetworkPolicy>>,
    },
    Namespace {
        name: String,
        before: Option<BTreeMap<String, String>>,
        after: Option<BTreeMap<String, String>>,
    },
    Pod {
        namespace: String,
        name: String,
        before: Option<Box<Pod>>,
        after: Option<Box<Pod>>,
    },
}

impl ObjectChange {
    pub fn change(&self) -> ChangeKind {
        match self {
            ObjectChange::NetworkPolicy { before, after, .. } => ChangeKind::of(before, after),
            ObjectChange::Namespace { before, after, .. } => ChangeKind::of(before, after),
            ObjectChange::Pod { before, after, .. } => ChangeKind::of(before, after),
        }
    }
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub time_ns: i64,
    /// The policy generation that first had the change.
    pub generation: u64,
    pub object: ObjectChange,
}

/// The tracked state: what the last generation held, trimmed.
#[derive(Clone, Debug, Default)]
struct Tracked {
    policies: BTreeMap<(String, String), NetworkPolicy>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: BTreeMap<(String, String), Pod>,
}

impl Tracked {
    fn apply(&mut self, change: &ObjectChange) {
        fn set<K: Ord, V: Clone>(map: &mut BTreeMap<K, V>, key: K, after: Option<&V>) {
            match after {
                Some(v) => map.insert(key, v.clone()),
                None => map.remove(&key),
            };
        }
        match change {
            ObjectChange::NetworkPolicy {
                namespace,
                name,
                after,
                ..
            } => set(
                &mut self.policies,
                (namespace.clone(), name.clone()),
                after.as_deref(),
            ),
            ObjectChange::Namespace { name, after, .. } => {
                set(&mut self.namespaces, name.clone(), after.as_ref())
            }
            ObjectChange::Pod {
                namespace,
                name,
                after,
                ..
            } => set(
                &mut self.pods,
                (namespace.clone(), name.clone()),
                after.as_deref(),
            ),
        }
    }

    fn inputs(&self) -> ClusterInputs {
        ClusterInputs {
            namespaces: self
                .namespaces
                .iter()
                .map(|(name, labels)| Arc::new(namespace_object(name, labels)))
                .collect(),
            pods: self.pods.values().cloned().map(Arc::new).collect(),
            policies: self.policies.values().cloned().map(Arc::new).collect(),
            replica_sets: Vec::new(),
            // The history does not record the cluster tiers yet.
            nodes: Vec::new(),
            cluster_policies: Vec::new(),
        }
    }

    /// The changes that turn `self` into `next`.
    fn diff(&self, next: &Tracked) -> Vec<ObjectChange> {
        let mut out = Vec::new();
        for key in union(&self.policies, &next.policies) {
            let (before, after) = (self.policies.get(&key), next.policies.get(&key));
            if before.map(|p| &p.spec) != after.map(|p| &p.spec) {
                out.push(ObjectChange::NetworkPolicy {
                    namespace: key.0,
                    name: key.1,
                    before: before.cloned().map(Box::new),
                    after: after.cloned().map(Box::new),
                });
            }
        }
        for key in union(&self.namespaces, &next.namespaces) {
            let (before, after) = (self.namespaces.get(&key), next.namespaces.get(&key));
            if before != after {
                out.push(ObjectChange::Namespace {
                    name: key,
                    before: before.cloned(),
                    after: after.cloned(),
                });
            }
        }
        for key in union(&self.pods, &next.pods) {
            let (before, after) = (self.pods.get(&key), next.pods.get(&key));
            if before.map(pod_identity) != after.map(pod_identity) {
                out.push(ObjectChange::Pod {
                    namespace: key.0,
                    name: key.1,
                    before: before.cloned().map(Box::new),
                    after: after.cloned().map(Box::new),
                });
            }
        }
        out
    }

    fn of(inputs: &ClusterInputs) -> Tracked {
        let mut t = Tracked::default();
        for p in &inputs.policies {
            let p = trim_policy(p);
            t.policies.insert(key(&p.metadata), p);
        }
        for n in &inputs.namespaces {
            let name = n.metadata.name.clone().unwrap_or_default();
            t.namespaces
                .insert(name, n.metadata.labels.clone().unwrap_or_default());
        }
        for p in &inputs.pods {
            let p = trim_pod(p);
            t.pods.insert(key(&p.metadata), p);
        }
        t
    }
}

fn union<K: Ord + Clone, V>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> Vec<K> {
    let mut keys: Vec<K> = a.keys().chain(b.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What a pod change is judged by: its labels and addresses.
fn pod_identity(p: &Pod) -> (Option<&BTreeMap<String, String>>, Vec<String>) {
    (p.metadata.labels.as_ref(), pod_ips(p))
}

/// A pod's addresses (`podIPs` and `podIP`), sorted, without repeats.
pub fn pod_ips(p: &Pod) -> Vec<String> {
    let status = p.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    ips.extend(status.and_then(|s| s.pod_ip.clone()));
    ips.sort();
    ips.dedup();
    ips
}

fn namespace_object(name: &str, labels: &BTreeMap<String, String>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The policy without server bookkeeping (managedFields, resourceVersion…),
/// so before/after show what its author wrote.
pub fn trim_policy(p: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: p.metadata.name.clone(),
            namespace: Some(
                p.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..Default::default()
        },
        spec: p.spec.clone(),
    }
}

/// The pod as policies see it: labels, addresses, node, named ports, owner.
fn trim_pod(p: &Pod) -> Pod {
    let spec = p.spec.as_ref().map(|s| PodSpec {
        node_name: s.node_name.clone(),
        host_network: s.host_network,
        containers: s
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                ports: c.ports.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let status = p.status.as_ref().map(|s| PodStatus {
        pod_ip: s.pod_ip.clone(),
        pod_ips: s.pod_ips.clone(),
        host_ip: s.host_ip.clone(),
        phase: s.phase.clone(),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: p.metadata.name.clone(),
            namespace: Some(
                p.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            labels: p.metadata.labels.clone(),
            owner_references: p.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec,
        status,
    }
}

/// The log and the changes it holds. Shared between the one writer (the
/// state writer, on each rebuild) and the readers (API, tables).
pub type SharedHistory = Arc<Mutex<History>>;

#[derive(Debug)]
pub struct History {
    file: File,
    path: PathBuf,
    changes: Vec<Change>,
    current: Tracked,
    last_generation: u64,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HistoryError + 'a {
    move |source| HistoryError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl History {
    /// Opens (or creates) `dir/cluster-history.log` and replays it. A torn
    /// tail is cut off; how many bytes were cut is returned.
    pub fn open(dir: &Path) -> Result<(History, u64), HistoryError> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io("read", &path))?;
        if data.is_empty() {
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&VERSION.to_le_bytes());
            file.write_all(&header).map_err(io("write header", &path))?;
            file.sync_all().map_err(io("sync", &path))?;
            data = header;
        }
        if data.len() < HEADER || &data[..MAGIC.len()] != MAGIC {
            return Err(HistoryError::BadMagic { path });
        }
        let found = u16::from_le_bytes([data[6], data[7]]);
        if found != VERSION {
            return Err(HistoryError::Version { path, found });
        }
        let (changes, whole) = decode(&path, &data)?;
        let cut = (data.len() - whole) as u64;
        if cut > 0 {
            file.set_len(whole as u64).map_err(io("truncate", &path))?;
            file.sync_all().map_err(io("sync", &path))?;
        }
        let mut current = Tracked::default();
        for c in &changes {
            current.apply(&c.object);
        }
        let last_generation = changes.last().map_or(0, |c| c.generation);
        Ok((
            History {
                file,
                path,
                changes,
                current,
                last_generation,
            },
            cut,
        ))
    }

    /// The newest generation recorded: a restarted collector continues from it.
    pub fn last_generation(&self) -> u64 {
        self.last_generation
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Records how `inputs` differ from the last state, as `generation` at
    /// `now_ns`; durable (synced) before it returns. Returns how many
    /// changes were recorded.
    pub fn observe(
        &mut self,
        inputs: &ClusterInputs,
        generation: u64,
        now_ns: i64,
    ) -> Result<usize, HistoryError> {
        let next = Tracked::of(inputs);
        let objects = self.current.diff(&next);
        if objects.is_empty() {
            return Ok(0);
        }
        let mut bytes = Vec::new();
        let changes: Vec<Change> = objects
            .into_iter()
            .map(|object| Change {
                time_ns: now_ns,
                generation,
                object,
            })
            .collect();
        for c in &changes {
            let payload = serde_json::to_vec(c).expect("a change serializes");
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        // One write for the whole generation: a crash keeps all or a torn tail.
        self.file
            .write_all(&bytes)
            .map_err(io("append", &self.path))?;
        self.file.sync_data().map_err(io("sync", &self.path))?;
        let n = changes.len();
        self.changes.extend(changes);
        self.current = next;
        self.last_generation = generation;
        Ok(n)
    }

    /// The cluster as it stood at `time_ns` (every change up to it), and
    /// the generation that was in force; `None` before the first change.
    pub fn inputs_at(&self, time_ns: i64) -> Option<(ClusterInputs, u64)> {
        let upto = self.changes.partition_point(|c| c.time_ns <= time_ns);
        self.replay(upto)
    }

    /// The cluster under `generation` (every change up to it).
    pub fn inputs_at_generation(&self, generation: u64) -> Option<(ClusterInputs, u64)> {
        let upto = self.changes.partition_point(|c| c.generation <= generation);
        self.replay(upto)
    }

    fn replay(&self, upto: usize) -> Option<(ClusterInputs, u64)> {
        let last = self.changes[..upto].last()?;
        let mut t = Tracked::default();
        for c in &self.changes[..upto] {
            t.apply(&c.object);
        }
        Some((t.inputs(), last.generation))
    }

    /// Every generation that changed something, with its time, oldest first.
    pub fn generations(&self) -> Vec<(u64, i64)> {
        let mut out: Vec<(u64, i64)> = Vec::new();
        for c in &self.changes {
            if out.last().is_none_or(|(g, _)| *g != c.generation) {
                out.push((c.generation, c.time_ns));
            }
        }
        out
    }
}

/// The whole records of `data` and the byte length they end at.
fn decode(path: &Path, data: &[u8]) -> Result<(Vec<Change>, usize), HistoryError> {
    let mut at = HEADER;
    let mut out = Vec::new();
    while data.len() - at >= 8 {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            break; // torn: the length was written, not all the payload
        };
        if crc32fast::hash(payload) != crc {
            break; // torn or partly written
        }
        let change = serde_json::from_slice(payload).map_err(|source| HistoryError::Malformed {
            path: path.to_path_buf(),
            offset: at,
            source,
        })?;
        out.push(change);
        at += 8 + len;
    }
    Ok((out, at))
}
