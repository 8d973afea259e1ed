//! The command line of `run`, `commands` and `schedules`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::cli::parse_label;

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Audit the target clusters now; --wait prints each cluster's audit summary.
    Audit(RunArgs),
    /// Take an inventory snapshot of the target clusters now.
    Inventory(RunArgs),
    /// Probe endpoints from inside the target clusters (TCP connect or HTTP GET).
    Liveness(LivenessArgs),
}

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// The one cluster to run on.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Every cluster with these labels, `key=value` (repeatable or comma-separated).
    #[arg(long, short = 'l', value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Follow the command until every cluster is done; exit 1 when one failed, timed out or the
    /// command was refused. The global --timeout is the command's deadline from now (no cluster
    /// starts it later).
    #[arg(long)]
    pub wait: bool,
    /// The same key twice gives the same command, not two.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct LivenessArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Name of the pool (shown in results).
    #[arg(long, default_value = "adhoc")]
    pub pool: String,
    /// A TCP endpoint, `NAME=HOST:PORT` (repeatable).
    #[arg(long = "tcp", value_name = "NAME=HOST:PORT")]
    pub tcp: Vec<String>,
    /// An HTTP endpoint, `NAME=HOST:PORT[/PATH]` (repeatable); alive on a 2xx or 3xx answer.
    #[arg(long = "http", value_name = "NAME=HOST:PORT[/PATH]")]
    pub http: Vec<String>,
    /// Timeout of each probe.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Endpoints probed at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Audit,
    Inventory,
    Liveness,
}

#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Commands, newest first.
    List(ListCommandsArgs),
    /// One command with its run on every cluster.
    Get(CommandIdArgs),
    /// Follow a command's status until it is done.
    Watch(CommandIdArgs),
}

#[derive(Debug, Args)]
pub struct ListCommandsArgs {
    /// Only commands that ran on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only commands fired by this schedule.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Most commands shown.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct CommandIdArgs {
    pub command_id: String,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Fire a command on a cron schedule.
    Create(CreateScheduleArgs),
    /// Schedules not deleted.
    List,
    /// Stop a schedule.
    Delete(ScheduleIdArgs),
}

#[derive(Debug, Args)]
pub struct CreateScheduleArgs {
    #[arg(long)]
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *" (six with
    /// seconds first).
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    #[arg(long, value_enum)]
    pub kind: KindArg,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Deadline of each fired command, from its tick.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
}

#[derive(Debug, Args)]
pub struct ScheduleIdArgs {
    pub schedule_id: String,
}
