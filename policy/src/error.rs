//! Errors: reading cluster YAML, and objects the API would reject.

/// A YAML (or JSON) document could not be read as a Kubernetes object.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{source_name}: document {document}: invalid YAML: {message}")]
    Yaml {
        source_name: String,
        document: usize,
        message: String,
    },
    #[error(
        "{source_name}: {bytes} bytes of YAML, the limit is {limit} (split the cluster over several files)"
    )]
    TooLarge {
        source_name: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{source_name}: document {document}: not a Kubernetes object (it has no `kind`)")]
    NotAnObject {
        source_name: String,
        document: usize,
    },
    #[error("{source_name}: document {document}: {kind} `{name}` is malformed: {message}")]
    Object {
        source_name: String,
        document: usize,
        kind: String,
        name: String,
        message: String,
    },
}

/// An object the Kubernetes API would reject, so its meaning is undefined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("NetworkPolicy {namespace}/{name}: {problem}")]
    Policy {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("Pod {namespace}/{name}: {problem}")]
    Pod {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("Node {name}: {problem}")]
    Node { name: String, problem: String },
    /// An AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy.
    #[error("{kind} {name}: {problem}")]
    ClusterPolicy {
        kind: &'static str,
        name: String,
        problem: String,
    },
}

/// Reading cluster files from disk failed.
#[cfg(feature = "fs")]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no .yaml, .yml or .json files found")]
    Empty { path: std::path::PathBuf },
    #[error(transparent)]
    Parse(#[from] ParseError),
}
