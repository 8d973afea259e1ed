//! Audits end to end (seed + one leaf, staging-us): the findings the api serves for the fixture
//! cluster are exactly what `canopyctl audit` reports for the same objects as files; fixing an
//! object in the fake API server resolves its finding; a derogation exempts findings (visible as
//! exempted), revoking it or its expiry reopens them; a disabled check stops reporting.

use std::collections::BTreeSet;
use std::time::Duration;

use canopy_e2e::{LeafSpec, Stack, StackOptions};
use canopy_proto::api::v1::{
    self as api, findings_service_client::FindingsServiceClient,
    policy_service_client::PolicyServiceClient,
};
use canopy_proto::event::v1::{DerogationScope, Policy};
use canopy_testkit::{Fixture, eventually};
use serde_json::Value;
use tonic::transport::Channel;

const CLUSTER: &str = "staging-us";
const WAIT: Duration = Duration::from_secs(90);

/// (check, kind, namespace, name, path): a finding's identity apart from its cluster.
type Key = (String, String, String, String, String);

async fn findings(
    client: &mut FindingsServiceClient<Channel>,
    states: &[api::FindingState],
) -> anyhow::Result<Vec<api::FindingView>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_findings(api::ListFindingsRequest {
                cluster_id: CLUSTER.into(),
                states: states.iter().map(|s| *s as i32).collect(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.findings);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

fn key(f: &api::FindingView) -> Key {
    let r = f.resource.clone().unwrap_or_default();
    (f.check.clone(), r.kind, r.namespace, r.name, f.path.clone())
}

/// What `canopyctl audit -o json` reports for the fixture's files.
async fn offline(dir: &std::path::Path) -> anyhow::Result<BTreeSet<Key>> {
    let out = tokio::process::Command::new(canopy_e2e::binary("canopyctl")?)
        .args(["audit", "--format", "json"])
        .arg(dir)
        .output()
        .await?;
    // Exit 1 only says that findings reached --fail-on.
    anyhow::ensure!(
        matches!(out.status.code(), Some(0 | 1)),
        "canopyctl audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut keys = BTreeSet::new();
    for f in v["findings"].as_array().into_iter().flatten() {
        let r = &f["resource"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        keys.insert((
            s(&f["check"]),
            s(&r["kind"]),
            s(&r["namespace"]),
            s(&r["name"]),
            s(&f["path"]),
        ));
    }
    Ok(keys)
}

#[tokio::test]
async fn fleet_findings_match_the_offline_audit_and_follow_fixes_and_policy() -> anyhow::Result<()>
{
    let fixture = Fixture::load(CLUSTER)?;
    let mut opts = StackOptions::new(vec![
        LeafSpec::new(CLUSTER, fixture.clone()).with_label("env", "staging"),
    ]);
    opts.audit_debounce = Duration::from_millis(300);
    let stack = Stack::start(opts).await?;
    let channel = Channel::from_shared(stack.api_url())?.connect().await?;
    let mut client = FindingsServiceClient::new(channel.clone());
    let mut policy = PolicyServiceClient::new(channel);

    // 1. The start-up audit reaches the api and equals the offline audit of the same files.
    // The agent lists every kind the engine reads; the fixture holds no kind the agent does
    // not list that carries a check (ReplicationController), and controlled pods are skipped
    // by both (the engine's default), so the comparison is exact.
    let expected = offline(&Fixture::dir().join(CLUSTER)).await?;
    assert!(!expected.is_empty());
    let open = eventually(WAIT, "the start-up audit in the api", || {
        let mut c = client.clone();
        let n = expected.len();
        async move {
            let f = findings(&mut c, &[]).await?;
            Ok((f.len() >= n).then_some(f))
        }
    })
    .await?;
    let got: BTreeSet<Key> = open.iter().map(key).collect();
    assert_eq!(got.len(), open.len(), "no finding twice");
    assert_eq!(got, expected, "api findings differ from `canopyctl audit`");

    // 2. Fixing an object in the fake API server resolves its finding (incremental audit).
    let privileged = open
        .iter()
        .find(|f| {
            f.check == "PRIVILEGED" && f.resource.as_ref().is_some_and(|r| r.kind == "Deployment")
        })
        .cloned()
        .expect("staging-us has a privileged Deployment");
    let r = privileged.resource.clone().unwrap();
    let leaf = &stack.leaves[0];
    let mut obj = leaf
        .kube
        .get("apps/v1", "Deployment", Some(&r.namespace), &r.name)
        .unwrap();
    for c in obj["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
    {
        if c["securityContext"]["privileged"] == Value::Bool(true) {
            c["securityContext"]["privileged"] = Value::Bool(false);
        }
    }
    leaf.kube.apply(obj)?;
    let resolved = eventually(WAIT, "the fixed finding resolved", || {
        let mut c = client.clone();
        let fp = privileged.fingerprint.clone();
        async move {
            let f = findings(&mut c, &[api::FindingState::Resolved]).await?;
            Ok(f.into_iter().find(|f| f.fingerprint == fp))
        }
    })
    .await?;
    assert!(resolved.resolved_at.is_some());
    let still_open = findings(&mut client, &[]).await?;
    assert!(
        still_open
            .iter()
            .all(|f| f.fingerprint != privileged.fingerprint)
    );
    // Only the fixed object was re-audited: every other object's findings are as they were.
    let others = |list: &[api::FindingView]| -> BTreeSet<Key> {
        list.iter()
            .map(key)
            .filter(|k| !(k.1 == r.kind && k.2 == r.namespace && k.3 == r.name))
            .collect()
    };
    assert_eq!(others(&still_open), others(&open));

    // 3. A derogation exempts findings; they stay visible as exempted.
    let target = still_open
        .iter()
        .find(|f| f.check == "HOST-NET" || f.check == "HOST-PID" || f.check == "PRIVILEGED")
        .cloned()
        .expect("another host or privileged finding");
    let t = target.resource.clone().unwrap();
    let in_an_hour = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let grant = |expires: prost_types::Timestamp| api::GrantDerogationRequest {
        check: target.check.clone(),
        scope: Some(DerogationScope {
            cluster_labels: [("env".to_owned(), "staging".to_owned())].into(),
            namespace: t.namespace.clone(),
            workload_kind: t.kind.clone(),
            workload_name: t.name.clone(),
            ..Default::default()
        }),
        reason: "accepted risk".into(),
        approver: "security team".into(),
        expires_at: Some(expires),
    };
    let d = policy
        .grant_derogation(grant(in_an_hour))
        .await?
        .into_inner()
        .derogation
        .unwrap();
    let state_of = |fp: String, want: api::FindingState| {
        let c = client.clone();
        async move {
            eventually(WAIT, &format!("{fp} {want:?}"), || {
                let mut c = c.clone();
                let fp = fp.clone();
                async move {
                    let all = findings(
                        &mut c,
                        &[
                            api::FindingState::Open,
                            api::FindingState::Exempted,
                            api::FindingState::Resolved,
                        ],
                    )
                    .await?;
                    Ok(all
                        .into_iter()
                        .find(|f| f.fingerprint == fp && f.state == want as i32))
                }
            })
            .await
        }
    };
    let exempted = state_of(target.fingerprint.clone(), api::FindingState::Exempted).await?;
    assert_eq!(exempted.derogation_id, d.derogation_id);
    // 4. Revoking it reopens the finding.
    policy
        .revoke_derogation(api::RevokeDerogationRequest {
            derogation_id: d.derogation_id.clone(),
            reason: "fixed".into(),
        })
        .await?;
    let reopened = state_of(target.fingerprint.clone(), api::FindingState::Open).await?;
    assert!(reopened.derogation_id.is_empty());
    // 5. So does its expiry: exempted while it lasts, open once it is past.
    let soon = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 15,
        nanos: 0,
    };
    policy.grant_derogation(grant(soon)).await?;
    state_of(target.fingerprint.clone(), api::FindingState::Exempted).await?;
    let open_again = state_of(target.fingerprint.clone(), api::FindingState::Open).await?;
    assert_eq!(open_again.fingerprint, target.fingerprint);

    // 6. A disabled check stops reporting: its findings are resolved by the next audit.
    let pull = still_open
        .iter()
        .filter(|f| f.check == "PULL-POLICY")
        .count();
    assert!(pull > 0);
    policy
        .set_policy(api::SetPolicyRequest {
            policy: Some(Policy {
                disabled_checks: vec!["PULL-POLICY".into()],
                ..Default::default()
            }),
            expected_version: Some(0),
            reason: "noise".into(),
        })
        .await?;
    eventually(WAIT, "PULL-POLICY findings resolved", || {
        let mut c = client.clone();
        async move {
            let f = findings(&mut c, &[]).await?;
            Ok(f.iter().all(|f| f.check != "PULL-POLICY").then_some(()))
        }
    })
    .await?;
    let audits = client
        .list_audits(api::ListAuditsRequest {
            cluster_id: CLUSTER.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let policy_audit = audits
        .audits
        .iter()
        .find(|a| a.policy_version == 1)
        .expect("an audit with policy version 1");
    assert_eq!(policy_audit.state, api::AuditState::Completed as i32);
    assert!(
        audits
            .audits
            .iter()
            .any(|a| a.scope == canopy_proto::event::v1::AuditScope::Incremental as i32)
    );
    stack.shutdown().await
}
