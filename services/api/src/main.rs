use clap::Parser as _;

use canopy_api::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let _telemetry = canopy_kit::telemetry::init("api", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    canopy_api::run(cfg, shutdown).await
}
