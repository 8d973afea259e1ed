//! Writes audits, findings, their history and posture, and the policy and derogation
//! projections. Every time written comes from an event (never `now()`), so a replay writes the
//! same rows.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use sqlx::{Postgres, Row as _, Transaction};
use tracing::warn;

use canopy_kit::proto::event::v1::{AuditCompleted, AuditScope, FindingsChunk};

use crate::domain::audit::{self as rules, AuditOp, PolicyOp};

/// Tables of this module, children first (each must be in `READ_MODELS`).
#[cfg(test)]
pub const TABLES: &[&str] = &[
    "audit_findings",
    "audit_chunks",
    "audit_object_counts",
    "finding_history",
    "findings",
    "posture_history",
    "posture_current",
    "audits",
    "policies",
    "derogations",
];

type Tx<'a, 'b> = &'a mut Transaction<'b, Postgres>;

fn time(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Applies audit events in stream order; consecutive chunks are written together.
pub async fn apply(tx: Tx<'_, '_>, ops: Vec<AuditOp>) -> anyhow::Result<()> {
    let mut chunks: Vec<(String, u64, FindingsChunk)> = Vec::new();
    for op in ops {
        match op {
            AuditOp::Chunk {
                cluster_id,
                seq,
                chunk,
            } => chunks.push((cluster_id, seq, chunk)),
            AuditOp::Started {
                cluster_id,
                seq,
                at,
                started,
            } => {
                stage(tx, std::mem::take(&mut chunks)).await?;
                sqlx::query(
                    "INSERT INTO audits (cluster_id, audit_id, trigger, scope, state, policy_version,
                                         command_id, started_at, first_seq)
                     VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8)
                     ON CONFLICT (cluster_id, audit_id) DO UPDATE SET
                       trigger = EXCLUDED.trigger, scope = EXCLUDED.scope,
                       policy_version = EXCLUDED.policy_version,
                       command_id = EXCLUDED.command_id, started_at = EXCLUDED.started_at,
                       first_seq = LEAST(audits.first_seq, EXCLUDED.first_seq)",
                )
                .bind(&cluster_id)
                .bind(&started.audit_id)
                .bind(rules::trigger_name(started.trigger))
                .bind(rules::scope_name(started.scope))
                .bind(int(started.policy_version))
                .bind(&started.command_id)
                .bind(at)
                .bind(int(seq))
                .execute(&mut **tx)
                .await
                .context("failed to record an audit start")?;
            }
            AuditOp::Completed {
                cluster_id,
                seq,
                at,
                completed,
            } => {
                stage(tx, std::mem::take(&mut chunks)).await?;
                complete(tx, &cluster_id, seq, at, &completed).await?;
            }
        }
    }
    stage(tx, chunks).await
}

