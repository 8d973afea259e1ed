//! Non-PSS per-object checks: images, resources, probes, naked pods, secrets in env and
//! ConfigMaps, Ingress TLS, RBAC rules.

use canopy_audit::Policy;
use serde_json::{Value, json};

use crate::common::*;

fn image_case(image: &str) -> Vec<String> {
    check_paths(
        &pod_with(&[("/spec/containers/0/image", json!(image))]),
        "IMAGE-TAG",
    )
}

#[test]
fn image_tag() {
    for bad in [
        "nginx",
        "nginx:latest",
        "registry:5000/app",
        "registry:5000/team/app:latest",
        "ghcr.io/org/app",
    ] {
        assert_eq!(image_case(bad), ["spec.containers[0].image"], "{bad}");
    }
    for good in [
        "nginx:1.25",
        "nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "nginx:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "registry:5000/app:v1",
    ] {
        assert!(image_case(good).is_empty(), "{good}");
    }
    let init = pod_with(&[("/spec/initContainers/0/image", json!("busybox"))]);
    assert_eq!(
        check_paths(&init, "IMAGE-TAG"),
        ["spec.initContainers[0].image"]
    );
    let eph = pod_with(&[("/spec/ephemeralContainers/0/image", json!("busybox:latest"))]);
    assert_eq!(
        check_paths(&eph, "IMAGE-TAG"),
        ["spec.ephemeralContainers[0].image"]
    );
}

#[test]
fn pull_policy() {
    let p = pod_with(&[("/spec/containers/0/imagePullPolicy", json!("IfNotPresent"))]);
    assert_eq!(
        check_paths(&p, "PULL-POLICY"),
        ["spec.containers[0].imagePullPolicy"]
    );
    let mut p = compliant_pod();
    remove(&mut p, "/spec/initContainers/0/imagePullPolicy");
    assert_eq!(
        check_paths(&p, "PULL-POLICY"),
        ["spec.initContainers[0].imagePullPolicy"]
    );
    assert!(check_paths(&compliant_pod(), "PULL-POLICY").is_empty());
}

