//! Writes the `interconnect_requests` read model. Times come from events; a transition the
//! current status does not allow changes nothing (logged at debug).

use anyhow::Context as _;
use sqlx::{Postgres, Transaction};
use tracing::{debug, warn};

use crate::domain::interconnect::{
    APPROVED, Decision, InterconnectOp, PENDING, REJECTED, REVOKED, SUPERSEDED,
};

/// Tables of this module (each must be in `READ_MODELS`).
#[cfg(test)]
pub const TABLES: &[&str] = &["interconnect_requests"];

type Tx<'a, 'b> = &'a mut Transaction<'b, Postgres>;

fn seq(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

pub async fn apply(tx: Tx<'_, '_>, ops: Vec<InterconnectOp>) -> anyhow::Result<()> {
    for op in ops {
        let name = op.name();
        match op {
            InterconnectOp::Requested(r) => {
                let inserted = sqlx::query(
                    "INSERT INTO interconnect_requests (request_id, cluster_id, status,
                        link_user_public_key, xkey_public_key, labels, direction, trunk, leaf_url,
                        gateway_version, requested_at, requested_seq, updated_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
                     ON CONFLICT (request_id) DO NOTHING",
                )
                .bind(&r.request_id)
                .bind(&r.cluster_id)
                .bind(PENDING)
                .bind(&r.link_user_public_key)
                .bind(&r.xkey_public_key)
                .bind(serde_json::to_value(&r.labels).context("failed to encode labels")?)
                .bind(r.direction)
                .bind(&r.trunk)
                .bind(&r.leaf_url)
                .bind(&r.gateway_version)
                .bind(r.requested_at)
                .bind(seq(r.seq))
                .execute(&mut **tx)
                .await
                .context("failed to record an interconnect request")?
                .rows_affected();
                if inserted == 0 {
                    debug!(request = %r.request_id, "repeated interconnect request ignored");
                    continue;
                }
                // The newest request of a cluster is the one that counts.
                sqlx::query(
                    "UPDATE interconnect_requests
                     SET status = $4, decided_at = $3, reason = 'superseded by request ' || $2::text,
                         updated_seq = $5
                     WHERE cluster_id = $1 AND status = $6 AND request_id <> $2",
                )
                .bind(&r.cluster_id)
                .bind(&r.request_id)
                .bind(r.requested_at)
                .bind(SUPERSEDED)
                .bind(seq(r.seq))
                .bind(PENDING)
                .execute(&mut **tx)
                .await
                .context("failed to supersede older interconnect requests")?;
            }
            InterconnectOp::Approved {
                request_id,
                decision,
            } => decide(tx, name, &request_id, APPROVED, &decision).await?,
            InterconnectOp::Rejected {
                request_id,
                decision,
            } => decide(tx, name, &request_id, REJECTED, &decision).await?,
            InterconnectOp::Revoked(d) => {
                let changed = sqlx::query(
                    "UPDATE interconnect_requests
                     SET status = $2, decided_at = $3, decided_by = $4, reason = $5,
                         updated_seq = $6
                     WHERE cluster_id = $1 AND status = $7",
                )
                .bind(&d.cluster_id)
                .bind(REVOKED)
                .bind(d.at)
                .bind(&d.by)
                .bind(&d.reason)
                .bind(seq(d.seq))
                .bind(APPROVED)
                .execute(&mut **tx)
                .await
                .context("failed to revoke a cluster's interconnect")?
                .rows_affected();
                if changed == 0 {
                    debug!(cluster = %d.cluster_id, seq = d.seq, "ClusterRevoked of a cluster with no approved request ignored");
                }
            }
            InterconnectOp::Unusable { seq, event, reason } => {
                warn!(seq, event, reason, "interconnect event not projected");
            }
        }
    }
    Ok(())
}

/// `pending` → `status` for the request of the decision's cluster.
async fn decide(
    tx: Tx<'_, '_>,
    event: &'static str,
    request_id: &str,
    status: &str,
    d: &Decision,
) -> anyhow::Result<()> {
    let changed = sqlx::query(
        "UPDATE interconnect_requests
         SET status = $3, decided_at = $4, decided_by = $5, reason = $6, updated_seq = $7
         WHERE request_id = $1 AND cluster_id = $2 AND status = $8",
    )
    .bind(request_id)
    .bind(&d.cluster_id)
    .bind(status)
    .bind(d.at)
    .bind(&d.by)
    .bind(&d.reason)
    .bind(seq(d.seq))
    .bind(PENDING)
    .execute(&mut **tx)
    .await
    .with_context(|| format!("failed to record {event}"))?
    .rows_affected();
    if changed == 0 {
        debug!(
            request = request_id,
            cluster = %d.cluster_id,
            seq = d.seq,
            event,
            "decision on an unknown or no longer pending interconnect request ignored"
        );
    }
    Ok(())
}
