//! The watchers against a real HTTP server on 127.0.0.1:0 that speaks the
//! Kubernetes list/watch protocol from recorded objects
//! (`fixtures/watch/*.yaml`): initial lists with resourceVersions, watch
//! events ADDED/MODIFIED/DELETED, a BOOKMARK, a 410 Gone that forces a
//! relist, a 404 for a CRD that is not installed. The scenario fails on any
//! call it does not expect, and the state the collector ends with must be
//! exactly right.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowgate_collector::cluster::{ClusterState, StateWriter, watch};
use flowgate_collector::metrics::Metrics;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "call", rename_all = "lowercase")]
enum Step {
    List {
        body: Value,
    },
    Watch {
        #[serde(rename = "resourceVersion")]
        resource_version: String,
        events: Vec<Value>,
        end: End,
    },
    /// A list answered 404 as the API server answers for a resource it does
    /// not serve (a CRD that is not installed); `keep`: every later list too.
    Missing {
        #[serde(default)]
        keep: bool,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum End {
    Close,
    Hang,
}

#[derive(Default)]
struct Scenario {
    steps: BTreeMap<String, VecDeque<Step>>,
    unexpected: Vec<String>,
}

type Shared = Arc<Mutex<Scenario>>;

async fn serve(State(scenario): State<Shared>, uri: Uri) -> Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let is_watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let mut s = scenario.lock().unwrap_or_else(|p| p.into_inner());
    let queue = s.steps.get_mut(uri.path());
    let kept = queue
        .as_ref()
        .and_then(|q| q.front())
        .is_some_and(|f| matches!(f, Step::Missing { keep: true }));
    let next = queue.and_then(|q| {
        if kept {
            q.front().cloned()
        } else {
            q.pop_front()
        }
    });
    let fail = |s: &mut Scenario, why: String| {
        s.unexpected.push(why.clone());
        (StatusCode::INTERNAL_SERVER_ERROR, why).into_response()
    };
    match next {
        Some(Step::List { body }) if !is_watch => axum::Json(body).into_response(),
        Some(Step::Missing { .. }) if !is_watch => {
            (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
        }
        Some(Step::Watch {
            resource_version,
            events,
            end,
        }) if is_watch => {
            if query.get("resourceVersion") != Some(&resource_version) {
                return fail(
                    &mut s,
                    format!("{uri}: expected a watch from resourceVersion {resource_version}"),
                );
            }
            let lines: Vec<Result<String, std::io::Error>> =
                events.iter().map(|e| Ok(format!("{e}\n"))).collect();
            let events = futures::stream::iter(lines);
            let body = match end {
                End::Close => Body::from_stream(events),
                End::Hang => Body::from_stream(futures::StreamExt::chain(
                    events,
                    futures::stream::pending(),
                )),
            };
            Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap_or_default()
        }
        other => fail(
            &mut s,
            format!("unexpected call {uri} (next expected: {other:?})"),
        ),
    }
}

async fn start_server(fixture: &str) -> Result<(String, Shared)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/watch")
        .join(fixture);
    let steps: BTreeMap<String, VecDeque<Step>> =
        serde_norway::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| path.display().to_string())?;
    let shared: Shared = Arc::new(Mutex::new(Scenario {
        steps,
        unexpected: Vec::new(),
    }));
    let app = axum::Router::new()
        .fallback(serve)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, shared))
}

/// Calls still expected (a kept 404 is never used up).
fn remaining(s: &Scenario) -> usize {
    s.steps
        .values()
        .flatten()
        .filter(|step| !matches!(step, Step::Missing { keep: true }))
        .count()
}

