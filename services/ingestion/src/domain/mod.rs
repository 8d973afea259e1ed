//! Pure projection rules: how fleet events change the read models. No I/O here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use canopy_kit::envelope::{Plane, route};
use canopy_kit::proto::event::v1::{
    AgentStarted, Heartbeat, InventoryObject, InventorySnapshot, envelope::Body,
};

pub mod audit;
pub mod commands;
pub mod health;
pub mod interconnect;
pub mod trail;
use audit::{AuditOp, PolicyOp};
use commands::CommandOp;
use health::HealthOp;
use interconnect::InterconnectOp;

/// One decoded event with its position in the stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub cluster_id: String,
    pub occurred_at: DateTime<Utc>,
    pub body: Body,
}

/// A cluster row after the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTouch {
    pub id: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub last_event_seq: u64,
}

/// The `agents` row of a cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentRow {
    pub cluster_id: String,
    pub agent_instance_id: String,
    pub agent_version: String,
    pub kubernetes_version: String,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_interval_seconds: i32,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub last_heartbeat_seq: i64,
    pub heartbeats_received: i64,
    pub node_count: i32,
    pub pod_count: i32,
}

/// One `inventory` row.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryRow {
    pub cluster_id: String,
    pub snapshot_id: String,
    pub object: InventoryObject,
}

/// Inventory changes, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum InventoryOp {
    Upsert(Box<InventoryRow>),
    /// The snapshot is complete: objects of other snapshots are gone.
    Complete {
        cluster_id: String,
        snapshot_id: String,
        completed_at: DateTime<Utc>,
        total_objects: u64,
    },
}

/// What a batch of events does to the read models.
#[derive(Debug, Default)]
pub struct Plan {
    pub clusters: BTreeMap<String, ClusterTouch>,
    /// Agent events per cluster, in stream order; folded with `evolve_agent` over the stored row.
    pub agent_events: BTreeMap<String, Vec<(DateTime<Utc>, AgentEvent)>>,
    pub inventory: Vec<InventoryOp>,
    /// The labels of each cluster's newest AgentStarted in the batch.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Audit events, in stream order.
    pub audit: Vec<AuditOp>,
    /// Policy and derogation events, in stream order.
    pub policy: Vec<PolicyOp>,
    /// Fleet health events, in stream order.
    pub health: Vec<HealthOp>,
    /// Command and schedule events, in stream order.
    pub commands: Vec<CommandOp>,
    /// Audit-trail records (AUDIT_TRAIL), in stream order.
    pub trail: Vec<trail::TrailRow>,
    /// Interconnect requests, decisions and revocations, in stream order.
    pub interconnect: Vec<InterconnectOp>,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Started(AgentStarted),
    Heartbeat(Heartbeat),
}

