//! Wiring: Postgres, NATS, the FLEET_EVENTS consumer and the health server; graceful drain.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use canopy_kit::consumer::{self, ConsumerSpec};
use canopy_kit::envelope::Plane;
use canopy_kit::health::HealthServer;
use canopy_kit::streams;

use crate::adapters::{postgres, projector::Projector};
use crate::config::Config;

/// A stream ingestion projects, and the plane its events are on.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub stream: &'static str,
    pub plane: Plane,
    /// Appended to `--consumer` for the durable consumer's name ("" for FLEET_EVENTS).
    pub consumer_suffix: &'static str,
}

/// Every stream projected into the read models, each by its own durable consumer with its own
/// checkpoint. Events of different streams may be applied in any order relative to each other:
/// projections that several streams feed must not depend on that order.
pub const SOURCES: &[Source] = &[
    Source {
        stream: streams::FLEET_EVENTS,
        plane: Plane::Evt,
        consumer_suffix: "",
    },
    Source {
        stream: streams::CONTROL,
        plane: Plane::Ctl,
        consumer_suffix: "-control",
    },
    Source {
        stream: streams::AUDIT_TRAIL,
        plane: Plane::Audit,
        consumer_suffix: "-trail",
    },
];

/// A connected, bound, not yet running ingestion.
pub struct App {
    cfg: Config,
    pool: PgPool,
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
    /// The last applied sequence per source, in [`SOURCES`] order.
    progress: Vec<watch::Sender<u64>>,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let url = cfg
            .database_url
            .clone()
            .context("--database-url (CANOPY_INGESTION_DATABASE_URL) is required")?;
        if cfg.batch == 0 {
            anyhow::bail!("--batch must be at least 1");
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.db_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .context("failed to connect to Postgres")?;
        crate::migrate(&pool).await?;
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-ingestion").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        for stream in [
            streams::fleet_events(),
            streams::control(),
            streams::audit_trail(),
            streams::dead_letter(),
        ] {
            streams::ensure(&js, &stream).await?;
        }
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            pool,
            client,
            js,
            health,
            progress: SOURCES.iter().map(|_| watch::channel(0).0).collect(),
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// The last applied FLEET_EVENTS sequence, updated after every committed batch.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress_of(streams::FLEET_EVENTS)
    }

    /// The last applied sequence of `stream` (one of [`SOURCES`]); stays 0 for other streams.
    pub fn progress_of(&self, stream: &str) -> watch::Receiver<u64> {
        SOURCES
            .iter()
            .position(|s| s.stream == stream)
            .and_then(|i| self.progress.get(i))
            .map_or_else(|| watch::channel(0).1, watch::Sender::subscribe)
    }

    fn consumer_name(&self, source: &Source) -> String {
        format!("{}{}", self.cfg.consumer, source.consumer_suffix)
    }

    fn spec(&self, source: &Source) -> ConsumerSpec {
        ConsumerSpec {
            batch: self.cfg.batch,
            max_ack_pending: i64::try_from(self.cfg.batch.saturating_mul(4)).unwrap_or(i64::MAX),
            ..ConsumerSpec::new(source.stream, &self.consumer_name(source))
        }
    }

    /// Projects every source until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut specs: Vec<ConsumerSpec> = SOURCES.iter().map(|s| self.spec(s)).collect();
        // Delivery restarts right after what Postgres says is applied, in order.
        for spec in &mut specs {
            spec.resume_after =
                Some(postgres::read_checkpoint(&self.pool, &spec.stream, &spec.durable).await?);
        }
        let readiness = self.health.readiness();
        let health_stop = CancellationToken::new();
        let health = tokio::spawn(self.health.serve(health_stop.clone()));
        readiness.set_ready(true);
        // One projection ending (failure) stops the others: the service is never half-running.
        let stop = shutdown.child_token();
        let consumers =
            SOURCES
                .iter()
                .zip(&self.progress)
                .zip(specs)
                .map(|((source, progress), spec)| {
                    let mut projector = Projector {
                        pool: self.pool.clone(),
                        js: self.js.clone(),
                        stream: source.stream.to_owned(),
                        plane: source.plane,
                        consumer: spec.durable.clone(),
                        progress: progress.clone(),
                    };
                    let js = self.js.clone();
                    let stop = stop.clone();
                    async move {
                        let r = consumer::run(&js, &spec, &mut projector, &stop).await;
                        stop.cancel();
                        r
                    }
                });
        let results = futures::future::join_all(consumers).await;
        let result = results
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
            .map(|_| ());
        readiness.set_ready(false);
        drain(self.client, self.pool).await;
        health_stop.cancel();
        let _ = health.await;
        result
    }
}

async fn drain(client: async_nats::Client, pool: PgPool) {
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = client.drain().await;
        pool.close().await;
    })
    .await;
}

/// Builds and runs ingestion until `shutdown`.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

/// Empties the read models, deletes the durable consumers and replays every source up to its
/// last sequence at the start, printing progress; returns the events replayed.
pub async fn rebuild(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<u64> {
    let app = App::build(cfg).await?;
    let mut targets = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        let mut stream = app
            .js
            .get_stream(source.stream)
            .await
            .with_context(|| format!("failed to open {}", source.stream))?;
        let target = stream
            .info()
            .await
            .with_context(|| format!("failed to read {}", source.stream))?
            .state
            .last_sequence;
        let consumer = app.consumer_name(source);
        match stream.delete_consumer(&consumer).await {
            Ok(_) => info!(%consumer, "deleted the durable consumer"),
            Err(e) => info!(%consumer, error = %e, "no durable consumer to delete"),
        }
        targets.push(target);
    }
    postgres::truncate_all(&app.pool).await?;
    let total: u64 = targets.iter().sum();
    for (source, target) in SOURCES.iter().zip(&targets) {
        eprintln!(
            "rebuilding the read models from {} sequences 1..={target}",
            source.stream
        );
    }
    if total == 0 {
        return Ok(0);
    }
    let started = Instant::now();
    let done = shutdown.child_token();
    let mut progress: Vec<_> = SOURCES.iter().map(|s| app.progress_of(s.stream)).collect();
    let watcher = {
        let done = done.clone();
        let targets = targets.clone();
        tokio::spawn(async move {
            let mut last_print = Instant::now();
            loop {
                let applied: Vec<u64> = progress
                    .iter_mut()
                    .map(|p| *p.borrow_and_update())
                    .collect();
                if applied.iter().zip(&targets).all(|(a, t)| a >= t) {
                    done.cancel();
                    break;
                }
                if last_print.elapsed() >= Duration::from_secs(1) {
                    last_print = Instant::now();
                    let sum: u64 = applied
                        .iter()
                        .zip(&targets)
                        .map(|(a, t)| (*a).min(*t))
                        .sum();
                    eprintln!(
                        "  {sum}/{total} ({:.0}%)",
                        sum as f64 * 100.0 / total as f64
                    );
                }
                let changes = progress.iter_mut().map(|p| Box::pin(p.changed()));
                if futures::future::select_all(changes).await.0.is_err() {
                    break;
                }
            }
        })
    };
    app.run(done.clone()).await?;
    watcher.abort();
    if shutdown.is_cancelled() {
        anyhow::bail!("rebuild interrupted; run it again to start over");
    }
    eprintln!(
        "rebuilt {total} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}
