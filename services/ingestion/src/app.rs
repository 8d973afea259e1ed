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
use canopy_kit::health::HealthServer;
use canopy_kit::streams;

use crate::adapters::{postgres, projector::Projector};
use crate::config::Config;

/// A connected, bound, not yet running ingestion.
pub struct App {
    cfg: Config,
    pool: PgPool,
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
    progress: watch::Sender<u64>,
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
        for stream in [streams::fleet_events(), streams::dead_letter()] {
            streams::ensure(&js, &stream).await?;
        }
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            pool,
            client,
            js,
            health,
            progress: watch::channel(0).0,
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// The last applied FLEET_EVENTS sequence, updated after every committed batch.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            batch: self.cfg.batch,
            max_ack_pending: i64::try_from(self.cfg.batch.saturating_mul(4)).unwrap_or(i64::MAX),
            ..ConsumerSpec::new(streams::FLEET_EVENTS, &self.cfg.consumer)
        }
    }

    /// Projects until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let spec = self.spec();
        let readiness = self.health.readiness();
        let health_stop = CancellationToken::new();
        let health = tokio::spawn(self.health.serve(health_stop.clone()));
        readiness.set_ready(true);
        let mut projector = Projector {
            pool: self.pool.clone(),
            js: self.js.clone(),
            stream: streams::FLEET_EVENTS.to_owned(),
            consumer: self.cfg.consumer.clone(),
            progress: self.progress,
        };
        let result = consumer::run(&self.js, &spec, &mut projector, &shutdown).await;
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

/// Empties the read models, deletes the durable consumer and replays FLEET_EVENTS up to its
/// last sequence at the start, printing progress; returns the events replayed.
pub async fn rebuild(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<u64> {
    let app = App::build(cfg).await?;
    let mut stream = app
        .js
        .get_stream(streams::FLEET_EVENTS)
        .await
        .context("failed to open FLEET_EVENTS")?;
    let target = stream
        .info()
        .await
        .context("failed to read FLEET_EVENTS")?
        .state
        .last_sequence;
    postgres::truncate_all(&app.pool).await?;
    match stream.delete_consumer(&app.cfg.consumer).await {
        Ok(_) => info!(consumer = %app.cfg.consumer, "deleted the durable consumer"),
        Err(e) => info!(consumer = %app.cfg.consumer, error = %e, "no durable consumer to delete"),
    }
    eprintln!("rebuilding the read models from FLEET_EVENTS sequences 1..={target}");
    if target == 0 {
        return Ok(0);
    }
    let started = Instant::now();
    let mut progress = app.progress();
    let done = shutdown.child_token();
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last_print = Instant::now();
            while progress.changed().await.is_ok() {
                let seq = *progress.borrow_and_update();
                if seq >= target {
                    done.cancel();
                    break;
                }
                if last_print.elapsed() >= Duration::from_secs(1) {
                    last_print = Instant::now();
                    eprintln!(
                        "  {seq}/{target} ({:.0}%)",
                        seq as f64 * 100.0 / target as f64
                    );
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
        "rebuilt {target} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(target)
}
