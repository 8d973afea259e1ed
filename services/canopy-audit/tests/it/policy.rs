//! Policy: enabled checks, severity overrides, ignore annotations, level filter, determinism.

use canopy_audit::{Auditor, Catalogue, LevelFilter, Policy, PolicyError, Severity};
use serde_json::json;

use crate::common::*;

fn bad_pod() -> serde_json::Value {
    let mut p = pod_with(&[
        ("/spec/hostPID", json!(true)),
        ("/spec/containers/0/securityContext/privileged", json!(true)),
        ("/spec/containers/0/image", json!("nginx")),
        ("/spec/securityContext/runAsUser", json!(0)),
    ]);
    remove(&mut p, "/spec/securityContext/seccompProfile");
    p
}

#[test]
fn default_policy() {
    let p = Policy::default();
    assert!(p.disabled_checks.is_empty());
    assert!(!p.honour_ignore_annotations);
    assert!(p.registry_allow_list.is_empty());
    assert_eq!(p.level, LevelFilter::All);
    assert!(p.validate().is_ok());
}

#[test]
fn disabled_checks_and_unknown_ids() {
    let p = Policy {
        disabled_checks: ["HOST-PID".to_owned(), "privileged".to_owned()].into(),
        ..Default::default()
    };
    let f = audit_with(&p, &[bad_pod()]);
    assert!(paths(&f, "HOST-PID").is_empty());
    assert!(paths(&f, "PRIVILEGED").is_empty());
    assert!(!paths(&f, "UID-0").is_empty());
    let bad = Policy {
        disabled_checks: ["NOPE".to_owned()].into(),
        ..Default::default()
    };
    assert_eq!(
        bad.validate(),
        Err(PolicyError::UnknownCheck("NOPE".to_owned()))
    );
    assert!(Auditor::<()>::with_policy(&bad).is_err());
}

#[test]
fn severity_overrides() {
    let p = Policy {
        severity_overrides: [("IMAGE-TAG".to_owned(), Severity::Critical)].into(),
        ..Default::default()
    };
    let f = audit_with(&p, &[bad_pod()]);
    assert!(
        f.iter()
            .filter(|f| f.check == "IMAGE-TAG")
            .all(|f| f.severity == Severity::Critical)
    );
    assert!(
        f.iter()
            .filter(|f| f.check == "UID-0")
            .all(|f| f.severity == Severity::High)
    );
}

#[test]
fn ignore_annotations_only_when_honoured() {
    let mut p = bad_pod();
    set(
        &mut p,
        "/metadata/annotations/canopy.dev~1ignore",
        json!("HOST-PID, privileged"),
    );
    let f = audit(std::slice::from_ref(&p));
    assert!(!paths(&f, "HOST-PID").is_empty(), "not honoured by default");
    let honour = Policy {
        honour_ignore_annotations: true,
        ..Default::default()
    };
    let f = audit_with(&honour, std::slice::from_ref(&p));
    assert!(paths(&f, "HOST-PID").is_empty());
    assert!(paths(&f, "PRIVILEGED").is_empty());
    assert!(!paths(&f, "UID-0").is_empty());
    // On a pod template's annotations too, and for cross-object checks.
    let mut spec = compliant_spec();
    set(&mut spec, "/hostIPC", json!(true));
    let d = workload(
        "Deployment",
        json!({"annotations": {"canopy.dev/ignore": "HOST-IPC,NETPOL-MISSING"}}),
        spec,
    );
    let f = audit_with(&honour, &[d]);
    assert!(paths(&f, "HOST-IPC").is_empty());
    assert!(paths(&f, "NETPOL-MISSING").is_empty());
}

