//! Writes planned batches into the Postgres read models, checkpoint in the same transaction.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tracing::warn;

use crate::domain::{self, AgentRow, InventoryOp, InventoryRow, Plan};

mod audit;
mod commands;
mod health;
mod interconnect;
mod trail;

/// Every read-model table, children first: `rebuild` empties them all (add new tables here).
pub const READ_MODELS: &[&str] = &[
    // trail::TABLES
    "audit_trail",
    // commands::TABLES
    "command_runs",
    "commands",
    "schedules",
    // health::TABLES
    "cluster_health",
    "health_history",
    "diagnoses",
    "remediations",
    "remediation_suppressions",
    "workload_recommendations",
    // interconnect::TABLES
    "interconnect_requests",
    // audit::TABLES
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
    "inventory",
    "inventory_snapshots",
    "agents",
    "clusters",
    "projection_checkpoints",
];

/// Locks the checkpoint row of (stream, consumer) and returns the last applied sequence.
pub async fn lock_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<u64> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (stream, consumer, last_sequence) VALUES ($1, $2, 0)
         ON CONFLICT (stream, consumer) DO NOTHING",
    )
    .bind(stream)
    .bind(consumer)
    .execute(&mut **tx)
    .await
    .context("failed to create the projection checkpoint")?;
    let seq: i64 = sqlx::query_scalar(
        "SELECT last_sequence FROM projection_checkpoints
         WHERE stream = $1 AND consumer = $2 FOR UPDATE",
    )
    .bind(stream)
    .bind(consumer)
    .fetch_one(&mut **tx)
    .await
    .context("failed to read the projection checkpoint")?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// The last applied sequence of (stream, consumer); 0 when nothing was applied.
pub async fn read_checkpoint(pool: &PgPool, stream: &str, consumer: &str) -> anyhow::Result<u64> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT last_sequence FROM projection_checkpoints WHERE stream = $1 AND consumer = $2",
    )
    .bind(stream)
    .bind(consumer)
    .fetch_optional(pool)
    .await
    .context("failed to read the projection checkpoint")?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
}

pub async fn save_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    stream: &str,
    consumer: &str,
    seq: u64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_sequence = $3, updated_at = now()
         WHERE stream = $1 AND consumer = $2",
    )
    .bind(stream)
    .bind(consumer)
    .bind(i64::try_from(seq).context("sequence out of range")?)
    .execute(&mut **tx)
    .await
    .context("failed to save the projection checkpoint")?;
    Ok(())
}

/// Applies a plan inside `tx`.
pub async fn apply(tx: &mut Transaction<'_, Postgres>, plan: Plan) -> anyhow::Result<()> {
    upsert_clusters(tx, &plan).await?;
    set_labels(tx, &plan.labels).await?;
    apply_agents(tx, plan.agent_events).await?;
    audit::apply(tx, plan.audit).await?;
    audit::apply_policy(tx, plan.policy).await?;
    health::apply(tx, plan.health).await?;
    commands::apply(tx, plan.commands).await?;
    trail::apply(tx, plan.trail).await?;
    interconnect::apply(tx, plan.interconnect).await?;
    apply_inventory(tx, plan.inventory).await
}

async fn upsert_clusters(tx: &mut Transaction<'_, Postgres>, plan: &Plan) -> anyhow::Result<()> {
    if plan.clusters.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut seqs = Vec::new();
    for c in plan.clusters.values() {
        ids.push(c.id.clone());
        first.push(c.first_seen_at);
        last.push(c.last_event_at);
        seqs.push(i64::try_from(c.last_event_seq).unwrap_or(i64::MAX));
    }
    sqlx::query(
        "INSERT INTO clusters (id, first_seen_at, last_event_at, last_event_seq)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bigint[])
         ON CONFLICT (id) DO UPDATE SET
           first_seen_at  = LEAST(clusters.first_seen_at, EXCLUDED.first_seen_at),
           last_event_at  = GREATEST(clusters.last_event_at, EXCLUDED.last_event_at),
           last_event_seq = GREATEST(clusters.last_event_seq, EXCLUDED.last_event_seq)",
    )
    .bind(&ids)
    .bind(&first)
    .bind(&last)
    .bind(&seqs)
    .execute(&mut **tx)
    .await
    .context("failed to upsert clusters")?;
    Ok(())
}

