//! Cluster health from listed Kubernetes objects: node conditions, pods in trouble, workloads
//! short of replicas, pending claims, TLS certificates about to expire, and usage against
//! requests. Pure: the objects and the time come in as values.

use std::collections::BTreeMap;

use base64::Engine as _;
use canopy_kit::proto::event::v1::{
    CertificateExpiry, HealthReported, NodeHealth, PodProblem, PvcProblem, WorkloadProblem,
    WorkloadUsage,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// What one health look listed. `pod_metrics` is `None` when the metrics API is not served.
#[derive(Debug, Default)]
pub struct Listed {
    pub nodes: Vec<Value>,
    pub pods: Vec<Value>,
    pub deployments: Vec<Value>,
    pub statefulsets: Vec<Value>,
    pub daemonsets: Vec<Value>,
    pub replicasets: Vec<Value>,
    pub pvcs: Vec<Value>,
    pub secrets: Vec<Value>,
    pub pod_metrics: Option<Vec<Value>>,
}

/// How the report is judged.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub now: DateTime<Utc>,
    /// Certificates expiring before `now + cert_window` are reported.
    pub cert_window: Duration,
    /// Restarts from which a container counts as crash-looping even between back-offs.
    pub restart_threshold: u32,
    /// A pod terminating for longer than this is stuck.
    pub stuck_after: Duration,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn u(v: &Value, pointer: &str) -> Option<u32> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn time(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s(v, pointer))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Builds the report.
pub fn report(listed: &Listed, settings: &Settings) -> HealthReported {
    let owners = Owners::new(&listed.replicasets);
    let mut report = HealthReported {
        nodes: listed.nodes.iter().map(node).collect(),
        pods: listed
            .pods
            .iter()
            .filter_map(|p| pod_problem(p, &owners, settings))
            .collect(),
        workloads: Vec::new(),
        pvcs: listed.pvcs.iter().filter_map(pvc_problem).collect(),
        certificates: listed
            .secrets
            .iter()
            .filter_map(|sec| expiring(sec, settings))
            .collect(),
        metrics_available: listed.pod_metrics.is_some(),
        usage: Vec::new(),
    };
    for (kind, list) in [
        ("Deployment", &listed.deployments),
        ("StatefulSet", &listed.statefulsets),
        ("DaemonSet", &listed.daemonsets),
    ] {
        report
            .workloads
            .extend(list.iter().filter_map(|w| workload_problem(kind, w)));
    }
    if let Some(metrics) = &listed.pod_metrics {
        report.usage = usage(&listed.pods, metrics, &owners);
    }
    report
}

// === nodes ===

fn node(n: &Value) -> NodeHealth {
    let condition = |kind: &str| {
        items(n, "/status/conditions")
            .find(|c| s(c, "/type") == kind)
            .map(|c| s(c, "/status") == "True")
    };
    NodeHealth {
        name: s(n, "/metadata/name").to_owned(),
        // A node that never reported Ready is not ready.
        ready: condition("Ready").unwrap_or(false),
        memory_pressure: condition("MemoryPressure").unwrap_or(false),
        disk_pressure: condition("DiskPressure").unwrap_or(false),
        pid_pressure: condition("PIDPressure").unwrap_or(false),
        unschedulable: n
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

// === pods ===

/// Resolves a pod's controller to the workload people know: a ReplicaSet to its Deployment.
struct Owners<'a> {
    /// (namespace, replicaset) -> owning Deployment.
    replicasets: BTreeMap<(&'a str, &'a str), &'a str>,
}

impl<'a> Owners<'a> {
    fn new(replicasets: &'a [Value]) -> Self {
        let mut map = BTreeMap::new();
        for rs in replicasets {
            if let Some(owner) = controller(rs).filter(|(k, _)| *k == "Deployment") {
                map.insert(
                    (s(rs, "/metadata/namespace"), s(rs, "/metadata/name")),
                    owner.1,
                );
            }
        }
        Self { replicasets: map }
    }

    /// `(kind, name)` of the workload owning `pod`, if any.
    fn of(&self, pod: &'a Value) -> Option<(&'a str, String)> {
        let (kind, name) = controller(pod)?;
        if kind != "ReplicaSet" {
            return Some((kind, name.to_owned()));
        }
        let ns = s(pod, "/metadata/namespace");
        if let Some(deployment) = self.replicasets.get(&(ns, name)) {
            return Some(("Deployment", (*deployment).to_owned()));
        }
        // The ReplicaSet is not listed (yet): its name is the Deployment's plus the template hash.
        let hash = s(pod, "/metadata/labels/pod-template-hash");
        match name.strip_suffix(hash).and_then(|n| n.strip_suffix('-')) {
            Some(deployment) if !hash.is_empty() => Some(("Deployment", deployment.to_owned())),
            _ => Some(("ReplicaSet", name.to_owned())),
        }
    }
}

fn controller(obj: &Value) -> Option<(&str, &str)> {
    items(obj, "/metadata/ownerReferences")
        .find(|o| o.pointer("/controller").and_then(Value::as_bool) == Some(true))
        .map(|o| (s(o, "/kind"), s(o, "/name")))
}

const WAITING_PROBLEMS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
];

fn pod_problem(p: &Value, owners: &Owners<'_>, settings: &Settings) -> Option<PodProblem> {
    let (owner_kind, owner_name) = owners
        .of(p)
        .map_or((String::new(), String::new()), |(k, n)| (k.to_owned(), n));
    let base = PodProblem {
        namespace: s(p, "/metadata/namespace").to_owned(),
        name: s(p, "/metadata/name").to_owned(),
        owner_kind,
        owner_name,
        ..Default::default()
    };
    // Stuck terminating: deleted long ago and still there.
    if let Some(deleted) = time(p, "/metadata/deletionTimestamp")
        && settings.now - deleted > settings.stuck_after
    {
        return Some(PodProblem {
            reason: "Terminating".to_owned(),
            message: format!("terminating since {}", deleted.to_rfc3339()),
            since: Some(timestamp(deleted)),
            ..base
        });
    }
    let statuses =
        items(p, "/status/containerStatuses").chain(items(p, "/status/initContainerStatuses"));
    let mut worst: Option<PodProblem> = None;
    for c in statuses {
        let restarts = u(c, "/restartCount").unwrap_or(0);
        let waiting = s(c, "/state/waiting/reason");
        let looping = waiting == "CrashLoopBackOff" || restarts >= settings.restart_threshold;
        let reason = if WAITING_PROBLEMS.contains(&waiting) {
            waiting
        } else if looping {
            "CrashLoopBackOff"
        } else {
            continue;
        };
        let candidate = PodProblem {
            reason: reason.to_owned(),
            container: s(c, "/name").to_owned(),
            restarts,
            message: s(c, "/state/waiting/message").to_owned(),
            since: time(c, "/lastState/terminated/finishedAt").map(timestamp),
            ..base.clone()
        };
        if worst.as_ref().is_none_or(|w| w.restarts < restarts) {
            worst = Some(candidate);
        }
    }
    if worst.is_some() {
        return worst;
    }
    if s(p, "/status/phase") == "Pending"
        && let Some(c) = items(p, "/status/conditions").find(|c| {
            s(c, "/type") == "PodScheduled"
                && s(c, "/status") == "False"
                && s(c, "/reason") == "Unschedulable"
        })
    {
        return Some(PodProblem {
            reason: "Unschedulable".to_owned(),
            message: s(c, "/message").to_owned(),
            since: time(c, "/lastTransitionTime").map(timestamp),
            ..base
        });
    }
    if s(p, "/status/phase") == "Unknown" {
        return Some(PodProblem {
            reason: "Unknown".to_owned(),
            message: s(p, "/status/message").to_owned(),
            ..base
        });
    }
    None
}

// === workloads, claims, certificates ===

fn workload_problem(kind: &str, w: &Value) -> Option<WorkloadProblem> {
    let (desired, available) = if kind == "DaemonSet" {
        (
            u(w, "/status/desiredNumberScheduled").unwrap_or(0),
            u(w, "/status/numberAvailable").unwrap_or(0),
        )
    } else {
        (
            u(w, "/spec/replicas").unwrap_or(1),
            u(w, "/status/availableReplicas")
                .or_else(|| u(w, "/status/readyReplicas"))
                .unwrap_or(0),
        )
    };
    (available < desired).then(|| WorkloadProblem {
        kind: kind.to_owned(),
        namespace: s(w, "/metadata/namespace").to_owned(),
        name: s(w, "/metadata/name").to_owned(),
        desired,
        available,
    })
}

fn pvc_problem(c: &Value) -> Option<PvcProblem> {
    let phase = s(c, "/status/phase");
    matches!(phase, "Pending" | "Lost").then(|| PvcProblem {
        namespace: s(c, "/metadata/namespace").to_owned(),
        name: s(c, "/metadata/name").to_owned(),
        phase: phase.to_owned(),
    })
}

fn expiring(secret: &Value, settings: &Settings) -> Option<CertificateExpiry> {
    if s(secret, "/type") != "kubernetes.io/tls" {
        return None;
    }
    let pem = base64::engine::general_purpose::STANDARD
        .decode(s(secret, "/data/tls.crt"))
        .ok()?;
    let (not_after, subject) = first_certificate(&pem)?;
    (not_after < settings.now + settings.cert_window).then(|| CertificateExpiry {
        namespace: s(secret, "/metadata/namespace").to_owned(),
        secret: s(secret, "/metadata/name").to_owned(),
        not_after: Some(timestamp(not_after)),
        subject,
    })
}

/// The expiry and subject of the first certificate of a PEM bundle (the leaf).
pub fn first_certificate(pem: &[u8]) -> Option<(DateTime<Utc>, String)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    Some((not_after, cert.subject().to_string()))
}

