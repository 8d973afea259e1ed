//! Pure rules of command dispatch: what cnc knows of clusters and commands (folded from CONTROL
//! and FLEET_EVENTS), which clusters a request reaches or why it is refused, and which runs are
//! past their deadline. No I/O here; time comes in as a value.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use canopy_kit::labels;
use canopy_kit::proto::event::v1::{CommandRequested, command_target::Target, envelope::Body};

/// How far a run got, as cnc knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunState {
    Dispatched,
    Accepted,
    /// Succeeded, failed, timed out or refused: nothing more to watch.
    Ended,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Dispatched => "dispatched",
            RunState::Accepted => "accepted",
            RunState::Ended => "ended",
        }
    }
}

/// A command cnc has seen requested.
#[derive(Debug, Clone)]
struct Tracked {
    request: CommandRequested,
    deadline: Option<DateTime<Utc>>,
    /// A CommandDispatched or CommandRejected for it is on CONTROL (or was just published).
    decided: bool,
    runs: BTreeMap<String, RunState>,
}

/// What cnc decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refused as a whole: no cluster runs it.
    Reject {
        reason: &'static str,
        detail: String,
    },
    /// One run per cluster, in id order.
    Dispatch(Vec<String>),
}

/// A run past its deadline that has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub command_id: String,
    pub cluster: String,
    pub kind: i32,
    pub deadline: DateTime<Utc>,
    pub last_state: RunState,
}

/// Clusters and commands, from events.
#[derive(Debug, Default)]
pub struct CommandState {
    /// Every cluster an agent announced, with its labels.
    clusters: BTreeMap<String, HashMap<String, String>>,
    revoked: BTreeSet<String>,
    commands: HashMap<String, Tracked>,
    /// Ids of finished commands whose tracking was dropped: a late duplicate request is ignored.
    forgotten: HashSet<String>,
    /// Requests not decided yet, in arrival order.
    undecided: Vec<String>,
}

pub fn to_time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

impl CommandState {
    /// An agent announced itself with these labels.
    pub fn apply_agent(&mut self, cluster: &str, labels: &HashMap<String, String>) {
        self.clusters.insert(cluster.to_owned(), labels.clone());
    }

    pub fn knows(&self, cluster: &str) -> bool {
        self.clusters.contains_key(cluster)
    }

    /// A CONTROL event (`cluster` is the envelope's cluster id, empty when none).
    pub fn apply_control(&mut self, cluster: &str, body: &Body) {
        match body {
            Body::CommandRequested(r) => {
                if self.commands.contains_key(&r.command_id)
                    || self.forgotten.contains(&r.command_id)
                {
                    return;
                }
                self.undecided.push(r.command_id.clone());
                self.commands.insert(
                    r.command_id.clone(),
                    Tracked {
                        deadline: to_time(r.deadline.as_ref()),
                        request: r.clone(),
                        decided: false,
                        runs: BTreeMap::new(),
                    },
                );
            }
            Body::CommandDispatched(d) => {
                if let Some(t) = self.commands.get_mut(&d.command_id) {
                    t.decided = true;
                    t.runs
                        .entry(cluster.to_owned())
                        .or_insert(RunState::Dispatched);
                }
            }
            Body::CommandRejected(r) => {
                if let Some(t) = self.commands.get_mut(&r.command_id) {
                    t.decided = true;
                    if !cluster.is_empty() {
                        t.runs.insert(cluster.to_owned(), RunState::Ended);
                    }
                }
            }
            Body::CommandTimedOut(t) => self.end_run(&t.command_id, cluster),
            Body::ClusterRevoked(_) if !cluster.is_empty() => {
                self.revoked.insert(cluster.to_owned());
            }
            _ => {}
        }
    }

    /// What an agent reported about a run (FLEET_EVENTS).
    pub fn apply_result(&mut self, cluster: &str, body: &Body) {
        match body {
            Body::CommandAccepted(a) => {
                if let Some(t) = self.commands.get_mut(&a.command_id) {
                    let run = t
                        .runs
                        .entry(cluster.to_owned())
                        .or_insert(RunState::Accepted);
                    *run = (*run).max(RunState::Accepted);
                }
            }
            Body::CommandSucceeded(s) => self.end_run(&s.command_id, cluster),
            Body::CommandFailed(f) => self.end_run(&f.command_id, cluster),
            _ => {}
        }
    }

    fn end_run(&mut self, command_id: &str, cluster: &str) {
        if let Some(t) = self.commands.get_mut(command_id) {
            t.runs.insert(cluster.to_owned(), RunState::Ended);
        }
    }

