//! The audit trail and bad input, through real gRPC calls against real NATS and Postgres:
//! refused tokens, subject-token injection and oversized requests are refused with a clear
//! error and write nothing but their trail record; a change is refused while the trail cannot
//! be written.

use std::time::Duration;

use async_nats::jetstream;
use canopy_auth::token::Role;
use canopy_kit::proto::api::v1::{
    CreateScheduleRequest, GetPolicyRequest, GrantDerogationRequest, ListTrailRequest,
    RunCommandRequest, SetPolicyRequest, TrailRecord, VerifyTrailRequest,
    audit_trail_service_client::AuditTrailServiceClient,
    command_service_client::CommandServiceClient, policy_service_client::PolicyServiceClient,
    schedule_service_client::ScheduleServiceClient,
};
use canopy_kit::proto::event::v1::{
    ActionOutcome, CommandKind, CommandTarget, DerogationScope, LabelSelector, Policy,
    command_target::Target,
};
use canopy_kit::streams;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::auth::{Auth, auth_stack, bad_headers, bearer, token, with_header};

const WAIT: Duration = Duration::from_secs(30);

/// Every record of the trail's read model, oldest first, once there are `n`.
pub async fn trail(a: &Auth, n: usize) -> anyhow::Result<Vec<TrailRecord>> {
    let admin = token(&a.keys, Role::Admin, &[]);
    let channel = a.stack.channel().await?;
    let mut records = canopy_testkit::eventually(WAIT, "the trail's records", || {
        let mut client = AuditTrailServiceClient::new(channel.clone());
        let admin = admin.clone();
        async move {
            let page = client
                .list(bearer(
                    ListTrailRequest {
                        page_size: 1000,
                        ..Default::default()
                    },
                    &admin,
                ))
                .await?
                .into_inner();
            Ok((page.records.len() >= n).then_some(page.records))
        }
    })
    .await?;
    records.reverse();
    Ok(records)
}

/// How many messages `stream` holds.
pub async fn messages(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

pub fn outcome(r: &TrailRecord) -> ActionOutcome {
    ActionOutcome::try_from(r.action.as_ref().unwrap().outcome).unwrap()
}

fn set_policy() -> SetPolicyRequest {
    SetPolicyRequest {
        policy: Some(Policy {
            disabled_checks: vec!["PROBES".into()],
            ..Default::default()
        }),
        expected_version: Some(0),
        reason: "test".into(),
    }
}

#[tokio::test]
async fn refused_tokens_change_nothing_and_each_leaves_one_denied_record() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut policy = PolicyServiceClient::new(a.stack.channel().await?);
    let cases = bad_headers(&a.keys);
    for (what, header) in &cases {
        let request = match header {
            Some(h) => with_header(set_policy(), h),
            None => tonic::Request::new(set_policy()),
        };
        let err = policy.set_policy(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert_eq!(
            err.message(),
            canopy_api::auth::UNAUTHENTICATED_MESSAGE,
            "{what}"
        );
    }
    // Nothing reached CONTROL; every refusal is on the trail, by nobody known.
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 0);
    let records = trail(&a, cases.len()).await?;
    assert_eq!(records.len(), cases.len());
    for (r, (what, _)) in records.iter().zip(&cases) {
        let action = r.action.as_ref().unwrap();
        assert_eq!(outcome(r), ActionOutcome::Denied, "{what}");
        assert_eq!(action.actor, "anonymous", "{what}");
        assert!(action.roles.is_empty(), "{what}");
        assert_eq!(action.method, "/canopy.api.v1.PolicyService/SetPolicy");
        assert!(!action.detail.is_empty(), "{what}: the reason is recorded");
        assert_eq!(
            action.request_digest,
            canopy_api::domain::trail::digest(&set_policy().encode_to_vec()),
            "{what}"
        );
    }
    let admin = token(&a.keys, Role::Admin, &[]);
    let state = policy
        .get_policy(bearer(GetPolicyRequest {}, &admin))
        .await?
        .into_inner();
    assert_eq!(state.version, 0, "a refused change was applied");
    Ok(())
}

