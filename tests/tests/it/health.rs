//! The doctor end to end: an agent that stops is `unreachable` within three heartbeat intervals,
//! a cut link is `link-down` (never `unreachable`); a crash-looping fixture is diagnosed and, with
//! `auto`, restarted exactly once (the fake Kubernetes API records the call), with `propose`
//! only after approval; rate and blast-radius limits hold; a doctor restart neither loses state
//! nor repeats an action.

use std::time::Duration;

use canopy_e2e::{LeafSpec, Stack, StackOptions};
use canopy_proto::api::v1::{
    ApproveRemediationRequest, ClusterHealthView, GetFleetHealthRequest, ListDiagnosesRequest,
    ListRemediationsRequest, ListRemediationsResponse, Remediation,
    health_service_client::HealthServiceClient,
};
use canopy_proto::event::v1::ClusterHealth;
use canopy_testkit::{FakeKube, Fixture, eventually};
use serde_json::json;
use sqlx::Row as _;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(90);

async fn client(stack: &Stack) -> anyhow::Result<HealthServiceClient<Channel>> {
    Ok(HealthServiceClient::connect(stack.api_url()).await?)
}

async fn health_of(
    c: &mut HealthServiceClient<Channel>,
    cluster: &str,
) -> anyhow::Result<Option<ClusterHealthView>> {
    Ok(c.get_fleet_health(GetFleetHealthRequest {
        cluster_id: cluster.to_owned(),
    })
    .await?
    .into_inner()
    .clusters
    .into_iter()
    .next())
}

async fn until_state(
    c: &mut HealthServiceClient<Channel>,
    cluster: &str,
    state: ClusterHealth,
) -> anyhow::Result<ClusterHealthView> {
    eventually(WAIT, &format!("{cluster} {state:?}"), || {
        let mut c = c.clone();
        async move {
            Ok(health_of(&mut c, cluster)
                .await?
                .filter(|h| h.state == state as i32))
        }
    })
    .await
}

/// The states a cluster went through, in order (from the read model).
async fn history(stack: &Stack, cluster: &str) -> anyhow::Result<Vec<String>> {
    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let rows = sqlx::query("SELECT state FROM health_history WHERE cluster_id = $1 ORDER BY seq")
        .bind(cluster)
        .fetch_all(&pool)
        .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>("state")).collect())
}

#[tokio::test]
async fn a_stopped_agent_is_unreachable_and_a_cut_link_is_link_down() -> anyhow::Result<()> {
    let mut opts = StackOptions::new(vec![
        LeafSpec::new("prod-eu", Fixture::load("prod-eu")?),
        LeafSpec::new("staging-us", Fixture::load("staging-us")?),
    ]);
    opts.heartbeat_interval = Duration::from_secs(1);
    let mut stack = Stack::start(opts).await?;
    let mut c = client(&stack).await?;
    until_state(&mut c, "prod-eu", ClusterHealth::Healthy).await?;
    until_state(&mut c, "staging-us", ClusterHealth::Healthy).await?;

    // The link of staging-us is cut, both servers and the agent keep running.
    stack.leaf_mut("staging-us")?.link.cut();
    let down = until_state(&mut c, "staging-us", ClusterHealth::LinkDown).await?;
    assert!(down.reason.contains("link"), "{}", down.reason);

    // The agent of prod-eu stops: unreachable within three heartbeat intervals of its last
    // heartbeat (the read model's `since` is the doctor's decision time).
    stack.leaf_mut("prod-eu")?.agent.stop().await?;
    let stopped = chrono::Utc::now();
    let gone = until_state(&mut c, "prod-eu", ClusterHealth::Unreachable).await?;
    let since = gone.since.expect("since");
    let detected = chrono::DateTime::from_timestamp(since.seconds, since.nanos as u32).unwrap();
    let latency = (detected - stopped).num_milliseconds();
    eprintln!("unreachable detected {latency} ms after the agent stopped (interval 1000 ms)");
    assert!(latency <= 3_000 + 500, "detected after {latency} ms");
    assert!(gone.reason.contains("no heartbeat"), "{}", gone.reason);

    // Long past three intervals, the cut cluster is still link-down, never unreachable.
    let h = health_of(&mut c, "staging-us").await?.unwrap();
    assert_eq!(h.state, ClusterHealth::LinkDown as i32);
    assert!(
        !history(&stack, "staging-us")
            .await?
            .contains(&"unreachable".to_owned())
    );

    // Both come back.
    stack.leaf_mut("staging-us")?.link.restore();
    stack.leaf_mut("prod-eu")?.agent.start().await?;
    until_state(&mut c, "staging-us", ClusterHealth::Healthy).await?;
    until_state(&mut c, "prod-eu", ClusterHealth::Healthy).await?;
    assert_eq!(
        history(&stack, "staging-us").await?,
        ["healthy", "link-down", "healthy"]
    );
    assert_eq!(
        history(&stack, "prod-eu").await?,
        ["healthy", "unreachable", "healthy"]
    );
    stack.shutdown().await
}

