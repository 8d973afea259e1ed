//! The seed's view of interconnects, rebuilt from the `canopy.ctl.interconnect.>` events on
//! CONTROL: per cluster the request waiting for a decision, the approved one, the decided ones,
//! and the link users revoked. Pure: the wiring feeds it events and asks it how to answer a
//! leaf's request.

use std::collections::{BTreeMap, BTreeSet};

use canopy_kit::proto::event::v1::{
    InterconnectRequested, InterconnectStatus, LinkDirection, envelope::Body,
};

/// A recorded request (what the leaf sent, keys included).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub cluster: String,
    pub body: InterconnectRequested,
}

impl Request {
    pub fn id(&self) -> &str {
        &self.body.request_id
    }

    /// Whether the seed dials the leaf (through its dialer).
    pub fn seed_dials(&self) -> bool {
        self.body.direction == LinkDirection::SeedDials as i32
    }

    /// The trunk the link goes through, if any.
    pub fn trunk(&self) -> Option<&str> {
        Some(self.body.trunk.as_str()).filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Default, Clone)]
struct Cluster {
    pending: Option<Request>,
    approved: Option<Request>,
    /// Request id → why it was rejected.
    rejected: BTreeMap<String, String>,
    /// Request ids approved and later revoked.
    revoked: BTreeSet<String>,
}

/// Every cluster's interconnect state.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    clusters: BTreeMap<String, Cluster>,
    /// Link user public key → when it was revoked (unix seconds): the Canopy account JWT
    /// refuses them.
    revoked_users: BTreeMap<String, i64>,
    /// Seed-dialed requests approved and later revoked → when: the link users the seed's
    /// dialer held for them are refused too.
    revoked_dialed: Vec<(Request, i64)>,
}

/// How to answer a leaf's request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Unknown so far: record it, then answer pending.
    Record,
    Pending,
    /// Approved: sign its link user and hand the credentials over.
    Approved(Box<Request>),
    Rejected(String),
    Revoked,
    Invalid(String),
}

impl Answer {
    pub fn status(&self) -> InterconnectStatus {
        match self {
            Self::Record | Self::Pending => InterconnectStatus::Pending,
            Self::Approved(_) => InterconnectStatus::Approved,
            Self::Rejected(_) => InterconnectStatus::Rejected,
            Self::Revoked => InterconnectStatus::Revoked,
            Self::Invalid(_) => InterconnectStatus::Invalid,
        }
    }
}

/// What applying an event changed, for the wiring to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    None,
    Approved(Box<Request>),
    /// The cluster's link user was revoked (its key is in [`Registry::revoked_users`]).
    Revoked {
        cluster: String,
    },
}

impl Registry {
    /// Applies one CONTROL event about `cluster`, which occurred at `at` (unix seconds).
    pub fn apply(&mut self, cluster: &str, body: &Body, at: i64) -> Change {
        let c = self.clusters.entry(cluster.to_owned()).or_default();
        match body {
            Body::InterconnectRequested(r) => {
                let known = c.pending.as_ref().is_some_and(|p| p.id() == r.request_id)
                    || c.approved.as_ref().is_some_and(|a| a.id() == r.request_id)
                    || c.rejected.contains_key(&r.request_id)
                    || c.revoked.contains(&r.request_id);
                if !known {
                    c.pending = Some(Request {
                        cluster: cluster.to_owned(),
                        body: r.clone(),
                    });
                }
                Change::None
            }
            Body::InterconnectApproved(a) => {
                if c.pending.as_ref().is_some_and(|p| p.id() == a.request_id) {
                    let approved = c.pending.take();
                    c.approved.clone_from(&approved);
                    approved.map_or(Change::None, |a| Change::Approved(Box::new(a)))
                } else {
                    Change::None
                }
            }
            Body::InterconnectRejected(r) => {
                if c.pending.as_ref().is_some_and(|p| p.id() == r.request_id) {
                    c.pending = None;
                    c.rejected.insert(r.request_id.clone(), r.reason.clone());
                }
                Change::None
            }
            Body::ClusterRevoked(_) => match c.approved.take() {
                Some(a) => {
                    c.revoked.insert(a.id().to_owned());
                    self.revoked_users
                        .insert(a.body.link_user_public_key.clone(), at);
                    if a.seed_dials() {
                        self.revoked_dialed.push((a.clone(), at));
                    }
                    Change::Revoked {
                        cluster: cluster.to_owned(),
                    }
                }
                None => Change::None,
            },
            _ => Change::None,
        }
    }

