//! InterconnectService: interconnect requests from the `interconnect_requests` read model;
//! approving, rejecting and revoking publish `InterconnectApproved`, `InterconnectRejected` and
//! `ClusterRevoked` on CONTROL and wait (bounded) until the read model shows them. The seed's
//! gateway acts on those events; the api writes no table.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use tracing::{error, instrument, warn};

use canopy_kit::envelope;
use canopy_kit::proto::api::v1::{self as api, interconnect_service_server::InterconnectService};
use canopy_kit::proto::event::v1::{
    ClusterRevoked, InterconnectApproved, InterconnectRejected, LinkDirection, envelope::Body,
};
use canopy_kit::subject::ClusterId;

use super::ReadModelError;
use super::commands::CommandControl;
use crate::adapters::proto::timestamp;
use crate::domain::interconnect::{self as rules, Decision, InterconnectError};

const PRODUCER: &str = "api";
/// How long a decision waits for the read model to show it.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InterconnectRow {
    pub request_id: String,
    pub cluster_id: String,
    pub status: String,
    pub link_user_public_key: String,
    pub xkey_public_key: String,
    pub labels: sqlx::types::Json<HashMap<String, String>>,
    pub direction: String,
    pub trunk: String,
    pub leaf_url: String,
    pub gateway_version: String,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: String,
    pub reason: String,
}

const COLUMNS: &str = "request_id, cluster_id, status, link_user_public_key, xkey_public_key,
    labels, direction, trunk, leaf_url, gateway_version, requested_at, decided_at, decided_by,
    reason";

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> ReadModelError {
    move |source| ReadModelError { action, source }
}

fn direction(name: &str) -> LinkDirection {
    match name {
        "leaf-dials" => LinkDirection::LeafDials,
        "seed-dials" => LinkDirection::SeedDials,
        _ => LinkDirection::Unspecified,
    }
}

impl From<InterconnectRow> for api::Interconnect {
    fn from(r: InterconnectRow) -> Self {
        Self {
            request_id: r.request_id,
            cluster_id: r.cluster_id,
            status: r.status,
            link_user_public_key: r.link_user_public_key,
            xkey_public_key: r.xkey_public_key,
            labels: r.labels.0,
            direction: direction(&r.direction) as i32,
            trunk: r.trunk,
            leaf_url: r.leaf_url,
            gateway_version: r.gateway_version,
            requested_at: Some(timestamp(r.requested_at)),
            decided_at: r.decided_at.map(timestamp),
            decided_by: r.decided_by,
            reason: r.reason,
        }
    }
}

// === impl PgInterconnects ===

/// Reads interconnect requests from Postgres.
#[derive(Clone)]
pub struct PgInterconnects {
    pool: PgPool,
}

impl PgInterconnects {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, request_id: &str) -> Result<Option<InterconnectRow>, ReadModelError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM interconnect_requests WHERE request_id = $1"
        )))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed("read an interconnect request"))
    }

    /// Pending requests first, then the newest.
    pub async fn list(
        &self,
        status: Option<&str>,
        cluster: Option<&ClusterId>,
        limit: u32,
    ) -> Result<Vec<InterconnectRow>, ReadModelError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM interconnect_requests
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR cluster_id = $2)
             ORDER BY (status = 'pending') DESC, requested_at DESC, requested_seq DESC
             LIMIT $3"
        )))
        .bind(status)
        .bind(cluster.map(ClusterId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list interconnect requests"))
    }

    /// A cluster's requests as (request id, status), newest first.
    pub async fn of_cluster(
        &self,
        cluster: &ClusterId,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        sqlx::query_as(
            "SELECT request_id, status FROM interconnect_requests WHERE cluster_id = $1
             ORDER BY requested_seq DESC",
        )
        .bind(cluster.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed("read a cluster's interconnect requests"))
    }

    /// The last CONTROL sequence ingestion has applied.
    pub async fn control_applied(&self) -> Result<u64, ReadModelError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT max(last_sequence) FROM projection_checkpoints WHERE stream = 'CONTROL'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed("read the CONTROL checkpoint"))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }
}

// === impl InterconnectApi ===

pub struct InterconnectApi {
    read: PgInterconnects,
    control: CommandControl,
}

fn unavailable(e: String) -> Status {
    error!(error = %e, "CONTROL failed");
    Status::unavailable("the control stream is unreachable; retry later")
}

impl InterconnectApi {
    pub fn new(read: PgInterconnects, control: CommandControl) -> Self {
        Self { read, control }
    }

    async fn existing(&self, request_id: &str) -> Result<InterconnectRow, Status> {
        Ok(self
            .read
            .get(request_id)
            .await?
            .ok_or_else(|| InterconnectError::NotFound(request_id.to_owned()))?)
    }