fn restarts(kube: &FakeKube, deployment: &str) -> usize {
    kube.requests_matching(
        "PATCH",
        &format!("/apis/apps/v1/namespaces/shop/deployments/{deployment}"),
    )
    .len()
}

fn cordons(kube: &FakeKube, node: &str) -> usize {
    kube.requests_matching("PATCH", &format!("/api/v1/nodes/{node}"))
        .len()
}

async fn remediations(
    c: &mut HealthServiceClient<Channel>,
) -> anyhow::Result<ListRemediationsResponse> {
    Ok(c.list_remediations(ListRemediationsRequest {
        cluster_id: "sick-eu".into(),
        ..Default::default()
    })
    .await?
    .into_inner())
}

/// Waits until the remediation of `target` is in `state`.
async fn until_remediation(
    c: &mut HealthServiceClient<Channel>,
    target: &str,
    state: &str,
) -> anyhow::Result<Remediation> {
    eventually(
        WAIT,
        &format!("the remediation of {target} {state}"),
        || {
            let mut c = c.clone();
            async move {
                Ok(remediations(&mut c)
                    .await?
                    .remediations
                    .into_iter()
                    .find(|r| r.target == target && r.state == state))
            }
        },
    )
    .await
}

/// Deployment `shop/<name>` with 1 of 1 replicas unavailable and its crash-looping pod.
fn crash_looping(kube: &FakeKube, name: &str) -> anyhow::Result<()> {
    kube.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "registry.example.com/shop/x:1"}]}}},
        "status": {"replicas": 1, "availableReplicas": 0}
    }))?;
    kube.apply(crash_looping_pod(name))
}

/// A crash-looping pod of Deployment `shop/<name>`.
fn crash_looping_pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "shop", "name": format!("{name}-6f7d-a1"),
            "labels": {"app": name, "pod-template-hash": "6f7d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-6f7d"), "controller": true}]},
        "spec": {"containers": [{"name": name, "image": "registry.example.com/shop/x:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": name, "restartCount": 8,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    })
}

