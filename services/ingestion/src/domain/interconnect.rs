//! Projection rules of interconnect requests: which CONTROL event moves a request from which
//! status to which. `pending` is the only status a decision leaves; `approved` the only one a
//! revocation leaves; anything else is ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use canopy_kit::proto::event::v1::{
    ClusterRevoked, InterconnectApproved, InterconnectRejected, InterconnectRequested,
    LinkDirection, envelope::Body,
};

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const REJECTED: &str = "rejected";
pub const REVOKED: &str = "revoked";
pub const SUPERSEDED: &str = "superseded";

/// A new `interconnect_requests` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub request_id: String,
    pub cluster_id: String,
    pub link_user_public_key: String,
    pub xkey_public_key: String,
    /// In key order, so a replay writes the same JSON.
    pub labels: BTreeMap<String, String>,
    pub direction: &'static str,
    pub trunk: String,
    pub leaf_url: String,
    pub gateway_version: String,
    pub requested_at: DateTime<Utc>,
    pub seq: u64,
}

/// A decision on one request, or the revocation of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub seq: u64,
    pub cluster_id: String,
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

/// Interconnect events, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum InterconnectOp {
    /// Inserts a `pending` row (a repeated request id changes nothing) and supersedes the
    /// cluster's older pending requests.
    Requested(Box<RequestRow>),
    /// `pending` → `approved` for the request of `decision.cluster_id`.
    Approved {
        request_id: String,
        decision: Decision,
    },
    /// `pending` → `rejected`.
    Rejected {
        request_id: String,
        decision: Decision,
    },
    /// Every `approved` request of the cluster → `revoked`.
    Revoked(Decision),
    /// An interconnect event that cannot be projected (no cluster, no request id): logged and
    /// skipped.
    Unusable {
        seq: u64,
        event: &'static str,
        reason: &'static str,
    },
}

impl InterconnectOp {
    /// The event's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Requested(_) => "InterconnectRequested",
            Self::Approved { .. } => "InterconnectApproved",
            Self::Rejected { .. } => "InterconnectRejected",
            Self::Revoked(_) => "ClusterRevoked",
            Self::Unusable { event, .. } => event,
        }
    }
}

pub fn direction_name(d: i32) -> &'static str {
    match LinkDirection::try_from(d).unwrap_or(LinkDirection::Unspecified) {
        LinkDirection::Unspecified => "unspecified",
        LinkDirection::LeafDials => "leaf-dials",
        LinkDirection::SeedDials => "seed-dials",
    }
}

