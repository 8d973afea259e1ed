//! Pure rules of policy distribution: the fleet policy, the derogations and the clusters' labels
//! folded from events, each cluster's effective policy, and which clusters need a new one
//! published. No I/O here; time comes in as a value.

use std::collections::{BTreeMap, HashMap};

use canopy_kit::proto::event::v1::{Derogation, EffectivePolicy, Policy, envelope::Body};
use chrono::{DateTime, Utc};

/// What cnc knows from CONTROL and FLEET_EVENTS.
#[derive(Debug, Default)]
pub struct PolicyState {
    version: u64,
    policy: Option<Policy>,
    /// Derogations granted and not revoked, by id.
    derogations: BTreeMap<String, Derogation>,
    /// Every cluster an agent announced, with its labels.
    clusters: BTreeMap<String, HashMap<String, String>>,
    /// The newest CONTROL sequence applied.
    control_seq: u64,
    /// What was last published per cluster (control_sequence left out: it is not content).
    published: HashMap<String, EffectivePolicy>,
}

impl PolicyState {
    /// Applies a CONTROL event (others than policy ones are ignored).
    pub fn apply_control(&mut self, seq: u64, body: &Body) {
        self.control_seq = self.control_seq.max(seq);
        match body {
            Body::PolicyChanged(c) if c.version >= self.version => {
                self.version = c.version;
                self.policy = c.policy.clone();
            }
            Body::DerogationGranted(g) => {
                if let Some(d) = &g.derogation {
                    self.derogations.insert(d.derogation_id.clone(), d.clone());
                }
            }
            Body::DerogationRevoked(r) => {
                self.derogations.remove(&r.derogation_id);
            }
            _ => {}
        }
    }

    /// An agent announced itself with these labels.
    pub fn apply_agent(&mut self, cluster: &str, labels: &HashMap<String, String>) {
        self.clusters.insert(cluster.to_owned(), labels.clone());
    }

    pub fn clusters(&self) -> impl Iterator<Item = &String> {
        self.clusters.keys()
    }

    /// Records what is already on POLICIES for a cluster (read at start).
    pub fn already_published(&mut self, cluster: &str, mut effective: EffectivePolicy) {
        effective.control_sequence = 0;
        self.published.insert(cluster.to_owned(), effective);
    }

    /// The effective policy of `cluster` at `now`: the fleet policy and the derogations whose
    /// scope matches the cluster (id and labels), expired ones left out, sorted by id.
    pub fn effective(&self, cluster: &str, now: DateTime<Utc>) -> EffectivePolicy {
        let labels = self.clusters.get(cluster);
        let derogations = self
            .derogations
            .values()
            .filter(|d| {
                let scope = d.scope.clone().unwrap_or_default();
                let id_ok = scope.cluster_id.is_empty() || scope.cluster_id == cluster;
                let labels_ok = scope
                    .cluster_labels
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                let live = d
                    .expires_at
                    .as_ref()
                    .is_some_and(|t| t.seconds > now.timestamp());
                id_ok && labels_ok && live
            })
            .cloned()
            .collect();
        EffectivePolicy {
            policy_version: self.version,
            policy: self.policy.clone(),
            derogations,
            control_sequence: self.control_seq,
        }
    }