#[tokio::test]
async fn a_sick_cluster_is_diagnosed_and_healed_within_limits() -> anyhow::Result<()> {
    let mut opts = StackOptions::new(vec![LeafSpec::new("sick-eu", Fixture::sick("sick-eu")?)]);
    opts.heartbeat_interval = Duration::from_secs(1);
    opts.health_interval = Duration::from_millis(500);
    opts.doctor_args.extend(
        [
            "--playbook",
            "rollout-restart=auto,scale=off",
            "--max-actions-per-hour",
            "3",
            "--max-cordoned-percent",
            "34",
        ]
        .map(str::to_owned),
    );
    let mut stack = Stack::start(opts).await?;
    let mut c = client(&stack).await?;

    // Diagnosed: degraded, and why.
    let h = until_state(&mut c, "sick-eu", ClusterHealth::Degraded).await?;
    let rules: Vec<&str> = h.diagnoses.iter().map(|d| d.rule.as_str()).collect();
    for rule in [
        "crash-looping-workload",
        "node-not-ready",
        "pvc-pending",
        "certificate-expiring",
        "unschedulable-pod",
    ] {
        assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
    }

    // auto: the crash-looping Deployment is restarted exactly once.
    let kube = &stack.leaf_mut("sick-eu")?.kube;
    eventually(WAIT, "the restart of shop/api", || async {
        Ok((restarts(kube, "api") >= 1).then_some(()))
    })
    .await?;
    // The remediation follows its command to the end.
    let done = until_remediation(&mut c, "Deployment shop/api", "succeeded").await?;
    assert!(done.result.contains("restartedAt"), "{}", done.result);
    assert!(done.finished_at.is_some());
    // propose: the NotReady node is not cordoned before approval.
    let r = eventually(WAIT, "a cordon proposal", || {
        let mut c = c.clone();
        async move {
            Ok(remediations(&mut c)
                .await?
                .remediations
                .into_iter()
                .find(|r| r.playbook == "cordon-node"))
        }
    })
    .await?;
    assert_eq!(r.state, "proposed");
    assert_eq!(r.target, "Node worker-3");
    assert_eq!(cordons(kube, "worker-3"), 0);
    let approved = c
        .approve_remediation(ApproveRemediationRequest {
            remediation_id: r.remediation_id.clone(),
        })
        .await?
        .into_inner();
    assert_ne!(approved.state, "proposed");
    eventually(WAIT, "the cordon of worker-3", || async {
        Ok((cordons(kube, "worker-3") >= 1).then_some(()))
    })
    .await?;

    // Blast radius: a second NotReady node of three may not be cordoned (34%).
    let mut worker2 = kube.get("v1", "Node", None, "worker-2").unwrap();
    worker2["status"]["conditions"][0]["status"] = json!("False");
    kube.apply(worker2)?;
    let list = eventually(WAIT, "the suppressed cordon", || {
        let mut c = c.clone();
        async move {
            let l = remediations(&mut c).await?;
            Ok(l.suppressed
                .iter()
                .any(|s| s.playbook == "cordon-node")
                .then_some(l))
        }
    })
    .await?;
    let s = list
        .suppressed
        .iter()
        .find(|s| s.playbook == "cordon-node")
        .unwrap();
    assert!(s.reason.starts_with("blast radius"), "{}", s.reason);

    // Rate: a third action fits (2 so far), a fourth does not. The third is refused by the
    // Kubernetes API (RBAC): its remediation ends failed, and is not retried.
    kube.refuse("PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart");
    crash_looping(kube, "cart")?;
    eventually(WAIT, "the restart of shop/cart", || async {
        Ok((restarts(kube, "cart") >= 1).then_some(()))
    })
    .await?;
    let failed = until_remediation(&mut c, "Deployment shop/cart", "failed").await?;
    assert!(
        failed.result.starts_with("kubernetes: ") && failed.result.contains("forbidden"),
        "{}",
        failed.result
    );
    crash_looping(kube, "orders")?;
    let list = eventually(WAIT, "the rate-limited restart", || {
        let mut c = c.clone();
        async move {
            let l = remediations(&mut c).await?;
            Ok(l.suppressed
                .iter()
                .any(|s| s.reason.starts_with("rate limit"))
                .then_some(l))
        }
    })
    .await?;
    assert_eq!(list.remediations.len(), 3, "{:?}", list.remediations);
    assert_eq!(restarts(kube, "orders"), 0);

    // The doctor restarts: it rebuilds from the log and repeats nothing.
    let before = remediations(&mut c).await?;
    stack.doctor.stop().await?;
    stack.doctor.start().await?;
    // Heal shop/api: the restarted doctor clears its diagnosis (proof it judges again).
    let kube = &stack.leaf_mut("sick-eu")?.kube;
    for pod in ["api-7d9f-x2k4p", "api-7d9f-q8m3z"] {
        let mut p = kube.get("v1", "Pod", Some("shop"), pod).unwrap();
        p["status"]["containerStatuses"][0]["state"] = json!({"running": {}});
        p["status"]["containerStatuses"][0]["restartCount"] = json!(0);
        kube.apply(p)?;
    }
    eventually(WAIT, "the crash loop of shop/api cleared", || {
        let mut c = c.clone();
        async move {
            let d = c
                .list_diagnoses(ListDiagnosesRequest {
                    cluster_id: "sick-eu".into(),
                    include_cleared: true,
                    limit: 100,
                })
                .await?
                .into_inner()
                .diagnoses;
            Ok(d.iter()
                .any(|d| d.subject == "Deployment shop/api" && d.cleared_at.is_some())
                .then_some(()))
        }
    })
    .await?;
    let after = remediations(&mut c).await?;
    assert_eq!(after.remediations.len(), before.remediations.len());
    assert_eq!(after.suppressed.len(), before.suppressed.len());
    assert_eq!(restarts(kube, "api"), 1, "restarted exactly once");
    assert_eq!(restarts(kube, "cart"), 1);
    assert_eq!(cordons(kube, "worker-3"), 1);
    assert_eq!(cordons(kube, "worker-2"), 0);
    let h = health_of(&mut c, "sick-eu").await?.unwrap();
    assert_eq!(
        h.state,
        ClusterHealth::Degraded as i32,
        "state kept across the restart"
    );
    stack.shutdown().await
}

/// The doctor's RunAudit commands of `cluster` (id, requested at) and, per command, the full
/// audits that ran for it (completed at), in request order.
async fn doctor_audits(
    pool: &sqlx::PgPool,
    cluster: &str,
) -> anyhow::Result<
    Vec<(
        String,
        chrono::DateTime<chrono::Utc>,
        Vec<chrono::DateTime<chrono::Utc>>,
    )>,
> {
    let commands: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT command_id, requested_at FROM commands
         WHERE requested_by = 'doctor' AND kind_name = 'run-audit'
           AND target = jsonb_build_object('cluster_id', $1::text)
         ORDER BY control_seq",
    )
    .bind(cluster)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for (id, at) in commands {
        let done: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT completed_at FROM audits
             WHERE cluster_id = $1 AND command_id = $2 AND state = 'completed'
             ORDER BY completed_at",
        )
        .bind(cluster)
        .bind(&id)
        .fetch_all(pool)
        .await?;
        out.push((id, at, done));
    }
    Ok(out)
}