/// The op of an interconnect event; `None` for other bodies. Every interconnect event names its
/// cluster in the envelope and every request or decision its request id.
pub fn plan(seq: u64, cluster_id: &str, at: DateTime<Utc>, body: &Body) -> Option<InterconnectOp> {
    let unusable = |event, reason| Some(InterconnectOp::Unusable { seq, event, reason });
    let decision = |by: &str, reason: &str| Decision {
        seq,
        cluster_id: cluster_id.to_owned(),
        at,
        by: by.to_owned(),
        reason: reason.to_owned(),
    };
    let event = match body {
        Body::InterconnectRequested(_) => "InterconnectRequested",
        Body::InterconnectApproved(_) => "InterconnectApproved",
        Body::InterconnectRejected(_) => "InterconnectRejected",
        Body::ClusterRevoked(_) => "ClusterRevoked",
        _ => return None,
    };
    if cluster_id.is_empty() {
        return unusable(event, "the envelope names no cluster");
    }
    Some(match body {
        Body::InterconnectRequested(InterconnectRequested {
            request_id,
            link_user_public_key,
            xkey_public_key,
            labels,
            direction,
            trunk,
            leaf_url,
            gateway_version,
            // Only ever on later requests, which are not recorded.
            seed_user_jwt: _,
        }) => {
            if request_id.is_empty() {
                return unusable(event, "request_id is empty");
            }
            InterconnectOp::Requested(Box::new(RequestRow {
                request_id: request_id.clone(),
                cluster_id: cluster_id.to_owned(),
                link_user_public_key: link_user_public_key.clone(),
                xkey_public_key: xkey_public_key.clone(),
                labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                direction: direction_name(*direction),
                trunk: trunk.clone(),
                leaf_url: leaf_url.clone(),
                gateway_version: gateway_version.clone(),
                requested_at: at,
                seq,
            }))
        }
        Body::InterconnectApproved(InterconnectApproved {
            request_id,
            approved_by,
            ..
        }) => {
            if request_id.is_empty() {
                return unusable(event, "request_id is empty");
            }
            InterconnectOp::Approved {
                request_id: request_id.clone(),
                decision: decision(approved_by, ""),
            }
        }
        Body::InterconnectRejected(InterconnectRejected {
            request_id,
            rejected_by,
            reason,
        }) => {
            if request_id.is_empty() {
                return unusable(event, "request_id is empty");
            }
            InterconnectOp::Rejected {
                request_id: request_id.clone(),
                decision: decision(rejected_by, reason),
            }
        }
        Body::ClusterRevoked(ClusterRevoked { revoked_by, reason }) => {
            InterconnectOp::Revoked(decision(revoked_by, reason))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn requests_keep_their_fields_and_labels_in_key_order() {
        let body = Body::InterconnectRequested(InterconnectRequested {
            request_id: "r1".into(),
            link_user_public_key: "UABC".into(),
            xkey_public_key: "XABC".into(),
            labels: [("z", "1"), ("a", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            direction: LinkDirection::SeedDials as i32,
            trunk: "trunk-eu".into(),
            leaf_url: "nats-leaf://10.0.0.1:7422".into(),
            gateway_version: "0.1.0".into(),
            seed_user_jwt: String::new(),
        });
        let Some(InterconnectOp::Requested(row)) = plan(7, "edge-1", t(), &body) else {
            panic!("not a request");
        };
        assert_eq!(row.request_id, "r1");
        assert_eq!(row.cluster_id, "edge-1");
        assert_eq!(row.direction, "seed-dials");
        assert_eq!(row.labels.keys().collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!((row.seq, row.requested_at), (7, t()));
    }

    #[test]
    fn decisions_carry_who_when_and_why() {
        let approved = Body::InterconnectApproved(InterconnectApproved {
            request_id: "r1".into(),
            approved_by: "alice".into(),
            ..Default::default()
        });
        assert_eq!(
            plan(9, "edge-1", t(), &approved),
            Some(InterconnectOp::Approved {
                request_id: "r1".into(),
                decision: Decision {
                    seq: 9,
                    cluster_id: "edge-1".into(),
                    at: t(),
                    by: "alice".into(),
                    reason: String::new(),
                },
            })
        );
        let revoked = Body::ClusterRevoked(ClusterRevoked {
            revoked_by: "bob".into(),
            reason: "decommissioned".into(),
        });
        let Some(InterconnectOp::Revoked(d)) = plan(10, "edge-1", t(), &revoked) else {
            panic!("not a revocation");
        };
        assert_eq!(
            (d.by.as_str(), d.reason.as_str()),
            ("bob", "decommissioned")
        );
    }

    #[test]
    fn events_without_cluster_or_request_id_are_unusable_and_others_are_not_ours() {
        let rejected = Body::InterconnectRejected(InterconnectRejected {
            request_id: String::new(),
            rejected_by: "alice".into(),
            reason: String::new(),
        });
        assert!(matches!(
            plan(1, "edge-1", t(), &rejected),
            Some(InterconnectOp::Unusable { .. })
        ));
        let revoked = Body::ClusterRevoked(ClusterRevoked::default());
        assert!(matches!(
            plan(1, "", t(), &revoked),
            Some(InterconnectOp::Unusable { .. })
        ));
        let other = Body::DiagnosisCleared(Default::default());
        assert_eq!(plan(1, "edge-1", t(), &other), None);
    }
}