    /// Requests waiting for a decision (taken: the caller decides each one).
    pub fn take_undecided(&mut self) -> Vec<CommandRequested> {
        let ids = std::mem::take(&mut self.undecided);
        ids.into_iter()
            .filter_map(|id| self.commands.get(&id))
            .filter(|t| !t.decided)
            .map(|t| t.request.clone())
            .collect()
    }

    /// Whether a decision for the command was already taken.
    pub fn decided(&self, command_id: &str) -> bool {
        self.commands.get(command_id).is_some_and(|t| t.decided)
            || self.forgotten.contains(command_id)
    }

    /// Which clusters `request` reaches at `now`, or why none.
    pub fn decide(&self, request: &CommandRequested, now: DateTime<Utc>) -> Decision {
        let reject = |reason, detail: String| Decision::Reject { reason, detail };
        let Some(deadline) = to_time(request.deadline.as_ref()) else {
            return reject("invalid", "the request has no deadline".into());
        };
        if deadline <= now {
            return reject(
                "deadline_passed",
                format!("the deadline {deadline} passed before dispatch"),
            );
        }
        if request.kind == 0 {
            return reject("invalid", "the command kind is unspecified".into());
        }
        match request.target.as_ref().and_then(|t| t.target.as_ref()) {
            None => reject("invalid", "the request has no target".into()),
            Some(Target::ClusterId(id)) => {
                if self.revoked.contains(id) {
                    reject("cluster_revoked", format!("cluster {id} was revoked"))
                } else if !self.clusters.contains_key(id) {
                    reject(
                        "unknown_cluster",
                        format!("no agent of cluster {id} ever reported"),
                    )
                } else {
                    Decision::Dispatch(vec![id.clone()])
                }
            }
            Some(Target::Selector(s)) => {
                let selector: BTreeMap<String, String> = s
                    .match_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Err(e) = labels::validate_all(&selector) {
                    return reject("invalid", e.to_string());
                }
                let matched: Vec<String> = self
                    .clusters
                    .iter()
                    .filter(|(id, l)| !self.revoked.contains(*id) && labels::matches(&selector, l))
                    .map(|(id, _)| id.clone())
                    .collect();
                if matched.is_empty() {
                    reject(
                        "no_match",
                        format!("no cluster carries the labels {selector:?}"),
                    )
                } else {
                    Decision::Dispatch(matched)
                }
            }
        }
    }

    /// Records a decision published by this cnc.
    pub fn record(&mut self, command_id: &str, decision: &Decision) {
        if let Some(t) = self.commands.get_mut(command_id) {
            t.decided = true;
            if let Decision::Dispatch(clusters) = decision {
                for c in clusters {
                    t.runs.entry(c.clone()).or_insert(RunState::Dispatched);
                }
            }
        }
    }

