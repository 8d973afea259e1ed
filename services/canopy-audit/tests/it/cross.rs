//! Cross-object checks: SA-AUTOMOUNT, NETPOL-MISSING, RBAC-CLUSTER-ADMIN — decided at finish,
//! whatever the order the objects arrive in.

use serde_json::{Value, json};

use crate::common::*;

fn sa(ns: &str, name: &str, automount: Option<bool>) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}});
    if let Some(a) = automount {
        set(&mut v, "/automountServiceAccountToken", json!(a));
    }
    v
}

fn netpol(ns: &str, selector: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": ns}, "spec": {"podSelector": selector, "policyTypes": ["Ingress"]}})
}

/// Audits in both orders; both must agree.
fn both_orders(objs: &[Value], check: &str) -> Vec<String> {
    let forward = paths(&audit(objs), check);
    let mut rev = objs.to_vec();
    rev.reverse();
    let backward = paths(&audit(&rev), check);
    assert_eq!(forward, backward, "order dependence for {check}");
    forward
}

fn pod_automount(v: Option<bool>, sa_name: Option<&str>) -> Value {
    let mut p = compliant_pod();
    remove(&mut p, "/spec/automountServiceAccountToken");
    if let Some(v) = v {
        set(&mut p, "/spec/automountServiceAccountToken", json!(v));
    }
    if let Some(n) = sa_name {
        set(&mut p, "/spec/serviceAccountName", json!(n));
    }
    p
}

#[test]
fn sa_automount() {
    let path = ["spec.automountServiceAccountToken"];
    let none: [&str; 0] = [];
    // Pod level decides.
    assert_eq!(
        both_orders(
            &[
                pod_automount(Some(true), None),
                sa("ns", "default", Some(false))
            ],
            "SA-AUTOMOUNT"
        ),
        path
    );
    assert_eq!(
        both_orders(
            &[
                pod_automount(Some(false), None),
                sa("ns", "default", Some(true))
            ],
            "SA-AUTOMOUNT"
        ),
        none
    );
    // Unset on the pod: its ServiceAccount decides.
    assert_eq!(
        both_orders(
            &[pod_automount(None, None), sa("ns", "default", Some(false))],
            "SA-AUTOMOUNT"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[pod_automount(None, None), sa("ns", "default", Some(true))],
            "SA-AUTOMOUNT"
        ),
        path
    );
    assert_eq!(
        both_orders(
            &[pod_automount(None, None), sa("ns", "default", None)],
            "SA-AUTOMOUNT"
        ),
        path
    );
    assert_eq!(
        both_orders(&[pod_automount(None, None)], "SA-AUTOMOUNT"),
        path
    );
    // The right ServiceAccount, in the right namespace.
    assert_eq!(
        both_orders(
            &[
                pod_automount(None, Some("app")),
                sa("ns", "app", Some(false))
            ],
            "SA-AUTOMOUNT"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[
                pod_automount(None, Some("app")),
                sa("ns", "default", Some(false))
            ],
            "SA-AUTOMOUNT"
        ),
        path
    );
    assert_eq!(
        both_orders(
            &[
                pod_automount(None, None),
                sa("other", "default", Some(false))
            ],
            "SA-AUTOMOUNT"
        ),
        path
    );
    // Deprecated serviceAccount field.
    let mut legacy = pod_automount(None, None);
    set(&mut legacy, "/spec/serviceAccount", json!("app"));
    assert_eq!(
        both_orders(&[legacy, sa("ns", "app", Some(false))], "SA-AUTOMOUNT"),
        none
    );
    // Workload templates.
    let mut spec = compliant_spec();
    remove(&mut spec, "/automountServiceAccountToken");
    let d = workload("CronJob", json!({}), spec);
    assert_eq!(
        both_orders(std::slice::from_ref(&d), "SA-AUTOMOUNT"),
        ["spec.jobTemplate.spec.template.spec.automountServiceAccountToken"]
    );
    assert_eq!(
        both_orders(&[d, sa("ns", "default", Some(false))], "SA-AUTOMOUNT"),
        none
    );
}

