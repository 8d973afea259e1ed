//! Projection of agent and inventory events: rows, checkpoints, redelivery, dead letters,
//! snapshot replacement and rebuild.

use async_nats::jetstream::consumer::pull;
use canopy_kit::streams;
use futures::StreamExt as _;
use sqlx::Row as _;

use crate::common::*;

#[tokio::test]
async fn projects_agents_and_chunked_inventory() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    env.publish(&started("prod-eu", "i-1")).await?;
    for seq in 1..=3 {
        env.publish(&heartbeat("prod-eu", "i-1", seq)).await?;
    }
    env.publish(&chunk(
        "prod-eu",
        "s1",
        0,
        false,
        0,
        vec![
            object("Namespace", "", "default"),
            object("Pod", "default", "a"),
        ],
    ))
    .await?;
    let last = env
        .publish(&chunk(
            "prod-eu",
            "s1",
            1,
            true,
            3,
            vec![object("Pod", "default", "b")],
        ))
        .await?;
    env.applied("ingestion", last).await?;

    let agent = sqlx::query(
        "SELECT agent_instance_id, last_heartbeat_seq, heartbeats_received, node_count, pod_count, kubernetes_version
         FROM agents WHERE cluster_id = 'prod-eu'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(agent.get::<String, _>(0), "i-1");
    assert_eq!(agent.get::<i64, _>(1), 3);
    assert_eq!(agent.get::<i64, _>(2), 3);
    assert_eq!(agent.get::<i32, _>(3), 3);
    assert_eq!(agent.get::<i32, _>(4), 13);
    assert_eq!(agent.get::<String, _>(5), "v1.34.1");

    let snap = sqlx::query("SELECT snapshot_id, total_objects, counts_by_kind FROM inventory_snapshots WHERE cluster_id = 'prod-eu'")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(snap.get::<String, _>(0), "s1");
    assert_eq!(snap.get::<i64, _>(1), 3);
    assert_eq!(
        snap.get::<serde_json::Value, _>(2),
        serde_json::json!({"Namespace": 1, "Pod": 2})
    );
    let pods: i64 =
        sqlx::query("SELECT COUNT(*) FROM inventory WHERE cluster_id = 'prod-eu' AND kind = 'Pod'")
            .fetch_one(&env.pool)
            .await?
            .get(0);
    assert_eq!(pods, 2);
    ingestion.stop().await
}

