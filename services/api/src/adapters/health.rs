//! HealthService: fleet health, diagnoses, remediations and recommendations from the read
//! models; approving or rejecting a remediation publishes `RemediationApproved` /
//! `RemediationRejected` on CONTROL (the doctor acts on it; the api writes no table).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _, postgres::PgRow};
use tonic::{Request, Response, Status};
use tracing::instrument;

use canopy_kit::envelope;
use canopy_kit::proto::api::v1::{self as api, health_service_server::HealthService};
use canopy_kit::proto::event::v1::{
    ClusterHealth, RemediationApproved, RemediationRejected, Severity, envelope::Body,
};
use canopy_kit::subject::ClusterId;

use crate::adapters::proto::timestamp;
use crate::domain::scope::{OutOfScope, Scope, sql::cluster_in_scope};

/// How long an approval waits for the read model to show it.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

pub struct HealthApi {
    pool: PgPool,
    js: jetstream::Context,
}

impl HealthApi {
    pub fn new(pool: PgPool, js: jetstream::Context) -> Self {
        Self { pool, js }
    }
}

fn db(e: sqlx::Error) -> Status {
    Status::unavailable(format!("the read models cannot be read: {e}"))
}

fn cluster_filter(id: &str) -> Result<Option<String>, Status> {
    if id.is_empty() {
        return Ok(None);
    }
    ClusterId::parse(id)
        .map(|c| Some(c.to_string()))
        .map_err(|e| Status::invalid_argument(format!("invalid cluster_id: {e}")))
}

pub fn health_value(name: &str) -> ClusterHealth {
    match name {
        "healthy" => ClusterHealth::Healthy,
        "degraded" => ClusterHealth::Degraded,
        "unreachable" => ClusterHealth::Unreachable,
        "link-down" => ClusterHealth::LinkDown,
        _ => ClusterHealth::Unspecified,
    }
}

fn severity_value(name: &str) -> Severity {
    match name {
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => Severity::Unspecified,
    }
}

fn ts(r: &PgRow, col: &str) -> Option<prost_types::Timestamp> {
    r.try_get::<Option<DateTime<Utc>>, _>(col)
        .ok()
        .flatten()
        .map(timestamp)
}

fn text(r: &PgRow, col: &str) -> String {
    r.try_get::<Option<String>, _>(col)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn u64_of(r: &PgRow, col: &str) -> u64 {
    r.try_get::<i64, _>(col)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0)
}

fn u32_of(r: &PgRow, col: &str) -> u32 {
    r.try_get::<i32, _>(col)
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0)
}

fn diagnosis(r: &PgRow) -> api::Diagnosis {
    api::Diagnosis {
        diagnosis_id: text(r, "id"),
        cluster_id: text(r, "cluster_id"),
        rule: text(r, "rule"),
        severity: severity_value(&text(r, "severity")) as i32,
        summary: text(r, "summary"),
        evidence: r
            .try_get::<serde_json::Value, _>("evidence")
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        subject: text(r, "subject"),
        suggested_playbook: text(r, "suggested_playbook"),
        raised_at: ts(r, "raised_at"),
        cleared_at: ts(r, "cleared_at"),
        clear_reason: text(r, "clear_reason"),
    }
}

fn remediation(r: &PgRow) -> api::Remediation {
    api::Remediation {
        remediation_id: text(r, "id"),
        cluster_id: text(r, "cluster_id"),
        diagnosis_id: text(r, "diagnosis_id"),
        playbook: text(r, "playbook"),
        kind: text(r, "kind"),
        target: text(r, "target"),
        reason: text(r, "reason"),
        auto: r.try_get("auto").unwrap_or(false),
        state: text(r, "state"),
        proposed_at: ts(r, "proposed_at"),
        decided_by: text(r, "decided_by"),
        decided_at: ts(r, "decided_at"),
        decision_reason: text(r, "decision_reason"),
        command_id: text(r, "command_id"),
        requested_at: ts(r, "requested_at"),
        result: text(r, "result"),
        finished_at: ts(r, "finished_at"),
    }
}

