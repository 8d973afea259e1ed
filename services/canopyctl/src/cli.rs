//! The command line: global flags and one subcommand tree per area (clusters, events, ...).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "canopyctl",
    version,
    about = "Command-line client of the Canopy fleet API"
)]
pub struct Cli {
    /// URL of the Canopy API.
    #[arg(
        long,
        global = true,
        env = "CANOPY_API",
        default_value = "http://127.0.0.1:50051"
    )]
    pub api: String,
    /// Bearer token for the API (default: the file of --token-file).
    #[arg(long, global = true, env = "CANOPY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token, read when --token / CANOPY_TOKEN is not set
    /// (default: $XDG_CONFIG_HOME/canopy/token or ~/.config/canopy/token).
    #[arg(long, global = true, env = "CANOPY_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, env = "CANOPY_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Deadline for connecting and for each request (watches only bound the connect), e.g. 10s.
    #[arg(long, global = true, env = "CANOPY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON: one document per command, one object per line (NDJSON) for streams.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clusters of the fleet.
    #[command(subcommand)]
    Clusters(ClustersCommand),
    /// Events of the fleet, as stored in FLEET_EVENTS.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The fleet's audit policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Exemptions of a check within a scope, until they expire.
    #[command(subcommand)]
    Derogations(DerogationsCommand),
    /// Audit findings of the fleet.
    #[command(subcommand)]
    Findings(FindingsCommand),
    /// Open and exempted findings by severity, a score and its history.
    Posture(PostureArgs),
    /// Audits the agents ran.
    #[command(subcommand)]
    Audits(AuditsCommand),
    /// NATS credentials of a deployment (offline).
    #[command(subcommand)]
    Nats(crate::commands::nats::NatsCommand),
    /// API bearer tokens (offline, from a token key file).
    #[command(subcommand)]
    Token(crate::commands::token::TokenCommand),
    /// Fleet health as the doctor judges it: each cluster's state and why.
    Health(crate::commands::health::HealthArgs),
    /// What the doctor found wrong.
    #[command(subcommand)]
    Diagnoses(crate::commands::health::DiagnosesCommand),
    /// What the doctor proposes (or did) about it; approve or reject proposals.
    #[command(subcommand)]
    Remediations(crate::commands::health::RemediationsCommand),
    /// Sizing recommendations per workload, from usage against requests.
    #[command(subcommand)]
    Recommendations(crate::commands::health::RecommendationsCommand),
    /// Run a command on clusters now: audit, inventory or liveness.
    #[command(subcommand)]
    Run(crate::cli_commands::RunCommand),
    /// Commands sent to clusters and what became of them.
    #[command(subcommand)]
    Commands(crate::cli_commands::CommandsCommand),
    /// Commands fired on a cron schedule.
    #[command(subcommand)]
    Schedules(crate::cli_commands::SchedulesCommand),
    /// The audit trail of the API (admins): `list` what was recorded, `verify` its hash chain.
    #[command(subcommand)]
    Trail(crate::commands::trail::TrailCommand),
    /// Leaf clusters asking to join the fleet; approve or reject their requests.
    #[command(subcommand)]
    Interconnects(crate::commands::interconnects::InterconnectsCommand),
    /// Audit Kubernetes manifests offline (files, directories, `-` for stdin), e.g. in CI.
    /// Exits 1 when a finding reaches --fail-on, 2 on unreadable input.
    Audit(canopy_audit::cli::AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClustersCommand {
    /// Every cluster, ordered by id.
    List(ListClustersArgs),
    /// One cluster, with its inventory by kind.
    Get(GetClusterArgs),
    /// Revoke an approved cluster: its link is refused from now on and no command reaches it.
    Revoke(crate::commands::interconnects::RevokeClusterArgs),
}

#[derive(Debug, Args)]
pub struct ListClustersArgs {
    /// Clusters fetched per request (every page is fetched).
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,
    /// Only clusters with these labels, `key=value` (repeatable or comma-separated).
    #[arg(long, short = 'l', value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
}

/// `key=value`: a cluster label.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Debug, Args)]
pub struct GetClusterArgs {
    /// Cluster id.
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow events until interrupted (Ctrl-C); by default only new ones.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this cluster's events.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only this event type, e.g. agent.heartbeat or heartbeat (repeat or comma-separate).
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Start at this stream sequence (1 = the beginning of the log).
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub from_seq: Option<u64>,
    /// Start at events stored this long ago (5m, 2h) or since an RFC 3339 time.
    #[arg(long, value_name = "DURATION_OR_RFC3339", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

// === audit area: policy, derogations, findings, posture, audits ===

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The current policy (as YAML that `policy set` takes back; JSON with -o json).
    Get,
    /// Replaces the policy with the one in a YAML or JSON file.
    Set(SetPolicyArgs),
}

#[derive(Debug, Args)]
pub struct SetPolicyArgs {
    /// The policy: disabled_checks, severity_overrides, registry_allow_list,
    /// honour_ignore_annotations, level (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: std::path::PathBuf,
    /// Refuse the change unless the policy is still at this version (as `policy get` showed).
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Why the policy changes (kept with the version).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum DerogationsCommand {
    /// Derogations, newest first.
    List(ListDerogationsArgs),
    /// Exempts one check within a scope until an expiry.
    Grant(GrantArgs),
    /// Ends a derogation now.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DerogationStateArg {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Args)]
pub struct ListDerogationsArgs {
    /// Only these states (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub state: Vec<DerogationStateArg>,
    /// Only derogations of this check.
    #[arg(long)]
    pub check: Option<String>,
    /// Only derogations whose scope names this cluster (or none).
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The check to exempt, e.g. HOST-NET.
    #[arg(long)]
    pub check: String,
    /// Only on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only on clusters with these labels, `key=value` (repeatable or comma-separated).
    #[arg(long = "cluster-label", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    pub cluster_labels: Vec<(String, String)>,
    /// Only in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only on this object, `Kind/name` (e.g. DaemonSet/ingress-nginx).
    #[arg(long, value_name = "KIND/NAME")]
    pub workload: Option<String>,
    /// Only for this container.
    #[arg(long)]
    pub container: Option<String>,
    /// Why the exception is acceptable.
    #[arg(long)]
    pub reason: String,
    /// Who approved it.
    #[arg(long)]
    pub approver: String,
    /// Expires this long from now, e.g. 30d.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "expires_at", required_unless_present = "expires_at")]
    pub expires_in: Option<Duration>,
    /// Expires at this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The derogation id (as `derogations list` shows).
    pub id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum FindingsCommand {
    /// Current findings, most severe first.
    List(ListFindingsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindingStateArg {
    Open,
    Exempted,
    Resolved,
}

#[derive(Debug, Args)]
pub struct ListFindingsArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    /// app.kubernetes.io/name of the object (else its namespace).
    #[arg(long)]
    pub application: Option<String>,
    #[arg(long)]
    pub check: Option<String>,
    /// At least this severity.
    #[arg(long, value_enum)]
    pub min_severity: Option<SeverityArg>,
    /// Exactly these severities (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub severity: Vec<SeverityArg>,
    /// Findings citing a standard starting with this, e.g. pss:baseline or kubescape:C-0038.
    #[arg(long)]
    pub standard: Option<String>,
    /// These states (default: open and exempted).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub state: Vec<FindingStateArg>,
    /// At most this many findings (every page is fetched otherwise).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct PostureArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub application: Option<String>,
    /// Points of history.
    #[arg(long, default_value_t = 10)]
    pub history: u32,
}

#[derive(Debug, Subcommand)]
pub enum AuditsCommand {
    /// Audits, newest first.
    List(ListAuditsArgs),
    /// One audit with its summary.
    Get(GetAuditArgs),
}

#[derive(Debug, Args)]
pub struct ListAuditsArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    /// At most this many audits.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct GetAuditArgs {
    #[arg(long)]
    pub cluster: String,
    pub audit_id: String,
}

/// An RFC 3339 time.
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{value:?} is not an RFC 3339 time"))
}

/// `5m`, `1h30m` (ago) or `2025-01-31T12:00:00Z`.
pub fn parse_since(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(ago) = humantime::parse_duration(value) {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Utc::now()
            .checked_sub_signed(ago)
            .ok_or_else(|| format!("{value} ago is out of range"));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{value:?} is neither a duration (5m, 2h) nor an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let t = parse_since("2025-01-31T12:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2025-01-31T11:00:00+00:00");
        let since = parse_since("5m").unwrap();
        let ago = Utc::now() - since;
        assert!(
            ago >= chrono::Duration::minutes(5) && ago < chrono::Duration::minutes(6),
            "{ago}"
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn parses_a_watch_command_line() {
        let cli = Cli::try_parse_from([
            "canopyctl",
            "-o",
            "json",
            "events",
            "watch",
            "--cluster",
            "a",
            "--type",
            "heartbeat,agent.started",
            "--type",
            "inventory.snapshot",
            "--from-seq",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Events(EventsCommand::Watch(w)) = cli.command else {
            panic!("not a watch");
        };
        assert_eq!(
            w.types,
            ["heartbeat", "agent.started", "inventory.snapshot"]
        );
        assert_eq!(w.from_seq, Some(3));
        let both = Cli::try_parse_from([
            "canopyctl",
            "events",
            "watch",
            "--from-seq",
            "3",
            "--since",
            "5m",
        ]);
        assert!(both.is_err());
    }
}