#[test]
fn registry_allow_list() {
    // Empty allow list: the check is skipped.
    let hub = pod_with(&[("/spec/containers/0/image", json!("nginx:1.25"))]);
    assert!(check_paths(&hub, "REGISTRY-ALLOW").is_empty());
    let policy = |list: &[&str]| Policy {
        registry_allow_list: list.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let p = policy(&["registry.example.com"]);
    assert!(paths(&audit_with(&p, &[compliant_pod()]), "REGISTRY-ALLOW").is_empty());
    assert_eq!(
        paths(
            &audit_with(&p, std::slice::from_ref(&hub)),
            "REGISTRY-ALLOW"
        ),
        ["spec.containers[0].image"]
    );
    let docker = policy(&["registry.example.com", "docker.io"]);
    assert!(
        paths(
            &audit_with(&docker, std::slice::from_ref(&hub)),
            "REGISTRY-ALLOW"
        )
        .is_empty()
    );
    let library = policy(&["registry.example.com", "docker.io/library"]);
    assert!(paths(&audit_with(&library, &[hub]), "REGISTRY-ALLOW").is_empty());
    let prefix = policy(&["registry.example.com", "ghcr.io/acme"]);
    let ok = pod_with(&[("/spec/containers/0/image", json!("ghcr.io/acme/app:1"))]);
    let other = pod_with(&[("/spec/containers/0/image", json!("ghcr.io/acme-evil/app:1"))]);
    assert!(paths(&audit_with(&prefix, &[ok]), "REGISTRY-ALLOW").is_empty());
    assert_eq!(
        paths(&audit_with(&prefix, &[other]), "REGISTRY-ALLOW"),
        ["spec.containers[0].image"]
    );
    let eph = pod_with(&[(
        "/spec/ephemeralContainers/0/image",
        json!("quay.io/x/debug:1"),
    )]);
    assert_eq!(
        paths(&audit_with(&p, &[eph]), "REGISTRY-ALLOW"),
        ["spec.ephemeralContainers[0].image"]
    );
}

#[test]
fn resources() {
    let mut p = compliant_pod();
    remove(&mut p, "/spec/containers/0/resources/requests/cpu");
    remove(&mut p, "/spec/initContainers/0/resources/limits");
    let f = audit(&[p]);
    assert_eq!(
        paths(&f, "RES-REQUESTS"),
        ["spec.containers[0].resources.requests.cpu"]
    );
    assert_eq!(
        paths(&f, "RES-LIMITS"),
        [
            "spec.initContainers[0].resources.limits.cpu",
            "spec.initContainers[0].resources.limits.memory"
        ]
    );
    let cpu = f.iter().find(|f| f.check == "RES-REQUESTS").unwrap();
    assert_eq!(cpu.standards, ["polaris:cpuRequestsMissing"]);
    let mem = f
        .iter()
        .find(|f| f.path.ends_with("limits.memory"))
        .unwrap();
    assert_eq!(mem.standards, ["polaris:memoryLimitsMissing"]);
    let mut none = compliant_pod();
    remove(&mut none, "/spec/containers/0/resources");
    assert_eq!(
        check_paths(&none, "RES-REQUESTS"),
        [
            "spec.containers[0].resources.requests.cpu",
            "spec.containers[0].resources.requests.memory"
        ]
    );
    // Ephemeral containers cannot have resources: never reported.
    assert!(
        audit(&[compliant_pod()])
            .iter()
            .all(|f| !f.path.contains("ephemeralContainers[0].resources"))
    );
}

#[test]
fn probes() {
    let mut p = compliant_pod();
    remove(&mut p, "/spec/containers/0/readinessProbe");
    let f = audit(&[p]);
    assert_eq!(paths(&f, "PROBES"), ["spec.containers[0].readinessProbe"]);
    assert_eq!(
        f.iter().find(|f| f.check == "PROBES").unwrap().standards,
        ["polaris:readinessProbeMissing"]
    );
    // Init and ephemeral containers have no probes and are not asked for them.
    assert!(check_paths(&compliant_pod(), "PROBES").is_empty());
    // Run-to-completion workloads are exempt.
    let mut spec = compliant_spec();
    remove(&mut spec, "/containers/0/readinessProbe");
    remove(&mut spec, "/containers/0/livenessProbe");
    for kind in ["Job", "CronJob"] {
        let w = workload(kind, json!({"labels": {"app": "web"}}), spec.clone());
        assert!(check_paths(&w, "PROBES").is_empty(), "{kind}");
    }
    let d = workload(
        "Deployment",
        json!({"labels": {"app": "web"}}),
        spec.clone(),
    );
    assert_eq!(
        check_paths(&d, "PROBES"),
        [
            "spec.template.spec.containers[0].livenessProbe",
            "spec.template.spec.containers[0].readinessProbe"
        ]
    );
    let mut once = spec;
    set(&mut once, "/restartPolicy", json!("Never"));
    let pod = workload("Pod", json!({}), once);
    assert!(check_paths(&pod, "PROBES").is_empty());
}

#[test]
fn naked_pod() {
    let mut p = compliant_pod();
    remove(&mut p, "/metadata/ownerReferences");
    assert_eq!(check_paths(&p, "NAKED-POD"), ["metadata.ownerReferences"]);
    assert!(check_paths(&compliant_pod(), "NAKED-POD").is_empty());
    // Only Pods.
    let d = workload("Deployment", json!({}), compliant_spec());
    assert!(check_paths(&d, "NAKED-POD").is_empty());
}

#[test]
fn controlled_pods_are_audited_on_their_owner() {
    let owned = pod_with(&[
        (
            "/metadata/ownerReferences",
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true}]),
        ),
        ("/spec/hostPID", json!(true)),
    ]);
    assert!(audit(std::slice::from_ref(&owned)).is_empty());
    let p = Policy {
        audit_controlled_pods: true,
        ..Default::default()
    };
    assert_eq!(
        paths(&audit_with(&p, &[owned]), "HOST-PID"),
        ["spec.hostPID"]
    );
    let rs = {
        let mut w = workload("ReplicaSet", json!({}), compliant_spec());
        set(
            &mut w,
            "/metadata/ownerReferences",
            json!([{"kind": "Deployment", "name": "d", "uid": "2", "apiVersion": "apps/v1"}]),
        );
        set(&mut w, "/spec/template/spec/hostPID", json!(true));
        w
    };
    assert!(audit(&[rs]).is_empty());
}

#[test]
fn env_secret_literal() {
    let env = json!([
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
        {"name": "PASSWORD_FILE", "value": "/run/secrets/pw"},
        {"name": "client-secret", "value": "abc"},
        {"name": "EMPTY_SECRET", "value": ""},
        {"name": "SECRET_COPY", "value": "$(DB_PASSWORD)"}
    ]);
    let p = pod_with(&[
        ("/spec/containers/0/env", env.clone()),
        (
            "/spec/initContainers/0/env",
            json!([{"name": "GITHUB_TOKEN", "value": "ghp_x"}]),
        ),
        (
            "/spec/ephemeralContainers/0/env",
            json!([{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]),
        ),
    ]);
    let f = audit(&[p]);
    assert_eq!(
        paths(&f, "ENV-SECRET-LITERAL"),
        [
            "spec.containers[0].env[1].value",
            "spec.containers[0].env[4].value",
            "spec.ephemeralContainers[0].env[0].value",
            "spec.initContainers[0].env[0].value",
        ]
    );
    // The value never appears in the finding.
    assert!(f.iter().all(|f| !f.message.contains("hunter2")));
}

fn config_map(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}, "data": data})
}

#[test]
fn config_map_secrets() {
    let cm = config_map(json!({
        "aws": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "gh": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "tls.key": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
        "DB_PASSWORD": "hunter2",
        "application.properties": "server.port=8080\nspring.datasource.password=hunter2\n",
        "database_url": "postgres://app:s3cret@db:5432/app",
        "slack": "xoxb-1234567890-abcdefghijkl",
        "log_level": "debug",
        "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "config.yaml": "password: ${DB_PASSWORD}\nport: 80\n",
        "EMPTY_TOKEN": ""
    }));
    let f = audit(&[cm]);
    assert_eq!(
        paths(&f, "CM-SECRET"),
        [
            "data.DB_PASSWORD",
            "data.aws",
            "data.database_url",
            "data.gh",
            "data.slack",
            "data[application.properties]",
            "data[tls.key]",
        ]
    );
    assert!(
        f.iter()
            .all(|f| !f.message.contains("hunter2") && !f.message.contains("AKIA"))
    );
    assert!(audit(&[config_map(json!({"a": "b"}))]).is_empty());
}

