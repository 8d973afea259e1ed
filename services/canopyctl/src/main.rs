use std::process::ExitCode;

use clap::Parser as _;

use canopyctl::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match canopyctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
