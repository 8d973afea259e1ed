//! canopyctl's built binary against a real api (real nats-server, Postgres and ingestion).
// The whole crate is test code; clippy exempts only #[test] fns, not shared helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod clusters;
mod errors;
mod events;
mod findings;
mod interconnects;
mod scoped;
#[path = "../../../api/tests/it/stack.rs"]
mod stack;

use std::process::Output;

use tokio::process::Command;

/// The built canopyctl, isolated from the caller's CANOPY_* settings.
pub fn canopyctl(api: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopyctl"));
    cmd.env_remove("CANOPY_API")
        .env_remove("CANOPY_OUTPUT")
        .env_remove("CANOPY_TIMEOUT")
        .arg("--api")
        .arg(api)
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// Runs canopyctl to completion.
pub async fn run(api: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = tokio::time::timeout(stack::WAIT, canopyctl(api, args).output()).await??;
    Ok(out)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
