//! `canopy-fake-kube --fixture <name|path|generated:N[:SEED]> [--addr 127.0.0.1:0]`: serves a
//! fixture as a fake Kubernetes API server until SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use canopy_testkit::{FakeKube, FakeKubeOptions, Fixture};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "canopy-fake-kube",
    about = "Serve a cluster fixture as a fake Kubernetes API server"
)]
struct Args {
    /// A checked-in fixture name (prod-eu), a folder path, or generated:N[:SEED].
    #[arg(long)]
    fixture: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The Kubernetes version reported at /version.
    #[arg(long, default_value = "v1.34.1")]
    kube_version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixture = Fixture::from_spec(&args.fixture)
        .with_context(|| format!("failed to load fixture {:?}", args.fixture))?;
    let objects = fixture.len();
    let options = FakeKubeOptions {
        addr: Some(args.addr),
        version: args.kube_version,
    };
    let kube = FakeKube::start_with(fixture, options).await?;
    eprintln!(
        "canopy-fake-kube: serving {objects} objects of fixture {:?}",
        args.fixture
    );
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", kube.url()).context("failed to write to stdout")?;
        stdout.flush().context("failed to flush stdout")?;
    }
    shutdown_signal().await?;
    eprintln!("canopy-fake-kube: shutting down");
    kube.stop();
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn shutdown_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("failed to wait for Ctrl-C")
}
