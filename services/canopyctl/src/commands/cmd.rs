//! `canopyctl run audit|inventory|liveness`, `commands list|get|watch`,
//! `schedules create|list|delete`.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use serde::Serialize;

use canopy_proto::api::v1::{
    CheckLivenessRequest, CommandRun, CommandStatus, CommandView, CreateScheduleRequest,
    DeleteScheduleRequest, GetCommandRequest, ListCommandsRequest, ListSchedulesRequest,
    RunCommandRequest, RunCommandResponse, RunState, ScheduleView, WatchCommandRequest,
    command_service_client::CommandServiceClient, schedule_service_client::ScheduleServiceClient,
};
use canopy_proto::event::v1::{
    CommandKind, CommandTarget, LabelSelector, LivenessEndpoint, LivenessPool, ProbeProtocol,
    command_target::Target,
};

use super::{ApiChannel, Context};
use crate::cli::OutputFormat;
use crate::cli_commands::{
    CommandsCommand, KindArg, LivenessArgs, RunArgs, RunCommand, SchedulesCommand, TargetArgs,
};
use crate::error::CliError;
use crate::output::{self, Align, rfc3339};

fn target(t: &TargetArgs) -> Result<CommandTarget, CliError> {
    let target = match (&t.cluster, t.selector.is_empty()) {
        (Some(c), true) => Target::ClusterId(c.clone()),
        (None, false) => Target::Selector(LabelSelector {
            match_labels: t.selector.iter().cloned().collect::<HashMap<_, _>>(),
        }),
        _ => {
            return Err(CliError::Usage(
                "give either --cluster ID or --selector KEY=VALUE".into(),
            ));
        }
    };
    Ok(CommandTarget {
        target: Some(target),
    })
}

fn target_text(t: Option<&CommandTarget>) -> String {
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::ClusterId(c)) => c.clone(),
        Some(Target::Selector(s)) => {
            let labels: BTreeMap<_, _> = s.match_labels.iter().collect();
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
        None => "-".into(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match CommandKind::try_from(kind).unwrap_or(CommandKind::Unspecified) {
        CommandKind::RunAudit => "audit",
        CommandKind::RefreshInventory => "inventory",
        CommandKind::CheckLiveness => "liveness",
        CommandKind::RolloutRestart => "rollout-restart",
        CommandKind::DeletePod => "delete-pod",
        CommandKind::CordonNode => "cordon-node",
        CommandKind::ScaleWorkload => "scale-workload",
        CommandKind::Unspecified => "-",
    }
}

fn kind_of(k: KindArg) -> CommandKind {
    match k {
        KindArg::Audit => CommandKind::RunAudit,
        KindArg::Inventory => CommandKind::RefreshInventory,
        KindArg::Liveness => CommandKind::CheckLiveness,
    }
}

fn status_name(s: i32) -> &'static str {
    match CommandStatus::try_from(s).unwrap_or(CommandStatus::Unspecified) {
        CommandStatus::Pending => "pending",
        CommandStatus::Running => "running",
        CommandStatus::Succeeded => "succeeded",
        CommandStatus::Failed => "failed",
        CommandStatus::TimedOut => "timed_out",
        CommandStatus::Rejected => "rejected",
        CommandStatus::Unspecified => "-",
    }
}

fn run_state_name(s: i32) -> &'static str {
    match RunState::try_from(s).unwrap_or(RunState::Unspecified) {
        RunState::Dispatched => "dispatched",
        RunState::Accepted => "accepted",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::TimedOut => "timed_out",
        RunState::Rejected => "rejected",
        RunState::Unspecified => "-",
    }
}

fn is_final(v: &CommandView) -> bool {
    matches!(
        CommandStatus::try_from(v.status),
        Ok(CommandStatus::Succeeded
            | CommandStatus::Failed
            | CommandStatus::TimedOut
            | CommandStatus::Rejected)
    )
}

