//! CommandService (requests published to CONTROL, commands read from the read models) and
//! ScheduleService.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{error, instrument};
use uuid::Uuid;

use canopy_kit::envelope;
use canopy_kit::proto::api::v1::{
    self as api, command_service_server::CommandService, schedule_service_server::ScheduleService,
};
use canopy_kit::proto::event::v1::{
    CommandKind, CommandParams, CommandRequested, CommandTarget, LabelSelector,
    RefreshInventoryParams, RunAuditParams, ScheduleCreated, ScheduleDeleted,
    command_params::Params, command_target::Target, envelope::Body,
};

use super::{CommandControl, CommandRow, PgCommands, RunRow, ScheduleRow};
use crate::adapters::proto::timestamp;
use crate::domain::commands::{
    self as rules, CommandError, CommandsQuery, RunSummary, Status as CommandStatus,
};
use crate::domain::scope::{self, OutOfScope, Scope};

const PRODUCER: &str = "api";
/// How often WatchCommand looks at the read model.
const WATCH_POLL: Duration = Duration::from_millis(100);
/// How long WatchCommand waits for a just-requested command to reach the read model.
const WATCH_APPEAR: Duration = Duration::from_secs(30);

/// Who asked: the token's subject (`anonymous` when the api runs without authentication).
fn actor<T>(request: &Request<T>) -> String {
    crate::auth::actor(request)
}

/// Refuses a target out of the caller's scope (reading the labels of the cluster it names).
async fn check_scope(
    read: &PgCommands,
    scope: &Scope,
    target: Option<&CommandTarget>,
) -> Result<(), Status> {
    if scope.is_fleet() {
        return Ok(());
    }
    let labels = match scope::target_cluster(target) {
        Some(id) => read.cluster_labels(id).await?,
        None => None,
    };
    Ok(scope.admits_target(target, labels.as_ref())?)
}

fn unavailable(e: String) -> Status {
    error!(error = %e, "CONTROL failed");
    Status::unavailable("the control stream is unreachable; retry later")
}

fn time(
    field: &'static str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, CommandError> {
    match t {
        None => Ok(None),
        Some(t) => u32::try_from(t.nanos)
            .ok()
            .and_then(|n| DateTime::from_timestamp(t.seconds, n))
            .map(Some)
            .ok_or(CommandError::Invalid {
                field,
                reason: "not a valid timestamp".into(),
            }),
    }
}

// === impl CommandApi ===

/// One command request, as the three Run RPCs ask it.
struct Ask {
    requested_by: String,
    /// The caller's scope: the target must be in it.
    scope: Scope,
    kind: CommandKind,
    target: Option<CommandTarget>,
    deadline: Option<prost_types::Timestamp>,
    timeout_ms: u64,
    idempotency_key: String,
    params: Params,
}

pub struct CommandApi {
    read: PgCommands,
    control: CommandControl,
    shutdown: CancellationToken,
}

impl CommandApi {
    pub fn new(read: PgCommands, control: CommandControl, shutdown: CancellationToken) -> Self {
        Self {
            read,
            control,
            shutdown,
        }
    }