#[test]
fn level_filter() {
    let baseline = Policy {
        level: LevelFilter::Baseline,
        ..Default::default()
    };
    let f = audit_with(&baseline, &[bad_pod()]);
    assert!(!f.is_empty());
    assert!(
        f.iter()
            .all(|f| f.standards.iter().any(|s| s.starts_with("pss:baseline:"))),
        "{f:#?}"
    );
    assert!(paths(&f, "UID-0").is_empty(), "restricted-only");
    let restricted = Policy {
        level: LevelFilter::Restricted,
        ..Default::default()
    };
    let f = audit_with(&restricted, &[bad_pod()]);
    assert!(!paths(&f, "UID-0").is_empty());
    assert!(!paths(&f, "SECCOMP-UNSET").is_empty());
    assert!(paths(&f, "IMAGE-TAG").is_empty(), "not PSS");
    assert!(
        f.iter()
            .all(|f| f.standards.iter().any(|s| s.starts_with("pss:")))
    );
}

#[test]
fn findings_are_sorted_and_deterministic() {
    let objs = vec![
        workload(
            "Deployment",
            json!({"labels": {"a": "b"}}),
            compliant_spec(),
        ),
        bad_pod(),
        workload("Job", json!({}), compliant_spec()),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "a"}, "data": {"PASSWORD": "x"}}),
    ];
    let first = audit(&objs);
    let again = audit(&objs);
    assert_eq!(first, again);
    let mut sorted = first.clone();
    canopy_audit::sort_findings(&mut sorted);
    assert_eq!(first, sorted);
    for w in first.windows(2) {
        let key = |f: &canopy_audit::Finding| {
            (
                f.resource.namespace.clone(),
                f.resource.kind.clone(),
                f.resource.name.clone(),
                f.check,
                f.path.clone(),
            )
        };
        assert!(key(&w[0]) <= key(&w[1]));
    }
    // Per-object results of `add` are sorted too.
    let mut a = Auditor::new();
    let per = a.add(&bad_pod());
    let mut s = per.clone();
    canopy_audit::sort_findings(&mut s);
    assert_eq!(per, s);
}

#[test]
fn catalogue_is_complete() {
    let ids: Vec<&str> = Catalogue::all().iter().map(|c| c.id).collect();
    for id in [
        "HOST-PID",
        "HOST-IPC",
        "HOST-NET",
        "HOST-PORT",
        "HOSTPATH",
        "HOSTPATH-RW",
        "RUNTIME-SOCKET",
        "VOLUME-TYPES",
        "UNSAFE-SYSCTL",
        "WIN-HOSTPROCESS",
        "PROBE-HOST",
        "PRIVILEGED",
        "PRIV-ESC",
        "RUN-AS-ROOT",
        "UID-0",
        "RO-ROOTFS",
        "DANGEROUS-CAPS",
        "CAPS-BASELINE",
        "CAPS-DROP-ALL",
        "SECCOMP-UNCONFINED",
        "SECCOMP-UNSET",
        "APPARMOR",
        "SELINUX",
        "PROCMOUNT",
        "IMAGE-TAG",
        "PULL-POLICY",
        "REGISTRY-ALLOW",
        "RES-REQUESTS",
        "RES-LIMITS",
        "PROBES",
        "NAKED-POD",
        "ENV-SECRET-LITERAL",
        "CM-SECRET",
        "SA-AUTOMOUNT",
        "NETPOL-MISSING",
        "INGRESS-TLS",
        "RBAC-CLUSTER-ADMIN",
        "RBAC-WILDCARD",
        "RBAC-EXEC-ATTACH",
        "RBAC-SECRETS",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    let host_pid = Catalogue::get("host-pid").unwrap();
    assert_eq!(
        host_pid.standards,
        [
            "pss:baseline:hostNamespaces",
            "polaris:hostPIDSet",
            "kubescape:C-0038"
        ]
    );
    assert_eq!(host_pid.severity, Severity::Critical);
}

#[test]
fn finding_standards_are_subsets_of_the_catalogue() {
    let mut objs = vec![bad_pod()];
    let mut p = pod_with(&[
        ("/spec/hostUsers", json!(false)),
        (
            "/spec/containers/0/securityContext/procMount",
            json!("Unmasked"),
        ),
    ]);
    remove(&mut p, "/spec/containers/0/resources");
    remove(&mut p, "/spec/containers/0/livenessProbe");
    objs.push(p);
    for f in audit(&objs) {
        let def = Catalogue::get(f.check).unwrap();
        for s in f.standards {
            assert!(def.standards.contains(s), "{} {s}", f.check);
        }
    }
}
