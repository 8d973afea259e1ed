//! Kubernetes object (JSON) → `InventoryObject`: metadata, a digest of the object's intent, and
//! the attributes later audits and health checks read. Secret and ConfigMap values never leave
//! the cluster (only their keys do), nor do literal `env` values of workloads.

use std::collections::HashMap;

use canopy_kit::proto::event::v1::InventoryObject;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Attribute set on an object whose attributes were dropped to fit a chunk.
pub const TRUNCATED: &str = "canopy.io/truncated";

/// Fields of `status` kept per kind (the rest, e.g. a node's image list, is noise).
fn status_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "phase",
            "reason",
            "conditions",
            "containerStatuses",
            "initContainerStatuses",
            "qosClass",
        ],
        "Node" => &["conditions", "nodeInfo", "capacity", "allocatable"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => &[
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "updatedReplicas",
            "currentNumberScheduled",
            "desiredNumberScheduled",
            "numberUnavailable",
            "conditions",
        ],
        "Job" => &["active", "succeeded", "failed", "conditions"],
        "CronJob" => &["lastScheduleTime", "lastSuccessfulTime"],
        "Service" => &["loadBalancer"],
        "Ingress" => &["loadBalancer"],
        _ => &[],
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn keys_of(v: Option<&Value>) -> Value {
    let mut keys: Vec<&String> = v
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    keys.sort();
    Value::from(keys.into_iter().cloned().collect::<Vec<_>>())
}

/// Marks a literal environment value that was left in the cluster.
pub const REDACTED: &str = "<redacted>";

/// Replaces the literal values of containers' `env` entries (`env[*].value`) anywhere in a
/// workload spec: they often hold passwords and tokens (the very thing the ENV-SECRET-LITERAL
/// check flags) and must not travel to the seed. Names and `valueFrom` references stay.
fn redact_env_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "env"
                    && let Some(entries) = child.as_array_mut()
                {
                    for value in entries
                        .iter_mut()
                        .filter_map(|e| e.get_mut("value"))
                        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                    {
                        *value = Value::from(REDACTED);
                    }
                } else {
                    redact_env_values(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_env_values),
        _ => {}
    }
}

/// What audits and health checks need of an object, as compact JSON strings by field.
pub fn attributes(kind: &str, obj: &Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut put = |name: &str, v: Option<&Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            out.insert(name.to_owned(), compact(v));
        }
    };
    match kind {
        "Secret" => {
            put("type", obj.get("type"));
            out.insert("keys".into(), compact(&keys_of(obj.get("data"))));
        }
        "ConfigMap" => {
            let mut keys = keys_of(obj.get("data"));
            if let (Some(list), Some(bin)) = (
                keys.as_array_mut(),
                keys_of(obj.get("binaryData")).as_array(),
            ) {
                list.extend(bin.iter().cloned());
            }
            out.insert("keys".into(), compact(&keys));
        }
        "Role" | "ClusterRole" => {
            put("rules", obj.get("rules"));
            put("aggregationRule", obj.get("aggregationRule"));
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            put("roleRef", obj.get("roleRef"));
            put("subjects", obj.get("subjects"));
        }
        "ServiceAccount" => {
            put(
                "automountServiceAccountToken",
                obj.get("automountServiceAccountToken"),
            );
            put("imagePullSecrets", obj.get("imagePullSecrets"));
        }
        "Namespace" => {}
        _ => {
            if let Some(spec) = obj.get("spec").filter(|v| !v.is_null()) {
                let mut spec = spec.clone();
                redact_env_values(&mut spec);
                out.insert("spec".into(), compact(&spec));
            }
        }
    }
    if let Some(status) = obj.get("status").and_then(Value::as_object) {
        let kept: Map<String, Value> = status_fields(kind)
            .iter()
            .filter_map(|f| status.get(*f).map(|v| ((*f).to_owned(), v.clone())))
            .collect();
        if !kept.is_empty() {
            out.insert("status".into(), compact(&Value::Object(kept)));
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        // Annotations some standards read (e.g. AppArmor), never the whole set: they often carry
        // last-applied configurations with secret values.
        let kept: Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| {
                k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                    || k.starts_with("seccomp.security.alpha.kubernetes.io/")
                    || k.starts_with("canopy.dev/")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            out.insert("annotations".into(), compact(&Value::Object(kept)));
        }
    }
    out
}

