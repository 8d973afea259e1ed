//! Every workload kind's pod template is audited at the right path.

use serde_json::json;

use crate::common::*;

#[test]
fn every_kind_pass_and_fail() {
    for (kind, sp, mp) in KINDS {
        // Pass: the compliant spec yields no PSS finding.
        let clean = workload(kind, json!({"labels": {"app": "web"}}), compliant_spec());
        let f = audit(std::slice::from_ref(&clean));
        let pss: Vec<_> = f
            .iter()
            .filter(|f| f.standards.iter().any(|s| s.starts_with("pss:")))
            .collect();
        assert!(pss.is_empty(), "{kind}: {pss:#?}");

        // Fail: one pod-level, one container-level, one init, one ephemeral, one annotation.
        let mut spec = compliant_spec();
        set(&mut spec, "/hostPID", json!(true));
        set(
            &mut spec,
            "/containers/0/securityContext/privileged",
            json!(true),
        );
        set(
            &mut spec,
            "/initContainers/0/securityContext/runAsUser",
            json!(0),
        );
        set(
            &mut spec,
            "/ephemeralContainers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
        );
        let meta = json!({
            "labels": {"app": "web"},
            "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
        });
        let w = workload(kind, meta, spec);
        let f = audit(&[w]);
        assert_eq!(paths(&f, "HOST-PID"), [format!("{sp}.hostPID")], "{kind}");
        assert_eq!(
            paths(&f, "PRIVILEGED"),
            [format!("{sp}.containers[0].securityContext.privileged")],
            "{kind}"
        );
        assert_eq!(
            paths(&f, "UID-0"),
            [format!("{sp}.initContainers[0].securityContext.runAsUser")],
            "{kind}"
        );
        assert_eq!(
            paths(&f, "CAPS-BASELINE"),
            [format!(
                "{sp}.ephemeralContainers[0].securityContext.capabilities.add[0]"
            )],
            "{kind}"
        );
        assert_eq!(
            paths(&f, "APPARMOR"),
            [format!(
                "{mp}.annotations[container.apparmor.security.beta.kubernetes.io/app]"
            )],
            "{kind}"
        );
        for finding in &f {
            assert_eq!(finding.resource.kind, *kind);
            assert_eq!(finding.resource.name, "w");
            assert_eq!(finding.resource.namespace.as_deref(), Some("ns"));
        }
    }
}

#[test]
fn seccomp_annotations_on_templates() {
    for (kind, _, mp) in KINDS {
        let mut spec = compliant_spec();
        remove(&mut spec, "/securityContext/seccompProfile");
        let meta =
            json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}});
        let f = audit(&[workload(kind, meta, spec)]);
        assert_eq!(
            paths(&f, "SECCOMP-UNCONFINED"),
            [format!(
                "{mp}.annotations[seccomp.security.alpha.kubernetes.io/pod]"
            )],
            "{kind}"
        );
    }
}

#[test]
fn windows_pods_in_every_kind() {
    for (kind, _, _) in KINDS {
        let mut spec = compliant_spec();
        set(&mut spec, "/os", json!({"name": "windows"}));
        remove(&mut spec, "/securityContext/seccompProfile");
        remove(&mut spec, "/containers/0/securityContext");
        let f = audit(&[workload(kind, json!({}), spec)]);
        for check in ["PRIV-ESC", "CAPS-DROP-ALL", "SECCOMP-UNSET", "RO-ROOTFS"] {
            assert!(paths(&f, check).is_empty(), "{kind} {check}");
        }
    }
}

#[test]
fn objects_without_pod_spec_are_tolerated() {
    for (kind, _, _) in KINDS {
        let o = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}});
        assert!(audit(&[o]).is_empty(), "{kind}");
        let o =
            json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, "spec": "garbage"});
        assert!(audit(&[o]).is_empty(), "{kind}");
    }
    // Non-objects and objects of other kinds.
    assert!(
        audit(&[
            json!(null),
            json!([1, 2]),
            json!({"kind": 3}),
            json!({"kind": "Service"})
        ])
        .is_empty()
    );
}