/// Stages chunks (with their findings and object counts) until their audit completes.
async fn stage(tx: Tx<'_, '_>, chunks: Vec<(String, u64, FindingsChunk)>) -> anyhow::Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    // The audit row exists from the first event seen of it (AuditStarted may have expired).
    let mut a_cluster = Vec::new();
    let mut a_audit = Vec::new();
    let mut a_seq = Vec::new();
    let mut c_index = Vec::new();
    let mut f = FindingColumns::default();
    let mut n = CountColumns::default();
    for (cluster, seq, chunk) in &chunks {
        a_cluster.push(cluster.clone());
        a_audit.push(chunk.audit_id.clone());
        a_seq.push(int(*seq));
        c_index.push(i32::try_from(chunk.chunk_index).unwrap_or(i32::MAX));
        for (i, finding) in chunk.findings.iter().enumerate() {
            f.push(cluster, &chunk.audit_id, chunk.chunk_index, i, finding);
        }
        for c in &chunk.object_counts {
            n.cluster.push(cluster.clone());
            n.audit.push(chunk.audit_id.clone());
            n.namespace.push(c.namespace.clone());
            n.application.push(c.application.clone());
            n.objects.push(int(c.objects));
        }
    }
    sqlx::query(
        "INSERT INTO audits (cluster_id, audit_id, state, first_seq)
         SELECT c, a, 'running', min(s) FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(c, a, s)
         GROUP BY c, a
         ON CONFLICT (cluster_id, audit_id) DO NOTHING",
    )
    .bind(&a_cluster)
    .bind(&a_audit)
    .bind(&a_seq)
    .execute(&mut **tx)
    .await
    .context("failed to record audits of findings chunks")?;
    sqlx::query(
        "INSERT INTO audit_chunks (cluster_id, audit_id, chunk_index)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&a_cluster)
    .bind(&a_audit)
    .bind(&c_index)
    .execute(&mut **tx)
    .await
    .context("failed to stage findings chunks")?;
    if !f.cluster.is_empty() {
        sqlx::query(
            "INSERT INTO audit_findings (cluster_id, audit_id, chunk_index, position, fingerprint,
                 check_id, severity, standards, api_version, kind, namespace, name, container,
                 path, message, remediation, application, derogation_id, exempted_until)
             SELECT c, a, ci, p, fp, ck, sv, ARRAY(SELECT jsonb_array_elements_text(st::jsonb)),
                    av, k, ns, n, ct, pa, m, r, ap, d, eu
             FROM UNNEST($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                         $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                         $17::text[], $18::text[], $19::timestamptz[])
                  AS t(c, a, ci, p, fp, ck, sv, st, av, k, ns, n, ct, pa, m, r, ap, d, eu)
             ON CONFLICT DO NOTHING",
        )
        .bind(&f.cluster)
        .bind(&f.audit)
        .bind(&f.chunk)
        .bind(&f.position)
        .bind(&f.fingerprint)
        .bind(&f.check)
        .bind(&f.severity)
        .bind(&f.standards)
        .bind(&f.api_version)
        .bind(&f.kind)
        .bind(&f.namespace)
        .bind(&f.name)
        .bind(&f.container)
        .bind(&f.path)
        .bind(&f.message)
        .bind(&f.remediation)
        .bind(&f.application)
        .bind(&f.derogation)
        .bind(&f.exempted_until)
        .execute(&mut **tx)
        .await
        .context("failed to stage findings")?;
    }
    if !n.cluster.is_empty() {
        sqlx::query(
            "INSERT INTO audit_object_counts (cluster_id, audit_id, namespace, application, objects)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&n.cluster)
        .bind(&n.audit)
        .bind(&n.namespace)
        .bind(&n.application)
        .bind(&n.objects)
        .execute(&mut **tx)
        .await
        .context("failed to stage object counts")?;
    }
    Ok(())
}

#[derive(Default)]
struct FindingColumns {
    cluster: Vec<String>,
    audit: Vec<String>,
    chunk: Vec<i32>,
    position: Vec<i32>,
    fingerprint: Vec<String>,
    check: Vec<String>,
    severity: Vec<String>,
    standards: Vec<String>,
    api_version: Vec<String>,
    kind: Vec<String>,
    namespace: Vec<String>,
    name: Vec<String>,
    container: Vec<String>,
    path: Vec<String>,
    message: Vec<String>,
    remediation: Vec<String>,
    application: Vec<String>,
    derogation: Vec<String>,
    exempted_until: Vec<Option<DateTime<Utc>>>,
}

impl FindingColumns {
    fn push(
        &mut self,
        cluster: &str,
        audit: &str,
        chunk: u32,
        position: usize,
        f: &canopy_kit::proto::event::v1::Finding,
    ) {
        let r = f.resource.clone().unwrap_or_default();
        self.cluster.push(cluster.to_owned());
        self.audit.push(audit.to_owned());
        self.chunk.push(i32::try_from(chunk).unwrap_or(i32::MAX));
        self.position
            .push(i32::try_from(position).unwrap_or(i32::MAX));
        self.fingerprint.push(f.fingerprint.clone());
        self.check.push(f.check.clone());
        self.severity.push(rules::severity(f.severity).0.to_owned());
        // Arrays of arrays do not UNNEST as rows: each finding's standards travel as JSON.
        self.standards
            .push(serde_json::to_string(&f.standards).unwrap_or_else(|_| "[]".to_owned()));
        self.api_version.push(r.api_version);
        self.kind.push(r.kind);
        self.namespace.push(r.namespace);
        self.name.push(r.name);
        self.container.push(f.container.clone());
        self.path.push(f.path.clone());
        self.message.push(f.message.clone());
        self.remediation.push(f.remediation.clone());
        self.application.push(f.application.clone());
        self.derogation.push(f.derogation_id.clone());
        self.exempted_until
            .push(time(f.exempted_until.as_ref()).filter(|_| !f.derogation_id.is_empty()));
    }
}

