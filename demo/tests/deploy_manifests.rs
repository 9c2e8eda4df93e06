//! Checks the Kubernetes manifests under `deploy/`: every YAML document parses
//! into its `k8s-openapi` type, every kustomization reference exists, and the
//! invariants that matter hold for the base and for every overlay (overlay
//! patches are merged onto the base the way kustomize's strategic merge does
//! for the shapes used here: maps merge, lists of named items merge by name).
//!
//! The invariants: one `flowgate` image; ports and listen addresses agree with
//! the binary's defaults and with each other (Service → container port names,
//! probe `--collector` → the Service); RBAC is read-only and limited to the
//! kinds flowgate reads; the probe has exactly the capabilities it needs, is
//! not privileged, and mounts the kernel filesystems read-only. The
//! collector's own NetworkPolicy is judged by flowgate's policy engine on a
//! cluster holding the rendered collector: probes (hostNetwork, node
//! addresses) reach gRPC, labelled API clients reach HTTP, nobody else
//! reaches either; and flowgate's lint finds no error in it. Mutual TLS is
//! on both sides or neither, each probe presents its own node's certificate,
//! and keys and tokens come from Secrets mounted read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use flowgate_proto::{DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, Namespace, PersistentVolumeClaim, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

const IMAGE: &str = "flowgate";
const PROBE_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];
const READ_ONLY_VERBS: [&str; 3] = ["get", "list", "watch"];
/// (apiGroup, resource) pairs the collector may read.
const READABLE: [(&str, &str); 8] = [
    ("", "pods"),
    ("", "namespaces"),
    // Nodes: the cluster tiers' `nodes` peers and host-network pods.
    ("", "nodes"),
    ("networking.k8s.io", "networkpolicies"),
    // The cluster tiers, watched only where their CRDs are installed.
    ("policy.networking.k8s.io", "adminnetworkpolicies"),
    ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
    ("policy.networking.k8s.io", "clusternetworkpolicies"),
    ("apps", "replicasets"),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read_docs(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("{}: document {i} is not valid YAML", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn str_list(kustomization: &Value, key: &str) -> Vec<String> {
    kustomization[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().or_else(|| item["path"].as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Renders a kustomization directory: its resources (files or directories,
/// recursively), then its patches merged on top, then its namespace and image
/// transforms. Fails on any reference that does not exist.
fn render(dir: &Path) -> Result<Vec<Value>> {
    let kpath = dir.join("kustomization.yaml");
    let kustomization = read_docs(&kpath)?
        .pop()
        .with_context(|| format!("{} is empty", kpath.display()))?;
    ensure!(
        kustomization["kind"] == "Kustomization",
        "{}: kind must be Kustomization",
        kpath.display()
    );
    let mut objects = Vec::new();
    for resource in str_list(&kustomization, "resources") {
        let path = dir.join(&resource);
        ensure!(
            path.exists(),
            "{}: resource {resource} does not exist",
            kpath.display()
        );
        if path.is_dir() {
            objects.extend(render(&path)?);
        } else {
            objects.extend(read_docs(&path)?);
        }
    }
    for patch in str_list(&kustomization, "patches") {
        let path = dir.join(&patch);
        ensure!(
            path.exists(),
            "{}: patch {patch} does not exist",
            kpath.display()
        );
        for doc in read_docs(&path)? {
            let target = objects
                .iter_mut()
                .find(|o| {
                    o["kind"] == doc["kind"] && o["metadata"]["name"] == doc["metadata"]["name"]
                })
                .with_context(|| {
                    format!(
                        "{}: patch targets {} {} which no resource defines",
                        path.display(),
                        doc["kind"],
                        doc["metadata"]["name"]
                    )
                })?;
            merge(target, &doc);
        }
    }
    if let Some(ns) = kustomization["namespace"].as_str() {
        for o in &mut objects {
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap_or(""));
            if !cluster_scoped {
                o["metadata"]["namespace"] = Value::from(ns);
            }
        }
    }
    Ok(objects)
}

/// Strategic merge for the shapes our patches use: maps merge key by key,
/// lists whose items have a `name` merge item by item, anything else replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if p.iter().all(|i| i.get("name").is_some()) => {
            for item in p {
                match b.iter_mut().find(|e| e.get("name") == item.get("name")) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The rendered objects, each parsed into its k8s-openapi type.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    claims: Vec<PersistentVolumeClaim>,
    deployments: Vec<Deployment>,
    daemon_sets: Vec<DaemonSet>,
    services: Vec<Service>,
    network_policies: Vec<NetworkPolicy>,
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    let what = format!("{} {}", value["kind"], value["metadata"]["name"]);
    serde_json::from_value(value)
        .with_context(|| format!("{what} does not parse as its k8s-openapi type"))
}

impl Manifests {
    fn parse(objects: Vec<Value>) -> Result<Self> {
        let mut m = Manifests::default();
        for o in objects {
            match o["kind"].as_str().unwrap_or("") {
                "Namespace" => m.namespaces.push(typed(o)?),
                "ServiceAccount" => m.service_accounts.push(typed(o)?),
                "ClusterRole" => m.cluster_roles.push(typed(o)?),
                "ClusterRoleBinding" => m.bindings.push(typed(o)?),
                "PersistentVolumeClaim" => m.claims.push(typed(o)?),
                "Deployment" => m.deployments.push(typed(o)?),
                "DaemonSet" => m.daemon_sets.push(typed(o)?),
                "Service" => m.services.push(typed(o)?),
                "NetworkPolicy" => m.network_policies.push(typed(o)?),
                other => bail!(
                    "unexpected kind {other:?} in deploy/: add it to this test with its invariants"
                ),
            }
        }
        Ok(m)
    }
}

fn pod_spec_of_ds(ds: &DaemonSet) -> Result<&PodSpec> {
    ds.spec
        .template
        .spec
        .as_ref()
        .context("DaemonSet without a pod spec")
}

fn pod_spec_of_deploy(d: &Deployment) -> Result<&PodSpec> {
    d.spec
        .template
        .spec
        .as_ref()
        .context("Deployment without a pod spec")
}

fn args(c: &Container) -> Vec<&str> {
    c.args.iter().flatten().map(String::as_str).collect()
}

/// The value following `flag` in the container's args.
fn flag<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let a = c.args.as_deref()?;
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1))
        .map(String::as_str)
}

fn port_named(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn http_probe(probe: Option<&k8s_openapi::api::core::v1::Probe>) -> Result<(String, IntOrString)> {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .context("probe missing or not httpGet")?;
    Ok((get.path.clone().unwrap_or_default(), get.port.clone()))
}

fn check_images(m: &Manifests, images: &BTreeMap<String, String>) -> Result<()> {
    let specs = m
        .daemon_sets
        .iter()
        .map(pod_spec_of_ds)
        .chain(m.deployments.iter().map(pod_spec_of_deploy));
    for spec in specs {
        let spec = spec?;
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let image = c.image.as_deref().unwrap_or("");
            ensure!(
                image == IMAGE,
                "container {} uses image {image:?}, not the one {IMAGE} image",
                c.name
            );
        }
    }
    ensure!(
        images.contains_key(IMAGE),
        "the base kustomization must set the {IMAGE} image tag"
    );
    Ok(())
}

fn check_rbac(m: &Manifests) -> Result<()> {
    ensure!(!m.cluster_roles.is_empty(), "no ClusterRole");
    for role in &m.cluster_roles {
        let name = role.metadata.name.as_deref().unwrap_or("");
        for rule in role.rules.iter().flatten() {
            for verb in &rule.verbs {
                ensure!(
                    READ_ONLY_VERBS.contains(&verb.as_str()),
                    "ClusterRole {name} grants {verb:?}: only get/list/watch are allowed"
                );
            }
            ensure!(
                rule.non_resource_urls.is_none(),
                "ClusterRole {name} grants non-resource URLs"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    ensure!(
                        READABLE.contains(&(group.as_str(), resource.as_str())),
                        "ClusterRole {name} grants {group}/{resource}, which flowgate does not read"
                    );
                }
            }
        }
    }
    for b in &m.bindings {
        ensure!(
            m.cluster_roles
                .iter()
                .any(|r| r.metadata.name == Some(b.role_ref.name.clone())),
            "ClusterRoleBinding refers to missing ClusterRole {}",
            b.role_ref.name
        );
        for s in b.subjects.iter().flatten() {
            ensure!(
                m.service_accounts
                    .iter()
                    .any(|sa| sa.metadata.name.as_deref() == Some(&s.name)
                        && sa.metadata.namespace == s.namespace),
                "ClusterRoleBinding subject {}/{} is not a ServiceAccount defined here",
                s.namespace.as_deref().unwrap_or(""),
                s.name
            );
        }
    }
    Ok(())
}

fn collector(m: &Manifests) -> Result<(&PodSpec, &Container)> {
    let [d] = m.deployments.as_slice() else {
        bail!("expected exactly one Deployment (the collector)")
    };
    let spec = pod_spec_of_deploy(d)?;
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "collector")
        .context("no collector container")?;
    ensure!(
        args(c).first() == Some(&"collector"),
        "collector container must run `flowgate collector`"
    );
    Ok((spec, c))
}

fn check_collector(m: &Manifests) -> Result<()> {
    let (spec, c) = collector(m)?;
    ensure!(
        flag(c, "--grpc-listen") == Some(&format!("0.0.0.0:{DEFAULT_GRPC_PORT}")),
        "collector --grpc-listen must be 0.0.0.0:{DEFAULT_GRPC_PORT}"
    );
    ensure!(
        flag(c, "--http-listen") == Some(&format!("0.0.0.0:{DEFAULT_HTTP_PORT}")),
        "collector --http-listen must be 0.0.0.0:{DEFAULT_HTTP_PORT}"
    );
    ensure!(
        port_named(c, "grpc") == Some(i32::from(DEFAULT_GRPC_PORT)),
        "collector port `grpc` must be {DEFAULT_GRPC_PORT}"
    );
    ensure!(
        port_named(c, "http") == Some(i32::from(DEFAULT_HTTP_PORT)),
        "collector port `http` must be {DEFAULT_HTTP_PORT}"
    );
    let http = IntOrString::String("http".into());
    ensure!(
        http_probe(c.readiness_probe.as_ref())? == ("/readyz".into(), http.clone()),
        "collector readiness must be GET /readyz on port http"
    );
    ensure!(
        http_probe(c.liveness_probe.as_ref())? == ("/healthz".into(), http),
        "collector liveness must be GET /healthz on port http"
    );
    let data_dir = flag(c, "--data-dir").context("collector without --data-dir")?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.mount_path == data_dir)
        .with_context(|| format!("nothing mounted at the collector's --data-dir {data_dir}"))?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .context("store volume not defined")?;
    let claim = volume
        .persistent_volume_claim
        .as_ref()
        .context("the store must be a PersistentVolumeClaim")?;
    ensure!(
        m.claims
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(&claim.claim_name)),
        "collector uses PVC {} which is not defined",
        claim.claim_name
    );
    check_resources(c)?;
    check_service_account(m, spec)?;
    Ok(())
}

