use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = canopy_doctor::config::Config::parse();
    let _telemetry = canopy_kit::telemetry::init("doctor", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    canopy_doctor::run(cfg, shutdown).await
}
