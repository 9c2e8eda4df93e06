//! The NetworkPolicy engine: for any connection in a cluster, whether the
//! `networking.k8s.io/v1` NetworkPolicies in force allow it, which policies
//! and rules allowed it, and for a denial, the nearest miss of each policy.
//!
//! Data flows one way: Kubernetes objects ([`ClusterObjects`], k8s-openapi
//! types, read from YAML or from the API) are compiled into an immutable,
//! indexed [`Cluster`] snapshot; [`Cluster::verdict`] answers fast (no
//! strings), [`Cluster::explain`] answers for people, and [`VerdictCache`]
//! remembers verdicts per snapshot generation for the collector's hot path.
//! [`Cluster::with_policy_changes`] builds a what-if snapshot under a
//! proposed change, and [`Cluster::suggest`] proposes verified changes that
//! admit a denied connection.
//! The crate does no I/O (the optional `fs` feature adds [`load_paths`]).
//!
//! Semantics, as the Kubernetes API defines them:
//! - A pod is isolated for a direction only if a policy in its namespace
//!   selects it with that policy type (`policyTypes` omitted: Ingress, plus
//!   Egress when the policy has egress rules). Allowed traffic is the union
//!   over the isolating policies' rules.
//! - Pod-to-pod traffic needs egress allowed at the source and ingress at the
//!   destination; an address outside the cluster is checked on the pod side
//!   only.
//! - hostNetwork pods are node traffic (the API leaves this to the network
//!   plugin; we follow the common iptables/eBPF CNIs): no policy selects
//!   them, and peers match them only through `ipBlock`, by address.
//! - `ipBlock` matches any address, pod addresses included (as the upstream
//!   e2e tests expect).
//! - Named ports resolve against the destination pod's container ports, by
//!   name and protocol, for ingress and egress alike; a named port never
//!   matches a destination outside the cluster.
//! - Traffic a pod sends to itself, and traffic from the node a pod runs on
//!   to that pod, is always allowed: NetworkPolicy cannot block it.

mod advise;
mod cache;
mod cluster;
mod convert;
pub mod crd;
mod error;
mod explain;
mod explain_tiers;
mod lint;
mod model;
mod selector;
mod suggest;
mod tier;
mod whatif;
mod yaml;

pub use advise::{Advice, advise};
pub use cache::{CacheStats, VerdictCache};
pub use cluster::{Cluster, DirectionVerdict, Endpoint, Exemption, Verdict};
#[cfg(feature = "fs")]
pub use error::LoadError;
pub use error::{BuildError, ParseError};
pub use explain::{
    DirectionExplanation, EndpointView, Explanation, PolicyMiss, PolicyRef, RuleMiss, RuleRef,
};
pub use explain_tiers::{StepOutcome, TierRuleMiss, TierRuleRef, TierStep};
pub use lint::{Finding, LintRule, Severity, has_errors, lint, rule_never_hit};
pub use model::{
    Direction, NamedPort, NamespaceInfo, Peer, PodId, PodInfo, PolicyId, PolicyInfo, PortMatch,
    PortSpec, Protocol, Rule, RuleId, UnknownProtocol, Workload,
};
pub use selector::{Labels, Requirement, Selector};
pub use suggest::{NoSuggestion, OtherConnection, SuggestedEdit, Suggestion, Suggestions};
pub use tier::{
    ClusterPolicyId, ClusterPolicyInfo, ClusterPolicyKind, NamespaceMatch, NodeInfo, PolicyTier,
    Tier, TierAction, TierPeer, TierPort, TierRule, TierRuleId, TierSubject, UnknownTier,
};
pub use whatif::{
    ChangeSet, Denial, ObservedConnection, ObservedEndpoint, ObservedPod, ObservedPods, PolicyKey,
    VerdictChange, WhatIf, WhatIfError, judge, what_if,
};
#[cfg(feature = "fs")]
pub use yaml::load_paths;
pub use yaml::{ClusterObjects, MAX_LABELS, MAX_YAML_BYTES};
