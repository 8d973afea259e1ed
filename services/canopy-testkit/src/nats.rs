//! A real nats-server child process for tests: binary lookup and version check, spawn with a
//! config file whose ports and dirs come from environment variables, health wait, stop / kill /
//! restart, kill on drop.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::{http, proc};

/// Oldest nats-server the mesh runs on (the machine's distro package, 2.9, is too old).
pub const MIN_NATS_SERVER_VERSION: Version = Version(2, 14, 1);

/// Environment variable naming a nats-server binary to use instead of the pinned one.
pub const NATS_SERVER_ENV: &str = "CANOPY_NATS_SERVER";

/// How long `spawn` / `start` wait for `/healthz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A `major.minor.patch` nats-server version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Parses `nats-server --version` output such as `nats-server: v2.15.1`.
    pub fn parse_output(output: &str) -> Option<Self> {
        let word = output.split_whitespace().find(|w| {
            w.trim_start_matches('v')
                .starts_with(|c: char| c.is_ascii_digit())
        })?;
        let core = word.trim_start_matches('v').split(['-', '+']).next()?;
        let mut nums = core.split('.').map(str::parse::<u32>);
        let major = nums.next()?.ok()?;
        let minor = nums.next()?.ok()?;
        let patch = nums.next().unwrap_or(Ok(0)).ok()?;
        Some(Self(major, minor, patch))
    }
}

/// The nats-server binary to run: `$CANOPY_NATS_SERVER`, else `<workspace>/.tools/bin/nats-server`,
/// else the first `nats-server` on `PATH`; it must be at least [`MIN_NATS_SERVER_VERSION`].
///
/// # Errors
/// When none is found or the one found is too old (the message says to run `make setup`).
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    let from_env = std::env::var_os(NATS_SERVER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let bin = locate(from_env, &crate::workspace_root())?;
    check_nats_server(&bin)?;
    Ok(bin)
}

fn locate(from_env: Option<PathBuf>, workspace_root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(bin) = from_env {
        if !proc::is_executable(&bin) {
            bail!(
                "{NATS_SERVER_ENV}={} is not an executable file",
                bin.display()
            );
        }
        return Ok(bin);
    }
    let pinned = workspace_root.join(".tools/bin/nats-server");
    if proc::is_executable(&pinned) {
        return Ok(pinned);
    }
    proc::which("nats-server").with_context(|| {
        format!(
            "no nats-server found (looked at ${NATS_SERVER_ENV}, {} and PATH): run `make setup` \
             to install nats-server >= {MIN_NATS_SERVER_VERSION} into .tools/bin",
            pinned.display()
        )
    })
}

