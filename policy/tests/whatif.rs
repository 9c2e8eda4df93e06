//! What-if over observed connections: known newly denied and newly allowed
//! sets, endpoints judged with the labels they had when observed, and every
//! bad change set refused by name.

use std::collections::BTreeMap;

use flowgate_policy::{
    ChangeSet, ClusterObjects, ObservedConnection, ObservedEndpoint, ObservedPod, Protocol, WhatIf,
    WhatIfError, what_if,
};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, hostIP: 10.0.0.1, podIPs: [{ip: 10.1.0.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  nodeName: n1
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {phase: Running, hostIP: 10.0.0.1, podIPs: [{ip: 10.1.0.11}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, hostIP: 10.0.0.1, podIPs: [{ip: 10.1.0.12}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
"#;

fn current() -> ClusterObjects {
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
    pod("shop", "web", "10.1.0.10", &[("app", "web")])
}
fn api() -> ObservedEndpoint {
    pod("shop", "api", "10.1.0.11", &[("app", "api")])
}
fn db() -> ObservedEndpoint {
    pod("shop", "db", "10.1.0.12", &[("app", "db")])
}
fn world(ip: &str) -> ObservedEndpoint {
    ObservedEndpoint {
        ip: ip.parse().unwrap(),
        pod: None,
    }
}

fn conn(src: ObservedEndpoint, dst: ObservedEndpoint, port: u16, flows: u64) -> ObservedConnection {
    ObservedConnection {
        src,
        dst,
        port,
        protocol: Protocol::Tcp,
        flows,
        last_seen_ns: 1_000 + flows as i64,
    }
}

/// web→api:8080 allowed (named port `http`), web→db and api→db allowed (db
/// not isolated), db→api:8080 denied, the world → web:80 allowed.
fn observed() -> Vec<ObservedConnection> {
    vec![
        conn(web(), api(), 8080, 40),
        conn(web(), db(), 5432, 3),
        conn(api(), db(), 5432, 25),
        conn(db(), api(), 8080, 2),
        conn(world("203.0.113.7"), web(), 80, 9),
    ]
}

fn change(yaml: &str, deletes: &[&str]) -> ChangeSet {
    let mut c = ChangeSet::default();
    if !yaml.is_empty() {
        c.add_yaml("change.yaml", yaml).unwrap();
    }
    for d in deletes {
        c.delete(d).unwrap();
    }
    c
}

fn pairs(list: &[flowgate_policy::VerdictChange]) -> Vec<String> {
    list.iter()
        .map(|c| format!("{} -> {}:{}", c.src, c.dst, c.port))
        .collect()
}

fn run(yaml: &str, deletes: &[&str], observed: &[ObservedConnection]) -> WhatIf {
    what_if(&current(), &change(yaml, deletes), observed).unwrap()
}

const DB_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{port: 5432}]
"#;

#[test]
fn a_new_policy_newly_denies_what_it_leaves_out() {
    let w = run(DB_INGRESS, &[], &observed());
    assert_eq!(w.connections_judged, 5);
    assert_eq!(pairs(&w.newly_denied), ["shop/web -> shop/db:5432"]);
    assert!(w.newly_allowed.is_empty());
    let d = &w.newly_denied[0];
    assert_eq!((d.flows, d.last_seen_ns), (3, 1_003));
    assert_eq!(d.denied_by.len(), 1, "ingress only denies");
    let denial = &d.denied_by[0];
    assert_eq!(denial.direction, flowgate_policy::Direction::Ingress);
    assert_eq!(denial.policies, ["shop/db-ingress"]);
    let miss = denial.nearest_misses[0].nearest.as_ref().expect("a rule");
    assert!(miss.port_matched && !miss.peer_matched, "{miss:?}");
}

#[test]
fn deleting_a_policy_newly_allows_what_it_denied() {
    let w = run("", &["shop/api-ingress"], &observed());
    assert!(w.newly_denied.is_empty());
    assert_eq!(pairs(&w.newly_allowed), ["shop/db -> shop/api:8080"]);
}

#[test]
fn replacing_a_policy_flips_both_ways_busiest_first() {
    // api-ingress now admits db instead of web, on 8080 by number.
    let replacement = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 8080}]
"#;
    let mut observed = observed();
    observed.push(conn(
        pod("shop", "web-2", "10.1.0.20", &[("app", "web")]),
        api(),
        8080,
        70,
    ));
    let w = run(replacement, &[], &observed);
    assert_eq!(
        pairs(&w.newly_denied),
        ["shop/web-2 -> shop/api:8080", "shop/web -> shop/api:8080"]
    );
    assert_eq!(pairs(&w.newly_allowed), ["shop/db -> shop/api:8080"]);
}

#[test]
fn endpoints_are_judged_with_the_labels_they_had() {
    // The web pod carried app=legacy when this traffic was seen: the policy
    // in force (from app=web) denied it then and still does, whatever the
    // pod's labels are now; admitting app=legacy newly allows exactly it.
    let legacy = pod("shop", "web", "10.1.0.10", &[("app", "legacy")]);
    let observed = vec![conn(legacy, api(), 8080, 5), conn(web(), api(), 8080, 7)];
    let admit_legacy = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: legacy, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: legacy}}}]
