//! A restart right after a crash: events the dead instance had received but not acknowledged
//! are applied, in order, not skipped behind newer ones.

use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt as _;
use sqlx::Row as _;

use crate::common::{Env, heartbeat, started};

#[tokio::test]
async fn events_received_but_unacknowledged_by_a_dead_instance_are_not_lost() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    env.publish(&started("a", "i1")).await?;
    for seq in 1..=2 {
        env.publish(&heartbeat("a", "i1", seq)).await?;
    }
    // A previous instance took the first events from the durable consumer and died before
    // acknowledging them (the server redelivers them only after the ack wait).
    let consumer = env
        .js
        .get_stream("FLEET_EVENTS")
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("ingestion".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: std::time::Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let mut taken = consumer.fetch().max_messages(3).messages().await?;
    let mut n = 0;
    while let Some(m) = taken.next().await {
        m.map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
    }
    assert_eq!(n, 3);
    let mut last = 0;
    for seq in 3..=5 {
        last = env.publish(&heartbeat("a", "i1", seq)).await?;
    }
    let ingestion = env.ingestion("ingestion").await?;
    env.applied("ingestion", last).await?;
    ingestion.stop().await?;
    let row = sqlx::query(
        "SELECT started_at IS NOT NULL, last_heartbeat_seq, heartbeats_received FROM agents",
    )
    .fetch_one(&env.pool)
    .await?;
    let (started, seq, received): (bool, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(started, "AgentStarted was skipped");
    assert_eq!((seq, received), (5, 5), "heartbeats were skipped");
    Ok(())
}
