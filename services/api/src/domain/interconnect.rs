//! Pure rules of interconnects in the api: what a request id and a status filter may be, which
//! request a decision or a revocation may touch, and the ids of the events they publish (derived
//! from what they decide, so a retried call is deduplicated by CONTROL). No I/O here.

use thiserror::Error;
use uuid::Uuid;

use canopy_kit::subject::ClusterId;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
pub const MAX_REQUEST_ID_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1024;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const REJECTED: &str = "rejected";
pub const REVOKED: &str = "revoked";
pub const SUPERSEDED: &str = "superseded";
pub const STATUSES: &[&str] = &[PENDING, APPROVED, REJECTED, REVOKED, SUPERSEDED];

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum InterconnectError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("interconnect request {0:?} not found")]
    NotFound(String),
    #[error("cluster {0:?} has no interconnect request")]
    ClusterNotFound(String),
    #[error("interconnect request {request_id:?} is {status}, not pending")]
    NotPending { request_id: String, status: String },
    #[error("cluster {cluster:?} has no approved interconnect (its newest request is {status})")]
    NotApproved { cluster: String, status: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InterconnectError {
    InterconnectError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A request id given by a caller: what gateways generate (UUIDs and the like), never a
/// pattern or free text.
pub fn request_id(value: &str) -> Result<String, InterconnectError> {
    if value.is_empty() {
        return Err(invalid("request_id", "is empty"));
    }
    if value.len() > MAX_REQUEST_ID_LEN {
        return Err(invalid(
            "request_id",
            format!("longer than {MAX_REQUEST_ID_LEN} bytes"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(invalid(
            "request_id",
            format!("{value:?} may only hold letters, digits and - _ . :"),
        ));
    }
    Ok(value.to_owned())
}

/// A cluster id given by a caller.
pub fn cluster_id(value: &str) -> Result<ClusterId, InterconnectError> {
    ClusterId::parse(value).map_err(|e| invalid("cluster_id", e.to_string()))
}

/// An optional cluster filter ("" = every cluster).
pub fn cluster_filter(value: &str) -> Result<Option<ClusterId>, InterconnectError> {
    if value.is_empty() {
        return Ok(None);
    }
    cluster_id(value).map(Some)
}

/// An optional status filter ("" = every status).
pub fn status_filter(value: &str) -> Result<Option<&'static str>, InterconnectError> {
    if value.is_empty() {
        return Ok(None);
    }
    STATUSES
        .iter()
        .find(|s| **s == value)
        .copied()
        .map(Some)
        .ok_or_else(|| invalid("status", format!("{value:?} is not one of {STATUSES:?}")))
}

/// Rows per list: 0 means the default, larger requests are cut down to the maximum.
pub fn limit(requested: u32) -> u32 {
    if requested == 0 {
        DEFAULT_LIMIT
    } else {
        requested.min(MAX_LIMIT)
    }
}

/// A reason given by a caller.
pub fn reason(value: &str) -> Result<String, InterconnectError> {
    if value.len() > MAX_REASON_LEN {
        return Err(invalid(
            "reason",
            format!("longer than {MAX_REASON_LEN} bytes"),
        ));
    }
    Ok(value.trim().to_owned())
}

/// What a caller decides about a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    /// The status the request has once the decision is applied.
    pub fn status(self) -> &'static str {
        match self {
            Self::Approve => APPROVED,
            Self::Reject => REJECTED,
        }
    }
}

/// Only a pending request may be decided.
pub fn check_pending(request_id: &str, status: &str) -> Result<(), InterconnectError> {
    if status == PENDING {
        Ok(())
    } else {
        Err(InterconnectError::NotPending {
            request_id: request_id.to_owned(),
            status: status.to_owned(),
        })
    }
}

/// The request a revocation ends: the newest approved one among a cluster's requests (given
/// newest first as `(request id, status)`).
pub fn revocable<'a>(
    cluster: &ClusterId,
    requests: &'a [(String, String)],
) -> Result<&'a str, InterconnectError> {
    let Some((_, newest)) = requests.first() else {
        return Err(InterconnectError::ClusterNotFound(cluster.to_string()));
    };
    requests
        .iter()
        .find(|(_, s)| s == APPROVED)
        .map(|(id, _)| id.as_str())
        .ok_or_else(|| InterconnectError::NotApproved {
            cluster: cluster.to_string(),
            status: newest.clone(),
        })
}

/// The event id of a decision on a request: one per request and decision, so a decision sent
/// twice is stored once (`Nats-Msg-Id` dedup).
pub fn decision_event_id(decision: Decision, request_id: &str) -> String {
    let kind = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy/interconnect/{kind}/{request_id}").as_bytes(),
    )
    .to_string()
}

/// The event id of the revocation of the approval `request_id`: one per approval.
pub fn revocation_event_id(cluster: &ClusterId, request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy/interconnect/revoked/{cluster}/{request_id}").as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_plain_tokens() {
        assert!(request_id("0193a4b2-7c1e-7d4f-9a3b-2c1d0e9f8a7b").is_ok());
        for bad in ["", "a b", "r1/..", "x*", &"r".repeat(129)] {
            assert!(
                matches!(request_id(bad), Err(InterconnectError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn filters_and_limits() {
        assert_eq!(status_filter("").unwrap(), None);
        assert_eq!(status_filter("pending").unwrap(), Some("pending"));
        assert!(status_filter("open").is_err());
        assert!(cluster_filter("Prod_EU").is_err());
        assert_eq!(limit(0), 100);
        assert_eq!(limit(5), 5);
        assert_eq!(limit(50_000), 1000);
    }

    #[test]
    fn only_pending_requests_are_decided_and_only_approved_clusters_revoked() {
        assert!(check_pending("r1", "pending").is_ok());
        assert_eq!(
            check_pending("r1", "rejected"),
            Err(InterconnectError::NotPending {
                request_id: "r1".into(),
                status: "rejected".into()
            })
        );
        let c = ClusterId::parse("edge-1").unwrap();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            revocable(&c, &[]),
            Err(InterconnectError::ClusterNotFound("edge-1".into()))
        );
        assert_eq!(
            revocable(&c, &pairs(&[("r3", "pending"), ("r2", "approved")])),
            Ok("r2")
        );
        assert!(matches!(
            revocable(&c, &pairs(&[("r2", "revoked"), ("r1", "superseded")])),
            Err(InterconnectError::NotApproved { status, .. }) if status == "revoked"
        ));
    }

    #[test]
    fn event_ids_follow_what_is_decided() {
        let a = decision_event_id(Decision::Approve, "r1");
        assert_eq!(a, decision_event_id(Decision::Approve, "r1"));
        assert_ne!(a, decision_event_id(Decision::Reject, "r1"));
        assert_ne!(a, decision_event_id(Decision::Approve, "r2"));
        let c = ClusterId::parse("edge-1").unwrap();
        assert_ne!(revocation_event_id(&c, "r1"), revocation_event_id(&c, "r2"));
        assert!(Uuid::parse_str(&a).is_ok());
    }
}
