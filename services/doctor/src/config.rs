//! doctor's configuration.

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-doctor",
    version,
    about = "Fleet health: which clusters are sick, and why"
)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