/// Pods as `ns/name v=<label v>` for an exact comparison.
fn pods(state: &ClusterState) -> Vec<String> {
    let snapshot = state.load();
    let mut out: Vec<String> = snapshot
        .cluster
        .pods()
        .map(|(_, p)| format!("{}/{} {:?}", p.namespace, p.name, p.labels.get("v")))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_exactly_right_after_churn_and_a_relist() -> Result<()> {
    let (url, scenario) = start_server("churn.yaml").await?;
    let config = kube::Config::new(url.parse()?);
    let client = kube::Client::try_from(config)?;
    let state = ClusterState::default();
    let metrics = Arc::new(Metrics::new());
    let writer = StateWriter::new(state.clone(), Duration::from_secs(3600), metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let _stores = watch::spawn(
        client,
        writer,
        watch::WatchTiming {
            debounce: Duration::from_millis(20),
            crd_recheck: Duration::from_secs(3600),
        },
        metrics,
        &mut tasks,
    );

    let want_pods = vec![
        "other/cache-0 None".to_owned(),
        "shop/db-0 Some(\"2\")".to_owned(),
        "shop/web-abc-2 None".to_owned(),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let remaining: usize = {
            let s = scenario.lock().unwrap_or_else(|p| p.into_inner());
            if !s.unexpected.is_empty() {
                bail!("the scenario failed: {:#?}", s.unexpected);
            }
            remaining(&s)
        };
        let snapshot = state.load();
        let port = snapshot
            .cluster
            .policies()
            .find(|(_, p)| p.name == "allow-web")
            .and_then(|(_, p)| {
                p.ingress
                    .first()
                    .and_then(|r| r.ports.first())
                    .map(|m| m.to_string())
            });
        if remaining == 0
            && pods(&state) == want_pods
            && port.as_deref().is_some_and(|p| p.contains("8080"))
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let s = scenario.lock().unwrap_or_else(|p| p.into_inner());
            bail!(
                "timed out: pods {:?}, allow-web port {port:?}, calls not made {:#?}",
                pods(&state),
                s.steps
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let snapshot = state.load();
    let cluster = &snapshot.cluster;
    let mut namespaces: Vec<&str> = cluster.namespaces().map(|n| n.name.as_str()).collect();
    namespaces.sort();
    assert_eq!(namespaces, vec!["other", "shop"]);
    let mut policies: Vec<String> = cluster.policies().map(|(_, p)| p.key()).collect();
    policies.sort();
    assert_eq!(policies, vec!["shop/allow-web", "shop/default-deny"]);

    let now = flowgate_collector::now_ns();
    let at = |ip: &str| -> Option<(String, Option<String>)> {
        let ip: IpAddr = ip.parse().ok()?;
        snapshot
            .ips
            .lookup(ip, now)
            .map(|i| (i.identity.name.clone(), i.identity.workload.clone()))
    };
    assert_eq!(
        at("10.1.0.11"),
        Some(("web-abc-2".into(), Some("web".into()))),
        "ReplicaSet → Deployment"
    );
    assert_eq!(
        at("10.1.0.30"),
        Some(("cache-0".into(), None)),
        "the reused address names its new pod"
    );
    assert_eq!(
        at("10.1.0.10"),
        None,
        "the pod deleted during the gap is gone after the relist"
    );
    let db = at("10.1.0.20").context("db-0")?;
    assert_eq!(db.0, "db-0");
    let db_labels = &snapshot
        .ips
        .lookup("10.1.0.20".parse()?, now)
        .context("db-0")?
        .identity
        .labels_json;
    assert!(db_labels.contains("\"v\":\"2\""), "{db_labels}");
    tasks.abort_all();
    Ok(())
}

/// The tier CRDs: AdminNetworkPolicy is not installed at first and appears
/// (404, then a list and watch), BaselineAdminNetworkPolicy is never
/// installed (404 on every look, no error), ClusterNetworkPolicy is there
/// with one object that does not decode (left out, counted); Nodes are
/// watched. The snapshot must judge by exactly the policies that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_crds_are_watched_where_installed_and_absence_is_tolerated() -> Result<()> {
    let (url, scenario) = start_server("tiers.yaml").await?;
    let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
    let state = ClusterState::default();
    let metrics = Arc::new(Metrics::new());
    let writer = StateWriter::new(state.clone(), Duration::from_secs(3600), metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let _stores = watch::spawn(
        client,
        writer,
        watch::WatchTiming {
            debounce: Duration::from_millis(20),
            crd_recheck: Duration::from_millis(50),
        },
        metrics.clone(),
        &mut tasks,
    );

    let names = |state: &ClusterState| -> Vec<String> {
        let snapshot = state.load();
        let mut v: Vec<String> = snapshot
            .cluster
            .cluster_policies()
            .map(|(_, p)| format!("{:?} {} {:?}", p.tier, p.name, p.priority))
            .collect();
        v.sort();
        v
    };
    let want = vec![
        "Admin deny-dev-to-db Some(10)".to_owned(),
        "Admin pass-monitoring Some(20)".to_owned(),
        "Baseline baseline-deny-other Some(5)".to_owned(),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = {
            let s = scenario.lock().unwrap_or_else(|p| p.into_inner());
            if !s.unexpected.is_empty() {
                bail!("the scenario failed: {:#?}", s.unexpected);
            }
            remaining(&s)
        };
        if left == 0 && names(&state) == want {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let s = scenario.lock().unwrap_or_else(|p| p.into_inner());
            bail!(
                "timed out: cluster policies {:?}, calls not made {:#?}",
                names(&state),
                s.steps
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // BaselineAdminNetworkPolicy keeps answering 404 meanwhile: looked at
    // again quietly, never a failure.
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let s = scenario.lock().unwrap_or_else(|p| p.into_inner());
        assert!(s.unexpected.is_empty(), "{:#?}", s.unexpected);
    }
    assert_eq!(metrics.cluster_policies_undecodable.get(), 1);

    let snapshot = state.load();
    let c = &snapshot.cluster;
    let nodes: Vec<&str> = c.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, vec!["node-a"]);
    let pod = |ns: &str, name: &str| -> Result<flowgate_policy::Endpoint> {
        let id = c.find_pod(ns, name).context(format!("{ns}/{name}"))?;
        Ok(c.pod_endpoint(id, None))
    };
    let (client, db) = (pod("dev", "client")?, pod("prod", "db")?);
    let v = c.verdict(&client, &db, 5432, flowgate_policy::Protocol::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.ingress.tier, flowgate_policy::Tier::Admin);
    assert_eq!(
        c.decided_by_key(v.ingress.decided_by.context("decided by a rule")?),
        "admin/deny-dev-to-db/ingress/deny-dev"
    );
    // The node peer: egress from prod/db to node-a's address is denied by
    // the Baseline tier (no NetworkPolicy isolates prod/db).
    let node = c.endpoint_for_ip("192.168.7.1".parse()?);
    let v = c.verdict(&db, &node, 10250, flowgate_policy::Protocol::Tcp);
    assert!(!v.allowed);
    assert_eq!(v.egress.tier, flowgate_policy::Tier::Baseline);
    tasks.abort_all();
    Ok(())
}
