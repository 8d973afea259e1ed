//! Shared fixtures: a compliant pod, JSON-pointer edits, workload wrappers and audit helpers.

use canopy_audit::{Auditor, Finding, Policy};
use serde_json::{Value, json};

/// A Pod that passes every check of the catalogue on its own (NETPOL-MISSING and NAKED-POD
/// aside, which need other objects / an owner).
pub fn compliant_spec() -> Value {
    let sc = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}
    });
    let resources = json!({
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"}
    });
    json!({
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "initContainers": [{
            "name": "init",
            "image": "registry.example.com/init:1.0",
            "imagePullPolicy": "Always",
            "securityContext": sc,
            "resources": resources
        }],
        "containers": [{
            "name": "app",
            "image": "registry.example.com/app:1.0",
            "imagePullPolicy": "Always",
            "securityContext": sc,
            "resources": resources,
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}}
        }],
        "ephemeralContainers": [{
            "name": "debug",
            "image": "registry.example.com/debug:1.0",
            "imagePullPolicy": "Always",
            "securityContext": sc
        }]
    })
}

/// A compliant Pod object in namespace `ns`, owned by a (non-workload) controller so that
/// NAKED-POD passes and the Pod is still audited.
pub fn compliant_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "r", "uid": "1"}]
        },
        "spec": compliant_spec()
    })
}

/// Sets the value at a JSON pointer, creating objects and array slots on the way.
pub fn set(v: &mut Value, pointer: &str, new: Value) {
    let parts: Vec<String> = pointer
        .trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = v;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(idx) = p.parse::<usize>() {
            if !cur.is_array() {
                *cur = Value::Array(Vec::new());
            }
            let a = cur.as_array_mut().unwrap();
            while a.len() <= idx {
                a.push(json!({}));
            }
            if last {
                a[idx] = new;
                return;
            }
            cur = &mut a[idx];
        } else {
            if !cur.is_object() {
                *cur = json!({});
            }
            let o = cur.as_object_mut().unwrap();
            if last {
                o.insert(p.clone(), new);
                return;
            }
            cur = o.entry(p.clone()).or_insert(json!({}));
        }
    }
}

/// Removes the value at a JSON pointer.
pub fn remove(v: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(o)) => {
            o.remove(last);
        }
        Some(Value::Array(a)) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        _ => {}
    }
}

/// `compliant_pod()` with edits applied.
pub fn pod_with(edits: &[(&str, Value)]) -> Value {
    let mut p = compliant_pod();
    for (ptr, v) in edits {
        set(&mut p, ptr, v.clone());
    }
    p
}

/// Every workload kind, with the path of its pod spec and of its pod (template) metadata.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("Pod", "spec", "metadata"),
    ("Deployment", "spec.template.spec", "spec.template.metadata"),
    (
        "StatefulSet",
        "spec.template.spec",
        "spec.template.metadata",
    ),
    ("DaemonSet", "spec.template.spec", "spec.template.metadata"),
    ("ReplicaSet", "spec.template.spec", "spec.template.metadata"),
    ("Job", "spec.template.spec", "spec.template.metadata"),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec",
        "spec.jobTemplate.spec.template.metadata",
    ),
    (
        "ReplicationController",
        "spec.template.spec",
        "spec.template.metadata",
    ),
    ("PodTemplate", "template.spec", "template.metadata"),
];

/// Moves a Pod field path (`spec.…`, `metadata.…`) under another kind's pod spec `sp` and pod
/// metadata `mp`.
pub fn relocate(path: &str, sp: &str, mp: &str) -> String {
    if let Some(rest) = path.strip_prefix("spec") {
        format!("{sp}{rest}")
    } else if let Some(rest) = path.strip_prefix("metadata") {
        format!("{mp}{rest}")
    } else {
        path.to_owned()
    }
}

/// Wraps a pod spec and pod metadata into an object of `kind`.
pub fn workload(kind: &str, pod_meta: Value, spec: Value) -> Value {
    let template = json!({"metadata": pod_meta, "spec": spec});
    let (api_version, spec) = match kind {
        "Pod" => {
            let mut meta = template["metadata"].clone();
            set(&mut meta, "/name", json!("w"));
            set(&mut meta, "/namespace", json!("ns"));
            set(
                &mut meta,
                "/ownerReferences",
                json!([{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "r", "uid": "1"}]),
            );
            return json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].clone()});
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => (
            "apps/v1",
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template}),
        ),
        "Job" => ("batch/v1", json!({"template": template})),
        "CronJob" => (
            "batch/v1",
            json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}),
        ),
        "ReplicationController" => ("v1", json!({"template": template})),
        "PodTemplate" => {
            return json!({
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "w", "namespace": "ns"},
                "template": template
            });
        }
        other => panic!("not a workload kind: {other}"),
    };
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "w", "namespace": "ns"},
        "spec": spec
    })
}

/// Runs the default auditor over the objects and returns every finding (per-object and
/// cross-object).
pub fn audit(objs: &[Value]) -> Vec<Finding> {
    audit_with(&Policy::default(), objs)
}

pub fn audit_with(policy: &Policy, objs: &[Value]) -> Vec<Finding> {
    let mut a: Auditor<()> = Auditor::with_policy(policy).unwrap();
    let mut out = Vec::new();
    for o in objs {
        out.extend(a.add_tagged(o, ()));
    }
    out.extend(a.finish_tagged().into_iter().map(|(f, ())| f));
    canopy_audit::sort_findings(&mut out);
    out
}

/// The paths of `check`'s findings, sorted.
pub fn paths(findings: &[Finding], check: &str) -> Vec<String> {
    let mut p: Vec<String> = findings
        .iter()
        .filter(|f| f.check == check)
        .map(|f| f.path.clone())
        .collect();
    p.sort();
    p
}

/// The paths of `check`'s findings for one object audited alone.
pub fn check_paths(obj: &Value, check: &str) -> Vec<String> {
    paths(&audit(std::slice::from_ref(obj)), check)
}

pub fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}
