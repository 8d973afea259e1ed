//! `loadtest pipeline`: the whole event path on real servers, next to its raw ceilings.
//!
//! One seed nats-server and one leaf nats-server per simulated cluster (nats-config/ files),
//! FLEET_EVENTS sourcing every leaf's EVENTS through the leafnode links, ingestion (the real
//! projector, in process) writing into a throwaway Postgres. Simulated agents publish
//! heartbeats into their leaf; an event counts as delivered once ingestion has committed it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, context::PublishAckFuture};
use canopy_kit::proto::event::v1::{Envelope, Heartbeat, envelope::Body};
use canopy_kit::{envelope, streams, subject::ClusterId};
use clap::Parser as _;
use serde_json::json;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::Output;
use crate::ceilings::{self, Measured};
use crate::stats::{percentile, rate};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated clusters, each with its own leaf nats-server and agent.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub clusters: u32,
    /// Events in all, spread evenly over the clusters.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Most events ingestion applies in one transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Publishes each simulated agent keeps in flight.
    #[arg(long, default_value_t = 1024)]
    pub window: usize,
    /// Lag samples read back from FLEET_EVENTS.
    #[arg(long, default_value_t = 2000)]
    pub lag_samples: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// A progress report of ingestion: every event up to `seq` was visible in Postgres at `at`.
#[derive(Clone, Copy, Debug)]
struct Visible {
    seq: u64,
    at: SystemTime,
}

fn cluster_name(i: u32) -> String {
    format!("sim-{i:02}")
}

fn heartbeat(cluster: &ClusterId, instance: &str, sequence: u64) -> Envelope {
    envelope::new(
        cluster,
        "loadtest",
        Body::Heartbeat(Heartbeat {
            agent_instance_id: instance.to_owned(),
            sequence,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            kubernetes_version: "v1.34.1".to_owned(),
            node_count: 3,
            pod_count: (sequence % 200) as u32,
            heartbeat_interval_seconds: 10,
        }),
    )
}

