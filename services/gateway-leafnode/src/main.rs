use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = canopy_gateway_leafnode::config::Config::parse();
    let _telemetry = canopy_kit::telemetry::init("gateway-leafnode", &cfg.telemetry)?;
    let shutdown = canopy_kit::shutdown::on_signal();
    canopy_gateway_leafnode::run(cfg, shutdown).await
}
