//! Projection rules of commands and schedules: which row each command event writes. A run's
//! state only moves to a higher rank, so CONTROL and FLEET_EVENTS may be applied in any order.

use chrono::{DateTime, Utc};
use prost::Message as _;
use serde_json::{Value, json};

use canopy_kit::envelope::command_kind_token;
use canopy_kit::proto::event::v1::{
    CommandRequested, CommandTarget, ProbeResult, ScheduleCreated,
    command_succeeded::Result as Detail, command_target::Target, envelope::Body,
};

pub const RANK_DISPATCHED: i16 = 10;
pub const RANK_ACCEPTED: i16 = 20;
/// The agent refused to start a command that arrived after its deadline: cnc's time-out (35)
/// tells the same story and wins.
pub const RANK_EXPIRED: i16 = 30;
pub const RANK_TIMED_OUT: i16 = 35;
pub const RANK_ENDED: i16 = 40;

/// A change of one run (command × cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    pub command_id: String,
    pub cluster_id: String,
    pub state: &'static str,
    pub rank: i16,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub error: String,
    pub summary: String,
    pub duration_ms: i32,
    pub result: Option<Value>,
    pub commands_seq: i64,
}

impl RunUpdate {
    fn new(command_id: &str, cluster_id: &str, state: &'static str, rank: i16) -> Self {
        Self {
            command_id: command_id.to_owned(),
            cluster_id: cluster_id.to_owned(),
            state,
            rank,
            dispatched_at: None,
            accepted_at: None,
            finished_at: None,
            reason: String::new(),
            error: String::new(),
            summary: String::new(),
            duration_ms: 0,
            result: None,
            commands_seq: 0,
        }
    }
}

/// A row of `commands`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub command_id: String,
    pub kind: i32,
    pub kind_name: &'static str,
    pub target: Value,
    pub params: Vec<u8>,
    pub requested_by: String,
    pub idempotency_key: String,
    pub schedule_id: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub requested_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub control_seq: i64,
}

/// A row of `schedules`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub schedule_id: String,
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub kind: i32,
    pub target: Value,
    pub params: Vec<u8>,
    pub deadline_seconds: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub created_seq: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandOp {
    Requested(Box<CommandRow>),
    /// cnc refused the request as a whole.
    Rejected {
        command_id: String,
        reason: String,
        detail: String,
    },
    Run(Box<RunUpdate>),
    Probes {
        command_id: String,
        cluster_id: String,
        probes: Value,
    },
    ScheduleCreated(Box<ScheduleRow>),
    ScheduleDeleted {
        schedule_id: String,
        at: DateTime<Utc>,
        by: String,
    },
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `{"cluster_id": …}`, `{"selector": {…}}` or `{}`.
pub fn target_json(t: Option<&CommandTarget>) -> Value {
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::ClusterId(c)) => json!({ "cluster_id": c }),
        Some(Target::Selector(s)) => {
            let labels: std::collections::BTreeMap<_, _> = s.match_labels.iter().collect();
            json!({ "selector": labels })
        }
        None => json!({}),
    }
}

fn result_json(r: &Detail) -> Value {
    match r {
        Detail::Audit(a) => {
            let by: std::collections::BTreeMap<_, _> = a.open_by_severity.iter().collect();
            json!({
                "audit_id": a.audit_id,
                "objects_audited": a.objects_audited,
                "findings": a.findings,
                "exempted": a.exempted,
                "open_by_severity": by,
            })
        }
        Detail::Inventory(i) => json!({ "snapshot_id": i.snapshot_id, "objects": i.objects }),
        Detail::Liveness(l) => {
            json!({ "pool": l.pool, "endpoints": l.endpoints, "alive": l.alive })
        }
        Detail::Remediation(r) => json!({ "action": r.action }),
    }
}

fn probes_json(results: &[ProbeResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|p| {
                json!({
                    "endpoint": p.endpoint,
                    "alive": p.alive,
                    "latency_ms": p.latency_ms,
                    "status": p.status,
                    "error": p.error,
                })
            })
            .collect(),
    )
}

fn requested(seq_no: u64, at: DateTime<Utc>, r: &CommandRequested) -> CommandRow {
    CommandRow {
        command_id: r.command_id.clone(),
        kind: r.kind,
        kind_name: command_kind_token(r.kind),
        target: target_json(r.target.as_ref()),
        params: r
            .params
            .as_ref()
            .map(|p| p.encode_to_vec())
            .unwrap_or_default(),
        requested_by: r.requested_by.clone(),
        idempotency_key: r.idempotency_key.clone(),
        schedule_id: r.schedule_id.clone(),
        scheduled_for: time(r.scheduled_for.as_ref()),
        requested_at: at,
        deadline: time(r.deadline.as_ref()),
        control_seq: seq(seq_no),
    }
}

