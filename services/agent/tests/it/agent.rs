//! Start event, gap-free heartbeats across a leaf outage, and inventory snapshots that match the
//! cluster and respect the chunk bound.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use canopy_agent::config::Config;
use canopy_kit::proto::event::v1::{Envelope, envelope::Body};
use canopy_kit::streams;
use canopy_testkit::{FakeKube, Fixture, NatsProcess, eventually};
use clap::Parser as _;
use futures::StreamExt as _;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

struct Agent {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    fn start(nats: &NatsProcess, kube: &FakeKube, extra: &[&str]) -> Self {
        let mut args = vec![
            "canopy-agent",
            "--cluster-id",
            "prod-eu",
            "--heartbeat-interval",
            "200ms",
            "--log-format",
            "text",
        ];
        args.extend_from_slice(extra);
        let url = kube.url();
        let nats_url = nats.client_url();
        args.extend(["--api-url", &url, "--nats-url", &nats_url]);
        let cfg = Config::try_parse_from(args).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(canopy_agent::run(cfg, stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Every event of EVENTS (with its payload size), in stream order.
async fn events(js: &jetstream::Context) -> anyhow::Result<Vec<(usize, Envelope)>> {
    let stream = js.get_stream(streams::EVENTS).await?;
    let last = stream.cached_info().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = tokio::time::timeout(WAIT, messages.next()).await? {
        let m = m?;
        out.push((
            m.payload.len(),
            canopy_kit::envelope::decode(&m.subject, &m.payload)?,
        ));
        if m.info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence
            >= last
        {
            break;
        }
    }
    Ok(out)
}

fn heartbeats(events: &[(usize, Envelope)]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|(_, e)| match &e.body {
            Some(Body::Heartbeat(h)) => Some(h.sequence),
            _ => None,
        })
        .collect()
}

/// Objects by kind of the first complete snapshot, and the chunk sizes.
fn first_snapshot(
    events: &[(usize, Envelope)],
) -> Option<(BTreeMap<String, usize>, u64, Vec<usize>)> {
    let mut counts = BTreeMap::new();
    let mut sizes = Vec::new();
    for (size, e) in events {
        if let Some(Body::InventorySnapshot(s)) = &e.body {
            sizes.push(*size);
            for o in &s.objects {
                *counts.entry(o.kind.clone()).or_insert(0) += 1;
            }
            if s.last_chunk {
                return Some((counts, s.total_objects, sizes));
            }
        }
    }
    None
}

#[tokio::test]
async fn reports_start_heartbeats_and_the_fixture_inventory() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("prod-eu")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let agent = Agent::start(&nats, &kube, &[]);
    let js = jetstream::new(nats.connect().await?);
    let events = eventually(WAIT, "a snapshot and three heartbeats", || async {
        let ev = events(&js).await?;
        Ok((first_snapshot(&ev).is_some() && heartbeats(&ev).len() >= 3).then_some(ev))
    })
    .await?;
    agent.stop().await;

    let Some(Body::AgentStarted(started)) = &events[0].1.body else {
        panic!(
            "the first event is not AgentStarted: {:?}",
            events[0].1.body
        )
    };
    assert_eq!(started.kubernetes_version, "v1.34.1");
    assert_eq!(events[0].1.cluster_id, "prod-eu");
    let seqs = heartbeats(&events);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let hb = events
        .iter()
        .find_map(|(_, e)| match &e.body {
            Some(Body::Heartbeat(h)) => Some(h.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(hb.agent_instance_id, started.agent_instance_id);
    assert_eq!(hb.node_count as usize, fixture.count_by_kind()["Node"]);
    assert_eq!(hb.pod_count as usize, fixture.count_by_kind()["Pod"]);

    let (counts, total, _) = first_snapshot(&events).unwrap();
    assert_eq!(counts, fixture.count_by_kind());
    assert_eq!(total as usize, fixture.len());
    // Secrets carry their keys, never their values.
    for (_, e) in &events {
        if let Some(Body::InventorySnapshot(s)) = &e.body {
            for o in s.objects.iter().filter(|o| o.kind == "Secret") {
                assert!(o.attributes.contains_key("keys"));
                let secret = fixture
                    .objects()
                    .iter()
                    .find(|f| f["kind"] == "Secret" && f["metadata"]["name"] == o.name.as_str())
                    .unwrap();
                for value in secret["data"]
                    .as_object()
                    .into_iter()
                    .flat_map(|d| d.values())
                {
                    let value = value.as_str().unwrap();
                    assert!(
                        !format!("{:?}", o.attributes).contains(value),
                        "secret value leaked"
                    );
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_large_cluster_is_listed_in_pages_and_sent_in_bounded_chunks() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::generated(20_000, 7);
    let expected: BTreeMap<String, usize> = fixture.count_by_kind();
    let kube = FakeKube::start(fixture).await?;
    let max = 65_536;
    let agent = Agent::start(
        &nats,
        &kube,
        &["--page-size", "500", "--max-chunk-bytes", "65536"],
    );
    let js = jetstream::new(nats.connect().await?);
    let (counts, total, sizes) = eventually(WAIT, "the snapshot of 20,000 objects", || async {
        Ok(first_snapshot(&events(&js).await?))
    })
    .await?;
    agent.stop().await;
    let inventoried: BTreeMap<String, usize> = expected
        .into_iter()
        .filter(|(k, _)| canopy_agent::inventoried_kinds().contains(&k.as_str()))
        .collect();
    assert_eq!(counts, inventoried);
    assert_eq!(total as usize, inventoried.values().sum::<usize>());
    assert!(
        sizes.len() > 10,
        "expected many chunks, got {}",
        sizes.len()
    );
    for (i, s) in sizes.iter().enumerate() {
        assert!(*s <= max, "chunk {i} has {s} bytes");
    }
    // The kube client read pods page by page.
    let pod_lists = kube
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && r.path == "/api/v1/pods"
                && r.query.as_deref().is_some_and(|q| q.contains("limit=500"))
        })
        .count();
    assert!(
        pod_lists > 1,
        "pods were not paged ({pod_lists} list calls)"
    );
    Ok(())
}

#[tokio::test]
async fn heartbeats_stay_gap_free_across_a_leaf_outage() -> anyhow::Result<()> {
    let mut nats = NatsProcess::standalone_in_temp().await?;
    let kube = FakeKube::start(Fixture::load("dev-ap")?).await?;
    let agent = Agent::start(&nats, &kube, &[]);
    let js = jetstream::new(nats.connect().await?);
    eventually(WAIT, "two heartbeats", || async {
        Ok((heartbeats(&events(&js).await?).len() >= 2).then_some(()))
    })
    .await?;
    nats.stop().await?;
    // While the server is down the agent keeps producing heartbeats; kube requests show time
    // passing (each heartbeat counts nodes and pods).
    let before = kube.requests().len();
    eventually(WAIT, "five heartbeat rounds during the outage", || async {
        Ok((kube.requests().len() >= before + 15).then_some(()))
    })
    .await?;
    nats.start().await?;
    let js = jetstream::new(nats.connect().await?);
    let seqs = eventually(
        WAIT,
        "the heartbeats of the outage to be stored",
        || async {
            let seqs = heartbeats(&events(&js).await?);
            Ok((seqs.len() >= 8).then_some(seqs))
        },
    )
    .await?;
    agent.stop().await;
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "heartbeats lost or duplicated"
    );
    let e = events(&js).await?;
    let ids: std::collections::BTreeSet<_> = e.iter().map(|(_, e)| e.event_id.clone()).collect();
    assert_eq!(ids.len(), e.len(), "an event was stored twice");
    Ok(())
}
