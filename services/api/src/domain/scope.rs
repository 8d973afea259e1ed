//! Cluster-label scopes: which clusters and which command targets a token scoped by cluster
//! labels may see and act on. The rule lives here once; [`sql`] states the same rule for the
//! read-model queries that must filter before paging.
//!
//! A cluster is in scope when its labels carry every `k = v` pair of the scope. A command
//! target is in scope when it names a cluster in scope, or is a label selector that includes
//! every pair of the scope (so it can only ever reach clusters in scope); a derogation likewise
//! when its `cluster_id` names a cluster in scope or its `cluster_labels` include every pair of
//! the scope. An empty scope is the whole fleet (an unscoped token, or authentication turned
//! off). [`WatchScope`] applies the cluster rule to a live event stream.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use canopy_kit::proto::event::v1::{CommandTarget, command_target::Target};

/// Labels looked up by key: clusters carry them in a `BTreeMap`, protobuf maps are `HashMap`s.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Why a target is out of scope (the caller named it, so naming it back reveals nothing).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum OutOfScope {
    /// Out of scope, or unknown: a scoped caller cannot tell the two apart.
    #[error("cluster {0:?} is not in the token's scope")]
    Cluster(String),
    #[error(
        "the selector must include the token's scope ({missing}) so that it reaches only clusters in scope"
    )]
    Selector { missing: String },
    #[error("a target is required")]
    NoTarget,
    #[error(
        "the derogation must name a cluster in the token's scope, or scope.cluster_labels must include the token's scope ({missing}) so that it applies only to clusters in scope"
    )]
    Derogation { missing: String },
    /// A remediation, diagnosis... of a cluster out of scope (or unknown).
    #[error("{what} {id:?} is not on a cluster in the token's scope")]
    Object { what: &'static str, id: String },
}

/// A caller's scope: the cluster labels every cluster it sees must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeMap<String, String>);

impl Scope {
    pub fn new(labels: BTreeMap<String, String>) -> Self {
        Self(labels)
    }

    /// The whole fleet: nothing is filtered.
    pub fn fleet() -> Self {
        Self::default()
    }

    /// Whether this scope is the whole fleet.
    pub fn is_fleet(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs every cluster in scope carries.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether a cluster carrying `labels` is in scope.
    pub fn admits_cluster(&self, labels: &impl Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.label(k) == Some(v))
    }

    /// Whether a selector matching `match_labels` reaches only clusters in scope: it includes
    /// every pair of the scope.
    pub fn admits_selector(&self, match_labels: &impl Labels) -> bool {
        self.missing(match_labels).is_empty()
    }

    /// The scope's pairs a selector lacks (or gives another value), as `k=v`.
    fn missing(&self, match_labels: &impl Labels) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| match_labels.label(k) != Some(v.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// A label match narrowed to this scope: the request's pairs plus the scope's; `None` when
    /// they conflict (the request asks for another value of a scope label: nothing matches).
    pub fn narrow(
        &self,
        mut match_labels: HashMap<String, String>,
    ) -> Option<HashMap<String, String>> {
        for (k, v) in &self.0 {
            match match_labels.get(k) {
                Some(have) if have != v => return None,
                _ => {
                    match_labels.insert(k.clone(), v.clone());
                }
            }
        }
        Some(match_labels)
    }

    /// Whether a command `target` is in scope. `cluster_labels` are the labels of the cluster
    /// the target names ([`target_cluster`]), `None` when that cluster is unknown.
    ///
    /// # Errors
    /// [`OutOfScope`] naming the cluster, or the scope pairs a selector lacks.
    pub fn admits_target(
        &self,
        target: Option<&CommandTarget>,
        cluster_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), OutOfScope> {
        if self.is_fleet() {
            return Ok(());
        }
        match target.and_then(|t| t.target.as_ref()) {
            None => Err(OutOfScope::NoTarget),
            Some(Target::ClusterId(id)) => match cluster_labels {
                Some(labels) if self.admits_cluster(labels) => Ok(()),
                _ => Err(OutOfScope::Cluster(id.clone())),
            },
            Some(Target::Selector(s)) => {
                let missing = self.missing(&s.match_labels);
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(OutOfScope::Selector {
                        missing: missing.join(","),
                    })
                }
            }
        }
    }

