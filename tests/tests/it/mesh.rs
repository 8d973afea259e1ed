//! The whole mesh on the nats-config topology (seed + 2 leaves): both clusters reach the api with
//! their fixtures' inventory; a seed outage loses no heartbeat; ingestion killed mid-stream ends
//! with read models identical to a replay of the log into an empty database.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_e2e::{LeafSpec, Stack, StackOptions, fleet_client, list_clusters};
use canopy_kit::streams;
use canopy_proto::api::v1::Cluster;
use canopy_proto::event::v1::envelope::Body;
use canopy_testkit::{Fixture, eventually};
use futures::StreamExt as _;
use sqlx::Row as _;

const CLUSTERS: [&str; 2] = ["prod-eu", "staging-us"];
const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` until it succeeds (an error means "not yet") for at most [`WAIT`].
async fn until<F, Fut, T>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    eventually(WAIT, what, || {
        let fut = f();
        async move { fut.await.map(Some) }
    })
    .await
}

fn fixture_counts(f: &Fixture) -> BTreeMap<String, u64> {
    f.count_by_kind()
        .into_iter()
        .map(|(k, v)| (k, v as u64))
        .collect()
}

async fn clusters_by_id(stack: &Stack) -> anyhow::Result<BTreeMap<String, Cluster>> {
    let mut client = fleet_client(&stack.api_url()).await?;
    let mut out = BTreeMap::new();
    // The list carries the summary; GetCluster adds the inventory by kind.
    for c in list_clusters(&mut client).await? {
        let full = client
            .get_cluster(canopy_proto::api::v1::GetClusterRequest {
                cluster_id: c.id.clone(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            full.inventory_objects == c.inventory_objects,
            "list and get disagree on {}",
            c.id
        );
        out.insert(c.id.clone(), full);
    }
    Ok(out)
}

/// The heartbeat sequence numbers of `cluster` in FLEET_EVENTS, in stream order.
async fn heartbeat_sequences(js: &jetstream::Context, cluster: &str) -> anyhow::Result<Vec<u64>> {
    let stream = js.get_stream(streams::FLEET_EVENTS).await?;
    let last = stream.cached_info().state.last_sequence;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("canopy.evt.{cluster}.agent.heartbeat"),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seqs = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(msg)) = next else { break };
        let msg = msg?;
        let env = canopy_kit::envelope::decode(&msg.subject, &msg.payload)?;
        if let Some(Body::Heartbeat(hb)) = env.body {
            seqs.push(hb.sequence);
        }
        if msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence
            >= last
        {
            break;
        }
    }
    Ok(seqs)
}

async fn fleet_last_sequence(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(streams::FLEET_EVENTS)
        .await?
        .info()
        .await?
        .state
        .last_sequence)
}

async fn checkpoint(pool: &sqlx::PgPool, consumer: &str) -> anyhow::Result<u64> {
    let row = sqlx::query("SELECT last_sequence FROM projection_checkpoints WHERE stream = 'FLEET_EVENTS' AND consumer = $1")
        .bind(consumer)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get::<i64, _>(0)).unwrap_or(0).try_into()?)
}

/// Every read-model row as JSON, per table, in primary-key order.
async fn read_models(pool: &sqlx::PgPool) -> anyhow::Result<BTreeMap<&'static str, Vec<String>>> {
    let tables: [(&'static str, &'static str); 4] = [
        (
            "clusters",
            "SELECT row_to_json(t)::text FROM clusters t ORDER BY id",
        ),
        (
            "agents",
            "SELECT row_to_json(t)::text FROM agents t ORDER BY cluster_id",
        ),
        (
            "inventory",
            "SELECT row_to_json(t)::text FROM inventory t ORDER BY cluster_id, kind, namespace, name",
        ),
        (
            "inventory_snapshots",
            "SELECT row_to_json(t)::text FROM inventory_snapshots t ORDER BY cluster_id",
        ),
    ];
    let mut out = BTreeMap::new();
    for (table, sql) in tables {
        let rows = sqlx::query(sql).fetch_all(pool).await?;
        out.insert(table, rows.iter().map(|r| r.get::<String, _>(0)).collect());
    }
    Ok(out)
}

fn assert_gap_free(cluster: &str, seqs: &[u64]) {
    assert!(!seqs.is_empty(), "{cluster}: no heartbeats in FLEET_EVENTS");
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        expected.as_slice(),
        "{cluster}: heartbeat sequence numbers are not 1..=n in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mesh_end_to_end_survives_seed_outage_and_ingestion_crash() -> anyhow::Result<()> {
    let leaves = CLUSTERS
        .iter()
        .map(|c| Ok(LeafSpec::new(c, Fixture::load(c)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut opts = StackOptions::new(leaves);
    opts.heartbeat_interval = Duration::from_millis(300);
    let mut stack = Stack::start(opts).await?;

    // 1. Both clusters appear with the inventory of their fixture.
    let expected: BTreeMap<String, BTreeMap<String, u64>> = stack
        .leaves
        .iter()
        .map(|l| (l.cluster.clone(), fixture_counts(&l.fixture)))
        .collect();
    let clusters = until("both clusters with their fixture inventory", || async {
        let clusters = clusters_by_id(&stack).await?;
        for (id, counts) in &expected {
            let c = clusters
                .get(id)
                .with_context(|| format!("{id} not listed yet"))?;
            anyhow::ensure!(
                &c.inventory_by_kind
                    .clone()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    == counts,
                "{id}: inventory {:?} != fixture {counts:?}",
                c.inventory_by_kind
            );
            anyhow::ensure!(
                c.heartbeats_received >= 2,
                "{id}: {} heartbeats so far",
                c.heartbeats_received
            );
        }
        Ok(clusters)
    })
    .await?;
    for (id, counts) in &expected {
        let c = &clusters[id];
        assert_eq!(
            u64::from(c.node_count),
            counts.get("Node").copied().unwrap_or(0),
            "{id} nodes"
        );
        assert_eq!(
            u64::from(c.pod_count),
            counts.get("Pod").copied().unwrap_or(0),
            "{id} pods"
        );
        assert!(c.last_heartbeat_at.is_some(), "{id} has no heartbeat time");
        assert!(
            !c.kubernetes_version.is_empty(),
            "{id} has no Kubernetes version"
        );
    }

    // canopyctl shows them too.
    let out = tokio::process::Command::new(canopy_e2e::binary("canopyctl")?)
        .args([
            "--api",
            &stack.api_url(),
            "--output",
            "json",
            "clusters",
            "list",
        ])
        .output()
        .await?;
    assert!(
        out.status.success(),
        "canopyctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    for id in CLUSTERS {
        assert!(
            stdout.contains(id),
            "canopyctl clusters list lacks {id}: {stdout}"
        );
    }

    // 2. The seed's nats-server goes away while the agents keep publishing into their leaves.
    let before: BTreeMap<String, u64> = clusters
        .iter()
        .map(|(id, c)| (id.clone(), c.last_heartbeat_seq))
        .collect();
    stack.seed.stop().await?;
    for leaf in &stack.leaves {
        let js = jetstream::new(leaf.nats.connect().await?);
        let subject = format!("canopy.evt.{}.agent.heartbeat", leaf.cluster);
        let start = js
            .get_stream(streams::EVENTS)
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        // Four more heartbeats stored in the leaf while the seed is down.
        until(
            "4 heartbeats stored in the leaf during the seed outage",
            || {
                let js = js.clone();
                let subject = subject.clone();
                async move {
                    let mut stream = js.get_stream(streams::EVENTS).await?;
                    let last = stream.info().await?.state.last_sequence;
                    anyhow::ensure!(
                        last >= start + 4,
                        "{subject}: leaf EVENTS at {last}, waiting for {}",
                        start + 4
                    );
                    Ok(())
                }
            },
        )
        .await?;
    }
    stack.seed.start().await?;
    let seed_js = jetstream::new(stack.seed.connect().await?);
    until(
        "every heartbeat projected after the seed restart",
        || async {
            let clusters = clusters_by_id(&stack).await?;
            for (id, prev) in &before {
                let c = clusters.get(id).context("cluster vanished")?;
                anyhow::ensure!(
                    c.last_heartbeat_seq >= prev + 6,
                    "{id}: heartbeat {} (was {prev})",
                    c.last_heartbeat_seq
                );
                anyhow::ensure!(
                    c.heartbeats_received == c.last_heartbeat_seq,
                    "{id}: received {} of {} heartbeats",
                    c.heartbeats_received,
                    c.last_heartbeat_seq
                );
                anyhow::ensure!(
                    c.heartbeats_missed == 0,
                    "{id}: {} heartbeats missed",
                    c.heartbeats_missed
                );
            }
            Ok(())
        },
    )
    .await?;
    for id in CLUSTERS {
        assert_gap_free(id, &heartbeat_sequences(&seed_js, id).await?);
    }

    // 3. Ingestion is killed mid-stream (fresh inventories flowing) and restarted.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&stack.database_url)
        .await?;
    let mark = fleet_last_sequence(&seed_js).await?;
    for leaf in &mut stack.leaves {
        // A restarted agent publishes AgentStarted and a full inventory snapshot again.
        leaf.agent.stop().await?;
        leaf.agent.start().await?;
    }
    until("ingestion to pass the mark", || async {
        let applied = checkpoint(&pool, "ingestion").await?;
        anyhow::ensure!(
            applied > mark,
            "ingestion at {applied}, waiting for it to pass {mark}"
        );
        Ok(())
    })
    .await?;
    stack.ingestion.kill().await?;
    let killed_at = checkpoint(&pool, "ingestion").await?;
    until("events published after the kill", || async {
        let last = fleet_last_sequence(&seed_js).await?;
        anyhow::ensure!(
            last >= killed_at + 10,
            "FLEET_EVENTS at {last}, waiting for {}",
            killed_at + 10
        );
        Ok(())
    })
    .await?;
    stack.ingestion.start().await?;
    for leaf in &mut stack.leaves {
        leaf.agent.stop().await?;
    }
    // The log is quiet now: wait for ingestion to apply all of it.
    let last = until("ingestion to apply the whole log", || async {
        let last = fleet_last_sequence(&seed_js).await?;
        let applied = checkpoint(&pool, "ingestion").await?;
        anyhow::ensure!(applied == last, "ingestion at {applied} of {last}");
        Ok(last)
    })
    .await?;
    assert!(last > killed_at, "nothing was published after the kill");
    let live = read_models(&pool).await?;

    // Replay the whole log into an empty database with another consumer.
    let replay_url = stack.postgres.create_database("replay").await?;
    let out = tokio::process::Command::new(canopy_e2e::binary("canopy-ingestion")?)
        .args([
            "rebuild",
            "--consumer",
            "replay",
            "--database-url",
            &replay_url,
        ])
        .args([
            "--nats-url",
            &stack.seed.client_url(),
            "--log-format",
            "text",
        ])
        .output()
        .await?;
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&replay_url)
        .await?;
    let replayed = read_models(&replay_pool).await?;
    for (table, rows) in &live {
        assert!(!rows.is_empty(), "{table} is empty");
        assert_eq!(
            rows, &replayed[table],
            "{table} differs from a replay of the log"
        );
    }
    assert_eq!(checkpoint(&replay_pool, "replay").await?, last);

    stack.shutdown().await
}
