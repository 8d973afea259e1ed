//! The audit trail's read model: every ActionRecorded on AUDIT_TRAIL becomes one row, what is
//! not a record is dead-lettered, and a rebuild writes the same rows.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{ActionOutcome, ActionRecorded, envelope::Body};
use sqlx::Row as _;

use crate::common::{Env, WAIT};

async fn trail_checkpoint(env: &Env) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT last_sequence FROM projection_checkpoints WHERE stream = 'AUDIT_TRAIL'",
    )
    .fetch_optional(&env.pool)
    .await?
    .unwrap_or(0))
}

async fn dump(env: &Env) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query("SELECT row_to_json(t)::text FROM audit_trail t ORDER BY seq")
        .fetch_all(&env.pool)
        .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

#[tokio::test]
async fn trail_records_are_projected_and_rebuilt_identically() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let record = |i: u64, actor: &str, outcome: ActionOutcome, roles: &[&str]| {
        envelope::new_for(
            None,
            "api",
            Body::ActionRecorded(ActionRecorded {
                action_id: format!("a{i}"),
                actor: actor.into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                method: "/canopy.api.v1.PolicyService/SetPolicy".into(),
                target: if i == 2 {
                    "prod-eu".into()
                } else {
                    String::new()
                },
                outcome: outcome as i32,
                detail: format!("detail {i}"),
                request_digest: "ab".repeat(32),
                previous_hash: if i == 1 {
                    String::new()
                } else {
                    format!("h{}", i - 1)
                },
                hash: format!("h{i}"),
                index: i,
            }),
        )
    };
    env.publish(&record(1, "alice", ActionOutcome::Succeeded, &["admin"]))
        .await?;
    env.publish(&record(2, "anonymous", ActionOutcome::Denied, &[]))
        .await?;
    // Not a record: dead-lettered, never blocks the next one.
    env.publish_raw("canopy.audit.action.recorded", b"garbage".to_vec())
        .await?;
    let last = env
        .publish(&record(3, "bob", ActionOutcome::Invalid, &["operator"]))
        .await?;
    canopy_testkit::eventually(WAIT, "AUDIT_TRAIL projected", || async {
        Ok((trail_checkpoint(&env).await? >= i64::try_from(last)?).then_some(()))
    })
    .await?;
    ingestion.stop().await?;

    let rows = sqlx::query(
        "SELECT seq, actor, roles, target, outcome, detail, previous_hash, hash, chain_index
         FROM audit_trail ORDER BY seq",
    )
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(rows.len(), 3);
    let get = |i: usize, c: &str| rows[i].get::<String, _>(c);
    assert_eq!(
        (get(0, "actor"), get(1, "actor"), get(2, "actor")),
        ("alice".into(), "anonymous".into(), "bob".into())
    );
    assert_eq!(
        (get(0, "outcome"), get(1, "outcome"), get(2, "outcome")),
        ("succeeded".into(), "denied".into(), "invalid".into())
    );
    assert_eq!(rows[0].get::<Vec<String>, _>("roles"), ["admin"]);
    assert!(rows[1].get::<Vec<String>, _>("roles").is_empty());
    assert_eq!(get(1, "target"), "prod-eu");
    assert_eq!(get(2, "previous_hash"), "h2");
    assert_eq!(rows[2].get::<i64, _>("chain_index"), 3);
    assert_eq!(rows[2].get::<i64, _>("seq"), i64::try_from(last)?);
    let dead: u64 = env
        .js
        .get_stream(canopy_kit::streams::DEAD_LETTER)
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(dead, 1);

    let live = dump(&env).await?;
    canopy_ingestion::rebuild(
        env.config("ingestion"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    assert_eq!(
        dump(&env).await?,
        live,
        "a rebuild differs from the live projection"
    );
    Ok(())
}