    /// Every known cluster whose effective policy differs from what was last published.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<(String, EffectivePolicy)> {
        self.clusters
            .keys()
            .filter_map(|c| {
                let e = self.effective(c, now);
                let content = EffectivePolicy {
                    control_sequence: 0,
                    ..e.clone()
                };
                (self.published.get(c) != Some(&content)).then(|| (c.clone(), e))
            })
            .collect()
    }

    /// A cluster's effective policy was stored on POLICIES.
    pub fn published(&mut self, cluster: &str, effective: &EffectivePolicy) {
        self.already_published(cluster, effective.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{
        DerogationGranted, DerogationRevoked, DerogationScope, PolicyChanged,
    };
    use chrono::TimeZone as _;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn grant(id: &str, scope: DerogationScope, expires: i64) -> Body {
        Body::DerogationGranted(DerogationGranted {
            derogation: Some(Derogation {
                derogation_id: id.into(),
                check: "HOST-NET".into(),
                scope: Some(scope),
                expires_at: Some(prost_types::Timestamp {
                    seconds: t(expires).timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
        })
    }

    fn state() -> PolicyState {
        let mut s = PolicyState::default();
        s.apply_agent("prod-eu", &labels(&[("env", "prod")]));
        s.apply_agent("staging-us", &labels(&[("env", "staging")]));
        s
    }

    fn ids(e: &EffectivePolicy) -> Vec<&str> {
        e.derogations
            .iter()
            .map(|d| d.derogation_id.as_str())
            .collect()
    }

    #[test]
    fn given_derogations_then_each_cluster_gets_those_whose_scope_matches_it() {
        let mut s = state();
        s.apply_control(
            1,
            &grant(
                "by-label",
                DerogationScope {
                    cluster_labels: [("env".to_owned(), "prod".to_owned())].into(),
                    ..Default::default()
                },
                100,
            ),
        );
        s.apply_control(
            2,
            &grant(
                "by-id",
                DerogationScope {
                    cluster_id: "staging-us".into(),
                    namespace: "shop".into(),
                    ..Default::default()
                },
                100,
            ),
        );
        s.apply_control(3, &grant("everywhere", DerogationScope::default(), 100));
        s.apply_control(4, &grant("expired", DerogationScope::default(), -1));
        assert_eq!(
            ids(&s.effective("prod-eu", t(0))),
            ["by-label", "everywhere"]
        );
        assert_eq!(
            ids(&s.effective("staging-us", t(0))),
            ["by-id", "everywhere"]
        );
        assert_eq!(s.effective("prod-eu", t(0)).control_sequence, 4);
        s.apply_control(
            5,
            &Body::DerogationRevoked(DerogationRevoked {
                derogation_id: "everywhere".into(),
                ..Default::default()
            }),
        );
        assert_eq!(ids(&s.effective("prod-eu", t(0))), ["by-label"]);
        // At its expiry a derogation is left out.
        assert!(ids(&s.effective("prod-eu", t(100))).is_empty());
    }

    #[test]
    fn given_publications_then_only_changed_content_is_due() {
        let mut s = state();
        let due = s.due(t(0));
        assert_eq!(due.len(), 2, "nothing was published yet");
        for (c, e) in &due {
            s.published(c, e);
        }
        assert!(s.due(t(0)).is_empty());
        // An unrelated CONTROL event moves the sequence, not the content.
        s.apply_control(9, &Body::CommandRequested(Default::default()));
        assert!(s.due(t(0)).is_empty());
        s.apply_control(
            10,
            &Body::PolicyChanged(PolicyChanged {
                version: 1,
                policy: Some(Policy {
                    disabled_checks: vec!["PROBES".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let due = s.due(t(0));
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|(_, e)| e.policy_version == 1));
        for (c, e) in &due {
            s.published(c, e);
        }
        // A label change that brings a derogation in re-publishes that cluster only.
        s.apply_control(
            11,
            &grant(
                "team",
                DerogationScope {
                    cluster_labels: [("team".to_owned(), "core".to_owned())].into(),
                    ..Default::default()
                },
                100,
            ),
        );
        assert!(s.due(t(0)).is_empty());
        s.apply_agent("prod-eu", &labels(&[("env", "prod"), ("team", "core")]));
        let due = s.due(t(0));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "prod-eu");
        assert_eq!(ids(&due[0].1), ["team"]);
        // An older PolicyChanged (replayed out of order) does not win.
        s.apply_control(
            3,
            &Body::PolicyChanged(PolicyChanged {
                version: 0,
                ..Default::default()
            }),
        );
        assert_eq!(s.effective("prod-eu", t(0)).policy_version, 1);
    }
}
