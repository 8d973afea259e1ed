//! `canopyctl policy`, `derogations`, `findings list`, `posture` and `audits`, tables and JSON.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AuditCompleted, AuditScope, AuditStarted, AuditTrigger, Finding, FindingsChunk, ObjectCount,
    ObjectRef, Severity, envelope::Body,
};
use canopy_kit::subject::ClusterId;
use serde_json::Value;

use crate::stack::Stack;
use crate::{run, stderr, stdout};

fn finding(check: &str, sev: Severity, name: &str) -> Finding {
    Finding {
        check: check.into(),
        severity: sev as i32,
        standards: vec!["pss:baseline:privileged".into()],
        resource: Some(ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        }),
        container: "app".into(),
        path: "spec.template.spec.containers[0].securityContext.privileged".into(),
        message: format!("container \"app\" of {name} is privileged"),
        remediation: "Remove privileged: true.".into(),
        application: name.into(),
        fingerprint: format!("fp-{check}-{name}"),
        ..Default::default()
    }
}

async fn seed_audit(stack: &Stack) -> anyhow::Result<()> {
    let c = ClusterId::parse("alpha")?;
    let mut last = 0;
    for body in [
        Body::AuditStarted(AuditStarted {
            audit_id: "a-1".into(),
            trigger: AuditTrigger::Startup as i32,
            scope: AuditScope::Full as i32,
            ..Default::default()
        }),
        Body::FindingsChunk(FindingsChunk {
            audit_id: "a-1".into(),
            chunk_index: 0,
            findings: vec![
                finding("PRIVILEGED", Severity::Critical, "cart"),
                finding("PULL-POLICY", Severity::Low, "web"),
            ],
            object_counts: vec![ObjectCount {
                namespace: "shop".into(),
                application: "cart".into(),
                objects: 8,
            }],
        }),
        Body::AuditCompleted(AuditCompleted {
            audit_id: "a-1".into(),
            trigger: AuditTrigger::Startup as i32,
            scope: AuditScope::Full as i32,
            chunks: 1,
            objects_audited: 8,
            findings: 2,
            open_by_severity: [("critical".to_owned(), 1), ("low".to_owned(), 1)].into(),
            ..Default::default()
        }),
    ] {
        last = stack.publish(&envelope::new(&c, "agent", body)).await?;
    }
    stack.projected(last).await
}

#[tokio::test]
async fn findings_posture_and_audits_as_tables_and_json() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    seed_audit(&stack).await?;
    let api = stack.api_url();

    let out = run(&api, &["findings", "list"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("SEVERITY  CLUSTER  OBJECT"), "{text}");
    assert!(
        lines[1].starts_with("CRITICAL  alpha    Deployment shop/cart  PRIVILEGED"),
        "{text}"
    );
    assert!(lines[2].starts_with("LOW "), "{text}");
    assert_eq!(lines[3], "2 findings");

    let out = run(
        &api,
        &["-o", "json", "findings", "list", "--min-severity", "high"],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["check"], "PRIVILEGED");
    assert_eq!(findings[0]["severity"], "critical");
    assert_eq!(findings[0]["resource"]["apiVersion"], "apps/v1");
    assert_eq!(findings[0]["state"], "open");

    let out = run(&api, &["posture", "--cluster", "alpha"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // 8 objects, weighted open 10 + 1: round(800 / 19) = 42.
    assert!(text.contains("Score:") && text.contains("42/100"), "{text}");
    assert!(
        text.contains("1 critical, 0 high, 0 medium, 1 low"),
        "{text}"
    );
    let out = run(&api, &["-o", "json", "posture"]).await?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["scope"], "fleet");
    assert_eq!(v["objects_audited"], 8);
    assert_eq!(v["history"].as_array().unwrap().len(), 1);

    let out = run(&api, &["audits", "list"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("alpha    a-1    startup  full   completed"),
        "{text}"
    );
    let out = run(
        &api,
        &["-o", "json", "audits", "get", "--cluster", "alpha", "a-1"],
    )
    .await?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (v["chunks"].as_u64(), v["findings"].as_u64()),
        (Some(1), Some(2))
    );
    let out = run(&api, &["audits", "get", "--cluster", "alpha", "nope"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn policy_and_derogations_round_trip() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api_url();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        "disabled_checks: [pull-policy]\nseverity_overrides:\n  PRIVILEGED: medium\nlevel: all\n",
    )?;
    let path = file.display().to_string();
    let out = run(
        &api,
        &["policy", "set", "--file", &path, "--expected-version", "0"],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("policy version 1 stored"),
        "{}",
        stdout(&out)
    );
    let out = run(
        &api,
        &["policy", "set", "-f", &path, "--expected-version", "0"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&out)
    );
    let out = run(&api, &["policy", "get"]).await?;
    let text = stdout(&out);
    assert!(text.starts_with("# version 1, changed by"), "{text}");
    assert!(
        text.contains("- PULL-POLICY") && text.contains("PRIVILEGED: medium"),
        "{text}"
    );
    // What `get` prints, `set` takes back.
    let body = text.lines().skip(1).collect::<Vec<_>>().join("\n");
    std::fs::write(&file, body)?;
    let out = run(&api, &["policy", "set", "-f", &path]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&file, "disabled: [X]\n")?;
    let out = run(&api, &["policy", "set", "-f", &path]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = run(
        &api,
        &[
            "-o",
            "json",
            "derogations",
            "grant",
            "--check",
            "HOST-NET",
            "--cluster-label",
            "env=prod",
            "--namespace",
            "ingress",
            "--workload",
            "DaemonSet/nginx",
            "--reason",
            "host network needed",
            "--approver",
            "bob",
            "--expires-in",
            "30d",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let id = v["derogation_id"].as_str().unwrap().to_owned();
    let out = run(&api, &["derogations", "revoke", &id, "--reason", "fixed"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = canopy_testkit::eventually(crate::stack::WAIT, "the revocation listed", || {
        let api = api.clone();
        async move {
            let out = run(&api, &["derogations", "list"]).await?;
            let text = stdout(&out);
            Ok(text.contains("revoked").then_some(text))
        }
    })
    .await?;
    assert!(
        listed.contains("HOST-NET  env=prod,ns=ingress,DaemonSet/nginx  revoked"),
        "{listed}"
    );
    let out = run(
        &api,
        &[
            "derogations",
            "grant",
            "--check",
            "HOST-NET",
            "--reason",
            "r",
            "--approver",
            "a",
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("expires_at"), "{}", stderr(&out));
    Ok(())
}
