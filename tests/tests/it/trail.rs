//! The audit trail end to end, over the built binaries with token authentication and every
//! service on its own NATS user: changes, refusals and invalid calls become one ActionRecorded
//! each, on a hash chain that `Verify` and `canopyctl trail verify` walk; the server refuses to
//! purge AUDIT_TRAIL or delete its messages even for a user whose permissions allow everything
//! (`deny_purge`, `deny_delete`; deleting the whole stream is refused by permissions only: no
//! Canopy user, administrators included, may; if it happens anyway, changes fail closed and
//! Verify reports the records missing), and a forged record is named as the first broken link.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_auth::nats::jwt::{Permission, Permissions};
use canopy_auth::token::{Role, TokenConfig, issue};
use canopy_e2e::{AuthChannel, LeafSpec, Stack, StackOptions, channel_with_token};
use canopy_kit::envelope;
use canopy_kit::streams;
use canopy_proto::api::v1::{
    CreateScheduleRequest, GetClusterRequest, ListClustersRequest, ListTrailRequest,
    RunCommandRequest, SetPolicyRequest, TrailRecord, VerifyTrailRequest, VerifyTrailResponse,
    audit_trail_service_client::AuditTrailServiceClient,
    command_service_client::CommandServiceClient, fleet_service_client::FleetServiceClient,
    policy_service_client::PolicyServiceClient,
};
use canopy_proto::event::v1::{
    ActionOutcome, ActionRecorded, CommandKind, CommandTarget, Policy, command_target::Target,
    envelope::Body,
};
use canopy_testkit::{Fixture, eventually};
use sha2::Digest as _;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

struct Trail {
    stack: Stack,
    keys: TokenConfig,
    admin: String,
}

async fn trail_stack() -> anyhow::Result<Trail> {
    let leaves = vec![LeafSpec::new("prod-eu", Fixture::load("prod-eu")?)];
    let stack = Stack::start(StackOptions {
        api_auth: true,
        ..StackOptions::new(leaves)
    })
    .await?;
    let keys = TokenConfig::load(stack.api_token_keys.as_ref().context("token keys")?)?;
    let admin = stack.admin_token.clone().context("admin token")?;
    Ok(Trail { stack, keys, admin })
}

impl Trail {
    fn token(&self, subject: &str, role: Role) -> anyhow::Result<String> {
        issue(&self.keys, None, subject, role, Default::default(), HOUR)
    }

    async fn channel(&self, token: Option<&str>) -> anyhow::Result<AuthChannel> {
        channel_with_token(&self.stack.api_url(), token).await
    }

