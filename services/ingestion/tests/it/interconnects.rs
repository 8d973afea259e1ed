//! Interconnect requests projected from CONTROL: a request is pending, a newer one of the same
//! cluster supersedes it, a repeat changes nothing, approvals and rejections move only pending
//! requests (of the cluster the envelope names), a revocation only approved ones; a rebuild
//! gives the same rows.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    ClusterRevoked, Envelope, InterconnectApproved, InterconnectRejected, InterconnectRequested,
    LinkDirection, envelope::Body,
};
use chrono::{DateTime, Utc};

use crate::common::*;

/// A CONTROL event about `c` that occurred `at` seconds into the test's timeline.
fn ctl(c: &str, at: i64, body: Body) -> Envelope {
    let mut env = envelope::new_for(Some(&cluster(c)), "test", body);
    env.occurred_at = Some(prost_types::Timestamp {
        seconds: 1_800_000_000 + at,
        nanos: 0,
    });
    env
}

fn time(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + at, 0).unwrap()
}

fn requested(c: &str, at: i64, id: &str, version: &str) -> Envelope {
    ctl(
        c,
        at,
        Body::InterconnectRequested(InterconnectRequested {
            request_id: id.into(),
            link_user_public_key: format!("U{id}"),
            xkey_public_key: format!("X{id}"),
            labels: [("env".to_owned(), "edge".to_owned())].into(),
            direction: LinkDirection::SeedDials as i32,
            trunk: "trunk-eu".into(),
            leaf_url: format!("nats-leaf://{c}.example:7422"),
            gateway_version: version.into(),
            seed_user_jwt: String::new(),
        }),
    )
}

fn approved(c: &str, at: i64, id: &str, by: &str) -> Envelope {
    ctl(
        c,
        at,
        Body::InterconnectApproved(InterconnectApproved {
            request_id: id.into(),
            approved_by: by.into(),
            ..Default::default()
        }),
    )
}

fn rejected(c: &str, at: i64, id: &str, by: &str, reason: &str) -> Envelope {
    ctl(
        c,
        at,
        Body::InterconnectRejected(InterconnectRejected {
            request_id: id.into(),
            rejected_by: by.into(),
            reason: reason.into(),
        }),
    )
}

fn revoked(c: &str, at: i64, by: &str, reason: &str) -> Envelope {
    ctl(
        c,
        at,
        Body::ClusterRevoked(ClusterRevoked {
            revoked_by: by.into(),
            reason: reason.into(),
        }),
    )
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    request_id: String,
    cluster_id: String,
    status: String,
    decided_by: String,
    reason: String,
    decided_at: Option<DateTime<Utc>>,
}

async fn rows(env: &Env) -> anyhow::Result<Vec<Row>> {
    Ok(sqlx::query_as(
        "SELECT request_id, cluster_id, status, decided_by, reason, decided_at
         FROM interconnect_requests ORDER BY request_id",
    )
    .fetch_all(&env.pool)
    .await?)
}

fn row(id: &str, c: &str, status: &str, by: &str, reason: &str, at: Option<i64>) -> Row {
    Row {
        request_id: id.into(),
        cluster_id: c.into(),
        status: status.into(),
        decided_by: by.into(),
        reason: reason.into(),
        decided_at: at.map(time),
    }
}

async fn control_applied(env: &Env, seq: u64) -> anyhow::Result<()> {
    canopy_testkit::eventually(WAIT, "CONTROL projected", || async {
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT last_sequence FROM projection_checkpoints WHERE stream = 'CONTROL'",
        )
        .fetch_optional(&env.pool)
        .await?;
        Ok((applied.unwrap_or(0) as u64 >= seq).then_some(()))
    })
    .await
}

#[tokio::test]
async fn requests_move_through_their_statuses_and_rebuild_the_same() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let events = [
        requested("edge-1", 1, "r1", "0.1.0"),
        // A repeat of r1 (e.g. the gateway asking again) changes nothing.
        requested("edge-1", 2, "r1", "0.2.0"),
        // A newer request of edge-1 supersedes the pending r1.
        requested("edge-1", 3, "r2", "0.2.0"),
        requested("edge-2", 4, "r3", "0.2.0"),
        requested("edge-3", 5, "r4", "0.2.0"),
        approved("edge-1", 6, "r2", "alice"),
        // Decisions on requests no longer pending are ignored.
        approved("edge-1", 7, "r1", "alice"),
        rejected("edge-2", 8, "r3", "bob", "unknown site"),
        approved("edge-2", 9, "r3", "alice"),
        // An approval whose envelope names another cluster than the request's is ignored.
        approved("edge-1", 10, "r4", "mallory"),
        // A revocation moves approved requests only.
        revoked("edge-2", 11, "carol", "nothing approved"),
        revoked("edge-1", 12, "carol", "decommissioned"),
        // A second revocation finds nothing approved any more.
        revoked("edge-1", 13, "dave", "again"),
    ];
    let mut last = 0;
    for e in &events {
        last = env.publish(e).await?;
    }
    control_applied(&env, last).await?;
    assert_eq!(
        rows(&env).await?,
        [
            row(
                "r1",
                "edge-1",
                "superseded",
                "",
                "superseded by request r2",
                Some(3)
            ),
            row(
                "r2",
                "edge-1",
                "revoked",
                "carol",
                "decommissioned",
                Some(12)
            ),
            row("r3", "edge-2", "rejected", "bob", "unknown site", Some(8)),
            row("r4", "edge-3", "pending", "", "", None),
        ]
    );
    let (version, direction, labels, requested_at, link, xkey): (
        String,
        String,
        serde_json::Value,
        DateTime<Utc>,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT gateway_version, direction, labels, requested_at, link_user_public_key,
                xkey_public_key
         FROM interconnect_requests WHERE request_id = 'r1'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(version, "0.1.0", "the first request wins");
    assert_eq!(direction, "seed-dials");
    assert_eq!(labels, serde_json::json!({"env": "edge"}));
    assert_eq!(requested_at, time(1));
    assert_eq!((link.as_str(), xkey.as_str()), ("Ur1", "Xr1"));

    // A request of a revoked cluster starts over as pending.
    let again = env.publish(&requested("edge-1", 14, "r5", "0.3.0")).await?;
    control_applied(&env, again).await?;
    let status: String =
        sqlx::query_scalar("SELECT status FROM interconnect_requests WHERE request_id = 'r5'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(status, "pending");
    ingestion.stop().await?;

    let live = env.dump().await?;
    assert_eq!(
        live.iter().filter(|r| r.contains("\"request_id\"")).count(),
        5,
        "the dump holds the interconnect requests"
    );
    let replayed = canopy_ingestion::rebuild(
        env.config("ingestion"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    assert_eq!(replayed, again);
    assert_eq!(
        env.dump().await?,
        live,
        "a rebuild differs from the live projection"
    );
    Ok(())
}