    /// Takes `request` of `cluster` as approved, from the snapshot kept beside CONTROL, before
    /// CONTROL is replayed (its events then apply on top: a later revocation or approval wins).
    pub fn restore(&mut self, cluster: &str, request: InterconnectRequested) {
        let c = self.clusters.entry(cluster.to_owned()).or_default();
        if c.approved.is_none() {
            c.approved = Some(Request {
                cluster: cluster.to_owned(),
                body: request,
            });
        }
    }

    /// How to answer `request` from `cluster` (already validated).
    pub fn answer(&self, cluster: &str, request: &InterconnectRequested) -> Answer {
        let Some(c) = self.clusters.get(cluster) else {
            return Answer::Record;
        };
        let id = &request.request_id;
        let same_keys = |r: &Request| {
            r.body.link_user_public_key == request.link_user_public_key
                && r.body.xkey_public_key == request.xkey_public_key
        };
        if let Some(a) = c.approved.as_ref().filter(|a| a.id() == id) {
            return if same_keys(a) {
                Answer::Approved(Box::new(a.clone()))
            } else {
                Answer::Invalid(format!("request {id} was approved for other keys"))
            };
        }
        if let Some(reason) = c.rejected.get(id) {
            return Answer::Rejected(reason.clone());
        }
        if c.revoked.contains(id) {
            return Answer::Revoked;
        }
        if let Some(p) = c.pending.as_ref().filter(|p| p.id() == id) {
            return if same_keys(p) {
                Answer::Pending
            } else {
                Answer::Invalid(format!("request {id} was recorded with other keys"))
            };
        }
        Answer::Record
    }

    /// Every approved (and not revoked) request.
    pub fn approved(&self) -> impl Iterator<Item = &Request> {
        self.clusters.values().filter_map(|c| c.approved.as_ref())
    }

    /// Whether `cluster` was revoked and not approved again since.
    pub fn is_revoked(&self, cluster: &str) -> bool {
        self.clusters
            .get(cluster)
            .is_some_and(|c| c.approved.is_none() && !c.revoked.is_empty())
    }

    /// Clusters revoked and not approved again since.
    pub fn revoked_clusters(&self) -> impl Iterator<Item = &str> {
        self.clusters
            .iter()
            .filter(|(_, c)| c.approved.is_none() && !c.revoked.is_empty())
            .map(|(k, _)| k.as_str())
    }

    pub fn revoked_users(&self) -> &BTreeMap<String, i64> {
        &self.revoked_users
    }

    /// Seed-dialed requests that were revoked, and when.
    pub fn revoked_dialed(&self) -> &[(Request, i64)] {
        &self.revoked_dialed
    }
}

/// Checks what a leaf sent before anything is recorded: the subject's cluster, keys of the
/// right kinds, labels, direction and its URL.
///
/// # Errors
/// A message for the leaf saying what is wrong.
pub fn validate(request: &InterconnectRequested) -> Result<(), String> {
    let id_ok = !request.request_id.is_empty()
        && request.request_id.len() <= 64
        && request
            .request_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !id_ok {
        return Err("request_id must be 1 to 64 letters, digits or '-'".to_owned());
    }
    if !request.link_user_public_key.starts_with('U')
        || request.link_user_public_key.len() != 56
        || !request
            .link_user_public_key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err("link_user_public_key must be a NATS user public key (U...)".to_owned());
    }
    if !request.xkey_public_key.starts_with('X') || request.xkey_public_key.len() != 56 {
        return Err("xkey_public_key must be a curve public key (X...)".to_owned());
    }
    if request.labels.len() > 64 {
        return Err("at most 64 labels".to_owned());
    }
    for (k, v) in &request.labels {
        canopy_kit::labels::validate(k, v).map_err(|e| e.to_string())?;
    }
    if !request.trunk.is_empty() {
        canopy_kit::subject::ClusterId::parse(&request.trunk).map_err(|e| format!("trunk: {e}"))?;
    }
    if request.seed_user_jwt.len() > MAX_JWT_BYTES {
        return Err(format!(
            "seed_user_jwt is longer than {MAX_JWT_BYTES} bytes"
        ));
    }
    match LinkDirection::try_from(request.direction) {
        Ok(LinkDirection::LeafDials) => {
            if request.seed_user_jwt.is_empty() {
                Ok(())
            } else {
                Err("seed_user_jwt belongs to seed-dials requests".to_owned())
            }
        }
        Ok(LinkDirection::SeedDials) => {
            if !request.trunk.is_empty() {
                return Err(
                    "the seed dials a leaf directly: a seed-dials request names no trunk"
                        .to_owned(),
                );
            }
            let url_ok = request
                .leaf_url
                .strip_prefix("nats-leaf://")
                .is_some_and(|hostport| {
                    !hostport.is_empty()
                        && hostport.len() <= 253
                        && hostport
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
                });
            if url_ok {
                Ok(())
            } else {
                Err("a seed-dials request needs leaf_url nats-leaf://host:port".to_owned())
            }
        }
        _ => Err("direction must be leaf-dials or seed-dials".to_owned()),
    }
}

