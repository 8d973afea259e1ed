//! Writes fleet health, diagnoses, remediations and workload recommendations. Every time written
//! comes from an event, so a replay writes the same rows.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use canopy_kit::envelope::command_kind_token;
use canopy_kit::proto::event::v1::WorkloadUsage;

use crate::domain::health::{self as rules, HealthOp};

/// Tables of this module (each must be in `READ_MODELS`).
#[cfg(test)]
pub const TABLES: &[&str] = &[
    "cluster_health",
    "health_history",
    "diagnoses",
    "remediations",
    "remediation_suppressions",
    "workload_recommendations",
];

fn seq(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub async fn apply(tx: &mut Transaction<'_, Postgres>, ops: Vec<HealthOp>) -> anyhow::Result<()> {
    // Only each cluster's newest usage in the batch matters.
    let mut usage: BTreeMap<String, (DateTime<Utc>, Vec<WorkloadUsage>)> = BTreeMap::new();
    for op in ops {
        match op {
            HealthOp::Usage {
                cluster_id,
                at,
                usage: u,
            } => {
                if usage.get(&cluster_id).is_none_or(|(t, _)| *t <= at) {
                    usage.insert(cluster_id, (at, u));
                }
            }
            other => apply_one(tx, other).await?,
        }
    }
    for (cluster_id, (at, u)) in usage {
        replace_usage(tx, &cluster_id, at, &u).await?;
    }
    Ok(())
}

async fn apply_one(tx: &mut Transaction<'_, Postgres>, op: HealthOp) -> anyhow::Result<()> {
    match op {
        HealthOp::Changed {
            seq: s,
            cluster_id,
            at,
            changed,
        } => {
            let (prev, cur) = (
                rules::health_name(changed.previous),
                rules::health_name(changed.current),
            );
            sqlx::query(
                "INSERT INTO health_history (seq, cluster_id, previous, state, reason, at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq(s))
            .bind(&cluster_id)
            .bind(prev)
            .bind(cur)
            .bind(&changed.reason)
            .bind(at)
            .execute(&mut **tx)
            .await
            .context("failed to insert health history")?;
            sqlx::query(
                "INSERT INTO cluster_health (cluster_id, state, previous, reason, since, seq)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (cluster_id) DO UPDATE SET state = EXCLUDED.state,
                   previous = EXCLUDED.previous, reason = EXCLUDED.reason,
                   since = EXCLUDED.since, seq = EXCLUDED.seq
                 WHERE cluster_health.seq < EXCLUDED.seq",
            )
            .bind(&cluster_id)
            .bind(cur)
            .bind(prev)
            .bind(&changed.reason)
            .bind(at)
            .bind(seq(s))
            .execute(&mut **tx)
            .await
            .context("failed to upsert cluster health")?;
        }
        HealthOp::Raised {
            seq: s,
            cluster_id,
            at,
            raised: d,
        } => {
            sqlx::query(
                "INSERT INTO diagnoses (id, cluster_id, rule, severity, summary, evidence, subject,
                   suggested_playbook, raised_at, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&d.diagnosis_id)
            .bind(&cluster_id)
            .bind(&d.rule)
            .bind(rules::severity_name(d.severity))
            .bind(&d.summary)
            .bind(serde_json::json!(d.evidence))
            .bind(&d.subject)
            .bind(&d.suggested_playbook)
            .bind(at)
            .bind(seq(s))
            .execute(&mut **tx)
            .await
            .context("failed to insert a diagnosis")?;
        }
        HealthOp::Cleared { at, cleared, .. } => {
            sqlx::query(
                "UPDATE diagnoses SET cleared_at = $2, clear_reason = $3
                 WHERE id = $1 AND cleared_at IS NULL",
            )
            .bind(&cleared.diagnosis_id)
            .bind(at)
            .bind(&cleared.reason)
            .execute(&mut **tx)
            .await
            .context("failed to clear a diagnosis")?;
        }
        HealthOp::Proposed {
            seq: s,
            cluster_id,
            at,
            proposed: p,
        } => {
            sqlx::query(
                "INSERT INTO remediations (id, cluster_id, diagnosis_id, playbook, kind, target,
                   reason, auto, state, proposed_at, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'proposed', $9, $10)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&p.remediation_id)
            .bind(&cluster_id)
            .bind(&p.diagnosis_id)
            .bind(&p.playbook)
            .bind(command_kind_token(p.kind))
            .bind(rules::target_of(p.params.as_ref()))
            .bind(&p.reason)
            .bind(p.auto)
            .bind(at)
            .bind(seq(s))
            .execute(&mut **tx)
            .await
            .context("failed to insert a remediation")?;
        }
        HealthOp::Approved {
            at, approved: a, ..
        } => {
            sqlx::query(
                "UPDATE remediations SET state = 'approved', decided_by = $2, decided_at = $3
                 WHERE id = $1 AND state = 'proposed'",
            )
            .bind(&a.remediation_id)
            .bind(&a.approved_by)
            .bind(at)
            .execute(&mut **tx)
            .await
            .context("failed to approve a remediation")?;
        }
        HealthOp::Rejected {
            at, rejected: r, ..
        } => {
            sqlx::query(
                "UPDATE remediations SET state = 'rejected', decided_by = $2, decided_at = $3,
                   decision_reason = $4
                 WHERE id = $1 AND state = 'proposed'",
            )
            .bind(&r.remediation_id)
            .bind(&r.rejected_by)
            .bind(at)
            .bind(&r.reason)
            .execute(&mut **tx)
            .await
            .context("failed to reject a remediation")?;
        }
        HealthOp::Suppressed {
            seq: s,
            cluster_id,
            at,
            suppressed: x,
        } => {
            sqlx::query(
                "INSERT INTO remediation_suppressions (seq, cluster_id, diagnosis_id, playbook, reason, at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq(s)).bind(&cluster_id).bind(&x.diagnosis_id).bind(&x.playbook).bind(&x.reason).bind(at)
            .execute(&mut **tx).await.context("failed to insert a suppression")?;
        }
        HealthOp::Requested {
            at, requested: c, ..
        } => {
            sqlx::query(
                "UPDATE remediations SET state = 'requested', command_id = $2, requested_at = $3
                 WHERE id = $1 AND state IN ('proposed', 'approved')",
            )
            .bind(&c.remediation_id)
            .bind(&c.command_id)
            .bind(at)
            .execute(&mut **tx)
            .await
            .context("failed to record a remediation's command")?;
        }
        HealthOp::Usage { .. } => {}
    }
    Ok(())
}

async fn replace_usage(
    tx: &mut Transaction<'_, Postgres>,
    cluster_id: &str,
    at: DateTime<Utc>,
    usage: &[WorkloadUsage],
) -> anyhow::Result<()> {
    // An older report than the one stored changes nothing.
    let newer: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(reported_at) FROM workload_recommendations WHERE cluster_id = $1",
    )
    .bind(cluster_id)
    .fetch_one(&mut **tx)
    .await
    .context("failed to read recommendations")?;
    if newer.is_some_and(|t| t > at) {
        return Ok(());
    }
    sqlx::query("DELETE FROM workload_recommendations WHERE cluster_id = $1")
        .bind(cluster_id)
        .execute(&mut **tx)
        .await
        .context("failed to replace recommendations")?;
    for u in usage {
        let r = rules::recommend(u);
        sqlx::query(
            "INSERT INTO workload_recommendations (cluster_id, kind, namespace, name, replicas,
               cpu_usage_millis, cpu_request_millis, cpu_limit_millis, memory_usage_bytes,
               memory_request_bytes, memory_limit_bytes, recommended_replicas,
               recommended_cpu_request_millis, recommended_memory_request_bytes, recommendation,
               reported_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)
             ON CONFLICT (cluster_id, kind, namespace, name) DO NOTHING",
        )
        .bind(cluster_id)
        .bind(&u.kind)
        .bind(&u.namespace)
        .bind(&u.name)
        .bind(i32::try_from(u.replicas).unwrap_or(i32::MAX))
        .bind(big(u.cpu_usage_millis))
        .bind(big(u.cpu_request_millis))
        .bind(big(u.cpu_limit_millis))
        .bind(big(u.memory_usage_bytes))
        .bind(big(u.memory_request_bytes))
        .bind(big(u.memory_limit_bytes))
        .bind(i32::try_from(r.replicas).unwrap_or(i32::MAX))
        .bind(big(r.cpu_request_millis))
        .bind(big(r.memory_request_bytes))
        .bind(&r.text)
        .bind(at)
        .execute(&mut **tx)
        .await
        .context("failed to insert a recommendation")?;
    }
    Ok(())
}
