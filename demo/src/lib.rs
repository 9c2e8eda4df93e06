//! flowgate demo: a cluster built from network namespaces, policies enforced
//! with nftables.
//!
//! Data flows: a [`scenario::Scenario`] file (namespaces, pods, real
//! NetworkPolicy YAML, traffic) is placed ([`scenario::Scenario::place`]:
//! addresses from the pod CIDR, the cluster rendered as Kubernetes YAML and
//! compiled by `flowgate_policy`), built in the kernel
//! ([`topology::Topology`]: a netns per pod, routed through a node netns),
//! enforced by nftables rules compiled from the same engine model
//! ([`nft::compile`]), and exercised by [`traffic`] (servers in every pod and
//! external address, clients generating TCP, UDP and ICMP); [`run::Demo`]
//! adds the real collector and probe and keeps traffic flowing, and applies
//! the scenario's policy `changes` on time ([`changes::Schedule`]).

pub mod changes;
mod error;
pub mod nft;
pub mod run;
pub mod scenario;
pub mod topology;
pub mod traffic;
pub mod trust;

pub use error::DemoError;
