//! Pure rules of the api: the cluster view, paging, and what a Watch asks for. No I/O here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use thiserror::Error;

use canopy_kit::envelope::{EVENT_TYPES, resolve_event_type};

pub mod audit;
pub mod commands;
pub mod interconnect;
pub mod scope;
pub mod trail;
use canopy_kit::subject::{self, ClusterId};

/// Clusters per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most clusters per page; larger requests are cut down to this (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Requests the api turns down; every variant names the rule that was broken.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cluster {0:?} not found")]
    ClusterNotFound(String),
}

impl Error {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Parses a cluster id given by a caller.
pub fn cluster_id(field: &'static str, value: &str) -> Result<ClusterId, Error> {
    ClusterId::parse(value).map_err(|e| Error::invalid(field, e.to_string()))
}

// === Clusters ===

/// A cluster as the read models know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub id: String,
    pub first_seen_at: DateTime<Utc>,
    /// The current agent, once one has reported.
    pub agent: Option<Agent>,
    /// The newest complete inventory snapshot.
    pub inventory: Option<Inventory>,
    pub labels: BTreeMap<String, String>,
}

/// The current agent instance of a cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agent {
    pub instance_id: String,
    pub version: String,
    pub kubernetes_version: String,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_interval_seconds: u32,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub last_heartbeat_seq: u64,
    pub heartbeats_received: u64,
    pub node_count: u32,
    pub pod_count: u32,
}

impl Agent {
    /// Heartbeats this instance sent that never reached the seed: the gaps below the newest
    /// sequence (heartbeat sequences start at 1 per instance).
    pub fn heartbeats_missed(&self) -> u64 {
        self.last_heartbeat_seq
            .saturating_sub(self.heartbeats_received)
    }
}

/// The newest complete inventory snapshot of a cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inventory {
    pub objects: u64,
    pub completed_at: Option<DateTime<Utc>>,
    /// Objects per kind; filled for single-cluster reads only.
    pub by_kind: BTreeMap<String, u64>,
}

// === Paging ===

/// Which page of clusters to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u32,
    /// Clusters with ids above this one (none: from the start).
    pub after: Option<ClusterId>,
    /// Only clusters carrying all these labels.
    pub match_labels: BTreeMap<String, String>,
}

const TOKEN_PREFIX: &str = "clusters/v1/after/";

impl PageRequest {
    /// `page_size` 0 means the default, anything above the maximum is cut down to it; the token
    /// must be one this api issued.
    pub fn new(page_size: u32, page_token: &str) -> Result<Self, Error> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token).ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "not a token from this api; pass next_page_token of the previous page",
                )
            })?)
        };
        Ok(Self {
            size,
            after,
            match_labels: BTreeMap::new(),
        })
    }

    /// Restricts the page to clusters carrying all `labels` (validated).
    pub fn with_labels(
        mut self,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        self.match_labels = labels.into_iter().collect();
        canopy_kit::labels::validate_all(&self.match_labels)
            .map_err(|e| Error::invalid("match_labels", e.to_string()))?;
        Ok(self)
    }
}

/// The opaque token of the page after cluster `last`.
pub fn page_token(last: &str) -> String {
    hex::encode(format!("{TOKEN_PREFIX}{last}"))
}

fn decode_token(token: &str) -> Option<ClusterId> {
    let bytes = hex::decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    ClusterId::parse(text.strip_prefix(TOKEN_PREFIX)?).ok()
}

/// One page of items and the token of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Builds a page from up to `size + 1` clusters read in id order: the extra one only says that
/// another page exists.
pub fn page(mut clusters: Vec<Cluster>, size: u32) -> Page<Cluster> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let more = clusters.len() > size;
    clusters.truncate(size);
    let next_page_token = match clusters.last() {
        Some(last) if more => Some(page_token(&last.id)),
        _ => None,
    };
    Page {
        items: clusters,
        next_page_token,
    }
}

// === Watch ===

/// Where a Watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Only events stored from now on.
    New,
    /// From this stream sequence (1 = the beginning).
    Sequence(u64),
    /// From the first event stored at or after this time.
    Time(DateTime<Utc>),
}

/// The event type that sets a cluster's labels (AgentStarted).
pub const LABELS_CHANGED: &str = "agent.started";

/// A validated Watch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub cluster: Option<ClusterId>,
    /// Canonical `<area>.<event>` names, sorted, without duplicates (empty: every type).
    pub types: Vec<&'static str>,
    pub start: WatchStart,
    /// Also read the watched clusters' AgentStarted events (which carry their labels) when
    /// `types` leaves them out: a watch scoped by cluster labels learns label changes from
    /// them, in stream order. They reach the caller only if `types` asks for them.
    pub label_changes: bool,
}

impl WatchSpec {
    /// `cluster` empty means every cluster; `types` may use short names (`heartbeat`).
    pub fn new(cluster: &str, types: &[String], start: WatchStart) -> Result<Self, Error> {
        let cluster = match cluster {
            "" => None,
            c => Some(cluster_id("cluster_id", c)?),
        };
        let mut resolved = Vec::with_capacity(types.len());
        for t in types {
            let canonical = resolve_event_type(t.trim()).ok_or_else(|| {
                Error::invalid(
                    "types",
                    format!(
                        "unknown event type {t:?}; known types: {}",
                        EVENT_TYPES.join(", ")
                    ),
                )
            })?;
            resolved.push(canonical);
        }
        resolved.sort_unstable();
        resolved.dedup();
        if let WatchStart::Sequence(0) = start {
            return Err(Error::invalid(
                "from_sequence",
                "stream sequences start at 1 (1 = the beginning of the stream)",
            ));
        }
        Ok(Self {
            cluster,
            types: resolved,
            start,
            label_changes: false,
        })
    }

