//! Outages and refusals: a leaf nats-server restart, a Kubernetes API outage, a kind RBAC does
//! not grant, a flaky page, and a stop in the middle of a snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream;
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_testkit::{FakeKube, FakeKubeOptions, Fixture, NatsProcess, eventually};
use serde_json::json;

use crate::faulty_kube::{FaultyKube, Rule};
use crate::support::{
    Agent, WAIT, counter, events, first_complete, heartbeats, http_get, sequences, snapshots,
};

#[tokio::test]
async fn heartbeats_stay_gap_free_across_a_leaf_outage() -> anyhow::Result<()> {
    let mut nats = NatsProcess::standalone_in_temp().await?;
    let kube = FakeKube::start(Fixture::load("dev-ap")?).await?;
    let agent = Agent::start(&nats, &kube.url(), &[]).await;
    let js = jetstream::new(nats.connect().await?);
    eventually(WAIT, "two heartbeats", || async {
        Ok((sequences(&events(&js).await?).len() >= 2).then_some(()))
    })
    .await?;
    nats.stop().await?;
    // While the server is down the agent keeps producing heartbeats; kube requests show time
    // passing (each heartbeat reads the version and counts nodes and pods).
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
            let seqs = sequences(&events(&js).await?);
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
    let ids: BTreeSet<_> = e.iter().map(|(_, e)| e.event_id.clone()).collect();
    assert_eq!(ids.len(), e.len(), "an event was stored twice");
    Ok(())
}

#[tokio::test]
async fn a_kubernetes_outage_keeps_heartbeats_going_and_the_next_snapshot_is_complete()
-> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("dev-ap")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let addr = kube.addr();
    let agent = Agent::start(&nats, &kube.url(), &["--inventory-interval", "1s"]).await;
    let js = jetstream::new(nats.connect().await?);
    let first = eventually(WAIT, "a first snapshot and two heartbeats", || async {
        let ev = events(&js).await?;
        Ok(first_complete(&ev).filter(|_| sequences(&ev).len() >= 2))
    })
    .await?;

    drop(kube);
    let during = sequences(&events(&js).await?).len();
    let ev = eventually(WAIT, "five heartbeats while the API is down", || async {
        let ev = events(&js).await?;
        Ok((sequences(&ev).len() >= during + 5).then_some(ev))
    })
    .await?;
    // Heartbeats while the API is down carry the last counts it gave.
    let last = heartbeats(&ev).pop().unwrap();
    assert_eq!(last.node_count as usize, fixture.count_by_kind()["Node"]);
    let (_, metrics) = http_get(agent.http, "/metrics").await?;
    assert!(
        counter(
            &metrics,
            "canopy_agent_kubernetes_errors_total{kind=\"heartbeat\"}"
        ) >= 1.0
    );

    // The API comes back on the same address with one more namespace.
    let changed = fixture.with_object(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "added-during-outage", "uid": "ns-added"}}));
    let options = FakeKubeOptions {
        addr: Some(addr),
        ..FakeKubeOptions::default()
    };
    let _kube = eventually(WAIT, "the API server back on its port", || async {
        Ok(FakeKube::start_with(changed.clone(), options.clone())
            .await
            .ok())
    })
    .await?;
    let expected = changed.count_by_kind();
    let snapshot = eventually(
        WAIT,
        "a complete snapshot of the changed cluster",
        || async {
            let ev = events(&js).await?;
            Ok(snapshots(&ev)
                .into_iter()
                .find(|s| s.complete && s.id != first.id && s.counts == expected))
        },
    )
    .await?;
    agent.stop().await;
    assert_eq!(snapshot.total as usize, changed.len());
    let seqs = sequences(&events(&js).await?);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_forbidden_kind_is_left_out_and_a_failing_page_is_tried_again() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("prod-eu")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    // RBAC without secrets (as k8s/base/agent/rbac.yaml), and one 500 on the first configmaps
    // page (of the inventory or the audit, whichever lists first: both retry the page; the
    // audit's watches list with limit=1 and are left alone).
    let failed_once = Arc::new(AtomicBool::new(false));
    let rule: Rule = Arc::new(move |path, query| match path {
        "/api/v1/secrets" => Some(403),
        "/api/v1/configmaps"
            if query.contains("limit=500")
                && !query.contains("watch")
                && !failed_once.swap(true, Ordering::SeqCst) =>
        {
            Some(500)
        }
        _ => None,
    });
    let proxy = FaultyKube::start(kube.addr(), rule).await?;
    let agent = Agent::start(&nats, &proxy.url(), &[]).await;
    let js = jetstream::new(nats.connect().await?);
    let ev = eventually(WAIT, "a complete snapshot", || async {
        let ev = events(&js).await?;
        Ok(first_complete(&ev).map(|_| ev))
    })
    .await?;
    let (_, metrics) = http_get(agent.http, "/metrics").await?;
    agent.stop().await;

    let all = snapshots(&ev);
    let snapshot = &all[0];
    assert!(
        snapshot.complete,
        "the first snapshot was abandoned: {all:?}"
    );
    let mut expected = fixture.count_by_kind();
    expected.remove("Secret");
    assert_eq!(snapshot.counts, expected);
    assert_eq!(snapshot.total as usize, expected.values().sum::<usize>());
    assert!(
        counter(
            &metrics,
            "canopy_agent_kubernetes_errors_total{kind=\"Secret\"}"
        ) >= 1.0
    );
    assert!(
        counter(
            &metrics,
            "canopy_agent_kubernetes_errors_total{kind=\"ConfigMap\"}"
        ) >= 1.0
    );
    // The agent went on with heartbeats.
    assert!(
        ev.iter()
            .any(|(_, e)| matches!(e.body, Some(Body::Heartbeat(_))))
    );
    Ok(())
}

#[tokio::test]
async fn a_stop_during_a_snapshot_ends_it_promptly_without_marking_it_complete()
-> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let kube = FakeKube::start(Fixture::generated(20_000, 11)).await?;
    // Small pages and chunks: the snapshot takes hundreds of list calls.
    let agent = Agent::start(
        &nats,
        &kube.url(),
        &["--page-size", "50", "--max-chunk-bytes", "8192"],
    )
    .await;
    let js = jetstream::new(nats.connect().await?);
    eventually(WAIT, "the first chunk", || async {
        Ok((!snapshots(&events(&js).await?).is_empty()).then_some(()))
    })
    .await?;
    let took = agent.stop().await;
    assert!(took.as_secs() < 5, "the stop took {took:?}");
    let ev = events(&js).await?;
    let all = snapshots(&ev);
    assert_eq!(all.len(), 1);
    assert!(
        !all[0].complete,
        "the snapshot finished before the stop; the test needs a bigger fixture"
    );
    Ok(())
}
