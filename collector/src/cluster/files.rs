//! `--cluster FILE_OR_DIR`: cluster state read from YAML/JSON files, as
//! `flowgate explain` reads them (offline use, the demo), and reloaded when
//! the files change, so that editing a policy file acts like `kubectl apply`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::state::{ClusterInputs, StateWriter};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot load the cluster from {paths:?}")]
    Load {
        paths: Vec<PathBuf>,
        #[source]
        source: Box<flowgate_policy::LoadError>,
    },
}

/// Loads Namespaces, Pods, Nodes, NetworkPolicies and the cluster tiers
/// (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)
/// from files and folders.
pub fn load(paths: &[PathBuf]) -> Result<ClusterInputs, FilesError> {
    let objects = flowgate_policy::load_paths(paths).map_err(|source| FilesError::Load {
        paths: paths.to_vec(),
        source: Box::new(source),
    })?;
    for ignored in &objects.ignored {
        tracing::debug!(object = %ignored, "ignoring an object of another kind");
    }
    Ok(objects.into())
}

/// What the files look like from outside: every cluster file with its
/// modification time and size. Polling this is portable (no inotify limits,
/// works on network and container-mounted volumes) and cheap for the few
/// files a cluster description has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl Signature {
    pub fn of(paths: &[PathBuf]) -> Signature {
        let mut out = Vec::new();
        for p in paths {
            walk(p, &mut out);
        }
        out.sort();
        Signature(out)
    }
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
    // Unreadable entries count as absent: the reload then reports why.
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let yaml = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if yaml || p.is_dir() {
                walk(&p, out);
            }
        }
    } else {
        out.push((path.to_path_buf(), meta.modified().ok(), meta.len()));
    }
}

/// Rebuilds the state whenever the files' [`Signature`] changes, checking
/// every `every`. A file that no longer loads (a half-saved edit, bad YAML)
/// is logged and counted, and the state in force stays until a good edit.
pub async fn watch(
    paths: Vec<PathBuf>,
    mut writer: StateWriter,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut seen = Signature::of(&paths);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Signature::of(&paths);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&paths) {
            Ok(inputs) => {
                tracing::info!(
                    policies = inputs.policies.len(),
                    pods = inputs.pods.len(),
                    "cluster files changed: reloaded"
                );
                writer.rebuild(&inputs, crate::now_ns());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster files changed but cannot be loaded; keeping the previous state");
                metrics.cluster_file_reloads_failed.inc();
            }
        }
    }
}