    /// Publishes `body` about `cluster` with `event_id` on CONTROL, waits (bounded) until
    /// ingestion has applied it, and returns the request as the read model then shows it.
    async fn publish_and_read(
        &self,
        cluster: &ClusterId,
        event_id: String,
        body: Body,
        request_id: &str,
    ) -> Result<InterconnectRow, Status> {
        let mut env = envelope::new_for(Some(cluster), PRODUCER, body);
        env.event_id = event_id;
        let stored = self.control.publish(&env).await.map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES;
        while self.read.control_applied().await? < stored.seq {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    seq = stored.seq,
                    "the read model has not applied the decision in time; answering with what it shows"
                );
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.existing(request_id).await
    }

    /// Approves or rejects a pending request.
    async fn decide(
        &self,
        decision: Decision,
        request_id: &str,
        body: impl FnOnce(String) -> Body,
    ) -> Result<api::Interconnect, Status> {
        let request_id = rules::request_id(request_id)?;
        let current = self.existing(&request_id).await?;
        rules::check_pending(&request_id, &current.status)?;
        let cluster = ClusterId::parse(&current.cluster_id).map_err(|e| {
            error!(error = %e, request = %request_id, "a stored request names an invalid cluster");
            Status::internal("internal error: the request names an invalid cluster")
        })?;
        let event_id = rules::decision_event_id(decision, &request_id);
        let now = self
            .publish_and_read(&cluster, event_id, body(request_id.clone()), &request_id)
            .await?;
        // Another decision (or a newer request) was applied first.
        if now.status != decision.status() && now.status != rules::PENDING {
            return Err(InterconnectError::NotPending {
                request_id,
                status: now.status,
            }
            .into());
        }
        metrics::counter!("canopy_api_interconnect_decisions_total", "decision" => decision.status())
            .increment(1);
        Ok(now.into())
    }
}

#[tonic::async_trait]
impl InterconnectService for InterconnectApi {
    #[instrument(skip_all)]
    async fn list_interconnects(
        &self,
        request: Request<api::ListInterconnectsRequest>,
    ) -> Result<Response<api::ListInterconnectsResponse>, Status> {
        let r = request.into_inner();
        let status = rules::status_filter(&r.status)?;
        let cluster = rules::cluster_filter(&r.cluster_id)?;
        let rows = self
            .read
            .list(status, cluster.as_ref(), rules::limit(r.limit))
            .await?;
        Ok(Response::new(api::ListInterconnectsResponse {
            interconnects: rows.into_iter().map(Into::into).collect(),
        }))
    }

    #[instrument(skip_all, fields(request = %request.get_ref().request_id))]
    async fn approve_interconnect(
        &self,
        request: Request<api::ApproveInterconnectRequest>,
    ) -> Result<Response<api::Interconnect>, Status> {
        let approved_by = crate::auth::actor(&request);
        let r = request.into_inner();
        let row = self
            .decide(Decision::Approve, &r.request_id, |request_id| {
                Body::InterconnectApproved(InterconnectApproved {
                    request_id,
                    approved_by,
                    ..Default::default()
                })
            })
            .await?;
        Ok(Response::new(row))
    }

    #[instrument(skip_all, fields(request = %request.get_ref().request_id))]
    async fn reject_interconnect(
        &self,
        request: Request<api::RejectInterconnectRequest>,
    ) -> Result<Response<api::Interconnect>, Status> {
        let rejected_by = crate::auth::actor(&request);
        let r = request.into_inner();
        let reason = rules::reason(&r.reason)?;
        let row = self
            .decide(Decision::Reject, &r.request_id, |request_id| {
                Body::InterconnectRejected(InterconnectRejected {
                    request_id,
                    rejected_by,
                    reason,
                })
            })
            .await?;
        Ok(Response::new(row))
    }

    #[instrument(skip_all, fields(cluster = %request.get_ref().cluster_id))]
    async fn revoke_cluster(
        &self,
        request: Request<api::RevokeClusterRequest>,
    ) -> Result<Response<api::Interconnect>, Status> {
        let revoked_by = crate::auth::actor(&request);
        let r = request.into_inner();
        let cluster = rules::cluster_id(&r.cluster_id)?;
        let reason = rules::reason(&r.reason)?;
        let requests = self.read.of_cluster(&cluster).await?;
        let request_id = rules::revocable(&cluster, &requests)?.to_owned();
        let event_id = rules::revocation_event_id(&cluster, &request_id);
        let body = Body::ClusterRevoked(ClusterRevoked { revoked_by, reason });
        let now = self
            .publish_and_read(&cluster, event_id, body, &request_id)
            .await?;
        metrics::counter!("canopy_api_clusters_revoked_total").increment(1);
        Ok(Response::new(now.into()))
    }
}