    /// Every record in the read model, oldest first, once there are `n`.
    async fn records(&self, n: usize) -> anyhow::Result<Vec<TrailRecord>> {
        let channel = self.channel(Some(&self.admin)).await?;
        let mut records = eventually(WAIT, "the trail's records", || {
            let mut client = AuditTrailServiceClient::new(channel.clone());
            async move {
                let page = client
                    .list(ListTrailRequest {
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((page.records.len() >= n).then_some(page.records))
            }
        })
        .await?;
        records.reverse();
        Ok(records)
    }

    async fn list(&self, filter: ListTrailRequest) -> anyhow::Result<Vec<TrailRecord>> {
        let mut client = AuditTrailServiceClient::new(self.channel(Some(&self.admin)).await?);
        Ok(client.list(filter).await?.into_inner().records)
    }

    async fn verify(&self) -> anyhow::Result<VerifyTrailResponse> {
        let mut client = AuditTrailServiceClient::new(self.channel(Some(&self.admin)).await?);
        Ok(client.verify(VerifyTrailRequest {}).await?.into_inner())
    }

    async fn canopyctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(canopy_e2e::binary("canopyctl")?);
        cmd.arg("--api")
            .arg(self.stack.api_url())
            .env("CANOPY_TOKEN", &self.admin);
        Ok(cmd.args(args).output().await?)
    }
}

fn action(r: &TrailRecord) -> &ActionRecorded {
    r.action.as_ref().unwrap()
}

fn outcome(r: &TrailRecord) -> ActionOutcome {
    ActionOutcome::try_from(action(r).outcome).unwrap()
}

fn digest(msg: &impl prost::Message) -> String {
    hex::encode(sha2::Sha256::digest(msg.encode_to_vec()))
}

fn set_policy(version: u64) -> SetPolicyRequest {
    SetPolicyRequest {
        policy: Some(Policy {
            disabled_checks: vec!["PROBES".into()],
            ..Default::default()
        }),
        expected_version: Some(version),
        reason: "trail test".into(),
    }
}

fn run_on(cluster: &str) -> RunCommandRequest {
    RunCommandRequest {
        target: Some(CommandTarget {
            target: Some(Target::ClusterId(cluster.to_owned())),
        }),
        ..Default::default()
    }
}

/// Messages on CONTROL under `subject`.
async fn control_count(js: &jetstream::Context, subject: &str) -> anyhow::Result<usize> {
    use futures::TryStreamExt as _;
    let stream = js.get_stream(streams::CONTROL).await?;
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(subject)
        .await?
        .try_collect()
        .await?;
    Ok(subjects.iter().map(|(_, n)| n).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_refusals_and_invalid_calls_are_recorded_on_a_chain_that_verifies()
-> anyhow::Result<()> {
    let t = trail_stack().await?;
    let js = jetstream::new(t.stack.seed.connect().await?);
    let operator = t.token("olivia", Role::Operator)?;
    let viewer = t.token("victor", Role::Viewer)?;

    // 1. A change by an admin.
    PolicyServiceClient::new(t.channel(Some(&t.admin)).await?)
        .set_policy(set_policy(0))
        .await?;
    // 2. The same change by a viewer: denied.
    let err = PolicyServiceClient::new(t.channel(Some(&viewer)).await?)
        .set_policy(set_policy(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // 3. A read without a token: denied, by nobody known.
    let err = FleetServiceClient::new(t.channel(None).await?)
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // 4. A command by an operator.
    let mut commands = CommandServiceClient::new(t.channel(Some(&operator)).await?);
    let command_id = commands
        .run_audit(run_on("prod-eu"))
        .await?
        .into_inner()
        .command_id;
    // 5. A command whose cluster id tries to inject subject tokens: invalid.
    let err = commands.run_audit(run_on("prod-eu.>")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // 6. A schedule whose name does the same: invalid.
    let err = commands_schedule(&t, &operator, "a.b").await?;
    assert_eq!(err.code(), Code::InvalidArgument);
    // 7. A read with an invalid cluster id: invalid (reads are recorded only when refused).
    let err = FleetServiceClient::new(t.channel(Some(&viewer)).await?)
        .get_cluster(GetClusterRequest {
            cluster_id: "x*".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A plain read leaves no record.
    FleetServiceClient::new(t.channel(Some(&viewer)).await?)
        .list_clusters(ListClustersRequest::default())
        .await?;

    let records = t.records(7).await?;
    assert_eq!(records.len(), 7, "{records:#?}");
    let expect: [(&str, &str, &str, ActionOutcome); 7] = [
        (
            "admin",
            "PolicyService/SetPolicy",
            "",
            ActionOutcome::Succeeded,
        ),
        (
            "victor",
            "PolicyService/SetPolicy",
            "",
            ActionOutcome::Denied,
        ),
        (
            "anonymous",
            "FleetService/ListClusters",
            "",
            ActionOutcome::Denied,
        ),
        (
            "olivia",
            "CommandService/RunAudit",
            "prod-eu",
            ActionOutcome::Succeeded,
        ),
        (
            "olivia",
            "CommandService/RunAudit",
            "prod-eu.>",
            ActionOutcome::Invalid,
        ),
        (
            "olivia",
            "ScheduleService/CreateSchedule",
            "prod-eu",
            ActionOutcome::Invalid,
        ),
        (
            "victor",
            "FleetService/GetCluster",
            "x*",
            ActionOutcome::Invalid,
        ),
    ];
    for (i, (r, (actor, method, target, result))) in records.iter().zip(expect).enumerate() {
        let a = action(r);
        assert_eq!(a.actor, actor, "record {i}");
        assert_eq!(a.method, format!("/canopy.api.v1.{method}"), "record {i}");
        assert_eq!(a.target, target, "record {i}");
        assert_eq!(outcome(r), result, "record {i}");
        assert_eq!(a.index, i as u64 + 1, "record {i}");
        assert_eq!(a.hash.len(), 64, "record {i}");
        if i == 0 {
            assert_eq!(a.previous_hash, "");
        } else {
            assert_eq!(a.previous_hash, action(&records[i - 1]).hash, "record {i}");
        }
    }
    let first = action(&records[0]);
    assert_eq!(first.roles, ["admin"]);
    assert_eq!(first.request_digest, digest(&set_policy(0)));
    assert!(
        action(&records[1]).detail.contains("needs role admin"),
        "{:?}",
        records[1]
    );
    assert!(action(&records[2]).roles.is_empty());
    assert!(
        action(&records[4]).detail.contains("target.cluster_id"),
        "{:?}",
        records[4]
    );
    assert!(
        action(&records[5]).detail.contains("name"),
        "{:?}",
        records[5]
    );
    assert_eq!(
        action(&records[3]).request_digest,
        digest(&run_on("prod-eu"))
    );
    // Only the valid command reached CONTROL, and no schedule did.
    assert_eq!(control_count(&js, "canopy.ctl.command.requested").await?, 1);
    assert_eq!(control_count(&js, "canopy.ctl.schedule.>").await?, 0);
    assert!(!command_id.is_empty());

    // Filters.
    let by = |actor: &str| ListTrailRequest {
        actor: actor.into(),
        ..Default::default()
    };
    assert_eq!(t.list(by("olivia")).await?.len(), 3);
    let denied = t
        .list(ListTrailRequest {
            outcome: ActionOutcome::Denied as i32,
            ..Default::default()
        })
        .await?;
    assert_eq!(denied.len(), 2);
    let runs = t
        .list(ListTrailRequest {
            method: "RunAudit".into(),
            target: "prod-eu".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(runs.len(), 1);
    let paged = t
        .list(ListTrailRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?;
    assert_eq!(
        paged.iter().map(|r| action(r).index).collect::<Vec<_>>(),
        [7, 6],
        "newest first"
    );
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let none = t
        .list(ListTrailRequest {
            since: Some(prost_types::Timestamp {
                seconds: future.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?;
    assert!(none.is_empty());

    // Verify walks the stream itself.
    let v = t.verify().await?;
    assert!(v.ok, "{v:?}");
    assert_eq!((v.records_checked, v.first_index, v.last_index), (7, 1, 7));
    assert_eq!(v.last_hash, action(&records[6]).hash);

    // Only admins read the trail.
    let err = AuditTrailServiceClient::new(t.channel(Some(&operator)).await?)
        .verify(VerifyTrailRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // canopyctl.
    let out = t.canopyctl(&["trail", "verify"]).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("intact: 8 records checked"), "{stdout}");
    let out = t
        .canopyctl(&["trail", "list", "--actor", "olivia", "-o", "json"])
        .await?;
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let listed = doc["records"].as_array().context("records")?;
    // Her three calls and her refused Verify, newest first.
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0]["outcome"], "denied");
    assert_eq!(
        listed[0]["method"],
        "/canopy.api.v1.AuditTrailService/Verify"
    );
    assert_eq!(listed[3]["target"], "prod-eu");
    let out = t
        .canopyctl(&["trail", "list", "--outcome", "denied"])
        .await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        table.contains("INDEX") && table.contains("denied"),
        "{table}"
    );
    t.stack.shutdown().await
}

async fn commands_schedule(t: &Trail, token: &str, name: &str) -> anyhow::Result<tonic::Status> {
    let mut schedules = canopy_proto::api::v1::schedule_service_client::ScheduleServiceClient::new(
        t.channel(Some(token)).await?,
    );
    Ok(schedules
        .create_schedule(CreateScheduleRequest {
            name: name.into(),
            cron: "0 3 * * *".into(),
            kind: CommandKind::RunAudit as i32,
            target: run_on("prod-eu").target,
            ..Default::default()
        })
        .await
        .unwrap_err())
}

/// A client of the seed as `creds`.
async fn connect(url: &str, creds: &Path) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .credentials_file(creds)
        .await?
        .connect(url)
        .await?;
    Ok(jetstream::new(client))
}

async fn trail_messages(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(streams::AUDIT_TRAIL)
        .await?
        .info()
        .await?
        .state
        .messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_trail_survives_delete_and_purge_and_a_forged_record_is_named() -> anyhow::Result<()> {
    let t = trail_stack().await?;
    let mut policy = PolicyServiceClient::new(t.channel(Some(&t.admin)).await?);
    for v in 0..3 {
        policy.set_policy(set_policy(v)).await?;
    }
    let records = t.records(3).await?;
    let admin_js = jetstream::new(t.stack.seed.connect().await?);
    assert_eq!(trail_messages(&admin_js).await?, 3);

    // A user whose permissions allow everything: only the stream's own settings stand between
    // it and the records.
    let dir = tempfile::tempdir()?;
    let everything = Permissions {
        publish: Permission {
            allow: vec![">".into()],
            deny: Vec::new(),
        },
        subscribe: Permission {
            allow: vec![">".into()],
            deny: Vec::new(),
        },
    };
    let mallory =
        canopy_e2e::test_authority()?
            .canopy
            .user("mallory", everything, &["STANDARD"], None)?;
    let mallory_creds = dir.path().join("mallory.creds");
    std::fs::write(&mallory_creds, mallory.file_text())?;
    let url = t.stack.seed.client_url();
    let mallory = connect(&url, &mallory_creds).await?;
    let stream = mallory.get_stream(streams::AUDIT_TRAIL).await?;
    let err = stream.purge().await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("purge"), "{err}");
    let err = stream.delete_message(1).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("delete"), "{err}");
    let err = stream.purge().filter("canopy.audit.>").await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("purge"), "{err}");
    // Nor can the settings be loosened.
    let mut loosened = stream.cached_info().config.clone();
    loosened.deny_delete = false;
    loosened.deny_purge = false;
    let refused = mallory.update_stream(loosened).await;
    let info = admin_js
        .get_stream(streams::AUDIT_TRAIL)
        .await?
        .info()
        .await?
        .config
        .clone();
    assert!(
        info.deny_delete && info.deny_purge,
        "a stream update loosened AUDIT_TRAIL: {refused:?}"
    );
    assert_eq!(trail_messages(&admin_js).await?, 3);

    // Every Canopy user, administrators included, is refused by its permissions (the request
    // is dropped as a permission violation, so it times out unanswered).
    for user in ["admin", "api"] {
        let js = connect(&url, &t.stack.nats_auth.seed_creds(user)).await?;
        let mut js = js;
        js.set_timeout(Duration::from_secs(2));
        assert!(
            js.delete_stream(streams::AUDIT_TRAIL).await.is_err(),
            "{user} deleted it"
        );
        let direct = js.get_stream_no_info(streams::AUDIT_TRAIL).await?;
        assert!(direct.purge().await.is_err(), "{user} purged it");
        assert!(
            direct.delete_message(1).await.is_err(),
            "{user} deleted a record"
        );
    }
    assert_eq!(trail_messages(&admin_js).await?, 3);
    let v = t.verify().await?;
    assert!(v.ok && v.records_checked == 3, "{v:?}");

    // A compromised publisher appends a forged record that does not chain onto the last one.
    let last = action(&records[2]);
    let forged = ActionRecorded {
        action_id: uuid_like(),
        actor: "admin".into(),
        roles: vec!["admin".into()],
        method: "/canopy.api.v1.PolicyService/SetPolicy".into(),
        outcome: ActionOutcome::Succeeded as i32,
        request_digest: "00".repeat(32),
        previous_hash: "ff".repeat(32),
        hash: "ee".repeat(32),
        index: last.index + 1,
        ..Default::default()
    };
    let env = envelope::new_for(None, "api", Body::ActionRecorded(forged));
    let forged_seq = canopy_kit::publish::publish(&mallory, &env).await?;
    // The api goes on recording, chained onto whatever is last.
    policy.set_policy(set_policy(3)).await?;
    t.records(5).await?;

    let v = t.verify().await?;
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.records_checked, 3);
    let broken = v.broken.context("the broken link")?;
    assert_eq!(broken.index, 4);
    assert_eq!(broken.sequence, forged_seq);
    assert_eq!(broken.field, "previous_hash");
    assert_eq!(broken.expected, last.hash);
    assert_eq!(broken.found, "ff".repeat(32));

    let out = t.canopyctl(&["trail", "verify"]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("BROKEN at index 4"), "{stderr}");
    let out = t.canopyctl(&["trail", "verify", "-o", "json"]).await?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["broken"]["index"], 4);

    // Deleting the whole stream is refused by permissions only; a user allowed everything can.
    // Changes then fail closed, and a recreated stream's new chain is told from the old one.
    t.records(5).await?;
    assert!(mallory.delete_stream(streams::AUDIT_TRAIL).await?.success);
    let err = policy.set_policy(set_policy(4)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    admin_js.create_stream(streams::audit_trail()).await?;
    policy.set_policy(set_policy(4)).await?;
    let v = t.verify().await?;
    assert!(!v.ok, "{v:?}");
    let broken = v.broken.context("the missing records")?;
    assert_eq!(
        (broken.index, broken.field.as_str()),
        (2, "missing"),
        "{broken:?}"
    );
    t.stack.shutdown().await
}

fn uuid_like() -> String {
    envelope::new_for(None, "x", Body::ActionRecorded(ActionRecorded::default())).event_id
}
