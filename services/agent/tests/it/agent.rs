//! Start event, heartbeats, and inventory snapshots that match the cluster and respect the chunk
//! bound.

use std::collections::BTreeMap;

use async_nats::jetstream;
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_testkit::{FakeKube, Fixture, NatsProcess, eventually};

use crate::support::{
    Agent, WAIT, counter, events, first_complete, heartbeats, http_get, sequences,
};

#[tokio::test]
async fn reports_start_heartbeats_and_the_fixture_inventory() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("prod-eu")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let agent = Agent::start(&nats, &kube.url(), &[]).await;
    let js = jetstream::new(nats.connect().await?);
    let events = eventually(WAIT, "a snapshot and three heartbeats", || async {
        let ev = events(&js).await?;
        Ok((first_complete(&ev).is_some() && sequences(&ev).len() >= 3).then_some(ev))
    })
    .await?;
    let (ready, _) = http_get(agent.http, "/readyz").await?;
    assert_eq!(ready, 200);
    // Counters are process-wide (tests share the recorder), so only lower bounds hold.
    canopy_testkit::assert_eventually!(WAIT, async {
        let (_, metrics) = http_get(agent.http, "/metrics").await?;
        anyhow::Ok(
            counter(&metrics, "canopy_agent_heartbeats_published_total") >= 3.0
                && counter(&metrics, "canopy_agent_inventory_chunks_total") >= 1.0
                && counter(&metrics, "canopy_agent_inventory_objects_total") >= 1.0,
        )
    });
    agent.stop().await;

    let (_, first) = &events[0];
    let Some(Body::AgentStarted(started)) = &first.body else {
        panic!("the first event is not AgentStarted: {:?}", first.body)
    };
    assert_eq!(started.kubernetes_version, "v1.34.1");
    assert_eq!(started.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(started.heartbeat_interval_seconds, 1);
    assert_eq!(
        (first.cluster_id.as_str(), first.producer.as_str()),
        ("prod-eu", "agent")
    );
    let seqs = sequences(&events);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let hb = &heartbeats(&events)[0];
    assert_eq!(hb.agent_instance_id, started.agent_instance_id);
    assert_eq!(hb.kubernetes_version, "v1.34.1");
    assert_eq!(hb.node_count as usize, fixture.count_by_kind()["Node"]);
    assert_eq!(hb.pod_count as usize, fixture.count_by_kind()["Pod"]);

    let snapshot = first_complete(&events).unwrap();
    assert_eq!(snapshot.counts, fixture.count_by_kind());
    assert_eq!(snapshot.total as usize, fixture.len());
    // Secrets carry their type and keys, never their values.
    let mut secrets = 0;
    for (_, e) in &events {
        let Some(Body::InventorySnapshot(s)) = &e.body else {
            continue;
        };
        for o in s.objects.iter().filter(|o| o.kind == "Secret") {
            secrets += 1;
            assert!(o.attributes.contains_key("keys") && o.attributes.contains_key("type"));
            let secret = fixture
                .of_kind("Secret")
                .find(|f| f["metadata"]["name"] == o.name.as_str())
                .unwrap();
            let data = secret["data"].as_object().into_iter().flatten();
            let string_data = secret["stringData"].as_object().into_iter().flatten();
            for (_, value) in data.chain(string_data) {
                let value = value.as_str().unwrap();
                assert!(
                    !format!("{o:?}").contains(value),
                    "secret value of {} leaked",
                    o.name
                );
            }
        }
    }
    assert!(secrets > 0, "the fixture's secrets were not inventoried");
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
        &kube.url(),
        &["--page-size", "500", "--max-chunk-bytes", "65536"],
    )
    .await;
    let js = jetstream::new(nats.connect().await?);
    let snapshot = eventually(WAIT, "the snapshot of 20,000 objects", || async {
        Ok(first_complete(&events(&js).await?))
    })
    .await?;
    agent.stop().await;
    let inventoried: BTreeMap<String, usize> = expected
        .into_iter()
        .filter(|(k, _)| canopy_agent::inventoried_kinds().contains(&k.as_str()))
        .collect();
    assert_eq!(snapshot.counts, inventoried);
    assert_eq!(snapshot.total as usize, inventoried.values().sum::<usize>());
    assert!(snapshot.total >= 10_000, "only {} objects", snapshot.total);
    let sizes = &snapshot.chunk_sizes;
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