#[test]
fn netpol_missing() {
    let path = ["metadata.labels"];
    let none: [&str; 0] = [];
    let pod = compliant_pod(); // labels app=web, namespace ns
    assert_eq!(
        both_orders(std::slice::from_ref(&pod), "NETPOL-MISSING"),
        path
    );
    assert_eq!(
        both_orders(&[pod.clone(), netpol("ns", json!({}))], "NETPOL-MISSING"),
        none
    );
    assert_eq!(
        both_orders(&[pod.clone(), netpol("other", json!({}))], "NETPOL-MISSING"),
        path
    );
    assert_eq!(
        both_orders(
            &[
                pod.clone(),
                netpol("ns", json!({"matchLabels": {"app": "web"}}))
            ],
            "NETPOL-MISSING"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[
                pod.clone(),
                netpol("ns", json!({"matchLabels": {"app": "db"}}))
            ],
            "NETPOL-MISSING"
        ),
        path
    );
    assert_eq!(
        both_orders(
            &[
                pod.clone(),
                netpol("ns", json!({"matchLabels": {"app": "web", "tier": "x"}}))
            ],
            "NETPOL-MISSING"
        ),
        path
    );
    let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "app", "operator": op, "values": values}]});
    assert_eq!(
        both_orders(
            &[pod.clone(), netpol("ns", expr("In", json!(["web", "api"])))],
            "NETPOL-MISSING"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[pod.clone(), netpol("ns", expr("NotIn", json!(["web"])))],
            "NETPOL-MISSING"
        ),
        path
    );
    assert_eq!(
        both_orders(
            &[pod.clone(), netpol("ns", expr("NotIn", json!(["db"])))],
            "NETPOL-MISSING"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[
                pod.clone(),
                netpol(
                    "ns",
                    json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})
                )
            ],
            "NETPOL-MISSING"
        ),
        none
    );
    assert_eq!(
        both_orders(
            &[
                pod.clone(),
                netpol(
                    "ns",
                    json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})
                )
            ],
            "NETPOL-MISSING"
        ),
        path
    );
    // Several policies: one selecting the pod is enough.
    assert_eq!(
        both_orders(
            &[
                pod,
                netpol("ns", json!({"matchLabels": {"app": "db"}})),
                netpol("ns", json!({"matchLabels": {"app": "web"}}))
            ],
            "NETPOL-MISSING"
        ),
        none
    );
    // Template labels of workloads.
    let d = workload(
        "StatefulSet",
        json!({"labels": {"app": "db"}}),
        compliant_spec(),
    );
    assert_eq!(
        both_orders(
            &[
                d.clone(),
                netpol("ns", json!({"matchLabels": {"app": "web"}}))
            ],
            "NETPOL-MISSING"
        ),
        ["spec.template.metadata.labels"]
    );
    assert_eq!(
        both_orders(
            &[d, netpol("ns", json!({"matchLabels": {"app": "db"}}))],
            "NETPOL-MISSING"
        ),
        none
    );
}

fn binding(kind: &str, name: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": subjects});
    if kind == "RoleBinding" {
        set(&mut b, "/metadata/namespace", json!("ns"));
    }
    b
}

#[test]
fn rbac_cluster_admin() {
    let user = json!([{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]);
    let none: [&str; 0] = [];
    let f = audit(&[binding(
        "ClusterRoleBinding",
        "alice-admin",
        "ClusterRole",
        "cluster-admin",
        user.clone(),
    )]);
    assert_eq!(paths(&f, "RBAC-CLUSTER-ADMIN"), ["roleRef.name"]);
    assert_eq!(
        f[0].standards,
        ["polaris:clusterrolebindingClusterAdmin", "kubescape:C-0035"]
    );
    let f = audit(&[binding(
        "RoleBinding",
        "alice-admin",
        "ClusterRole",
        "cluster-admin",
        user.clone(),
    )]);
    assert_eq!(
        f[0].standards,
        [
            "polaris:rolebindingClusterAdminClusterRole",
            "kubescape:C-0035"
        ]
    );
    // Kubernetes' own: system:masters, system:* bindings.
    let masters = json!([{"kind": "Group", "name": "system:masters", "apiGroup": "rbac.authorization.k8s.io"}]);
    assert!(
        audit(&[binding(
            "ClusterRoleBinding",
            "cluster-admin",
            "ClusterRole",
            "cluster-admin",
            masters
        )])
        .is_empty()
    );
    assert!(
        audit(&[binding(
            "ClusterRoleBinding",
            "system:foo",
            "ClusterRole",
            "cluster-admin",
            user.clone()
        )])
        .is_empty()
    );
    // Admin-equivalent custom roles, learnt in any order.
    let star = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
    let god = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "god"}, "rules": star});
    let crb = binding(
        "ClusterRoleBinding",
        "alice-god",
        "ClusterRole",
        "god",
        user.clone(),
    );
    assert_eq!(
        both_orders(&[god.clone(), crb], "RBAC-CLUSTER-ADMIN"),
        ["roleRef.name"]
    );
    let ns_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "boss", "namespace": "ns"}, "rules": star});
    let rb = binding("RoleBinding", "alice-boss", "Role", "boss", user.clone());
    assert_eq!(
        both_orders(&[ns_role.clone(), rb.clone()], "RBAC-CLUSTER-ADMIN"),
        ["roleRef.name"]
    );
    let mut other_ns_role = ns_role;
    set(&mut other_ns_role, "/metadata/namespace", json!("other"));
    assert_eq!(
        both_orders(&[other_ns_role, rb], "RBAC-CLUSTER-ADMIN"),
        none
    );
    let narrow = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "view-pods"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    assert_eq!(
        both_orders(
            &[
                narrow,
                binding("ClusterRoleBinding", "b", "ClusterRole", "view-pods", user)
            ],
            "RBAC-CLUSTER-ADMIN"
        ),
        none
    );
}

