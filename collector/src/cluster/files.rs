//! `--cluster FILE_OR_DIR`: cluster state read once from YAML/JSON files, as
//! `flowgate explain` reads it (offline use, the demo).

use std::path::PathBuf;

use super::state::ClusterInputs;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot load the cluster from {paths:?}: {source}")]
    Load {
        paths: Vec<PathBuf>,
        source: Box<flowgate_policy::LoadError>,
    },
}

/// Loads Namespaces, Pods and NetworkPolicies from files and folders.
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