#[derive(Default)]
struct CountColumns {
    cluster: Vec<String>,
    audit: Vec<String>,
    namespace: Vec<String>,
    application: Vec<String>,
    objects: Vec<i64>,
}

/// An audit completed: reconciles the cluster's findings with it when every chunk arrived,
/// records history and posture, and empties its staging rows.
async fn complete(
    tx: Tx<'_, '_>,
    cluster: &str,
    seq: u64,
    at: DateTime<Utc>,
    c: &AuditCompleted,
) -> anyhow::Result<()> {
    let audit = c.audit_id.as_str();
    let received: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_chunks WHERE cluster_id = $1 AND audit_id = $2",
    )
    .bind(cluster)
    .bind(audit)
    .fetch_one(&mut **tx)
    .await
    .context("failed to count the chunks of an audit")?;
    let received = u32::try_from(received).unwrap_or(u32::MAX);
    let whole = rules::complete(c.chunks, received);
    let full = c.scope == AuditScope::Full as i32;
    let objects: Vec<serde_json::Value> = c
        .objects
        .iter()
        .map(|o| {
            serde_json::json!({"api_version": o.api_version, "kind": o.kind,
                               "namespace": o.namespace, "name": o.name})
        })
        .collect();
    let open: BTreeMap<&String, &u64> = c.open_by_severity.iter().collect();
    sqlx::query(
        "INSERT INTO audits (cluster_id, audit_id, trigger, scope, state, policy_version, command_id,
                             started_at, completed_at, duration_ms, chunks, chunks_received,
                             objects_audited, findings, exempted, open_by_severity,
                             kinds_skipped, objects, first_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19)
         ON CONFLICT (cluster_id, audit_id) DO UPDATE SET
           trigger = EXCLUDED.trigger, scope = EXCLUDED.scope, state = EXCLUDED.state,
           policy_version = EXCLUDED.policy_version, command_id = EXCLUDED.command_id,
           started_at = COALESCE(audits.started_at, EXCLUDED.started_at),
           completed_at = EXCLUDED.completed_at, duration_ms = EXCLUDED.duration_ms,
           chunks = EXCLUDED.chunks, chunks_received = EXCLUDED.chunks_received,
           objects_audited = EXCLUDED.objects_audited, findings = EXCLUDED.findings,
           exempted = EXCLUDED.exempted, open_by_severity = EXCLUDED.open_by_severity,
           kinds_skipped = EXCLUDED.kinds_skipped, objects = EXCLUDED.objects",
    )
    .bind(cluster)
    .bind(audit)
    .bind(rules::trigger_name(c.trigger))
    .bind(rules::scope_name(c.scope))
    .bind(if whole { "completed" } else { "incomplete" })
    .bind(int(c.policy_version))
    .bind(&c.command_id)
    .bind(time(c.started_at.as_ref()))
    .bind(at)
    .bind(i32::try_from(c.duration_ms).unwrap_or(i32::MAX))
    .bind(i32::try_from(c.chunks).unwrap_or(i32::MAX))
    .bind(i32::try_from(received).unwrap_or(i32::MAX))
    .bind(int(c.objects_audited))
    .bind(int(c.findings))
    .bind(int(c.exempted))
    .bind(sqlx::types::Json(&open))
    .bind(&c.kinds_skipped)
    .bind(sqlx::types::Json(&objects))
    .bind(int(seq))
    .execute(&mut **tx)
    .await
    .context("failed to record an audit completion")?;

    // Seen findings: state changes first (they need the old state), then the rows.
    let changed = sqlx::query(
        "SELECT s.fingerprint, f.state AS old_state,
                CASE WHEN s.derogation_id = '' THEN 'open' ELSE 'exempted' END AS new_state
         FROM (SELECT DISTINCT ON (fingerprint) fingerprint, derogation_id FROM audit_findings
               WHERE cluster_id = $1 AND audit_id = $2
               ORDER BY fingerprint, chunk_index, position) s
         LEFT JOIN findings f ON f.cluster_id = $1 AND f.fingerprint = s.fingerprint
         WHERE f.state IS DISTINCT FROM
               CASE WHEN s.derogation_id = '' THEN 'open' ELSE 'exempted' END",
    )
    .bind(cluster)
    .bind(audit)
    .fetch_all(&mut **tx)
    .await
    .context("failed to compare findings")?;
    let mut history = History::default();
    for row in changed {
        let fingerprint: String = row.try_get("fingerprint")?;
        let old: Option<String> = row.try_get("old_state")?;
        let new: String = row.try_get("new_state")?;
        if let Some(kind) = rules::transition(old.as_deref(), &new) {
            history.push(fingerprint, kind, old, new);
        }
    }
    sqlx::query(
        "INSERT INTO findings (cluster_id, fingerprint, check_id, severity, severity_rank,
                               standards, api_version, kind, namespace, name, container, path,
                               message, remediation, application, state, derogation_id,
                               exempted_until, first_seen_at, last_seen_at, first_audit_id,
                               last_audit_id)
         SELECT DISTINCT ON (fingerprint) $1, fingerprint, check_id, severity,
                CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2
                              WHEN 'low' THEN 1 ELSE 0 END,
                standards, api_version, kind, namespace, name, container, path, message,
                remediation, application,
                CASE WHEN derogation_id = '' THEN 'open' ELSE 'exempted' END,
                derogation_id, exempted_until, $3, $3, $2, $2
         FROM audit_findings WHERE cluster_id = $1 AND audit_id = $2
         ORDER BY fingerprint, chunk_index, position
         ON CONFLICT (cluster_id, fingerprint) DO UPDATE SET
           check_id = EXCLUDED.check_id, severity = EXCLUDED.severity,
           severity_rank = EXCLUDED.severity_rank, standards = EXCLUDED.standards,
           api_version = EXCLUDED.api_version, container = EXCLUDED.container,
           path = EXCLUDED.path, message = EXCLUDED.message,
           remediation = EXCLUDED.remediation, application = EXCLUDED.application,
           state = EXCLUDED.state, derogation_id = EXCLUDED.derogation_id,
           exempted_until = EXCLUDED.exempted_until,
           last_seen_at = GREATEST(findings.last_seen_at, EXCLUDED.last_seen_at),
           last_audit_id = EXCLUDED.last_audit_id, resolved_at = NULL",
    )
    .bind(cluster)
    .bind(audit)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("failed to upsert findings")?;

    // Findings the audit covered but did not report are resolved; an audit with missing chunks
    // resolves nothing.
    if whole && (full || !c.objects.is_empty()) {
        let kinds: Vec<&str> = c.objects.iter().map(|o| o.kind.as_str()).collect();
        let namespaces: Vec<&str> = c.objects.iter().map(|o| o.namespace.as_str()).collect();
        let names: Vec<&str> = c.objects.iter().map(|o| o.name.as_str()).collect();
        let gone = sqlx::query(
            "UPDATE findings f SET state = 'resolved', resolved_at = $3, last_audit_id = $2
             FROM (SELECT fingerprint, state FROM findings g
                   WHERE g.cluster_id = $1 AND g.state <> 'resolved'
                     AND ($4 OR (g.kind, g.namespace, g.name) IN
                          (SELECT * FROM UNNEST($5::text[], $6::text[], $7::text[])))
                     AND NOT EXISTS (SELECT 1 FROM audit_findings s
                                     WHERE s.cluster_id = $1 AND s.audit_id = $2
                                       AND s.fingerprint = g.fingerprint)
                   FOR UPDATE) old
             WHERE f.cluster_id = $1 AND f.fingerprint = old.fingerprint
             RETURNING f.fingerprint, old.state AS old_state",
        )
        .bind(cluster)
        .bind(audit)
        .bind(at)
        .bind(full)
        .bind(&kinds)
        .bind(&namespaces)
        .bind(&names)
        .fetch_all(&mut **tx)
        .await
        .context("failed to resolve findings")?;
        for row in gone {
            let fingerprint: String = row.try_get("fingerprint")?;
            let old: Option<String> = row.try_get("old_state")?;
            if let Some(kind) = rules::transition(old.as_deref(), "resolved") {
                history.push(fingerprint, kind, old, "resolved".to_owned());
            }
        }
    } else if !whole {
        warn!(
            cluster,
            audit,
            chunks = c.chunks,
            received,
            "audit completed with chunks missing: nothing resolved"
        );
    }
    history.write(tx, cluster, audit, seq, at).await?;

    if whole && full {
        posture(tx, cluster, audit, at).await?;
    }
    // Audits of this cluster that started before and never completed will not any more.
    sqlx::query(
        "UPDATE audits SET state = 'incomplete'
         WHERE cluster_id = $1 AND state = 'running' AND first_seq < $2",
    )
    .bind(cluster)
    .bind(int(seq))
    .execute(&mut **tx)
    .await
    .context("failed to close abandoned audits")?;
    for table in ["audit_findings", "audit_chunks", "audit_object_counts"] {
        // The table names are constants of this module, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} t WHERE t.cluster_id = $1
               AND (t.audit_id = $2 OR EXISTS (SELECT 1 FROM audits a
                    WHERE a.cluster_id = t.cluster_id AND a.audit_id = t.audit_id
                      AND a.state <> 'running'))"
        )))
        .bind(cluster)
        .bind(audit)
        .execute(&mut **tx)
        .await
        .with_context(|| format!("failed to empty {table}"))?;
    }
    Ok(())
}

