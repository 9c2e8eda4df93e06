//! IP → pod, in time: a flow is joined with the pod that held its address
//! when the flow was seen, even if that pod is gone or the address was given
//! to another pod since.
//!
//! Each address has a short history of intervals `[from, until)`. The state
//! writer feeds the index the complete set of current holders after every
//! change ([`IpIndex::observe`]); an address whose holder disappeared or
//! changed gets its interval closed (a tombstone), kept for the retention
//! window so that late flows still find the pod.

use std::net::IpAddr;
use std::sync::Arc;

use flowgate_policy::{Cluster, PodId};
use rustc_hash::FxHashMap;

/// Who a pod is, as stored with every flow it took part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    /// Kubernetes UID when known: tells a recreated pod from the old one.
    pub uid: Option<String>,
    /// Labels as a JSON object.
    pub labels_json: String,
    pub workload_kind: Option<String>,
    pub workload: Option<String>,
    pub node: Option<String>,
}

/// One holder of an address over `[from_ns, until_ns)`.
#[derive(Debug, Clone)]
pub struct Interval {
    pub from_ns: i64,
    /// `i64::MAX` while the pod still holds the address.
    pub until_ns: i64,
    pub identity: Arc<PodIdentity>,
    /// The pod in the snapshot this index belongs to; `None` once it is gone.
    pub pod: Option<PodId>,
}

/// A current holder of an address, as the state writer sees it now.
#[derive(Debug, Clone)]
pub struct Holder {
    pub ip: IpAddr,
    pub identity: Arc<PodIdentity>,
    /// When the pod started holding it, if known (creation time); else the
    /// observation time is used.
    pub since_ns: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct IpIndex {
    by_ip: FxHashMap<IpAddr, Vec<Interval>>,
}

impl IpIndex {
    /// Folds in the complete set of current holders observed at `now_ns`,
    /// closes intervals of holders that are gone, drops tombstones closed
    /// before `now_ns - retention_ns`, and re-resolves pods against `cluster`.
    pub fn observe(
        &mut self,
        now_ns: i64,
        holders: &[Holder],
        retention_ns: i64,
        cluster: &Cluster,
    ) {
        let mut current: FxHashMap<IpAddr, &Holder> = FxHashMap::default();
        for h in holders {
            current.insert(h.ip, h);
        }
        // Close intervals whose holder is gone or changed.
        for (ip, history) in &mut self.by_ip {
            if let Some(open) = history.last_mut().filter(|i| i.until_ns == i64::MAX) {
                let still = current.get(ip).is_some_and(|h| h.identity == open.identity);
                if !still {
                    open.until_ns = now_ns.max(open.from_ns);
                }
            }
        }
        // Open intervals for new holders.
        for h in holders {
            let history = self.by_ip.entry(h.ip).or_default();
            let open = history.last().is_some_and(|i| i.until_ns == i64::MAX);
            if open {
                continue;
            }
            // A holder never starts before the previous one ended.
            let floor = history.last().map_or(i64::MIN, |i| i.until_ns);
            let from = h.since_ns.unwrap_or(now_ns).min(now_ns).max(floor);
            history.push(Interval {
                from_ns: from,
                until_ns: i64::MAX,
                identity: h.identity.clone(),
                pod: None,
            });
        }
        // Forget tombstones past retention, and addresses with no history left.
        let horizon = now_ns.saturating_sub(retention_ns);
        self.by_ip.retain(|_, history| {
            history.retain(|i| i.until_ns >= horizon);
            !history.is_empty()
        });
        for history in self.by_ip.values_mut() {
            for i in history.iter_mut() {
                i.pod = cluster.find_pod(&i.identity.namespace, &i.identity.name);
            }
        }
    }

    /// The holder of `ip` at `time_ns`, if any pod held it then.
    pub fn lookup(&self, ip: IpAddr, time_ns: i64) -> Option<&Interval> {
        let history = self.by_ip.get(&ip)?;
        history
            .iter()
            .rev()
            .find(|i| i.from_ns <= time_ns && time_ns < i.until_ns)
    }

