//! Projection of the audit trail (AUDIT_TRAIL): one row per `ActionRecorded`, as recorded.

use chrono::{DateTime, Utc};

use canopy_kit::proto::event::v1::{ActionOutcome, ActionRecorded};

/// One `audit_trail` row.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailRow {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub record: ActionRecorded,
}

/// The outcome's name in the read model (as the api's trail module names it).
pub fn outcome_name(outcome: i32) -> &'static str {
    match ActionOutcome::try_from(outcome).unwrap_or(ActionOutcome::Unspecified) {
        ActionOutcome::Unspecified => "unspecified",
        ActionOutcome::Succeeded => "succeeded",
        ActionOutcome::Denied => "denied",
        ActionOutcome::Invalid => "invalid",
        ActionOutcome::Failed => "failed",
    }
}
