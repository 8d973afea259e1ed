//! Canopy's benchmarks: each mode starts its own servers on loopback, drives load, and prints
//! its figures next to the raw ceilings of the same machine measured in the same run.
#![forbid(unsafe_code)]

pub mod audit;
pub mod ceilings;
pub mod commands;
pub mod doctor;
pub mod pipeline;
pub mod stats;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Canopy benchmarks (they start their own servers on loopback)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Simulated agents publish into their leaf's EVENTS; the seed sources them into
    /// FLEET_EVENTS; ingestion projects them into Postgres. Measures end-to-end events/s and
    /// projection lag against the raw JetStream publish and Postgres insert ceilings.
    Pipeline(pipeline::Args),
    /// `canopyctl audit` on generated objects (100,000 by default) as a few large files, many
    /// small files and one stream on stdin, pinned to one CPU: objects/s and peak memory; then
    /// canopyctl and checkov side by side on the same 1,000 objects.
    Audit(audit::Args),
    /// cnc's command path with simulated clusters: the round trip of a no-op command
    /// (p50/p99, target p99 < 50 ms) and a fan-out to 1,000 clusters acknowledged by all
    /// (target < 2 s).
    Commands(commands::Args),
    /// The doctor binary fed heartbeats of 1,000 simulated clusters (1,000 heartbeats/s): its
    /// CPU per 1,000 heartbeats/s and how soon a silent cluster is judged unreachable.
    Doctor(doctor::Args),
    /// Internal: runs a command pinned to a CPU and prints its wall time and peak memory.
    #[command(hide = true)]
    Measure(audit::MeasureArgs),
}

/// Runs the chosen mode.
///
/// # Errors
/// When a server cannot be started or the run fails; partial figures are not printed.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.mode {
        Mode::Pipeline(args) => pipeline::run(args).await,
        Mode::Commands(args) => commands::run(args).await,
        Mode::Doctor(args) => doctor::run(args).await,
        // Blocking work on this thread: `measure` pins the thread that spawns the child.
        Mode::Audit(args) => audit::run(args),
        Mode::Measure(args) => audit::measure(&args),
    }
}
