//! A remediation follows its command to the end (view `remediation_status`), whichever of
//! CONTROL and FLEET_EVENTS is projected first; a rebuild gives the same rows.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    CommandAccepted, CommandFailed, CommandKind, CommandParams, CommandRejected, CommandRequested,
    CommandSucceeded, CommandTarget, CommandTimedOut, Envelope, RemediationApproved,
    RemediationProposed, RemediationResult, WorkloadRef, command_params::Params, command_succeeded,
    command_target::Target, envelope::Body,
};
use canopy_testkit::eventually;

use crate::common::*;

const CLUSTER: &str = "sick-eu";

fn ctl(body: Body) -> Envelope {
    envelope::new_for(Some(&cluster(CLUSTER)), "doctor", body)
}

fn agent(body: Body) -> Envelope {
    envelope::new(&cluster(CLUSTER), "agent", body)
}

fn restart(name: &str) -> CommandParams {
    CommandParams {
        params: Some(Params::RolloutRestart(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        })),
    }
}

/// Proposed, approved and requested as the doctor does it in auto mode; `(remediation,
/// command)` ids.
async fn auto_remediation(env: &Env, name: &str) -> anyhow::Result<(String, String, u64)> {
    let (rid, cid) = (format!("rem-{name}"), cmd(name));
    env.publish(&ctl(Body::RemediationProposed(RemediationProposed {
        remediation_id: rid.clone(),
        diagnosis_id: format!("diag-{name}"),
        playbook: "rollout-restart".into(),
        kind: CommandKind::RolloutRestart as i32,
        params: Some(restart(name)),
        reason: format!("Deployment shop/{name} is crash-looping"),
        auto: true,
    })))
    .await?;
    env.publish(&ctl(Body::RemediationApproved(RemediationApproved {
        remediation_id: rid.clone(),
        approved_by: "doctor".into(),
    })))
    .await?;
    let seq = env
        .publish(&envelope::new_for(
            None,
            "doctor",
            Body::CommandRequested(CommandRequested {
                command_id: cid.clone(),
                kind: CommandKind::RolloutRestart as i32,
                target: Some(CommandTarget {
                    target: Some(Target::ClusterId(CLUSTER.into())),
                }),
                params: Some(restart(name)),
                requested_by: "doctor".into(),
                idempotency_key: format!("remediation:{rid}"),
                remediation_id: rid.clone(),
                ..Default::default()
            }),
        ))
        .await?;
    Ok((rid, cid, seq))
}

/// The command id of remediation `name` (a UUID, as commands have).
fn cmd(name: &str) -> String {
    let n = ["api", "cart", "orders", "queue", "web"]
        .iter()
        .position(|x| *x == name)
        .unwrap();
    format!("00000000-0000-4000-8000-{:012}", n + 1)
}

fn kind() -> i32 {
    CommandKind::RolloutRestart as i32
}

async fn control_checkpoint(env: &Env) -> anyhow::Result<u64> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT last_sequence FROM projection_checkpoints WHERE stream = 'CONTROL'",
    )
    .fetch_optional(&env.pool)
    .await?;
    Ok(seq.unwrap_or(0) as u64)
}

async fn states(env: &Env) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(
        sqlx::query_as("SELECT id, state, result FROM remediation_status ORDER BY id")
            .fetch_all(&env.pool)
            .await?,
    )
}

async fn dump(env: &Env) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT row_to_json(t)::text FROM remediation_status t ORDER BY id")
            .fetch_all(&env.pool)
            .await?,
    )
}