#[tokio::test]
async fn subject_tokens_in_ids_labels_and_names_are_refused_and_publish_nothing()
-> anyhow::Result<()> {
    let a = auth_stack().await?;
    let channel: Channel = a.stack.channel().await?;
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut schedules = ScheduleServiceClient::new(channel.clone());
    let mut policy = PolicyServiceClient::new(channel);
    let admin = token(&a.keys, Role::Admin, &[]);
    let mut refused = 0;
    let cluster = |c: &str| {
        Some(CommandTarget {
            target: Some(Target::ClusterId(c.to_owned())),
        })
    };
    let selector = |k: &str, v: &str| {
        Some(CommandTarget {
            target: Some(Target::Selector(LabelSelector {
                match_labels: [(k.to_owned(), v.to_owned())].into(),
            })),
        })
    };
    let bad_ids = ["prod-eu.x", "*", ">", "prod eu", "prod-eu.>", "a\tb"];
    let bad_labels = [("env", "a*"), ("e>v", "prod"), ("env", "p rod"), ("*", "x")];
    let mut targets: Vec<(String, Option<CommandTarget>)> = bad_ids
        .iter()
        .map(|c| (format!("cluster {c:?}"), cluster(c)))
        .collect();
    targets.extend(
        bad_labels
            .iter()
            .map(|(k, v)| (format!("label {k}={v}"), selector(k, v))),
    );
    for (what, target) in &targets {
        let err = commands
            .run_audit(bearer(
                RunCommandRequest {
                    target: target.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "run {what}: {err:?}");
        assert!(err.message().contains("target"), "{what}: {err:?}");
        let err = schedules
            .create_schedule(bearer(
                CreateScheduleRequest {
                    name: "nightly".into(),
                    cron: "0 3 * * *".into(),
                    kind: CommandKind::RunAudit as i32,
                    target: target.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "schedule {what}: {err:?}"
        );
        refused += 2;
    }
    for name in ["night.ly", "*", ">", "night ly", "a.>"] {
        let err = schedules
            .create_schedule(bearer(
                CreateScheduleRequest {
                    name: name.into(),
                    cron: "0 3 * * *".into(),
                    kind: CommandKind::RunAudit as i32,
                    target: cluster("prod-eu"),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "name {name:?}: {err:?}");
        assert!(err.message().contains("name"), "{name:?}: {err:?}");
        refused += 1;
    }
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let grant = |scope: DerogationScope| GrantDerogationRequest {
        check: "PRIVILEGED".into(),
        scope: Some(scope),
        reason: "test".into(),
        approver: "bob".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires.timestamp(),
            nanos: 0,
        }),
    };
    let mut scopes: Vec<DerogationScope> = bad_ids
        .iter()
        .map(|c| DerogationScope {
            cluster_id: (*c).to_owned(),
            ..Default::default()
        })
        .collect();
    scopes.extend(bad_labels.iter().map(|(k, v)| DerogationScope {
        cluster_labels: [((*k).to_owned(), (*v).to_owned())].into(),
        ..Default::default()
    }));
    for scope in scopes {
        let what = format!("{scope:?}");
        let err = policy
            .grant_derogation(bearer(grant(scope), &admin))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        refused += 1;
    }
    // Nothing was published on CONTROL; each refusal is one `invalid` record.
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 0);
    let records = trail(&a, refused).await?;
    assert_eq!(records.len(), refused);
    for r in &records {
        assert_eq!(outcome(r), ActionOutcome::Invalid, "{r:?}");
        assert_eq!(r.action.as_ref().unwrap().actor, "alice");
    }
    // The offending cluster id is what the record names as the target.
    let first = records[0].action.as_ref().unwrap();
    assert_eq!(first.method, "/canopy.api.v1.CommandService/RunAudit");
    assert_eq!(first.target, "prod-eu.x");
    assert!(first.detail.contains("target.cluster_id"), "{first:?}");
    Ok(())
}

#[tokio::test]
async fn oversized_requests_are_refused_before_any_handler_and_recorded() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut policy = PolicyServiceClient::new(a.stack.channel().await?)
        .max_encoding_message_size(64 * 1024 * 1024);
    let admin = token(&a.keys, Role::Admin, &[]);
    let limit = canopy_api::config::DEFAULT_MAX_REQUEST_BYTES;
    let huge = SetPolicyRequest {
        reason: "x".repeat(limit + 1),
        ..set_policy()
    };
    let err = policy.set_policy(bearer(huge, &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(&format!("limit of {limit} bytes")),
        "{err:?}"
    );
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 0);
    let records = trail(&a, 1).await?;
    let action = records[0].action.as_ref().unwrap();
    assert_eq!(outcome(&records[0]), ActionOutcome::Invalid);
    assert_eq!(action.actor, "alice");
    assert!(
        action.detail.contains("larger than the limit"),
        "{action:?}"
    );
    // Just under the limit is fine (the change itself is then refused by its own rule only if
    // it breaks one: here it is valid).
    let fits = SetPolicyRequest {
        reason: "x".repeat(limit / 2),
        ..set_policy()
    };
    let state = policy.set_policy(bearer(fits, &admin)).await?.into_inner();
    assert_eq!(state.version, 1);
    Ok(())
}

#[tokio::test]
async fn a_change_is_refused_while_the_trail_cannot_be_written() -> anyhow::Result<()> {
    let a = auth_stack().await?;
    let mut policy = PolicyServiceClient::new(a.stack.channel().await?);
    let admin = token(&a.keys, Role::Admin, &[]);
    // A recorded change first: the trail works.
    policy.set_policy(bearer(set_policy(), &admin)).await?;
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 1);
    // Sealed, AUDIT_TRAIL takes no more messages (and cannot be unsealed).
    let mut config = a
        .stack
        .js
        .get_stream(streams::AUDIT_TRAIL)
        .await?
        .info()
        .await?
        .config
        .clone();
    config.sealed = true;
    a.stack.js.update_stream(config).await?;
    let next = SetPolicyRequest {
        expected_version: Some(1),
        ..set_policy()
    };
    let err = policy.set_policy(bearer(next, &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), canopy_api::auth::TRAIL_UNAVAILABLE_MESSAGE);
    // The handler never ran: CONTROL still holds the first change only.
    assert_eq!(messages(&a.stack.js, streams::CONTROL).await?, 1);
    let state = policy
        .get_policy(bearer(GetPolicyRequest {}, &admin))
        .await?
        .into_inner();
    assert_eq!(state.version, 1);
    // Reading is not a change and still works; so does Verify, over the one record.
    let mut trail = AuditTrailServiceClient::new(a.stack.channel().await?);
    let v = trail
        .verify(bearer(VerifyTrailRequest {}, &admin))
        .await?
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records_checked, 1);
    let n = messages(&a.stack.js, streams::AUDIT_TRAIL).await?;
    assert_eq!(n, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_recording_at_once_keep_one_linear_chain() -> anyhow::Result<()> {
    use canopy_kit::config::NatsArgs;
    use canopy_kit::proto::api::v1::{
        ListClustersRequest, fleet_service_client::FleetServiceClient,
    };
    let a = auth_stack().await?;
    // A second api on the same NATS and Postgres, with the same keys.
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, serde_json::to_string(&a.keys)?)?;
    let cfg = canopy_api::config::Config {
        insecure_no_auth: false,
        auth_keys: Some(keys),
        ..canopy_api::config::Config::new(
            &a.stack.database_url,
            NatsArgs::new(a.stack.nats.client_url()),
        )
    };
    let second = canopy_api::App::build(cfg).await?;
    let second_url = format!("http://{}", second.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(second.run(stop.clone()));
    let channels = [
        a.stack.channel().await?,
        Channel::from_shared(second_url)?.connect().await?,
    ];
    const CALLS: usize = 20;
    let calls = (0..CALLS).map(|i| {
        let mut fleet = FleetServiceClient::new(channels[i % 2].clone());
        async move {
            let err = fleet
                .list_clusters(ListClustersRequest::default())
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
        }
    });
    futures::future::join_all(calls).await;
    let records = trail(&a, CALLS).await?;
    assert_eq!(records.len(), CALLS);
    let indexes: Vec<u64> = records
        .iter()
        .map(|r| r.action.as_ref().unwrap().index)
        .collect();
    assert_eq!(indexes, (1..=CALLS as u64).collect::<Vec<_>>());
    let admin = token(&a.keys, Role::Admin, &[]);
    let v = AuditTrailServiceClient::new(a.stack.channel().await?)
        .verify(bearer(VerifyTrailRequest {}, &admin))
        .await?
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records_checked, CALLS as u64);
    stop.cancel();
    task.await??;
    Ok(())
}