fn check_service(m: &Manifests) -> Result<()> {
    let (spec, c) = collector(m)?;
    let _ = spec;
    let [svc] = m.services.as_slice() else {
        bail!("expected exactly one Service (the collector)")
    };
    let s = svc.spec.as_ref().context("Service without spec")?;
    let mut seen = BTreeSet::new();
    for p in s.ports.iter().flatten() {
        let name = p.name.as_deref().unwrap_or("");
        let expected = match name {
            "grpc" => DEFAULT_GRPC_PORT,
            "http" => DEFAULT_HTTP_PORT,
            other => bail!("unexpected Service port {other:?}"),
        };
        ensure!(
            p.port == i32::from(expected),
            "Service port {name} must be {expected}"
        );
        let target = match &p.target_port {
            Some(IntOrString::String(n)) => port_named(c, n),
            Some(IntOrString::Int(n)) => Some(*n),
            None => Some(p.port),
        };
        ensure!(
            target == Some(i32::from(expected)),
            "Service port {name} does not reach container port {expected}"
        );
        seen.insert(name);
    }
    ensure!(
        seen == BTreeSet::from(["grpc", "http"]),
        "Service must expose grpc and http"
    );
    // The Service must select the collector's pods.
    let d = &m.deployments[0];
    let labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in s.selector.iter().flatten() {
        ensure!(
            labels.get(k) == Some(v),
            "Service selector {k}={v} does not match the collector pods"
        );
    }
    Ok(())
}

