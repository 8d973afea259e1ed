//! doctor: follows heartbeats and health events of the fleet.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use canopy_kit::consumer::{self, BatchHandler, ConsumerSpec};
use canopy_kit::envelope;
use canopy_kit::health::HealthServer;
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_kit::streams;

pub mod config;
pub mod domain;

use config::Config;
use domain::FleetView;

pub struct App {
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-doctor").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        for stream in [streams::fleet_events(), streams::control()] {
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
            filter_subjects: vec!["canopy.evt.*.agent.>".to_owned()],
            ..ConsumerSpec::new(streams::FLEET_EVENTS, "doctor")
        };
        let mut handler = Heartbeats(FleetView::default());
        let result = consumer::run(&self.js, &spec, &mut handler, &shutdown).await;
        readiness.set_ready(false);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.drain()).await;
        let _ = health.await;
        result
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
