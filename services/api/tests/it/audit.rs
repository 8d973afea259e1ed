//! PolicyService (optimistic concurrency, validation that publishes nothing, derogations with
//! read-your-writes) and FindingsService (filters, pages, expired exemptions, posture, audits)
//! over the real ingestion.

use std::collections::BTreeSet;

use async_nats::jetstream;
use tonic::Code;

use canopy_kit::envelope;
use canopy_kit::proto::api::v1::{
    self as api, findings_service_client::FindingsServiceClient,
    policy_service_client::PolicyServiceClient,
};
use canopy_kit::proto::event::v1::{
    AuditCompleted, AuditScope, AuditStarted, AuditTrigger, DerogationScope, Envelope, Finding,
    FindingsChunk, ObjectCount, ObjectRef, Policy, Severity, envelope::Body,
};
use canopy_kit::subject::ClusterId;
use canopy_testkit::eventually;

use crate::stack::{Stack, WAIT};

async fn control_last(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream("CONTROL")
        .await?
        .info()
        .await?
        .state
        .last_sequence)
}

#[tokio::test]
async fn policy_versions_follow_each_other_and_conflicts_are_refused() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut client = PolicyServiceClient::new(stack.channel().await?);
    let initial = client
        .get_policy(api::GetPolicyRequest {})
        .await?
        .into_inner();
    assert_eq!(initial.version, 0);
    let set = |expected: Option<u64>, disabled: &str| api::SetPolicyRequest {
        policy: Some(Policy {
            disabled_checks: vec![disabled.to_owned()],
            severity_overrides: [("privileged".to_owned(), Severity::High as i32)].into(),
            ..Default::default()
        }),
        expected_version: expected,
        reason: "test".into(),
    };
    let v1 = client
        .set_policy(set(Some(0), "pull-policy"))
        .await?
        .into_inner();
    assert_eq!(v1.version, 1);
    let p = v1.policy.unwrap();
    assert_eq!(p.disabled_checks, ["PULL-POLICY"], "ids are canonical");
    assert!(p.severity_overrides.contains_key("PRIVILEGED"));
    let read = client
        .get_policy(api::GetPolicyRequest {})
        .await?
        .into_inner();
    assert_eq!(
        (read.version, read.control_sequence),
        (1, v1.control_sequence)
    );

    // A change based on an old version is refused.
    let stale = client.set_policy(set(Some(0), "PROBES")).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    // Bad input names its field and publishes nothing.
    let before = control_last(&stack.js).await?;
    let bad = client
        .set_policy(set(None, "NO-SUCH-CHECK"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("policy.disabled_checks"),
        "{}",
        bad.message()
    );
    assert_eq!(control_last(&stack.js).await?, before);

    // Concurrent writers: every stored version is one more than the previous; losers are
    // told to retry.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.set_policy(set(None, "PROBES")).await
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        match t.await? {
            Ok(r) => assert!(versions.insert(r.into_inner().version)),
            Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
        }
    }
    assert!(!versions.is_empty());
    let last = client
        .get_policy(api::GetPolicyRequest {})
        .await?
        .into_inner();
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        (2..=last.version).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn derogations_are_granted_listed_and_revoked() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut client = PolicyServiceClient::new(stack.channel().await?);
    let in_an_hour = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let grant = |check: &str, expires: prost_types::Timestamp| api::GrantDerogationRequest {
        check: check.into(),
        scope: Some(DerogationScope {
            cluster_id: "prod-eu".into(),
            namespace: "ingress".into(),
            workload_kind: "DaemonSet".into(),
            workload_name: "ingress-nginx".into(),
            ..Default::default()
        }),
        reason: "needs the host network".into(),
        approver: "bob".into(),
        expires_at: Some(expires),
    };
    let before = control_last(&stack.js).await?;
    for (req, field) in [
        (grant("NOPE", in_an_hour), "check"),
        (
            grant(
                "HOST-NET",
                prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                },
            ),
            "expires_at",
        ),
        (
            api::GrantDerogationRequest {
                approver: String::new(),
                ..grant("HOST-NET", in_an_hour)
            },
            "approver",
        ),
    ] {
        let e = client.grant_derogation(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert_eq!(control_last(&stack.js).await?, before, "nothing published");

    let granted = client
        .grant_derogation(grant("host-net", in_an_hour))
        .await?
        .into_inner();
    let d = granted.derogation.unwrap();
    assert_eq!(d.check, "HOST-NET");
    // Revoked at once: the api waits for the projection to know it.
    client
        .revoke_derogation(api::RevokeDerogationRequest {
            derogation_id: d.derogation_id.clone(),
            reason: "fixed".into(),
        })
        .await?;
    let again = client
        .revoke_derogation(api::RevokeDerogationRequest {
            derogation_id: d.derogation_id.clone(),
            reason: String::new(),
        })
        .await;
    // The second revocation may race the projection of the first: either it sees it revoked,
    // or (rarely) it is accepted as a duplicate that the projection ignores.
    if let Err(e) = again {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    let unknown = client
        .revoke_derogation(api::RevokeDerogationRequest {
            derogation_id: uuid::Uuid::now_v7().to_string(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let active = client
        .grant_derogation(grant("PRIVILEGED", in_an_hour))
        .await?
        .into_inner()
        .derogation
        .unwrap();
    let list = eventually(WAIT, "both derogations listed", || {
        let mut c = client.clone();
        async move {
            let l = c
                .list_derogations(api::ListDerogationsRequest::default())
                .await?
                .into_inner();
            Ok((l.derogations.len() == 2
                && l.derogations
                    .iter()
                    .any(|d| d.state == api::DerogationState::Revoked as i32))
            .then_some(l))
        }
    })
    .await?;
    // Newest grant first.
    assert_eq!(
        list.derogations[0]
            .derogation
            .as_ref()
            .unwrap()
            .derogation_id,
        active.derogation_id
    );
    assert_eq!(
        list.derogations[0].state,
        api::DerogationState::Active as i32
    );
    assert_eq!(list.derogations[1].revoke_reason, "fixed");
    let only_active = client
        .list_derogations(api::ListDerogationsRequest {
            states: vec![api::DerogationState::Active as i32],
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(only_active.derogations.len(), 1);
    assert!(only_active.next_page_token.is_empty());
    Ok(())
}

// === findings ===

pub fn finding(
    cluster: &str,
    check: &str,
    sev: Severity,
    ns: &str,
    name: &str,
    exempt: Option<i64>,
) -> Finding {
    Finding {
        check: check.into(),
        severity: sev as i32,
        standards: vec![
            format!("pss:baseline:{}", check.to_lowercase()),
            "kubescape:C-0001".into(),
        ],
        resource: Some(ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: ns.into(),
            name: name.into(),
        }),
        container: "app".into(),
        path: format!("spec.{check}"),
        message: format!("{check} on {name}"),
        remediation: "fix".into(),
        application: name.into(),
        derogation_id: exempt.map(|_| "d-1".to_owned()).unwrap_or_default(),
        exempted_until: exempt.map(|s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }),
        fingerprint: format!("{cluster}-{check}-{ns}-{name}"),
    }
}

pub fn audit_events(
    cluster: &str,
    id: &str,
    findings: Vec<Finding>,
    objects: u64,
) -> Vec<Envelope> {
    let c = ClusterId::parse(cluster).unwrap();
    vec![
        envelope::new(
            &c,
            "agent",
            Body::AuditStarted(AuditStarted {
                audit_id: id.into(),
                trigger: AuditTrigger::Startup as i32,
                scope: AuditScope::Full as i32,
                ..Default::default()
            }),
        ),
        envelope::new(
            &c,
            "agent",
            Body::FindingsChunk(FindingsChunk {
                audit_id: id.into(),
                chunk_index: 0,
                findings,
                object_counts: vec![ObjectCount {
                    namespace: "shop".into(),
                    application: "cart".into(),
                    objects,
                }],
            }),
        ),
        envelope::new(
            &c,
            "agent",
            Body::AuditCompleted(AuditCompleted {
                audit_id: id.into(),
                trigger: AuditTrigger::Startup as i32,
                scope: AuditScope::Full as i32,
                chunks: 1,
                objects_audited: objects,
                ..Default::default()
            }),
        ),
    ]
}

#[tokio::test]
async fn findings_are_filtered_paged_and_summed_into_a_posture() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let now = chrono::Utc::now().timestamp();
    let mut last = 0;
    for (cluster, findings) in [
        (
            "alpha",
            vec![
                finding(
                    "alpha",
                    "PRIVILEGED",
                    Severity::Critical,
                    "shop",
                    "cart",
                    None,
                ),
                finding(
                    "alpha",
                    "HOST-NET",
                    Severity::High,
                    "shop",
                    "cart",
                    Some(now + 3600),
                ),
                finding("alpha", "PULL-POLICY", Severity::Low, "shop", "cart", None),
                // Exempted until a moment ago: reads as open.
                finding(
                    "alpha",
                    "PROBES",
                    Severity::Low,
                    "shop",
                    "cart",
                    Some(now - 10),
                ),
            ],
        ),
        (
            "beta",
            vec![
                finding(
                    "beta",
                    "PRIVILEGED",
                    Severity::Critical,
                    "web",
                    "front",
                    None,
                ),
                finding("beta", "RO-ROOTFS", Severity::Medium, "shop", "cart", None),
            ],
        ),
    ] {
        for e in audit_events(cluster, &format!("{cluster}-a1"), findings, 10) {
            last = stack.publish(&e).await?;
        }
    }
    stack.projected(last).await?;
    let mut client = FindingsServiceClient::new(stack.channel().await?);
    let list = |req: api::ListFindingsRequest| {
        let mut c = client.clone();
        async move { anyhow::Ok(c.list_findings(req).await?.into_inner()) }
    };
    // Every open or exempted finding, most severe first, in pages of 2.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(api::ListFindingsRequest {
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        })
        .await?;
        all.extend(page.findings);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let order: Vec<(String, String)> = all
        .iter()
        .map(|f| (f.cluster_id.clone(), f.check.clone()))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    };
    assert_eq!(
        order,
        pairs(&[
            ("alpha", "PRIVILEGED"),
            ("beta", "PRIVILEGED"),
            ("alpha", "HOST-NET"),
            ("beta", "RO-ROOTFS"),
            ("alpha", "PROBES"),
            ("alpha", "PULL-POLICY"),
        ])
    );
    let probes = all.iter().find(|f| f.check == "PROBES").unwrap();
    assert_eq!(
        probes.state,
        api::FindingState::Open as i32,
        "expired exemption"
    );
    let hostnet = all.iter().find(|f| f.check == "HOST-NET").unwrap();
    assert_eq!(hostnet.state, api::FindingState::Exempted as i32);

    // Filters.
    let checks = |l: api::ListFindingsResponse| -> Vec<String> {
        l.findings
            .into_iter()
            .map(|f| format!("{}/{}", f.cluster_id, f.check))
            .collect()
    };
    let high = list(api::ListFindingsRequest {
        min_severity: Severity::High as i32,
        cluster_id: "alpha".into(),
        ..Default::default()
    })
    .await?;
    assert_eq!(checks(high), ["alpha/PRIVILEGED", "alpha/HOST-NET"]);
    let exempted = list(api::ListFindingsRequest {
        states: vec![api::FindingState::Exempted as i32],
        ..Default::default()
    })
    .await?;
    assert_eq!(checks(exempted), ["alpha/HOST-NET"]);
    let standard = list(api::ListFindingsRequest {
        standard: "pss:baseline:priv".into(),
        namespace: "web".into(),
        ..Default::default()
    })
    .await?;
    assert_eq!(checks(standard), ["beta/PRIVILEGED"]);
    let app = list(api::ListFindingsRequest {
        application: "cart".into(),
        severities: vec![Severity::Medium as i32, Severity::Low as i32],
        ..Default::default()
    })
    .await?;
    assert_eq!(
        checks(app),
        ["beta/RO-ROOTFS", "alpha/PROBES", "alpha/PULL-POLICY"]
    );
    let bad = client
        .list_findings(api::ListFindingsRequest {
            check: "NOPE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = client
        .list_findings(api::ListFindingsRequest {
            page_token: token,
            cluster_id: "alpha".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("page_token"), "{}", bad.message());

    // Posture: alpha has 10 objects, open 1 critical + 2 low (PROBES reads open) = W 12.
    let posture = client
        .get_posture(api::GetPostureRequest {
            cluster_id: "alpha".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(posture.scope, "cluster");
    assert_eq!(posture.objects_audited, 10);
    let counts = posture.counts.unwrap();
    assert_eq!(counts.open.get("critical"), Some(&1));
    assert_eq!(counts.open.get("low"), Some(&2));
    assert_eq!(counts.exempted.get("high"), Some(&1));
    assert_eq!(posture.score, 45, "round(100 * 10 / 22)");
    assert_eq!(posture.history.len(), 1);
    let fleet = client
        .get_posture(api::GetPostureRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (fleet.scope.as_str(), fleet.clusters, fleet.objects_audited),
        ("fleet", 2, 20)
    );
    // Two audits at two times: the fleet's history has a point per audit.
    assert_eq!(fleet.history.len(), 2);
    assert_eq!(fleet.history[1].objects_audited, 20);
    let app = client
        .get_posture(api::GetPostureRequest {
            application: "front".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(app.scope, "application");
    assert_eq!(app.counts.unwrap().open.get("critical"), Some(&1));
    assert_eq!(app.score, 0, "open findings and no object audited in scope");

    // Audits.
    let audits = client
        .list_audits(api::ListAuditsRequest::default())
        .await?
        .into_inner();
    let ids: Vec<&str> = audits.audits.iter().map(|a| a.audit_id.as_str()).collect();
    assert_eq!(ids, ["beta-a1", "alpha-a1"], "newest first");
    let one = client
        .get_audit(api::GetAuditRequest {
            cluster_id: "alpha".into(),
            audit_id: "alpha-a1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(one.state, api::AuditState::Completed as i32);
    assert_eq!(
        (one.chunks, one.chunks_received, one.objects_audited),
        (1, 1, 10)
    );
    let missing = client
        .get_audit(api::GetAuditRequest {
            cluster_id: "alpha".into(),
            audit_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    Ok(())
}
