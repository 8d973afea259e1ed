//! Tokens scoped by cluster labels, through real gRPC calls against real NATS and Postgres:
//! a scoped caller acts on and sees the clusters in its scope only. Clusters: `prod-eu`
//! (env=prod) and `dev-ap` (env=dev); the scoped tokens carry `env=prod`.

use std::time::Duration;

use canopy_auth::token::Role;
use canopy_kit::proto::api::v1::{
    CheckLivenessRequest, CommandView, GetCommandRequest, ListCommandsRequest, RunCommandRequest,
    WatchCommandRequest, command_service_client::CommandServiceClient,
};
use canopy_kit::proto::event::v1::{
    ActionOutcome, CommandTarget, LabelSelector, LivenessEndpoint, LivenessPool,
    command_target::Target,
};
use canopy_kit::streams;
use tonic::Code;
use tonic::transport::Channel;

use crate::auth::{auth_stack, bearer, seeded, token};
use crate::stack::started_as;
use crate::trail::{messages, outcome, trail};

const WAIT: Duration = Duration::from_secs(30);

fn ids(v: impl IntoIterator<Item = String>) -> Vec<String> {
    v.into_iter().collect()
}

fn cluster(id: &str) -> Option<CommandTarget> {
    Some(CommandTarget {
        target: Some(Target::ClusterId(id.to_owned())),
    })
}

fn selector(pairs: &[(&str, &str)]) -> Option<CommandTarget> {
    Some(CommandTarget {
        target: Some(Target::Selector(LabelSelector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })),
    })
}

fn run(target: Option<CommandTarget>) -> RunCommandRequest {
    RunCommandRequest {
        target,
        ..Default::default()
    }
}

