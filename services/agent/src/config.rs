//! The agent's configuration.

use std::time::Duration;

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};
use canopy_kit::subject::ClusterId;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-agent",
    version,
    about = "Inventories a Kubernetes cluster and reports to its leaf's EVENTS stream"
)]
pub struct Config {
    /// This cluster's id (a DNS label); also its leaf's JetStream domain.
    #[arg(long, env = "CANOPY_AGENT_CLUSTER_ID")]
    pub cluster_id: ClusterId,
    /// Kubernetes API URL (plain http allowed); default: in-cluster config, else kubeconfig.
    #[arg(long, env = "CANOPY_AGENT_API_URL")]
    pub api_url: Option<String>,
    /// Time between heartbeats.
    #[arg(long, env = "CANOPY_AGENT_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Time between full inventory snapshots.
    #[arg(long, env = "CANOPY_AGENT_INVENTORY_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub inventory_interval: Duration,
    /// Objects per Kubernetes list call.
    #[arg(long, env = "CANOPY_AGENT_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Largest inventory message, in bytes (NATS refuses payloads above its max_payload, 1 MiB).
    #[arg(long, env = "CANOPY_AGENT_MAX_CHUNK_BYTES", default_value_t = 512 * 1024, value_parser = clap::value_parser!(u32).range(4096..=1_000_000))]
    pub max_chunk_bytes: u32,
    /// Size limit of the leaf's EVENTS stream (sized for the longest outage to ride out).
    #[arg(long, env = "CANOPY_AGENT_EVENTS_MAX_BYTES", default_value_t = 1 << 30)]
    pub events_max_bytes: i64,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
