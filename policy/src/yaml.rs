//! Reading Namespaces, Pods, Nodes, NetworkPolicies and the cluster-scoped
//! policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//! ClusterNetworkPolicy) from Kubernetes YAML: multi-document streams, and
//! `kind: List` objects.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use serde_norway::Value;

use crate::crd::ClusterPolicyObject;
use crate::error::ParseError;

/// The most YAML one text (one file) may hold: far more than any cluster's
/// objects (etcd refuses objects over 1.5 MiB), small enough that a wrong
/// file cannot exhaust memory.
pub const MAX_YAML_BYTES: u64 = 128 << 20;

/// Labels one object may carry. Kubernetes sets no count, only the
/// object's size (etcd's 1.5 MiB); this is far above any real object and
/// keeps a hand-written file from making every selector walk a huge map.
pub const MAX_LABELS: usize = 1024;
/// Kubernetes' own bounds: a key is an optional DNS prefix (253) and `/`
/// before a name of at most 63; a value at most 63.
const MAX_LABEL_KEY_BYTES: usize = 253 + 1 + 63;
const MAX_LABEL_VALUE_BYTES: usize = 63;

/// Why `metadata.labels` of `value` is out of bounds, if it is.
fn labels_out_of_bounds(value: &Value) -> Option<String> {
    let labels = value.get("metadata")?.get("labels")?.as_mapping()?;
    if labels.len() > MAX_LABELS {
        return Some(format!(
            "{} labels, at most {MAX_LABELS} are taken",
            labels.len()
        ));
    }
    labels.iter().find_map(|(k, v)| {
        let key = k.as_str().unwrap_or_default();
        let val = v.as_str().unwrap_or_default();
        if key.len() > MAX_LABEL_KEY_BYTES {
            Some(format!(
                "a label key of {} bytes, at most {MAX_LABEL_KEY_BYTES}",
                key.len()
            ))
        } else if val.len() > MAX_LABEL_VALUE_BYTES {
            Some(format!(
                "label {key:?} has a value of {} bytes, at most {MAX_LABEL_VALUE_BYTES}",
                val.len()
            ))
        } else {
            None
        }
    })
}

/// The objects the engine needs, as the Kubernetes API defines them.
#[derive(Debug, Default, Clone)]
pub struct ClusterObjects {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<NetworkPolicy>,
    pub nodes: Vec<Node>,
    /// AdminNetworkPolicies, BaselineAdminNetworkPolicies and
    /// ClusterNetworkPolicies, in the order read.
    pub cluster_policies: Vec<ClusterPolicyObject>,
    /// Objects of other kinds, as `Kind namespace/name`: read and set aside.
    pub ignored: Vec<String>,
}

impl ClusterObjects {
    /// Adds every object of a YAML (or JSON) text. `source` names the text
    /// in errors, e.g. its file path.
    pub fn parse_yaml(&mut self, source: &str, text: &str) -> Result<(), ParseError> {
        if text.len() as u64 > MAX_YAML_BYTES {
            return Err(ParseError::TooLarge {
                source_name: source.to_string(),
                bytes: text.len() as u64,
                limit: MAX_YAML_BYTES,
            });
        }
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let document = i + 1;
            let value = Value::deserialize(doc).map_err(|e| ParseError::Yaml {
                source_name: source.to_string(),
                document,
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue; // an empty document, e.g. a trailing `---`
            }
            self.add_value(source, document, value)?;
        }
        Ok(())
    }

    /// Adds one object given as JSON (as the Kubernetes API returns it),
    /// with the checks a YAML document gets.
    pub fn add_json(&mut self, source: &str, value: serde_json::Value) -> Result<(), ParseError> {
        let value = serde_norway::to_value(value).map_err(|e| ParseError::Yaml {
            source_name: source.to_string(),
            document: 1,
            message: e.to_string(),
        })?;
        self.add_value(source, 1, value)
    }

    fn add_value(&mut self, source: &str, document: usize, value: Value) -> Result<(), ParseError> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(kind) = kind else {
            return Err(ParseError::NotAnObject {
                source_name: source.to_string(),
                document,
            });
        };
        let name = object_name(&value);
        let malformed = |message: String| ParseError::Object {
            source_name: source.to_string(),
            document,
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        if let Some(why) = labels_out_of_bounds(&value) {
            return Err(malformed(why));
        }
        match kind.as_str() {
            "List"
            | "NamespaceList"
            | "PodList"
            | "NodeList"
            | "NetworkPolicyList"
            | "AdminNetworkPolicyList"
            | "BaselineAdminNetworkPolicyList"
            | "ClusterNetworkPolicyList" => {
                let items = match value.get("items") {
                    None | Some(Value::Null) => return Ok(()),
                    Some(Value::Sequence(items)) => items.clone(),
                    Some(_) => return Err(malformed("`items` is not a list".into())),
                };
                let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
                for mut item in items {
                    // Items of typed lists may omit their kind and apiVersion.
                    if let (Some(k), Value::Mapping(m)) = (item_kind, &mut item) {
                        m.entry("kind".into()).or_insert_with(|| k.into());
                        let api = expected_api_version(k).unwrap_or("v1");
                        m.entry("apiVersion".into()).or_insert_with(|| api.into());
                    }
                    self.add_value(source, document, item)?;
                }
            }
            "Namespace" => self
                .namespaces
                .push(serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?),
            "Pod" => self
                .pods
                .push(serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?),
            "NetworkPolicy" => self
                .policies
                .push(serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?),
            "Node" => self
                .nodes
                .push(serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?),
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" | "ClusterNetworkPolicy" => {
                let expected = expected_api_version(&kind).expect("a tier kind");
                match value.get("apiVersion").and_then(Value::as_str) {
                    None => {}
                    Some(v) if v == expected => {}
                    Some(v) => {
                        return Err(malformed(format!(
                            "apiVersion `{v}` is not supported for {kind} (expected `{expected}`)"
                        )));
                    }
                }
                let object = match kind.as_str() {
                    "AdminNetworkPolicy" => ClusterPolicyObject::Admin(
                        serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?,
                    ),
                    "BaselineAdminNetworkPolicy" => ClusterPolicyObject::Baseline(
                        serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?,
                    ),
                    _ => ClusterPolicyObject::Cluster(
                        serde_norway::from_value(value).map_err(|e| malformed(e.to_string()))?,
                    ),
                };
                self.cluster_policies.push(object);
            }
            other => self.ignored.push(format!("{other} {name}")),
        }
        Ok(())
    }
}

