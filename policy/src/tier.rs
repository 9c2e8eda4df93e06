//! The engine's compiled form of the cluster-scoped policy tiers, and the
//! conversion from both API versions ([`crate::crd`]) into it, rejecting what
//! the API server's schema and CEL rules would reject.
//!
//! v1alpha1 AdminNetworkPolicy becomes an Admin-tier policy (`Allow` is
//! `Accept`), v1alpha1 BaselineAdminNetworkPolicy a Baseline-tier policy
//! without priority, and v1alpha2 ClusterNetworkPolicy whatever its
//! `spec.tier` says: from here on the versions are one model.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use crate::convert::selector;
use crate::crd::{
    ClusterPolicyObject, EgressPeer, IngressPeer, NamespacesPeer, PodsPeer, RelatedNamespaces,
    Subject as CrdSubject, V1Alpha1Port, V1Alpha2Protocol,
};
use crate::model::{Direction, Protocol};
use crate::selector::{Labels, Selector};

/// Who decided one direction of a connection (the flow model's `Tier`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Admin,
    #[serde(rename = "networkpolicy")]
    NetworkPolicy,
    Baseline,
    /// Nothing isolates: allowed.
    Default,
    /// The endpoint is not a pod policies can select.
    NotApplicable,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::NetworkPolicy => "networkpolicy",
            Tier::Baseline => "baseline",
            Tier::Default => "default",
            Tier::NotApplicable => "not_applicable",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a tier name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier `{0}` (expected admin, networkpolicy, baseline, default or not_applicable)")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Tier::Admin),
            "networkpolicy" => Ok(Tier::NetworkPolicy),
            "baseline" => Ok(Tier::Baseline),
            "default" => Ok(Tier::Default),
            "not_applicable" => Ok(Tier::NotApplicable),
            _ => Err(UnknownTier(s.to_string())),
        }
    }
}

/// The tier a cluster-scoped policy belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PolicyTier {
    Admin,
    Baseline,
}

impl PolicyTier {
    pub fn tier(self) -> Tier {
        match self {
            PolicyTier::Admin => Tier::Admin,
            PolicyTier::Baseline => Tier::Baseline,
        }
    }
}

/// The kind a cluster-scoped policy was written as.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, PartialOrd, Ord)]
pub enum ClusterPolicyKind {
    /// v1alpha2; sorts first among equal priorities (see the README).
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl ClusterPolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterPolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            ClusterPolicyKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            ClusterPolicyKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }
}

/// What a matching rule does. v1alpha1's `Allow` is `Accept`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
pub enum TierAction {
    Accept,
    Deny,
    /// Hand the connection to the next tier.
    Pass,
}

/// Index of a cluster policy in a [`crate::Cluster`], in evaluation order;
/// valid for that snapshot only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ClusterPolicyId(pub u32);

/// A rule of a cluster policy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TierRuleId {
    pub policy: ClusterPolicyId,
    pub direction: Direction,
    pub index: u32,
}

/// Namespaces of a peer: by selector, or related to the subject's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceMatch {
    Selector(Selector),
    /// Namespaces having every listed label with the subject namespace's value.
    SameLabels(Vec<String>),
    /// Namespaces having every listed label, each with a value different
    /// from the subject namespace's.
    NotSameLabels(Vec<String>),
}

/// One entry of a rule's `from` or `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierPeer {
    Namespaces(NamespaceMatch),
    Pods {
        namespaces: NamespaceMatch,
        pods: Selector,
    },
    /// Nodes by label; matches their `status.addresses`.
    Nodes(Selector),
    /// Any address in these CIDRs, pods' included (as the API says).
    Networks(Vec<IpNet>),
    /// Egress to these DNS names. Judged against the name the connection's
    /// destination was resolved from when flowgate saw the DNS answer;
    /// without one such a peer cannot match, and explanations say it could
    /// not be evaluated.
    DomainNames(Vec<DomainName>),
}

/// One `domainNames` entry: an exact name, or `*.suffix` for any name of
/// one or more labels below `suffix` (never `suffix` itself), as the API
/// defines it. Compared without case and without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainName {
    /// As written in the policy, for explanations.
    pub text: String,
    /// Lowercased, trailing dot and `*.` removed.
    name: String,
    wildcard: bool,
}

