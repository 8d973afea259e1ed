//! Cluster labels (`env=prod`): their syntax and label-selector matching, shared by the agent
//! (which reports them), cnc (command selectors), the api (filters, user scopes) and policies
//! (derogation scopes).

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("label key {0:?} must be 1-253 letters, digits, '-', '_', '.' or '/'")]
    Key(String),
    #[error("label value {0:?} must be at most 63 letters, digits, '-', '_' or '.'")]
    Value(String),
}

/// Checks one label: a Kubernetes-style key (1-253 of letters, digits, `-`, `_`, `.`, `/`) and
/// value (at most 63 of letters, digits, `-`, `_`, `.`; may be empty).
pub fn validate(key: &str, value: &str) -> Result<(), LabelError> {
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if key.is_empty() || key.len() > 253 || !key.chars().all(key_char) {
        return Err(LabelError::Key(key.to_owned()));
    }
    let value_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.len() > 63 || !value.chars().all(value_char) {
        return Err(LabelError::Value(value.to_owned()));
    }
    Ok(())
}

/// Parses `key=value` (surrounding spaces trimmed) and validates it.
pub fn parse(s: &str) -> Result<(String, String), LabelError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| LabelError::NotKeyValue(s.to_owned()))?;
    let (k, v) = (k.trim(), v.trim());
    validate(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Validates every label of a map (e.g. a selector received over the api).
pub fn validate_all<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), LabelError> {
    labels.into_iter().try_for_each(|(k, v)| validate(k, v))
}

/// Whether `labels` carry every `key=value` of `selector` (an empty selector matches all).
pub fn matches<S: std::hash::BuildHasher>(
    selector: &BTreeMap<String, String>,
    labels: &HashMap<String, String, S>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_labels() {
        assert_eq!(parse(" env = prod "), Ok(("env".into(), "prod".into())));
        assert_eq!(
            parse("app.kubernetes.io/name="),
            Ok(("app.kubernetes.io/name".into(), String::new()))
        );
        assert!(matches!(parse("env"), Err(LabelError::NotKeyValue(_))));
        assert!(matches!(parse("=x"), Err(LabelError::Key(_))));
        assert!(matches!(parse("e nv=x"), Err(LabelError::Key(_))));
        assert!(matches!(parse("env=a b"), Err(LabelError::Value(_))));
        assert!(matches!(parse("env=a*"), Err(LabelError::Value(_))));
        assert!(matches!(
            parse(&format!("env={}", "x".repeat(64))),
            Err(LabelError::Value(_))
        ));
    }

    #[test]
    fn selectors_need_every_label() {
        let labels: HashMap<String, String> = [
            ("env".into(), "prod".into()),
            ("region".into(), "eu".into()),
        ]
        .into();
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(matches(&sel(&[]), &labels));
        assert!(matches(&sel(&[("env", "prod")]), &labels));
        assert!(matches(&sel(&[("env", "prod"), ("region", "eu")]), &labels));
        assert!(!matches(&sel(&[("env", "dev")]), &labels));
        assert!(!matches(&sel(&[("team", "core")]), &labels));
    }
}
