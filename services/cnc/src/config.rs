//! cnc's configuration.

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-cnc",
    version,
    about = "Command and control: turns requests into commands for clusters"
)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
