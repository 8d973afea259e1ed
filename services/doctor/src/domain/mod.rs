//! The doctor's pure core: fleet health state per cluster (healthy / degraded / unreachable /
//! link-down, with hysteresis), open diagnoses, and remediations under policy, rate and
//! blast-radius limits. Built by folding events (`apply`) and advanced by `tick(now)`, which
//! returns the events to publish. Every id it hands out is derived from the log, so a doctor
//! rebuilt from the log decides exactly what the previous one would have, and never twice.

pub mod rules;

use std::collections::{BTreeMap, HashSet};

use canopy_kit::proto::event::v1::{
    AuditScope, ClusterHealth, CommandKind, CommandParams, CommandRequested, CommandTarget,
    DiagnosisCleared, DiagnosisRaised, HealthChanged, HealthReported, RemediationApproved,
    RemediationProposed, RemediationRejected, RemediationSuppressed, Severity,
    command_params::Params, command_target::Target, envelope::Body,
};
use uuid::Uuid;

use rules::{FRESHNESS_RULES, Facts, Finding, Playbook, RuleSettings};

/// What the doctor may do with a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Off,
    /// An operator approves each proposal through the api.
    Propose,
    /// The doctor approves its own proposals at once.
    Auto,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "propose" => Some(Self::Propose),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// How the doctor judges and acts. Durations in milliseconds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Heartbeat intervals without a heartbeat after which a cluster is unreachable.
    pub missed_heartbeats: u32,
    /// How long a recovered signal must hold before an unreachable or link-down cluster is
    /// judged healthy or degraded again.
    pub recovery_hold_ms: i64,
    /// How long after its last sighting a finding must stay absent before its diagnosis clears.
    pub clear_hold_ms: i64,
    pub rules: RuleSettings,
    pub policies: BTreeMap<Playbook, Policy>,
    /// Remediations (approved, or proposed and pending) per cluster per rolling hour.
    pub max_actions_per_hour: u32,
    /// Percent of a cluster's nodes that may be cordoned at most (counting pending cordons).
    pub max_cordoned_percent: u32,
    /// Deadline of a remediation command, counted from its request.
    pub command_deadline_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        let policies = Playbook::ALL
            .into_iter()
            .map(|p| (p, p.default_policy()))
            .collect();
        Self {
            missed_heartbeats: 3,
            recovery_hold_ms: 20_000,
            clear_hold_ms: 0,
            rules: RuleSettings::default(),
            policies,
            max_actions_per_hour: 3,
            max_cordoned_percent: 34,
            command_deadline_ms: 600_000,
        }
    }
}

/// An event the doctor decided; `event_id` is derived from the log (stable across restarts).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The cluster the event is about (`None`: a control event about no single cluster).
    pub cluster: Option<String>,
    pub event_id: String,
    pub body: Body,
}

/// A diagnosis that holds.
#[derive(Debug, Clone)]
pub struct OpenDiagnosis {
    pub id: String,
    pub rule: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub raised_ms: i64,
    /// Report time of the last report that still showed it.
    pub last_seen_ms: i64,
    /// From the latest report that showed it (not in the log: re-learnt from the next report).
    pub remedy: Option<(Playbook, CommandParams)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemediationState {
    Proposed,
    Approved,
    Rejected,
    /// The command is requested: done as far as the doctor is concerned.
    Requested,
}

#[derive(Debug, Clone)]
pub struct Remediation {
    pub id: String,
    pub cluster: String,
    pub diagnosis_id: String,
    pub playbook: String,
    pub kind: i32,
    pub params: Option<CommandParams>,
    pub state: RemediationState,
    pub proposed_ms: i64,
    pub approved_ms: Option<i64>,
}

/// What the doctor knows of one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub last_heartbeat_ms: Option<i64>,
    pub interval_seconds: u32,
    pub link_down: bool,
    pub link_changed_ms: i64,
    /// The newest report, by report time.
    pub report: Option<(i64, HealthReported)>,
    /// The newest `AgentStarted`.
    pub started_ms: Option<i64>,
    /// The oldest heartbeat this doctor folded (after a restart: the newest of the log).
    pub first_heartbeat_ms: Option<i64>,
    /// Audits and inventory as the log tells them (`since_ms` is derived, see `facts`).
    pub freshness: Facts,
    /// Report time of the report last diagnosed.
    diagnosed_ms: Option<i64>,
    pub health: i32,
    pub health_reason: String,
    transitions: u64,
    /// A different state seen since (hysteresis).
    pending: Option<(i32, i64)>,
    /// Open diagnoses by (rule, subject).
    pub diagnoses: BTreeMap<(String, String), OpenDiagnosis>,
    /// Raises so far per (rule, subject): numbers the next diagnosis id.
    raised: BTreeMap<(String, String), u64>,
}

