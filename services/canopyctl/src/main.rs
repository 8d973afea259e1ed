use std::process::ExitCode;

use clap::Parser as _;

use canopyctl::cli::Cli;

// `canopyctl audit` allocates and frees millions of small values (parsed manifests, findings);
// mimalloc does that markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match canopyctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