/// Checks that `bin` is a nats-server of at least [`MIN_NATS_SERVER_VERSION`] and returns its
/// version. Results are cached per path for the life of the process.
///
/// # Errors
/// When `bin` cannot be run, does not report a version, or is too old.
pub fn check_nats_server(bin: &Path) -> anyhow::Result<Version> {
    static CHECKED: Mutex<Vec<(PathBuf, Version)>> = Mutex::new(Vec::new());
    if let Some((_, v)) = CHECKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, _)| p == bin)
    {
        return Ok(*v);
    }
    let output = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{} --version`", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let version = Version::parse_output(&text)
        .with_context(|| format!("`{} --version` printed no version: {text:?}", bin.display()))?;
    if version < MIN_NATS_SERVER_VERSION {
        bail!(
            "{} is nats-server {version}, but Canopy needs >= {MIN_NATS_SERVER_VERSION}: run `make setup` \
             (installs the pinned nats-server into .tools/bin) or point {NATS_SERVER_ENV} at a newer binary",
            bin.display()
        );
    }
    CHECKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((bin.to_path_buf(), version));
    Ok(version)
}

/// How to run one nats-server.
#[derive(Clone, Debug)]
pub struct NatsOpts {
    /// A label for logs and error messages (the config file decides `server_name`).
    pub name: String,
    /// A real nats-server config; it reads ports and dirs from `$VARIABLES` set in `env`.
    pub config_file: PathBuf,
    /// Environment variables for the server process (resolved by the config file).
    pub env: Vec<(String, String)>,
    /// The client port the config listens on (for `client_url`).
    pub client_port: u16,
    /// The HTTP monitoring port the config listens on (for the `/healthz` wait).
    pub monitor_port: u16,
    /// Where the server writes its log (`-l`); stdout/stderr go to `<log_file>.out`.
    pub log_file: PathBuf,
}

/// A running (or stopped) nats-server child; killed on drop.
#[derive(Debug)]
pub struct NatsProcess {
    opts: NatsOpts,
    bin: PathBuf,
    child: Option<Child>,
    /// Owned temp dir for [`NatsProcess::standalone_in_temp`], removed on drop after the kill.
    _tmp: Option<tempfile::TempDir>,
    /// The credentials [`NatsProcess::connect`] uses (an administrator of the server's account).
    connect_creds: Option<PathBuf>,
}

// === impl NatsProcess ===

impl NatsProcess {
    /// Starts nats-server with `opts` and waits until `/healthz` on the monitor port answers 200.
    ///
    /// # Errors
    /// When no suitable binary is found, the config file is missing, or the server exits or is not
    /// healthy within 20 s (the error carries the log's tail).
    pub async fn spawn(opts: NatsOpts) -> anyhow::Result<Self> {
        let bin = nats_server_binary()?;
        let mut process = Self {
            opts,
            bin,
            child: None,
            _tmp: None,
            connect_creds: None,
        };
        process.start().await?;
        Ok(process)
    }

    /// Writes a minimal single-server JetStream config into `tmp` (ports on 127.0.0.1 from
    /// [`crate::free_port`], store under `tmp/jetstream`) and starts it. `start` after `kill`
    /// or `stop` reuses the same ports and store.
    ///
    /// The server runs in operator mode with the test operator of [`test_auth_dir`] (full
    /// resolver preloaded with its `SYS` and `CANOPY` accounts): [`NatsProcess::connect`] and
    /// clients configured with [`test_admin_creds`] (also `CANOPY_NATS_CREDS` of
    /// `.cargo/config.toml`) connect as its administrator; anything else is refused.
    ///
    /// # Errors
    /// As [`NatsProcess::spawn`], or when the config cannot be written.
    pub async fn standalone(tmp: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        let config_file = tmp.join("nats-standalone.conf");
        std::fs::write(&config_file, STANDALONE_CONFIG)
            .with_context(|| format!("failed to write {}", config_file.display()))?;
        let client_port = crate::try_free_port().context("failed to pick the client port")?;
        let monitor_port = crate::try_free_port().context("failed to pick the monitor port")?;
        let store_dir = tmp.join("jetstream");
        let resolver_dir = tmp.join("resolver");
        copy_dir(&test_auth_dir().join("seed/resolver"), &resolver_dir)?;
        let opts = NatsOpts {
            name: format!("standalone-{client_port}"),
            config_file,
            env: vec![
                (
                    "CANOPY_NATS_NAME".into(),
                    format!("standalone-{client_port}"),
                ),
                ("CANOPY_NATS_PORT".into(), client_port.to_string()),
                ("CANOPY_NATS_HTTP_PORT".into(), monitor_port.to_string()),
                (
                    "CANOPY_NATS_STORE_DIR".into(),
                    store_dir.display().to_string(),
                ),
                (
                    "CANOPY_NATS_OPERATOR_JWT".into(),
                    test_auth_dir().join("operator.jwt").display().to_string(),
                ),
                ("CANOPY_NATS_SYSTEM_ACCOUNT".into(), test_system_account()?),
                (
                    "CANOPY_NATS_RESOLVER_DIR".into(),
                    resolver_dir.display().to_string(),
                ),
            ],
            client_port,
            monitor_port,
            log_file: tmp.join("nats-standalone.log"),
        };
        let mut process = Self::spawn(opts).await?;
        process.connect_creds = Some(test_admin_creds());
        Ok(process)
    }

    /// Makes [`NatsProcess::connect`] use `creds` (a `.creds` file).
    pub fn set_connect_creds(&mut self, creds: impl Into<PathBuf>) {
        self.connect_creds = Some(creds.into());
    }

    /// The credentials [`NatsProcess::connect`] uses, if any.
    pub fn connect_creds(&self) -> Option<&Path> {
        self.connect_creds.as_deref()
    }

    /// [`NatsProcess::standalone`] in a fresh temp dir that lives as long as the process handle.
    ///
    /// # Errors
    /// As [`NatsProcess::standalone`].
    pub async fn standalone_in_temp() -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("canopy-nats-")
            .tempdir()
            .context("failed to create a temp dir")?;
        let mut process = Self::standalone(tmp.path()).await?;
        process._tmp = Some(tmp);
        Ok(process)
    }

    /// `nats://127.0.0.1:<client_port>`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.opts.client_port)
    }

    /// `http://127.0.0.1:<monitor_port>`.
    /// The monitoring endpoint's address.
    pub fn monitor_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.opts.monitor_port))
    }

    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.monitor_port)
    }

    pub fn client_port(&self) -> u16 {
        self.opts.client_port
    }

    pub fn monitor_port(&self) -> u16 {
        self.opts.monitor_port
    }

    pub fn opts(&self) -> &NatsOpts {
        &self.opts
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects a client to this server, as its administrator when credentials are known.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some(creds) = &self.connect_creds {
            opts = opts
                .credentials_file(creds)
                .await
                .with_context(|| format!("failed to read {}", creds.display()))?;
        }
        opts.connect(self.client_url()).await.with_context(|| {
            format!(
                "failed to connect to nats-server {} at {}",
                self.opts.name,
                self.client_url()
            )
        })
    }

    /// Whether the server process is alive (reaps it if it has exited).
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

    /// Graceful stop: SIGTERM, wait up to 10 s, then SIGKILL.
    ///
    /// # Errors
    /// When the process cannot be signalled or reaped.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            proc::terminate(&mut child, STOP_GRACE)
                .await
                .with_context(|| format!("failed to stop nats-server {}", self.opts.name))?;
        }
        Ok(())
    }

    /// Abrupt stop (SIGKILL), for fault-injection tests.
    ///
    /// # Errors
    /// When the process cannot be signalled or reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            proc::kill(&mut child)
                .with_context(|| format!("failed to kill nats-server {}", self.opts.name))?;
        }
        Ok(())
    }

    /// (Re)starts the server with the same options: same ports, same store dir.
    ///
    /// # Errors
    /// When it is already running, or it exits or is not healthy within 20 s.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("nats-server {} is already running", self.opts.name);
        }
        let opts = &self.opts;
        if !opts.config_file.is_file() {
            bail!(
                "nats-server config {} does not exist",
                opts.config_file.display()
            );
        }
        if let Some(dir) = opts.log_file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let out_file = self.out_file();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_file)
            .with_context(|| format!("failed to open {}", out_file.display()))?;
        let err = out
            .try_clone()
            .context("failed to duplicate the output file handle")?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&opts.config_file)
            .arg("-l")
            .arg(&opts.log_file)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| {
                format!(
                    "failed to spawn {} for nats-server {}",
                    self.bin.display(),
                    opts.name
                )
            })?;
        self.child = Some(child);
        if let Err(e) = self.wait_healthy().await {
            let _ = self.kill();
            return Err(e);
        }
        Ok(())
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.opts.monitor_port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("failed to poll nats-server")?,
                None => bail!("nats-server {} is not running", self.opts.name),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "nats-server {} exited during startup ({status})\n{}",
                    self.opts.name,
                    self.log_tails()
                );
            }
            let last = match http::get(addr, "/healthz", Duration::from_secs(2)).await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "nats-server {} was not healthy on http://{addr}/healthz within {READY_TIMEOUT:?} (last: {last})\n{}",
                    self.opts.name,
                    self.log_tails()
                );
            }
            tokio::time::sleep(crate::eventually::POLL_INTERVAL).await;
        }
    }

    fn out_file(&self) -> PathBuf {
        let mut name = self.opts.log_file.as_os_str().to_owned();
        name.push(".out");
        PathBuf::from(name)
    }

    fn log_tails(&self) -> String {
        format!(
            "--- {} (tail) ---\n{}\n--- {} (tail) ---\n{}",
            self.opts.log_file.display(),
            proc::tail(&self.opts.log_file, 30),
            self.out_file().display(),
            proc::tail(&self.out_file(), 15)
        )
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(name = %self.opts.name, error = %format!("{e:#}"), "failed to kill nats-server on drop");
        }
    }
}