impl DomainName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && l.as_bytes()[0].is_ascii_alphanumeric()
                && l.as_bytes()[l.len() - 1].is_ascii_alphanumeric()
        };
        // The CRD's pattern: at least two labels, `*` only as a whole
        // leading label.
        if name.split('.').count() < 2 || !name.split('.').all(label_ok) {
            return Err(format!(
                "domain name `{text}` is not a DNS name of two or more labels, optionally \
                 starting with `*.` (e.g. `api.example.com`, `*.example.com`)"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            name,
            wildcard,
        })
    }

    /// Whether a queried name (as seen in a DNS answer) is this entry's.
    pub fn matches(&self, queried: &str) -> bool {
        let q = queried.trim_end_matches('.');
        if self.wildcard {
            q.len() > self.name.len() + 1
                && q.as_bytes()[q.len() - self.name.len() - 1] == b'.'
                && q[q.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
        } else {
            q.eq_ignore_ascii_case(&self.name)
        }
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One port clause of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierPort {
    Number {
        protocol: Protocol,
        port: u16,
    },
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// A container port name of the destination pod, with that port's protocol.
    Named(String),
}

impl fmt::Display for TierPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierPort::Number { protocol, port } => write!(f, "{protocol} {port}"),
            TierPort::Range {
                protocol,
                start,
                end,
            } => write!(f, "{protocol} {start}-{end}"),
            TierPort::Named(n) => write!(f, "named port `{n}`"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierRule {
    /// The rule's `name`, if it has one.
    pub name: Option<String>,
    pub action: TierAction,
    pub peers: Vec<TierPeer>,
    /// `None`: every port and protocol.
    pub ports: Option<Vec<TierPort>>,
}

/// The pods a cluster policy applies to (never hostNetwork pods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierSubject {
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

/// A compiled cluster-scoped policy.
#[derive(Clone, Debug)]
pub struct ClusterPolicyInfo {
    pub kind: ClusterPolicyKind,
    pub name: String,
    pub tier: PolicyTier,
    /// `None` for a BaselineAdminNetworkPolicy, which has none.
    pub priority: Option<i32>,
    pub subject: TierSubject,
    pub ingress: Vec<TierRule>,
    pub egress: Vec<TierRule>,
    /// The object as read, to render it back.
    pub object: ClusterPolicyObject,
}

impl ClusterPolicyInfo {
    pub fn rules(&self, direction: Direction) -> &[TierRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// How a rule is named in `decided_by`: its name, else its index.
    pub fn rule_label(&self, direction: Direction, index: u32) -> String {
        match self
            .rules(direction)
            .get(index as usize)
            .and_then(|r| r.name.as_deref())
        {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => index.to_string(),
        }
    }

    /// `tier/policy/direction/rule`, as in the flows' `decided_by` column.
    pub fn decided_by_key(&self, direction: Direction, index: u32) -> String {
        format!(
            "{}/{}/{direction}/{}",
            self.tier.tier(),
            self.name,
            self.rule_label(direction, index)
        )
    }

    /// Sort key of the evaluation order within a tier: ascending priority
    /// (a BaselineAdminNetworkPolicy, which has none, after every
    /// prioritised Baseline policy), then kind, then name.
    pub(crate) fn order_key(&self) -> (PolicyTier, i64, ClusterPolicyKind, String) {
        (
            self.tier,
            self.priority.map_or(i64::MAX, i64::from),
            self.kind,
            self.name.clone(),
        )
    }
}

/// A Node: its labels and addresses, for `nodes` peers and host-network pods.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub addresses: Vec<IpAddr>,
}

pub(crate) fn node(n: &Node) -> Result<NodeInfo, String> {
    let name = n.metadata.name.clone().ok_or("metadata.name is missing")?;
    let mut addresses = Vec::new();
    for a in n.status.iter().flat_map(|s| s.addresses.iter().flatten()) {
        // Hostname (and other non-IP) addresses name the node, they are not
        // where it is reached.
        match IpAddr::from_str(&a.address) {
            Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
            Ok(_) => {}
            Err(_) if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") => {
                return Err(format!(
                    "{} address `{}` is not an IP address",
                    a.type_, a.address
                ));
            }
            Err(_) => {}
        }
    }
    Ok(NodeInfo {
        name,
        labels: n.metadata.labels.clone().unwrap_or_default(),
        addresses,
    })
}

/// Converts a cluster policy. Errors are strings; the caller adds the
/// policy's kind and name.
pub(crate) fn cluster_policy(o: &ClusterPolicyObject) -> Result<ClusterPolicyInfo, String> {
    let name = o
        .metadata()
        .name
        .clone()
        .ok_or("metadata.name is missing")?;
    let (tier, priority, subject, (ingress, egress)) = match o {
        ClusterPolicyObject::Admin(p) => (
            PolicyTier::Admin,
            Some(priority(p.spec.priority)?),
            &p.spec.subject,
            rules_v1alpha1(&p.spec.ingress, &p.spec.egress, PolicyTier::Admin)?,
        ),
        ClusterPolicyObject::Baseline(p) => (
            PolicyTier::Baseline,
            None,
            &p.spec.subject,
            rules_v1alpha1(&p.spec.ingress, &p.spec.egress, PolicyTier::Baseline)?,
        ),
        ClusterPolicyObject::Cluster(p) => {
            let tier = match p.spec.tier.as_str() {
                "Admin" => PolicyTier::Admin,
                "Baseline" => PolicyTier::Baseline,
                other => {
                    return Err(format!(
                        "spec.tier `{other}` is not a tier (expected Admin or Baseline)"
                    ));
                }
            };
            (
                tier,
                Some(priority(p.spec.priority)?),
                &p.spec.subject,
                rules_v1alpha2(&p.spec.ingress, &p.spec.egress)?,
            )
        }
    };
    let kind = match o {
        ClusterPolicyObject::Admin(_) => ClusterPolicyKind::AdminNetworkPolicy,
        ClusterPolicyObject::Baseline(_) => ClusterPolicyKind::BaselineAdminNetworkPolicy,
        ClusterPolicyObject::Cluster(_) => ClusterPolicyKind::ClusterNetworkPolicy,
    };
    Ok(ClusterPolicyInfo {
        kind,
        name,
        tier,
        priority,
        subject: subject_of(subject)?,
        ingress,
        egress,
        object: o.clone(),
    })
}

fn priority(p: i32) -> Result<i32, String> {
    if (0..=1000).contains(&p) {
        Ok(p)
    } else {
        Err(format!("spec.priority {p} is out of range 0-1000"))
    }
}

fn subject_of(s: &CrdSubject) -> Result<TierSubject, String> {
    let ctx = |e: String| format!("spec.subject: {e}");
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => Ok(TierSubject::Namespaces(selector(ns).map_err(ctx)?)),
        (None, Some(p)) => {
            let namespaces = match (&p.namespace_selector, &p.namespaces) {
                (Some(sel), None) => selector(sel).map_err(ctx)?,
                (None, None) => Selector::everything(),
                _ => {
                    return Err(ctx(
                        "pods takes `namespaceSelector` (and `podSelector`)".into()
                    ));
                }
            };
            Ok(TierSubject::Pods {
                namespaces,
                pods: selector(&p.pod_selector).map_err(ctx)?,
            })
        }
        _ => Err(ctx(
            "exactly one of `namespaces` and `pods` must be set".into()
        )),
    }
}

fn action(a: &str, tier: PolicyTier, version: &str) -> Result<TierAction, String> {
    match (a, tier, version) {
        ("Allow", _, "v1alpha1") | ("Accept", _, "v1alpha2") => Ok(TierAction::Accept),
        ("Deny", ..) => Ok(TierAction::Deny),
        ("Pass", PolicyTier::Admin, _) | ("Pass", _, "v1alpha2") => Ok(TierAction::Pass),
        _ => Err(format!(
            "action `{a}` is not valid here (expected {})",
            match (tier, version) {
                (PolicyTier::Admin, "v1alpha1") => "Allow, Deny or Pass",
                (PolicyTier::Baseline, "v1alpha1") => "Allow or Deny",
                _ => "Accept, Deny or Pass",
            }
        )),
    }
}

type Rules = (Vec<TierRule>, Vec<TierRule>);

fn rules_v1alpha1(
    ingress: &[crate::crd::V1Alpha1IngressRule],
    egress: &[crate::crd::V1Alpha1EgressRule],
    tier: PolicyTier,
) -> Result<Rules, String> {
    let mut i = Vec::new();
    for (n, r) in ingress.iter().enumerate() {
        let ctx = |e: String| format!("spec.ingress[{n}]: {e}");
        i.push(TierRule {
            name: r.name.clone(),
            action: action(&r.action, tier, "v1alpha1").map_err(ctx)?,
            peers: ingress_peers(&r.from).map_err(ctx)?,
            ports: ports_v1alpha1(r.ports.as_deref()).map_err(ctx)?,
        });
    }
    let mut e = Vec::new();
    for (n, r) in egress.iter().enumerate() {
        let ctx = |e: String| format!("spec.egress[{n}]: {e}");
        let rule = TierRule {
            name: r.name.clone(),
            action: action(&r.action, tier, "v1alpha1").map_err(ctx)?,
            peers: egress_peers(&r.to).map_err(ctx)?,
            ports: ports_v1alpha1(r.ports.as_deref()).map_err(ctx)?,
        };
        check_egress_rule(&rule).map_err(ctx)?;
        e.push(rule);
    }
    Ok((i, e))
}

fn rules_v1alpha2(
    ingress: &[crate::crd::V1Alpha2IngressRule],
    egress: &[crate::crd::V1Alpha2EgressRule],
) -> Result<Rules, String> {
    let mut i = Vec::new();
    for (n, r) in ingress.iter().enumerate() {
        let ctx = |e: String| format!("spec.ingress[{n}]: {e}");
        i.push(TierRule {
            name: r.name.clone(),
            action: action(&r.action, PolicyTier::Admin, "v1alpha2").map_err(ctx)?,
            peers: ingress_peers(&r.from).map_err(ctx)?,
            ports: ports_v1alpha2(r.protocols.as_deref()).map_err(ctx)?,
        });
    }
    let mut e = Vec::new();
    for (n, r) in egress.iter().enumerate() {
        let ctx = |e: String| format!("spec.egress[{n}]: {e}");
        let rule = TierRule {
            name: r.name.clone(),
            action: action(&r.action, PolicyTier::Admin, "v1alpha2").map_err(ctx)?,
            peers: egress_peers(&r.to).map_err(ctx)?,
            ports: ports_v1alpha2(r.protocols.as_deref()).map_err(ctx)?,
        };
        check_egress_rule(&rule).map_err(ctx)?;
        e.push(rule);
    }
    Ok((i, e))
}

/// The CRDs' CEL rules: no named port with nodes/networks/domainNames
/// peers (they have no container ports), domainNames only in Accept rules.
fn check_egress_rule(r: &TierRule) -> Result<(), String> {
    let named = r
        .ports
        .iter()
        .flatten()
        .any(|p| matches!(p, TierPort::Named(_)));
    let addressed = r.peers.iter().any(|p| {
        matches!(
            p,
            TierPeer::Nodes(_) | TierPeer::Networks(_) | TierPeer::DomainNames(_)
        )
    });
    if named && addressed {
        return Err(
            "a named port cannot be used with nodes, networks or domainNames peers \
             (they have no named ports)"
                .into(),
        );
    }
    let domains = r
        .peers
        .iter()
        .any(|p| matches!(p, TierPeer::DomainNames(_)));
    if domains && r.action != TierAction::Accept {
        return Err("domainNames peers are only allowed in Accept/Allow rules".into());
    }
    Ok(())
}

fn peers_nonempty<T>(peers: &[T]) -> Result<(), String> {
    if peers.is_empty() {
        return Err("a rule needs at least one peer".into());
    }
    Ok(())
}

fn ingress_peers(peers: &[IngressPeer]) -> Result<Vec<TierPeer>, String> {
    peers_nonempty(peers)?;
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ctx = |e: String| format!("peer {i}: {e}");
            match (&p.namespaces, &p.pods) {
                (Some(ns), None) => Ok(TierPeer::Namespaces(namespaces_peer(ns).map_err(ctx)?)),
                (None, Some(pods)) => pods_peer(pods).map_err(ctx),
                _ => Err(ctx(
                    "exactly one of `namespaces` and `pods` must be set".into()
                )),
            }
        })
        .collect()
}

