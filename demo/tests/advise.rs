//! Advice on the demo cluster: for every namespace of the default scenario,
//! the advised policies, applied on top of the scenario's own, leave every
//! traffic stream of the demo with the verdict it has now (nothing allowed
//! becomes denied, nothing denied becomes allowed) and isolate every pod of
//! the namespace in both directions.

use std::path::Path;

use anyhow::Result;
use flowgate_demo::scenario::{Placed, Scenario, Target};
use flowgate_policy::{
    ChangeSet, Cluster, ClusterObjects, Direction, Endpoint, ObservedConnection, ObservedEndpoint,
    ObservedPod, advise,
};

fn placed() -> Result<Placed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/default-scenario.yaml");
    Ok(Scenario::from_file(&path)?.place()?)
}

/// The demo's traffic as the collector would observe it.
fn observed(placed: &Placed) -> Vec<ObservedConnection> {
    let pod = |i: usize| {
        let p = &placed.pods[i];
        ObservedEndpoint {
            ip: p.ip.into(),
            pod: Some(ObservedPod {
                namespace: p.spec.namespace.clone(),
                name: p.spec.name.clone(),
                labels: p.spec.labels.clone(),
            }),
        }
    };
    placed
        .flows
        .iter()
        .map(|f| ObservedConnection {
            src: pod(f.from),
            dst: match f.to {
                Target::Pod(i) => pod(i),
                Target::External(ip) => ObservedEndpoint {
                    ip: ip.into(),
                    pod: None,
                },
            },
            port: f.port,
            protocol: f.protocol,
            flows: 1,
            last_seen_ns: 1,
        })
        .collect()
}

fn endpoint(cluster: &Cluster, e: &ObservedEndpoint) -> Endpoint {
    Endpoint {
        ip: e.ip,
        pod: e
            .pod
            .as_ref()
            .map(|p| cluster.find_pod(&p.namespace, &p.name).expect("a demo pod")),
    }
}

#[test]
fn advice_on_the_demo_denies_nothing_observed_and_isolates_every_pod() -> Result<()> {
    let placed = placed()?;
    let mut objects = ClusterObjects::default();
    objects.parse_yaml("demo cluster", &placed.cluster_yaml)?;
    let observed = observed(&placed);
    let before = Cluster::build(&objects, 1)?;
    let mut namespaces: Vec<String> = placed
        .scenario
        .namespaces
        .iter()
        .map(|n| n.name.clone())
        .collect();
    namespaces.sort();
    let mut policies_written = 0;
    for ns in &namespaces {
        let advice = advise(&objects, ns, &observed)?;
        assert!(
            advice.proof.newly_denied.is_empty(),
            "{ns}: the advice's own proof denies {:#?}",
            advice.proof.newly_denied
        );
        let change = ChangeSet {
            policies: advice.policies.clone(),
            ..Default::default()
        };
        let after = Cluster::build(&change.apply(&objects)?, 2)?;
        for c in &observed {
            let judge = |cl: &Cluster| {
                cl.verdict(
                    &endpoint(cl, &c.src),
                    &endpoint(cl, &c.dst),
                    c.port,
                    c.protocol,
                )
                .allowed
            };
            assert_eq!(
                judge(&before),
                judge(&after),
                "{ns}: {} → {} {} {} flipped",
                c.src.name(),
                c.dst.name(),
                c.protocol,
                c.port
            );
        }
        for (id, pod) in after.pods().filter(|(_, p)| &p.namespace == ns) {
            for d in [Direction::Ingress, Direction::Egress] {
                assert!(
                    !after.isolating_policies(id, d).is_empty(),
                    "{ns}/{} is not isolated for {d}",
                    pod.name
                );
            }
        }
        policies_written += advice.policies.len();
    }
    assert!(
        policies_written > namespaces.len(),
        "more than a default-deny per namespace"
    );
    Ok(())
}
