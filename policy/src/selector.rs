//! Kubernetes label selectors: `matchLabels` and `matchExpressions`.

use std::collections::BTreeMap;
use std::fmt;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In { key: String, values: Vec<String> },
    NotIn { key: String, values: Vec<String> },
    Exists { key: String },
    DoesNotExist { key: String },
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            // NotIn also matches objects that lack the key, as in Kubernetes.
            Requirement::NotIn { key, values } => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        }
    }

    /// Why `labels` fail this requirement, in words; `None` if they pass.
    fn miss(&self, labels: &Labels) -> Option<String> {
        if self.matches(labels) {
            return None;
        }
        Some(match self {
            Requirement::In { key, values } => match labels.get(key) {
                None => format!(
                    "lacks label {key} (wanted {key} in ({}))",
                    values.join(", ")
                ),
                Some(v) => format!("has {key}={v}, not in ({})", values.join(", ")),
            },
            Requirement::NotIn { key, values } => {
                let v = labels.get(key).map(String::as_str).unwrap_or_default();
                format!(
                    "has {key}={v}, which the selector excludes ({key} notin ({}))",
                    values.join(", ")
                )
            }
            Requirement::Exists { key } => format!("lacks label {key}"),
            Requirement::DoesNotExist { key } => {
                let v = labels.get(key).map(String::as_str).unwrap_or_default();
                format!("has label {key}={v}, which the selector requires to be absent")
            }
        })
    }
}

/// A label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    match_labels: Vec<(String, String)>,
    expressions: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub(crate) fn new(match_labels: Vec<(String, String)>, expressions: Vec<Requirement>) -> Self {
        Self {
            match_labels,
            expressions,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    pub fn match_labels(&self) -> &[(String, String)] {
        &self.match_labels
    }

    pub fn expressions(&self) -> &[Requirement] {
        &self.expressions
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| r.matches(labels))
    }

    /// Every reason `labels` fail the selector (empty when they match).
    pub fn misses(&self, labels: &Labels) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.match_labels {
            match labels.get(k) {
                None => out.push(format!("lacks label {k}={v}")),
                Some(have) if have != v => out.push(format!("has {k}={have}, not {k}={v}")),
                Some(_) => {}
            }
        }
        out.extend(self.expressions.iter().filter_map(|r| r.miss(labels)));
        out
    }
}

impl fmt::Display for Selector {
    /// The kubectl form: `app=web,tier in (a,b),!legacy`; `<all>` for the empty selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("<all>");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.expressions {
            parts.push(match r {
                Requirement::In { key, values } => format!("{key} in ({})", values.join(",")),
                Requirement::NotIn { key, values } => format!("{key} notin ({})", values.join(",")),
                Requirement::Exists { key } => key.clone(),
                Requirement::DoesNotExist { key } => format!("!{key}"),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let case = |r: Requirement| Selector::new(vec![], vec![r]).matches(&l);
        assert!(case(Requirement::In {
            key: "app".into(),
            values: vals(&["web", "api"])
        }));
        assert!(!case(Requirement::In {
            key: "app".into(),
            values: vals(&["api"])
        }));
        assert!(!case(Requirement::In {
            key: "zone".into(),
            values: vals(&["a"])
        }));
        assert!(case(Requirement::NotIn {
            key: "app".into(),
            values: vals(&["api"])
        }));
        assert!(!case(Requirement::NotIn {
            key: "app".into(),
            values: vals(&["web"])
        }));
        // NotIn matches when the key is absent.
        assert!(case(Requirement::NotIn {
            key: "zone".into(),
            values: vals(&["a"])
        }));
        assert!(case(Requirement::Exists { key: "tier".into() }));
        assert!(!case(Requirement::Exists { key: "zone".into() }));
        assert!(case(Requirement::DoesNotExist { key: "zone".into() }));
        assert!(!case(Requirement::DoesNotExist { key: "app".into() }));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = Selector::new(
            vec![("app".into(), "web".into())],
            vec![Requirement::Exists { key: "tier".into() }],
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "x")])));
        assert_eq!(
            s.misses(&labels(&[("app", "api")])),
            vec![
                "has app=api, not app=web".to_string(),
                "lacks label tier".to_string()
            ]
        );
        assert_eq!(s.to_string(), "app=web,tier");
    }
}