/// SHA-256 of what the object asks for: without status, resourceVersion, managedFields and
/// other bookkeeping, so that it changes only when the object's intent does. Secret and
/// ConfigMap values are hashed, not copied (a changed value changes the digest).
pub fn digest(obj: &Value) -> String {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in ["resourceVersion", "managedFields", "generation", "selfLink"] {
                meta.remove(f);
            }
        }
    }
    // serde_json's Map is ordered by key, so the text is canonical.
    hex::encode(Sha256::digest(compact(&v).as_bytes()))
}

/// The inventory record of one object of kind `kind` / `api_version`.
pub fn to_inventory_object(api_version: &str, kind: &str, obj: &Value) -> InventoryObject {
    let meta = obj.get("metadata");
    let text = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let labels = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let owner = meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .or_else(|| refs.first())
        });
    let created_at = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        });
    InventoryObject {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name"),
        uid: text("/metadata/uid"),
        resource_version: text("/metadata/resourceVersion"),
        labels,
        owner_kind: owner
            .and_then(|o| o.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        owner_name: owner
            .and_then(|o| o.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        digest: digest(obj),
        attributes: attributes(kind, obj),
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_and_config_maps_carry_keys_never_values() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "shop", "uid": "u1"},
            "data": {"password": "c2VjcmV0", "user": "YWRtaW4="}});
        let o = to_inventory_object("v1", "Secret", &secret);
        let all = format!("{:?}", o.attributes);
        assert!(
            !all.contains("c2VjcmV0") && !all.contains("YWRtaW4="),
            "{all}"
        );
        assert_eq!(o.attributes["keys"], r#"["password","user"]"#);
        assert_eq!(o.attributes["type"], r#""Opaque""#);
        let cm =
            json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"token": "hunter2"}});
        let o = to_inventory_object("v1", "ConfigMap", &cm);
        assert!(!format!("{:?}", o.attributes).contains("hunter2"));
        assert_eq!(o.attributes["keys"], r#"["token"]"#);
    }

    #[test]
    fn literal_env_values_of_workloads_are_redacted_names_and_references_kept() {
        let deploy = json!({"kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "migrate", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}],
                "containers": [{"name": "api", "image": "api:1", "env": [
                    {"name": "API_TOKEN", "value": "s3cr3t"},
                    {"name": "EMPTY", "value": ""},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}]}}}});
        let o = to_inventory_object("apps/v1", "Deployment", &deploy);
        let spec = &o.attributes["spec"];
        assert!(
            !spec.contains("hunter2") && !spec.contains("s3cr3t"),
            "{spec}"
        );
        let spec: Value = serde_json::from_str(spec).unwrap();
        let env = &spec["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0], json!({"name": "API_TOKEN", "value": REDACTED}));
        assert_eq!(env[1]["value"], "");
        assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["key"], "pw");
        assert_eq!(spec["template"]["spec"]["containers"][0]["image"], "api:1");
        // The digest still sees the real object: a changed value changes it.
        let mut changed = deploy.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("other");
        assert_ne!(o.digest, digest(&changed));
    }

    #[test]
    fn maps_metadata_owner_and_spec() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "uid": "u2",
            "resourceVersion": "7", "labels": {"app": "web"}, "creationTimestamp": "2026-01-02T03:04:05Z",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": true}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{secret}"}},
            "spec": {"hostNetwork": true}, "status": {"phase": "Running", "podIP": "10.0.0.1"}});
        let o = to_inventory_object("v1", "Pod", &pod);
        assert_eq!(
            (o.namespace.as_str(), o.name.as_str(), o.uid.as_str()),
            ("shop", "web-1", "u2")
        );
        assert_eq!(
            (o.owner_kind.as_str(), o.owner_name.as_str()),
            ("ReplicaSet", "web-abc")
        );
        assert_eq!(o.labels["app"], "web");
        assert_eq!(o.created_at.map(|t| t.seconds), Some(1_767_323_045));
        assert_eq!(o.attributes["spec"], r#"{"hostNetwork":true}"#);
        assert_eq!(o.attributes["status"], r#"{"phase":"Running"}"#);
        assert!(!o.attributes.contains_key("annotations"));
    }

    #[test]
    fn the_digest_ignores_status_and_bookkeeping() {
        let a = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"x": 1}, "status": {"phase": "Pending"}});
        let b = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "2"}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        let c = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "2"}, "spec": {"x": 2}});
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }
}