fn check_probe(m: &Manifests) -> Result<()> {
    let [ds] = m.daemon_sets.as_slice() else {
        bail!("expected exactly one DaemonSet (the probe)")
    };
    let spec = pod_spec_of_ds(ds)?;
    let [c] = spec.containers.as_slice() else {
        bail!("probe pod must have one container")
    };
    ensure!(
        args(c).first() == Some(&"probe"),
        "probe container must run `flowgate probe`"
    );

    // --collector points at the Service, on the gRPC port.
    let [svc] = m.services.as_slice() else {
        bail!("expected exactly one Service")
    };
    // https exactly when the probe speaks TLS (see `check_tls`).
    let scheme = if flag(c, "--tls-ca").is_some() {
        "https"
    } else {
        "http"
    };
    let expected = format!(
        "{scheme}://{}.{}.svc:{DEFAULT_GRPC_PORT}",
        svc.metadata.name.as_deref().unwrap_or(""),
        svc.metadata.namespace.as_deref().unwrap_or("")
    );
    ensure!(
        flag(c, "--collector") == Some(&expected),
        "probe --collector must be {expected}"
    );

    ensure!(
        spec.host_network == Some(true),
        "probe needs hostNetwork: true to see the pod interfaces"
    );
    ensure!(
        spec.host_pid != Some(true),
        "probe must not share the host PID namespace"
    );
    ensure!(
        spec.host_ipc != Some(true),
        "probe must not share the host IPC namespace"
    );
    let tolerates_all =
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
    ensure!(
        tolerates_all,
        "probe must tolerate every taint (operator: Exists, no key) to run on every node"
    );

    let sc = c
        .security_context
        .as_ref()
        .context("probe without securityContext")?;
    ensure!(sc.privileged != Some(true), "probe must not be privileged");
    ensure!(
        sc.allow_privilege_escalation == Some(false),
        "probe must set allowPrivilegeEscalation: false"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .context("probe without capabilities")?;
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    ensure!(
        added == BTreeSet::from(PROBE_CAPABILITIES),
        "probe capabilities are {added:?}, must be exactly {PROBE_CAPABILITIES:?}"
    );
    ensure!(
        caps.drop.iter().flatten().any(|d| d == "ALL"),
        "probe must drop ALL other capabilities"
    );

    for (host, why) in [
        ("/sys/kernel/tracing", "tracefs"),
        ("/sys/fs/bpf", "bpffs"),
        ("/sys/kernel/btf", "BTF"),
    ] {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host))
            .with_context(|| format!("probe does not mount {host} ({why})"))?;
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|vm| vm.name == volume.name)
            .with_context(|| format!("volume {} ({host}) is not mounted", volume.name))?;
        ensure!(
            mount.mount_path == host,
            "{host} must be mounted at the same path"
        );
        ensure!(
            mount.read_only == Some(true),
            "{host} must be mounted read-only"
        );
    }

    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    ensure!(
        node_name == Some("spec.nodeName"),
        "probe needs NODE_NAME from the downward API (spec.nodeName)"
    );

    let metrics_port = port_named(c, "metrics").context("probe without a `metrics` port")?;
    let listen = flag(c, "--metrics-listen").context("probe without --metrics-listen")?;
    ensure!(
        listen.ends_with(&format!(":{metrics_port}")),
        "probe --metrics-listen {listen} disagrees with port {metrics_port}"
    );
    let metrics = IntOrString::String("metrics".into());
    ensure!(
        http_probe(c.readiness_probe.as_ref())?.1 == metrics,
        "probe readiness must use the metrics port"
    );
    ensure!(
        http_probe(c.liveness_probe.as_ref())?.1 == metrics,
        "probe liveness must use the metrics port"
    );
    check_resources(c)?;
    check_service_account(m, spec)?;
    Ok(())
}