async fn set_labels(
    tx: &mut Transaction<'_, Postgres>,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let ids: Vec<&String> = labels.keys().collect();
    let values = labels
        .values()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .context("failed to encode cluster labels")?;
    sqlx::query(
        "UPDATE clusters c SET labels = l.labels
         FROM UNNEST($1::text[], $2::jsonb[]) AS l(id, labels) WHERE c.id = l.id",
    )
    .bind(&ids)
    .bind(&values)
    .execute(&mut **tx)
    .await
    .context("failed to set cluster labels")?;
    Ok(())
}

async fn apply_agents(
    tx: &mut Transaction<'_, Postgres>,
    events: BTreeMap<String, Vec<(DateTime<Utc>, domain::AgentEvent)>>,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = events.keys().cloned().collect();
    let rows = sqlx::query(
        "SELECT cluster_id, agent_instance_id, agent_version, kubernetes_version, started_at,
                heartbeat_interval_seconds, last_heartbeat_at, last_heartbeat_seq,
                heartbeats_received, node_count, pod_count
         FROM agents WHERE cluster_id = ANY($1) FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .context("failed to read agents")?;
    let mut current: HashMap<String, AgentRow> = HashMap::with_capacity(rows.len());
    for r in rows {
        let row = AgentRow {
            cluster_id: r.try_get("cluster_id")?,
            agent_instance_id: r.try_get("agent_instance_id")?,
            agent_version: r.try_get("agent_version")?,
            kubernetes_version: r.try_get("kubernetes_version")?,
            started_at: r.try_get("started_at")?,
            heartbeat_interval_seconds: r.try_get("heartbeat_interval_seconds")?,
            last_heartbeat_at: r.try_get("last_heartbeat_at")?,
            last_heartbeat_seq: r.try_get("last_heartbeat_seq")?,
            heartbeats_received: r.try_get("heartbeats_received")?,
            node_count: r.try_get("node_count")?,
            pod_count: r.try_get("pod_count")?,
        };
        current.insert(row.cluster_id.clone(), row);
    }
    let mut out = AgentColumns::default();
    for (cluster, evs) in events {
        let start = current.remove(&cluster);
        let row = evs.iter().fold(start, |row, (at, e)| {
            Some(domain::evolve_agent(row, &cluster, *at, e))
        });
        if let Some(row) = row {
            out.push(row);
        }
    }
    sqlx::query(
        "INSERT INTO agents (cluster_id, agent_instance_id, agent_version, kubernetes_version,
                             started_at, heartbeat_interval_seconds, last_heartbeat_at,
                             last_heartbeat_seq, heartbeats_received, node_count, pod_count)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                              $6::int[], $7::timestamptz[], $8::bigint[], $9::bigint[],
                              $10::int[], $11::int[])
         ON CONFLICT (cluster_id) DO UPDATE SET
           agent_instance_id = EXCLUDED.agent_instance_id,
           agent_version = EXCLUDED.agent_version,
           kubernetes_version = EXCLUDED.kubernetes_version,
           started_at = EXCLUDED.started_at,
           heartbeat_interval_seconds = EXCLUDED.heartbeat_interval_seconds,
           last_heartbeat_at = EXCLUDED.last_heartbeat_at,
           last_heartbeat_seq = EXCLUDED.last_heartbeat_seq,
           heartbeats_received = EXCLUDED.heartbeats_received,
           node_count = EXCLUDED.node_count,
           pod_count = EXCLUDED.pod_count",
    )
    .bind(&out.cluster_id)
    .bind(&out.instance)
    .bind(&out.agent_version)
    .bind(&out.k8s_version)
    .bind(&out.started_at)
    .bind(&out.interval)
    .bind(&out.last_at)
    .bind(&out.last_seq)
    .bind(&out.received)
    .bind(&out.nodes)
    .bind(&out.pods)
    .execute(&mut **tx)
    .await
    .context("failed to upsert agents")?;
    Ok(())
}

#[derive(Default)]
struct AgentColumns {
    cluster_id: Vec<String>,
    instance: Vec<String>,
    agent_version: Vec<String>,
    k8s_version: Vec<String>,
    started_at: Vec<Option<DateTime<Utc>>>,
    interval: Vec<i32>,
    last_at: Vec<Option<DateTime<Utc>>>,
    last_seq: Vec<i64>,
    received: Vec<i64>,
    nodes: Vec<i32>,
    pods: Vec<i32>,
}