#[derive(Debug, Serialize)]
struct RunJson {
    cluster_id: String,
    state: &'static str,
    summary: String,
    reason: String,
    error: String,
    duration_ms: u32,
    dispatched_at: Option<String>,
    accepted_at: Option<String>,
    finished_at: Option<String>,
    result: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct CommandJson {
    command_id: String,
    kind: &'static str,
    target: String,
    status: &'static str,
    reason: String,
    detail: String,
    requested_by: String,
    requested_at: Option<String>,
    deadline: Option<String>,
    schedule_id: String,
    runs: Vec<RunJson>,
}

fn run_json(r: &CommandRun) -> RunJson {
    RunJson {
        cluster_id: r.cluster_id.clone(),
        state: run_state_name(r.state),
        summary: r.summary.clone(),
        reason: r.reason.clone(),
        error: r.error.clone(),
        duration_ms: r.duration_ms,
        dispatched_at: rfc3339(r.dispatched_at.as_ref()),
        accepted_at: rfc3339(r.accepted_at.as_ref()),
        finished_at: rfc3339(r.finished_at.as_ref()),
        result: serde_json::from_str(&r.result_json).ok(),
    }
}

fn command_json(v: &CommandView) -> CommandJson {
    CommandJson {
        command_id: v.command_id.clone(),
        kind: kind_name(v.kind),
        target: target_text(v.target.as_ref()),
        status: status_name(v.status),
        reason: v.reason.clone(),
        detail: v.detail.clone(),
        requested_by: v.requested_by.clone(),
        requested_at: rfc3339(v.requested_at.as_ref()),
        deadline: rfc3339(v.deadline.as_ref()),
        schedule_id: v.schedule_id.clone(),
        runs: v.runs.iter().map(run_json).collect(),
    }
}

/// What one run came to, in one line.
fn run_line(r: &CommandRun) -> String {
    let what = if !r.summary.is_empty() {
        r.summary.clone()
    } else if !r.reason.is_empty() {
        format!("{}: {}", r.reason, r.error)
    } else {
        String::new()
    };
    format!("{}  {}  {}", r.cluster_id, run_state_name(r.state), what)
        .trim_end()
        .to_owned()
}

fn details(v: &CommandView) -> String {
    let mut out = output::key_values(&[
        ("Command", v.command_id.clone()),
        ("Kind", kind_name(v.kind).to_owned()),
        ("Target", target_text(v.target.as_ref())),
        ("Status", status_name(v.status).to_owned()),
        ("Requested by", v.requested_by.clone()),
        (
            "Requested at",
            rfc3339(v.requested_at.as_ref()).unwrap_or_default(),
        ),
        ("Deadline", rfc3339(v.deadline.as_ref()).unwrap_or_default()),
    ]);
    if !v.reason.is_empty() {
        out.push_str(&output::key_values(&[(
            "Rejected",
            format!("{}: {}", v.reason, v.detail),
        )]));
    }
    if !v.schedule_id.is_empty() {
        out.push_str(&output::key_values(&[("Schedule", v.schedule_id.clone())]));
    }
    if !v.runs.is_empty() {
        out.push('\n');
        out.push_str(&runs_table(&v.runs));
    }
    out
}

fn runs_table(runs: &[CommandRun]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let what = if r.summary.is_empty() && !r.reason.is_empty() {
                format!("{}: {}", r.reason, r.error)
            } else {
                r.summary.clone()
            };
            vec![
                r.cluster_id.clone(),
                run_state_name(r.state).to_owned(),
                format!("{}ms", r.duration_ms),
                what,
            ]
        })
        .collect();
    output::table(
        &[
            ("CLUSTER", Align::Left),
            ("STATE", Align::Left),
            ("TOOK", Align::Right),
            ("RESULT", Align::Left),
        ],
        &rows,
    )
}

// === run ===