#[derive(Default)]
struct History {
    fingerprint: Vec<String>,
    kind: Vec<&'static str>,
    from: Vec<Option<String>>,
    to: Vec<String>,
}

impl History {
    fn push(&mut self, fingerprint: String, kind: &'static str, from: Option<String>, to: String) {
        self.fingerprint.push(fingerprint);
        self.kind.push(kind);
        self.from.push(from);
        self.to.push(to);
    }

    async fn write(
        self,
        tx: Tx<'_, '_>,
        cluster: &str,
        audit: &str,
        seq: u64,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if self.fingerprint.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO finding_history (cluster_id, fingerprint, audit_id, seq, at, kind,
                                          from_state, to_state)
             SELECT $1, fp, $2, $3, $4, k, f, t
             FROM UNNEST($5::text[], $6::text[], $7::text[], $8::text[]) AS u(fp, k, f, t)
             ON CONFLICT DO NOTHING",
        )
        .bind(cluster)
        .bind(audit)
        .bind(int(seq))
        .bind(at)
        .bind(&self.fingerprint)
        .bind(&self.kind)
        .bind(&self.from)
        .bind(&self.to)
        .execute(&mut **tx)
        .await
        .context("failed to record finding history")?;
        Ok(())
    }
}

/// The posture of a cluster after a completed full audit: per (namespace, application), the
/// objects audited and the open and exempted findings by severity.
async fn posture(
    tx: Tx<'_, '_>,
    cluster: &str,
    audit: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO posture_history (cluster_id, audit_id, at, namespace, application, objects,
             open_critical, open_high, open_medium, open_low,
             exempted_critical, exempted_high, exempted_medium, exempted_low)
         SELECT $1, $2, $3, COALESCE(o.namespace, f.namespace), COALESCE(o.application, f.application),
                COALESCE(o.objects, 0),
                COALESCE(f.oc, 0), COALESCE(f.oh, 0), COALESCE(f.om, 0), COALESCE(f.ol, 0),
                COALESCE(f.ec, 0), COALESCE(f.eh, 0), COALESCE(f.em, 0), COALESCE(f.el, 0)
         FROM (SELECT namespace, application, objects FROM audit_object_counts
               WHERE cluster_id = $1 AND audit_id = $2) o
         FULL OUTER JOIN (
               SELECT namespace, application,
                 count(*) FILTER (WHERE state = 'open' AND severity = 'critical') AS oc,
                 count(*) FILTER (WHERE state = 'open' AND severity = 'high') AS oh,
                 count(*) FILTER (WHERE state = 'open' AND severity = 'medium') AS om,
                 count(*) FILTER (WHERE state = 'open' AND severity = 'low') AS ol,
                 count(*) FILTER (WHERE state = 'exempted' AND severity = 'critical') AS ec,
                 count(*) FILTER (WHERE state = 'exempted' AND severity = 'high') AS eh,
                 count(*) FILTER (WHERE state = 'exempted' AND severity = 'medium') AS em,
                 count(*) FILTER (WHERE state = 'exempted' AND severity = 'low') AS el
               FROM findings WHERE cluster_id = $1 AND state <> 'resolved'
               GROUP BY namespace, application) f
           ON f.namespace = o.namespace AND f.application = o.application
         ON CONFLICT DO NOTHING",
    )
    .bind(cluster)
    .bind(audit)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("failed to record the posture")?;
    sqlx::query(
        "INSERT INTO posture_current (cluster_id, audit_id, at) VALUES ($1, $2, $3)
         ON CONFLICT (cluster_id) DO UPDATE SET audit_id = EXCLUDED.audit_id, at = EXCLUDED.at",
    )
    .bind(cluster)
    .bind(audit)
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("failed to record the current posture")?;
    Ok(())
}