fn check_resources(c: &Container) -> Result<()> {
    let r = c
        .resources
        .as_ref()
        .with_context(|| format!("{} without resources", c.name))?;
    for (what, set) in [("requests", &r.requests), ("limits", &r.limits)] {
        let set = set
            .as_ref()
            .with_context(|| format!("{} without resource {what}", c.name))?;
        ensure!(
            set.contains_key("cpu") && set.contains_key("memory"),
            "{} must set cpu and memory {what}",
            c.name
        );
    }
    Ok(())
}

fn check_service_account(m: &Manifests, spec: &PodSpec) -> Result<()> {
    let sa = spec
        .service_account_name
        .as_deref()
        .context("pod without serviceAccountName")?;
    ensure!(
        m.service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(sa)),
        "ServiceAccount {sa} not defined"
    );
    Ok(())
}

fn check_all(m: &Manifests, images: &BTreeMap<String, String>) -> Result<()> {
    ensure!(
        m.namespaces
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("flowgate")),
        "the flowgate Namespace is not defined"
    );
    check_images(m, images)?;
    check_rbac(m)?;
    check_collector(m)?;
    check_service(m)?;
    check_probe(m)?;
    check_network_policy(m)?;
    check_tls(m)?;
    Ok(())
}

/// `flag`'s file lies in a Secret volume mounted into `c`.
fn file_from_secret(spec: &PodSpec, c: &Container, flag_name: &str) -> Result<String> {
    let path = flag(c, flag_name).with_context(|| format!("no {flag_name}"))?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
        .with_context(|| format!("{flag_name} {path} is in no mounted volume"))?;
    let secret = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone())
        .with_context(|| format!("{flag_name} {path}: volume {} is not a Secret", mount.name))?;
    ensure!(
        mount.read_only == Some(true),
        "{flag_name}: mount {} must be read-only",
        mount.mount_path
    );
    Ok(secret)
}

