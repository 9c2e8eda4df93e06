//! Advice from observed connections: applied, it denies no observed
//! connection that is allowed now, isolates every pod of the namespace both
//! ways, and admits nothing that was not seen (checked by re-judging).

use std::collections::BTreeMap;

use flowgate_policy::{
    ChangeSet, Cluster, ClusterObjects, Direction, Endpoint, ObservedConnection, ObservedEndpoint,
    ObservedPod, Protocol, advise,
};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Pod
metadata: {name: web-7d4b9c8f6-x2x9q, namespace: shop, labels: {app: web, pod-template-hash: 7d4b9c8f6}}
spec: {containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, statefulset.kubernetes.io/pod-name: db-0}}
spec: {containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.12}]}
---
apiVersion: v1
kind: Pod
metadata: {name: monitor, namespace: ops, labels: {app: monitor}}
spec: {containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.2.0.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {containers: [{name: c}]}
status: {phase: Running, podIPs: [{ip: 10.3.0.10}]}
---
# In force: monitor may send only to 9090, 5432 and DNS (6379 is denied).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: monitor-egress, namespace: ops}
spec:
  podSelector: {matchLabels: {app: monitor}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 9090}, {port: 5432}, {port: 53, protocol: UDP}]}]
"#;

fn objects() -> ClusterObjects {
    let mut o = ClusterObjects::default();
    o.parse_yaml("cluster.yaml", CLUSTER).unwrap();
    o
}

fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> ObservedEndpoint {
    ObservedEndpoint {
        ip: ip.parse().unwrap(),
        pod: Some(ObservedPod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }),
    }
}

fn web() -> ObservedEndpoint {
    pod(
        "shop",
        "web-7d4b9c8f6-x2x9q",
        "10.1.0.10",
        &[("app", "web"), ("pod-template-hash", "7d4b9c8f6")],
    )
}
fn db() -> ObservedEndpoint {
    pod(
        "shop",
        "db-0",
        "10.1.0.12",
        &[
            ("app", "db"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
        ],
    )
}
fn monitor() -> ObservedEndpoint {
    pod("ops", "monitor", "10.2.0.5", &[("app", "monitor")])
}
fn dns() -> ObservedEndpoint {
    pod(
        "kube-system",
        "coredns-1",
        "10.3.0.10",
        &[("k8s-app", "kube-dns")],
    )
}
fn world(ip: &str) -> ObservedEndpoint {
    ObservedEndpoint {
        ip: ip.parse().unwrap(),
        pod: None,
    }
}

fn conn(
    src: ObservedEndpoint,
    dst: ObservedEndpoint,
    port: u16,
    p: Protocol,
) -> ObservedConnection {
    ObservedConnection {
        src,
        dst,
        port,
        protocol: p,
        flows: 1,
        last_seen_ns: 1,
    }
}

fn observed() -> Vec<ObservedConnection> {
    use Protocol::*;
    vec![
        conn(world("198.51.100.20"), web(), 443, Tcp),
        conn(world("198.51.100.21"), web(), 443, Tcp),
        conn(web(), db(), 5432, Tcp),
        conn(web(), dns(), 53, Udp),
        conn(web(), world("203.0.113.7"), 443, Tcp),
        conn(web(), world("192.0.2.99"), 443, Tcp),
        conn(monitor(), web(), 9090, Tcp),
        conn(monitor(), db(), 9090, Tcp),
        // Denied now (monitor's egress): advice must not admit it.
        conn(monitor(), db(), 6379, Tcp),
        // Not this namespace's business.
        conn(monitor(), dns(), 53, Udp),
    ]
}

#[test]
fn advice_admits_what_was_seen_and_isolates_everything() {
    let current = objects();
    let advice = advise(&current, "shop", &observed()).unwrap();
    assert_eq!((advice.admitted, advice.left_denied), (8, 1));
    assert!(advice.proof.newly_denied.is_empty(), "{:#?}", advice.proof);
    assert_eq!(advice.proof.connections_judged, 10);

    // Applied, every shop pod is isolated both ways.
    let change = ChangeSet {
        policies: advice.policies.clone(),
        ..Default::default()
    };
    let after = Cluster::build(&change.apply(&current).unwrap(), 2).unwrap();
    for (id, p) in after.pods().filter(|(_, p)| p.namespace == "shop") {
        for d in [Direction::Ingress, Direction::Egress] {
            assert!(
                !after.isolating_policies(id, d).is_empty(),
                "{} not isolated for {d}",
                p.name
            );
        }
    }

    // Nothing unseen is admitted: other ports, other peers, other addresses.
    let ep = |ns: &str, name: &str| Endpoint {
        ip: after.pod(after.find_pod(ns, name).unwrap()).ips[0],
        pod: after.find_pod(ns, name),
    };
    let outside = |ip: &str| Endpoint {
        ip: ip.parse().unwrap(),
        pod: None,
    };
    let (w, d, m) = (
        ep("shop", "web-7d4b9c8f6-x2x9q"),
        ep("shop", "db-0"),
        ep("ops", "monitor"),
    );
    let allowed =
        |s: &Endpoint, t: &Endpoint, port: u16| after.verdict(s, t, port, Protocol::Tcp).allowed;
    assert!(allowed(&w, &d, 5432));
    assert!(!allowed(&w, &d, 6379), "an unseen port");
    assert!(!allowed(&d, &w, 5432), "the other way");
    assert!(!allowed(&m, &d, 6379), "denied before, denied after");
    assert!(allowed(&m, &d, 9090));
    assert!(allowed(&outside("198.51.100.21"), &w, 443));
    assert!(
        !allowed(&outside("198.51.100.99"), &w, 443),
        "outside the /31 seen"
    );
    assert!(
        !allowed(&w, &outside("203.0.113.8"), 443),
        "a /32 per scattered address"
    );
    assert!(
        after
            .verdict(&w, &ep("kube-system", "coredns-1"), 53, Protocol::Udp)
            .allowed
    );

    // Written the recommended way.
    let yaml = advice.yaml();
    assert!(yaml.contains("name: default-deny"), "{yaml}");
    assert!(yaml.contains("kubernetes.io/metadata.name: ops"), "{yaml}");
    assert!(yaml.contains("cidr: 198.51.100.20/31"), "{yaml}");
    assert!(yaml.contains("cidr: 203.0.113.7/32"), "{yaml}");
    assert!(yaml.contains("k8s-app: kube-dns"), "{yaml}");
    assert!(!yaml.contains("pod-template-hash"), "{yaml}");
    assert!(
        !yaml.contains("x2x9q") && !yaml.contains("10.1.0."),
        "{yaml}"
    );
    let names: Vec<_> = advice
        .policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["default-deny", "allow-db", "allow-web"]);
}

#[test]
fn the_advice_is_valid_yaml_the_engine_reads_back() {
    let advice = advise(&objects(), "shop", &observed()).unwrap();
    let mut back = ClusterObjects::default();
    back.parse_yaml("advice.yaml", &advice.yaml()).unwrap();
    assert_eq!(back.policies, advice.policies);
}
