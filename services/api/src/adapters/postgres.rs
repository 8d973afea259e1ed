//! Reads the fleet read models that ingestion writes; the api never writes Postgres.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use thiserror::Error;

use canopy_kit::subject::ClusterId;

use super::ReadModel;
use crate::domain::{Agent, Cluster, Inventory, PageRequest};

/// A failed read: `action` says what was being read, `source` holds the detail that is logged
/// but never sent to callers.
#[derive(Debug, Error)]
#[error("failed to {action}: {source}")]
pub struct ReadModelError {
    pub action: &'static str,
    #[source]
    pub source: sqlx::Error,
}

impl ReadModelError {
    /// True when Postgres could not be reached at all (worth retrying), as opposed to a query
    /// that failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.source,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
        )
    }
}

/// The columns of one cluster; `c`, `a`, `s` are clusters, agents and inventory_snapshots.
/// Ids compare with the "C" collation so that pages follow byte order whatever the database's
/// default collation is (and `id > $1` agrees with `ORDER BY id`).
macro_rules! select_clusters {
    () => {
        "SELECT c.id, c.first_seen_at,
                a.agent_instance_id, a.agent_version, a.kubernetes_version, a.started_at,
                a.heartbeat_interval_seconds, a.last_heartbeat_at, a.last_heartbeat_seq,
                a.heartbeats_received, a.node_count, a.pod_count,
                s.total_objects, s.completed_at AS inventory_at, c.labels"
    };
}

macro_rules! from_clusters {
    () => {
        " FROM clusters c
          LEFT JOIN agents a ON a.cluster_id = c.id
          LEFT JOIN inventory_snapshots s ON s.cluster_id = c.id"
    };
}

const LIST_CLUSTERS: &str = concat!(
    select_clusters!(),
    ", NULL::text[] AS kinds, NULL::bigint[] AS kind_counts",
    from_clusters!(),
    " WHERE ($1::text IS NULL OR c.id COLLATE \"C\" > $1::text COLLATE \"C\")
        AND c.labels @> $3::jsonb
      ORDER BY c.id COLLATE \"C\"
      LIMIT $2"
);

const GET_CLUSTER: &str = concat!(
    select_clusters!(),
    ", (SELECT array_agg(e.key ORDER BY e.key)
        FROM jsonb_each_text(s.counts_by_kind) e) AS kinds,
       (SELECT array_agg(e.value::bigint ORDER BY e.key)
        FROM jsonb_each_text(s.counts_by_kind) e) AS kind_counts",
    from_clusters!(),
    " WHERE c.id = $1"
);

#[derive(Debug, sqlx::FromRow)]
struct ClusterRow {
    id: String,
    first_seen_at: DateTime<Utc>,
    agent_instance_id: Option<String>,
    agent_version: Option<String>,
    kubernetes_version: Option<String>,
    started_at: Option<DateTime<Utc>>,
    heartbeat_interval_seconds: Option<i32>,
    last_heartbeat_at: Option<DateTime<Utc>>,
    last_heartbeat_seq: Option<i64>,
    heartbeats_received: Option<i64>,
    node_count: Option<i32>,
    pod_count: Option<i32>,
    total_objects: Option<i64>,
    inventory_at: Option<DateTime<Utc>>,
    kinds: Option<Vec<String>>,
    kind_counts: Option<Vec<i64>>,
    labels: sqlx::types::Json<BTreeMap<String, String>>,
}

fn unsigned(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

fn unsigned32(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

impl From<ClusterRow> for Cluster {
    fn from(r: ClusterRow) -> Self {
        let agent = r.agent_instance_id.map(|instance_id| Agent {
            instance_id,
            version: r.agent_version.unwrap_or_default(),
            kubernetes_version: r.kubernetes_version.unwrap_or_default(),
            started_at: r.started_at,
            heartbeat_interval_seconds: unsigned32(r.heartbeat_interval_seconds),
            last_heartbeat_at: r.last_heartbeat_at,
            last_heartbeat_seq: unsigned(r.last_heartbeat_seq),
            heartbeats_received: unsigned(r.heartbeats_received),
            node_count: unsigned32(r.node_count),
            pod_count: unsigned32(r.pod_count),
        });
        let by_kind: BTreeMap<String, u64> = r
            .kinds
            .unwrap_or_default()
            .into_iter()
            .zip(r.kind_counts.unwrap_or_default())
            .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
            .collect();
        let inventory = r.total_objects.map(|n| Inventory {
            objects: u64::try_from(n).unwrap_or(0),
            completed_at: r.inventory_at,
            by_kind,
        });
        Self {
            id: r.id,
            first_seen_at: r.first_seen_at,
            agent,
            inventory,
            labels: r.labels.0,
        }
    }
}

/// The labels of a cluster, `None` when it is unknown (what scope checks of a named cluster
/// read).
pub async fn cluster_labels(
    pool: &PgPool,
    cluster_id: &str,
) -> Result<Option<BTreeMap<String, String>>, ReadModelError> {
    let labels: Option<sqlx::types::Json<BTreeMap<String, String>>> =
        sqlx::query_scalar("SELECT labels FROM clusters WHERE id = $1")
            .bind(cluster_id)
            .fetch_optional(pool)
            .await
            .map_err(|source| ReadModelError {
                action: "read a cluster's labels",
                source,
            })?;
    Ok(labels.map(|l| l.0))
}

/// The read models in Postgres.
#[derive(Clone)]
pub struct PgReadModel {
    pool: PgPool,
}

impl PgReadModel {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadModel for PgReadModel {
    async fn list_clusters(&self, page: &PageRequest) -> Result<Vec<Cluster>, ReadModelError> {
        let rows: Vec<ClusterRow> = sqlx::query_as(LIST_CLUSTERS)
            .bind(page.after.as_ref().map(ClusterId::as_str))
            .bind(i64::from(page.size) + 1)
            .bind(sqlx::types::Json(&page.match_labels))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| ReadModelError {
                action: "list clusters",
                source,
            })?;
        Ok(rows.into_iter().map(Cluster::from).collect())
    }

    async fn get_cluster(&self, id: &ClusterId) -> Result<Option<Cluster>, ReadModelError> {
        let row: Option<ClusterRow> = sqlx::query_as(GET_CLUSTER)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| ReadModelError {
                action: "read a cluster",
                source,
            })?;
        Ok(row.map(Cluster::from))
    }

    async fn cluster_labels(
        &self,
        id: &ClusterId,
    ) -> Result<Option<BTreeMap<String, String>>, ReadModelError> {
        cluster_labels(&self.pool, id.as_str()).await
    }

    /// Reachable and migrated: ingestion owns the schema, so until it has run there is nothing
    /// to serve.
    async fn ping(&self) -> Result<(), ReadModelError> {
        sqlx::query("SELECT 1 FROM clusters LIMIT 1")
            .execute(&self.pool)
            .await
            .map_err(|source| ReadModelError {
                action: "reach Postgres",
                source,
            })?;
        Ok(())
    }
}
