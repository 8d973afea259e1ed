//! The checked-in fixtures are well-formed and tell the stories they are meant to tell.

use std::collections::BTreeSet;

use canopy_testkit::{FakeKube, Fixture};
use serde_json::Value;

/// The kinds the agent inventories (plus what the server serves for generated fixtures).
const KINDS: &[&str] = &[
    "Namespace",
    "Node",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Service",
    "Ingress",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "NetworkPolicy",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
];
const CLUSTER_SCOPED: &[&str] = &["Namespace", "Node", "ClusterRole", "ClusterRoleBinding"];

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[test]
fn every_fixture_loads_and_is_consistent() {
    let names = Fixture::names().unwrap();
    for expected in ["dev-ap", "prod-eu", "staging-us"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    for name in &names {
        let fixture = Fixture::load(name).unwrap();
        let namespaces: BTreeSet<&str> = fixture
            .of_kind("Namespace")
            .map(|n| str_at(n, "/metadata/name"))
            .collect();
        let mut uids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for object in fixture.objects() {
            let kind = str_at(object, "/kind");
            let ns = str_at(object, "/metadata/namespace");
            let what = format!("{name}: {kind} {ns}/{}", str_at(object, "/metadata/name"));
            assert!(
                KINDS.contains(&kind),
                "{what}: kind outside the inventoried set"
            );
            assert!(
                uids.insert(str_at(object, "/metadata/uid").to_string()),
                "{what}: missing or duplicate uid"
            );
            assert!(
                !str_at(object, "/metadata/creationTimestamp").is_empty(),
                "{what}: no creationTimestamp"
            );
            assert!(keys.insert(what.clone()), "{what}: duplicate");
            if CLUSTER_SCOPED.contains(&kind) {
                assert!(
                    ns.is_empty(),
                    "{what}: cluster-scoped object with a namespace"
                );
            } else {
                assert!(
                    namespaces.contains(ns),
                    "{what}: namespace {ns:?} does not exist"
                );
            }
        }
        let counts = fixture.count_by_kind();
        for kind in [
            "Namespace",
            "Node",
            "Pod",
            "Deployment",
            "ReplicaSet",
            "Service",
            "ServiceAccount",
            "ConfigMap",
            "Secret",
        ] {
            assert!(
                counts.get(kind).copied().unwrap_or(0) > 0,
                "{name}: no {kind}"
            );
        }
        let tls = fixture
            .of_kind("Secret")
            .filter(|s| str_at(s, "/type") == "kubernetes.io/tls")
            .count();
        assert!(tls >= 1, "{name}: no kubernetes.io/tls secret");
        for pod in fixture.of_kind("Pod") {
            assert!(
                !str_at(pod, "/status/phase").is_empty(),
                "{name}: pod without a phase"
            );
        }
        for rs in fixture.of_kind("ReplicaSet") {
            assert_eq!(
                str_at(rs, "/metadata/ownerReferences/0/kind"),
                "Deployment",
                "{name}: replicaset without an owner"
            );
        }
    }
}

#[test]
fn fixture_sizes() {
    for (name, lo, hi) in [
        ("prod-eu", 40, 70),
        ("staging-us", 40, 70),
        ("dev-ap", 30, 60),
    ] {
        let len = Fixture::load(name).unwrap().len();
        assert!((lo..=hi).contains(&len), "{name} has {len} objects");
    }
    assert_eq!(Fixture::load("prod-eu").unwrap().of_kind("Node").count(), 3);
}

#[test]
fn prod_eu_is_well_secured() {
    let fixture = Fixture::load("prod-eu").unwrap();
    for pod in fixture.of_kind("Pod") {
        for container in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .unwrap()
        {
            assert_eq!(
                container.pointer("/securityContext/runAsNonRoot"),
                Some(&Value::Bool(true))
            );
            assert_eq!(
                container.pointer("/securityContext/readOnlyRootFilesystem"),
                Some(&Value::Bool(true))
            );
            assert!(container.pointer("/resources/limits").is_some());
            assert!(!str_at(container, "/image").ends_with(":latest"));
        }
    }
    let deny: BTreeSet<&str> = fixture
        .of_kind("NetworkPolicy")
        .filter(|p| {
            p.pointer("/spec/podSelector")
                .is_some_and(|s| s.as_object().is_some_and(serde_json::Map::is_empty))
        })
        .map(|p| str_at(p, "/metadata/namespace"))
        .collect();
    for ns in ["payments", "checkout", "monitoring", "ingress-nginx"] {
        assert!(deny.contains(ns), "no default-deny policy in {ns}");
    }
}

#[test]
fn staging_us_is_insecure_on_purpose() {
    let fixture = Fixture::load("staging-us").unwrap();
    assert_eq!(fixture.of_kind("NetworkPolicy").count(), 0);
    let pods: Vec<&Value> = fixture.of_kind("Pod").collect();
    assert!(pods.iter().any(
        |p| p.pointer("/spec/containers/0/securityContext/privileged") == Some(&Value::Bool(true))
    ));
    assert!(
        pods.iter()
            .any(|p| p.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)))
    );
    assert!(
        pods.iter()
            .any(|p| p.pointer("/spec/volumes/0/hostPath").is_some())
    );
    assert!(
        pods.iter()
            .any(|p| str_at(p, "/spec/containers/0/image").ends_with(":latest"))
    );
    assert!(
        pods.iter()
            .any(|p| str_at(p, "/spec/containers/0/env/0/name").contains("PASSWORD"))
    );
    assert!(fixture.of_kind("ClusterRoleBinding").any(|b| {
        str_at(b, "/roleRef/name") == "cluster-admin"
            && str_at(b, "/subjects/0/kind") == "ServiceAccount"
    }));
    assert!(fixture.of_kind("Service").any(|s| {
        str_at(s, "/spec/type") == "LoadBalancer"
            && s.pointer("/spec/ports/0/port") == Some(&Value::from(5432))
    }));
}

