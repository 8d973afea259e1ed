//! gateway-leafnode's configuration.

use std::time::Duration;

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};
use canopy_kit::subject::ClusterId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Seed side: sources each approved leaf's EVENTS into FLEET_EVENTS and watches the links.
    Seed,
    /// Leaf side: sets up the leaf's COMMANDS and POLICIES streams, sourced from the seed.
    Leaf,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-gateway-leafnode",
    version,
    about = "Links leaf clusters to the seed"
)]
pub struct Config {
    #[arg(long, env = "CANOPY_GATEWAY_ROLE", value_enum)]
    pub role: Role,
    /// Leaf role: this cluster's id (also its JetStream domain).
    #[arg(long, env = "CANOPY_GATEWAY_CLUSTER_ID")]
    pub cluster_id: Option<ClusterId>,
    /// Seed role: clusters whose events the seed sources (comma-separated or repeated).
    #[arg(long = "leaf", env = "CANOPY_GATEWAY_LEAVES", value_delimiter = ',')]
    pub leaves: Vec<ClusterId>,
    /// JetStream domain of the seed.
    #[arg(long, env = "CANOPY_GATEWAY_SEED_DOMAIN", default_value = "seed")]
    pub seed_domain: String,
    /// Seed role: how often the state of each link's stream source is checked.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_CHECK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub link_check_interval: Duration,
    /// Seed role: the seed nats-server's monitoring URL (`http://IP:PORT`); when set, a link is
    /// up while the cluster's leaf holds a leafnode connection (`/leafz`, by server name = cluster
    /// id), else while its FLEET_EVENTS source hears from it.
    #[arg(long, env = "CANOPY_GATEWAY_MONITOR_URL")]
    pub monitor_url: Option<String>,
    /// Seed role: checks in a row a link must be seen up before `LinkEstablished` is published.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_UP_AFTER", default_value_t = 2)]
    pub link_up_after: u32,
    /// Seed role: checks in a row a link must be seen down before `LinkLost` is published.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_DOWN_AFTER", default_value_t = 2)]
    pub link_down_after: u32,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