/// Mutual TLS on both sides or on neither: a collector that asks for client
/// certificates gets probes that present their own node's, and the other
/// way round; key material comes from Secrets mounted read-only. An API
/// token file comes from a Secret too.
fn check_tls(m: &Manifests) -> Result<()> {
    let (cspec, collector) = collector(m)?;
    let [ds] = m.daemon_sets.as_slice() else {
        bail!("expected exactly one DaemonSet (the probe)")
    };
    let pspec = pod_spec_of_ds(ds)?;
    let probe = pspec.containers.first().context("probe container")?;
    let server = flag(collector, "--client-ca").is_some();
    let client = flag(probe, "--tls-ca").is_some();
    ensure!(
        server == client,
        "the collector {} client certificates but the probe {} TLS",
        if server {
            "requires"
        } else {
            "does not ask for"
        },
        if client { "speaks" } else { "does not speak" }
    );
    if server {
        for f in ["--tls-cert", "--tls-key", "--client-ca"] {
            file_from_secret(cspec, collector, f)?;
        }
        for f in ["--tls-ca", "--tls-cert", "--tls-key"] {
            file_from_secret(pspec, probe, f)?;
        }
        for f in ["--tls-cert", "--tls-key"] {
            ensure!(
                flag(probe, f).is_some_and(|p| p.contains("$(NODE_NAME)")),
                "probe {f} must name its node's file ($(NODE_NAME)): the collector takes a batch only from its node's certificate"
            );
        }
    }
    if flag(collector, "--api-token-file").is_some() {
        file_from_secret(cspec, collector, "--api-token-file")?;
    }
    Ok(())
}