// === usage ===

/// CPU in millicores: `250m`, `1`, `0.5`, `1500000n`, `20u`.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    let (num, factor) = if let Some(n) = q.strip_suffix('n') {
        (n, 1e-6)
    } else if let Some(n) = q.strip_suffix('u') {
        (n, 1e-3)
    } else if let Some(n) = q.strip_suffix('m') {
        (n, 1.0)
    } else {
        (q, 1000.0)
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then(|| (v * factor).ceil() as u64)
}

/// Memory in bytes: `128Mi`, `1G`, `1234Ki`, `1e6`, `500`.
pub fn memory_bytes(q: &str) -> Option<u64> {
    const UNITS: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    let q = q.trim();
    for (suffix, factor) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            let v: f64 = n.parse().ok()?;
            return (v >= 0.0).then(|| (v * factor).ceil() as u64);
        }
    }
    let v: f64 = q.parse().ok()?;
    (v >= 0.0).then(|| v.ceil() as u64)
}

fn usage(pods: &[Value], metrics: &[Value], owners: &Owners<'_>) -> Vec<WorkloadUsage> {
    let measured: BTreeMap<(&str, &str), &Value> = metrics
        .iter()
        .map(|m| ((s(m, "/metadata/namespace"), s(m, "/metadata/name")), m))
        .collect();
    let mut out: BTreeMap<(String, String, String), WorkloadUsage> = BTreeMap::new();
    for p in pods {
        let key = (s(p, "/metadata/namespace"), s(p, "/metadata/name"));
        let (Some(m), Some((kind, name))) = (measured.get(&key), owners.of(p)) else {
            continue;
        };
        let w = out
            .entry((kind.to_owned(), key.0.to_owned(), name.clone()))
            .or_insert_with(|| WorkloadUsage {
                kind: kind.to_owned(),
                namespace: key.0.to_owned(),
                name,
                ..Default::default()
            });
        w.replicas += 1;
        for c in items(p, "/spec/containers") {
            let r = |pointer: &str, f: fn(&str) -> Option<u64>| f(s(c, pointer)).unwrap_or(0);
            w.cpu_request_millis += r("/resources/requests/cpu", cpu_millis);
            w.cpu_limit_millis += r("/resources/limits/cpu", cpu_millis);
            w.memory_request_bytes += r("/resources/requests/memory", memory_bytes);
            w.memory_limit_bytes += r("/resources/limits/memory", memory_bytes);
        }
        for c in items(m, "/containers") {
            w.cpu_usage_millis += cpu_millis(s(c, "/usage/cpu")).unwrap_or(0);
            w.memory_usage_bytes += memory_bytes(s(c, "/usage/memory")).unwrap_or(0);
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> Settings {
        Settings {
            now: DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            cert_window: Duration::days(30),
            restart_threshold: 5,
            stuck_after: Duration::minutes(5),
        }
    }

    fn pod(name: &str, rs: &str, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "shop", "name": name,
                "labels": {"pod-template-hash": "7d9f"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": true}]},
            "spec": {"containers": [{"name": "api", "resources": {
                "requests": {"cpu": "250m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "256Mi"}}}]},
            "status": status,
        })
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("1"), Some(1000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("1500000n"), Some(2));
        assert_eq!(cpu_millis("x"), None);
        assert_eq!(memory_bytes("128Mi"), Some(134_217_728));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1024"), Some(1024));
    }

    #[test]
    fn nodes_conditions_and_cordon() {
        let n = json!({"metadata": {"name": "w1"}, "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"}]}});
        let h = node(&n);
        assert_eq!(
            (
                h.ready,
                h.memory_pressure,
                h.disk_pressure,
                h.pid_pressure,
                h.unschedulable
            ),
            (false, true, false, false, true)
        );
        assert!(!node(&json!({"metadata": {"name": "w2"}})).ready);
    }

    #[test]
    fn crash_loops_resolve_to_their_deployment() {
        let listed = Listed {
            pods: vec![
                pod(
                    "api-7d9f-a",
                    "api-7d9f",
                    json!({"phase": "Running", "containerStatuses": [
                    {"name": "api", "restartCount": 12, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}),
                ),
                pod(
                    "api-7d9f-b",
                    "api-7d9f",
                    json!({"phase": "Running", "containerStatuses": [
                    {"name": "api", "restartCount": 0, "state": {"running": {}}}]}),
                ),
            ],
            replicasets: vec![json!({"metadata": {"namespace": "shop", "name": "api-7d9f",
                "ownerReferences": [{"kind": "Deployment", "name": "api", "controller": true}]}})],
            ..Default::default()
        };
        let r = report(&listed, &settings());
        assert_eq!(r.pods.len(), 1);
        let p = &r.pods[0];
        assert_eq!(
            (
                p.reason.as_str(),
                p.owner_kind.as_str(),
                p.owner_name.as_str(),
                p.restarts
            ),
            ("CrashLoopBackOff", "Deployment", "api", 12)
        );
        assert!(!r.metrics_available);
        // Without the ReplicaSet listed, the template hash is stripped.
        let alone = Listed {
            pods: listed.pods.clone(),
            ..Default::default()
        };
        assert_eq!(report(&alone, &settings()).pods[0].owner_name, "api");
    }

    #[test]
    fn unschedulable_stuck_and_restart_threshold() {
        let pending = json!({"metadata": {"namespace": "a", "name": "big"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}});
        let stuck = json!({"metadata": {"namespace": "a", "name": "old",
            "deletionTimestamp": "2026-11-29T23:00:00Z"}, "status": {"phase": "Running"}});
        let fresh_delete = json!({"metadata": {"namespace": "a", "name": "new",
            "deletionTimestamp": "2026-11-29T23:58:00Z"}, "status": {"phase": "Running"}});
        let restarting = json!({"metadata": {"namespace": "a", "name": "r"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "c", "restartCount": 7, "state": {"running": {}}}]}});
        let listed = Listed {
            pods: vec![pending, stuck, fresh_delete, restarting],
            ..Default::default()
        };
        let r = report(&listed, &settings());
        let reasons: Vec<_> = r
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("big", "Unschedulable"),
                ("old", "Terminating"),
                ("r", "CrashLoopBackOff")
            ]
        );
    }

    #[test]
    fn workloads_claims_and_usage() {
        let listed = Listed {
            deployments: vec![
                json!({"metadata": {"namespace": "shop", "name": "api"}, "spec": {"replicas": 2}, "status": {"availableReplicas": 0}}),
                json!({"metadata": {"namespace": "shop", "name": "web"}, "spec": {"replicas": 1}, "status": {"availableReplicas": 1}}),
            ],
            daemonsets: vec![
                json!({"metadata": {"namespace": "kube-system", "name": "cni"},
                "status": {"desiredNumberScheduled": 3, "numberAvailable": 2}}),
            ],
            pvcs: vec![
                json!({"metadata": {"namespace": "db", "name": "data"}, "status": {"phase": "Pending"}}),
                json!({"metadata": {"namespace": "db", "name": "ok"}, "status": {"phase": "Bound"}}),
            ],
            pods: vec![pod("api-7d9f-a", "api-7d9f", json!({"phase": "Running"}))],
            pod_metrics: Some(vec![
                json!({"metadata": {"namespace": "shop", "name": "api-7d9f-a"},
                "containers": [{"name": "api", "usage": {"cpu": "240m", "memory": "100Mi"}}]}),
            ]),
            ..Default::default()
        };
        let r = report(&listed, &settings());
        let w: Vec<_> = r
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), w.desired, w.available))
            .collect();
        assert_eq!(w, [("api", 2, 0), ("cni", 3, 2)]);
        assert_eq!(r.pvcs.len(), 1);
        assert!(r.metrics_available);
        assert_eq!(r.usage.len(), 1);
        let u = &r.usage[0];
        assert_eq!(
            (u.kind.as_str(), u.name.as_str(), u.replicas),
            ("Deployment", "api", 1)
        );
        assert_eq!(
            (u.cpu_usage_millis, u.cpu_request_millis, u.cpu_limit_millis),
            (240, 250, 1000)
        );
        assert_eq!(u.memory_usage_bytes, 100 * 1_048_576);
    }
}