/// The one apiVersion flowgate reads each kind at.
fn expected_api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" | "Pod" | "Node" => "v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => "policy.networking.k8s.io/v1alpha1",
        "ClusterNetworkPolicy" => "policy.networking.k8s.io/v1alpha2",
        _ => return None,
    })
}

fn object_name(value: &Value) -> String {
    let meta = value.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => "<unnamed>".to_string(),
    }
}

/// Reads every `.yaml`, `.yml` and `.json` file of the given files and
/// folders (folders recursively, in name order).
#[cfg(feature = "fs")]
pub fn load_paths(
    paths: &[impl AsRef<std::path::Path>],
) -> Result<ClusterObjects, crate::LoadError> {
    use crate::LoadError;
    use std::path::{Path, PathBuf};

    fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            entries.sort();
            for entry in entries {
                let is_yaml = entry
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if entry.is_dir() || is_yaml {
                    collect(&entry, out)?;
                }
            }
        } else {
            std::fs::metadata(path).map_err(io)?;
            out.push(path.to_path_buf());
        }
        Ok(())
    }

    let mut objects = ClusterObjects::default();
    for path in paths {
        let path = path.as_ref();
        let mut files = Vec::new();
        collect(path, &mut files)?;
        if files.is_empty() {
            return Err(LoadError::Empty {
                path: path.to_path_buf(),
            });
        }
        for file in files {
            let io = |source| LoadError::Io {
                path: file.clone(),
                source,
            };
            // Before reading: a huge file is refused without loading it.
            let bytes = std::fs::metadata(&file).map_err(io)?.len();
            if bytes > MAX_YAML_BYTES {
                return Err(crate::ParseError::TooLarge {
                    source_name: file.display().to_string(),
                    bytes,
                    limit: MAX_YAML_BYTES,
                }
                .into());
            }
            let text = std::fs::read_to_string(&file).map_err(io)?;
            objects.parse_yaml(&file.display().to_string(), &text)?;
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_over_the_limit_is_refused_naming_the_limit() {
        let big = " ".repeat(MAX_YAML_BYTES as usize + 1);
        let err = ClusterObjects::default()
            .parse_yaml("big.yaml", &big)
            .unwrap_err();
        assert!(
            err.to_string().contains("big.yaml") && err.to_string().contains("the limit is"),
            "{err}"
        );
    }

    #[test]
    fn labels_out_of_bounds_are_refused_naming_the_object() {
        let pod = |labels: String| {
            format!(
                "kind: Pod\napiVersion: v1\nmetadata: {{namespace: a, name: p, labels: {{{labels}}}}}\n"
            )
        };
        let many = (0..=MAX_LABELS)
            .map(|i| format!("k{i}: v"))
            .collect::<Vec<_>>()
            .join(", ");
        let long_value = format!("app: {}", "v".repeat(64));
        let long_key = format!("{}: v", "k".repeat(318));
        for (labels, says) in [
            (many, "1025 labels"),
            (long_value, "value of 64 bytes"),
            (long_key, "key of 318 bytes"),
        ] {
            let err = ClusterObjects::default()
                .parse_yaml("p.yaml", &pod(labels))
                .unwrap_err()
                .to_string();
            assert!(err.contains("Pod `a/p`") && err.contains(says), "{err}");
        }
        let mut ok = ClusterObjects::default();
        ok.parse_yaml("p.yaml", &pod(format!("app: {}", "v".repeat(63))))
            .unwrap();
        assert_eq!(ok.pods.len(), 1);
    }

    #[test]
    fn lists_and_typed_lists_are_unpacked() {
        let mut o = ClusterObjects::default();
        o.parse_yaml("lists.yaml", include_str!("../tests/fixtures/lists.yaml"))
            .unwrap();
        assert_eq!(o.namespaces.len(), 1);
        assert_eq!(o.pods.len(), 1);
        assert_eq!(o.policies.len(), 1);
        assert_eq!(o.policies[0].metadata.name.as_deref(), Some("deny"));
        assert_eq!(o.ignored, vec!["Service a/svc".to_string()]);
    }
}