    /// Whether a derogation whose scope names `cluster_id` (empty: any cluster) and
    /// `cluster_labels` can only apply to clusters in this scope: the cluster it names is in
    /// scope (`named_labels` are that cluster's labels, `None` when it is unknown), or its
    /// labels include every pair of the scope.
    ///
    /// # Errors
    /// [`OutOfScope`] naming the cluster, or the scope pairs the labels lack.
    pub fn admits_derogation(
        &self,
        cluster_id: &str,
        cluster_labels: &impl Labels,
        named_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), OutOfScope> {
        if self.is_fleet() {
            return Ok(());
        }
        if !cluster_id.is_empty() && named_labels.is_some_and(|l| self.admits_cluster(l)) {
            return Ok(());
        }
        let missing = self.missing(cluster_labels);
        if missing.is_empty() {
            Ok(())
        } else if cluster_id.is_empty() {
            Err(OutOfScope::Derogation {
                missing: missing.join(","),
            })
        } else {
            Err(OutOfScope::Cluster(cluster_id.to_owned()))
        }
    }
}

// === impl WatchScope ===

/// What a watch scoped by cluster labels knows of each cluster whose events it has met:
/// whether the cluster is in scope at the watch's position in the stream, and from which
/// stream sequence on (0: from before anything the watch reads).
///
/// Labels change only when an agent starts (AgentStarted carries them), and a scoped watch
/// reads every AgentStarted of the clusters it watches, in stream order. On first meeting a
/// cluster it learns the labels the cluster had at that event (from the log, or the read model
/// when the log holds no AgentStarted of it); each AgentStarted it passes then changes them
/// from that event on. So an event is judged by the labels its cluster had when it was stored,
/// and a cluster that gains the labels is delivered from the AgentStarted that gives them.
#[derive(Debug, Clone)]
pub struct WatchScope {
    scope: Scope,
    clusters: HashMap<String, Known>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    seq: u64,
    admitted: bool,
}

impl WatchScope {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            clusters: HashMap::new(),
        }
    }

    /// Whether events of `cluster` are in scope; `None` when the cluster's labels have not
    /// been learned yet.
    pub fn admits(&self, cluster: &str) -> Option<bool> {
        self.clusters.get(cluster).map(|k| k.admitted)
    }

    /// Learns the labels of `cluster` from stream sequence `seq` on (`None`: unknown, so out of
    /// scope), unless labels from a later sequence are known already.
    pub fn learn(&mut self, cluster: &str, seq: u64, labels: Option<&impl Labels>) {
        let admitted = labels.is_some_and(|l| self.scope.admits_cluster(l));
        match self.clusters.get_mut(cluster) {
            Some(k) if k.seq > seq => {}
            Some(k) => *k = Known { seq, admitted },
            None => {
                self.clusters
                    .insert(cluster.to_owned(), Known { seq, admitted });
            }
        }
    }
}

/// The cluster a command target names, if it names one (whose labels [`Scope::admits_target`]
/// needs).
pub fn target_cluster(target: Option<&CommandTarget>) -> Option<&str> {
    match target.and_then(|t| t.target.as_ref()) {
        Some(Target::ClusterId(id)) => Some(id),
        _ => None,
    }
}