    /// Runs past their deadline (by more than `grace`) that have not ended.
    pub fn overdue(&self, now: DateTime<Utc>, grace: chrono::Duration) -> Vec<Overdue> {
        let mut out = Vec::new();
        for (id, t) in &self.commands {
            let Some(deadline) = t.deadline else {
                continue;
            };
            if !t.decided || deadline + grace > now {
                continue;
            }
            for (cluster, state) in &t.runs {
                if *state != RunState::Ended {
                    out.push(Overdue {
                        command_id: id.clone(),
                        cluster: cluster.clone(),
                        kind: t.request.kind,
                        deadline,
                        last_state: *state,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.command_id, &a.cluster).cmp(&(&b.command_id, &b.cluster)));
        out
    }

    /// Drops the tracking of decided commands whose runs all ended (their ids are kept so that a
    /// late duplicate request stays ignored).
    pub fn forget_finished(&mut self) {
        let done: Vec<String> = self
            .commands
            .iter()
            .filter(|(_, t)| t.decided && t.runs.values().all(|s| *s == RunState::Ended))
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            self.commands.remove(&id);
            self.forgotten.insert(id);
        }
    }

    /// Commands tracked (not yet finished).
    pub fn tracked(&self) -> usize {
        self.commands.len()
    }

    pub fn clusters(&self) -> usize {
        self.clusters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{
        ClusterRevoked, CommandAccepted, CommandDispatched, CommandKind, CommandSucceeded,
        CommandTarget, LabelSelector,
    };

    fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn request(id: &str, target: Target) -> CommandRequested {
        CommandRequested {
            command_id: id.into(),
            kind: CommandKind::RunAudit as i32,
            target: Some(CommandTarget {
                target: Some(target),
            }),
            deadline: Some(ts(now() + chrono::Duration::seconds(60))),
            ..Default::default()
        }
    }

    fn fleet() -> CommandState {
        let mut s = CommandState::default();
        let l = |env: &str| HashMap::from([("env".to_owned(), env.to_owned())]);
        s.apply_agent("prod-eu", &l("prod"));
        s.apply_agent("prod-us", &l("prod"));
        s.apply_agent("dev-ap", &l("dev"));
        s
    }

    fn selector(k: &str, v: &str) -> Target {
        Target::Selector(LabelSelector {
            match_labels: HashMap::from([(k.to_owned(), v.to_owned())]),
        })
    }

    #[test]
    fn a_selector_reaches_every_matching_cluster_but_revoked_ones() {
        let mut s = fleet();
        let r = request("c1", selector("env", "prod"));
        assert_eq!(
            s.decide(&r, now()),
            Decision::Dispatch(vec!["prod-eu".into(), "prod-us".into()])
        );
        s.apply_control("prod-us", &Body::ClusterRevoked(ClusterRevoked::default()));
        assert_eq!(
            s.decide(&r, now()),
            Decision::Dispatch(vec!["prod-eu".into()])
        );
        let none = request("c2", selector("env", "qa"));
        assert!(matches!(
            s.decide(&none, now()),
            Decision::Reject {
                reason: "no_match",
                ..
            }
        ));
    }

    #[test]
    fn unknown_revoked_and_late_requests_are_refused() {
        let mut s = fleet();
        s.apply_control("dev-ap", &Body::ClusterRevoked(ClusterRevoked::default()));
        let reason = |s: &CommandState, r: &CommandRequested, at| match s.decide(r, at) {
            Decision::Reject { reason, .. } => reason,
            Decision::Dispatch(_) => "dispatched",
        };
        let one = |c: &str| request("c", Target::ClusterId(c.into()));
        assert_eq!(reason(&s, &one("nowhere"), now()), "unknown_cluster");
        assert_eq!(reason(&s, &one("dev-ap"), now()), "cluster_revoked");
        assert_eq!(reason(&s, &one("prod-eu"), now()), "dispatched");
        assert_eq!(
            reason(&s, &one("prod-eu"), now() + chrono::Duration::seconds(61)),
            "deadline_passed"
        );
        let mut bad = one("prod-eu");
        bad.target = None;
        assert_eq!(reason(&s, &bad, now()), "invalid");
    }

    #[test]
    fn a_request_is_decided_once_even_when_replayed_or_repeated() {
        let mut s = fleet();
        let r = request("c1", Target::ClusterId("prod-eu".into()));
        s.apply_control("", &Body::CommandRequested(r.clone()));
        // Replayed: its dispatch is already on CONTROL.
        s.apply_control(
            "prod-eu",
            &Body::CommandDispatched(CommandDispatched {
                command_id: "c1".into(),
                ..Default::default()
            }),
        );
        s.apply_control("", &Body::CommandRequested(r));
        assert!(s.take_undecided().is_empty());
        assert!(s.decided("c1"));
        let fresh = request("c2", Target::ClusterId("prod-eu".into()));
        s.apply_control("", &Body::CommandRequested(fresh.clone()));
        s.apply_control("", &Body::CommandRequested(fresh));
        assert_eq!(s.take_undecided().len(), 1);
    }

    #[test]
    fn runs_not_ended_by_their_deadline_are_overdue_once() {
        let mut s = fleet();
        let r = request("c1", selector("env", "prod"));
        s.apply_control("", &Body::CommandRequested(r.clone()));
        let d = s.decide(&r, now());
        s.record("c1", &d);
        s.apply_result(
            "prod-eu",
            &Body::CommandAccepted(CommandAccepted {
                command_id: "c1".into(),
                ..Default::default()
            }),
        );
        let grace = chrono::Duration::seconds(1);
        assert!(s.overdue(now(), grace).is_empty());
        let late = now() + chrono::Duration::seconds(62);
        let overdue = s.overdue(late, grace);
        assert_eq!(overdue.len(), 2);
        assert_eq!(overdue[0].last_state, RunState::Accepted);
        assert_eq!(overdue[1].last_state, RunState::Dispatched);
        s.apply_result(
            "prod-eu",
            &Body::CommandSucceeded(CommandSucceeded {
                command_id: "c1".into(),
                ..Default::default()
            }),
        );
        assert_eq!(s.overdue(late, grace).len(), 1);
        s.end_run("c1", "prod-us");
        assert!(s.overdue(late, grace).is_empty());
        s.forget_finished();
        assert_eq!(s.tracked(), 0);
        assert!(s.decided("c1"));
    }
}
