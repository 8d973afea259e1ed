//! Child-process helpers shared by the nats-server and Postgres harnesses: signals, binary lookup
//! on PATH, log tails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

/// Sends SIGTERM through the `kill` command (the workspace forbids the unsafe libc call).
pub(crate) fn sigterm(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("failed to run `kill -TERM`")?;
    if !status.success() {
        bail!("`kill -TERM {pid}` failed with {status}");
    }
    Ok(())
}

/// SIGTERM, then poll for exit up to `grace`, then SIGKILL. Always reaps the child.
pub(crate) async fn terminate(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    if child
        .try_wait()
        .context("failed to poll the child process")?
        .is_some()
    {
        return Ok(());
    }
    // The child may exit between the poll and the signal; a failed `kill` is then harmless.
    let _ = sigterm(child.id());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child
            .try_wait()
            .context("failed to poll the child process")?
            .is_some()
        {
            return Ok(());
        }
        tokio::time::sleep(crate::eventually::POLL_INTERVAL).await;
    }
    tracing::warn!(
        pid = child.id(),
        ?grace,
        "child ignored SIGTERM, sending SIGKILL"
    );
    kill(child)
}

/// SIGKILL and reap.
pub(crate) fn kill(child: &mut Child) -> anyhow::Result<()> {
    if child
        .try_wait()
        .context("failed to poll the child process")?
        .is_none()
    {
        child
            .kill()
            .context("failed to SIGKILL the child process")?;
    }
    child.wait().context("failed to reap the child process")?;
    Ok(())
}

/// The first executable named `name` in `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `lines` lines of a log file, or a note saying why there are none.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                format!("({} is empty)", path.display())
            } else {
                all[start..].join("\n")
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