/// The nodes' network of the test cluster: inside the policy's ipBlock as
/// the base ships it; pods live in 10.244.0.0/16.
const NODE_IPS: [&str; 2] = ["10.0.0.1", "10.0.0.2"];

fn pod_yaml(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    ip: &str,
    node: usize,
    host_network: bool,
) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": format!("node-{node}"), "hostNetwork": host_network,
                 "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": NODE_IPS[node]},
    })
}

/// The rendered NetworkPolicies, judged by flowgate's engine on a cluster
/// with the rendered collector pod in it.
fn check_network_policy(m: &Manifests) -> Result<()> {
    ensure!(
        !m.network_policies.is_empty(),
        "the collector's NetworkPolicy is missing"
    );
    let d = m
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("flowgate-collector"))
        .context("no flowgate-collector Deployment")?;
    let namespace = d
        .metadata
        .namespace
        .clone()
        .context("collector namespace")?;
    let collector_labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .context("collector pod labels")?;
    let (_, container) = collector(m)?;
    let grpc = u16::try_from(port_named(container, "grpc").context("grpc port")?)?;
    let http = u16::try_from(port_named(container, "http").context("http port")?)?;
    let client = BTreeMap::from([("flowgate.io/api-client".to_owned(), "true".to_owned())]);
    let plain = BTreeMap::from([("app".to_owned(), "shop".to_owned())]);
    let mut collector_pod = pod_yaml(
        &namespace,
        "collector",
        &collector_labels,
        "10.244.0.10",
        0,
        false,
    );
    // The policy names its ports: they resolve against these.
    collector_pod["spec"]["containers"][0]["ports"] = serde_json::to_value(&container.ports)?;
    let mut docs = vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        collector_pod,
        pod_yaml(
            &namespace,
            "probe-remote",
            &BTreeMap::new(),
            NODE_IPS[1],
            1,
            true,
        ),
        pod_yaml("monitoring", "prometheus", &client, "10.244.1.20", 1, false),
        pod_yaml("shop", "web", &plain, "10.244.1.30", 1, false),
    ];
    for p in &m.network_policies {
        docs.push(serde_json::to_value(p)?);
    }
    let yaml = docs
        .iter()
        .map(serde_norway::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n");
    let mut objects = flowgate_policy::ClusterObjects::default();
    objects.parse_yaml("rendered manifests", &yaml)?;
    let cluster = flowgate_policy::Cluster::build(&objects, 1)
        .map_err(|e| anyhow::anyhow!("the rendered policies do not build: {e}"))?;
    let endpoint = |ns: &str, name: &str| -> Result<flowgate_policy::Endpoint> {
        let id = cluster
            .find_pod(ns, name)
            .with_context(|| format!("{ns}/{name}"))?;
        Ok(cluster.pod_endpoint(id, None))
    };
    let to = endpoint(&namespace, "collector")?;
    let cases = [
        (
            "a probe on another node, gRPC",
            endpoint(&namespace, "probe-remote")?,
            grpc,
            true,
        ),
        (
            "a labelled API client, HTTP",
            endpoint("monitoring", "prometheus")?,
            http,
            true,
        ),
        (
            "a labelled API client, gRPC",
            endpoint("monitoring", "prometheus")?,
            grpc,
            false,
        ),
        (
            "an unlabelled pod, HTTP",
            endpoint("shop", "web")?,
            http,
            false,
        ),
        (
            "an unlabelled pod, gRPC",
            endpoint("shop", "web")?,
            grpc,
            false,
        ),
        (
            "an address outside the cluster, gRPC",
            cluster.endpoint_for_ip("203.0.113.9".parse()?),
            grpc,
            false,
        ),
    ];
    for (what, from, port, allowed) in cases {
        let v = cluster.verdict(&from, &to, port, flowgate_policy::Protocol::Tcp);
        ensure!(
            v.allowed == allowed,
            "{what} → collector:{port}: {} by the collector's NetworkPolicy, expected {}",
            if v.allowed { "allowed" } else { "denied" },
            if allowed { "allowed" } else { "denied" }
        );
    }
    let errors: Vec<_> = flowgate_policy::lint(&cluster)
        .into_iter()
        .filter(|f| f.severity == flowgate_policy::Severity::Error && f.namespace == namespace)
        .collect();
    ensure!(
        errors.is_empty(),
        "lint finds errors in the collector's policies: {errors:?}"
    );
    Ok(())
}