/// The command or schedule change an event makes, if it is one.
pub fn plan(seq_no: u64, cluster: &str, at: DateTime<Utc>, body: &Body) -> Option<CommandOp> {
    let op = match body {
        Body::CommandRequested(r) => CommandOp::Requested(Box::new(requested(seq_no, at, r))),
        Body::CommandRejected(r) if cluster.is_empty() => CommandOp::Rejected {
            command_id: r.command_id.clone(),
            reason: r.reason.clone(),
            detail: r.detail.clone(),
        },
        Body::CommandRejected(r) => {
            let mut u = RunUpdate::new(&r.command_id, cluster, "rejected", RANK_ENDED);
            u.finished_at = Some(at);
            u.reason = r.reason.clone();
            u.error = r.detail.clone();
            CommandOp::Run(Box::new(u))
        }
        Body::CommandDispatched(d) => {
            let mut u = RunUpdate::new(&d.command_id, cluster, "dispatched", RANK_DISPATCHED);
            u.dispatched_at = Some(at);
            u.commands_seq = seq(d.commands_sequence);
            CommandOp::Run(Box::new(u))
        }
        Body::CommandTimedOut(t) => {
            let mut u = RunUpdate::new(&t.command_id, cluster, "timed_out", RANK_TIMED_OUT);
            u.finished_at = Some(at);
            u.reason = "deadline_passed".into();
            u.error = format!(
                "not finished by its deadline (last state: {})",
                t.last_state
            );
            CommandOp::Run(Box::new(u))
        }
        Body::CommandAccepted(a) => {
            let mut u = RunUpdate::new(&a.command_id, cluster, "accepted", RANK_ACCEPTED);
            u.accepted_at = Some(at);
            CommandOp::Run(Box::new(u))
        }
        Body::CommandSucceeded(s) => {
            let mut u = RunUpdate::new(&s.command_id, cluster, "succeeded", RANK_ENDED);
            u.finished_at = Some(at);
            u.summary = s.summary.clone();
            u.duration_ms = i32::try_from(s.duration_ms).unwrap_or(i32::MAX);
            u.result = s.result.as_ref().map(result_json);
            CommandOp::Run(Box::new(u))
        }
        Body::CommandFailed(f) => {
            let rank = if f.reason == "deadline_passed" && f.duration_ms == 0 {
                RANK_EXPIRED
            } else {
                RANK_ENDED
            };
            let mut u = RunUpdate::new(&f.command_id, cluster, "failed", rank);
            u.finished_at = Some(at);
            u.reason = f.reason.clone();
            u.error = f.error.clone();
            u.duration_ms = i32::try_from(f.duration_ms).unwrap_or(i32::MAX);
            CommandOp::Run(Box::new(u))
        }
        Body::LivenessChecked(l) => CommandOp::Probes {
            command_id: l.command_id.clone(),
            cluster_id: cluster.to_owned(),
            probes: probes_json(&l.results),
        },
        Body::ScheduleCreated(s) => CommandOp::ScheduleCreated(Box::new(schedule(seq_no, at, s))),
        Body::ScheduleDeleted(d) => CommandOp::ScheduleDeleted {
            schedule_id: d.schedule_id.clone(),
            at,
            by: d.deleted_by.clone(),
        },
        _ => return None,
    };
    Some(op)
}

fn schedule(seq_no: u64, at: DateTime<Utc>, s: &ScheduleCreated) -> ScheduleRow {
    ScheduleRow {
        schedule_id: s.schedule_id.clone(),
        name: s.name.clone(),
        cron: s.cron.clone(),
        time_zone: s.time_zone.clone(),
        kind: s.kind,
        target: target_json(s.target.as_ref()),
        params: s
            .params
            .as_ref()
            .map(|p| p.encode_to_vec())
            .unwrap_or_default(),
        deadline_seconds: i32::try_from(s.deadline_seconds).unwrap_or(i32::MAX),
        created_by: s.created_by.clone(),
        created_at: at,
        created_seq: seq(seq_no),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{CommandFailed, CommandTimedOut};

    #[test]
    fn an_expired_command_ranks_below_the_time_out_and_a_real_outcome_above() {
        let at = Utc::now();
        let rank = |b: Body| match plan(1, "a", at, &b) {
            Some(CommandOp::Run(u)) => u.rank,
            other => panic!("not a run update: {other:?}"),
        };
        let expired = rank(Body::CommandFailed(CommandFailed {
            command_id: "c".into(),
            reason: "deadline_passed".into(),
            ..Default::default()
        }));
        let timed_out = rank(Body::CommandTimedOut(CommandTimedOut {
            command_id: "c".into(),
            ..Default::default()
        }));
        let failed = rank(Body::CommandFailed(CommandFailed {
            command_id: "c".into(),
            reason: "kubernetes".into(),
            duration_ms: 5,
            ..Default::default()
        }));
        assert!(expired < timed_out && timed_out < failed);
    }
}
