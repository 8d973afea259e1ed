//! The audit area's outside world: findings, posture, audits and derogations read from Postgres
//! (written by ingestion), the policy read from and changes published to CONTROL, and the gRPC
//! services over them.

pub mod control;
pub mod grpc;
pub mod proto;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::ReadModelError;
use crate::domain::audit::{
    AuditsQuery, Counts, DerogationState, DerogationsQuery, FindingKey, FindingState,
    FindingsQuery, PostureScope,
};
use crate::domain::scope::{
    Scope,
    sql::{cluster_in_scope, derogation_in_scope},
};

// === rows ===

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FindingRow {
    pub cluster_id: String,
    pub fingerprint: String,
    pub check_id: String,
    pub severity: String,
    pub severity_rank: i16,
    pub standards: Vec<String>,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub path: String,
    pub message: String,
    pub remediation: String,
    pub application: String,
    pub state: String,
    pub derogation_id: String,
    pub exempted_until: Option<DateTime<Utc>>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub first_audit_id: String,
    pub last_audit_id: String,
}

impl FindingRow {
    pub fn key(&self) -> FindingKey {
        FindingKey {
            rank: self.severity_rank,
            cluster_id: self.cluster_id.clone(),
            namespace: self.namespace.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            check: self.check_id.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub cluster_id: String,
    pub audit_id: String,
    pub trigger: String,
    pub scope: String,
    pub state: String,
    pub policy_version: i64,
    pub command_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_ms: i32,
    pub chunks: i32,
    pub chunks_received: i32,
    pub objects_audited: i64,
    pub findings: i64,
    pub exempted: i64,
    pub open_by_severity: sqlx::types::Json<BTreeMap<String, u64>>,
    pub kinds_skipped: Vec<String>,
    pub objects: sqlx::types::Json<Vec<BTreeMap<String, String>>>,
    pub first_seq: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DerogationRow {
    pub derogation_id: String,
    pub check_id: String,
    pub cluster_labels: sqlx::types::Json<BTreeMap<String, String>>,
    pub cluster_id: String,
    pub namespace: String,
    pub workload_kind: String,
    pub workload_name: String,
    pub container: String,
    pub reason: String,
    pub approver: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_by: String,
    pub granted_at: Option<DateTime<Utc>>,
    pub granted_seq: i64,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: String,
    pub revoke_reason: String,
}

/// One point of posture history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosturePoint {
    pub at: DateTime<Utc>,
    pub objects: u64,
    pub counts: Counts,
}

/// A posture as read: current counts, objects audited, clusters, history (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostureRead {
    pub objects: u64,
    pub clusters: u32,
    pub counts: Counts,
    pub history: Vec<PosturePoint>,
}

/// Where the audit area's views are read from.
pub trait AuditReadModel: Send + Sync + 'static {
    /// Up to `q.size + 1` findings of clusters `within` the caller's scope, in the total
    /// order, after `q.after`.
    fn list_findings(
        &self,
        q: &FindingsQuery,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<FindingRow>, ReadModelError>> + Send;

    /// The posture of `scope`, over the clusters `within` the caller's scope.
    fn posture(
        &self,
        scope: &PostureScope,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PostureRead, ReadModelError>> + Send;

    /// Up to `q.size + 1` audits of clusters `within` the caller's scope, newest first.
    fn list_audits(
        &self,
        q: &AuditsQuery,
        within: &Scope,
    ) -> impl Future<Output = Result<Vec<AuditRow>, ReadModelError>> + Send;

    /// One audit, when its cluster is `within` the caller's scope.
    fn get_audit(
        &self,
        cluster: &str,
        audit: &str,
        within: &Scope,
    ) -> impl Future<Output = Result<Option<AuditRow>, ReadModelError>> + Send;

    /// Up to `q.size + 1` derogations `within` the caller's scope, newest grant first.
    fn list_derogations(
        &self,
        q: &DerogationsQuery,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DerogationRow>, ReadModelError>> + Send;

    fn get_derogation(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<DerogationRow>, ReadModelError>> + Send;

    /// The labels of a cluster, `None` when it is unknown (what the scope check of a
    /// derogation naming a cluster reads).
    fn cluster_labels(
        &self,
        cluster_id: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, ReadModelError>> + Send;

    /// The CONTROL sequence the read models reflect (for read-your-writes).
    fn control_applied(&self) -> impl Future<Output = Result<u64, ReadModelError>> + Send;
}

#[derive(Clone)]
pub struct PgAuditReadModel {
    pool: PgPool,
}

impl PgAuditReadModel {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> ReadModelError {
    move |source| ReadModelError { action, source }
}

fn state_name(s: FindingState) -> &'static str {
    match s {
        FindingState::Open => "open",
        FindingState::Exempted => "exempted",
        FindingState::Resolved => "resolved",
    }
}

fn derogation_state_name(s: DerogationState) -> &'static str {
    match s {
        DerogationState::Active => "active",
        DerogationState::Expired => "expired",
        DerogationState::Revoked => "revoked",
    }
}

const FINDING_COLUMNS: &str =
    "cluster_id, fingerprint, check_id, severity, severity_rank, standards,
    api_version, kind, namespace, name, container, path, message, remediation, application,
    state, derogation_id, exempted_until, first_seen_at, last_seen_at, resolved_at,
    first_audit_id, last_audit_id";

/// A finding's state as it reads at $1 (an expired exemption is open).
const READ_STATE: &str = "CASE WHEN state = 'exempted' AND exempted_until IS NOT NULL
    AND exempted_until <= $1 THEN 'open' ELSE state END";

impl AuditReadModel for PgAuditReadModel {
    async fn list_findings(
        &self,
        q: &FindingsQuery,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Vec<FindingRow>, ReadModelError> {
        let states: Vec<&str> = if q.states.is_empty() {
            vec!["open", "exempted"]
        } else {
            q.states.iter().map(|s| state_name(*s)).collect()
        };
        let after = q.after.clone();
        let sql = format!(
            "SELECT {FINDING_COLUMNS} FROM findings
             WHERE ({READ_STATE}) = ANY($2)
               AND ($3::text IS NULL OR cluster_id = $3)
               AND ($4::text IS NULL OR namespace = $4)
               AND ($5::text IS NULL OR application = $5)
               AND ($6::text IS NULL OR check_id = $6)
               AND (cardinality($7::smallint[]) = 0 OR severity_rank = ANY($7))
               AND ($8::text IS NULL OR EXISTS (SELECT 1 FROM unnest(standards) s
                                                WHERE starts_with(s, $8)))
               AND ($9::smallint IS NULL OR severity_rank < $9
                    OR (severity_rank = $9 AND (cluster_id, namespace, kind, name, check_id, fingerprint)
                        > ($10, $11, $12, $13, $14, $15)))
               AND {in_scope}
             ORDER BY severity_rank DESC, cluster_id, namespace, kind, name, check_id, fingerprint
             LIMIT $16",
            in_scope = cluster_in_scope("findings.cluster_id", 17)
        );
        let a = after.unwrap_or_default();
        let has_after = q.after.is_some();
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(&states)
            .bind(&q.cluster_id)
            .bind(&q.namespace)
            .bind(&q.application)
            .bind(&q.check)
            .bind(&q.ranks)
            .bind(&q.standard_prefix)
            .bind(has_after.then_some(a.rank))
            .bind(&a.cluster_id)
            .bind(&a.namespace)
            .bind(&a.kind)
            .bind(&a.name)
            .bind(&a.check)
            .bind(&a.fingerprint)
            .bind(i64::from(q.size) + 1)
            .bind(sqlx::types::Json(within.labels()))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("list findings"))
    }

    async fn posture(
        &self,
        scope: &PostureScope,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> Result<PostureRead, ReadModelError> {
        let within = sqlx::types::Json(within.labels());
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT severity,
                    count(*) FILTER (WHERE NOT (state = 'exempted' AND
                        (exempted_until IS NULL OR exempted_until > $1))),
                    count(*) FILTER (WHERE state = 'exempted' AND
                        (exempted_until IS NULL OR exempted_until > $1))
             FROM findings
             WHERE state <> 'resolved'
               AND ($2::text IS NULL OR cluster_id = $2)
               AND ($3::text IS NULL OR namespace = $3)
               AND ($4::text IS NULL OR application = $4)
               AND {}
             GROUP BY severity",
            cluster_in_scope("findings.cluster_id", 5)
        )))
        .bind(now)
        .bind(&scope.cluster_id)
        .bind(&scope.namespace)
        .bind(&scope.application)
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("count findings"))?;
        let mut counts = Counts::default();
        for (sev, open, exempted) in rows {
            if open > 0 {
                counts
                    .open
                    .insert(sev.clone(), u64::try_from(open).unwrap_or(0));
            }
            if exempted > 0 {
                counts
                    .exempted
                    .insert(sev, u64::try_from(exempted).unwrap_or(0));
            }
        }
        let (objects, clusters): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COALESCE(sum(h.objects), 0)::bigint, count(DISTINCT h.cluster_id)
             FROM posture_current c
             JOIN posture_history h ON h.cluster_id = c.cluster_id AND h.audit_id = c.audit_id
             WHERE ($1::text IS NULL OR h.cluster_id = $1)
               AND ($2::text IS NULL OR h.namespace = $2)
               AND ($3::text IS NULL OR h.application = $3)
               AND {}",
            cluster_in_scope("h.cluster_id", 4)
        )))
        .bind(&scope.cluster_id)
        .bind(&scope.namespace)
        .bind(&scope.application)
        .bind(within)
        .fetch_one(&self.pool)
        .await
        .map_err(failed("count audited objects"))?;
        type Point = (DateTime<Utc>, i64, i64, i64, i64, i64, i64, i64, i64, i64);
        let points: Vec<Point> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH done AS (
                 SELECT cluster_id, audit_id, completed_at AS at FROM audits
                 WHERE scope = 'full' AND state = 'completed' AND completed_at IS NOT NULL
                   AND ($1::text IS NULL OR cluster_id = $1)
                   AND {}),
             points AS (SELECT DISTINCT at FROM done ORDER BY at DESC LIMIT $4)
             SELECT p.at, COALESCE(sum(h.objects), 0)::bigint,
                    COALESCE(sum(h.open_critical), 0)::bigint, COALESCE(sum(h.open_high), 0)::bigint,
                    COALESCE(sum(h.open_medium), 0)::bigint, COALESCE(sum(h.open_low), 0)::bigint,
                    COALESCE(sum(h.exempted_critical), 0)::bigint,
                    COALESCE(sum(h.exempted_high), 0)::bigint,
                    COALESCE(sum(h.exempted_medium), 0)::bigint,
                    COALESCE(sum(h.exempted_low), 0)::bigint
             FROM points p
             CROSS JOIN LATERAL (SELECT DISTINCT ON (cluster_id) cluster_id, audit_id FROM done d
                                 WHERE d.at <= p.at ORDER BY cluster_id, d.at DESC) l
             LEFT JOIN posture_history h ON h.cluster_id = l.cluster_id AND h.audit_id = l.audit_id
                  AND ($2::text IS NULL OR h.namespace = $2)
                  AND ($3::text IS NULL OR h.application = $3)
             GROUP BY p.at ORDER BY p.at",
            cluster_in_scope("audits.cluster_id", 5)
        )))
        .bind(&scope.cluster_id)
        .bind(&scope.namespace)
        .bind(&scope.application)
        .bind(i64::from(scope.history))
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("read the posture history"))?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let history = points
            .into_iter()
            .map(|(at, objects, oc, oh, om, ol, ec, eh, em, el)| {
                let map = |vals: [i64; 4]| -> BTreeMap<String, u64> {
                    ["critical", "high", "medium", "low"]
                        .into_iter()
                        .zip(vals)
                        .filter(|(_, v)| *v > 0)
                        .map(|(k, v)| (k.to_owned(), n(v)))
                        .collect()
                };
                PosturePoint {
                    at,
                    objects: n(objects),
                    counts: Counts {
                        open: map([oc, oh, om, ol]),
                        exempted: map([ec, eh, em, el]),
                    },
                }
            })
            .collect();
        Ok(PostureRead {
            objects: n(objects),
            clusters: u32::try_from(clusters).unwrap_or(0),
            counts,
            history,
        })
    }

    async fn list_audits(
        &self,
        q: &AuditsQuery,
        within: &Scope,
    ) -> Result<Vec<AuditRow>, ReadModelError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM audits
             WHERE ($1::text IS NULL OR cluster_id = $1)
               AND ($2::bigint IS NULL OR first_seq < $2)
               AND {}
             ORDER BY first_seq DESC LIMIT $3",
            cluster_in_scope("audits.cluster_id", 4)
        )))
        .bind(&q.cluster_id)
        .bind(q.before_seq)
        .bind(i64::from(q.size) + 1)
        .bind(sqlx::types::Json(within.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list audits"))
    }

    async fn get_audit(
        &self,
        cluster: &str,
        audit: &str,
        within: &Scope,
    ) -> Result<Option<AuditRow>, ReadModelError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM audits WHERE cluster_id = $1 AND audit_id = $2 AND {}",
            cluster_in_scope("audits.cluster_id", 3)
        )))
        .bind(cluster)
        .bind(audit)
        .bind(sqlx::types::Json(within.labels()))
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("read an audit"))
    }

    async fn list_derogations(
        &self,
        q: &DerogationsQuery,
        within: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Vec<DerogationRow>, ReadModelError> {
        let states: Vec<&str> = q.states.iter().map(|s| derogation_state_name(*s)).collect();
        let (seq, id) = q.after.clone().unwrap_or_default();
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT derogation_id, check_id, cluster_labels, cluster_id, namespace, workload_kind,
                    workload_name, container, reason, approver, expires_at, granted_by,
                    granted_at, granted_seq, revoked_at, revoked_by, revoke_reason
             FROM derogations
             WHERE (cardinality($2::text[]) = 0 OR
                    (CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                          WHEN expires_at IS NULL OR expires_at <= $1 THEN 'expired'
                          ELSE 'active' END) = ANY($2))
               AND ($3::text IS NULL OR check_id = $3)
               AND ($4::text IS NULL OR cluster_id = $4 OR cluster_id = '')
               AND (NOT $5 OR granted_seq < $6 OR (granted_seq = $6 AND derogation_id > $7))
               AND {in_scope}
             ORDER BY granted_seq DESC, derogation_id
             LIMIT $8",
            in_scope = derogation_in_scope("cluster_labels", "derogations.cluster_id", 9)
        )))
        .bind(now)
        .bind(&states)
        .bind(&q.check)
        .bind(&q.cluster_id)
        .bind(q.after.is_some())
        .bind(seq)
        .bind(&id)
        .bind(i64::from(q.size) + 1)
        .bind(sqlx::types::Json(within.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list derogations"))
    }

    async fn get_derogation(&self, id: &str) -> Result<Option<DerogationRow>, ReadModelError> {
        sqlx::query_as(
            "SELECT derogation_id, check_id, cluster_labels, cluster_id, namespace, workload_kind,
                    workload_name, container, reason, approver, expires_at, granted_by,
                    granted_at, granted_seq, revoked_at, revoked_by, revoke_reason
             FROM derogations WHERE derogation_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("read a derogation"))
    }

    async fn cluster_labels(
        &self,
        cluster_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ReadModelError> {
        crate::adapters::postgres::cluster_labels(&self.pool, cluster_id).await
    }

    async fn control_applied(&self) -> Result<u64, ReadModelError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT max(last_sequence) FROM projection_checkpoints WHERE stream = 'CONTROL'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed("read the CONTROL checkpoint"))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }
}
