//! cnc's configuration.

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-cnc",
    version,
    about = "Command and control: turns requests into commands for clusters"
)]
pub struct Config {
    /// Schedule ticks missed while cnc was down fire when it is back if they are at most this
    /// old; older ones are skipped.
    #[arg(long, env = "CANOPY_CNC_SCHEDULE_CATCH_UP", default_value = "10m", value_parser = humantime::parse_duration)]
    pub schedule_catch_up: std::time::Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