// === policies and derogations ===

/// Applies policy and derogation events in CONTROL order.
pub async fn apply_policy(tx: Tx<'_, '_>, ops: Vec<PolicyOp>) -> anyhow::Result<()> {
    for op in ops {
        match op {
            PolicyOp::Changed { seq, at, changed } => {
                let p = changed.policy.unwrap_or_default();
                let overrides: BTreeMap<String, &str> = p
                    .severity_overrides
                    .iter()
                    .map(|(k, v)| (k.clone(), rules::severity(*v).0))
                    .collect();
                sqlx::query(
                    "INSERT INTO policies (version, disabled_checks, severity_overrides,
                         registry_allow_list, honour_ignore_annotations, level, changed_by,
                         reason, changed_at, control_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (version) DO NOTHING",
                )
                .bind(int(changed.version))
                .bind(&p.disabled_checks)
                .bind(sqlx::types::Json(&overrides))
                .bind(&p.registry_allow_list)
                .bind(p.honour_ignore_annotations)
                .bind(&p.level)
                .bind(&changed.changed_by)
                .bind(&changed.reason)
                .bind(at)
                .bind(int(seq))
                .execute(&mut **tx)
                .await
                .context("failed to record a policy version")?;
            }
            PolicyOp::Granted {
                seq,
                at,
                derogation: d,
            } => {
                let s = d.scope.clone().unwrap_or_default();
                let labels: BTreeMap<&String, &String> = s.cluster_labels.iter().collect();
                sqlx::query(
                    "INSERT INTO derogations (derogation_id, check_id, cluster_labels, cluster_id,
                         namespace, workload_kind, workload_name, container, reason, approver,
                         expires_at, granted_by, granted_at, granted_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                     ON CONFLICT (derogation_id) DO UPDATE SET
                       check_id = EXCLUDED.check_id, cluster_labels = EXCLUDED.cluster_labels,
                       cluster_id = EXCLUDED.cluster_id, namespace = EXCLUDED.namespace,
                       workload_kind = EXCLUDED.workload_kind,
                       workload_name = EXCLUDED.workload_name, container = EXCLUDED.container,
                       reason = EXCLUDED.reason, approver = EXCLUDED.approver,
                       expires_at = EXCLUDED.expires_at, granted_by = EXCLUDED.granted_by,
                       granted_at = EXCLUDED.granted_at, granted_seq = EXCLUDED.granted_seq",
                )
                .bind(&d.derogation_id)
                .bind(&d.check)
                .bind(sqlx::types::Json(&labels))
                .bind(&s.cluster_id)
                .bind(&s.namespace)
                .bind(&s.workload_kind)
                .bind(&s.workload_name)
                .bind(&s.container)
                .bind(&d.reason)
                .bind(&d.approver)
                .bind(time(d.expires_at.as_ref()))
                .bind(&d.granted_by)
                .bind(time(d.granted_at.as_ref()).unwrap_or(at))
                .bind(int(seq))
                .execute(&mut **tx)
                .await
                .context("failed to record a derogation")?;
            }
            PolicyOp::Revoked { seq, at, revoked } => {
                sqlx::query(
                    "INSERT INTO derogations (derogation_id, revoked_at, revoked_by, revoke_reason,
                                              revoked_seq)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (derogation_id) DO UPDATE SET
                       revoked_at = EXCLUDED.revoked_at, revoked_by = EXCLUDED.revoked_by,
                       revoke_reason = EXCLUDED.revoke_reason, revoked_seq = EXCLUDED.revoked_seq
                     WHERE derogations.revoked_at IS NULL",
                )
                .bind(&revoked.derogation_id)
                .bind(at)
                .bind(&revoked.revoked_by)
                .bind(&revoked.reason)
                .bind(int(seq))
                .execute(&mut **tx)
                .await
                .context("failed to record a revocation")?;
            }
        }
    }
    Ok(())
}
