//! Ingestion's configuration.

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-ingestion",
    version,
    about = "Projects FLEET_EVENTS into the Postgres read models"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Postgres URL of the read models.
    #[arg(long, env = "CANOPY_INGESTION_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Durable consumer name; its checkpoint is kept per stream and consumer.
    #[arg(
        long,
        env = "CANOPY_INGESTION_CONSUMER",
        default_value = "ingestion",
        global = true
    )]
    pub consumer: String,
    /// Most events applied in one transaction.
    #[arg(long, env = "CANOPY_INGESTION_BATCH", default_value_t = 1000)]
    pub batch: usize,
    /// Postgres connections in the pool.
    #[arg(long, env = "CANOPY_INGESTION_DB_CONNECTIONS", default_value_t = 4)]
    pub db_connections: u32,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Run the projections (the default).
    Serve,
    /// Empty the read models and replay FLEET_EVENTS from its first event, then exit.
    Rebuild,
}
