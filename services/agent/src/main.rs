use clap::Parser as _;

use canopy_agent::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let _telemetry = canopy_kit::telemetry::init("agent", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    canopy_agent::run(cfg, shutdown).await
}
