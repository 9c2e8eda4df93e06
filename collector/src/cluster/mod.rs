//! Cluster state: where pods, namespaces and policies come from (the
//! Kubernetes API in [`watch`] and [`crds`], or YAML files in [`files`]), and how they
//! become the snapshot flows are judged against ([`state`], [`ip_index`]).

pub mod crds;
pub mod files;
pub mod history;
pub mod ip_index;
pub mod state;
pub mod watch;

pub use ip_index::{IpIndex, PodIdentity};
pub use state::{ClusterInputs, ClusterState, Snapshot, StateWriter};
