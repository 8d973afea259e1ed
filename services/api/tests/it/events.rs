//! EventService.Watch over a real FLEET_EVENTS.

use std::time::Duration;

use futures::StreamExt as _;
use prost_types::Timestamp;
use tonic::{Code, Streaming};

use canopy_kit::proto::api::v1::{
    WatchEvent, WatchRequest, event_service_client::EventServiceClient, watch_request::Start,
};
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_kit::streams;
use canopy_testkit::assert_eventually;

use crate::stack::{Stack, WAIT, heartbeat, snapshot, started};

async fn next(stream: &mut Streaming<WatchEvent>) -> anyhow::Result<WatchEvent> {
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .map_err(|_| anyhow::anyhow!("no event within {WAIT:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
    Ok(event)
}

async fn next_seqs(stream: &mut Streaming<WatchEvent>, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(n);
    for _ in 0..n {
        seqs.push(next(stream).await?.stream_sequence);
    }
    Ok(seqs)
}

fn from(seq: u64) -> Option<Start> {
    Some(Start::FromSequence(seq))
}

async fn watch(
    stack: &Stack,
    cluster: &str,
    types: &[&str],
    start: Option<Start>,
) -> anyhow::Result<Streaming<WatchEvent>> {
    let mut client = EventServiceClient::new(stack.channel().await?);
    Ok(client
        .watch(WatchRequest {
            cluster_id: cluster.into(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            start,
        })
        .await?
        .into_inner())
}

#[tokio::test]
async fn replays_history_then_follows_live_events() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let first = stack.publish(&heartbeat("alpha", 1)).await?;
    stack.publish(&heartbeat("beta", 1)).await?;
    let broken = stack
        .publish_raw("canopy.evt.alpha.agent.heartbeat", b"\xff\xff not protobuf")
        .await?;
    assert_eq!((first, broken), (1, 3));

    let mut events = watch(&stack, "", &[], from(1)).await?;
    let e = next(&mut events).await?;
    assert_eq!(e.stream_sequence, 1);
    assert_eq!(e.subject, "canopy.evt.alpha.agent.heartbeat");
    assert_eq!(e.r#type, "agent.heartbeat");
    assert!(e.stored_at.is_some());
    let env = e.envelope.expect("decoded envelope");
    assert_eq!(env.cluster_id, "alpha");
    assert!(matches!(env.body, Some(Body::Heartbeat(ref h)) if h.sequence == 1));
    assert_eq!(next(&mut events).await?.stream_sequence, 2);
    // Undecodable events are sent without envelope, so no sequence is skipped silently.
    let e = next(&mut events).await?;
    assert_eq!(
        (e.stream_sequence, e.r#type.as_str()),
        (3, "agent.heartbeat")
    );
    assert_eq!(e.envelope, None);

    let live = stack.publish(&heartbeat("alpha", 2)).await?;
    assert_eq!(next(&mut events).await?.stream_sequence, live);
    Ok(())
}

#[tokio::test]
async fn filters_by_cluster_and_type() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.publish(&started("alpha")).await?; // 1
    stack.publish(&heartbeat("alpha", 1)).await?; // 2
    stack.publish(&heartbeat("beta", 1)).await?; // 3
    stack.publish(&snapshot("alpha", &[("Pod", "p")])).await?; // 4
    stack.publish(&started("beta")).await?; // 5

    let mut alpha_heartbeats = watch(&stack, "alpha", &["heartbeat"], from(1)).await?;
    assert_eq!(next_seqs(&mut alpha_heartbeats, 1).await?, [2]);
    let mut starts_and_snapshots = watch(
        &stack,
        "",
        &["agent.started", "inventory.snapshot"],
        from(1),
    )
    .await?;
    assert_eq!(next_seqs(&mut starts_and_snapshots, 3).await?, [1, 4, 5]);
    let mut beta = watch(&stack, "beta", &[], from(1)).await?;
    assert_eq!(next_seqs(&mut beta, 2).await?, [3, 5]);

    stack.publish(&heartbeat("beta", 2)).await?; // 6
    stack.publish(&heartbeat("alpha", 2)).await?; // 7
    let e = next(&mut alpha_heartbeats).await?;
    assert_eq!(
        (e.stream_sequence, e.r#type.as_str()),
        (7, "agent.heartbeat")
    );
    assert_eq!(next_seqs(&mut beta, 1).await?, [6]);
    Ok(())
}

#[tokio::test]
async fn starts_at_a_time_or_with_new_events_only() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    for seq in 1..=3 {
        stack.publish(&heartbeat("alpha", seq)).await?;
    }
    let stored = stack
        .js
        .get_stream(streams::FLEET_EVENTS)
        .await?
        .get_raw_message(2)
        .await?
        .time;
    let nanos = stored.unix_timestamp_nanos();
    let from_time = Some(Start::FromTime(Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000))?,
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000))?,
    }));
    let mut since = watch(&stack, "", &[], from_time).await?;
    assert_eq!(next_seqs(&mut since, 2).await?, [2, 3]);

    // The consumer exists once the response arrived: only what is published after counts.
    let mut new_only = watch(&stack, "alpha", &[], None).await?;
    let live = stack.publish(&heartbeat("alpha", 4)).await?;
    assert_eq!(next_seqs(&mut new_only, 1).await?, [live]);
    Ok(())
}

#[tokio::test]
async fn rejects_bad_filters() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let cases: [(&str, &[&str], Option<Start>, &str); 4] = [
        ("Alpha.Prod", &[], None, "cluster_id"),
        ("", &["agent.>"], None, "types"),
        ("", &["nonsense"], None, "agent.heartbeat"),
        ("", &[], from(0), "from_sequence"),
    ];
    for (cluster, types, start, mentions) in cases {
        let err = watch(&stack, cluster, types, start).await.unwrap_err();
        let status = err.downcast::<tonic::Status>()?;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{cluster:?} {types:?}"
        );
        assert!(status.message().contains(mentions), "{}", status.message());
    }
    Ok(())
}

#[tokio::test]
async fn consumers_go_away_with_their_watchers() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.publish(&heartbeat("alpha", 1)).await?;
    let consumers = || async {
        let mut stream = stack.js.get_stream(streams::FLEET_EVENTS).await?;
        anyhow::Ok(stream.info().await?.state.consumer_count)
    };
    // Ingestion's durable consumer.
    assert_eventually!(WAIT, async { Ok(consumers().await? == 1) });

    let mut a = watch(&stack, "", &[], from(1)).await?;
    let mut b = watch(&stack, "alpha", &["heartbeat"], from(1)).await?;
    next(&mut a).await?;
    next(&mut b).await?;
    assert_eq!(consumers().await?, 3);
    drop(a);
    assert_eventually!(WAIT, async { Ok(consumers().await? == 2) });
    drop(b);
    assert_eventually!(WAIT, async { Ok(consumers().await? == 1) });
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_watches_and_says_where_to_resume() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let seq = stack.publish(&heartbeat("alpha", 1)).await?;
    let mut events = watch(&stack, "", &[], from(1)).await?;
    assert_eq!(next(&mut events).await?.stream_sequence, seq);

    tokio::time::timeout(Duration::from_secs(10), stack.stop_api()).await??;
    let status = tokio::time::timeout(WAIT, events.next())
        .await?
        .expect("a final status")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains(&format!("from_sequence = {}", seq + 1)),
        "{}",
        status.message()
    );
    assert!(tokio::time::timeout(WAIT, events.next()).await?.is_none());
    Ok(())
}