impl AgentColumns {
    fn push(&mut self, r: AgentRow) {
        self.cluster_id.push(r.cluster_id);
        self.instance.push(r.agent_instance_id);
        self.agent_version.push(r.agent_version);
        self.k8s_version.push(r.kubernetes_version);
        self.started_at.push(r.started_at);
        self.interval.push(r.heartbeat_interval_seconds);
        self.last_at.push(r.last_heartbeat_at);
        self.last_seq.push(r.last_heartbeat_seq);
        self.received.push(r.heartbeats_received);
        self.nodes.push(r.node_count);
        self.pods.push(r.pod_count);
    }
}

async fn apply_inventory(
    tx: &mut Transaction<'_, Postgres>,
    ops: Vec<InventoryOp>,
) -> anyhow::Result<()> {
    let mut pending: Vec<InventoryRow> = Vec::new();
    for op in ops {
        match op {
            InventoryOp::Upsert(row) => pending.push(*row),
            InventoryOp::Complete {
                cluster_id,
                snapshot_id,
                completed_at,
                total_objects,
            } => {
                upsert_inventory(tx, std::mem::take(&mut pending)).await?;
                complete_snapshot(tx, &cluster_id, &snapshot_id, completed_at, total_objects)
                    .await?;
            }
        }
    }
    upsert_inventory(tx, pending).await
}

async fn upsert_inventory(
    tx: &mut Transaction<'_, Postgres>,
    rows: Vec<InventoryRow>,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // One statement may not update a row twice: the newest version of an object wins.
    let mut latest: HashMap<(String, String, String, String), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let o = &r.object;
        latest.insert(
            (
                r.cluster_id.clone(),
                o.kind.clone(),
                o.namespace.clone(),
                o.name.clone(),
            ),
            i,
        );
    }
    let mut keep: Vec<usize> = latest.into_values().collect();
    keep.sort_unstable();
    let n = keep.len();
    let mut c = InventoryColumns::with_capacity(n);
    let mut rows: Vec<Option<InventoryRow>> = rows.into_iter().map(Some).collect();
    for i in keep {
        if let Some(r) = rows.get_mut(i).and_then(Option::take) {
            c.push(r)?;
        }
    }
    sqlx::query(
        "INSERT INTO inventory (cluster_id, kind, namespace, name, api_version, uid,
                                resource_version, labels, owner_kind, owner_name, digest,
                                attributes, created_at, snapshot_id)
         SELECT c, k, ns, n, av, u, rv, l::jsonb, ok, onm, d, a::jsonb, ca, s
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                     $13::timestamptz[], $14::text[])
              AS t(c, k, ns, n, av, u, rv, l, ok, onm, d, a, ca, s)
         ON CONFLICT (cluster_id, kind, namespace, name) DO UPDATE SET
           api_version = EXCLUDED.api_version,
           uid = EXCLUDED.uid,
           resource_version = EXCLUDED.resource_version,
           labels = EXCLUDED.labels,
           owner_kind = EXCLUDED.owner_kind,
           owner_name = EXCLUDED.owner_name,
           digest = EXCLUDED.digest,
           attributes = EXCLUDED.attributes,
           created_at = EXCLUDED.created_at,
           snapshot_id = EXCLUDED.snapshot_id",
    )
    .bind(&c.cluster)
    .bind(&c.kind)
    .bind(&c.namespace)
    .bind(&c.name)
    .bind(&c.api_version)
    .bind(&c.uid)
    .bind(&c.resource_version)
    .bind(&c.labels)
    .bind(&c.owner_kind)
    .bind(&c.owner_name)
    .bind(&c.digest)
    .bind(&c.attributes)
    .bind(&c.created_at)
    .bind(&c.snapshot)
    .execute(&mut **tx)
    .await
    .context("failed to upsert inventory")?;
    Ok(())
}

