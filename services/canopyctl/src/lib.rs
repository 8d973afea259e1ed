//! canopyctl: the user's command-line client of the Canopy gRPC API.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cli_commands;
mod client;
pub mod commands;
mod error;
pub mod output;

pub use error::CliError;

/// Runs one command line.
pub async fn run(cli: cli::Cli) -> Result<(), CliError> {
    commands::run(cli).await
}
