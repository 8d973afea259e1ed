//! One Canopy service binary run as a child process: started with its environment, ready when
//! its `/readyz` answers 200, stopped with SIGTERM (a graceful drain) or killed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// The folder holding the workspace's built binaries (`target/debug` or `target/release`).
///
/// Honours `CANOPY_BIN_DIR`; otherwise it is the folder of the running executable, or its parent
/// when that is cargo's `deps/` folder (integration tests run from `target/<profile>/deps`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CANOPY_BIN_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("failed to locate the running executable")?;
    let mut dir = exe
        .parent()
        .context("the running executable has no folder")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of a built workspace binary, with a hint when it has not been built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the services first (`cargo build --workspace --bins`, or `make demo` / `make test`)",
            path.display()
        );
    }
    Ok(path)
}

/// A service process and how to start it again.
#[derive(Debug)]
pub struct Service {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_file: PathBuf,
    http_addr: SocketAddr,
    child: Option<Child>,
}

impl Service {
    /// Describes a service; nothing runs until [`Service::start`].
    ///
    /// `CANOPY_HTTP_ADDR` is set to a free loopback port for its health endpoints and
    /// `CANOPY_LOG_FORMAT` to `text` unless `env` sets them.
    pub fn new(
        name: &str,
        bin: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = canopy_testkit::try_free_port().context("failed to pick a health port")?;
        let http_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut env = env;
        if !env.iter().any(|(k, _)| k == "CANOPY_LOG_FORMAT") {
            env.push(("CANOPY_LOG_FORMAT".into(), "text".into()));
        }
        env.push(("CANOPY_HTTP_ADDR".into(), http_addr.to_string()));
        Ok(Self {
            name: name.to_owned(),
            bin: binary(bin)?,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            log_file: log_dir.join(format!("{name}.log")),
            http_addr,
            child: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Address of its `/healthz`, `/readyz` and `/metrics`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Starts the process (logs appended to its log file) and waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When it cannot be spawned, exits during start-up, or is not ready in time; the error
    /// carries the tail of its log.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Starts the process without waiting for readiness.
    ///
    /// # Errors
    /// When it is already running or cannot be spawned.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        if let Some(dir) = self.log_file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("failed to open {}", self.log_file.display()))?;
        let err = log
            .try_clone()
            .context("failed to duplicate a file handle")?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start {} ({})", self.name, self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id while it runs (e.g. to read its CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When the process exits or stays unready for [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("failed to poll a child process")?
            {
                self.child = None;
                bail!(
                    "{} exited during start-up ({status})\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            match canopy_testkit::http::get(self.http_addr, "/readyz", Duration::from_secs(3)).await
            {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => last = format!("HTTP {code}: {}", body.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready on http://{}/readyz within {READY_TIMEOUT:?} (last: {last})\n{}",
                    self.name,
                    self.http_addr,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGTERM and wait for a graceful exit ([`STOP_GRACE`], then SIGKILL).
    ///
    /// # Errors
    /// When it exited with a failure status after SIGTERM, or cannot be reaped.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => {
                let status = status.with_context(|| format!("failed to reap {}", self.name))?;
                if !status.success() {
                    bail!(
                        "{} exited with {status} after SIGTERM\n{}",
                        self.name,
                        self.log_tail(30)
                    );
                }
                Ok(())
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "{} did not stop within {STOP_GRACE:?} of SIGTERM and was killed",
                    self.name
                )
            }
        }
    }

    /// SIGKILL: no drain, as when a node dies.
    ///
    /// # Errors
    /// When the process cannot be killed or reaped.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .with_context(|| format!("failed to kill {}", self.name))?;
        }
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- {} (last {lines} lines) ---\n{}",
            self.log_file.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}