#[tokio::test]
async fn a_stale_audit_is_rerun_once_per_stale_period_and_not_again_after_a_restart()
-> anyhow::Result<()> {
    const MAX_AGE: Duration = Duration::from_secs(6);
    let mut opts = StackOptions::new(vec![LeafSpec::new("prod-eu", Fixture::load("prod-eu")?)]);
    opts.heartbeat_interval = Duration::from_secs(1);
    // The agent's own audits are far apart: only its start-up audit, then the doctor's.
    opts.audit_interval = Duration::from_secs(3600);
    opts.doctor_args.extend(
        [
            "--playbook",
            "rerun-audit=auto",
            "--audit-max-age",
            "6s",
            "--max-actions-per-hour",
            "100",
        ]
        .map(str::to_owned),
    );
    let mut stack = Stack::start(opts).await?;
    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let mut c = client(&stack).await?;

    // Stale 6 s after the start-up audit: the doctor asks for an audit, the agent runs it.
    let first = eventually(WAIT, "the doctor's first audit", || {
        let pool = pool.clone();
        async move {
            let d = doctor_audits(&pool, "prod-eu").await?;
            Ok(d.first().filter(|(_, _, done)| !done.is_empty()).cloned())
        }
    })
    .await?;
    let startup: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT completed_at FROM audits
         WHERE cluster_id = 'prod-eu' AND trigger = 'startup' AND state = 'completed'",
    )
    .fetch_one(&pool)
    .await?;
    // Event times in ms on the doctor's side.
    const SLACK: Duration = Duration::from_millis(5);
    let waited = (first.1 - startup).to_std()?;
    assert!(
        waited + SLACK >= MAX_AGE,
        "asked {waited:?} after the start-up audit"
    );

    // The doctor restarts right after: it knows the audit is fresh, and asks again only once it
    // is stale again.
    stack.doctor.stop().await?;
    stack.doctor.start().await?;
    let runs = eventually(WAIT, "the doctor's second audit", || {
        let pool = pool.clone();
        async move {
            let d = doctor_audits(&pool, "prod-eu").await?;
            Ok((d.len() >= 2 && !d[1].2.is_empty()).then_some(d))
        }
    })
    .await?;
    for (i, (id, at, done)) in runs.iter().enumerate() {
        if !done.is_empty() {
            assert_eq!(done.len(), 1, "command {id} ran {} audits", done.len());
        }
        if i > 0 {
            let previous = runs[i - 1].2[0];
            let gap = (*at - previous).to_std()?;
            assert!(
                gap + SLACK >= MAX_AGE && gap < MAX_AGE + Duration::from_secs(20),
                "command {i} asked {gap:?} after the previous audit completed"
            );
        }
    }
    eprintln!(
        "doctor audits: {:?}",
        runs.iter()
            .map(|(_, at, done)| (*at, done.first().copied()))
            .collect::<Vec<_>>()
    );

    // Each was a diagnosis of its own, proposed, approved and carried out: the first succeeded.
    let diagnoses = c
        .list_diagnoses(ListDiagnosesRequest {
            cluster_id: "prod-eu".into(),
            include_cleared: true,
            limit: 100,
        })
        .await?
        .into_inner()
        .diagnoses;
    let stale: Vec<_> = diagnoses
        .iter()
        .filter(|d| d.rule == "audit-stale")
        .collect();
    assert!(stale.len() >= 2, "{stale:?}");
    assert!(stale.iter().all(|d| d.suggested_playbook == "rerun-audit"));
    let list = c
        .list_remediations(ListRemediationsRequest {
            cluster_id: "prod-eu".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let first_remediation = list
        .remediations
        .iter()
        .find(|r| r.command_id == first.0)
        .expect("the remediation of the first command");
    assert_eq!(first_remediation.playbook, "rerun-audit");
    assert!(first_remediation.auto);
    let done = until_remediation_of(&mut c, "prod-eu", &first.0, "succeeded").await?;
    assert!(!done.result.is_empty());
    let mut commands: Vec<&str> = list
        .remediations
        .iter()
        .map(|r| r.command_id.as_str())
        .collect();
    commands.sort_unstable();
    commands.dedup();
    assert_eq!(
        commands.len(),
        list.remediations.len(),
        "one command per remediation"
    );
    stack.shutdown().await
}

async fn until_remediation_of(
    c: &mut HealthServiceClient<Channel>,
    cluster: &str,
    command_id: &str,
    state: &str,
) -> anyhow::Result<Remediation> {
    eventually(
        WAIT,
        &format!("the remediation of {command_id} {state}"),
        || {
            let mut c = c.clone();
            async move {
                Ok(c.list_remediations(ListRemediationsRequest {
                    cluster_id: cluster.to_owned(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .remediations
                .into_iter()
                .find(|r| r.command_id == command_id && r.state == state))
            }
        },
    )
    .await
}
