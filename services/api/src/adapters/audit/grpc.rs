//! FindingsService (findings, posture, audits from the read models) and PolicyService (the
//! policy from CONTROL; changes published to CONTROL, nothing published on bad input).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tonic::{Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use canopy_kit::envelope;
use canopy_kit::proto::api::v1::{
    self as api, findings_service_server::FindingsService, policy_service_server::PolicyService,
};
use canopy_kit::proto::event::v1::{
    self as ev, DerogationGranted, DerogationRevoked, PolicyChanged, envelope::Body,
};

use super::control::PolicyLog;
use super::{AuditReadModel, proto};
use crate::adapters::proto::timestamp;
use crate::domain::audit::{
    self as rules, AuditError, AuditsQuery, DerogationsQuery, FindingsQuery, FindingsRequest,
    GrantInput, PostureScope, ScopeInput,
};
use crate::domain::scope::{OutOfScope, Scope};

/// How long RevokeDerogation waits for a just-granted derogation to reach the read models.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);
const PRODUCER: &str = "api";

/// Who made a change: the token's subject (`anonymous` when the api runs without
/// authentication).
fn actor<T>(request: &Request<T>) -> String {
    crate::auth::actor(request)
}

// === impl FindingsApi ===

pub struct FindingsApi<R> {
    read_model: R,
}

impl<R: AuditReadModel> FindingsApi<R> {
    pub fn new(read_model: R) -> Self {
        Self { read_model }
    }
}

#[tonic::async_trait]
impl<R: AuditReadModel> FindingsService for FindingsApi<R> {
    #[instrument(skip_all)]
    async fn list_findings(
        &self,
        request: Request<api::ListFindingsRequest>,
    ) -> Result<Response<api::ListFindingsResponse>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let mut states = Vec::new();
        for s in &r.states {
            states.push(proto::finding_state(*s)?);
        }
        let min = match r.min_severity {
            0 => "",
            v => proto::severity_name(v).ok_or_else(|| AuditError::Invalid {
                field: "min_severity",
                reason: format!("{v} is not a severity"),
            })?,
        };
        let mut severities = Vec::new();
        for s in &r.severities {
            severities.push(
                proto::severity_name(*s)
                    .ok_or_else(|| AuditError::Invalid {
                        field: "severities",
                        reason: format!("{s} is not a severity"),
                    })?
                    .to_owned(),
            );
        }
        let q = FindingsQuery::new(FindingsRequest {
            cluster_id: r.cluster_id,
            namespace: r.namespace,
            application: r.application,
            check: r.check,
            min_severity: min.to_owned(),
            severities,
            standard: r.standard,
            states,
            page_size: r.page_size,
            page_token: r.page_token,
        })?;
        let now = Utc::now();
        let rows = self.read_model.list_findings(&q, &within, now).await?;
        let page = q.page(rows, super::FindingRow::key);
        Ok(Response::new(api::ListFindingsResponse {
            findings: page
                .items
                .into_iter()
                .map(|f| proto::finding_view(f, now))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all)]
    async fn get_posture(
        &self,
        request: Request<api::GetPostureRequest>,
    ) -> Result<Response<api::Posture>, Status> {
        // A scoped caller's posture covers the clusters in its scope; a cluster out of it
        // reads as one with nothing audited.
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let scope =
            PostureScope::new(&r.cluster_id, &r.namespace, &r.application, r.history_limit)?;
        let read = self.read_model.posture(&scope, &within, Utc::now()).await?;
        Ok(Response::new(proto::posture(scope.name(), read)))
    }

    #[instrument(skip_all)]
    async fn list_audits(
        &self,
        request: Request<api::ListAuditsRequest>,
    ) -> Result<Response<api::ListAuditsResponse>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let q = AuditsQuery::new(&r.cluster_id, r.page_size, &r.page_token)?;
        let rows = self.read_model.list_audits(&q, &within).await?;
        let page = q.page(rows, |a| a.first_seq);
        Ok(Response::new(api::ListAuditsResponse {
            audits: page.items.into_iter().map(proto::audit).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all)]
    async fn get_audit(
        &self,
        request: Request<api::GetAuditRequest>,
    ) -> Result<Response<api::Audit>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        crate::domain::cluster_id("cluster_id", &r.cluster_id)?;
        if r.audit_id.is_empty() {
            return Err(AuditError::Invalid {
                field: "audit_id",
                reason: "is required".into(),
            }
            .into());
        }
        let row = self
            .read_model
            .get_audit(&r.cluster_id, &r.audit_id, &within)
            .await?
            .ok_or(AuditError::AuditNotFound {
                cluster: r.cluster_id,
                audit: r.audit_id,
            })?;
        Ok(Response::new(proto::audit(row)))
    }
}

// === impl PolicyApi ===

pub struct PolicyApi<R, L> {
    read_model: R,
    log: L,
}

impl<R: AuditReadModel, L: PolicyLog> PolicyApi<R, L> {
    pub fn new(read_model: R, log: L) -> Self {
        Self { read_model, log }
    }