fn egress_peers(peers: &[EgressPeer]) -> Result<Vec<TierPeer>, String> {
    peers_nonempty(peers)?;
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ctx = |e: String| format!("peer {i}: {e}");
            let set = usize::from(p.namespaces.is_some())
                + usize::from(p.pods.is_some())
                + usize::from(p.nodes.is_some())
                + usize::from(p.networks.is_some())
                + usize::from(p.domain_names.is_some());
            if set != 1 {
                return Err(ctx("exactly one of `namespaces`, `pods`, `nodes`, \
                     `networks` and `domainNames` must be set"
                    .into()));
            }
            if let Some(ns) = &p.namespaces {
                return Ok(TierPeer::Namespaces(namespaces_peer(ns).map_err(ctx)?));
            }
            if let Some(pods) = &p.pods {
                return pods_peer(pods).map_err(ctx);
            }
            if let Some(nodes) = &p.nodes {
                return Ok(TierPeer::Nodes(selector(nodes).map_err(ctx)?));
            }
            if let Some(nets) = &p.networks {
                if nets.is_empty() {
                    return Err(ctx("`networks` needs at least one CIDR".into()));
                }
                let nets = nets
                    .iter()
                    .map(|n| {
                        IpNet::from_str(n).map(|n| n.trunc()).map_err(|_| {
                            ctx(format!(
                                "network `{n}` is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(TierPeer::Networks(nets));
            }
            let names = p.domain_names.as_deref().unwrap_or_default();
            if names.is_empty() {
                return Err(ctx("`domainNames` needs at least one name".into()));
            }
            let names = names
                .iter()
                .map(|n| DomainName::parse(n).map_err(&ctx))
                .collect::<Result<_, _>>()?;
            Ok(TierPeer::DomainNames(names))
        })
        .collect()
}

fn namespaces_peer(p: &NamespacesPeer) -> Result<NamespaceMatch, String> {
    match p {
        NamespacesPeer::Selector(s) => Ok(NamespaceMatch::Selector(selector(s)?)),
        NamespacesPeer::Related(r) => related(r),
    }
}

fn related(r: &RelatedNamespaces) -> Result<NamespaceMatch, String> {
    match (&r.namespace_selector, &r.same_labels, &r.not_same_labels) {
        // `namespaces: {}`: the empty selector, every namespace.
        (None, None, None) => Ok(NamespaceMatch::Selector(Selector::everything())),
        (Some(s), None, None) => Ok(NamespaceMatch::Selector(selector(s)?)),
        (None, Some(l), None) if !l.is_empty() => Ok(NamespaceMatch::SameLabels(l.clone())),
        (None, None, Some(l)) if !l.is_empty() => Ok(NamespaceMatch::NotSameLabels(l.clone())),
        (None, Some(_), None) | (None, None, Some(_)) => {
            Err("sameLabels/notSameLabels needs at least one label key".into())
        }
        _ => Err(
            "namespaces takes exactly one of namespaceSelector, sameLabels and notSameLabels"
                .into(),
        ),
    }
}

fn pods_peer(p: &PodsPeer) -> Result<TierPeer, String> {
    let namespaces = match (&p.namespace_selector, &p.namespaces) {
        (Some(s), None) => NamespaceMatch::Selector(selector(s)?),
        (None, Some(r)) => related(r)?,
        (None, None) => NamespaceMatch::Selector(Selector::everything()),
        (Some(_), Some(_)) => {
            return Err("pods takes `namespaceSelector` or `namespaces`, not both".into());
        }
    };
    Ok(TierPeer::Pods {
        namespaces,
        pods: selector(&p.pod_selector)?,
    })
}

fn port_number(n: i32, what: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} {n} is out of range 1-65535"))
}

fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(format!(
            "unsupported protocol `{other}` (expected TCP, UDP or SCTP)"
        )),
    }
}

fn range(protocol: Protocol, start: i32, end: i32, strict: bool) -> Result<TierPort, String> {
    let (s, e) = (port_number(start, "start")?, port_number(end, "end")?);
    if e < s || (strict && e == s) {
        return Err(format!(
            "port range start {s} must be less than end {e}{}",
            if strict { "" } else { " or equal to it" }
        ));
    }
    Ok(TierPort::Range {
        protocol,
        start: s,
        end: e,
    })
}

fn ports_v1alpha1(ports: Option<&[V1Alpha1Port]>) -> Result<Option<Vec<TierPort>>, String> {
    let Some(ports) = ports else { return Ok(None) };
    if ports.is_empty() {
        return Err("`ports` is empty (omit it to match every port)".into());
    }
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let ctx = |e: String| format!("ports[{i}]: {e}");
        out.push(match (&p.port_number, &p.named_port, &p.port_range) {
            (Some(n), None, None) => TierPort::Number {
                protocol: protocol(n.protocol.as_deref()).map_err(ctx)?,
                port: port_number(n.port, "port").map_err(ctx)?,
            },
            (None, Some(name), None) => TierPort::Named(name.clone()),
            (None, None, Some(r)) => range(
                protocol(r.protocol.as_deref()).map_err(ctx)?,
                r.start,
                r.end,
                false,
            )
            .map_err(ctx)?,
            _ => {
                return Err(ctx(
                    "exactly one of portNumber, namedPort and portRange must be set".into(),
                ));
            }
        });
    }
    Ok(Some(out))
}

