//! Bearer tokens: where canopyctl finds its own, and `canopyctl token issue`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy_auth::token::{Role, TokenConfig};
use clap::{Args, Subcommand};
use tonic::metadata::MetadataValue;

use crate::commands::Context;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Signs a token with a key of the token key file and prints it.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The token key file (the api's --auth-keys, with the signing secret or private key).
    #[arg(long, env = "CANOPY_TOKEN_KEYS")]
    pub keys: PathBuf,
    /// Who the token is for (recorded as the actor of every call).
    #[arg(long)]
    pub subject: String,
    /// viewer, operator or admin.
    #[arg(long, value_parser = |s: &str| Role::parse(s).map_err(|e| e.to_string()))]
    pub role: Role,
    /// Limit the token to clusters carrying this label (repeat: all must match).
    #[arg(long = "scope", value_parser = parse_label)]
    pub scope: Vec<(String, String)>,
    /// How long the token is valid, e.g. 12h.
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Key id to sign with (default: the first key able to sign).
    #[arg(long)]
    pub kid: Option<String>,
    /// Also write the token to this file (mode 0600), e.g. canopyctl's default token file.
    #[arg(long)]
    pub save: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

pub fn run(_ctx: &Context, cmd: TokenCommand) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Issue(args) => issue(&args),
    }
}

fn issue(args: &IssueArgs) -> Result<(), CliError> {
    let usage = |e: anyhow::Error| CliError::Usage(format!("{e:#}"));
    let cfg = TokenConfig::load(&args.keys).map_err(usage)?;
    let scope: BTreeMap<String, String> = args.scope.iter().cloned().collect();
    let token = canopy_auth::token::issue(
        &cfg,
        args.kid.as_deref(),
        &args.subject,
        args.role,
        scope,
        args.ttl,
    )
    .map_err(usage)?;
    if let Some(path) = &args.save {
        save(path, &token)?;
    }
    println!("{token}");
    Ok(())
}

/// Writes `token` to `path` readable by its owner only.
///
/// # Errors
/// When the file cannot be written.
pub fn save(path: &Path, token: &str) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{token}\n"))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The default token file: `$XDG_CONFIG_HOME/canopy/token`, else `~/.config/canopy/token`.
pub fn default_token_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("canopy/token"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".config/canopy/token"))
}

/// The token to send: `--token` / `CANOPY_TOKEN`, else the token file's first line.
///
/// # Errors
/// When an explicitly named token file cannot be read.
pub fn resolve(token: Option<String>, file: Option<&Path>) -> Result<Option<String>, CliError> {
    if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_owned()));
    }
    let (path, explicit) = match file {
        Some(p) => (p.to_path_buf(), true),
        None => match default_token_file() {
            Some(p) => (p, false),
            None => return Ok(None),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))),
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is known.
#[derive(Clone)]
pub struct BearerInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerInterceptor {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            header: token.and_then(|t| format!("Bearer {t}").parse().ok()),
        }
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}
