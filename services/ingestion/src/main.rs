use clap::Parser as _;

use canopy_ingestion::config::{Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let _telemetry = canopy_kit::telemetry::init("ingestion", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    match cfg.command {
        Some(Command::Rebuild) => canopy_ingestion::rebuild(cfg, shutdown).await.map(|_| ()),
        Some(Command::Serve) | None => canopy_ingestion::run(cfg, shutdown).await,
    }
}