#[tokio::test]
async fn a_remediation_follows_its_command_to_the_end() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // The outcome of `api` is stored before its request is projected: the agent's events and
    // the doctor's are on different streams.
    env.publish(&agent(Body::CommandAccepted(CommandAccepted {
        command_id: cmd("api"),
        kind: kind(),
    })))
    .await?;
    env.publish(&agent(Body::CommandSucceeded(CommandSucceeded {
        command_id: cmd("api"),
        kind: kind(),
        summary: "patched Deployment shop/api restartedAt".into(),
        duration_ms: 12,
        result: Some(command_succeeded::Result::Remediation(RemediationResult {
            action: "patched Deployment shop/api restartedAt".into(),
        })),
    })))
    .await?;
    let ingestion = env.ingestion("ingestion").await?;
    auto_remediation(&env, "api").await?;
    for name in ["cart", "orders", "queue", "web"] {
        auto_remediation(&env, name).await?;
    }
    // cart runs; orders fails in the Kubernetes API; queue is never finished; web is refused.
    env.publish(&agent(Body::CommandAccepted(CommandAccepted {
        command_id: cmd("cart"),
        kind: kind(),
    })))
    .await?;
    env.publish(&agent(Body::CommandAccepted(CommandAccepted {
        command_id: cmd("orders"),
        kind: kind(),
    })))
    .await?;
    let fleet_last = env
        .publish(&agent(Body::CommandFailed(CommandFailed {
            command_id: cmd("orders"),
            kind: kind(),
            reason: "kubernetes".into(),
            error: "the API refused the patch: 403 Forbidden".into(),
            duration_ms: 7,
        })))
        .await?;
    env.publish(&ctl(Body::CommandTimedOut(CommandTimedOut {
        command_id: cmd("queue"),
        kind: kind(),
        last_state: "dispatched".into(),
        ..Default::default()
    })))
    .await?;
    env.publish(&ctl(Body::RemediationProposed(RemediationProposed {
        remediation_id: "rem-pending".into(),
        diagnosis_id: "diag-pending".into(),
        playbook: "rollout-restart".into(),
        kind: kind(),
        params: Some(restart("pending")),
        reason: "waits for an operator".into(),
        auto: false,
    })))
    .await?;
    let control_last = env
        .publish(&envelope::new_for(
            None,
            "cnc",
            Body::CommandRejected(CommandRejected {
                command_id: cmd("web"),
                kind: kind(),
                reason: "cluster_revoked".into(),
                detail: "sick-eu was revoked".into(),
            }),
        ))
        .await?;
    env.applied("ingestion", fleet_last).await?;
    eventually(WAIT, "CONTROL projected", || async {
        Ok((control_checkpoint(&env).await? >= control_last).then_some(()))
    })
    .await?;
    ingestion.stop().await?;

    let s =
        |id: &str, state: &str, result: &str| (id.to_owned(), state.to_owned(), result.to_owned());
    assert_eq!(
        states(&env).await?,
        [
            s(
                "rem-api",
                "succeeded",
                "patched Deployment shop/api restartedAt"
            ),
            s("rem-cart", "running", ""),
            s(
                "rem-orders",
                "failed",
                "kubernetes: the API refused the patch: 403 Forbidden"
            ),
            s("rem-pending", "proposed", ""),
            s(
                "rem-queue",
                "timed-out",
                "deadline_passed: not finished by its deadline (last state: dispatched)"
            ),
            s(
                "rem-web",
                "failed",
                "refused by cnc: cluster_revoked: sick-eu was revoked"
            ),
        ]
    );
    let finished: Vec<(String, bool)> =
        sqlx::query_as("SELECT id, finished_at IS NOT NULL FROM remediation_status ORDER BY id")
            .fetch_all(&env.pool)
            .await?;
    let ended: Vec<&str> = finished
        .iter()
        .filter(|(_, f)| *f)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ended, ["rem-api", "rem-orders", "rem-queue"]);

    // A rebuild from the log gives the same rows.
    let live = dump(&env).await?;
    let replayed = canopy_ingestion::rebuild(
        env.config("ingestion"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    assert!(replayed >= fleet_last);
    assert_eq!(
        dump(&env).await?,
        live,
        "a rebuild differs from the live projection"
    );
    Ok(())
}
