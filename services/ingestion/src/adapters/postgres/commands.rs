//! Writes the `commands`, `command_runs` and `schedules` read models. Times come from events.

use anyhow::Context as _;
use sqlx::{Postgres, Transaction};

use crate::domain::commands::{CommandOp, RunUpdate};

/// Tables of this module, children first (each must be in `READ_MODELS`).
#[cfg(test)]
pub const TABLES: &[&str] = &["command_runs", "commands", "schedules"];

type Tx<'a, 'b> = &'a mut Transaction<'b, Postgres>;

pub async fn apply(tx: Tx<'_, '_>, ops: Vec<CommandOp>) -> anyhow::Result<()> {
    for op in ops {
        match op {
            CommandOp::Requested(c) => {
                // The first request wins: a repeated one (same idempotency key) changes nothing.
                sqlx::query(
                    "INSERT INTO commands (command_id, kind, kind_name, target, params,
                        requested_by, idempotency_key, schedule_id, scheduled_for, requested_at,
                        deadline, control_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (command_id) DO NOTHING",
                )
                .bind(&c.command_id)
                .bind(c.kind)
                .bind(c.kind_name)
                .bind(&c.target)
                .bind(&c.params)
                .bind(&c.requested_by)
                .bind(&c.idempotency_key)
                .bind(&c.schedule_id)
                .bind(c.scheduled_for)
                .bind(c.requested_at)
                .bind(c.deadline)
                .bind(c.control_seq)
                .execute(&mut **tx)
                .await
                .context("failed to record a command request")?;
            }
            CommandOp::Rejected {
                command_id,
                reason,
                detail,
            } => {
                sqlx::query(
                    "UPDATE commands SET rejected_reason = $2, rejected_detail = $3
                     WHERE command_id = $1",
                )
                .bind(&command_id)
                .bind(&reason)
                .bind(&detail)
                .execute(&mut **tx)
                .await
                .context("failed to record a command rejection")?;
            }
            CommandOp::Run(u) => run(tx, &u).await?,
            CommandOp::Probes {
                command_id,
                cluster_id,
                probes,
            } => {
                sqlx::query(
                    "INSERT INTO command_runs (command_id, cluster_id, state, rank, probes)
                     VALUES ($1, $2, 'accepted', 0, $3)
                     ON CONFLICT (command_id, cluster_id) DO UPDATE SET probes = EXCLUDED.probes",
                )
                .bind(&command_id)
                .bind(&cluster_id)
                .bind(&probes)
                .execute(&mut **tx)
                .await
                .context("failed to record liveness results")?;
            }
            CommandOp::ScheduleCreated(s) => {
                sqlx::query(
                    "INSERT INTO schedules (schedule_id, name, cron, time_zone, kind, target,
                        params, deadline_seconds, created_by, created_at, created_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (schedule_id) DO NOTHING",
                )
                .bind(&s.schedule_id)
                .bind(&s.name)
                .bind(&s.cron)
                .bind(&s.time_zone)
                .bind(s.kind)
                .bind(&s.target)
                .bind(&s.params)
                .bind(s.deadline_seconds)
                .bind(&s.created_by)
                .bind(s.created_at)
                .bind(s.created_seq)
                .execute(&mut **tx)
                .await
                .context("failed to record a schedule")?;
            }
            CommandOp::ScheduleDeleted {
                schedule_id,
                at,
                by,
            } => {
                sqlx::query(
                    "UPDATE schedules SET deleted_at = $2, deleted_by = $3
                     WHERE schedule_id = $1 AND deleted_at IS NULL",
                )
                .bind(&schedule_id)
                .bind(at)
                .bind(&by)
                .execute(&mut **tx)
                .await
                .context("failed to record a schedule deletion")?;
            }
        }
    }
    Ok(())
}

/// A run only moves to a higher rank; the times of each step are kept whatever the order.
async fn run(tx: Tx<'_, '_>, u: &RunUpdate) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO command_runs (command_id, cluster_id, state, rank, dispatched_at,
            accepted_at, finished_at, reason, error, summary, duration_ms, result, commands_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (command_id, cluster_id) DO UPDATE SET
           dispatched_at = COALESCE(command_runs.dispatched_at, EXCLUDED.dispatched_at),
           accepted_at = COALESCE(command_runs.accepted_at, EXCLUDED.accepted_at),
           commands_seq = GREATEST(command_runs.commands_seq, EXCLUDED.commands_seq),
           state = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.state ELSE command_runs.state END,
           finished_at = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.finished_at ELSE command_runs.finished_at END,
           reason = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.reason ELSE command_runs.reason END,
           error = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.error ELSE command_runs.error END,
           summary = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.summary ELSE command_runs.summary END,
           duration_ms = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.duration_ms ELSE command_runs.duration_ms END,
           result = CASE WHEN EXCLUDED.rank > command_runs.rank
                        THEN EXCLUDED.result ELSE command_runs.result END,
           rank = GREATEST(command_runs.rank, EXCLUDED.rank)",
    )
    .bind(&u.command_id)
    .bind(&u.cluster_id)
    .bind(u.state)
    .bind(u.rank)
    .bind(u.dispatched_at)
    .bind(u.accepted_at)
    .bind(u.finished_at)
    .bind(&u.reason)
    .bind(&u.error)
    .bind(&u.summary)
    .bind(u.duration_ms)
    .bind(&u.result)
    .bind(u.commands_seq)
    .execute(&mut **tx)
    .await
    .context("failed to record a command run")?;
    Ok(())
}