fn ports_v1alpha2(protocols: Option<&[V1Alpha2Protocol]>) -> Result<Option<Vec<TierPort>>, String> {
    let Some(protocols) = protocols else {
        return Ok(None);
    };
    if protocols.is_empty() {
        return Err("`protocols` is empty (omit it to match every port)".into());
    }
    let mut out = Vec::new();
    for (i, p) in protocols.iter().enumerate() {
        let ctx = |e: String| format!("protocols[{i}]: {e}");
        let by_proto = [
            (Protocol::Tcp, &p.tcp),
            (Protocol::Udp, &p.udp),
            (Protocol::Sctp, &p.sctp),
        ];
        let set = by_proto.iter().filter(|(_, v)| v.is_some()).count()
            + usize::from(p.destination_named_port.is_some());
        if set != 1 {
            return Err(ctx(
                "exactly one of tcp, udp, sctp and destinationNamedPort must be set".into(),
            ));
        }
        if let Some(name) = &p.destination_named_port {
            out.push(TierPort::Named(name.clone()));
            continue;
        }
        let (proto, ports) = by_proto
            .into_iter()
            .find_map(|(proto, v)| v.as_ref().map(|v| (proto, v)))
            .expect("one protocol is set");
        let Some(dp) = &ports.destination_port else {
            return Err(ctx(format!(
                "{} needs destinationPort",
                proto.as_str().to_ascii_lowercase()
            )));
        };
        out.push(match (dp.number, &dp.range) {
            (Some(n), None) => TierPort::Number {
                protocol: proto,
                port: port_number(n, "destinationPort.number").map_err(ctx)?,
            },
            (None, Some(r)) => range(proto, r.start, r.end, true).map_err(ctx)?,
            _ => {
                return Err(ctx(
                    "destinationPort takes exactly one of number and range".into()
                ));
            }
        });
    }
    Ok(Some(out))
}

/// Whether `labels` (a peer namespace's) relate to `subject` (the subject
/// namespace's) as the match requires, for the label-relation forms.
pub(crate) fn related_labels(m: &NamespaceMatch, subject: &Labels, peer: &Labels) -> bool {
    match m {
        NamespaceMatch::Selector(s) => s.matches(peer),
        NamespaceMatch::SameLabels(keys) => keys
            .iter()
            .all(|k| subject.get(k).is_some_and(|v| peer.get(k) == Some(v))),
        NamespaceMatch::NotSameLabels(keys) => keys.iter().all(|k| match peer.get(k) {
            Some(v) => subject.get(k) != Some(v),
            None => false,
        }),
    }
}
