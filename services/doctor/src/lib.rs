//! doctor: follows heartbeats and health events of the fleet.

use std::net::SocketAddr;

use async_nats::jetstream::Message;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use canopy_kit::consumer::{BatchHandler, ConsumerSpec};
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_kit::service::ConsumerService;
use canopy_kit::streams;

pub mod config;
pub mod domain;

use config::Config;
use domain::FleetView;

pub struct App {
    service: ConsumerService,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let wanted = [streams::fleet_events(), streams::control()];
        let service =
            ConsumerService::build("canopy-doctor", &cfg.nats, &cfg.http, &wanted).await?;
        Ok(Self { service })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.service.http_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            filter_subjects: vec!["canopy.evt.*.agent.>".to_owned()],
            ..ConsumerSpec::new(streams::FLEET_EVENTS, "doctor")
        };
        let mut handler = Heartbeats(FleetView::default());
        self.service.run(&spec, &mut handler, shutdown).await
    }
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

struct Heartbeats(FleetView);

impl BatchHandler for Heartbeats {
    async fn handle(&mut self, batch: &[Message]) -> anyhow::Result<()> {
        for m in batch {
            match envelope::decode(&m.subject, &m.payload) {
                Ok(env) => {
                    if let (Some(Body::Heartbeat(_)), Some(at)) = (&env.body, env.occurred_at) {
                        self.0.heartbeat(&env.cluster_id, at.seconds);
                    }
                }
                // Ingestion dead-letters these; the doctor only skips them.
                Err(e) => warn!(subject = %m.subject, error = %e, "skipping undecodable event"),
            }
        }
        metrics::gauge!("canopy_doctor_clusters_known").set(self.0.clusters() as f64);
        Ok(())
    }
}
