//! Audits into findings: opened, touched, resolved, reopened and exempted across full and
//! incremental audits; chunks spanning batches; incomplete audits resolve nothing; posture at
//! each full audit; policies and derogations from CONTROL; rebuild gives the same rows.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AuditCompleted, AuditScope, AuditStarted, AuditTrigger, Derogation, DerogationGranted,
    DerogationRevoked, DerogationScope, Envelope, Finding, FindingsChunk, ObjectCount, ObjectRef,
    Policy, PolicyChanged, Severity, envelope::Body,
};
use sqlx::Row as _;

use crate::common::{Env, cluster};

const C: &str = "staging-us";

fn finding(check: &str, sev: Severity, name: &str, derogation: &str) -> Finding {
    Finding {
        check: check.into(),
        severity: sev as i32,
        standards: vec!["pss:baseline:privileged".into(), "kubescape:C-0057".into()],
        resource: Some(ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        }),
        container: "app".into(),
        path: "spec.template.spec.containers[0].securityContext.privileged".into(),
        message: format!("{check} on {name}"),
        remediation: "fix it".into(),
        application: name.into(),
        derogation_id: derogation.into(),
        exempted_until: (!derogation.is_empty()).then_some(prost_types::Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        }),
        fingerprint: format!("fp-{check}-{name}"),
    }
}

fn ev(body: Body) -> Envelope {
    envelope::new(&cluster(C), "agent", body)
}

fn started(id: &str, scope: AuditScope) -> Envelope {
    ev(Body::AuditStarted(AuditStarted {
        audit_id: id.into(),
        trigger: AuditTrigger::Interval as i32,
        scope: scope as i32,
        policy_version: 1,
        command_id: String::new(),
    }))
}

fn chunk(id: &str, index: u32, findings: Vec<Finding>, counts: Vec<ObjectCount>) -> Envelope {
    ev(Body::FindingsChunk(FindingsChunk {
        audit_id: id.into(),
        chunk_index: index,
        findings,
        object_counts: counts,
    }))
}

fn completed(id: &str, scope: AuditScope, chunks: u32, objects: Vec<ObjectRef>) -> Envelope {
    ev(Body::AuditCompleted(AuditCompleted {
        audit_id: id.into(),
        trigger: AuditTrigger::Interval as i32,
        scope: scope as i32,
        chunks,
        objects_audited: 10,
        objects,
        ..Default::default()
    }))
}

fn count(app: &str, n: u64) -> ObjectCount {
    ObjectCount {
        namespace: "shop".into(),
        application: app.into(),
        objects: n,
    }
}

/// A full audit in three events (chunk 0 in its own batch when `split`).
async fn full_audit(env: &Env, id: &str, findings: Vec<Finding>) -> anyhow::Result<u64> {
    env.publish(&started(id, AuditScope::Full)).await?;
    let half = findings.len() / 2;
    let (a, b) = findings.split_at(half);
    let s = env
        .publish(&chunk(id, 0, a.to_vec(), vec![count("cart", 3)]))
        .await?;
    env.applied("ingestion", s).await?;
    env.publish(&chunk(id, 1, b.to_vec(), vec![count("web", 2)]))
        .await?;
    env.publish(&completed(id, AuditScope::Full, 2, Vec::new()))
        .await
}