#[derive(Default)]
struct InventoryColumns {
    cluster: Vec<String>,
    kind: Vec<String>,
    namespace: Vec<String>,
    name: Vec<String>,
    api_version: Vec<String>,
    uid: Vec<String>,
    resource_version: Vec<String>,
    labels: Vec<String>,
    owner_kind: Vec<String>,
    owner_name: Vec<String>,
    digest: Vec<String>,
    attributes: Vec<String>,
    created_at: Vec<Option<DateTime<Utc>>>,
    snapshot: Vec<String>,
}

impl InventoryColumns {
    fn with_capacity(n: usize) -> Self {
        let v = || Vec::with_capacity(n);
        Self {
            cluster: v(),
            kind: v(),
            namespace: v(),
            name: v(),
            api_version: v(),
            uid: v(),
            resource_version: v(),
            labels: v(),
            owner_kind: v(),
            owner_name: v(),
            digest: v(),
            attributes: v(),
            created_at: Vec::with_capacity(n),
            snapshot: v(),
        }
    }

    fn push(&mut self, r: InventoryRow) -> anyhow::Result<()> {
        let o = r.object;
        // BTreeMap keeps the JSON key order stable, so a replay writes identical rows.
        let labels: BTreeMap<_, _> = o.labels.into_iter().collect();
        let attributes: BTreeMap<_, _> = o.attributes.into_iter().collect();
        self.cluster.push(r.cluster_id);
        self.kind.push(o.kind);
        self.namespace.push(o.namespace);
        self.name.push(o.name);
        self.api_version.push(o.api_version);
        self.uid.push(o.uid);
        self.resource_version.push(o.resource_version);
        self.labels.push(serde_json::to_string(&labels)?);
        self.owner_kind.push(o.owner_kind);
        self.owner_name.push(o.owner_name);
        self.digest.push(o.digest);
        self.attributes.push(serde_json::to_string(&attributes)?);
        self.created_at.push(o.created_at.and_then(|t| {
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        }));
        self.snapshot.push(r.snapshot_id);
        Ok(())
    }
}

async fn complete_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    cluster_id: &str,
    snapshot_id: &str,
    completed_at: DateTime<Utc>,
    announced: u64,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM inventory WHERE cluster_id = $1 AND snapshot_id <> $2")
        .bind(cluster_id)
        .bind(snapshot_id)
        .execute(&mut **tx)
        .await
        .context("failed to remove objects of older snapshots")?;
    let total: i64 = sqlx::query_scalar(
        "INSERT INTO inventory_snapshots (cluster_id, snapshot_id, completed_at, total_objects,
                                          counts_by_kind)
         SELECT $1, $2, $3,
                (SELECT count(*) FROM inventory WHERE cluster_id = $1),
                COALESCE((SELECT jsonb_object_agg(kind, n)
                          FROM (SELECT kind, count(*) AS n FROM inventory
                                WHERE cluster_id = $1 GROUP BY kind) k), '{}'::jsonb)
         ON CONFLICT (cluster_id) DO UPDATE SET
           snapshot_id = EXCLUDED.snapshot_id,
           completed_at = EXCLUDED.completed_at,
           total_objects = EXCLUDED.total_objects,
           counts_by_kind = EXCLUDED.counts_by_kind
         RETURNING total_objects",
    )
    .bind(cluster_id)
    .bind(snapshot_id)
    .bind(completed_at)
    .fetch_one(&mut **tx)
    .await
    .context("failed to record the completed snapshot")?;
    if u64::try_from(total).ok() != Some(announced) {
        warn!(
            cluster = cluster_id,
            snapshot = snapshot_id,
            announced,
            stored = total,
            "snapshot object count differs from what the agent announced"
        );
    }
    Ok(())
}

/// Empties every read model of [`READ_MODELS`] (for `rebuild`).
pub async fn truncate_all(pool: &PgPool) -> anyhow::Result<()> {
    // The table names are the constants of READ_MODELS, never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "TRUNCATE {}",
        READ_MODELS.join(", ")
    )))
    .execute(pool)
    .await
    .context("failed to empty the read models")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_audit_table_is_emptied_by_rebuild() {
        for t in super::audit::TABLES
            .iter()
            .chain(super::health::TABLES)
            .chain(super::commands::TABLES)
            .chain(super::trail::TABLES)
            .chain(super::interconnect::TABLES)
        {
            assert!(
                super::READ_MODELS.contains(t),
                "{t} missing from READ_MODELS"
            );
        }
    }
}
