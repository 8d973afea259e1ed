//! The shape shared by services whose work is one durable consumer: connect to NATS, ensure the
//! streams they need, bind the health server, consume until shutdown, then drain.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;

use crate::config::{HttpArgs, NatsArgs};
use crate::consumer::{self, BatchHandler, ConsumerSpec};
use crate::health::HealthServer;
use crate::streams;

/// How long the NATS client may take to flush on the way out.
const DRAIN: Duration = Duration::from_secs(10);

/// A connected, bound, not yet running consumer service.
pub struct ConsumerService {
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl ConsumerService {
    /// Connects as `name`, creates the `streams` that are missing (drift is reported, not
    /// changed) and binds the health server.
    ///
    /// # Errors
    /// When NATS, a stream or the health port fail.
    pub async fn build(
        name: &str,
        nats: &NatsArgs,
        http: &HttpArgs,
        wanted: &[jetstream::stream::Config],
    ) -> anyhow::Result<Self> {
        let client = crate::nats::connect(nats, name).await?;
        let js = crate::nats::jetstream(client.clone(), None);
        for stream in wanted {
            streams::ensure(&js, stream).await?;
        }
        let health = HealthServer::bind(http.http_addr).await?;
        Ok(Self { client, js, health })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Ready while consuming; on shutdown finishes the batch in hand, drains and stops.
    ///
    /// # Errors
    /// When the consumer cannot be created.
    pub async fn run<H: BatchHandler>(
        self,
        spec: &ConsumerSpec,
        handler: &mut H,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let readiness = self.health.readiness();
        let health = tokio::spawn(self.health.serve(shutdown.clone()));
        readiness.set_ready(true);
        let result = consumer::run(&self.js, spec, handler, &shutdown).await;
        readiness.set_ready(false);
        let _ = tokio::time::timeout(DRAIN, self.client.drain()).await;
        let _ = health.await;
        result
    }
}
