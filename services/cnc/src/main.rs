use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = canopy_cnc::config::Config::parse();
    let _telemetry = canopy_kit::telemetry::init("cnc", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    canopy_cnc::run(cfg, shutdown).await
}