/// The longest user JWT a request may carry.
pub const MAX_JWT_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{
        ClusterRevoked, InterconnectApproved, InterconnectRejected,
    };

    const USER: &str = "UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const XKEY: &str = "XAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn req(id: &str) -> InterconnectRequested {
        InterconnectRequested {
            request_id: id.into(),
            link_user_public_key: USER.into(),
            xkey_public_key: XKEY.into(),
            direction: LinkDirection::LeafDials as i32,
            ..Default::default()
        }
    }

    fn approve(id: &str) -> Body {
        Body::InterconnectApproved(InterconnectApproved {
            request_id: id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_request_goes_from_record_to_pending_to_approved_to_revoked() {
        let mut r = Registry::default();
        assert_eq!(r.answer("a", &req("r1")), Answer::Record);
        r.apply("a", &Body::InterconnectRequested(req("r1")), 1);
        assert_eq!(r.answer("a", &req("r1")), Answer::Pending);
        // An approval of another cluster's or an unknown request changes nothing.
        assert_eq!(r.apply("b", &approve("r1"), 2), Change::None);
        assert_eq!(r.apply("a", &approve("nope"), 2), Change::None);
        assert!(matches!(
            r.apply("a", &approve("r1"), 2),
            Change::Approved(_)
        ));
        assert!(matches!(r.answer("a", &req("r1")), Answer::Approved(_)));
        assert_eq!(r.approved().count(), 1);
        // The same id with other keys is refused.
        let mut other = req("r1");
        other.link_user_public_key = format!("U{}", "B".repeat(55));
        assert!(matches!(r.answer("a", &other), Answer::Invalid(_)));
        let revoked = r.apply("a", &Body::ClusterRevoked(ClusterRevoked::default()), 9);
        assert_eq!(
            revoked,
            Change::Revoked {
                cluster: "a".into()
            }
        );
        assert_eq!(r.answer("a", &req("r1")), Answer::Revoked);
        assert_eq!(r.revoked_users().get(USER), Some(&9));
        assert!(r.revoked_dialed().is_empty());
        assert!(r.is_revoked("a"));
        assert_eq!(r.approved().count(), 0);
        // A revocation without an approved request changes nothing.
        assert_eq!(
            r.apply("a", &Body::ClusterRevoked(ClusterRevoked::default()), 10),
            Change::None
        );
        // The cluster may ask again with a new request.
        assert_eq!(r.answer("a", &req("r2")), Answer::Record);
    }

    #[test]
    fn a_rejected_request_stays_rejected_and_a_newer_one_replaces_a_pending_one() {
        let mut r = Registry::default();
        r.apply("a", &Body::InterconnectRequested(req("r1")), 1);
        r.apply("a", &Body::InterconnectRequested(req("r2")), 2);
        assert_eq!(r.answer("a", &req("r1")), Answer::Record);
        assert_eq!(r.answer("a", &req("r2")), Answer::Pending);
        assert_eq!(r.apply("a", &approve("r1"), 3), Change::None);
        r.apply(
            "a",
            &Body::InterconnectRejected(InterconnectRejected {
                request_id: "r2".into(),
                reason: "unknown cluster".into(),
                ..Default::default()
            }),
            4,
        );
        assert_eq!(
            r.answer("a", &req("r2")),
            Answer::Rejected("unknown cluster".into())
        );
        // A replayed request event does not reopen it.
        r.apply("a", &Body::InterconnectRequested(req("r2")), 5);
        assert_eq!(
            r.answer("a", &req("r2")),
            Answer::Rejected("unknown cluster".into())
        );
    }

    #[test]
    fn a_restored_approval_holds_until_control_says_otherwise() {
        let mut r = Registry::default();
        r.restore("a", req("r1"));
        assert!(matches!(r.answer("a", &req("r1")), Answer::Approved(_)));
        // Replaying its own events changes nothing.
        r.apply("a", &Body::InterconnectRequested(req("r1")), 1);
        assert_eq!(r.apply("a", &approve("r1"), 2), Change::None);
        assert_eq!(r.approved().count(), 1);
        // A revocation on CONTROL wins.
        r.apply("a", &Body::ClusterRevoked(ClusterRevoked::default()), 3);
        assert_eq!(r.answer("a", &req("r1")), Answer::Revoked);
        // A restore never replaces a newer approval.
        let mut r = Registry::default();
        r.apply("a", &Body::InterconnectRequested(req("r2")), 1);
        r.apply("a", &approve("r2"), 2);
        r.restore("a", req("r1"));
        assert!(matches!(r.answer("a", &req("r2")), Answer::Approved(_)));
    }

    #[test]
    fn a_revoked_seed_dialed_request_is_remembered_for_its_dialer_keys() {
        let mut r = Registry::default();
        let dialed = InterconnectRequested {
            direction: LinkDirection::SeedDials as i32,
            leaf_url: "nats-leaf://a:7422".into(),
            ..req("r1")
        };
        r.apply("a", &Body::InterconnectRequested(dialed), 1);
        let Change::Approved(approved) = r.apply("a", &approve("r1"), 2) else {
            panic!("not approved");
        };
        assert!(approved.seed_dials());
        r.apply("a", &Body::ClusterRevoked(ClusterRevoked::default()), 7);
        let revoked = r.revoked_dialed();
        assert_eq!(revoked.len(), 1);
        assert_eq!((revoked[0].0.id(), revoked[0].1), ("r1", 7));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(validate(&req("r-1")).is_ok());
        let bad_id = InterconnectRequested {
            request_id: "a.b".into(),
            ..req("x")
        };
        assert!(validate(&bad_id).unwrap_err().contains("request_id"));
        let bad_key = InterconnectRequested {
            link_user_public_key: "UABC".into(),
            ..req("x")
        };
        assert!(validate(&bad_key).unwrap_err().contains("user public key"));
        let mut bad_label = req("x");
        bad_label.labels.insert("env".into(), "a b".into());
        assert!(validate(&bad_label).is_err());
        let seed_dials = InterconnectRequested {
            direction: LinkDirection::SeedDials as i32,
            ..req("x")
        };
        assert!(validate(&seed_dials).unwrap_err().contains("leaf_url"));
        let seed_dials = InterconnectRequested {
            leaf_url: "nats-leaf://leaf.example:7422".into(),
            ..seed_dials
        };
        assert!(validate(&seed_dials).is_ok());
        for bad in [
            "nats-leaf://a b:1",
            "nats-leaf://x\"}",
            "http://x:1",
            "nats-leaf://",
        ] {
            let r = InterconnectRequested {
                leaf_url: bad.into(),
                ..seed_dials.clone()
            };
            assert!(validate(&r).is_err(), "{bad}");
        }
        let via_trunk = InterconnectRequested {
            trunk: "t1".into(),
            ..seed_dials.clone()
        };
        assert!(validate(&via_trunk).unwrap_err().contains("trunk"));
        let jwt_on_leaf_dials = InterconnectRequested {
            seed_user_jwt: "x".into(),
            ..req("x")
        };
        assert!(validate(&jwt_on_leaf_dials).is_err());
        let huge = InterconnectRequested {
            seed_user_jwt: "x".repeat(MAX_JWT_BYTES + 1),
            ..seed_dials
        };
        assert!(validate(&huge).unwrap_err().contains("longer"));
        let bad_trunk = InterconnectRequested {
            trunk: "t.>".into(),
            ..req("x")
        };
        assert!(validate(&bad_trunk).unwrap_err().contains("trunk"));
        let no_direction = InterconnectRequested {
            direction: 0,
            ..req("x")
        };
        assert!(validate(&no_direction).is_err());
    }
}