/// The fleet as the doctor sees it.
#[derive(Debug, Default)]
pub struct Fleet {
    pub settings: Settings,
    pub clusters: BTreeMap<String, ClusterState>,
    pub remediations: BTreeMap<String, Remediation>,
    /// Diagnoses that got a proposal or a suppression (each gets one).
    handled: HashSet<String>,
    /// Where each open diagnosis lives: id -> (cluster, rule, subject).
    diagnosis_keys: BTreeMap<String, (String, String, String)>,
    /// Ids of events decided here and not yet seen back from the stream.
    own: HashSet<String>,
}

fn uuid_for(name: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy-doctor:{name}").as_bytes(),
    )
    .to_string()
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn health_name(h: i32) -> &'static str {
    match ClusterHealth::try_from(h).unwrap_or(ClusterHealth::Unspecified) {
        ClusterHealth::Unspecified => "unknown",
        ClusterHealth::Healthy => "healthy",
        ClusterHealth::Degraded => "degraded",
        ClusterHealth::Unreachable => "unreachable",
        ClusterHealth::LinkDown => "link-down",
    }
}

impl Fleet {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Default::default()
        }
    }

    pub fn cluster(&self, id: &str) -> Option<&ClusterState> {
        self.clusters.get(id)
    }

    /// Folds one event of the log (or one the doctor just decided, when `event_id` is in
    /// `own`: then it is applied already and skipped).
    pub fn apply(&mut self, cluster: &str, at_ms: i64, event_id: &str, body: &Body) {
        if self.own.remove(event_id) {
            return;
        }
        self.evolve(cluster, at_ms, body);
    }

    fn evolve(&mut self, cluster: &str, at_ms: i64, body: &Body) {
        match body {
            Body::Heartbeat(hb) => {
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                c.last_heartbeat_ms = Some(c.last_heartbeat_ms.map_or(at_ms, |t| t.max(at_ms)));
                c.first_heartbeat_ms = Some(c.first_heartbeat_ms.map_or(at_ms, |t| t.min(at_ms)));
                if hb.heartbeat_interval_seconds > 0 {
                    c.interval_seconds = hb.heartbeat_interval_seconds;
                }
            }
            Body::AgentStarted(s) => {
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                c.last_heartbeat_ms = Some(c.last_heartbeat_ms.map_or(at_ms, |t| t.max(at_ms)));
                c.started_ms = Some(c.started_ms.map_or(at_ms, |t| t.max(at_ms)));
                if s.heartbeat_interval_seconds > 0 {
                    c.interval_seconds = s.heartbeat_interval_seconds;
                }
            }
            Body::HealthReported(r) => {
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                if c.report.as_ref().is_none_or(|(t, _)| *t <= at_ms) {
                    c.report = Some((at_ms, r.clone()));
                }
            }
            // Folded in any order (two consumers read them): the newest of each wins.
            Body::AuditCompleted(a) if a.scope == AuditScope::Full as i32 => {
                let f = &mut self
                    .clusters
                    .entry(cluster.to_owned())
                    .or_default()
                    .freshness;
                f.last_audit_ms = Some(f.last_audit_ms.map_or(at_ms, |t| t.max(at_ms)));
            }
            Body::InventorySnapshot(s) if s.last_chunk => {
                let f = &mut self
                    .clusters
                    .entry(cluster.to_owned())
                    .or_default()
                    .freshness;
                f.last_inventory_ms = Some(f.last_inventory_ms.map_or(at_ms, |t| t.max(at_ms)));
            }
            Body::CommandFailed(cf)
                if cf.kind == CommandKind::RunAudit as i32
                    || cf.kind == CommandKind::RefreshInventory as i32 =>
            {
                let f = &mut self
                    .clusters
                    .entry(cluster.to_owned())
                    .or_default()
                    .freshness;
                let slot = if cf.kind == CommandKind::RunAudit as i32 {
                    &mut f.audit_failed
                } else {
                    &mut f.inventory_failed
                };
                if slot.as_ref().is_none_or(|(t, _)| *t <= at_ms) {
                    *slot = Some((at_ms, format!("{} ({})", cf.error, cf.reason)));
                }
            }
            Body::LinkLost(_) | Body::LinkEstablished(_) => {
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                if at_ms >= c.link_changed_ms {
                    c.link_down = matches!(body, Body::LinkLost(_));
                    c.link_changed_ms = at_ms;
                }
            }
            Body::HealthChanged(h) => {
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                c.health = h.current;
                c.health_reason.clone_from(&h.reason);
                c.transitions += 1;
                c.pending = None;
            }
            Body::DiagnosisRaised(d) => {
                let key = (d.rule.clone(), d.subject.clone());
                let c = self.clusters.entry(cluster.to_owned()).or_default();
                *c.raised.entry(key.clone()).or_default() += 1;
                c.diagnoses.insert(
                    key,
                    OpenDiagnosis {
                        id: d.diagnosis_id.clone(),
                        rule: d.rule.clone(),
                        subject: d.subject.clone(),
                        severity: Severity::try_from(d.severity).unwrap_or(Severity::Unspecified),
                        summary: d.summary.clone(),
                        raised_ms: at_ms,
                        last_seen_ms: at_ms,
                        remedy: None,
                    },
                );
                self.diagnosis_keys.insert(
                    d.diagnosis_id.clone(),
                    (cluster.to_owned(), d.rule.clone(), d.subject.clone()),
                );
            }
            Body::DiagnosisCleared(d) => {
                if let Some((cl, rule, subject)) = self.diagnosis_keys.remove(&d.diagnosis_id)
                    && let Some(c) = self.clusters.get_mut(&cl)
                {
                    c.diagnoses.remove(&(rule, subject));
                }
            }
            Body::RemediationProposed(p) => {
                self.handled.insert(p.diagnosis_id.clone());
                self.remediations
                    .entry(p.remediation_id.clone())
                    .or_insert_with(|| Remediation {
                        id: p.remediation_id.clone(),
                        cluster: cluster.to_owned(),
                        diagnosis_id: p.diagnosis_id.clone(),
                        playbook: p.playbook.clone(),
                        kind: p.kind,
                        params: p.params.clone(),
                        state: RemediationState::Proposed,
                        proposed_ms: at_ms,
                        approved_ms: None,
                    });
            }
            Body::RemediationApproved(a) => {
                if let Some(r) = self.remediations.get_mut(&a.remediation_id)
                    && r.state == RemediationState::Proposed
                {
                    r.state = RemediationState::Approved;
                    r.approved_ms = Some(at_ms);
                }
            }
            Body::RemediationRejected(rj) => {
                if let Some(r) = self.remediations.get_mut(&rj.remediation_id)
                    && r.state == RemediationState::Proposed
                {
                    r.state = RemediationState::Rejected;
                }
            }
            Body::RemediationSuppressed(s) => {
                self.handled.insert(s.diagnosis_id.clone());
            }
            Body::CommandRequested(cmd) if !cmd.remediation_id.is_empty() => {
                if let Some(r) = self.remediations.get_mut(&cmd.remediation_id) {
                    r.state = RemediationState::Requested;
                    r.approved_ms.get_or_insert(at_ms);
                }
            }
            _ => {}
        }
    }

    /// Records and applies a decision; the caller publishes it.
    fn decide(
        &mut self,
        out: &mut Vec<Decision>,
        cluster: &str,
        at_ms: i64,
        event: &str,
        body: Body,
    ) {
        let event_id = uuid_for(event);
        self.evolve(cluster, at_ms, &body);
        self.own.insert(event_id.clone());
        let about = if matches!(body, Body::CommandRequested(_)) {
            None
        } else {
            Some(cluster.to_owned())
        };
        out.push(Decision {
            cluster: about,
            event_id,
            body,
        });
    }

    /// Advances the fleet to `now_ms`: diagnoses from new reports, health transitions,
    /// remediations. Returns the events to publish, in order.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Decision> {
        let mut out = Vec::new();
        let ids: Vec<String> = self.clusters.keys().cloned().collect();
        for id in &ids {
            self.diagnose(id, now_ms, &mut out);
            self.check_freshness(id, now_ms, &mut out);
            self.judge(id, now_ms, &mut out);
        }
        for id in &ids {
            self.remediate(id, now_ms, &mut out);
        }
        self.follow_up(now_ms, &mut out);
        out
    }

    /// The state the evidence shows now, before hysteresis, with the reason.
    pub fn evidence(&self, c: &ClusterState, now_ms: i64) -> Option<(ClusterHealth, String)> {
        if c.link_down {
            return Some((
                ClusterHealth::LinkDown,
                "the link to the cluster's leaf is down (gateway)".to_owned(),
            ));
        }
        let last = c.last_heartbeat_ms?;
        let interval_ms = i64::from(c.interval_seconds.max(1)) * 1000;
        let silence = now_ms - last;
        if silence > i64::from(self.settings.missed_heartbeats) * interval_ms {
            return Some((
                ClusterHealth::Unreachable,
                format!(
                    "no heartbeat for {}s ({} intervals of {}s) while the link is up",
                    silence / 1000,
                    silence / interval_ms,
                    interval_ms / 1000
                ),
            ));
        }
        if c.diagnoses.is_empty() {
            return Some((ClusterHealth::Healthy, "no open diagnosis".to_owned()));
        }
        let mut open: Vec<&OpenDiagnosis> = c.diagnoses.values().collect();
        open.sort_by_key(|d| std::cmp::Reverse(d.severity));
        let shown: Vec<&str> = open.iter().take(3).map(|d| d.summary.as_str()).collect();
        let more = open.len().saturating_sub(3);
        Some((
            ClusterHealth::Degraded,
            format!(
                "{}{}",
                shown.join("; "),
                if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                }
            ),
        ))
    }

    fn judge(&mut self, id: &str, now_ms: i64, out: &mut Vec<Decision>) {
        let Some(c) = self.clusters.get(id) else {
            return;
        };
        let Some((raw, reason)) = self.evidence(c, now_ms) else {
            return;
        };
        let raw = raw as i32;
        let current = c.health;
        if raw == current {
            if let Some(c) = self.clusters.get_mut(id) {
                c.pending = None;
            }
            return;
        }
        let from_outage = current == ClusterHealth::Unreachable as i32
            || current == ClusterHealth::LinkDown as i32;
        let hold = if from_outage
            && (raw == ClusterHealth::Healthy as i32 || raw == ClusterHealth::Degraded as i32)
        {
            self.settings.recovery_hold_ms
        } else {
            0
        };
        let since = match c.pending {
            Some((state, since)) if state == raw => since,
            _ => now_ms,
        };
        if now_ms - since < hold {
            if let Some(c) = self.clusters.get_mut(id) {
                c.pending = Some((raw, since));
            }
            return;
        }
        let n = c.transitions + 1;
        self.decide(
            out,
            id,
            now_ms,
            &format!("health:{id}:{n}"),
            Body::HealthChanged(HealthChanged {
                previous: current,
                current: raw,
                reason,
            }),
        );
    }

    fn diagnose(&mut self, id: &str, now_ms: i64, out: &mut Vec<Decision>) {
        let Some(c) = self.clusters.get(id) else {
            return;
        };
        // No fresh evidence from an unreachable cluster: its diagnoses stay as they were.
        if c.link_down || c.health == ClusterHealth::Unreachable as i32 {
            return;
        }
        let Some((report_ms, report)) = &c.report else {
            return;
        };
        let report_ms = *report_ms;
        if c.diagnosed_ms == Some(report_ms) {
            return;
        }
        let findings = rules::diagnose(report, now_ms / 1000, &self.settings.rules);
        let mut present = HashSet::new();
        let mut raise = Vec::new();
        for f in findings {
            let key = (f.rule.to_owned(), f.subject.clone());
            present.insert(key.clone());
            if let Some(open) = self
                .clusters
                .get_mut(id)
                .and_then(|c| c.diagnoses.get_mut(&key))
            {
                open.last_seen_ms = open.last_seen_ms.max(report_ms);
                open.remedy = f.remedy.clone();
            } else {
                raise.push(f);
            }
        }
        let clear: Vec<OpenDiagnosis> = self.clusters.get(id).map_or_else(Vec::new, |c| {
            c.diagnoses
                .iter()
                .filter(|(k, d)| {
                    !present.contains(*k)
                        && !FRESHNESS_RULES.contains(&d.rule.as_str())
                        && report_ms - d.last_seen_ms >= self.settings.clear_hold_ms
                })
                .map(|(_, d)| d.clone())
                .collect()
        });
        if let Some(c) = self.clusters.get_mut(id) {
            c.diagnosed_ms = Some(report_ms);
        }
        for f in raise {
            self.raise(id, now_ms, f, out);
        }
        for d in clear {
            self.decide(
                out,
                id,
                now_ms,
                &format!("cleared:{}", d.id),
                Body::DiagnosisCleared(DiagnosisCleared {
                    diagnosis_id: d.id.clone(),
                    rule: d.rule.clone(),
                    reason: "the latest health report no longer shows it".to_owned(),
                }),
            );
        }
    }

    /// The heartbeats arrive (at most `missed_heartbeats` intervals of silence, link up).
    fn alive(&self, c: &ClusterState, now_ms: i64) -> bool {
        let interval_ms = i64::from(c.interval_seconds.max(1)) * 1000;
        !c.link_down
            && c.health != ClusterHealth::Unreachable as i32
            && c.last_heartbeat_ms.is_some_and(|t| {
                now_ms - t <= i64::from(self.settings.missed_heartbeats) * interval_ms
            })
    }

    /// Raises and clears the freshness diagnoses (`rules::freshness`) of a cluster whose
    /// heartbeats arrive; a silent cluster's stay as they were.
    fn check_freshness(&mut self, id: &str, now_ms: i64, out: &mut Vec<Decision>) {
        let Some(c) = self.clusters.get(id) else {
            return;
        };
        if !self.alive(c, now_ms) {
            return;
        }
        let facts = Facts {
            since_ms: c.started_ms.or(c.first_heartbeat_ms),
            ..c.freshness.clone()
        };
        let findings = rules::freshness(id, &facts, now_ms, &self.settings.rules);
        let mut raise = Vec::new();
        let mut present = HashSet::new();
        for f in findings {
            let key = (f.rule.to_owned(), f.subject.clone());
            present.insert(key.clone());
            match self
                .clusters
                .get_mut(id)
                .and_then(|c| c.diagnoses.get_mut(&key))
            {
                Some(open) => {
                    open.last_seen_ms = now_ms;
                    // Not in the log: re-learnt here after a restart.
                    open.remedy = f.remedy;
                }
                None => raise.push(f),
            }
        }
        let clear: Vec<OpenDiagnosis> = self.clusters.get(id).map_or_else(Vec::new, |c| {
            c.diagnoses
                .iter()
                // Only on evidence (an audit or snapshot completed after the raise): a doctor
                // rebuilt from the log may know less of the past, never less of what since.
                .filter(|(k, d)| {
                    let done = if d.rule == rules::AUDIT_STALE {
                        facts.last_audit_ms
                    } else {
                        facts.last_inventory_ms
                    };
                    FRESHNESS_RULES.contains(&d.rule.as_str())
                        && !present.contains(*k)
                        && done.is_some_and(|t| t >= d.raised_ms)
                })
                .map(|(_, d)| d.clone())
                .collect()
        });
        for f in raise {
            self.raise(id, now_ms, f, out);
        }
        for d in clear {
            let reason = if d.rule == rules::AUDIT_STALE {
                "a full audit completed since"
            } else {
                "a complete inventory snapshot was taken since"
            };
            self.decide(
                out,
                id,
                now_ms,
                &format!("cleared:{}", d.id),
                Body::DiagnosisCleared(DiagnosisCleared {
                    diagnosis_id: d.id.clone(),
                    rule: d.rule.clone(),
                    reason: reason.to_owned(),
                }),
            );
        }
    }

    fn raise(&mut self, id: &str, now_ms: i64, f: Finding, out: &mut Vec<Decision>) {
        let key = (f.rule.to_owned(), f.subject.clone());
        let n = self
            .clusters
            .get(id)
            .and_then(|c| c.raised.get(&key))
            .copied()
            .unwrap_or(0)
            + 1;
        let diagnosis_id = uuid_for(&format!("diagnosis:{id}:{}:{}:{n}", f.rule, f.subject));
        self.decide(
            out,
            id,
            now_ms,
            &format!("raised:{diagnosis_id}"),
            Body::DiagnosisRaised(DiagnosisRaised {
                diagnosis_id,
                rule: f.rule.to_owned(),
                severity: f.severity as i32,
                summary: f.summary.clone(),
                evidence: f.evidence.clone(),
                subject: f.subject.clone(),
                suggested_playbook: f
                    .remedy
                    .as_ref()
                    .map(|(p, _)| p.name().to_owned())
                    .unwrap_or_default(),
            }),
        );
        if let Some(open) = self
            .clusters
            .get_mut(id)
            .and_then(|c| c.diagnoses.get_mut(&key))
        {
            open.remedy = f.remedy;
        }
    }

    /// Actions counted against the rate limit at `now_ms`: approved (or requested) within the
    /// last hour, and proposals still waiting for a decision.
    pub fn actions_in_last_hour(&self, cluster: &str, now_ms: i64) -> u32 {
        let n = self
            .remediations
            .values()
            .filter(|r| r.cluster == cluster)
            .filter(|r| match r.state {
                RemediationState::Proposed => true,
                RemediationState::Approved | RemediationState::Requested => {
                    r.approved_ms.is_some_and(|t| now_ms - t < 3_600_000)
                }
                RemediationState::Rejected => false,
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Nodes cordoned (per the latest report) or about to be (cordons proposed or approved and
    /// not yet visible), and the node count.
    fn cordoned(&self, cluster: &str) -> (usize, usize) {
        let Some((_, report)) = self.clusters.get(cluster).and_then(|c| c.report.as_ref()) else {
            return (0, 0);
        };
        let mut cordoned: HashSet<&str> = report
            .nodes
            .iter()
            .filter(|n| n.unschedulable)
            .map(|n| n.name.as_str())
            .collect();
        for r in self.remediations.values() {
            if r.cluster == cluster
                && r.state != RemediationState::Rejected
                && let Some(CommandParams {
                    params: Some(Params::CordonNode(p)),
                }) = &r.params
            {
                cordoned.insert(p.name.as_str());
            }
        }
        (cordoned.len(), report.nodes.len())
    }

    fn remediate(&mut self, id: &str, now_ms: i64, out: &mut Vec<Decision>) {
        let Some(c) = self.clusters.get(id) else {
            return;
        };
        if c.link_down || c.health == ClusterHealth::Unreachable as i32 {
            return;
        }
        let candidates: Vec<OpenDiagnosis> = c
            .diagnoses
            .values()
            .filter(|d| d.remedy.is_some() && !self.handled.contains(&d.id))
            .cloned()
            .collect();
        for d in candidates {
            let Some((playbook, params)) = d.remedy.clone() else {
                continue;
            };
            let policy = self
                .settings
                .policies
                .get(&playbook)
                .copied()
                .unwrap_or(Policy::Off);
            if policy == Policy::Off {
                continue;
            }
            let limit = self.settings.max_actions_per_hour;
            let mut refusal = None;
            let actions = self.actions_in_last_hour(id, now_ms);
            if actions >= limit {
                refusal = Some(format!(
                    "rate limit: {actions} remediations in the last hour on this cluster (at most {limit})"
                ));
            } else if playbook == Playbook::CordonNode {
                let (cordoned, nodes) = self.cordoned(id);
                let allowed = nodes * self.settings.max_cordoned_percent as usize / 100;
                if cordoned + 1 > allowed {
                    refusal = Some(format!(
                        "blast radius: {cordoned} of {nodes} nodes cordoned or being cordoned; at most {}% ({allowed})",
                        self.settings.max_cordoned_percent
                    ));
                }
            }
            if let Some(reason) = refusal {
                self.decide(
                    out,
                    id,
                    now_ms,
                    &format!("suppressed:{}", d.id),
                    Body::RemediationSuppressed(RemediationSuppressed {
                        diagnosis_id: d.id.clone(),
                        playbook: playbook.name().to_owned(),
                        reason,
                    }),
                );
                continue;
            }
            let remediation_id = uuid_for(&format!("remediation:{}", d.id));
            let auto = policy == Policy::Auto;
            self.decide(
                out,
                id,
                now_ms,
                &format!("proposed:{remediation_id}"),
                Body::RemediationProposed(RemediationProposed {
                    remediation_id: remediation_id.clone(),
                    diagnosis_id: d.id.clone(),
                    playbook: playbook.name().to_owned(),
                    kind: playbook.command_kind() as i32,
                    params: Some(params),
                    reason: d.summary.clone(),
                    auto,
                }),
            );
            if auto {
                self.decide(
                    out,
                    id,
                    now_ms,
                    &format!("approved:{remediation_id}"),
                    Body::RemediationApproved(RemediationApproved {
                        remediation_id,
                        approved_by: "doctor".to_owned(),
                    }),
                );
            }
        }
    }

    /// Approved remediations become commands; proposals whose diagnosis cleared are withdrawn.
    fn follow_up(&mut self, now_ms: i64, out: &mut Vec<Decision>) {
        let pending: Vec<Remediation> = self
            .remediations
            .values()
            .filter(|r| {
                matches!(
                    r.state,
                    RemediationState::Approved | RemediationState::Proposed
                )
            })
            .cloned()
            .collect();
        for r in pending {
            if r.state == RemediationState::Proposed {
                if !self.diagnosis_keys.contains_key(&r.diagnosis_id) {
                    self.decide(
                        out,
                        &r.cluster,
                        now_ms,
                        &format!("withdrawn:{}", r.id),
                        Body::RemediationRejected(RemediationRejected {
                            remediation_id: r.id.clone(),
                            rejected_by: "doctor".to_owned(),
                            reason: "the diagnosis cleared before approval".to_owned(),
                        }),
                    );
                }
                continue;
            }
            let command_id = uuid_for(&format!("command:{}", r.id));
            self.decide(
                out,
                &r.cluster,
                now_ms,
                &format!("command:{}", r.id),
                Body::CommandRequested(CommandRequested {
                    command_id,
                    kind: r.kind,
                    target: Some(CommandTarget {
                        target: Some(Target::ClusterId(r.cluster.clone())),
                    }),
                    params: r.params.clone(),
                    deadline: Some(ts(now_ms + self.settings.command_deadline_ms)),
                    idempotency_key: format!("remediation:{}", r.id),
                    requested_by: "doctor".to_owned(),
                    remediation_id: r.id.clone(),
                    ..Default::default()
                }),
            );
        }
    }

    /// Clusters per health state (for metrics and the benchmark).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for c in self.clusters.values() {
            *m.entry(health_name(c.health)).or_default() += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests;