    /// Refuses a derogation scope that could apply beyond the caller's scope (reading the
    /// labels of the cluster it names).
    async fn check_scope(
        &self,
        within: &Scope,
        cluster_id: &str,
        cluster_labels: &BTreeMap<String, String>,
    ) -> Result<(), Status> {
        if within.is_fleet() {
            return Ok(());
        }
        let named = self.named_labels(cluster_id).await?;
        Ok(within.admits_derogation(cluster_id, cluster_labels, named.as_ref())?)
    }

    /// The labels of the cluster a derogation names (`None`: it names none, or an unknown one).
    async fn named_labels(
        &self,
        cluster_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Status> {
        if cluster_id.is_empty() {
            return Ok(None);
        }
        Ok(self.read_model.cluster_labels(cluster_id).await?)
    }

    /// Waits (bounded) until the read models reflect CONTROL as it is now.
    async fn catch_up(&self) -> Result<(), Status> {
        let target = self.log.last_sequence().await?;
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES;
        while self.read_model.control_applied().await? < target {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

fn policy_state(stored: super::control::StoredPolicy) -> api::PolicyState {
    api::PolicyState {
        version: stored.changed.version,
        policy: Some(stored.changed.policy.unwrap_or_else(|| ev::Policy {
            level: "all".into(),
            ..Default::default()
        })),
        changed_by: stored.changed.changed_by,
        reason: stored.changed.reason,
        changed_at: stored.at.map(timestamp),
        control_sequence: stored.seq,
    }
}

#[tonic::async_trait]
impl<R: AuditReadModel, L: PolicyLog> PolicyService for PolicyApi<R, L> {
    #[instrument(skip_all)]
    async fn get_policy(
        &self,
        _request: Request<api::GetPolicyRequest>,
    ) -> Result<Response<api::PolicyState>, Status> {
        Ok(Response::new(policy_state(
            self.log.current_policy().await?,
        )))
    }

    #[instrument(skip_all, fields(expected = ?request.get_ref().expected_version))]
    async fn set_policy(
        &self,
        request: Request<api::SetPolicyRequest>,
    ) -> Result<Response<api::PolicyState>, Status> {
        let by = actor(&request);
        let r = request.into_inner();
        let policy = r.policy.ok_or(AuditError::Invalid {
            field: "policy",
            reason: "is required".into(),
        })?;
        let policy = rules::validate_policy(proto::policy_input(&policy)?)?;
        let stored = self.log.current_policy().await?;
        let version = rules::next_version(stored.changed.version, r.expected_version)?;
        let changed = PolicyChanged {
            version,
            policy: Some(proto::policy_proto(&policy)),
            changed_by: by,
            reason: r.reason,
        };
        let env = envelope::new_for(None, PRODUCER, Body::PolicyChanged(changed.clone()));
        let seq = match self.log.publish_policy(&env, stored.seq).await {
            Ok(seq) => seq,
            Err(super::control::ControlError::WrongLastSequence) => {
                return Err(AuditError::Raced {
                    read: stored.changed.version,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        metrics::counter!("canopy_api_policy_changes_total").increment(1);
        Ok(Response::new(policy_state(super::control::StoredPolicy {
            changed,
            at: Some(Utc::now()),
            seq,
        })))
    }

    #[instrument(skip_all, fields(check = %request.get_ref().check))]
    async fn grant_derogation(
        &self,
        request: Request<api::GrantDerogationRequest>,
    ) -> Result<Response<api::GrantDerogationResponse>, Status> {
        let by = actor(&request);
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let now = Utc::now();
        let s = r.scope.unwrap_or_default();
        let expires_at = match &r.expires_at {
            Some(t) => Some(proto::datetime("expires_at", t)?),
            None => None,
        };
        let g = rules::validate_grant(
            GrantInput {
                check: r.check,
                scope: ScopeInput {
                    cluster_labels: s.cluster_labels.into_iter().collect(),
                    cluster_id: s.cluster_id,
                    namespace: s.namespace,
                    workload_kind: s.workload_kind,
                    workload_name: s.workload_name,
                    container: s.container,
                },
                reason: r.reason,
                approver: r.approver,
                expires_at,
            },
            now,
        )?;
        // Checked before anything is published: a derogation that could apply beyond the
        // caller's scope is refused and the audit trail records the denial.
        self.check_scope(&within, &g.scope.cluster_id, &g.scope.cluster_labels)
            .await?;
        let derogation = ev::Derogation {
            derogation_id: Uuid::now_v7().to_string(),
            check: g.check,
            scope: Some(ev::DerogationScope {
                cluster_labels: g.scope.cluster_labels.into_iter().collect(),
                cluster_id: g.scope.cluster_id,
                namespace: g.scope.namespace,
                workload_kind: g.scope.workload_kind,
                workload_name: g.scope.workload_name,
                container: g.scope.container,
            }),
            reason: g.reason,
            approver: g.approver,
            expires_at: g.expires_at.map(timestamp),
            granted_by: by,
            granted_at: Some(timestamp(now)),
        };
        let env = envelope::new_for(
            None,
            PRODUCER,
            Body::DerogationGranted(DerogationGranted {
                derogation: Some(derogation.clone()),
            }),
        );
        let seq = self.log.publish(&env).await?;
        Ok(Response::new(api::GrantDerogationResponse {
            derogation: Some(derogation),
            control_sequence: seq,
        }))
    }

    #[instrument(skip_all, fields(derogation = %request.get_ref().derogation_id))]
    async fn revoke_derogation(
        &self,
        request: Request<api::RevokeDerogationRequest>,
    ) -> Result<Response<api::RevokeDerogationResponse>, Status> {
        let by = actor(&request);
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let id = rules::derogation_id("derogation_id", &r.derogation_id)?.to_string();
        let mut row = self.read_model.get_derogation(&id).await?;
        if row.is_none() {
            // Granted a moment ago: wait for the projection to catch up with CONTROL.
            self.catch_up().await?;
            row = self.read_model.get_derogation(&id).await?;
        }
        let row = row.filter(|d| !d.check_id.is_empty());
        // A scoped caller cannot tell a derogation out of its scope from a missing one.
        if !within.is_fleet() {
            let in_scope = match &row {
                Some(d) => {
                    let named = self.named_labels(&d.cluster_id).await?;
                    within
                        .admits_derogation(&d.cluster_id, &d.cluster_labels.0, named.as_ref())
                        .is_ok()
                }
                None => false,
            };
            if !in_scope {
                return Err(OutOfScope::Object {
                    what: "derogation",
                    id,
                }
                .into());
            }
        }
        let row = row.ok_or_else(|| AuditError::DerogationNotFound(id.clone()))?;
        if row.revoked_at.is_some() {
            return Err(AuditError::AlreadyRevoked(id).into());
        }
        let env = envelope::new_for(
            None,
            PRODUCER,
            Body::DerogationRevoked(DerogationRevoked {
                derogation_id: id,
                revoked_by: by,
                reason: r.reason,
            }),
        );
        let seq = self.log.publish(&env).await?;
        Ok(Response::new(api::RevokeDerogationResponse {
            control_sequence: seq,
        }))
    }

    #[instrument(skip_all)]
    async fn list_derogations(
        &self,
        request: Request<api::ListDerogationsRequest>,
    ) -> Result<Response<api::ListDerogationsResponse>, Status> {
        let within = crate::auth::scope(&request);
        let r = request.into_inner();
        let mut states = Vec::new();
        for s in &r.states {
            states.push(proto::derogation_state(*s)?);
        }
        let q = DerogationsQuery::new(states, &r.check, &r.cluster_id, r.page_size, &r.page_token)?;
        // A filter naming a cluster out of the caller's scope gives an empty answer (its
        // label-only derogations included).
        if !within.is_fleet() && !r.cluster_id.is_empty() {
            let labels = self.named_labels(&r.cluster_id).await?;
            if !labels.is_some_and(|l| within.admits_cluster(&l)) {
                return Ok(Response::new(api::ListDerogationsResponse::default()));
            }
        }
        let now = Utc::now();
        let rows = self.read_model.list_derogations(&q, &within, now).await?;
        let page = q.page(rows, |d| (d.granted_seq, d.derogation_id.clone()));
        Ok(Response::new(api::ListDerogationsResponse {
            derogations: page
                .items
                .into_iter()
                .map(|d| proto::derogation_view(d, now))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
