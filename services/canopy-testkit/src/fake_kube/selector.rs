//! Label and field selectors as the API server parses them from `labelSelector` /
//! `fieldSelector` query parameters.

use serde_json::Value;

/// One parsed requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term)?);
        }
        Ok(Self(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced ')' in selector {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in selector {text:?}"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = term.split_once(op) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("expected a parenthesised set in {term:?}"))?;
            let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
            return Ok(if negate {
                Requirement::NotIn(key(k)?, values)
            } else {
                Requirement::In(key(k)?, values)
            });
        }
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    Ok(Requirement::Exists(key(term)?))
}

fn key(text: &str) -> Result<String, String> {
    let k = text.trim();
    let valid = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if valid {
        Ok(k.to_string())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn value(text: &str) -> Result<String, String> {
    let v = text.trim();
    let valid = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(v.to_string())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

/// A conjunction of `path=value` / `path!=value` terms over object fields
/// (`metadata.name`, `spec.nodeName`, `status.phase`, ...); a missing field reads as "".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, negate, wanted) = if let Some((p, v)) = term.split_once("!=") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, false, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let (path, wanted) = (path.trim(), wanted.trim());
            let path_ok = !path.is_empty()
                && !path.starts_with('.')
                && !path.ends_with('.')
                && !path.contains("..")
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
            if !path_ok {
                return Err(format!("invalid field path {path:?} in {term:?}"));
            }
            if wanted.contains(['=', '!', '(', ')', ' ']) {
                return Err(format!("invalid field value {wanted:?} in {term:?}"));
            }
            terms.push((path.to_string(), negate, wanted.to_string()));
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, negate, wanted)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *wanted) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_terms() {
        let s = LabelSelector::parse("app=web,tier==front,env!=prod").unwrap();
        assert!(s.matches(&pod(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches(&pod(json!({"app": "web", "tier": "front", "env": "prod"}))));
        assert!(!s.matches(&pod(json!({"app": "api", "tier": "front"}))));
    }

    #[test]
    fn set_and_existence_terms() {
        let s = LabelSelector::parse("app in (web, api),env notin (prod),team,!legacy").unwrap();
        assert!(s.matches(&pod(json!({"app": "api", "team": "x"}))));
        assert!(!s.matches(&pod(json!({"app": "db", "team": "x"}))));
        assert!(!s.matches(&pod(json!({"app": "api"}))));
        assert!(!s.matches(&pod(json!({"app": "api", "team": "x", "legacy": "1"}))));
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_terms() {
        let s =
            FieldSelector::parse("metadata.name=p,spec.nodeName!=n2,status.phase=Running").unwrap();
        assert!(s.matches(&pod(json!({}))));
        assert!(
            !FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .matches(&pod(json!({})))
        );
        assert!(
            FieldSelector::parse("spec.missing=")
                .unwrap()
                .matches(&pod(json!({})))
        );
        for bad in [
            "status.phase===Running",
            "=x",
            "a..b=c",
            "metadata.name",
            "x=(y)",
        ] {
            assert!(FieldSelector::parse(bad).is_err(), "{bad}");
        }
    }
}