/// Plans a batch. Events must be in stream order and above the checkpoint.
pub fn plan(events: Vec<Event>) -> Plan {
    let mut plan = Plan::default();
    for e in events {
        plan.last_seq = plan.last_seq.max(e.seq);
        // Only what a cluster reports (FLEET_EVENTS) makes it known and moves its position;
        // control events about it come from another stream with other sequences.
        if route(&e.body).plane == Plane::Evt {
            touch_cluster(&mut plan, &e);
        }
        if let Some(op) = commands::plan(e.seq, &e.cluster_id, e.occurred_at, &e.body) {
            plan.commands.push(op);
            // The command of a remediation also moves the remediation.
            if let Body::CommandRequested(requested) = e.body
                && !requested.remediation_id.is_empty()
            {
                plan.health.push(HealthOp::Requested {
                    seq: e.seq,
                    at: e.occurred_at,
                    requested,
                });
            }
            continue;
        }
        if let Some(op) = interconnect::plan(e.seq, &e.cluster_id, e.occurred_at, &e.body) {
            plan.interconnect.push(op);
            continue;
        }
        match e.body {
            Body::AgentStarted(s) => {
                plan.labels.insert(
                    e.cluster_id.clone(),
                    s.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
                plan.agent_events
                    .entry(e.cluster_id)
                    .or_default()
                    .push((e.occurred_at, AgentEvent::Started(s)));
            }
            Body::Heartbeat(h) => plan
                .agent_events
                .entry(e.cluster_id)
                .or_default()
                .push((e.occurred_at, AgentEvent::Heartbeat(h))),
            Body::InventorySnapshot(s) => plan_snapshot(&mut plan, e.cluster_id, e.occurred_at, s),
            Body::AuditStarted(started) => plan.audit.push(AuditOp::Started {
                cluster_id: e.cluster_id,
                seq: e.seq,
                at: e.occurred_at,
                started,
            }),
            Body::FindingsChunk(chunk) => plan.audit.push(AuditOp::Chunk {
                cluster_id: e.cluster_id,
                seq: e.seq,
                chunk,
            }),
            Body::AuditCompleted(completed) => plan.audit.push(AuditOp::Completed {
                cluster_id: e.cluster_id,
                seq: e.seq,
                at: e.occurred_at,
                completed,
            }),
            Body::PolicyChanged(changed) => plan.policy.push(PolicyOp::Changed {
                seq: e.seq,
                at: e.occurred_at,
                changed,
            }),
            Body::DerogationGranted(g) => {
                if let Some(derogation) = g.derogation {
                    plan.policy.push(PolicyOp::Granted {
                        seq: e.seq,
                        at: e.occurred_at,
                        derogation,
                    });
                }
            }
            Body::DerogationRevoked(revoked) => plan.policy.push(PolicyOp::Revoked {
                seq: e.seq,
                at: e.occurred_at,
                revoked,
            }),
            Body::HealthReported(r) if r.metrics_available => plan.health.push(HealthOp::Usage {
                cluster_id: e.cluster_id,
                at: e.occurred_at,
                usage: r.usage,
            }),
            Body::HealthChanged(changed) => plan.health.push(HealthOp::Changed {
                seq: e.seq,
                cluster_id: e.cluster_id,
                at: e.occurred_at,
                changed,
            }),
            Body::DiagnosisRaised(raised) => plan.health.push(HealthOp::Raised {
                seq: e.seq,
                cluster_id: e.cluster_id,
                at: e.occurred_at,
                raised,
            }),
            Body::DiagnosisCleared(cleared) => plan.health.push(HealthOp::Cleared {
                seq: e.seq,
                at: e.occurred_at,
                cleared,
            }),
            Body::RemediationProposed(proposed) => plan.health.push(HealthOp::Proposed {
                seq: e.seq,
                cluster_id: e.cluster_id,
                at: e.occurred_at,
                proposed,
            }),
            Body::RemediationApproved(approved) => plan.health.push(HealthOp::Approved {
                seq: e.seq,
                at: e.occurred_at,
                approved,
            }),
            Body::RemediationRejected(rejected) => plan.health.push(HealthOp::Rejected {
                seq: e.seq,
                at: e.occurred_at,
                rejected,
            }),
            Body::RemediationSuppressed(suppressed) => plan.health.push(HealthOp::Suppressed {
                seq: e.seq,
                cluster_id: e.cluster_id,
                at: e.occurred_at,
                suppressed,
            }),
            Body::ActionRecorded(record) => plan.trail.push(trail::TrailRow {
                seq: e.seq,
                at: e.occurred_at,
                record,
            }),
            // Events no read model projects (yet): applied as no-ops, checkpoint moves on.
            _ => {}
        }
    }
    plan
}

fn touch_cluster(plan: &mut Plan, e: &Event) {
    plan.clusters
        .entry(e.cluster_id.clone())
        .and_modify(|c| {
            c.first_seen_at = c.first_seen_at.min(e.occurred_at);
            c.last_event_at = c.last_event_at.max(e.occurred_at);
            c.last_event_seq = c.last_event_seq.max(e.seq);
        })
        .or_insert_with(|| ClusterTouch {
            id: e.cluster_id.clone(),
            first_seen_at: e.occurred_at,
            last_event_at: e.occurred_at,
            last_event_seq: e.seq,
        });
}

fn plan_snapshot(plan: &mut Plan, cluster_id: String, at: DateTime<Utc>, s: InventorySnapshot) {
    let InventorySnapshot {
        snapshot_id,
        last_chunk,
        total_objects,
        objects,
        ..
    } = s;
    plan.inventory.extend(objects.into_iter().map(|object| {
        InventoryOp::Upsert(Box::new(InventoryRow {
            cluster_id: cluster_id.clone(),
            snapshot_id: snapshot_id.clone(),
            object,
        }))
    }));
    if last_chunk {
        plan.inventory.push(InventoryOp::Complete {
            cluster_id,
            snapshot_id,
            completed_at: at,
            total_objects,
        });
    }
}

/// Applies one agent event to the stored row. Heartbeat counters belong to one agent
/// instance: a new instance (AgentStarted, or a heartbeat of an unknown instance when its
/// AgentStarted expired from the log) starts them again.
pub fn evolve_agent(
    row: Option<AgentRow>,
    cluster_id: &str,
    at: DateTime<Utc>,
    event: &AgentEvent,
) -> AgentRow {
    match event {
        AgentEvent::Started(s) => AgentRow {
            cluster_id: cluster_id.to_owned(),
            agent_instance_id: s.agent_instance_id.clone(),
            agent_version: s.agent_version.clone(),
            kubernetes_version: s.kubernetes_version.clone(),
            started_at: Some(at),
            heartbeat_interval_seconds: saturate(s.heartbeat_interval_seconds),
            // Keep the last known size and heartbeat time until the new instance reports.
            last_heartbeat_at: row.as_ref().and_then(|r| r.last_heartbeat_at),
            node_count: row.as_ref().map_or(0, |r| r.node_count),
            pod_count: row.as_ref().map_or(0, |r| r.pod_count),
            last_heartbeat_seq: 0,
            heartbeats_received: 0,
        },
        AgentEvent::Heartbeat(h) => {
            let mut r = match row {
                Some(r) if r.agent_instance_id == h.agent_instance_id => r,
                other => {
                    let prev = other.unwrap_or_default();
                    AgentRow {
                        cluster_id: cluster_id.to_owned(),
                        agent_instance_id: h.agent_instance_id.clone(),
                        started_at: None,
                        last_heartbeat_seq: 0,
                        heartbeats_received: 0,
                        ..prev
                    }
                }
            };
            let seq = i64::try_from(h.sequence).unwrap_or(i64::MAX);
            r.heartbeats_received += 1;
            if seq >= r.last_heartbeat_seq {
                r.last_heartbeat_seq = seq;
                r.last_heartbeat_at = Some(r.last_heartbeat_at.map_or(at, |t| t.max(at)));
                r.agent_version = h.agent_version.clone();
                r.kubernetes_version = h.kubernetes_version.clone();
                r.node_count = saturate(h.node_count);
                r.pod_count = saturate(h.pod_count);
                r.heartbeat_interval_seconds = saturate(h.heartbeat_interval_seconds);
            }
            r
        }
    }
}

fn saturate(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .unwrap_or_default()
    }

    fn hb(instance: &str, seq: u64) -> AgentEvent {
        AgentEvent::Heartbeat(Heartbeat {
            agent_instance_id: instance.into(),
            sequence: seq,
            node_count: 3,
            pod_count: 10,
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.34.1".into(),
            heartbeat_interval_seconds: 10,
        })
    }

    fn started(instance: &str) -> AgentEvent {
        AgentEvent::Started(AgentStarted {
            agent_instance_id: instance.into(),
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.34.1".into(),
            heartbeat_interval_seconds: 10,
            ..Default::default()
        })
    }

    fn fold(events: &[(i64, AgentEvent)]) -> Option<AgentRow> {
        events
            .iter()
            .fold(None, |row, (at, e)| Some(evolve_agent(row, "c", t(*at), e)))
    }

    #[test]
    fn counts_heartbeats_of_one_instance_and_sees_gaps() {
        let row = fold(&[
            (0, started("i1")),
            (1, hb("i1", 1)),
            (2, hb("i1", 2)),
            (4, hb("i1", 4)),
        ])
        .unwrap_or_default();
        assert_eq!(row.last_heartbeat_seq, 4);
        assert_eq!(row.heartbeats_received, 3, "one missing");
        assert_eq!(row.last_heartbeat_at, Some(t(4)));
        assert_eq!((row.node_count, row.pod_count), (3, 10));
        assert_eq!(row.started_at, Some(t(0)));
    }

    #[test]
    fn a_new_instance_restarts_the_counters() {
        let row = fold(&[
            (0, started("i1")),
            (1, hb("i1", 1)),
            (2, hb("i1", 2)),
            (3, started("i2")),
            (4, hb("i2", 1)),
        ])
        .unwrap_or_default();
        assert_eq!(row.agent_instance_id, "i2");
        assert_eq!((row.last_heartbeat_seq, row.heartbeats_received), (1, 1));
        assert_eq!(row.started_at, Some(t(3)));
    }

    #[test]
    fn a_heartbeat_of_an_unknown_instance_starts_counting_anew() {
        let row =
            fold(&[(0, started("i1")), (1, hb("i1", 5)), (2, hb("i2", 7))]).unwrap_or_default();
        assert_eq!(row.agent_instance_id, "i2");
        assert_eq!((row.last_heartbeat_seq, row.heartbeats_received), (7, 1));
        assert_eq!(row.started_at, None);
    }

    #[test]
    fn a_late_heartbeat_counts_but_does_not_move_the_state_back() {
        let row =
            fold(&[(0, started("i1")), (2, hb("i1", 2)), (1, hb("i1", 1))]).unwrap_or_default();
        assert_eq!((row.last_heartbeat_seq, row.heartbeats_received), (2, 2));
        assert_eq!(row.last_heartbeat_at, Some(t(2)));
    }

    #[test]
    fn plans_clusters_and_snapshot_completion_in_order() {
        let obj = |name: &str| InventoryObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.into(),
            ..Default::default()
        };
        let snap = |idx, last, objects| {
            Body::InventorySnapshot(InventorySnapshot {
                snapshot_id: "s1".into(),
                chunk_index: idx,
                last_chunk: last,
                total_objects: if last { 3 } else { 0 },
                objects,
            })
        };
        let events = vec![
            Event {
                seq: 7,
                cluster_id: "a".into(),
                occurred_at: t(5),
                body: snap(0, false, vec![obj("p1"), obj("p2")]),
            },
            Event {
                seq: 8,
                cluster_id: "b".into(),
                occurred_at: t(1),
                body: Body::Heartbeat(Heartbeat {
                    agent_instance_id: "x".into(),
                    sequence: 1,
                    ..Default::default()
                }),
            },
            Event {
                seq: 9,
                cluster_id: "a".into(),
                occurred_at: t(6),
                body: snap(1, true, vec![obj("p3")]),
            },
        ];
        let p = plan(events);
        assert_eq!(p.last_seq, 9);
        assert_eq!(p.clusters.len(), 2);
        let a = &p.clusters["a"];
        assert_eq!(
            (a.first_seen_at, a.last_event_at, a.last_event_seq),
            (t(5), t(6), 9)
        );
        assert_eq!(p.inventory.len(), 4);
        assert!(matches!(
            &p.inventory[3],
            InventoryOp::Complete { snapshot_id, total_objects: 3, .. } if snapshot_id == "s1"
        ));
        assert_eq!(p.agent_events["b"].len(), 1);
    }
}