#[test]
fn dev_ap_is_sick_on_purpose() {
    let fixture = Fixture::load("dev-ap").unwrap();
    let not_ready = fixture.of_kind("Node").filter(|n| {
        n.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "False")
            })
    });
    assert_eq!(not_ready.count(), 1);
    let crashing = fixture
        .of_kind("Pod")
        .find(|p| {
            str_at(p, "/status/containerStatuses/0/state/waiting/reason") == "CrashLoopBackOff"
        })
        .unwrap();
    assert!(
        crashing
            .pointer("/status/containerStatuses/0/restartCount")
            .and_then(Value::as_u64)
            .unwrap()
            > 100
    );
    let rs_name = str_at(crashing, "/metadata/ownerReferences/0/name");
    let rs = fixture
        .of_kind("ReplicaSet")
        .find(|r| str_at(r, "/metadata/name") == rs_name)
        .unwrap();
    let deploy_name = str_at(rs, "/metadata/ownerReferences/0/name");
    let deploy = fixture
        .of_kind("Deployment")
        .find(|d| str_at(d, "/metadata/name") == deploy_name)
        .unwrap();
    assert!(
        deploy
            .pointer("/status/unavailableReplicas")
            .and_then(Value::as_u64)
            .unwrap()
            > 0
    );
    let pending = fixture
        .of_kind("Pod")
        .find(|p| str_at(p, "/status/phase") == "Pending")
        .unwrap();
    assert_eq!(str_at(pending, "/status/conditions/0/type"), "PodScheduled");
    assert_eq!(str_at(pending, "/status/conditions/0/status"), "False");
    assert_eq!(
        str_at(pending, "/status/conditions/0/reason"),
        "Unschedulable"
    );
}

#[tokio::test]
async fn the_server_holds_every_fixture_object() {
    for name in Fixture::names().unwrap() {
        let fixture = Fixture::load(&name).unwrap();
        let kube = FakeKube::start(fixture.clone()).await.unwrap();
        assert_eq!(kube.count_by_kind(), fixture.count_by_kind(), "{name}");
    }
}