"#;
    let w = run(admit_legacy, &[], &observed);
    assert_eq!(w.connections_judged, 2);
    assert_eq!(pairs(&w.newly_allowed), ["shop/web -> shop/api:8080"]);
    assert_eq!(w.newly_allowed[0].flows, 5, "the legacy-labelled one");
    assert!(w.newly_denied.is_empty());
}

#[test]
fn a_pod_gone_now_is_still_judged() {
    let gone = pod("shop", "batch-x", "10.1.0.99", &[("app", "batch")]);
    let deny_egress = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: batch-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: batch}}
  policyTypes: [Egress]
"#;
    let w = run(
        deny_egress,
        &[],
        &[conn(gone, world("198.51.100.1"), 443, 1)],
    );
    assert_eq!(pairs(&w.newly_denied), ["shop/batch-x -> 198.51.100.1:443"]);
    let denial = &w.newly_denied[0].denied_by[0];
    assert_eq!(denial.direction, flowgate_policy::Direction::Egress);
    assert_eq!(denial.policies, ["shop/batch-egress"]);
}

#[test]
fn namespace_labels_come_from_the_cluster_now() {
    let from_team = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-team, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: shop}}}]
"#;
    let ops = pod("ops", "probe", "10.1.0.50", &[("app", "probe")]);
    let w = run(
        from_team,
        &[],
        &[conn(ops, db(), 5432, 1), conn(api(), db(), 5432, 1)],
    );
    assert_eq!(pairs(&w.newly_denied), ["ops/probe -> shop/db:5432"]);
}

fn error(yaml: &str, deletes: &[&str]) -> String {
    let mut c = ChangeSet::default();
    let r = c
        .add_yaml("change.yaml", yaml)
        .and_then(|()| deletes.iter().try_for_each(|d| c.delete(d)))
        .and_then(|()| what_if(&current(), &c, &observed()).map(|_| ()));
    match r {
        Ok(()) => panic!("accepted: {yaml:?} {deletes:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_change_sets_are_refused_by_name() {
    let e = error("", &["shop/nope"]);
    assert!(
        e.contains("shop/nope") && e.contains("no such policy"),
        "{e}"
    );
    let e = error("", &["nope"]);
    assert!(
        e.contains("\"nope\"") && e.contains("namespace/name"),
        "{e}"
    );
    let e = error("kind: [unclosed", &[]);
    assert!(
        e.contains("change.yaml") && e.contains("invalid YAML"),
        "{e}"
    );
    let e = error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n",
        &[],
    );
    assert!(e.contains("Pod shop/p"), "{e}");
    let e = error(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: shop}\n",
        &[],
    );
    assert!(e.contains("ConfigMap shop/cm"), "{e}");
    let bad_port = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 70000}]}]
"#;
    let e = error(bad_port, &[]);
    assert!(e.contains("NetworkPolicy shop/bad"), "{e}");
}

#[test]
fn empty_and_error_types_are_typed() {
    let mut c = ChangeSet::default();
    assert!(c.is_empty());
    assert!(matches!(
        what_if(&current(), &c, &observed()),
        Err(WhatIfError::Empty)
    ));
    assert!(matches!(
        c.delete("a/b/c"),
        Err(WhatIfError::BadDelete { .. })
    ));
}
