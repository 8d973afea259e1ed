//! A throwaway (or kept) Postgres cluster for tests and the demo: initdb in a temp dir, start on
//! a free loopback port with durability off, create databases, stop on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::proc;

/// Environment variable naming the folder that holds `initdb`, `pg_ctl` and `psql`.
pub const PG_BIN_ENV: &str = "CANOPY_PG_BIN";

/// The OS user that runs Postgres when the harness runs as root (initdb refuses root).
const PG_OS_USER: &str = "postgres";

/// Log file name inside a kept data dir (see [`Postgres::start_in`]).
const KEPT_LOG: &str = "canopy-postgres.log";

/// A running Postgres cluster on 127.0.0.1.
#[derive(Debug)]
pub struct Postgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as_postgres: bool,
    /// Throwaway clusters stop with `-m immediate`; kept ones with `-m fast`.
    kept: bool,
    running: bool,
    /// Holds the data dir (throwaway) or the socket dir (kept); removed on drop after the stop.
    _tmp: tempfile::TempDir,
}

// === impl Postgres ===

impl Postgres {
    /// initdb into a fresh temp dir and start; everything is removed on drop.
    ///
    /// # Errors
    /// When the Postgres binaries are missing (run `make setup`), or initdb / pg_ctl fail (the
    /// error carries their output and the server log's tail).
    pub async fn start() -> anyhow::Result<Self> {
        let bin_dir = pg_bin_dir()?;
        let run_as_postgres = is_root()?;
        let tmp = temp_dir(run_as_postgres)?;
        let data_dir = tmp.path().join("data");
        let socket_dir = tmp.path().to_path_buf();
        let log_file = tmp.path().join("postgres.log");
        let mut pg = Self {
            bin_dir,
            data_dir,
            socket_dir,
            log_file,
            port: crate::try_free_port().context("failed to pick a Postgres port")?,
            run_as_postgres,
            kept: false,
            running: false,
            _tmp: tmp,
        };
        pg.initdb().await?;
        pg.pg_start().await?;
        Ok(pg)
    }

    /// Starts a cluster whose data lives in `dir` and survives the handle (the demo keeps it in a
    /// git-ignored `.state/` folder): initdb only when `dir` is missing or empty, otherwise reuse
    /// it. The port is fresh each run; a server left running from an earlier run is stopped first.
    ///
    /// # Errors
    /// When `dir` is neither empty nor a Postgres data dir, when (as root) the `postgres` user
    /// cannot reach `dir`, or as [`Postgres::start`].
    pub async fn start_in(dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = pg_bin_dir()?;
        let run_as_postgres = is_root()?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let data_dir = std::fs::canonicalize(dir)
            .with_context(|| format!("failed to resolve {}", dir.display()))?;
        let fresh = std::fs::read_dir(&data_dir)
            .with_context(|| format!("failed to read {}", data_dir.display()))?
            .next()
            .is_none();
        if !fresh && !data_dir.join("PG_VERSION").is_file() {
            bail!(
                "{} is neither empty nor a Postgres data directory",
                data_dir.display()
            );
        }
        // The socket path must stay under ~100 bytes, so it goes to a short temp dir.
        let tmp = temp_dir(run_as_postgres)?;
        let mut pg = Self {
            bin_dir,
            socket_dir: tmp.path().to_path_buf(),
            log_file: data_dir.join(KEPT_LOG),
            data_dir,
            port: crate::try_free_port().context("failed to pick a Postgres port")?,
            run_as_postgres,
            kept: true,
            running: false,
            _tmp: tmp,
        };
        if run_as_postgres {
            check_reachable_by_others(&pg.data_dir)?;
            chown_to_postgres(&pg.data_dir).await?;
        }
        if fresh {
            pg.initdb().await?;
        } else {
            pg.stop_leftover().await?;
        }
        pg.pg_start().await?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Errors
    /// When the name is not a plain identifier (letters, digits, `_`, `-`; at most 63 bytes) or
    /// `CREATE DATABASE` fails (e.g. it exists).
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            bail!("invalid database name {name:?}: use letters, digits, '_' or '-' (at most 63)");
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("failed to create database {name}"))?;
        Ok(self.url_for(name))
    }

    /// Runs SQL through `psql` against database `db` and returns its unaligned, tuples-only
    /// output (one row per line, columns separated by `|`).
    ///
    /// # Errors
    /// When psql fails; the error carries its stderr.
    pub async fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin_dir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .await
            .context("failed to run psql")?;
        if !output.status.success() {
            bail!(
                "psql failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string())
    }

    /// Stops the server now (drop does this too).
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let mode = if self.kept { "fast" } else { "immediate" };
        let mut cmd = self.std_command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "30"]);
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .context("failed to run pg_ctl stop")?;
        self.running = false;
        if !output.status.success() {
            bail!(
                "pg_ctl stop failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(cmd, "initdb").await
    }

    async fn pg_start(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.socket_dir.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o", &options]);
        if let Err(e) = run(cmd, "pg_ctl start").await {
            return Err(e.context(format!(
                "server log tail:\n{}",
                proc::tail(&self.log_file, 30)
            )));
        }
        self.running = true;
        Ok(())
    }

    /// A kept cluster whose earlier owner was killed may still be running: stop it.
    async fn stop_leftover(&self) -> anyhow::Result<()> {
        let mut status = self.command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.data_dir);
        let running = status
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("failed to run pg_ctl status")?
            .success();
        if running {
            tracing::info!(data_dir = %self.data_dir.display(), "stopping a Postgres left running by an earlier run");
            let mut stop = self.command("pg_ctl");
            stop.arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w"]);
            run(stop, "pg_ctl stop").await?;
        }
        Ok(())
    }

    /// `tool` from the bin dir, through `runuser -u postgres --` when running as root.
    fn command(&self, tool: &str) -> Command {
        Command::from(self.std_command(tool))
    }

    fn std_command(&self, tool: &str) -> std::process::Command {
        let program = self.bin_dir.join(tool);
        if self.run_as_postgres {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", PG_OS_USER, "--"]).arg(program);
            cmd
        } else {
            std::process::Command::new(program)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(data_dir = %self.data_dir.display(), error = %format!("{e:#}"), "failed to stop Postgres on drop");
        }
    }
}

async fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("failed to run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `$CANOPY_PG_BIN`, else the highest `/usr/lib/postgresql/<N>/bin`, else the folder of `initdb`
/// on PATH.
///
/// # Errors
/// When no folder with `initdb`, `pg_ctl` and `psql` is found.
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|t| proc::is_executable(&dir.join(t)))
    };
    if let Some(dir) = std::env::var_os(PG_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        if !has_tools(&dir) {
            bail!(
                "{PG_BIN_ENV}={} does not hold initdb, pg_ctl and psql",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(dir) = proc::which("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
        && has_tools(&dir)
    {
        return Ok(dir);
    }
    bail!(
        "no Postgres binaries found (looked at ${PG_BIN_ENV}, /usr/lib/postgresql/*/bin and PATH): \
         run `make setup` to install Postgres"
    )
}

fn is_root() -> anyhow::Result<bool> {
    static ROOT: OnceLock<bool> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(*root);
    }
    let output = std::process::Command::new("id")
        .arg("-u")
        .output()
        .context("failed to run `id -u`")?;
    let root = String::from_utf8_lossy(&output.stdout).trim() == "0";
    Ok(*ROOT.get_or_init(|| root))
}

/// A temp dir the Postgres user can use: under /tmp (world-traversable) and chowned when root.
fn temp_dir(run_as_postgres: bool) -> anyhow::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("canopy-pg-");
    let tmp = if run_as_postgres {
        builder.tempdir_in("/tmp")
    } else {
        builder.tempdir()
    }
    .context("failed to create a temp dir for Postgres")?;
    if run_as_postgres {
        let status = std::process::Command::new("chown")
            .arg(format!("{PG_OS_USER}:"))
            .arg(tmp.path())
            .status()
            .context("failed to run chown")?;
        if !status.success() {
            bail!(
                "chown {PG_OS_USER} {} failed ({status}); does the `postgres` user exist?",
                tmp.path().display()
            );
        }
    }
    Ok(tmp)
}

async fn chown_to_postgres(dir: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg(format!("{PG_OS_USER}:")).arg(dir);
    run(cmd, "chown -R postgres").await?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("failed to chmod 0700 {}", dir.display()))
}

/// Postgres runs as another user, so every parent of its data dir must be traversable by others.
fn check_reachable_by_others(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for parent in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(parent)
            .with_context(|| format!("failed to stat {}", parent.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "the postgres user cannot reach {}: {} has mode {:o} (needs o+x, e.g. chmod 0755)",
                dir.display(),
                parent.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}