/// The command as `token` sees it, once ingestion has projected it.
async fn projected(channel: &Channel, id: &str, token: &str) -> anyhow::Result<CommandView> {
    canopy_testkit::eventually(WAIT, "the command's view", || {
        let mut commands = CommandServiceClient::new(channel.clone());
        let (id, token) = (id.to_owned(), token.to_owned());
        async move {
            match commands
                .get_command(bearer(GetCommandRequest { command_id: id }, &token))
                .await
            {
                Ok(v) => Ok(Some(v.into_inner())),
                Err(e) if e.code() == Code::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

/// Every command `token` lists, in pages of one (the scope filters before paging).
async fn listed(channel: &Channel, token: &str) -> anyhow::Result<Vec<String>> {
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = commands
            .list_commands(bearer(
                ListCommandsRequest {
                    page_size: 1,
                    page_token,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        ids.extend(page.commands.into_iter().map(|c| c.command_id));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_scoped_operator_runs_commands_on_its_clusters_only_and_sees_only_those()
-> anyhow::Result<()> {
    let a = auth_stack().await?;
    let channel = seeded(&a).await?;
    let mut commands = CommandServiceClient::new(channel.clone());
    let operator = token(&a.keys, Role::Operator, &[("env", "prod")]);
    let viewer = token(&a.keys, Role::Viewer, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Operator, &[]);

    // In scope: the cluster, and a selector that includes the scope.
    let on_prod = commands
        .run_audit(bearer(run(cluster("prod-eu")), &operator))
        .await?
        .into_inner()
        .command_id;
    let on_selector = commands
        .refresh_inventory(bearer(
            run(selector(&[("env", "prod"), ("zone", "eu")])),
            &operator,
        ))
        .await?
        .into_inner()
        .command_id;
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 2);

    // Out of scope: another cluster, an unknown one, selectors that could reach beyond.
    let denied = [
        ("dev-ap", run(cluster("dev-ap")), "dev-ap"),
        ("unknown", run(cluster("nowhere")), "nowhere"),
        (
            "no scope label",
            run(selector(&[("zone", "eu")])),
            "env=prod",
        ),
        ("other value", run(selector(&[("env", "dev")])), "env=prod"),
        ("whole fleet", run(selector(&[])), "env=prod"),
    ];
    for (what, request, named) in &denied {
        let err = commands
            .run_audit(bearer(request.clone(), &operator))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        assert!(err.message().contains(named), "{what}: {err:?}");
    }
    let err = commands
        .refresh_inventory(bearer(run(cluster("dev-ap")), &operator))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = commands
        .check_liveness(bearer(
            CheckLivenessRequest {
                target: cluster("dev-ap"),
                pool: Some(LivenessPool {
                    name: "web".into(),
                    endpoints: vec![LivenessEndpoint {
                        name: "front".into(),
                        host: "front.web".into(),
                        port: 80,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Nothing more was published; every call is on the trail, the refusals as denied.
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 2);
    let records = trail(&a, 2 + denied.len() + 2).await?;
    let denials: Vec<String> = records
        .iter()
        .filter(|r| outcome(r) == ActionOutcome::Denied)
        .map(|r| r.action.as_ref().unwrap().target.clone())
        .collect();
    assert_eq!(denials.len(), denied.len() + 2, "{denials:?}");
    assert!(denials.iter().any(|t| t == "dev-ap"), "{denials:?}");

    // An unscoped operator's command on dev-ap is invisible to the scoped viewer.
    let on_dev = commands
        .run_audit(bearer(run(cluster("dev-ap")), &fleet))
        .await?
        .into_inner()
        .command_id;
    projected(&channel, &on_dev, &fleet).await?;
    for id in [&on_prod, &on_selector] {
        let v = projected(&channel, id, &viewer).await?;
        assert_eq!(&v.command_id, id);
    }
    let err = commands
        .get_command(bearer(
            GetCommandRequest {
                command_id: on_dev.clone(),
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = commands
        .watch_command(bearer(
            WatchCommandRequest {
                command_id: on_dev.clone(),
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut watch = commands
        .watch_command(bearer(
            WatchCommandRequest {
                command_id: on_prod.clone(),
            },
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(watch.message().await?.unwrap().command_id, on_prod);

    assert_eq!(
        listed(&channel, &viewer).await?,
        [on_selector.clone(), on_prod.clone()],
        "newest first, in scope only"
    );
    assert_eq!(
        listed(&channel, &fleet).await?,
        [on_dev, on_selector, on_prod]
    );
    Ok(())
}

#[tokio::test]
async fn a_scoped_viewer_reads_findings_audits_and_posture_of_its_clusters_only()
-> anyhow::Result<()> {
    use canopy_kit::proto::api::v1::{
        GetAuditRequest, GetPostureRequest, ListAuditsRequest, ListFindingsRequest,
        findings_service_client::FindingsServiceClient,
    };
    use canopy_kit::proto::event::v1::Severity;

    use crate::audit::{audit_events, finding};

    let a = auth_stack().await?;
    let channel = seeded(&a).await?;
    let mut last = 0;
    for (cluster, objects) in [("prod-eu", 10), ("dev-ap", 30)] {
        let findings = vec![
            finding(
                cluster,
                "PRIVILEGED",
                Severity::Critical,
                "shop",
                "cart",
                None,
            ),
            finding(cluster, "PROBES", Severity::Low, "shop", "cart", None),
        ];
        for e in audit_events(cluster, &format!("{cluster}-a1"), findings, objects) {
            last = a.stack.publish(&e).await?;
        }
    }
    a.stack.projected(last).await?;
    let mut client = FindingsServiceClient::new(channel);
    let viewer = token(&a.keys, Role::Viewer, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Viewer, &[]);

    let findings = |token: &str, cluster_id: &str, page_token: String| {
        bearer(
            ListFindingsRequest {
                cluster_id: cluster_id.to_owned(),
                page_size: 1,
                page_token,
                ..Default::default()
            },
            token,
        )
    };
    // Pages of one: the scope filters before paging.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_findings(findings(&viewer, "", page_token))
            .await?
            .into_inner();
        seen.extend(page.findings.into_iter().map(|f| (f.cluster_id, f.check)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let pair = |c: &str, k: &str| (c.to_owned(), k.to_owned());
    assert_eq!(
        seen,
        [pair("prod-eu", "PRIVILEGED"), pair("prod-eu", "PROBES")]
    );
    let other = client
        .list_findings(findings(&viewer, "dev-ap", String::new()))
        .await?
        .into_inner();
    assert!(other.findings.is_empty(), "{other:?}");
    let all = client
        .list_findings(bearer(ListFindingsRequest::default(), &fleet))
        .await?
        .into_inner();
    assert_eq!(all.findings.len(), 4);

    let audits = |token: &str, cluster_id: &str| {
        bearer(
            ListAuditsRequest {
                cluster_id: cluster_id.to_owned(),
                ..Default::default()
            },
            token,
        )
    };
    let listed: Vec<String> = client
        .list_audits(audits(&viewer, ""))
        .await?
        .into_inner()
        .audits
        .into_iter()
        .map(|a| a.cluster_id)
        .collect();
    assert_eq!(listed, ["prod-eu"]);
    assert!(
        client
            .list_audits(audits(&viewer, "dev-ap"))
            .await?
            .into_inner()
            .audits
            .is_empty()
    );
    assert_eq!(
        client
            .list_audits(audits(&fleet, ""))
            .await?
            .into_inner()
            .audits
            .len(),
        2
    );
    let get = |cluster: &str| {
        bearer(
            GetAuditRequest {
                cluster_id: cluster.to_owned(),
                audit_id: format!("{cluster}-a1"),
            },
            &viewer,
        )
    };
    assert_eq!(
        client
            .get_audit(get("prod-eu"))
            .await?
            .into_inner()
            .audit_id,
        "prod-eu-a1"
    );
    let err = client.get_audit(get("dev-ap")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "out of scope looks like missing"
    );

    // The fleet's posture, for a scoped viewer, covers its clusters only; a cluster out of
    // scope reads as one with nothing audited.
    let posture = |token: &str, cluster_id: &str| {
        bearer(
            GetPostureRequest {
                cluster_id: cluster_id.to_owned(),
                ..Default::default()
            },
            token,
        )
    };
    let p = client.get_posture(posture(&viewer, "")).await?.into_inner();
    assert_eq!((p.clusters, p.objects_audited), (1, 10), "{p:?}");
    let counts = p.counts.unwrap();
    assert_eq!(counts.open.get("critical"), Some(&1), "{counts:?}");
    assert_eq!(p.history.len(), 1);
    assert_eq!(p.history[0].objects_audited, 10);
    let p = client.get_posture(posture(&fleet, "")).await?.into_inner();
    assert_eq!((p.clusters, p.objects_audited), (2, 40), "{p:?}");
    assert_eq!(p.counts.unwrap().open.get("critical"), Some(&2));
    let p = client
        .get_posture(posture(&viewer, "dev-ap"))
        .await?
        .into_inner();
    assert_eq!((p.clusters, p.objects_audited), (0, 0), "{p:?}");
    assert!(p.counts.unwrap_or_default().open.is_empty());
    assert!(p.history.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_scoped_caller_reads_and_decides_the_health_of_its_clusters_only() -> anyhow::Result<()> {
    use canopy_kit::envelope;
    use canopy_kit::proto::api::v1::{
        ApproveRemediationRequest, GetFleetHealthRequest, ListDiagnosesRequest,
        ListRecommendationsRequest, ListRemediationsRequest, RejectRemediationRequest,
        health_service_client::HealthServiceClient,
    };
    use canopy_kit::proto::event::v1::{
        ClusterHealth, CommandKind, DiagnosisRaised, HealthChanged, HealthReported,
        RemediationProposed, Severity, WorkloadUsage, envelope::Body,
    };
    use canopy_kit::subject::ClusterId;

    let a = auth_stack().await?;
    let channel = seeded(&a).await?;
    let mut last = 0;
    for (cluster, short) in [("prod-eu", "prod"), ("dev-ap", "dev")] {
        let id = ClusterId::parse(cluster)?;
        let doctor = |body| envelope::new_for(Some(&id), "doctor", body);
        a.stack
            .publish(&doctor(Body::HealthChanged(HealthChanged {
                previous: ClusterHealth::Healthy as i32,
                current: ClusterHealth::Degraded as i32,
                reason: "a workload is crash-looping".into(),
            })))
            .await?;
        a.stack
            .publish(&doctor(Body::DiagnosisRaised(DiagnosisRaised {
                diagnosis_id: format!("diag-{short}"),
                rule: "crash-looping-workload".into(),
                severity: Severity::High as i32,
                summary: "Deployment shop/cart is crash-looping".into(),
                subject: "Deployment shop/cart".into(),
                ..Default::default()
            })))
            .await?;
        a.stack
            .publish(&doctor(Body::RemediationProposed(RemediationProposed {
                remediation_id: format!("rem-{short}"),
                diagnosis_id: format!("diag-{short}"),
                playbook: "refresh-inventory".into(),
                kind: CommandKind::RefreshInventory as i32,
                reason: "test".into(),
                ..Default::default()
            })))
            .await?;
        last = a
            .stack
            .publish(&envelope::new(
                &id,
                "agent/test",
                Body::HealthReported(HealthReported {
                    metrics_available: true,
                    usage: vec![WorkloadUsage {
                        kind: "Deployment".into(),
                        namespace: "shop".into(),
                        name: "cart".into(),
                        replicas: 2,
                        cpu_usage_millis: 100,
                        cpu_request_millis: 1000,
                        memory_usage_bytes: 1 << 20,
                        memory_request_bytes: 1 << 30,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            ))
            .await?;
    }
    a.stack.projected(last).await?;
    let mut health = HealthServiceClient::new(channel);
    let viewer = token(&a.keys, Role::Viewer, &[("env", "prod")]);
    let operator = token(&a.keys, Role::Operator, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Viewer, &[]);
    let remediations = |token: &str, cluster_id: &str| {
        bearer(
            ListRemediationsRequest {
                cluster_id: cluster_id.to_owned(),
                ..Default::default()
            },
            token,
        )
    };
    // CONTROL is projected on its own: wait for both remediations.
    canopy_testkit::eventually(WAIT, "both remediations", || {
        let mut health = health.clone();
        let request = remediations(&fleet, "");
        async move {
            let n = health.list_remediations(request).await?.into_inner();
            Ok((n.remediations.len() == 2).then_some(()))
        }
    })
    .await?;

    let fh = health
        .get_fleet_health(bearer(GetFleetHealthRequest::default(), &viewer))
        .await?
        .into_inner();
    assert_eq!(
        ids(fh.clusters.iter().map(|c| c.cluster_id.clone())),
        ["prod-eu"]
    );
    assert_eq!(fh.clusters[0].diagnoses.len(), 1);
    assert_eq!(fh.counts.get("degraded"), Some(&1), "{:?}", fh.counts);
    let fh = health
        .get_fleet_health(bearer(GetFleetHealthRequest::default(), &fleet))
        .await?
        .into_inner();
    assert_eq!(fh.clusters.len(), 2);
    let other = health
        .get_fleet_health(bearer(
            GetFleetHealthRequest {
                cluster_id: "dev-ap".into(),
            },
            &viewer,
        ))
        .await?
        .into_inner();
    assert!(other.clusters.is_empty(), "{other:?}");

    let diagnoses = |token: &str, cluster_id: &str| {
        bearer(
            ListDiagnosesRequest {
                cluster_id: cluster_id.to_owned(),
                ..Default::default()
            },
            token,
        )
    };
    let d = health
        .list_diagnoses(diagnoses(&viewer, ""))
        .await?
        .into_inner();
    assert_eq!(
        ids(d.diagnoses.into_iter().map(|d| d.diagnosis_id)),
        ["diag-prod"]
    );
    let d = health
        .list_diagnoses(diagnoses(&viewer, "dev-ap"))
        .await?
        .into_inner();
    assert!(d.diagnoses.is_empty());
    let d = health
        .list_diagnoses(diagnoses(&fleet, ""))
        .await?
        .into_inner();
    assert_eq!(d.diagnoses.len(), 2);

    let r = health
        .list_remediations(remediations(&viewer, ""))
        .await?
        .into_inner();
    assert_eq!(
        ids(r.remediations.into_iter().map(|r| r.remediation_id)),
        ["rem-prod"]
    );
    let r = health
        .list_remediations(remediations(&viewer, "dev-ap"))
        .await?
        .into_inner();
    assert!(r.remediations.is_empty());

    let rec = |token: &str| bearer(ListRecommendationsRequest::default(), token);
    let r = health
        .list_recommendations(rec(&viewer))
        .await?
        .into_inner();
    assert_eq!(
        ids(r.recommendations.into_iter().map(|r| r.cluster_id)),
        ["prod-eu"]
    );
    let r = health.list_recommendations(rec(&fleet)).await?.into_inner();
    assert_eq!(r.recommendations.len(), 2);

    // Decisions: only on a cluster in scope; out of scope (or unknown) is refused and
    // publishes nothing.
    let before = messages(&a.stack.js, streams::CONTROL).await?;
    let err = health
        .reject_remediation(bearer(
            RejectRemediationRequest {
                remediation_id: "rem-dev".into(),
                reason: "not mine".into(),
            },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("rem-dev"), "{err:?}");
    for id in ["rem-dev", "rem-none"] {
        let err = health
            .approve_remediation(bearer(
                ApproveRemediationRequest {
                    remediation_id: id.into(),
                },
                &operator,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}: {err:?}");
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, before);
    let decided = health
        .reject_remediation(bearer(
            RejectRemediationRequest {
                remediation_id: "rem-prod".into(),
                reason: "not now".into(),
            },
            &operator,
        ))
        .await?
        .into_inner();
    assert_eq!(decided.state, "rejected", "{decided:?}");
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, before + 1);
    let r = health
        .list_remediations(remediations(&fleet, "dev-ap"))
        .await?
        .into_inner();
    assert_eq!(
        r.remediations[0].state, "proposed",
        "a refused decision was applied"
    );
    Ok(())
}

#[tokio::test]
async fn a_scoped_operator_schedules_lists_and_deletes_on_its_clusters_only() -> anyhow::Result<()>
{
    use canopy_kit::proto::api::v1::{
        CreateScheduleRequest, DeleteScheduleRequest, ListSchedulesRequest,
        schedule_service_client::ScheduleServiceClient,
    };
    use canopy_kit::proto::event::v1::CommandKind;

    let a = auth_stack().await?;
    let mut schedules = ScheduleServiceClient::new(seeded(&a).await?);
    let operator = token(&a.keys, Role::Operator, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Operator, &[]);
    let create = |name: &str, target: Option<CommandTarget>| CreateScheduleRequest {
        name: name.to_owned(),
        cron: "0 3 * * *".into(),
        kind: CommandKind::RunAudit as i32,
        target,
        ..Default::default()
    };
    let mut mine = Vec::new();
    for (name, target) in [
        ("prod-nightly", cluster("prod-eu")),
        ("prod-eu-zone", selector(&[("env", "prod"), ("zone", "eu")])),
    ] {
        let v = schedules
            .create_schedule(bearer(create(name, target), &operator))
            .await?
            .into_inner();
        mine.push(v.schedule_id);
    }
    for (what, target) in [
        ("dev-ap", cluster("dev-ap")),
        ("unknown", cluster("nowhere")),
        ("no scope label", selector(&[("zone", "eu")])),
        ("whole fleet", selector(&[])),
    ] {
        let err = schedules
            .create_schedule(bearer(create("nope", target), &operator))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 2);
    let theirs = schedules
        .create_schedule(bearer(create("dev-nightly", cluster("dev-ap")), &fleet))
        .await?
        .into_inner()
        .schedule_id;

    let list = |token: &str| bearer(ListSchedulesRequest {}, token);
    canopy_testkit::eventually(WAIT, "the three schedules", || {
        let mut schedules = schedules.clone();
        let request = list(&fleet);
        async move {
            let n = schedules.list_schedules(request).await?.into_inner();
            Ok((n.schedules.len() == 3).then_some(()))
        }
    })
    .await?;
    let seen = schedules
        .list_schedules(list(&operator))
        .await?
        .into_inner()
        .schedules;
    assert_eq!(
        seen.into_iter().map(|s| s.schedule_id).collect::<Vec<_>>(),
        mine
    );

    let delete = |id: &str| {
        bearer(
            DeleteScheduleRequest {
                schedule_id: id.to_owned(),
            },
            &operator,
        )
    };
    let before = messages(&a.stack.js, streams::CONTROL).await?;
    for id in [theirs.as_str(), "no-such-schedule"] {
        let err = schedules.delete_schedule(delete(id)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}: {err:?}");
        assert!(err.message().contains(id), "{err:?}");
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, before);
    schedules.delete_schedule(delete(&mine[0])).await?;
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, before + 1);
    Ok(())
}

/// An AgentStarted of `cluster` whose agent carries `env` (a new instance: labels change only
/// when an agent starts).
#[tokio::test]
async fn a_scoped_watch_gets_the_events_of_its_clusters_only_as_their_labels_change()
-> anyhow::Result<()> {
    use canopy_kit::proto::api::v1::{
        WatchEvent, WatchRequest, event_service_client::EventServiceClient,
    };
    use futures::StreamExt as _;
    use tonic::Streaming;

    use crate::stack::heartbeat;

    let a = auth_stack().await?;
    let channel = seeded(&a).await?;
    // prod-eu's AgentStarted ages out of the log: its labels come from the read model.
    a.stack
        .js
        .get_stream(streams::FLEET_EVENTS)
        .await?
        .purge()
        .filter("canopy.evt.prod-eu.agent.started")
        .await?;
    let viewer = token(&a.keys, Role::Viewer, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Viewer, &[]);
    let open = |types: &[&str], token: &str| {
        let mut events = EventServiceClient::new(channel.clone());
        let request = bearer(
            WatchRequest {
                types: types.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            },
            token,
        );
        async move { events.watch(request).await.map(tonic::Response::into_inner) }
    };
    // Live from now on: the consumers exist once the calls have answered.
    let mut beats = open(&["heartbeat"], &viewer).await?;
    let mut all = open(&[], &viewer).await?;
    let mut everything = open(&[], &fleet).await?;

    async fn seqs(stream: &mut Streaming<WatchEvent>, n: usize) -> anyhow::Result<Vec<u64>> {
        let mut seqs = Vec::with_capacity(n);
        for _ in 0..n {
            let event = tokio::time::timeout(WAIT, stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("no event within {WAIT:?}"))?
                .ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
            seqs.push(event.stream_sequence);
        }
        Ok(seqs)
    }

    // Both clusters are met before any label changes: dev-ap first (held back), then prod-eu
    // (whose labels come from the read model only while the log holds no AgentStarted of it).
    // Streams are in order: anything held back would come before the next event awaited.
    let dev_1 = a.stack.publish(&heartbeat("dev-ap", 1)).await?;
    let prod_1 = a.stack.publish(&heartbeat("prod-eu", 1)).await?;
    assert_eq!(seqs(&mut beats, 1).await?, [prod_1]);
    assert_eq!(seqs(&mut all, 1).await?, [prod_1]);
    let nowhere = a
        .stack
        .publish_raw("canopy.evt.No_Cluster.agent.heartbeat", b"\x01")
        .await?;
    // dev-ap's agent restarts as env=prod: from this event on, dev-ap is in scope.
    let dev_joins = a
        .stack
        .publish(&started_as("dev-ap", "i2", &[("env", "prod")]))
        .await?;
    let dev_2 = a.stack.publish(&heartbeat("dev-ap", 2)).await?;
    // prod-eu's agent restarts as env=dev: from this event on, prod-eu is out of scope.
    let prod_leaves = a
        .stack
        .publish(&started_as("prod-eu", "i2", &[("env", "dev")]))
        .await?;
    let prod_2 = a.stack.publish(&heartbeat("prod-eu", 2)).await?;
    let dev_3 = a.stack.publish(&heartbeat("dev-ap", 3)).await?;

    assert_eq!(
        seqs(&mut beats, 2).await?,
        [dev_2, dev_3],
        "heartbeats of clusters in scope, as their labels stood"
    );
    assert_eq!(
        seqs(&mut all, 3).await?,
        [dev_joins, dev_2, dev_3],
        "the AgentStarted that brings a cluster in is delivered, the one that takes it out is not"
    );
    assert_eq!(
        seqs(&mut everything, 8).await?,
        [
            dev_1,
            prod_1,
            nowhere,
            dev_joins,
            dev_2,
            prod_leaves,
            prod_2,
            dev_3
        ],
        "an unscoped watch gets everything"
    );

    // A new watch replaying the same history judges each event by its cluster's labels then:
    // dev-ap's first heartbeat by its AgentStarted as env=dev before it; prod-eu's by nothing
    // (its AgentStarted before it is gone; the only one left is after it), so held back.
    let request = bearer(
        WatchRequest {
            types: vec!["heartbeat".into()],
            start: Some(canopy_kit::proto::api::v1::watch_request::Start::FromSequence(dev_1)),
            ..Default::default()
        },
        &viewer,
    );
    let mut replay = EventServiceClient::new(channel.clone())
        .watch(request)
        .await?
        .into_inner();
    assert_eq!(seqs(&mut replay, 2).await?, [dev_2, dev_3]);
    Ok(())
}

#[tokio::test]
async fn a_scoped_caller_reads_the_policy_and_grants_lists_and_revokes_derogations_within_its_scope()
-> anyhow::Result<()> {
    use canopy_kit::proto::api::v1::{
        GetPolicyRequest, GrantDerogationRequest, ListDerogationsRequest, RevokeDerogationRequest,
        SetPolicyRequest, policy_service_client::PolicyServiceClient,
    };
    use canopy_kit::proto::event::v1::{DerogationScope, Policy};

    let a = auth_stack().await?;
    let mut policy = PolicyServiceClient::new(seeded(&a).await?);
    let operator = token(&a.keys, Role::Operator, &[("env", "prod")]);
    let viewer = token(&a.keys, Role::Viewer, &[("env", "prod")]);
    let scoped_admin = token(&a.keys, Role::Admin, &[("env", "prod")]);
    let fleet = token(&a.keys, Role::Operator, &[]);

    // The fleet-wide policy: readable in a scope, changed only by an unscoped admin.
    let read = policy
        .get_policy(bearer(GetPolicyRequest {}, &viewer))
        .await?
        .into_inner();
    assert_eq!(read.version, 0);
    let err = policy
        .set_policy(bearer(
            SetPolicyRequest {
                policy: Some(Policy::default()),
                ..Default::default()
            },
            &scoped_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let grant = |cluster_id: &str, labels: &[(&str, &str)]| GrantDerogationRequest {
        check: "PRIVILEGED".into(),
        scope: Some(DerogationScope {
            cluster_id: cluster_id.to_owned(),
            cluster_labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
        reason: "legacy workload".into(),
        approver: "bob".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 86_400,
            nanos: 0,
        }),
    };
    let mut mine = Vec::new();
    for request in [
        grant("prod-eu", &[]),
        grant("", &[("env", "prod"), ("zone", "eu")]),
    ] {
        let d = policy
            .grant_derogation(bearer(request, &operator))
            .await?
            .into_inner();
        mine.push(d.derogation.unwrap().derogation_id);
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 2);
    let denied = [
        ("dev-ap", grant("dev-ap", &[]), "dev-ap"),
        ("unknown", grant("nowhere", &[]), "nowhere"),
        ("no scope label", grant("", &[("zone", "eu")]), "env=prod"),
        ("other value", grant("", &[("env", "dev")]), "env=prod"),
        ("whole fleet", grant("", &[]), "env=prod"),
    ];
    for (what, request, named) in &denied {
        let err = policy
            .grant_derogation(bearer(request.clone(), &operator))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        assert!(err.message().contains(named), "{what}: {err:?}");
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 2);

    // An unscoped operator's derogations beyond the scope are not listed in it.
    let mut theirs = Vec::new();
    for request in [grant("dev-ap", &[]), grant("", &[("zone", "eu")])] {
        let d = policy
            .grant_derogation(bearer(request, &fleet))
            .await?
            .into_inner();
        theirs.push(d.derogation.unwrap().derogation_id);
    }
    let list = |token: &str| {
        bearer(
            ListDerogationsRequest {
                page_size: 1,
                ..Default::default()
            },
            token,
        )
    };
    canopy_testkit::eventually(WAIT, "the four derogations", || {
        let mut policy = policy.clone();
        let request = bearer(ListDerogationsRequest::default(), &fleet);
        async move {
            let n = policy.list_derogations(request).await?.into_inner();
            Ok((n.derogations.len() == 4).then_some(()))
        }
    })
    .await?;
    // Pages of one: the scope filters before paging.
    let mut seen = Vec::new();
    let mut request = list(&viewer);
    loop {
        let page = policy.list_derogations(request).await?.into_inner();
        seen.extend(
            page.derogations
                .into_iter()
                .map(|d| d.derogation.unwrap().derogation_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        request = list(&viewer);
        request.get_mut().page_token = page.next_page_token;
    }
    assert_eq!(seen, [mine[1].clone(), mine[0].clone()], "newest first");
    let on = |cluster_id: &str| {
        bearer(
            ListDerogationsRequest {
                cluster_id: cluster_id.to_owned(),
                ..Default::default()
            },
            &viewer,
        )
    };
    let ids = |r: tonic::Response<canopy_kit::proto::api::v1::ListDerogationsResponse>| {
        r.into_inner()
            .derogations
            .into_iter()
            .map(|d| d.derogation.unwrap().derogation_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(policy.list_derogations(on("prod-eu")).await?),
        [mine[1].clone(), mine[0].clone()]
    );
    assert!(
        ids(policy.list_derogations(on("dev-ap")).await?).is_empty(),
        "a cluster out of scope"
    );

    let revoke = |id: &str| {
        bearer(
            RevokeDerogationRequest {
                derogation_id: id.to_owned(),
                reason: "fixed".into(),
            },
            &operator,
        )
    };
    let unknown = "0190f0f0-0000-7000-8000-000000000000";
    for id in [theirs[0].as_str(), theirs[1].as_str(), unknown] {
        let err = policy.revoke_derogation(revoke(id)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}: {err:?}");
        assert!(err.message().contains(id), "{err:?}");
    }
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 4);
    policy.revoke_derogation(revoke(&mine[1])).await?;
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 5);

    // Every change is on the trail, each refusal as denied.
    let records = trail(&a, 1 + 2 + denied.len() + 2 + 3 + 1).await?;
    let denials: Vec<String> = records
        .iter()
        .filter(|r| outcome(r) == ActionOutcome::Denied)
        .map(|r| r.action.as_ref().unwrap().target.clone())
        .collect();
    assert_eq!(denials.len(), 1 + denied.len() + 3, "{denials:?}");
    assert!(denials.iter().any(|t| t == "dev-ap"), "{denials:?}");
    assert!(denials.iter().any(|t| t == &theirs[0]), "{denials:?}");
    Ok(())
}