/// The test operator's files (`canopyctl nats init` output, committed for tests only): every
/// standalone server trusts this operator, and stacks in tests sign their accounts with it.
pub fn test_auth_dir() -> PathBuf {
    crate::workspace_root().join("services/canopy-testkit/nats-test-auth")
}

/// The administrator of the test operator's `CANOPY` account.
pub fn test_admin_creds() -> PathBuf {
    test_auth_dir().join("seed/admin.creds")
}

/// The public key of the test operator's system account.
///
/// # Errors
/// When the fixture is missing.
pub fn test_system_account() -> anyhow::Result<String> {
    let env = test_auth_dir().join("seed/nats.env");
    let text = std::fs::read_to_string(&env)
        .with_context(|| format!("failed to read {}", env.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("CANOPY_NATS_SYSTEM_ACCOUNT="))
        .map(str::to_owned)
        .with_context(|| format!("{} names no system account", env.display()))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("failed to create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("failed to read {}", from.display()))?
    {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("failed to copy {}", entry.path().display()))?;
    }
    Ok(())
}

/// Every value comes from the environment so `start` after a kill reuses ports and store.
const STANDALONE_CONFIG: &str = "\
# Written by canopy-testkit: one JetStream server on loopback, in operator mode.
server_name: $CANOPY_NATS_NAME
host: 127.0.0.1
port: $CANOPY_NATS_PORT
http_port: $CANOPY_NATS_HTTP_PORT
max_control_line: 64KB
operator: $CANOPY_NATS_OPERATOR_JWT
system_account: $CANOPY_NATS_SYSTEM_ACCOUNT
resolver {
  type: full
  dir: $CANOPY_NATS_RESOLVER_DIR
  allow_delete: false
}
jetstream {
  store_dir: $CANOPY_NATS_STORE_DIR
}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            Version::parse_output("nats-server: v2.15.1\n"),
            Some(Version(2, 15, 1))
        );
        assert_eq!(
            Version::parse_output("nats-server: v2.9.10"),
            Some(Version(2, 9, 10))
        );
        assert_eq!(
            Version::parse_output("nats-server: v2.14.1-RC.2"),
            Some(Version(2, 14, 1))
        );
        assert_eq!(Version::parse_output("garbage"), None);
        assert!(Version(2, 9, 10) < MIN_NATS_SERVER_VERSION);
        assert!(Version(2, 14, 1) >= MIN_NATS_SERVER_VERSION);
        assert!(Version(3, 0, 0) > MIN_NATS_SERVER_VERSION);
    }

    #[test]
    fn the_distro_nats_server_is_rejected() {
        let old = Path::new("/usr/sbin/nats-server");
        if !old.exists() {
            return;
        }
        let err = check_nats_server(old).unwrap_err().to_string();
        assert!(err.contains("make setup"), "{err}");
        assert!(err.contains("2.9"), "{err}");
    }

    #[test]
    fn lookup_prefers_env_then_pinned() {
        let tmp = tempfile::tempdir().unwrap();
        let err = locate(Some(tmp.path().join("missing")), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(NATS_SERVER_ENV), "{err}");

        let pinned = tmp.path().join(".tools/bin/nats-server");
        std::fs::create_dir_all(pinned.parent().unwrap()).unwrap();
        // Never executed: running a file this process just wrote can fail with ETXTBSY when
        // another test thread forks at the same time.
        std::fs::write(&pinned, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pinned, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate(None, tmp.path()).unwrap(), pinned);
        assert_eq!(
            locate(Some(PathBuf::from("/bin/sh")), tmp.path()).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