#[test]
fn ingress_tls() {
    let ing = |spec: Value| json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i", "namespace": "ns"}, "spec": spec});
    assert_eq!(
        check_paths(&ing(json!({"rules": []})), "INGRESS-TLS"),
        ["spec.tls"]
    );
    assert_eq!(
        check_paths(&ing(json!({"tls": []})), "INGRESS-TLS"),
        ["spec.tls"]
    );
    assert!(
        check_paths(
            &ing(json!({"tls": [{"hosts": ["a"], "secretName": "s"}]})),
            "INGRESS-TLS"
        )
        .is_empty()
    );
}

fn role(kind: &str, name: &str, rules: Value) -> Value {
    let mut r = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "rules": rules});
    if kind == "Role" {
        set(&mut r, "/metadata/namespace", json!("ns"));
    }
    r
}

#[test]
fn rbac_wildcard() {
    let r = role(
        "ClusterRole",
        "ops",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": ["*"], "resources": ["deployments"], "verbs": ["*"]}
        ]),
    );
    assert_eq!(
        check_paths(&r, "RBAC-WILDCARD"),
        ["rules[1].apiGroups", "rules[1].verbs"]
    );
    let r = role(
        "Role",
        "ops",
        json!([{"apiGroups": [""], "resources": ["*"], "verbs": ["list"]}]),
    );
    assert_eq!(check_paths(&r, "RBAC-WILDCARD"), ["rules[0].resources"]);
    // Kubernetes' own roles are not reported.
    let builtin = role(
        "ClusterRole",
        "system:controller:foo",
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    );
    assert!(check_paths(&builtin, "RBAC-WILDCARD").is_empty());
    let mut admin = role(
        "ClusterRole",
        "cluster-admin",
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    );
    set(
        &mut admin,
        "/metadata/labels/kubernetes.io~1bootstrapping",
        json!("rbac-defaults"),
    );
    assert!(audit(&[admin]).is_empty());
}

#[test]
fn rbac_exec_attach() {
    let rules = json!([
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/exec", "pods/attach"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["pods/exec"], "verbs": ["create"]}
    ]);
    let cr = audit(&[role("ClusterRole", "debug", rules.clone())]);
    assert_eq!(
        paths(&cr, "RBAC-EXEC-ATTACH"),
        ["rules[1].resources[0]", "rules[1].resources[1]"]
    );
    assert!(
        cr.iter()
            .filter(|f| f.check == "RBAC-EXEC-ATTACH")
            .all(|f| f.standards == ["polaris:clusterrolePodExecAttach", "kubescape:C-0002"])
    );
    let r = audit(&[role("Role", "debug", rules)]);
    assert!(
        r.iter()
            .filter(|f| f.check == "RBAC-EXEC-ATTACH")
            .all(|f| f.standards == ["polaris:rolePodExecAttach", "kubescape:C-0002"])
    );
    assert_eq!(paths(&r, "RBAC-EXEC-ATTACH").len(), 2);
}

#[test]
fn rbac_secrets() {
    let r = role(
        "Role",
        "reader",
        json!([
            {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["tls"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
            {"apiGroups": ["*"], "resources": ["secrets"], "verbs": ["watch"]},
            {"apiGroups": ["example.com"], "resources": ["secrets"], "verbs": ["get"]}
        ]),
    );
    assert_eq!(
        check_paths(&r, "RBAC-SECRETS"),
        ["rules[0].resources[1]", "rules[3].resources[0]"]
    );
}

#[test]
fn yaml_fixture_end_to_end() {
    let d = yaml(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: prod
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      hostNetwork: true
      containers:
      - name: app
        image: nginx
        securityContext:
          privileged: true
"#,
    );
    let f = audit(&[d]);
    assert_eq!(paths(&f, "HOST-NET"), ["spec.template.spec.hostNetwork"]);
    assert_eq!(
        paths(&f, "PRIVILEGED"),
        ["spec.template.spec.containers[0].securityContext.privileged"]
    );
    let p = f.iter().find(|f| f.check == "PRIVILEGED").unwrap();
    assert_eq!(p.container.as_deref(), Some("app"));
    assert_eq!(p.resource.kind, "Deployment");
    assert_eq!(p.resource.namespace.as_deref(), Some("prod"));
    assert_eq!(p.resource.name, "web");
    assert_eq!(p.resource.api_version, "apps/v1");
    assert_eq!(
        p.standards,
        [
            "pss:baseline:privileged",
            "polaris:runAsPrivileged",
            "kubescape:C-0057"
        ]
    );
    assert_eq!(p.severity, canopy_audit::Severity::Critical);
}