pub async fn run(ctx: &Context, cmd: RunCommand) -> Result<(), CliError> {
    let mut client = CommandServiceClient::new(ctx.unary_channel().await?);
    let timeout_ms = u64::try_from(ctx.timeout.as_millis()).unwrap_or(u64::MAX);
    let (reply, wait) = match cmd {
        RunCommand::Audit(a) => {
            let wait = a.wait;
            let req = run_request(&a, timeout_ms)?;
            (client.run_audit(req).await?.into_inner(), wait)
        }
        RunCommand::Inventory(a) => {
            let wait = a.wait;
            let req = run_request(&a, timeout_ms)?;
            (client.refresh_inventory(req).await?.into_inner(), wait)
        }
        RunCommand::Liveness(l) => {
            let wait = l.run.wait;
            let req = liveness_request(&l, timeout_ms)?;
            (client.check_liveness(req).await?.into_inner(), wait)
        }
    };
    if !wait {
        return print_requested(ctx, &reply);
    }
    if ctx.output == OutputFormat::Table {
        eprintln!(
            "command {}{}",
            reply.command_id,
            if reply.duplicate {
                " (already requested)"
            } else {
                ""
            }
        );
    }
    follow(ctx, &reply.command_id).await
}

fn run_request(a: &RunArgs, timeout_ms: u64) -> Result<RunCommandRequest, CliError> {
    Ok(RunCommandRequest {
        target: Some(target(&a.target)?),
        deadline: None,
        timeout_ms,
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
    })
}

/// `NAME=HOST:PORT[/PATH]`.
fn endpoint(s: &str, protocol: ProbeProtocol) -> Result<LivenessEndpoint, CliError> {
    let bad = || CliError::Usage(format!("{s:?} is not NAME=HOST:PORT[/PATH]"));
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u32 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || port > 65_535 {
        return Err(bad());
    }
    Ok(LivenessEndpoint {
        name: name.to_owned(),
        host: host.to_owned(),
        port,
        protocol: protocol as i32,
        path: path.to_owned(),
        expect_status: Vec::new(),
    })
}

fn liveness_request(l: &LivenessArgs, timeout_ms: u64) -> Result<CheckLivenessRequest, CliError> {
    let mut endpoints = Vec::new();
    for s in &l.tcp {
        endpoints.push(endpoint(s, ProbeProtocol::Tcp)?);
    }
    for s in &l.http {
        endpoints.push(endpoint(s, ProbeProtocol::Http)?);
    }
    if endpoints.is_empty() {
        return Err(CliError::Usage(
            "give at least one --tcp or --http endpoint".into(),
        ));
    }
    Ok(CheckLivenessRequest {
        target: Some(target(&l.run.target)?),
        deadline: None,
        timeout_ms,
        idempotency_key: l.run.idempotency_key.clone().unwrap_or_default(),
        pool: Some(LivenessPool {
            name: l.pool.clone(),
            endpoints,
            timeout_ms: u32::try_from(l.probe_timeout.as_millis()).unwrap_or(u32::MAX),
            concurrency: l.concurrency,
        }),
    })
}

fn print_requested(ctx: &Context, r: &RunCommandResponse) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct Requested<'a> {
        command_id: &'a str,
        control_sequence: u64,
        duplicate: bool,
        deadline: Option<String>,
    }
    let text = match ctx.output {
        OutputFormat::Json => output::json(
            &Requested {
                command_id: &r.command_id,
                control_sequence: r.control_sequence,
                duplicate: r.duplicate,
                deadline: rfc3339(r.deadline.as_ref()),
            },
            true,
        ),
        OutputFormat::Table => format!(
            "{}{}\n",
            r.command_id,
            if r.duplicate {
                " (already requested)"
            } else {
                ""
            }
        ),
    };
    output::emit(&text)?;
    Ok(())
}