/// Publishes `count` heartbeats of one simulated agent, `window` in flight.
async fn publish_heartbeats(
    js: jetstream::Context,
    cluster: ClusterId,
    count: u64,
    window: usize,
    published: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let instance = format!("loadtest-{cluster}");
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    for sequence in 1..=count {
        if in_flight.len() >= window.max(1)
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await
                .context("a heartbeat was not acknowledged by the leaf")?;
            published.fetch_add(1, Ordering::Relaxed);
        }
        let env = heartbeat(&cluster, &instance, sequence);
        in_flight.push_back(canopy_kit::publish::send(&js, &env).await?);
    }
    for ack in in_flight {
        ack.await
            .context("a heartbeat was not acknowledged by the leaf")?;
        published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn share(events: u64, clusters: u32, i: u32) -> u64 {
    let n = u64::from(clusters);
    events / n + u64::from(u64::from(i) < events % n)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.events < u64::from(args.clusters) {
        bail!(
            "--events ({}) must be at least --clusters ({})",
            args.events,
            args.clusters
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("canopy-loadtest-")
        .tempdir()?;
    let dir = tmp.path();
    eprintln!(
        "starting Postgres, a seed and {} leaf nats-servers in {}",
        args.clusters,
        dir.display()
    );
    let postgres = canopy_testkit::Postgres::start().await?;
    let db_url = postgres.create_database("canopy").await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await?;
    let leaf_port = canopy_testkit::try_free_port()?;
    let seed = canopy_e2e::start_seed_nats(dir, leaf_port).await?;
    let mut leaves = Vec::new();
    for i in 0..args.clusters {
        let name = cluster_name(i);
        let nats = canopy_e2e::start_leaf_nats(dir, &name, leaf_port).await?;
        let js = jetstream::new(nats.connect().await?);
        leaves.push((ClusterId::parse(&name)?, nats, js));
    }

    // Raw ceilings first, on the very servers the pipeline uses.
    let sample = envelope::encode(&heartbeat(&leaves[0].0, "loadtest-sample", 1));
    eprintln!(
        "measuring the raw JetStream publish ceiling ({} events, {} B each)",
        args.events,
        sample.len()
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (_, _, js)) in leaves.iter().enumerate() {
        let (js, payload, count, window) = (
            js.clone(),
            sample.clone(),
            share(args.events, args.clusters, i as u32),
            args.window,
        );
        tasks.push(tokio::spawn(async move {
            ceilings::publish_to_plain_stream(&js, "LOADTEST_CEILING", payload, count, window).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let publish_ceiling = Measured {
        count: args.events,
        secs: started.elapsed().as_secs_f64(),
    };
    let insert_rows = args.events.min(500_000);
    eprintln!(
        "measuring the raw Postgres insert ceiling ({insert_rows} rows, batches of {})",
        args.batch
    );
    let insert_ceiling = ceilings::postgres_unnest_insert(&pool, insert_rows, args.batch).await?;

    // The pipeline.
    for (cluster, _, js) in &leaves {
        streams::ensure(js, &streams::leaf_events(cluster, 4 << 30)).await?;
    }
    let seed_js = jetstream::new(seed.connect().await?);
    for stream in streams::seed_streams() {
        streams::ensure(&seed_js, &stream).await?;
    }
    let ids: Vec<ClusterId> = leaves.iter().map(|(c, _, _)| c.clone()).collect();
    canopy_gateway_leafnode::reconcile_sources(&seed_js, &ids, &[]).await?;

    let cfg = canopy_ingestion::config::Config::try_parse_from([
        "canopy-ingestion",
        "--database-url",
        &db_url,
        "--nats-url",
        &seed.client_url(),
        "--batch",
        &args.batch.to_string(),
    ])?;
    let app = canopy_ingestion::App::build(cfg).await?;
    let mut progress = app.progress();
    let stop = CancellationToken::new();
    let ingestion = tokio::spawn(app.run(stop.clone()));
    let target = args.events;
    let recorder = tokio::spawn(async move {
        let mut seen = Vec::new();
        while progress.changed().await.is_ok() {
            let seq = *progress.borrow_and_update();
            seen.push(Visible {
                seq,
                at: SystemTime::now(),
            });
            if seq >= target {
                break;
            }
        }
        seen
    });

    eprintln!(
        "pipeline: {} simulated agents publish {} heartbeats",
        args.clusters, args.events
    );
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut publishers = Vec::new();
    for (i, (cluster, _, js)) in leaves.iter().enumerate() {
        let count = share(args.events, args.clusters, i as u32);
        publishers.push(tokio::spawn(publish_heartbeats(
            js.clone(),
            cluster.clone(),
            count,
            args.window,
            published.clone(),
        )));
    }
    let publishing = async {
        for p in publishers {
            p.await??;
        }
        anyhow::Ok(started.elapsed().as_secs_f64())
    };
    let mut recorder = recorder;
    let mut publish_secs = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut publishing = std::pin::pin!(publishing);
    let mut last_applied = (0u64, Instant::now());
    let visible = loop {
        tokio::select! {
            secs = &mut publishing, if publish_secs.is_none() => publish_secs = Some(secs?),
            seen = &mut recorder => break seen?,
            _ = ticker.tick() => {
                let applied = checkpoint(&pool).await.unwrap_or(0);
                eprintln!("  published {:>9}  projected {applied:>9} / {target}", published.load(Ordering::Relaxed));
                if applied > last_applied.0 {
                    last_applied = (applied, Instant::now());
                } else if last_applied.1.elapsed() > Duration::from_secs(60) {
                    bail!("ingestion made no progress for 60s (at {applied} of {target})");
                }
            }
        }
    };
    let e2e_secs = started.elapsed().as_secs_f64();
    let publish_secs = match publish_secs {
        Some(s) => s,
        None => publishing.await?,
    };
    stop.cancel();
    ingestion.await??;

    // Lag: read sampled events back, compare when they were published and when visible.
    let mut fleet = seed_js.get_stream(streams::FLEET_EVENTS).await?;
    let stored = fleet.info().await?.state.messages;
    let step = (target / args.lag_samples.max(1)).max(1);
    let mut lags = Vec::new();
    let mut seq = 1;
    while seq <= target {
        let msg = fleet
            .get_raw_message(seq)
            .await
            .with_context(|| format!("failed to read FLEET_EVENTS {seq}"))?;
        let env = envelope::decode(&msg.subject, &msg.payload)?;
        let occurred = env.occurred_at.context("an event without occurred_at")?;
        let occurred =
            SystemTime::UNIX_EPOCH + Duration::new(occurred.seconds as u64, occurred.nanos as u32);
        let idx = visible.partition_point(|v| v.seq < seq);
        if let Some(v) = visible.get(idx) {
            lags.push(
                v.at.duration_since(occurred)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0,
            );
        }
        seq += step;
    }
    lags.sort_by(f64::total_cmp);

    // Nothing lost: every agent's heartbeats all counted, in order.
    let row = sqlx::query(
        "SELECT COALESCE(SUM(heartbeats_received), 0)::BIGINT, \
         COUNT(*) FILTER (WHERE heartbeats_received <> last_heartbeat_seq) FROM agents",
    )
    .fetch_one(&pool)
    .await?;
    let received: i64 = row.get(0);
    let gaps: i64 = row.get(1);
    let lost = target.saturating_sub(received as u64);

    let e2e = rate(target, e2e_secs);
    let report = json!({
        "mode": "pipeline",
        "clusters": args.clusters,
        "events": target,
        "event_bytes": sample.len(),
        "ingestion_batch": args.batch,
        "publish_window": args.window,
        "e2e_seconds": e2e_secs,
        "e2e_events_per_s": e2e,
        "pipeline_publish_events_per_s": rate(target, publish_secs),
        "publish_ceiling_per_s": publish_ceiling.per_s(),
        "insert_ceiling_rows_per_s": insert_ceiling.per_s(),
        "ratio_e2e_to_publish": e2e / publish_ceiling.per_s(),
        "ratio_e2e_to_insert": e2e / insert_ceiling.per_s(),
        "lag_p50_ms": percentile(&lags, 50.0),
        "lag_p99_ms": percentile(&lags, 99.0),
        "lag_max_ms": lags.last(),
        "lag_samples": lags.len(),
        "fleet_events_stored": stored,
        "events_lost": lost,
        "agents_with_gaps": gaps,
    });
    match args.output {
        Output::Json => println!("{report}"),
        Output::Text => print_text(&report),
    }
    drop(leaves);
    drop(seed);
    drop(postgres);
    if lost > 0 || gaps > 0 {
        bail!("{lost} events lost, {gaps} agents with gaps");
    }
    Ok(())
}

async fn checkpoint(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let row = sqlx::query("SELECT COALESCE(MAX(last_sequence), 0) FROM projection_checkpoints WHERE stream = 'FLEET_EVENTS'")
        .fetch_one(pool)
        .await?;
    Ok(row.get::<i64, _>(0).try_into()?)
}

fn print_text(r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!();
    println!(
        "pipeline: {} clusters, {} heartbeat events of {} B, ingestion batches of {}",
        r["clusters"], r["events"], r["event_bytes"], r["ingestion_batch"]
    );
    println!(
        "  raw JetStream publish ceiling   {:>10.0} events/s",
        f("publish_ceiling_per_s")
    );
    println!(
        "  raw Postgres insert ceiling     {:>10.0} rows/s",
        f("insert_ceiling_rows_per_s")
    );
    println!(
        "  end to end (leaf -> Postgres)   {:>10.0} events/s   {:.0}% of the publish ceiling, {:.0}% of the insert ceiling",
        f("e2e_events_per_s"),
        f("ratio_e2e_to_publish") * 100.0,
        f("ratio_e2e_to_insert") * 100.0
    );
    println!(
        "  publishing during the pipeline  {:>10.0} events/s",
        f("pipeline_publish_events_per_s")
    );
    println!(
        "  projection lag                  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        f("lag_p50_ms"),
        f("lag_p99_ms"),
        f("lag_max_ms"),
        r["lag_samples"]
    );
    println!("  events lost                     {}", r["events_lost"]);
}
