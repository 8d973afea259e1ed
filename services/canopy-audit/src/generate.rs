//! Realistic generated cluster objects for benchmarks (`loadtest audit`) and throughput tests.
//! Compiled into the library only with the `generate` feature.

use serde_json::{Value, json};

/// A realistic mix of cluster objects: mostly Deployments/StatefulSets with one or two
/// containers, some ConfigMaps, Services, ServiceAccounts, NetworkPolicies and RBAC objects.
pub fn generate(n: usize) -> Vec<Value> {
    (0..n).map(object).collect()
}

/// The `i`-th generated object (the same for every `n`: `generate(n)[i] == object(i)`), so a
/// caller can stream any number of objects without holding them all.
pub fn object(i: usize) -> Value {
    build(i)
}

fn container(i: usize, name: &str, hardened: bool) -> Value {
    let mut c = json!({
        "name": name,
        "image": format!("registry.example.com/team-{}/svc-{}:{}.{}.{}", i % 17, i % 101, i % 3, i % 10, i % 7),
        "imagePullPolicy": if i.is_multiple_of(4) { "IfNotPresent" } else { "Always" },
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DB_HOST", "value": format!("db-{}.svc", i % 13)},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "FEATURE_FLAGS", "value": "a,b,c"}
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}, "periodSeconds": 20},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "tmp", "mountPath": "/tmp"}]
    });
    if hardened {
        c["securityContext"] = json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]}
        });
    }
    c
}

fn build(i: usize) -> Value {
    let ns = format!("team-{}", i % 50);
    let name = format!("obj-{i}");
    match i % 20 {
        0..=12 => {
            let kind = if i % 20 == 12 {
                "StatefulSet"
            } else {
                "Deployment"
            };
            let mut containers = vec![container(i, "app", !i.is_multiple_of(3))];
            if i.is_multiple_of(5) {
                containers.push(container(i + 1, "sidecar", true));
            }
            json!({
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "team": format!("t{}", i % 50)},
                    "annotations": {"deployment.kubernetes.io/revision": "3"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name, "team": format!("t{}", i % 50), "version": "v1"}},
                        "spec": {
                            "serviceAccountName": if i.is_multiple_of(2) { "app" } else { "default" },
                            "securityContext": if i.is_multiple_of(3) { json!({}) } else { json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}) },
                            "containers": containers,
                            "volumes": [{"name": "config", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]
                        }
                    }
                }
            })
        }
        13 | 14 => json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {
                "application.properties": "server.port=8080\nmanagement.port=9090\nlogging.level.root=INFO\nspring.datasource.url=jdbc:postgresql://db:5432/app\n",
                "LOG_FORMAT": "json",
                "feature.yaml": "flags:\n  a: true\n  b: false\n"
            }
        }),
        15 | 16 => json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
        17 => json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": ns},
            "automountServiceAccountToken": false
        }),
        18 => json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": [format!("t{}", i % 50)]}]}, "policyTypes": ["Ingress"]}
        }),
        _ => json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list", "watch"]}]
        }),
    }
}