    /// Number of addresses with a history.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Arc<PodIdentity> {
        Arc::new(PodIdentity {
            namespace: "ns".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            labels_json: "{}".into(),
            workload_kind: None,
            workload: None,
            node: None,
        })
    }

    fn holder(ip: &str, name: &str, since: Option<i64>) -> Holder {
        Holder {
            ip: ip.parse().unwrap(),
            identity: id(name),
            since_ns: since,
        }
    }

    fn empty() -> Cluster {
        Cluster::build(&flowgate_policy::ClusterObjects::default(), 1).unwrap()
    }

    fn who(index: &IpIndex, ip: &str, t: i64) -> Option<String> {
        index
            .lookup(ip.parse().unwrap(), t)
            .map(|i| i.identity.name.clone())
    }

    #[test]
    fn a_reused_address_is_joined_with_the_pod_that_held_it_at_the_time() {
        let c = empty();
        let mut index = IpIndex::default();
        index.observe(100, &[holder("10.0.0.1", "a", Some(50))], 1_000, &c);
        // a is deleted at 200, b gets the address at 300.
        index.observe(200, &[], 1_000, &c);
        index.observe(300, &[holder("10.0.0.1", "b", Some(290))], 1_000, &c);
        assert_eq!(who(&index, "10.0.0.1", 40), None);
        assert_eq!(who(&index, "10.0.0.1", 60).as_deref(), Some("a"));
        assert_eq!(who(&index, "10.0.0.1", 199).as_deref(), Some("a"));
        assert_eq!(who(&index, "10.0.0.1", 250), None);
        assert_eq!(who(&index, "10.0.0.1", 295).as_deref(), Some("b"));
        assert_eq!(who(&index, "10.0.0.1", 10_000).as_deref(), Some("b"));
    }

    #[test]
    fn a_new_holder_never_starts_before_the_old_one_ended() {
        let c = empty();
        let mut index = IpIndex::default();
        index.observe(100, &[holder("10.0.0.1", "a", None)], 1_000, &c);
        // b claims a creation time before a was seen to be gone.
        index.observe(200, &[holder("10.0.0.1", "b", Some(150))], 1_000, &c);
        assert_eq!(who(&index, "10.0.0.1", 150).as_deref(), Some("a"));
        assert_eq!(who(&index, "10.0.0.1", 200).as_deref(), Some("b"));
    }

    #[test]
    fn tombstones_are_forgotten_after_the_retention_window() {
        let c = empty();
        let mut index = IpIndex::default();
        index.observe(100, &[holder("10.0.0.1", "a", Some(0))], 1_000, &c);
        index.observe(200, &[], 1_000, &c);
        assert_eq!(who(&index, "10.0.0.1", 150).as_deref(), Some("a"));
        index.observe(1_100, &[], 1_000, &c);
        assert_eq!(who(&index, "10.0.0.1", 150).as_deref(), Some("a"));
        index.observe(1_201, &[], 1_000, &c);
        assert_eq!(who(&index, "10.0.0.1", 150), None);
        assert!(index.is_empty());
    }

    #[test]
    fn a_relabelled_pod_opens_a_new_interval() {
        let c = empty();
        let mut index = IpIndex::default();
        index.observe(100, &[holder("10.0.0.1", "a", Some(0))], 1_000, &c);
        let mut relabelled = holder("10.0.0.1", "a", Some(0));
        Arc::make_mut(&mut relabelled.identity).labels_json = r#"{"v":"2"}"#.into();
        index.observe(200, &[relabelled], 1_000, &c);
        assert_eq!(
            index
                .lookup("10.0.0.1".parse().unwrap(), 150)
                .unwrap()
                .identity
                .labels_json,
            "{}"
        );
        assert_eq!(
            index
                .lookup("10.0.0.1".parse().unwrap(), 250)
                .unwrap()
                .identity
                .labels_json,
            r#"{"v":"2"}"#
        );
    }
}