    /// Checks and publishes one request.
    /// A command without parameters of its own (RunAudit, RefreshInventory).
    async fn run(
        &self,
        request: Request<api::RunCommandRequest>,
        kind: CommandKind,
        params: Params,
    ) -> Result<Response<api::RunCommandResponse>, Status> {
        let requested_by = actor(&request);
        let scope = crate::auth::scope(&request);
        let r = request.into_inner();
        let reply = self
            .request(Ask {
                requested_by,
                scope,
                kind,
                target: r.target,
                deadline: r.deadline,
                timeout_ms: r.timeout_ms,
                idempotency_key: r.idempotency_key,
                params,
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn request(&self, ask: Ask) -> Result<api::RunCommandResponse, Status> {
        let Ask {
            requested_by,
            scope,
            kind,
            target,
            deadline,
            timeout_ms,
            idempotency_key,
            params,
        } = ask;
        rules::check_target(target.as_ref())?;
        // Checked before anything is read or published: a target out of scope (or a cluster
        // unknown to a scoped caller) is refused and the audit trail records the denial.
        check_scope(&self.read, &scope, target.as_ref()).await?;
        let now = Utc::now();
        let deadline = rules::deadline(now, time("deadline", deadline.as_ref())?, timeout_ms)?;
        let command_id = rules::command_id(&requested_by, &idempotency_key)?;
        if !idempotency_key.is_empty()
            && let Some((row, _)) = self.read.get(&command_id, &Scope::fleet()).await?
        {
            return Ok(Response::new(api::RunCommandResponse {
                command_id,
                control_sequence: u64::try_from(row.control_seq).unwrap_or(0),
                duplicate: true,
                deadline: row.deadline.map(timestamp),
            })
            .into_inner());
        }
        let mut env = envelope::new_for(
            None,
            PRODUCER,
            Body::CommandRequested(CommandRequested {
                command_id: command_id.clone(),
                kind: kind as i32,
                target,
                params: Some(CommandParams {
                    params: Some(params),
                }),
                deadline: Some(timestamp(deadline)),
                idempotency_key,
                requested_by,
                ..Default::default()
            }),
        );
        // Nats-Msg-Id = ctl:<command id>: a repeat within the duplicate window is not stored
        // twice.
        env.event_id = command_id.clone();
        env.correlation_id = command_id.clone();
        let stored = self.control.publish(&env).await.map_err(unavailable)?;
        metrics::counter!("canopy_api_commands_requested_total", "kind" => envelope::command_kind_token(kind as i32)).increment(1);
        Ok(api::RunCommandResponse {
            command_id,
            control_sequence: stored.seq,
            duplicate: stored.duplicate,
            deadline: Some(timestamp(deadline)),
        })
    }

    /// A command as `scope` may see it: `None` when missing or out of scope (alike).
    async fn view(
        &self,
        command_id: &str,
        scope: &Scope,
    ) -> Result<Option<api::CommandView>, Status> {
        Ok(self
            .read
            .get(command_id, scope)
            .await?
            .map(|(c, runs)| view(c, runs)))
    }
}

fn target_from_json(v: &serde_json::Value) -> Option<CommandTarget> {
    let target = if let Some(c) = v.get("cluster_id").and_then(|c| c.as_str()) {
        Target::ClusterId(c.to_owned())
    } else {
        let labels = v.get("selector")?.as_object()?;
        Target::Selector(LabelSelector {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect::<HashMap<_, _>>(),
        })
    };
    Some(CommandTarget {
        target: Some(target),
    })
}

fn run_state(state: &str) -> api::RunState {
    match state {
        "dispatched" => api::RunState::Dispatched,
        "accepted" => api::RunState::Accepted,
        "succeeded" => api::RunState::Succeeded,
        "failed" => api::RunState::Failed,
        "timed_out" => api::RunState::TimedOut,
        "rejected" => api::RunState::Rejected,
        _ => api::RunState::Unspecified,
    }
}

fn status_of(s: CommandStatus) -> api::CommandStatus {
    match s {
        CommandStatus::Pending => api::CommandStatus::Pending,
        CommandStatus::Running => api::CommandStatus::Running,
        CommandStatus::Succeeded => api::CommandStatus::Succeeded,
        CommandStatus::Failed => api::CommandStatus::Failed,
        CommandStatus::TimedOut => api::CommandStatus::TimedOut,
        CommandStatus::Rejected => api::CommandStatus::Rejected,
    }
}

fn view(c: CommandRow, runs: Vec<RunRow>) -> api::CommandView {
    let summaries: Vec<RunSummary> = runs
        .iter()
        .map(|r| RunSummary {
            state: r.state.clone(),
            rank: r.rank,
            reason: r.reason.clone(),
        })
        .collect();
    let status = rules::status(&c.rejected_reason, &summaries);
    api::CommandView {
        command_id: c.command_id,
        kind: c.kind,
        target: target_from_json(&c.target.0),
        status: status_of(status) as i32,
        reason: c.rejected_reason,
        detail: c.rejected_detail,
        requested_by: c.requested_by,
        idempotency_key: c.idempotency_key,
        requested_at: Some(timestamp(c.requested_at)),
        deadline: c.deadline.map(timestamp),
        schedule_id: c.schedule_id,
        scheduled_for: c.scheduled_for.map(timestamp),
        runs: runs
            .into_iter()
            .filter(|r| r.rank > 0)
            .map(|r| api::CommandRun {
                cluster_id: r.cluster_id,
                state: run_state(&r.state) as i32,
                dispatched_at: r.dispatched_at.map(timestamp),
                accepted_at: r.accepted_at.map(timestamp),
                finished_at: r.finished_at.map(timestamp),
                reason: r.reason,
                error: r.error,
                summary: r.summary,
                duration_ms: u32::try_from(r.duration_ms).unwrap_or(0),
                result_json: r.result.map(|j| j.0.to_string()).unwrap_or_default(),
            })
            .collect(),
        control_sequence: u64::try_from(c.control_seq).unwrap_or(0),
    }
}

fn is_final(v: &api::CommandView) -> bool {
    matches!(
        api::CommandStatus::try_from(v.status),
        Ok(api::CommandStatus::Succeeded
            | api::CommandStatus::Failed
            | api::CommandStatus::TimedOut
            | api::CommandStatus::Rejected)
    )
}

type ViewStream = Pin<Box<dyn Stream<Item = Result<api::CommandView, Status>> + Send>>;

#[tonic::async_trait]
impl CommandService for CommandApi {
    #[instrument(skip_all)]
    async fn run_audit(
        &self,
        request: Request<api::RunCommandRequest>,
    ) -> Result<Response<api::RunCommandResponse>, Status> {
        self.run(
            request,
            CommandKind::RunAudit,
            Params::RunAudit(RunAuditParams {}),
        )
        .await
    }

    #[instrument(skip_all)]
    async fn refresh_inventory(
        &self,
        request: Request<api::RunCommandRequest>,
    ) -> Result<Response<api::RunCommandResponse>, Status> {
        self.run(
            request,
            CommandKind::RefreshInventory,
            Params::RefreshInventory(RefreshInventoryParams {}),
        )
        .await
    }

    #[instrument(skip_all)]
    async fn check_liveness(
        &self,
        request: Request<api::CheckLivenessRequest>,
    ) -> Result<Response<api::RunCommandResponse>, Status> {
        let by = actor(&request);
        let scope = crate::auth::scope(&request);
        let r = request.into_inner();
        let pool = r.pool.ok_or_else(|| CommandError::Invalid {
            field: "pool",
            reason: "a pool of endpoints is required".into(),
        })?;
        if pool.endpoints.is_empty() {
            return Err(CommandError::Invalid {
                field: "pool.endpoints",
                reason: "at least one endpoint is required".into(),
            }
            .into());
        }
        if let Some(e) = pool
            .endpoints
            .iter()
            .find(|e| e.host.is_empty() || e.port == 0 || e.port > 65_535)
        {
            return Err(CommandError::Invalid {
                field: "pool.endpoints",
                reason: format!("endpoint {:?} needs a host and a port in 1-65535", e.name),
            }
            .into());
        }
        let reply = self
            .request(Ask {
                requested_by: by,
                scope,
                kind: CommandKind::CheckLiveness,
                target: r.target,
                deadline: r.deadline,
                timeout_ms: r.timeout_ms,
                idempotency_key: r.idempotency_key,
                params: Params::CheckLiveness(pool),
            })
            .await?;
        Ok(Response::new(reply))
    }

    #[instrument(skip_all)]
    async fn get_command(
        &self,
        request: Request<api::GetCommandRequest>,
    ) -> Result<Response<api::CommandView>, Status> {
        let scope = crate::auth::scope(&request);
        let id = rules::parse_command_id(&request.into_inner().command_id)?;
        match self.view(&id, &scope).await? {
            Some(v) => Ok(Response::new(v)),
            None => Err(CommandError::NotFound(id).into()),
        }
    }

    #[instrument(skip_all)]
    async fn list_commands(
        &self,
        request: Request<api::ListCommandsRequest>,
    ) -> Result<Response<api::ListCommandsResponse>, Status> {
        let scope = crate::auth::scope(&request);
        let r = request.into_inner();
        let q = CommandsQuery::new(
            &r.cluster_id,
            r.kind,
            &r.schedule_id,
            r.page_size,
            &r.page_token,
        )?;
        let mut rows = self.read.list(&q, &scope).await?;
        let more = rows.len() > q.size as usize;
        rows.truncate(q.size as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some((c, _))) => c.control_seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(api::ListCommandsResponse {
            commands: rows.into_iter().map(|(c, runs)| view(c, runs)).collect(),
            next_page_token,
        }))
    }

    type WatchCommandStream = ViewStream;

    #[instrument(skip_all)]
    async fn watch_command(
        &self,
        request: Request<api::WatchCommandRequest>,
    ) -> Result<Response<Self::WatchCommandStream>, Status> {
        let scope = crate::auth::scope(&request);
        let id = rules::parse_command_id(&request.into_inner().command_id)?;
        let read = self.read.clone();
        let shutdown = self.shutdown.clone();
        // Wait for the command to reach the read model (a watch right after the request).
        let appear_by = tokio::time::Instant::now() + WATCH_APPEAR;
        let first = loop {
            if let Some(v) = self.view(&id, &scope).await? {
                break v;
            }
            // A command that exists out of the caller's scope will never appear: say so now.
            if !scope.is_fleet() && self.read.get(&id, &Scope::fleet()).await?.is_some() {
                return Err(CommandError::NotFound(id).into());
            }
            if tokio::time::Instant::now() >= appear_by {
                return Err(CommandError::NotFound(id).into());
            }
            tokio::select! {
                () = shutdown.cancelled() => return Err(Status::unavailable("the api is shutting down")),
                () = tokio::time::sleep(WATCH_POLL) => {}
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut last = first.encode_to_vec();
            let done = is_final(&first);
            if tx.send(Ok(first)).await.is_err() || done {
                return;
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the api is shutting down; watch again"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
                let v = match read.get(&id, &scope).await {
                    Ok(Some((c, runs))) => view(c, runs),
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let bytes = v.encode_to_vec();
                if bytes == last {
                    continue;
                }
                last = bytes;
                let done = is_final(&v);
                if tx.send(Ok(v)).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

// === impl ScheduleApi ===

pub struct ScheduleApi {
    read: PgCommands,
    control: CommandControl,
}

impl ScheduleApi {
    pub fn new(read: PgCommands, control: CommandControl) -> Self {
        Self { read, control }
    }
}

fn schedule_view(s: ScheduleRow, now: DateTime<Utc>) -> api::ScheduleView {
    let next = rules::cron_spec(&s.cron, &s.time_zone)
        .ok()
        .and_then(|c| c.next_after(now));
    api::ScheduleView {
        schedule_id: s.schedule_id,
        name: s.name,
        cron: s.cron,
        time_zone: s.time_zone,
        kind: s.kind,
        target: target_from_json(&s.target.0),
        deadline_seconds: u32::try_from(s.deadline_seconds).unwrap_or(0),
        created_by: s.created_by,
        created_at: Some(timestamp(s.created_at)),
        next_fire_at: next.map(timestamp),
        control_sequence: u64::try_from(s.created_seq).unwrap_or(0),
    }
}

fn default_params(kind: CommandKind) -> Option<Params> {
    match kind {
        CommandKind::RunAudit => Some(Params::RunAudit(RunAuditParams {})),
        CommandKind::RefreshInventory => Some(Params::RefreshInventory(RefreshInventoryParams {})),
        _ => None,
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    #[instrument(skip_all)]
    async fn create_schedule(
        &self,
        request: Request<api::CreateScheduleRequest>,
    ) -> Result<Response<api::ScheduleView>, Status> {
        let by = actor(&request);
        let scope = crate::auth::scope(&request);
        let r = request.into_inner();
        let invalid = |field, reason: &str| CommandError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if r.name.is_empty() {
            return Err(invalid("name", "a name is required").into());
        }
        // Names are one token: no subject wildcards, separators or spaces.
        canopy_kit::subject::check_token("name", &r.name).map_err(|e| CommandError::Invalid {
            field: "name",
            reason: e.to_string(),
        })?;
        rules::cron_spec(&r.cron, &r.time_zone)?;
        rules::check_target(r.target.as_ref())?;
        // A schedule fires later with this target: it must be in scope now (a selector that
        // includes the scope stays within it whatever labels clusters get).
        check_scope(&self.read, &scope, r.target.as_ref()).await?;
        let kind = CommandKind::try_from(r.kind).unwrap_or(CommandKind::Unspecified);
        let params = match (kind, r.params.and_then(|p| p.params)) {
            (CommandKind::Unspecified, _) => {
                return Err(invalid("kind", "a command kind is required").into());
            }
            (CommandKind::CheckLiveness, Some(p @ Params::CheckLiveness(_))) => p,
            (CommandKind::CheckLiveness, _) => {
                return Err(invalid("params", "a liveness schedule needs a pool").into());
            }
            (CommandKind::RunAudit | CommandKind::RefreshInventory, _) => {
                default_params(kind).ok_or_else(|| invalid("kind", "unsupported"))?
            }
            _ => {
                return Err(invalid(
                    "kind",
                    "only audits, inventories and liveness checks can be scheduled",
                )
                .into());
            }
        };
        let deadline_seconds = match r.deadline_seconds {
            0 => rules::DEFAULT_SCHEDULE_DEADLINE_SECONDS,
            s => s.min(7 * 24 * 3600),
        };
        let created = ScheduleCreated {
            schedule_id: Uuid::now_v7().to_string(),
            name: r.name,
            cron: r.cron,
            time_zone: if r.time_zone.is_empty() {
                "UTC".into()
            } else {
                r.time_zone
            },
            kind: kind as i32,
            target: r.target,
            params: Some(CommandParams {
                params: Some(params),
            }),
            deadline_seconds,
            created_by: by,
        };
        let env = envelope::new_for(None, PRODUCER, Body::ScheduleCreated(created.clone()));
        let stored = self.control.publish(&env).await.map_err(unavailable)?;
        let now = Utc::now();
        Ok(Response::new(schedule_view(
            ScheduleRow {
                schedule_id: created.schedule_id,
                name: created.name,
                cron: created.cron,
                time_zone: created.time_zone,
                kind: created.kind,
                target: sqlx::types::Json(serde_json::Value::Null),
                deadline_seconds: i32::try_from(created.deadline_seconds).unwrap_or(0),
                created_by: created.created_by,
                created_at: now,
                created_seq: i64::try_from(stored.seq).unwrap_or(0),
                deleted_at: None,
            },
            now,
        ))
        .map(|mut v| {
            v.target = created.target;
            v
        }))
    }

    #[instrument(skip_all)]
    async fn list_schedules(
        &self,
        request: Request<api::ListSchedulesRequest>,
    ) -> Result<Response<api::ListSchedulesResponse>, Status> {
        let scope = crate::auth::scope(&request);
        let now = Utc::now();
        let schedules = self.read.schedules(&scope).await?;
        Ok(Response::new(api::ListSchedulesResponse {
            schedules: schedules
                .into_iter()
                .map(|s| schedule_view(s, now))
                .collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn delete_schedule(
        &self,
        request: Request<api::DeleteScheduleRequest>,
    ) -> Result<Response<api::DeleteScheduleResponse>, Status> {
        let by = actor(&request);
        let scope = crate::auth::scope(&request);
        let id = request.into_inner().schedule_id;
        let row = self.read.schedule(&id).await?;
        // A scoped caller cannot tell a schedule out of its scope from a missing one.
        if !scope.is_fleet() {
            let target = row.as_ref().and_then(|s| target_from_json(&s.target.0));
            let labels = match scope::target_cluster(target.as_ref()) {
                Some(id) => self.read.cluster_labels(id).await?,
                None => None,
            };
            if row.is_none()
                || scope
                    .admits_target(target.as_ref(), labels.as_ref())
                    .is_err()
            {
                return Err(OutOfScope::Object {
                    what: "schedule",
                    id,
                }
                .into());
            }
        }
        match row {
            Some(s) if s.deleted_at.is_none() => {}
            _ => return Err(CommandError::ScheduleNotFound(id).into()),
        }
        let env = envelope::new_for(
            None,
            PRODUCER,
            Body::ScheduleDeleted(ScheduleDeleted {
                schedule_id: id,
                deleted_by: by,
            }),
        );
        let stored = self.control.publish(&env).await.map_err(unavailable)?;
        Ok(Response::new(api::DeleteScheduleResponse {
            control_sequence: stored.seq,
        }))
    }
}