#[test]
fn finish_tags_come_back() {
    let mut a: canopy_audit::Auditor<&'static str> =
        canopy_audit::Auditor::with_policy(&canopy_audit::Policy::default()).unwrap();
    a.add_tagged(&compliant_pod(), "pod.yaml:1");
    let d = workload(
        "Deployment",
        json!({"labels": {"x": "y"}}),
        compliant_spec(),
    );
    a.add_tagged(&d, "deploy.yaml:7");
    let out = a.finish_tagged();
    let tags: Vec<(&str, &str)> = out
        .iter()
        .map(|(f, t)| (f.resource.kind.as_str(), *t))
        .collect();
    assert_eq!(
        tags,
        [("Deployment", "deploy.yaml:7"), ("Pod", "pod.yaml:1")]
    );
}

#[test]
fn finish_each_streams_the_same_findings_in_input_order() {
    let objs: Vec<Value> = (0..4)
        .map(|i| {
            let mut p = pod_automount(None, Some(if i % 2 == 0 { "app" } else { "default" }));
            set(&mut p, "/metadata/name", json!(format!("p{}", 3 - i)));
            p
        })
        .chain([
            sa("ns", "app", Some(false)),
            binding(
                "ClusterRoleBinding",
                "b",
                "ClusterRole",
                "all",
                json!([{"kind": "User", "name": "alice"}]),
            ),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "all"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        ])
        .collect();
    let run = |streamed: bool| {
        let mut a: canopy_audit::Auditor<usize> =
            canopy_audit::Auditor::with_policy(&canopy_audit::Policy::default()).unwrap();
        for (i, o) in objs.iter().enumerate() {
            a.add_tagged(o, i);
        }
        let mut out = Vec::new();
        if streamed {
            a.finish_each(|f, t| out.push((f, t)));
        } else {
            out = a.finish_tagged();
        }
        out
    };
    let streamed = run(true);
    let mut sorted = run(false);
    assert!(!streamed.is_empty());
    // The pods' findings come in the order the pods were added, the binding's last.
    let tags: Vec<usize> = streamed.iter().map(|(_, t)| *t).collect();
    let mut in_order = tags.clone();
    in_order.sort();
    assert_eq!(tags, in_order);
    assert_eq!(streamed.last().unwrap().0.check, "RBAC-CLUSTER-ADMIN");
    // Same findings as finish_tagged.
    let mut again = streamed.clone();
    again.sort_by(|a, b| canopy_audit::Finding::order(&a.0, &b.0).then(a.1.cmp(&b.1)));
    sorted.sort_by(|a, b| canopy_audit::Finding::order(&a.0, &b.0).then(a.1.cmp(&b.1)));
    assert_eq!(again, sorted);
    // SA-AUTOMOUNT only where the ServiceAccount does not disable it (pods 1 and 3: default).
    let sa_tags: Vec<usize> = streamed
        .iter()
        .filter(|(f, _)| f.check == "SA-AUTOMOUNT")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(sa_tags, [1, 3]);
}

/// The messages of the cross-object findings, with and without a namespace and labels.
#[test]
fn cross_object_messages() {
    let messages = |objs: &[Value], check: &str| -> Vec<String> {
        audit(objs)
            .into_iter()
            .filter(|f| f.check == check)
            .map(|f| f.message)
            .collect()
    };
    let mut labelled = pod_automount(None, Some("app"));
    set(
        &mut labelled,
        "/metadata/labels",
        json!({"tier": "web", "app": "a"}),
    );
    assert_eq!(
        messages(std::slice::from_ref(&labelled), "SA-AUTOMOUNT"),
        [
            "automountServiceAccountToken is disabled neither on the pod nor on ServiceAccount ns/app"
        ]
    );
    assert_eq!(
        messages(std::slice::from_ref(&labelled), "NETPOL-MISSING"),
        ["no NetworkPolicy in namespace ns selects the pod (labels {app=a, tier=web})"]
    );
    let mut bare = pod_automount(None, None);
    remove(&mut bare, "/metadata/namespace");
    remove(&mut bare, "/metadata/labels");
    assert_eq!(
        messages(std::slice::from_ref(&bare), "SA-AUTOMOUNT"),
        [
            "automountServiceAccountToken is disabled neither on the pod nor on ServiceAccount default"
        ]
    );
    assert_eq!(
        messages(std::slice::from_ref(&bare), "NETPOL-MISSING"),
        ["no NetworkPolicy in its namespace selects the pod (labels {})"]
    );
}
