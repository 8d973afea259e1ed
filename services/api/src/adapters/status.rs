//! Every error the api returns becomes a `tonic::Status` here, and only here.
//!
//! Rejections of the request say what rule was broken; failures of Postgres or NATS are logged
//! with their detail and reach the caller only as a generic message, so SQL and internal
//! addresses never leak.

use tonic::Status;
use tracing::error;

use super::audit::control::ControlError;
use super::{EventLogError, ReadModelError};
use crate::domain;
use crate::domain::audit::AuditError;
use crate::domain::commands::CommandError;
use crate::domain::interconnect::InterconnectError;
use crate::domain::scope::OutOfScope;

impl From<domain::Error> for Status {
    fn from(e: domain::Error) -> Self {
        match e {
            domain::Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
            domain::Error::ClusterNotFound(_) => Status::not_found(e.to_string()),
        }
    }
}

impl From<ReadModelError> for Status {
    fn from(e: ReadModelError) -> Self {
        error!(error = %e, "read model query failed");
        if e.is_unavailable() {
            Status::unavailable("the fleet read models are unreachable; retry later")
        } else {
            Status::internal("internal error while reading the fleet read models")
        }
    }
}

impl From<EventLogError> for Status {
    fn from(e: EventLogError) -> Self {
        error!(error = %e, "event log failed");
        match e {
            EventLogError::StreamMissing(stream) => {
                Status::unavailable(format!("the event stream {stream} does not exist yet"))
            }
            EventLogError::Nats { .. } => {
                Status::unavailable("the event log is unreachable; retry later")
            }
        }
    }
}

impl From<AuditError> for Status {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Invalid { .. } => Status::invalid_argument(e.to_string()),
            AuditError::VersionConflict { .. } | AuditError::AlreadyRevoked(_) => {
                Status::failed_precondition(e.to_string())
            }
            AuditError::Raced { .. } => Status::aborted(e.to_string()),
            AuditError::DerogationNotFound(_) | AuditError::AuditNotFound { .. } => {
                Status::not_found(e.to_string())
            }
        }
    }
}

/// A scoped caller asked to act on something outside its scope (or unknown: the two look
/// alike).
impl From<OutOfScope> for Status {
    fn from(e: OutOfScope) -> Self {
        Status::permission_denied(e.to_string())
    }
}

impl From<CommandError> for Status {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid { .. } => Status::invalid_argument(e.to_string()),
            CommandError::NotFound(_) | CommandError::ScheduleNotFound(_) => {
                Status::not_found(e.to_string())
            }
        }
    }
}

impl From<InterconnectError> for Status {
    fn from(e: InterconnectError) -> Self {
        match e {
            InterconnectError::Invalid { .. } => Status::invalid_argument(e.to_string()),
            InterconnectError::NotFound(_) | InterconnectError::ClusterNotFound(_) => {
                Status::not_found(e.to_string())
            }
            InterconnectError::NotPending { .. } | InterconnectError::NotApproved { .. } => {
                Status::failed_precondition(e.to_string())
            }
        }
    }
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        error!(error = %e, "CONTROL failed");
        match e {
            ControlError::WrongLastSequence => {
                Status::aborted("the policy changed concurrently; read it again and retry")
            }
            ControlError::Nats { .. } => {
                Status::unavailable("the control stream is unreachable; retry later")
            }
            ControlError::Corrupt(_) => Status::internal("internal error reading the policy"),
        }
    }
}

/// Sent to open Watch streams when the api stops.
pub fn shutting_down(last_seq: Option<u64>) -> Status {
    let resume = match last_seq {
        Some(seq) => format!("resume with from_sequence = {}", seq + 1),
        None => "resume with the same request".to_owned(),
    };
    Status::unavailable(format!("the api is shutting down; {resume}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn rejections_keep_their_reason_and_failures_do_not_leak() {
        let s = Status::from(domain::Error::Invalid {
            field: "cluster_id",
            reason: "must be lowercase".into(),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("cluster_id") && s.message().contains("lowercase"));
        let s = Status::from(domain::Error::ClusterNotFound("x".into()));
        assert_eq!(s.code(), Code::NotFound);
        let s = Status::from(ReadModelError {
            action: "list clusters",
            source: sqlx::Error::Protocol("syntax error at or near SELECT".into()),
        });
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("SELECT"), "{}", s.message());
        let s = Status::from(ReadModelError {
            action: "list clusters",
            source: sqlx::Error::PoolTimedOut,
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            shutting_down(Some(41))
                .message()
                .contains("from_sequence = 42")
        );
    }
}