fn base_images() -> Result<BTreeMap<String, String>> {
    let k = read_docs(&deploy_dir().join("base/kustomization.yaml"))?
        .pop()
        .context("empty base kustomization")?;
    Ok(k["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i["name"].as_str()?.to_owned(),
                i["newTag"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect())
}

/// Every directory under deploy/ holding a kustomization.yaml.
fn kustomizations(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("kustomization.yaml").exists() {
        out.push(dir.to_owned());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            kustomizations(&path, out)?;
        }
    }
    Ok(())
}

#[test]
fn every_kustomization_renders_and_keeps_the_invariants() -> Result<()> {
    let mut dirs = Vec::new();
    kustomizations(&deploy_dir(), &mut dirs)?;
    ensure!(
        dirs.len() >= 3,
        "expected deploy/, deploy/base and overlays, found {dirs:?}"
    );
    let images = base_images()?;
    for dir in dirs {
        let manifests =
            Manifests::parse(render(&dir)?).with_context(|| format!("{}", dir.display()))?;
        check_all(&manifests, &images).with_context(|| format!("{}", dir.display()))?;
    }
    Ok(())
}

#[test]
fn every_yaml_file_is_referenced_by_a_kustomization() -> Result<()> {
    // An unreferenced manifest would be silently left out of `kubectl apply -k`.
    fn walk(
        dir: &Path,
        yaml: &mut BTreeSet<PathBuf>,
        referenced: &mut BTreeSet<PathBuf>,
    ) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, yaml, referenced)?;
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let k = read_docs(&path)?.pop().unwrap_or_default();
                for r in str_list(&k, "resources")
                    .into_iter()
                    .chain(str_list(&k, "patches"))
                {
                    referenced.insert(dir.join(r).canonicalize()?);
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                yaml.insert(path.canonicalize()?);
            }
        }
        Ok(())
    }
    let (mut yaml, mut referenced) = (BTreeSet::new(), BTreeSet::new());
    walk(&deploy_dir(), &mut yaml, &mut referenced)?;
    let orphans: Vec<_> = yaml.difference(&referenced).collect();
    ensure!(
        orphans.is_empty(),
        "YAML files no kustomization references: {orphans:?}"
    );
    Ok(())
}