/// The same rule as SQL predicates, for queries that filter before paging. The scope is bound
/// as a JSONB object (`{}` for the whole fleet); `clusters.labels @> scope` is
/// [`Scope::admits_cluster`].
pub mod sql {
    /// True when the cluster whose id is `column` is in the scope bound as `$param`.
    pub fn cluster_in_scope(column: &str, param: u8) -> String {
        format!(
            "(${param}::jsonb = '{{}}'::jsonb OR EXISTS (SELECT 1 FROM clusters scope_c
              WHERE scope_c.id = {column} AND scope_c.labels @> ${param}::jsonb))"
        )
    }

    /// True when the command target stored in the JSONB `column` (`{"cluster_id": …}` or
    /// `{"selector": {…}}`) is in the scope bound as `$param`: a cluster in scope, or a
    /// selector that includes the scope.
    pub fn target_in_scope(column: &str, param: u8) -> String {
        format!(
            "(${param}::jsonb = '{{}}'::jsonb
              OR {column}->'selector' @> ${param}::jsonb
              OR EXISTS (SELECT 1 FROM clusters scope_c
                         WHERE scope_c.id = {column}->>'cluster_id'
                           AND scope_c.labels @> ${param}::jsonb))"
        )
    }

    /// True when the derogation whose scope is stored in the JSONB `labels` column and the
    /// `cluster` column is in the scope bound as `$param`: [`super::Scope::admits_derogation`].
    pub fn derogation_in_scope(labels: &str, cluster: &str, param: u8) -> String {
        format!(
            "(${param}::jsonb = '{{}}'::jsonb
              OR {labels} @> ${param}::jsonb
              OR EXISTS (SELECT 1 FROM clusters scope_c
                         WHERE scope_c.id = {cluster} AND {cluster} <> ''
                           AND scope_c.labels @> ${param}::jsonb))"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::LabelSelector;

    fn map<M: FromIterator<(String, String)>>(pairs: &[(&str, &str)]) -> M {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn scope(pairs: &[(&str, &str)]) -> Scope {
        Scope::new(map(pairs))
    }

    fn cluster(id: &str) -> Option<CommandTarget> {
        Some(CommandTarget {
            target: Some(Target::ClusterId(id.into())),
        })
    }

    fn selector(pairs: &[(&str, &str)]) -> Option<CommandTarget> {
        Some(CommandTarget {
            target: Some(Target::Selector(LabelSelector {
                match_labels: map(pairs),
            })),
        })
    }

    #[test]
    fn a_cluster_is_in_scope_when_it_carries_every_pair() {
        let s = scope(&[("env", "prod"), ("team", "a")]);
        let labels: BTreeMap<_, _> = map(&[("env", "prod"), ("team", "a"), ("zone", "eu")]);
        assert!(s.admits_cluster(&labels));
        let labels: BTreeMap<_, _> = map(&[("env", "prod")]);
        assert!(!s.admits_cluster(&labels), "one pair missing");
        let labels: HashMap<_, _> = map(&[("env", "dev"), ("team", "a")]);
        assert!(!s.admits_cluster(&labels), "another value");
        let none: BTreeMap<_, _> = BTreeMap::new();
        assert!(Scope::fleet().admits_cluster(&none), "the fleet admits all");
        assert!(Scope::fleet().is_fleet() && !s.is_fleet());
    }

    #[test]
    fn a_cluster_target_needs_a_known_cluster_in_scope() {
        let s = scope(&[("env", "prod")]);
        let prod: BTreeMap<_, _> = map(&[("env", "prod")]);
        let dev: BTreeMap<_, _> = map(&[("env", "dev")]);
        assert_eq!(s.admits_target(cluster("a").as_ref(), Some(&prod)), Ok(()));
        assert_eq!(
            s.admits_target(cluster("b").as_ref(), Some(&dev)),
            Err(OutOfScope::Cluster("b".into()))
        );
        assert_eq!(
            s.admits_target(cluster("gone").as_ref(), None),
            Err(OutOfScope::Cluster("gone".into())),
            "unknown reads as out of scope"
        );
        assert_eq!(target_cluster(cluster("a").as_ref()), Some("a"));
        assert_eq!(target_cluster(selector(&[]).as_ref()), None);
        let err = s
            .admits_target(cluster("b").as_ref(), Some(&dev))
            .unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
    }

    #[test]
    fn a_selector_target_must_include_the_scope() {
        let s = scope(&[("env", "prod"), ("team", "a")]);
        let t = selector(&[("env", "prod"), ("team", "a"), ("zone", "eu")]);
        assert_eq!(
            s.admits_target(t.as_ref(), None),
            Ok(()),
            "narrower is fine"
        );
        let t = selector(&[("env", "prod")]);
        assert_eq!(
            s.admits_target(t.as_ref(), None),
            Err(OutOfScope::Selector {
                missing: "team=a".into()
            })
        );
        let t = selector(&[("env", "dev"), ("team", "a")]);
        assert_eq!(
            s.admits_target(t.as_ref(), None),
            Err(OutOfScope::Selector {
                missing: "env=prod".into()
            })
        );
        let t = selector(&[]);
        assert!(
            s.admits_target(t.as_ref(), None).is_err(),
            "the whole fleet"
        );
        assert_eq!(s.admits_target(None, None), Err(OutOfScope::NoTarget));
        assert_eq!(
            Scope::fleet().admits_target(selector(&[]).as_ref(), None),
            Ok(())
        );
        assert_eq!(
            Scope::fleet().admits_target(cluster("x").as_ref(), None),
            Ok(())
        );
    }

    #[test]
    fn a_derogation_must_name_a_cluster_in_scope_or_include_the_scope() {
        let s = scope(&[("env", "prod"), ("team", "a")]);
        let none: BTreeMap<String, String> = BTreeMap::new();
        let prod: BTreeMap<_, _> = map(&[("env", "prod"), ("team", "a")]);
        let dev: BTreeMap<_, _> = map(&[("env", "dev"), ("team", "a")]);
        let within: HashMap<_, _> = map(&[("env", "prod"), ("team", "a"), ("zone", "eu")]);
        let partial: HashMap<_, _> = map(&[("env", "prod")]);
        assert_eq!(s.admits_derogation("a", &none, Some(&prod)), Ok(()));
        assert_eq!(s.admits_derogation("", &within, None), Ok(()));
        assert_eq!(
            s.admits_derogation("b", &within, Some(&dev)),
            Ok(()),
            "the labels alone keep it within the scope"
        );
        assert_eq!(
            s.admits_derogation("b", &partial, Some(&dev)),
            Err(OutOfScope::Cluster("b".into()))
        );
        assert_eq!(
            s.admits_derogation("gone", &none, None),
            Err(OutOfScope::Cluster("gone".into())),
            "unknown reads as out of scope"
        );
        let err = s.admits_derogation("", &partial, None).unwrap_err();
        assert_eq!(
            err,
            OutOfScope::Derogation {
                missing: "team=a".into()
            }
        );
        assert!(err.to_string().contains("team=a"), "{err}");
        assert!(
            s.admits_derogation("", &none, None).is_err(),
            "the whole fleet"
        );
        assert_eq!(Scope::fleet().admits_derogation("", &none, None), Ok(()));
    }

    #[test]
    fn a_watch_follows_each_cluster_s_labels_in_stream_order() {
        let mut w = WatchScope::new(scope(&[("env", "prod")]));
        let prod: BTreeMap<_, _> = map(&[("env", "prod")]);
        let dev: BTreeMap<_, _> = map(&[("env", "dev")]);
        assert_eq!(w.admits("a"), None, "not learned yet");
        w.learn("a", 0, None::<&BTreeMap<String, String>>);
        assert_eq!(w.admits("a"), Some(false), "unknown");
        w.learn("a", 7, Some(&prod));
        assert_eq!(w.admits("a"), Some(true), "an AgentStarted brings it in");
        w.learn("a", 3, Some(&dev));
        assert_eq!(w.admits("a"), Some(true), "older labels do not override");
        w.learn("a", 9, Some(&dev));
        assert_eq!(w.admits("a"), Some(false), "a newer one takes it out");
        w.learn("b", 0, Some(&prod));
        assert_eq!(w.admits("b"), Some(true));
    }

    #[test]
    fn narrowing_a_label_match_adds_the_scope_or_matches_nothing() {
        let s = scope(&[("env", "prod")]);
        assert_eq!(
            s.narrow(map(&[("zone", "eu")])),
            Some(map(&[("zone", "eu"), ("env", "prod")]))
        );
        assert_eq!(
            s.narrow(map(&[("env", "prod")])),
            Some(map(&[("env", "prod")]))
        );
        assert_eq!(s.narrow(map(&[("env", "dev")])), None);
        assert_eq!(
            Scope::fleet().narrow(map(&[("env", "dev")])),
            Some(map(&[("env", "dev")]))
        );
    }
}
