//! cnc: consumes command requests and schedules from CONTROL and dispatches COMMANDS.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::info;

use canopy_kit::consumer::{self, BatchHandler, ConsumerSpec};
use canopy_kit::health::HealthServer;
use canopy_kit::streams;

pub mod config;

use config::Config;

/// Subjects of CONTROL that cnc acts on.
pub const CONTROL_SUBJECTS: &[&str] = &[
    "canopy.ctl.command.>",
    "canopy.ctl.schedule.>",
    "canopy.ctl.remediation.>",
];

pub struct App {
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-cnc").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        for stream in [streams::control(), streams::seed_commands()] {
            streams::ensure(&js, &stream).await?;
        }
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self { client, js, health })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.health.readiness();
        let health = tokio::spawn(self.health.serve(shutdown.clone()));
        readiness.set_ready(true);
        let spec = ConsumerSpec {
            filter_subjects: CONTROL_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            ..ConsumerSpec::new(streams::CONTROL, "cnc")
        };
        let result = consumer::run(&self.js, &spec, &mut Requests, &shutdown).await;
        readiness.set_ready(false);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.drain()).await;
        let _ = health.await;
        result
    }
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

/// Command requests, schedules and remediation approvals.
struct Requests;

impl BatchHandler for Requests {
    async fn handle(&mut self, batch: &[Message]) -> anyhow::Result<()> {
        for m in batch {
            info!(subject = %m.subject, "control request");
            metrics::counter!("canopy_cnc_requests_total").increment(1);
        }
        Ok(())
    }
}