#[test]
fn the_tls_checks_catch_a_half_configured_overlay() -> Result<()> {
    let mtls = render(&deploy_dir().join("overlays/mtls"))?;
    let images = base_images()?;
    check_all(&Manifests::parse(mtls.clone())?, &images)?;
    let probe_args = |o: &mut Value| -> Vec<Value> {
        o["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    type Mutation = (&'static str, fn(&mut Value, Vec<Value>));
    let mutations: [Mutation; 3] = [
        ("one certificate for every node", |o, args| {
            let args: Vec<Value> = args
                .into_iter()
                .map(|a| Value::from(a.as_str().unwrap_or("").replace("$(NODE_NAME)", "node")))
                .collect();
            o["spec"]["template"]["spec"]["containers"][0]["args"] = Value::from(args);
        }),
        ("a plaintext probe", |o, args| {
            let cut = args
                .iter()
                .position(|a| a == "--tls-ca")
                .unwrap_or(args.len());
            let mut args = args[..cut].to_vec();
            if let Some(url) = args
                .iter_mut()
                .find(|a| a.as_str().is_some_and(|s| s.starts_with("https://")))
            {
                *url = Value::from(url.as_str().unwrap_or("").replacen("https", "http", 1));
            }
            o["spec"]["template"]["spec"]["containers"][0]["args"] = Value::from(args);
        }),
        ("keys from a host path", |o, _| {
            o["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter(|v| v["name"] == "tls")
                .for_each(|v| {
                    *v = serde_json::json!({"name": "tls", "hostPath": {"path": "/etc/flowgate"}})
                });
        }),
    ];
    for (name, mutate) in mutations {
        let mut objects = mtls.clone();
        for o in objects.iter_mut().filter(|o| o["kind"] == "DaemonSet") {
            let args = probe_args(o);
            mutate(o, args);
        }
        let result = Manifests::parse(objects).and_then(|m| check_all(&m, &images));
        ensure!(
            result.is_err(),
            "the checks accepted the mtls overlay with: {name}"
        );
    }
    Ok(())
}

#[test]
fn the_checks_catch_broken_manifests() -> Result<()> {
    // Each mutation breaks one invariant; the checker must reject every one.
    let base = render(&deploy_dir())?;
    let images = base_images()?;
    check_all(&Manifests::parse(base.clone())?, &images)?;
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 7] = [
        ("privileged probe", |o| {
            if o["kind"] == "DaemonSet" {
                o["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                    Value::Bool(true);
            }
        }),
        ("extra capability", |o| {
            if o["kind"] == "DaemonSet" {
                let caps = &mut o["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                    ["add"];
                caps.as_array_mut()
                    .into_iter()
                    .for_each(|a| a.push(Value::from("SYS_ADMIN")));
            }
        }),
        ("write verb", |o| {
            if o["kind"] == "ClusterRole" {
                o["rules"][0]["verbs"] = serde_json::json!(["get", "list", "watch", "patch"]);
            }
        }),
        ("secrets", |o| {
            if o["kind"] == "ClusterRole" {
                o["rules"][0]["resources"] = serde_json::json!(["pods", "secrets"]);
            }
        }),
        ("wrong grpc port", |o| {
            if o["kind"] == "Service" {
                o["spec"]["ports"][0]["port"] = Value::from(4246);
            }
        }),
        ("foreign image", |o| {
            if o["kind"] == "Deployment" {
                o["spec"]["template"]["spec"]["containers"][0]["image"] = Value::from("busybox");
            }
        }),
        ("writable bpffs", |o| {
            if o["kind"] == "DaemonSet" {
                for m in o["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    m["readOnly"] = Value::Bool(false);
                }
            }
        }),
    ];
    for (name, mutate) in mutations {
        let mut objects = base.clone();
        objects.iter_mut().for_each(mutate);
        let result = Manifests::parse(objects).and_then(|m| check_all(&m, &images));
        ensure!(
            result.is_err(),
            "the checks accepted manifests with: {name}"
        );
    }
    Ok(())
}

#[test]
fn dockerfile_builds_the_one_binary_and_exposes_the_default_ports() -> Result<()> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile"))?;
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    ensure!(
        froms >= 2,
        "Dockerfile must be multi-stage (builder + runtime)"
    );
    ensure!(
        text.contains("cargo build --release --locked -p flowgate"),
        "Dockerfile must build the flowgate binary"
    );
    for pkg in ["clang", "libbpf-dev", "protobuf-compiler"] {
        ensure!(text.contains(pkg), "builder stage must install {pkg}");
    }
    let expose = text
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .context("no EXPOSE line")?;
    for port in [DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT] {
        ensure!(
            expose.split_whitespace().any(|p| p == port.to_string()),
            "Dockerfile must EXPOSE {port}"
        );
    }
    ensure!(
        text.contains(r#"ENTRYPOINT ["/usr/local/bin/flowgate"]"#),
        "ENTRYPOINT must be the flowgate binary"
    );
    Ok(())
}