async fn states(env: &Env) -> anyhow::Result<Vec<(String, String)>> {
    Ok(
        sqlx::query("SELECT fingerprint, state FROM findings ORDER BY fingerprint")
            .fetch_all(&env.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

async fn history(env: &Env, fp: &str) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT kind FROM finding_history WHERE fingerprint = $1 ORDER BY seq")
            .bind(fp)
            .fetch_all(&env.pool)
            .await?,
    )
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Every row of the audit read models, in key order.
async fn dump(env: &Env) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT row_to_json(t)::text FROM audits t ORDER BY cluster_id, audit_id",
        "SELECT row_to_json(t)::text FROM findings t ORDER BY cluster_id, fingerprint",
        "SELECT row_to_json(t)::text FROM finding_history t ORDER BY cluster_id, fingerprint, audit_id",
        "SELECT row_to_json(t)::text FROM posture_history t ORDER BY cluster_id, audit_id, namespace, application",
        "SELECT row_to_json(t)::text FROM posture_current t ORDER BY cluster_id",
        "SELECT row_to_json(t)::text FROM policies t ORDER BY version",
        "SELECT row_to_json(t)::text FROM derogations t ORDER BY derogation_id",
        "SELECT row_to_json(t)::text FROM audit_findings t ORDER BY cluster_id, audit_id, chunk_index, position",
    ] {
        for row in sqlx::query(sql).fetch_all(&env.pool).await? {
            out.push(row.get::<String, _>(0));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn findings_open_resolve_reopen_and_exempt_across_audits() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let (cart, web) = ("fp-PRIVILEGED-cart", "fp-PRIVILEGED-web");

    // Given a full audit with two findings whose chunks span two batches.
    let s = full_audit(
        &env,
        "a1",
        vec![
            finding("PRIVILEGED", Severity::Critical, "cart", ""),
            finding("PRIVILEGED", Severity::Critical, "web", ""),
        ],
    )
    .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(states(&env).await?, pairs(&[(cart, "open"), (web, "open")]));
    let a1: (String, i32, i64) = sqlx::query_as(
        "SELECT state, chunks_received, first_seq FROM audits WHERE audit_id = 'a1'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((a1.0.as_str(), a1.1), ("completed", 2));
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_findings")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(staged, 0, "staging is emptied on completion");

    // When a full audit no longer reports web, it is resolved; cart is touched.
    let s = full_audit(
        &env,
        "a2",
        vec![finding("PRIVILEGED", Severity::Critical, "cart", "")],
    )
    .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(
        states(&env).await?,
        pairs(&[(cart, "open"), (web, "resolved")])
    );
    let (first, last): (String, String) =
        sqlx::query_as("SELECT first_audit_id, last_audit_id FROM findings WHERE fingerprint = $1")
            .bind(cart)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!((first.as_str(), last.as_str()), ("a1", "a2"));

    // When web comes back exempted and cart with it, web is reopened as exempted (same row).
    let s = full_audit(
        &env,
        "a3",
        vec![
            finding("PRIVILEGED", Severity::Critical, "cart", ""),
            finding("PRIVILEGED", Severity::Critical, "web", "d-1"),
        ],
    )
    .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(
        states(&env).await?,
        pairs(&[(cart, "open"), (web, "exempted")])
    );
    let (first, resolved): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT first_audit_id, resolved_at FROM findings WHERE fingerprint = $1")
            .bind(web)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(first, "a1");
    assert!(resolved.is_none());
    assert_eq!(
        history(&env, web).await?,
        ["opened", "resolved", "exempted"]
    );

    // An incremental audit listing cart with no findings resolves cart only.
    env.publish(&started("a4", AuditScope::Incremental)).await?;
    let s = env
        .publish(&completed(
            "a4",
            AuditScope::Incremental,
            0,
            vec![ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "cart".into(),
            }],
        ))
        .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(
        states(&env).await?,
        pairs(&[(cart, "resolved"), (web, "exempted")])
    );
    // And an incremental audit reporting web without its derogation reopens it.
    env.publish(&started("a5", AuditScope::Incremental)).await?;
    env.publish(&chunk(
        "a5",
        0,
        vec![finding("PRIVILEGED", Severity::Critical, "web", "")],
        Vec::new(),
    ))
    .await?;
    let s = env
        .publish(&completed(
            "a5",
            AuditScope::Incremental,
            1,
            vec![ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "web".into(),
            }],
        ))
        .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(
        states(&env).await?,
        pairs(&[(cart, "resolved"), (web, "open")])
    );
    assert_eq!(
        history(&env, web).await?,
        ["opened", "resolved", "exempted", "reopened"]
    );
    assert_eq!(history(&env, cart).await?, ["opened", "resolved"]);

    // An audit whose chunks did not all arrive is incomplete and resolves nothing.
    env.publish(&started("a6", AuditScope::Full)).await?;
    env.publish(&chunk("a6", 0, Vec::new(), Vec::new())).await?;
    let s = env
        .publish(&completed("a6", AuditScope::Full, 2, Vec::new()))
        .await?;
    env.applied("ingestion", s).await?;
    assert_eq!(
        states(&env).await?,
        pairs(&[(cart, "resolved"), (web, "open")])
    );
    let state: String = sqlx::query_scalar("SELECT state FROM audits WHERE audit_id = 'a6'")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(state, "incomplete");

    // Posture at each complete full audit: objects per (namespace, application) and counts.
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT audit_id, application, objects, open_critical, exempted_critical
         FROM posture_history ORDER BY audit_id, application",
    )
    .fetch_all(&env.pool)
    .await?;
    let expected = [
        ("a1", "cart", 3, 1, 0),
        ("a1", "web", 2, 1, 0),
        ("a2", "cart", 3, 1, 0),
        ("a2", "web", 2, 0, 0),
        ("a3", "cart", 3, 1, 0),
        ("a3", "web", 2, 0, 1),
    ];
    let got: Vec<(&str, &str, i64, i64, i64)> = rows
        .iter()
        .map(|(a, b, c, d, e)| (a.as_str(), b.as_str(), *c, *d, *e))
        .collect();
    assert_eq!(got, expected);
    let current: String = sqlx::query_scalar("SELECT audit_id FROM posture_current")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(current, "a3");
    ingestion.stop().await?;

    // A rebuild from the log gives the same rows.
    let live = dump(&env).await?;
    let replayed = canopy_ingestion::rebuild(
        env.config("ingestion"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    assert!(replayed > 0);
    assert_eq!(
        dump(&env).await?,
        live,
        "a rebuild differs from the live projection"
    );
    Ok(())
}

#[tokio::test]
async fn policies_and_derogations_are_projected_from_control() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let ctl = |body| envelope::new_for(None, "api", body);
    let js = &env.js;
    let publish = |e: Envelope| async move { canopy_kit::publish::publish(js, &e).await };
    publish(ctl(Body::PolicyChanged(PolicyChanged {
        version: 1,
        policy: Some(Policy {
            disabled_checks: vec!["PULL-POLICY".into()],
            severity_overrides: [("PRIVILEGED".to_owned(), Severity::High as i32)].into(),
            registry_allow_list: vec!["ghcr.io/acme".into()],
            honour_ignore_annotations: true,
            level: "restricted".into(),
        }),
        changed_by: "alice".into(),
        reason: "first".into(),
    })))
    .await?;
    publish(ctl(Body::DerogationGranted(DerogationGranted {
        derogation: Some(Derogation {
            derogation_id: "d-1".into(),
            check: "HOST-NET".into(),
            scope: Some(DerogationScope {
                cluster_labels: [("env".to_owned(), "prod".to_owned())].into(),
                namespace: "ingress".into(),
                ..Default::default()
            }),
            reason: "needs the host network".into(),
            approver: "bob".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            granted_by: "alice".into(),
            granted_at: None,
        }),
    })))
    .await?;
    let last = publish(ctl(Body::DerogationRevoked(DerogationRevoked {
        derogation_id: "d-1".into(),
        revoked_by: "carol".into(),
        reason: "fixed".into(),
    })))
    .await?;
    canopy_testkit::eventually(crate::common::WAIT, "CONTROL projected", || async {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT last_sequence FROM projection_checkpoints WHERE stream = 'CONTROL'",
        )
        .fetch_optional(&env.pool)
        .await?;
        Ok((seq.unwrap_or(0) as u64 >= last).then_some(()))
    })
    .await?;
    ingestion.stop().await?;
    let p: (i64, Vec<String>, serde_json::Value, String, String) = sqlx::query_as(
        "SELECT version, disabled_checks, severity_overrides, level, changed_by FROM policies",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(p.0, 1);
    assert_eq!(p.1, ["PULL-POLICY"]);
    assert_eq!(p.2, serde_json::json!({"PRIVILEGED": "high"}));
    assert_eq!((p.3.as_str(), p.4.as_str()), ("restricted", "alice"));
    let d: (
        String,
        serde_json::Value,
        String,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT check_id, cluster_labels, namespace, revoked_by, revoked_at FROM derogations",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(d.0, "HOST-NET");
    assert_eq!(d.1, serde_json::json!({"env": "prod"}));
    assert_eq!((d.2.as_str(), d.3.as_str()), ("ingress", "carol"));
    assert!(d.4.is_some());
    Ok(())
}
