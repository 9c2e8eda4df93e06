//! What-if snapshots: the same pods, namespaces and Nodes under a proposed
//! [`ChangeSet`], built from a snapshot alone (the collector keeps
//! snapshots, not the objects they were built from).
//!
//! Only what the change touches is recompiled: the NetworkPolicy part
//! always (it is cheap and per policy), the cluster tiers only when the
//! change brings cluster-scoped policies; otherwise they are shared.

use super::Cluster;
use crate::convert;
use crate::error::BuildError;
use crate::tier;
use crate::whatif::{ChangeSet, WhatIfError};

impl Cluster {
    /// This snapshot with `change` applied, as [`ChangeSet::apply`] applies
    /// it to objects: deletes first, then each proposed object replaces the
    /// same-named one or is added. The result keeps this snapshot's
    /// generation: it is hypothetical, never cached.
    pub fn with_policy_changes(&self, change: &ChangeSet) -> Result<Cluster, WhatIfError> {
        let mut policies = self.policies.clone();
        for key in &change.deletes {
            let at = policies
                .iter()
                .position(|p| p.namespace == key.namespace && p.name == key.name)
                .ok_or_else(|| WhatIfError::NoSuchPolicy {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                })?;
            policies.remove(at);
        }
        for np in &change.policies {
            let info = convert::policy(np).map_err(|problem| {
                WhatIfError::Invalid(BuildError::Policy {
                    namespace: np
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: np.metadata.name.clone().unwrap_or_default(),
                    problem,
                })
            })?;
            match policies
                .iter_mut()
                .find(|p| p.namespace == info.namespace && p.name == info.name)
            {
                Some(slot) => *slot = info,
                None => policies.push(info),
            }
        }
        let mut c = Cluster {
            generation: self.generation,
            namespaces: self.namespaces.clone(),
            ns_index: self.ns_index.clone(),
            pods: self.pods.clone(),
            pod_ns: self.pod_ns.clone(),
            pod_index: self.pod_index.clone(),
            ip_index: self.ip_index.clone(),
            policies: Vec::new(),
            policy_ns: Vec::new(),
            compiled: Vec::new(),
            pod_policies: Vec::new(),
            selected: Vec::new(),
            no_policies: self.no_policies.clone(),
            tiers: self.tiers.clone(),
        };
        for info in policies {
            // A policy may name a namespace without pods; the tiers treat
            // namespace indexes they never saw as non-members, which is
            // right for a namespace without pods.
            let ns = c.ensure_namespace(&info.namespace);
            c.policy_ns.push(ns);
            c.policies.push(info);
        }
        c.compile();
        // Same pods in the same order: their tier walks carry over, unless
        // the tiers are recompiled below.
        for (to, from) in c.pod_policies.iter_mut().zip(&self.pod_policies) {
            to.walk = from.walk;
        }
        if !change.cluster_policies.is_empty() {
            let (nodes, mut tier_policies) = self.tier_inputs();
            for o in &change.cluster_policies {
                let info = tier::cluster_policy(o).map_err(|problem| {
                    WhatIfError::Invalid(BuildError::ClusterPolicy {
                        kind: o.kind(),
                        name: o.name().to_string(),
                        problem,
                    })
                })?;
                match tier_policies
                    .iter_mut()
                    .find(|p| p.kind == info.kind && p.name == info.name)
                {
                    Some(slot) => *slot = info,
                    None => tier_policies.push(info),
                }
            }
            c.compile_tiers(nodes, tier_policies);
        }
        Ok(c)
    }
}