    /// The same watch, also reading the label-changing events (see `label_changes`).
    #[must_use]
    pub fn with_label_changes(mut self) -> Self {
        self.label_changes = true;
        self
    }

    /// Whether events of `event_type` (`<area>.<event>`) reach the caller.
    pub fn delivers(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.contains(&event_type)
    }

    /// The subjects to consume: one per type, or all of the cluster's (or fleet's) events.
    pub fn filter_subjects(&self) -> Vec<String> {
        let cluster = self.cluster.as_ref();
        if self.types.is_empty() {
            // Built from a validated id and no type: cannot fail.
            return subject::event_filter(cluster, None).into_iter().collect();
        }
        let mut types = self.types.clone();
        if self.label_changes && !types.contains(&LABELS_CHANGED) {
            types.push(LABELS_CHANGED);
        }
        types
            .iter()
            .filter_map(|t| subject::event_filter(cluster, Some(t)).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: &str) -> Cluster {
        Cluster {
            id: id.into(),
            first_seen_at: DateTime::UNIX_EPOCH,
            agent: None,
            inventory: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn page_size_defaults_and_is_capped() {
        assert_eq!(PageRequest::new(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::new(7, "").unwrap().size, 7);
        assert_eq!(PageRequest::new(5000, "").unwrap().size, MAX_PAGE_SIZE);
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_rejected() {
        let id = ClusterId::parse("prod-eu").unwrap();
        let req = PageRequest::new(10, &page_token(id.as_str())).unwrap();
        assert_eq!(req.after, Some(id));
        for bad in [
            "zz",
            "abc",
            &hex::encode("other/prod-eu"),
            &hex::encode(format!("{TOKEN_PREFIX}Bad.Id")),
        ] {
            let err = PageRequest::new(10, bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Invalid {
                        field: "page_token",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_page_has_a_next_token_only_when_more_exist() {
        let p = page(vec![cluster("a"), cluster("b"), cluster("c")], 2);
        assert_eq!(p.items.len(), 2);
        let next = PageRequest::new(2, p.next_page_token.as_deref().unwrap()).unwrap();
        assert_eq!(next.after.unwrap().as_str(), "b");
        let last = page(vec![cluster("c")], 2);
        assert_eq!(last.next_page_token, None);
        let exact = page(vec![cluster("a"), cluster("b")], 2);
        assert_eq!(exact.next_page_token, None);
    }

    #[test]
    fn missed_heartbeats_are_the_gaps_below_the_newest() {
        let a = Agent {
            last_heartbeat_seq: 10,
            heartbeats_received: 7,
            ..Agent::default()
        };
        assert_eq!(a.heartbeats_missed(), 3);
        let fresh = Agent::default();
        assert_eq!(fresh.heartbeats_missed(), 0);
    }

    #[test]
    fn watch_filters_per_cluster_and_type() {
        let all = WatchSpec::new("", &[], WatchStart::New).unwrap();
        assert_eq!(all.filter_subjects(), vec!["canopy.evt.*.>"]);
        let one = WatchSpec::new("prod-eu", &[], WatchStart::Sequence(1)).unwrap();
        assert_eq!(one.filter_subjects(), vec!["canopy.evt.prod-eu.>"]);
        let types = [
            "heartbeat".to_owned(),
            "agent.heartbeat".into(),
            "inventory.snapshot".into(),
        ];
        let typed = WatchSpec::new("prod-eu", &types, WatchStart::New).unwrap();
        assert_eq!(typed.types, vec!["agent.heartbeat", "inventory.snapshot"]);
        assert_eq!(
            typed.filter_subjects(),
            vec![
                "canopy.evt.prod-eu.agent.heartbeat",
                "canopy.evt.prod-eu.inventory.snapshot"
            ]
        );
    }

    #[test]
    fn a_scoped_watch_also_reads_label_changes_but_delivers_only_what_was_asked() {
        let types = ["heartbeat".to_owned()];
        let w = WatchSpec::new("", &types, WatchStart::New)
            .unwrap()
            .with_label_changes();
        assert_eq!(
            w.filter_subjects(),
            vec!["canopy.evt.*.agent.heartbeat", "canopy.evt.*.agent.started"]
        );
        assert!(w.delivers("agent.heartbeat"));
        assert!(!w.delivers("agent.started"));
        let types = ["agent.started".to_owned()];
        let w = WatchSpec::new("prod-eu", &types, WatchStart::New)
            .unwrap()
            .with_label_changes();
        assert_eq!(
            w.filter_subjects(),
            vec!["canopy.evt.prod-eu.agent.started"]
        );
        let all = WatchSpec::new("", &[], WatchStart::New)
            .unwrap()
            .with_label_changes();
        assert_eq!(all.filter_subjects(), vec!["canopy.evt.*.>"]);
        assert!(all.delivers("agent.started"));
    }

    #[test]
    fn bad_watch_requests_name_the_rule() {
        let err = WatchSpec::new("Prod-EU", &[], WatchStart::New).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "cluster_id",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("lowercase"), "{err}");
        let err = WatchSpec::new("", &["agent.>".into()], WatchStart::New).unwrap_err();
        assert!(err.to_string().contains("agent.heartbeat"), "{err}");
        let err = WatchSpec::new("", &[], WatchStart::Sequence(0)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "from_sequence",
                    ..
                }
            ),
            "{err}"
        );
    }
}