#[tokio::test]
async fn a_new_snapshot_replaces_the_old_one_only_when_complete() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let objects = |names: &[&str]| {
        names
            .iter()
            .map(|n| object("Pod", "default", n))
            .collect::<Vec<_>>()
    };
    env.publish(&chunk(
        "dev-ap",
        "s1",
        0,
        true,
        3,
        objects(&["a", "b", "c"]),
    ))
    .await?;
    // s2 has begun but is not complete: s1 still stands.
    let seq = env
        .publish(&chunk("dev-ap", "s2", 0, false, 0, objects(&["a"])))
        .await?;
    env.applied("ingestion", seq).await?;
    let names = |env: &Env| {
        let pool = env.pool.clone();
        async move {
            let rows =
                sqlx::query("SELECT name FROM inventory WHERE cluster_id = 'dev-ap' ORDER BY name")
                    .fetch_all(&pool)
                    .await?;
            anyhow::Ok(
                rows.iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(names(&env).await?, ["a", "b", "c"]);
    let seq = env
        .publish(&chunk("dev-ap", "s2", 1, true, 2, objects(&["d"])))
        .await?;
    env.applied("ingestion", seq).await?;
    assert_eq!(names(&env).await?, ["a", "d"]);
    let total: i64 =
        sqlx::query("SELECT total_objects FROM inventory_snapshots WHERE cluster_id = 'dev-ap'")
            .fetch_one(&env.pool)
            .await?
            .get(0);
    assert_eq!(total, 2);
    ingestion.stop().await
}

#[tokio::test]
async fn redelivered_events_change_nothing() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    env.publish(&started("prod-eu", "i-1")).await?;
    for seq in 1..=20 {
        env.publish(&heartbeat("prod-eu", "i-1", seq)).await?;
    }
    let last = env
        .publish(&chunk(
            "prod-eu",
            "s1",
            0,
            true,
            1,
            vec![object("Node", "", "n1")],
        ))
        .await?;
    env.applied("ingestion", last).await?;
    ingestion.stop().await?;
    let before = env.dump().await?;

    // The consumer is lost (as after a JetStream restore): it is recreated at the checkpoint.
    env.js
        .get_stream(streams::FLEET_EVENTS)
        .await?
        .delete_consumer("ingestion")
        .await?;
    let ingestion = env.ingestion("ingestion").await?;
    canopy_testkit::eventually(
        WAIT,
        "the redelivered events to be acknowledged",
        || async {
            let mut c = env
                .js
                .get_stream(streams::FLEET_EVENTS)
                .await?
                .get_consumer::<pull::Config>("ingestion")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = c.info().await?;
            Ok((info.ack_floor.stream_sequence >= last).then_some(()))
        },
    )
    .await?;
    assert_eq!(
        env.dump().await?,
        before,
        "redelivery changed the read models"
    );
    assert_eq!(env.checkpoint("ingestion").await?, last);
    ingestion.stop().await
}

/// An instance that dies holding delivered, unacknowledged events (SIGKILL between fetch and
/// commit) must not make its successor skip them: delivery resumes at the checkpoint, in order,
/// instead of newer events first and the held ones only after the ack wait.
#[tokio::test]
async fn events_held_by_a_dead_instance_are_not_skipped() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    env.publish(&started("prod-eu", "i-1")).await?;
    let mut last = 0;
    for seq in 1..=3 {
        last = env.publish(&heartbeat("prod-eu", "i-1", seq)).await?;
    }
    env.applied("ingestion", last).await?;
    ingestion.stop().await?;

    for seq in 4..=6 {
        env.publish(&heartbeat("prod-eu", "i-1", seq)).await?;
    }
    // A dying instance: heartbeats 4..=6 are delivered to it and never acknowledged (some may
    // also go to the pull request the stopped instance left open on the server: held all the
    // same).
    canopy_testkit::eventually(
        WAIT,
        "heartbeats 4..=6 to be held unacknowledged",
        || async {
            let mut consumer = env
                .js
                .get_stream(streams::FLEET_EVENTS)
                .await?
                .get_consumer::<pull::Config>("ingestion")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut batch = consumer.fetch().max_messages(3).messages().await?;
            while let Some(m) = batch.next().await {
                m.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok((consumer.info().await?.num_ack_pending == 3).then_some(()))
        },
    )
    .await?;
    for seq in 7..=9 {
        last = env.publish(&heartbeat("prod-eu", "i-1", seq)).await?;
    }

    let ingestion = env.ingestion("ingestion").await?;
    env.applied("ingestion", last).await?;
    let row = sqlx::query(
        "SELECT heartbeats_received, last_heartbeat_seq FROM agents WHERE cluster_id = 'prod-eu'",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        (row.get::<i64, _>(0), row.get::<i64, _>(1)),
        (9, 9),
        "every heartbeat applied once, none skipped"
    );
    ingestion.stop().await
}

#[tokio::test]
async fn bad_events_are_dead_lettered_and_never_block() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    let garbage = env
        .publish_raw("canopy.evt.prod-eu.agent.heartbeat", vec![0xff, 0x01, 0x02])
        .await?;
    // An envelope of staging-us on prod-eu's subject: forged.
    let forged = {
        let env_b = heartbeat("staging-us", "i-9", 1);
        env.publish_raw(
            "canopy.evt.prod-eu.agent.heartbeat",
            canopy_kit::envelope::encode(&env_b).to_vec(),
        )
        .await?
    };
    let good = env.publish(&heartbeat("prod-eu", "i-1", 1)).await?;
    env.applied("ingestion", good).await?;
    let received: i64 =
        sqlx::query("SELECT heartbeats_received FROM agents WHERE cluster_id = 'prod-eu'")
            .fetch_one(&env.pool)
            .await?
            .get(0);
    assert_eq!(received, 1);
    let staging: i64 = sqlx::query("SELECT COUNT(*) FROM clusters WHERE id = 'staging-us'")
        .fetch_one(&env.pool)
        .await?
        .get(0);
    assert_eq!(staging, 0, "a forged event reached the read models");

    let dlq = env.js.get_stream(streams::DEAD_LETTER).await?;
    let consumer = dlq.create_consumer(pull::OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = tokio::time::timeout(WAIT, messages.next())
            .await?
            .unwrap()?;
        let headers = m.headers.clone().unwrap();
        seen.push((
            m.subject.to_string(),
            headers.get("Canopy-Source-Sequence").unwrap().to_string(),
            headers.get("Canopy-Error").unwrap().to_string(),
        ));
    }
    assert_eq!(seen[0].0, "canopy.dlq.ingestion.undecodable");
    assert_eq!(seen[0].1, garbage.to_string());
    assert_eq!(seen[1].0, "canopy.dlq.ingestion.forged");
    assert_eq!(seen[1].1, forged.to_string());
    assert!(
        seen[1].2.contains("staging-us"),
        "reason names the mismatch: {}",
        seen[1].2
    );
    ingestion.stop().await
}

#[tokio::test]
async fn rebuild_gives_the_same_read_models() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let ingestion = env.ingestion("ingestion").await?;
    for c in ["prod-eu", "dev-ap"] {
        env.publish(&started(c, "i-1")).await?;
        for seq in 1..=60 {
            env.publish(&heartbeat(c, "i-1", seq)).await?;
        }
        let objects = (0..120)
            .map(|i| object("Pod", "default", &format!("p{i:03}")))
            .collect::<Vec<_>>();
        env.publish(&chunk(c, "s1", 0, false, 0, objects[..60].to_vec()))
            .await?;
        env.publish(&chunk(c, "s1", 1, true, 120, objects[60..].to_vec()))
            .await?;
    }
    let last = env.publish(&heartbeat("prod-eu", "i-1", 61)).await?;
    env.applied("ingestion", last).await?;
    ingestion.stop().await?;
    let live = env.dump().await?;
    assert!(live.len() > 240);

    let replayed = canopy_ingestion::rebuild(
        env.config("ingestion"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    assert_eq!(replayed, last);
    assert_eq!(
        env.dump().await?,
        live,
        "a rebuild differs from the live projection"
    );
    Ok(())
}
