//! cnc: consumes command requests and schedules from CONTROL and dispatches COMMANDS.

use std::net::SocketAddr;

use async_nats::jetstream::Message;
use tokio_util::sync::CancellationToken;
use tracing::info;

use canopy_kit::consumer::{BatchHandler, ConsumerSpec};
use canopy_kit::service::ConsumerService;
use canopy_kit::streams;

pub mod commands;
pub mod config;
pub mod policy;

use config::Config;

/// Subjects of CONTROL that cnc acts on.
pub const CONTROL_SUBJECTS: &[&str] = &[
    "canopy.ctl.command.>",
    "canopy.ctl.schedule.>",
    "canopy.ctl.remediation.>",
];

pub struct App {
    service: ConsumerService,
    commands: commands::Options,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let wanted = [
            streams::control(),
            streams::seed_commands(),
            streams::fleet_events(),
        ];
        let service = ConsumerService::build("canopy-cnc", &cfg.nats, &cfg.http, &wanted).await?;
        Ok(Self {
            service,
            commands: commands::Options {
                catch_up: cfg.schedule_catch_up,
            },
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.service.http_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            filter_subjects: CONTROL_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            ..ConsumerSpec::new(streams::CONTROL, "cnc")
        };
        let policies = tokio::spawn(policy::run(
            self.service.jetstream().clone(),
            shutdown.clone(),
        ));
        let commands = tokio::spawn(commands::run(
            self.service.jetstream().clone(),
            self.commands,
            shutdown.clone(),
        ));
        let result = self.service.run(&spec, &mut Requests, shutdown).await;
        let _ = policies.await;
        let _ = commands.await;
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