/// Follows a command to its end, printing each run as it ends; Err(Exit(1)) unless it
/// succeeded everywhere.
async fn follow(ctx: &Context, command_id: &str) -> Result<(), CliError> {
    let mut client = CommandServiceClient::new(ctx.stream_channel().await?);
    let mut stream = client
        .watch_command(WatchCommandRequest {
            command_id: command_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut printed: HashMap<String, i32> = HashMap::new();
    let mut last = None;
    while let Some(v) = stream.message().await? {
        match ctx.output {
            OutputFormat::Json => output::emit(&output::json(&command_json(&v), false))?,
            OutputFormat::Table => {
                for r in &v.runs {
                    if printed.get(&r.cluster_id) != Some(&r.state) {
                        printed.insert(r.cluster_id.clone(), r.state);
                        output::emit(&format!("{}\n", run_line(r)))?;
                    }
                }
            }
        }
        let done = is_final(&v);
        last = Some(v);
        if done {
            break;
        }
    }
    let Some(v) = last else {
        return Err(CliError::Exit(1));
    };
    if ctx.output == OutputFormat::Table {
        let mut end = format!("{}: {}", v.command_id, status_name(v.status));
        if !v.reason.is_empty() {
            end.push_str(&format!(" ({}: {})", v.reason, v.detail));
        }
        eprintln!("{end}");
    }
    match CommandStatus::try_from(v.status) {
        Ok(CommandStatus::Succeeded) => Ok(()),
        _ => Err(CliError::Exit(1)),
    }
}

// === commands ===

pub async fn commands(ctx: &Context, cmd: CommandsCommand) -> Result<(), CliError> {
    match cmd {
        CommandsCommand::List(a) => {
            let mut client = CommandServiceClient::new(ctx.unary_channel().await?);
            let list = client
                .list_commands(ListCommandsRequest {
                    cluster_id: a.cluster.unwrap_or_default(),
                    kind: a.kind.map_or(0, |k| kind_of(k) as i32),
                    schedule_id: a.schedule.unwrap_or_default(),
                    page_size: a.limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner()
                .commands;
            let text = match ctx.output {
                OutputFormat::Json => {
                    output::json(&list.iter().map(command_json).collect::<Vec<_>>(), true)
                }
                OutputFormat::Table => commands_table(&list),
            };
            output::emit(&text)?;
            Ok(())
        }
        CommandsCommand::Get(a) => {
            let mut client = CommandServiceClient::new(ctx.unary_channel().await?);
            let v = client
                .get_command(GetCommandRequest {
                    command_id: a.command_id,
                })
                .await?
                .into_inner();
            let text = match ctx.output {
                OutputFormat::Json => output::json(&command_json(&v), true),
                OutputFormat::Table => details(&v),
            };
            output::emit(&text)?;
            Ok(())
        }
        CommandsCommand::Watch(a) => follow(ctx, &a.command_id).await,
    }
}

fn commands_table(list: &[CommandView]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let ok = v
                .runs
                .iter()
                .filter(|r| r.state == RunState::Succeeded as i32)
                .count();
            vec![
                v.command_id.clone(),
                kind_name(v.kind).to_owned(),
                target_text(v.target.as_ref()),
                status_name(v.status).to_owned(),
                format!("{ok}/{}", v.runs.len()),
                output::datetime(v.requested_at.as_ref())
                    .map(|t| output::age(t, now))
                    .unwrap_or_default(),
                v.requested_by.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            ("ID", Align::Left),
            ("KIND", Align::Left),
            ("TARGET", Align::Left),
            ("STATUS", Align::Left),
            ("OK", Align::Right),
            ("REQUESTED", Align::Left),
            ("BY", Align::Left),
        ],
        &rows,
    )
}

// === schedules ===

#[derive(Debug, Serialize)]
struct ScheduleJson {
    schedule_id: String,
    name: String,
    cron: String,
    time_zone: String,
    kind: &'static str,
    target: String,
    deadline_seconds: u32,
    created_by: String,
    created_at: Option<String>,
    next_fire_at: Option<String>,
}

fn schedule_json(s: &ScheduleView) -> ScheduleJson {
    ScheduleJson {
        schedule_id: s.schedule_id.clone(),
        name: s.name.clone(),
        cron: s.cron.clone(),
        time_zone: s.time_zone.clone(),
        kind: kind_name(s.kind),
        target: target_text(s.target.as_ref()),
        deadline_seconds: s.deadline_seconds,
        created_by: s.created_by.clone(),
        created_at: rfc3339(s.created_at.as_ref()),
        next_fire_at: rfc3339(s.next_fire_at.as_ref()),
    }
}

fn schedule_client(channel: ApiChannel) -> ScheduleServiceClient<ApiChannel> {
    ScheduleServiceClient::new(channel)
}

pub async fn schedules(ctx: &Context, cmd: SchedulesCommand) -> Result<(), CliError> {
    let mut client = schedule_client(ctx.unary_channel().await?);
    match cmd {
        SchedulesCommand::Create(a) => {
            if a.kind == KindArg::Liveness {
                return Err(CliError::Usage(
                    "liveness schedules need a pool: create them through the API".into(),
                ));
            }
            let s = client
                .create_schedule(CreateScheduleRequest {
                    name: a.name,
                    cron: a.cron,
                    time_zone: a.time_zone,
                    kind: kind_of(a.kind) as i32,
                    target: Some(target(&a.target)?),
                    params: None,
                    deadline_seconds: u32::try_from(a.deadline.as_secs()).unwrap_or(u32::MAX),
                })
                .await?
                .into_inner();
            let text = match ctx.output {
                OutputFormat::Json => output::json(&schedule_json(&s), true),
                OutputFormat::Table => format!(
                    "{}  next tick {}\n",
                    s.schedule_id,
                    rfc3339(s.next_fire_at.as_ref()).unwrap_or_else(|| "-".into())
                ),
            };
            output::emit(&text)?;
        }
        SchedulesCommand::List => {
            let list = client
                .list_schedules(ListSchedulesRequest {})
                .await?
                .into_inner()
                .schedules;
            let text = match ctx.output {
                OutputFormat::Json => {
                    output::json(&list.iter().map(schedule_json).collect::<Vec<_>>(), true)
                }
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|s| {
                            vec![
                                s.schedule_id.clone(),
                                s.name.clone(),
                                format!("{} ({})", s.cron, s.time_zone),
                                kind_name(s.kind).to_owned(),
                                target_text(s.target.as_ref()),
                                rfc3339(s.next_fire_at.as_ref()).unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            ("ID", Align::Left),
                            ("NAME", Align::Left),
                            ("CRON", Align::Left),
                            ("KIND", Align::Left),
                            ("TARGET", Align::Left),
                            ("NEXT", Align::Left),
                        ],
                        &rows,
                    )
                }
            };
            output::emit(&text)?;
        }
        SchedulesCommand::Delete(a) => {
            let r = client
                .delete_schedule(DeleteScheduleRequest {
                    schedule_id: a.schedule_id.clone(),
                })
                .await?
                .into_inner();
            if ctx.output == OutputFormat::Json {
                output::emit(&output::json(
                    &serde_json::json!({ "schedule_id": a.schedule_id, "control_sequence": r.control_sequence }),
                    true,
                ))?;
            } else {
                output::emit(&format!("deleted {}\n", a.schedule_id))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_name_host_port_and_path() {
        let e = endpoint("web=shop.svc:8080/healthz", ProbeProtocol::Http)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.name.as_str(), e.host.as_str(), e.port, e.path.as_str()),
            ("web", "shop.svc", 8080, "/healthz")
        );
        let e = endpoint("db=10.0.0.5:5432", ProbeProtocol::Tcp).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.port, e.path.as_str()), (5432, ""));
        for bad in ["db", "db=host", "db=host:0", "db=:80", "db=host:99999"] {
            assert!(endpoint(bad, ProbeProtocol::Tcp).is_err(), "{bad}");
        }
    }
}
