//! Pure projection rules of audits, findings, policies and derogations: which read-model
//! operation each event is, and the state rules of findings. No I/O here.

use chrono::{DateTime, Utc};

use canopy_kit::proto::event::v1::{
    AuditCompleted, AuditScope, AuditStarted, AuditTrigger, Derogation, DerogationRevoked,
    FindingsChunk, PolicyChanged, Severity,
};

/// Audit changes, applied in stream order (chunks of one audit may span batches: they are
/// staged until its AuditCompleted).
#[derive(Debug, Clone, PartialEq)]
pub enum AuditOp {
    Started {
        cluster_id: String,
        seq: u64,
        at: DateTime<Utc>,
        started: AuditStarted,
    },
    Chunk {
        cluster_id: String,
        seq: u64,
        chunk: FindingsChunk,
    },
    Completed {
        cluster_id: String,
        seq: u64,
        at: DateTime<Utc>,
        completed: AuditCompleted,
    },
}

/// Policy and derogation changes, in CONTROL order.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyOp {
    Changed {
        seq: u64,
        at: DateTime<Utc>,
        changed: PolicyChanged,
    },
    Granted {
        seq: u64,
        at: DateTime<Utc>,
        derogation: Derogation,
    },
    Revoked {
        seq: u64,
        at: DateTime<Utc>,
        revoked: DerogationRevoked,
    },
}

pub fn trigger_name(t: i32) -> &'static str {
    match AuditTrigger::try_from(t).unwrap_or(AuditTrigger::Unspecified) {
        AuditTrigger::Unspecified => "",
        AuditTrigger::Interval => "interval",
        AuditTrigger::Command => "command",
        AuditTrigger::Policy => "policy",
        AuditTrigger::Watch => "watch",
        AuditTrigger::Startup => "startup",
    }
}

pub fn scope_name(s: i32) -> &'static str {
    match AuditScope::try_from(s).unwrap_or(AuditScope::Unspecified) {
        AuditScope::Unspecified => "",
        AuditScope::Full => "full",
        AuditScope::Incremental => "incremental",
    }
}

/// A severity's name and listing rank (4 = critical ... 1 = low; 0 for unspecified).
pub fn severity(s: i32) -> (&'static str, i16) {
    match Severity::try_from(s).unwrap_or(Severity::Unspecified) {
        Severity::Critical => ("critical", 4),
        Severity::High => ("high", 3),
        Severity::Medium => ("medium", 2),
        Severity::Low => ("low", 1),
        Severity::Unspecified => ("unspecified", 0),
    }
}

/// The state of a finding an audit reports: exempted when it carries a derogation.
pub fn reported_state(derogation_id: &str) -> &'static str {
    if derogation_id.is_empty() {
        "open"
    } else {
        "exempted"
    }
}

/// The history entry of a state change (`None` when the state does not change):
/// - first seen open: `opened`; open again after resolved or exempted: `reopened`;
/// - exempted (first seen so, or from open or resolved): `exempted`;
/// - not reported any more by an audit that covers its object: `resolved`.
pub fn transition(from: Option<&str>, to: &str) -> Option<&'static str> {
    if from == Some(to) {
        return None;
    }
    Some(match (from, to) {
        (_, "exempted") => "exempted",
        (_, "resolved") => "resolved",
        (None, _) => "opened",
        (Some(_), _) => "reopened",
    })
}

/// Whether an audit that announced `chunks` chunks may reconcile, having received `received`.
pub fn complete(chunks: u32, received: u32) -> bool {
    received >= chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_state_change_then_history_names_it() {
        assert_eq!(transition(None, "open"), Some("opened"));
        assert_eq!(transition(None, "exempted"), Some("exempted"));
        assert_eq!(transition(Some("open"), "exempted"), Some("exempted"));
        assert_eq!(transition(Some("exempted"), "open"), Some("reopened"));
        assert_eq!(transition(Some("resolved"), "open"), Some("reopened"));
        assert_eq!(transition(Some("resolved"), "exempted"), Some("exempted"));
        assert_eq!(transition(Some("open"), "resolved"), Some("resolved"));
        assert_eq!(transition(Some("exempted"), "resolved"), Some("resolved"));
        assert_eq!(transition(Some("open"), "open"), None);
        assert_eq!(transition(Some("resolved"), "resolved"), None);
    }

    #[test]
    fn names_and_ranks() {
        assert_eq!(severity(Severity::Critical as i32), ("critical", 4));
        assert_eq!(severity(Severity::Low as i32), ("low", 1));
        assert_eq!(severity(99), ("unspecified", 0));
        assert_eq!(trigger_name(AuditTrigger::Command as i32), "command");
        assert_eq!(scope_name(AuditScope::Incremental as i32), "incremental");
        assert_eq!(reported_state(""), "open");
        assert_eq!(reported_state("d-1"), "exempted");
        assert!(complete(3, 3) && !complete(3, 2) && complete(0, 0));
    }
}
