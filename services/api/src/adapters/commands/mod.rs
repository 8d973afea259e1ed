//! The command area's outside world: the `commands`, `command_runs` and `schedules` read models
//! (written by ingestion), CONTROL for new requests and schedules, and the gRPC services.

pub mod grpc;

use std::collections::BTreeMap;

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::Envelope;

use super::ReadModelError;
use crate::domain::commands::CommandsQuery;
use crate::domain::scope::{Scope, sql as scope_sql};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommandRow {
    pub command_id: String,
    pub kind: i32,
    pub target: sqlx::types::Json<serde_json::Value>,
    pub requested_by: String,
    pub idempotency_key: String,
    pub schedule_id: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub rejected_reason: String,
    pub rejected_detail: String,
    pub control_seq: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub command_id: String,
    pub cluster_id: String,
    pub state: String,
    pub rank: i16,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub error: String,
    pub summary: String,
    pub duration_ms: i32,
    pub result: Option<sqlx::types::Json<serde_json::Value>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub schedule_id: String,
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub kind: i32,
    pub target: sqlx::types::Json<serde_json::Value>,
    pub deadline_seconds: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub created_seq: i64,
    pub deleted_at: Option<DateTime<Utc>>,
}

const COMMAND_COLUMNS: &str = "command_id, kind, target, requested_by, idempotency_key,
    schedule_id, scheduled_for, requested_at, deadline, rejected_reason, rejected_detail,
    control_seq";
const RUN_COLUMNS: &str = "command_id, cluster_id, state, rank, dispatched_at, accepted_at,
    finished_at, reason, error, summary, duration_ms, result";

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> ReadModelError {
    move |source| ReadModelError { action, source }
}

/// Reads commands and schedules from Postgres.
#[derive(Clone)]
pub struct PgCommands {
    pool: PgPool,
}

impl PgCommands {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One command, when its target is in `scope`.
    pub async fn get(
        &self,
        command_id: &str,
        scope: &Scope,
    ) -> Result<Option<(CommandRow, Vec<RunRow>)>, ReadModelError> {
        let row: Option<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c WHERE command_id = $1 AND {}",
            scope_sql::target_in_scope("c.target", 2)
        )))
        .bind(command_id)
        .bind(sqlx::types::Json(scope.labels()))
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("read a command"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut runs = self.runs(std::slice::from_ref(&row.command_id)).await?;
        let runs = runs.remove(&row.command_id).unwrap_or_default();
        Ok(Some((row, runs)))
    }

    /// Up to `q.size + 1` commands whose target is in `scope`, newest first.
    pub async fn list(
        &self,
        q: &CommandsQuery,
        scope: &Scope,
    ) -> Result<Vec<(CommandRow, Vec<RunRow>)>, ReadModelError> {
        let rows: Vec<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c
             WHERE ($1 = '' OR EXISTS (SELECT 1 FROM command_runs r
                                       WHERE r.command_id = c.command_id AND r.cluster_id = $1))
               AND ($2 = 0 OR kind = $2)
               AND ($3 = '' OR schedule_id = $3)
               AND ($4::BIGINT IS NULL OR control_seq < $4)
               AND {}
             ORDER BY control_seq DESC
             LIMIT $5",
            scope_sql::target_in_scope("c.target", 6)
        )))
        .bind(&q.cluster_id)
        .bind(q.kind)
        .bind(&q.schedule_id)
        .bind(q.before_seq)
        .bind(i64::from(q.size) + 1)
        .bind(sqlx::types::Json(scope.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list commands"))?;
        let ids: Vec<String> = rows.iter().map(|r| r.command_id.clone()).collect();
        let mut runs = self.runs(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let runs = runs.remove(&r.command_id).unwrap_or_default();
                (r, runs)
            })
            .collect())
    }

    /// The labels of a cluster, `None` when it is unknown.
    pub async fn cluster_labels(
        &self,
        cluster_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ReadModelError> {
        super::postgres::cluster_labels(&self.pool, cluster_id).await
    }

    async fn runs(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<RunRow>>, ReadModelError> {
        let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM command_runs WHERE command_id = ANY($1)
             ORDER BY command_id, cluster_id"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("read command runs"))?;
        let mut out: std::collections::HashMap<String, Vec<RunRow>> = Default::default();
        for r in rows {
            out.entry(r.command_id.clone()).or_default().push(r);
        }
        Ok(out)
    }

    /// Schedules not deleted whose target is in `scope`, oldest first.
    pub async fn schedules(&self, scope: &Scope) -> Result<Vec<ScheduleRow>, ReadModelError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT schedule_id, name, cron, time_zone, kind, target, deadline_seconds,
                    created_by, created_at, created_seq, deleted_at
             FROM schedules s WHERE deleted_at IS NULL AND {}
             ORDER BY created_seq",
            scope_sql::target_in_scope("s.target", 1)
        )))
        .bind(sqlx::types::Json(scope.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list schedules"))
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>, ReadModelError> {
        sqlx::query_as(
            "SELECT schedule_id, name, cron, time_zone, kind, target, deadline_seconds,
                    created_by, created_at, created_seq, deleted_at
             FROM schedules WHERE schedule_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("read a schedule"))
    }
}

/// Where a request was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    /// The stream already held an event with this id (an idempotent repeat).
    pub duplicate: bool,
}

/// Publishes control events for commands and schedules.
#[derive(Clone)]
pub struct CommandControl {
    js: jetstream::Context,
}

impl CommandControl {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub async fn publish(&self, env: &Envelope) -> Result<Stored, String> {
        envelope::validate(env).map_err(|e| e.to_string())?;
        let subject = envelope::subject_of(env).map_err(|e| e.to_string())?;
        let msg = PublishMessage::build()
            .payload(envelope::encode(env))
            .headers(canopy_kit::publish::headers_for(env));
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(Stored {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