impl HealthApi {
    async fn remediation_by_id(&self, id: &str) -> Result<Option<api::Remediation>, Status> {
        let row = sqlx::query("SELECT * FROM remediation_status WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(remediation))
    }

    /// Publishes a decision on a proposed remediation of a cluster `within` the caller's scope
    /// and waits (bounded) until the read model shows it.
    async fn decide(
        &self,
        id: &str,
        body: Body,
        within: &Scope,
    ) -> Result<api::Remediation, Status> {
        let current = self.remediation_by_id(id).await?;
        // A scoped caller cannot tell a remediation out of its scope from a missing one.
        if !within.is_fleet() {
            let labels = match &current {
                Some(r) => {
                    crate::adapters::postgres::cluster_labels(&self.pool, &r.cluster_id).await?
                }
                None => None,
            };
            if !labels.is_some_and(|l| within.admits_cluster(&l)) {
                return Err(OutOfScope::Object {
                    what: "remediation",
                    id: id.to_owned(),
                }
                .into());
            }
        }
        let current =
            current.ok_or_else(|| Status::not_found(format!("remediation {id:?} not found")))?;
        if current.state != "proposed" {
            return Err(Status::failed_precondition(format!(
                "remediation {id:?} is {}, not proposed",
                current.state
            )));
        }
        let cluster = ClusterId::parse(&current.cluster_id).ok();
        let env = envelope::new_for(cluster.as_ref(), "api", body);
        canopy_kit::publish::publish(&self.js, &env)
            .await
            .map_err(|e| Status::unavailable(format!("the decision was not stored: {e}")))?;
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES;
        loop {
            let now = self
                .remediation_by_id(id)
                .await?
                .unwrap_or_else(|| current.clone());
            if now.state != "proposed" || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tonic::async_trait]
impl HealthService for HealthApi {
    #[instrument(skip_all)]
    async fn get_fleet_health(
        &self,
        request: Request<api::GetFleetHealthRequest>,
    ) -> Result<Response<api::FleetHealth>, Status> {
        let within = crate::auth::scope(&request);
        let within = sqlx::types::Json(within.labels());
        let cluster = cluster_filter(&request.get_ref().cluster_id)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT cluster_id, state, previous, reason, since FROM cluster_health
             WHERE ($1::text IS NULL OR cluster_id = $1) AND {}",
            cluster_in_scope("cluster_health.cluster_id", 2)
        )))
        .bind(&cluster)
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let diagnoses = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM diagnoses
             WHERE cleared_at IS NULL AND ($1::text IS NULL OR cluster_id = $1) AND {}
             ORDER BY raised_at, id",
            cluster_in_scope("diagnoses.cluster_id", 2)
        )))
        .bind(&cluster)
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut open: BTreeMap<String, Vec<api::Diagnosis>> = BTreeMap::new();
        for d in diagnoses.iter().map(diagnosis) {
            open.entry(d.cluster_id.clone()).or_default().push(d);
        }
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut clusters: Vec<api::ClusterHealthView> = rows
            .iter()
            .map(|r| {
                let id = text(r, "cluster_id");
                let state = text(r, "state");
                *counts.entry(state.clone()).or_default() += 1;
                let mut diagnoses = open.remove(&id).unwrap_or_default();
                diagnoses.sort_by_key(|d| std::cmp::Reverse(d.severity));
                api::ClusterHealthView {
                    cluster_id: id,
                    state: health_value(&state) as i32,
                    previous: health_value(&text(r, "previous")) as i32,
                    reason: text(r, "reason"),
                    since: ts(r, "since"),
                    diagnoses,
                }
            })
            .collect();
        // Worst first: link-down and unreachable, then degraded, then healthy.
        let rank = |s: i32| match ClusterHealth::try_from(s).unwrap_or(ClusterHealth::Unspecified) {
            ClusterHealth::LinkDown => 0,
            ClusterHealth::Unreachable => 1,
            ClusterHealth::Degraded => 2,
            ClusterHealth::Healthy => 3,
            ClusterHealth::Unspecified => 4,
        };
        clusters
            .sort_by(|a, b| (rank(a.state), &a.cluster_id).cmp(&(rank(b.state), &b.cluster_id)));
        Ok(Response::new(api::FleetHealth {
            clusters,
            counts: counts.into_iter().collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_diagnoses(
        &self,
        request: Request<api::ListDiagnosesRequest>,
    ) -> Result<Response<api::ListDiagnosesResponse>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let cluster = cluster_filter(&r.cluster_id)?;
        let limit = i64::from(if r.limit == 0 { 100 } else { r.limit.min(1000) });
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM diagnoses
             WHERE ($1::text IS NULL OR cluster_id = $1) AND ($2 OR cleared_at IS NULL)
               AND {}
             ORDER BY (cleared_at IS NULL) DESC, raised_at DESC, id LIMIT $3",
            cluster_in_scope("diagnoses.cluster_id", 4)
        )))
        .bind(&cluster)
        .bind(r.include_cleared)
        .bind(limit)
        .bind(sqlx::types::Json(within.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Response::new(api::ListDiagnosesResponse {
            diagnoses: rows.iter().map(diagnosis).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_remediations(
        &self,
        request: Request<api::ListRemediationsRequest>,
    ) -> Result<Response<api::ListRemediationsResponse>, Status> {
        let within = crate::auth::scope(&request);
        let within = sqlx::types::Json(within.labels());
        let r = request.into_inner();
        let cluster = cluster_filter(&r.cluster_id)?;
        let limit = i64::from(if r.limit == 0 { 100 } else { r.limit.min(1000) });
        let state = (!r.state.is_empty()).then_some(r.state);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM remediation_status
             WHERE ($1::text IS NULL OR cluster_id = $1) AND ($2::text IS NULL OR state = $2)
               AND {}
             ORDER BY proposed_at DESC, id LIMIT $3",
            cluster_in_scope("remediation_status.cluster_id", 4)
        )))
        .bind(&cluster)
        .bind(&state)
        .bind(limit)
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let suppressed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT cluster_id, diagnosis_id, playbook, reason, at FROM remediation_suppressions
             WHERE ($1::text IS NULL OR cluster_id = $1) AND {}
             ORDER BY seq DESC LIMIT $2",
            cluster_in_scope("remediation_suppressions.cluster_id", 3)
        )))
        .bind(&cluster)
        .bind(limit)
        .bind(within)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Response::new(api::ListRemediationsResponse {
            remediations: rows.iter().map(remediation).collect(),
            suppressed: suppressed
                .iter()
                .map(|s| api::Suppression {
                    cluster_id: text(s, "cluster_id"),
                    diagnosis_id: text(s, "diagnosis_id"),
                    playbook: text(s, "playbook"),
                    reason: text(s, "reason"),
                    at: ts(s, "at"),
                })
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(remediation = %request.get_ref().remediation_id))]
    async fn approve_remediation(
        &self,
        request: Request<api::ApproveRemediationRequest>,
    ) -> Result<Response<api::Remediation>, Status> {
        let approved_by = crate::auth::actor(&request);
        let within = crate::auth::scope(&request);
        let id = request.into_inner().remediation_id;
        let body = Body::RemediationApproved(RemediationApproved {
            remediation_id: id.clone(),
            approved_by,
        });
        Ok(Response::new(self.decide(&id, body, &within).await?))
    }

    #[instrument(skip_all, fields(remediation = %request.get_ref().remediation_id))]
    async fn reject_remediation(
        &self,
        request: Request<api::RejectRemediationRequest>,
    ) -> Result<Response<api::Remediation>, Status> {
        let rejected_by = crate::auth::actor(&request);
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let body = Body::RemediationRejected(RemediationRejected {
            remediation_id: r.remediation_id.clone(),
            rejected_by,
            reason: r.reason,
        });
        Ok(Response::new(
            self.decide(&r.remediation_id, body, &within).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list_recommendations(
        &self,
        request: Request<api::ListRecommendationsRequest>,
    ) -> Result<Response<api::ListRecommendationsResponse>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let cluster = cluster_filter(&r.cluster_id)?;
        let namespace = (!r.namespace.is_empty()).then_some(r.namespace);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM workload_recommendations
             WHERE ($1::text IS NULL OR cluster_id = $1) AND ($2::text IS NULL OR namespace = $2)
               AND {}
             ORDER BY cluster_id, namespace, kind, name",
            cluster_in_scope("workload_recommendations.cluster_id", 3)
        )))
        .bind(&cluster)
        .bind(&namespace)
        .bind(sqlx::types::Json(within.labels()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Response::new(api::ListRecommendationsResponse {
            recommendations: rows
                .iter()
                .map(|w| api::Recommendation {
                    cluster_id: text(w, "cluster_id"),
                    kind: text(w, "kind"),
                    namespace: text(w, "namespace"),
                    name: text(w, "name"),
                    replicas: u32_of(w, "replicas"),
                    cpu_usage_millis: u64_of(w, "cpu_usage_millis"),
                    cpu_request_millis: u64_of(w, "cpu_request_millis"),
                    cpu_limit_millis: u64_of(w, "cpu_limit_millis"),
                    memory_usage_bytes: u64_of(w, "memory_usage_bytes"),
                    memory_request_bytes: u64_of(w, "memory_request_bytes"),
                    memory_limit_bytes: u64_of(w, "memory_limit_bytes"),
                    recommended_replicas: u32_of(w, "recommended_replicas"),
                    recommended_cpu_request_millis: u64_of(w, "recommended_cpu_request_millis"),
                    recommended_memory_request_bytes: u64_of(w, "recommended_memory_request_bytes"),
                    recommendation: text(w, "recommendation"),
                    reported_at: ts(w, "reported_at"),
                })
                .collect(),
        }))
    }
}
