//! Diagnosis rules: what a cluster's latest health report says is wrong, and whether its audit
//! and inventory are fresh, with evidence, a severity and the playbook that would heal it. Pure
//! functions of the report (`diagnose`) and of the cluster's audit and inventory facts
//! (`freshness`).

use std::collections::BTreeMap;

use canopy_kit::proto::event::v1::{
    CommandKind, CommandParams, CordonNodeParams, DeletePodParams, HealthReported,
    RefreshInventoryParams, RunAuditParams, ScaleWorkloadParams, Severity, WorkloadRef,
    command_params::Params,
};

/// A playbook: what the doctor can do about a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Playbook {
    RolloutRestart,
    DeletePod,
    CordonNode,
    Scale,
    RerunAudit,
    RefreshInventory,
}

impl Playbook {
    pub const ALL: [Playbook; 6] = [
        Self::RolloutRestart,
        Self::DeletePod,
        Self::CordonNode,
        Self::Scale,
        Self::RerunAudit,
        Self::RefreshInventory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RolloutRestart => "rollout-restart",
            Self::DeletePod => "delete-pod",
            Self::CordonNode => "cordon-node",
            Self::Scale => "scale",
            Self::RerunAudit => "rerun-audit",
            Self::RefreshInventory => "refresh-inventory",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The policy when none is configured: the playbooks that only read the cluster (an audit,
    /// an inventory) run by themselves, the others wait for an operator.
    pub fn default_policy(self) -> crate::domain::Policy {
        match self {
            Self::RerunAudit | Self::RefreshInventory => crate::domain::Policy::Auto,
            _ => crate::domain::Policy::Propose,
        }
    }

    pub fn command_kind(self) -> CommandKind {
        match self {
            Self::RolloutRestart => CommandKind::RolloutRestart,
            Self::DeletePod => CommandKind::DeletePod,
            Self::CordonNode => CommandKind::CordonNode,
            Self::Scale => CommandKind::ScaleWorkload,
            Self::RerunAudit => CommandKind::RunAudit,
            Self::RefreshInventory => CommandKind::RefreshInventory,
        }
    }
}

/// What a rule found, before it becomes a `DiagnosisRaised`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    /// What it is about, e.g. "Deployment shop/api"; (rule, subject) identifies a diagnosis.
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<String>,
    /// The playbook that would heal it and the command parameters it would run with.
    pub remedy: Option<(Playbook, CommandParams)>,
}

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy)]
pub struct RuleSettings {
    /// CPU usage over requests (percent) from which a workload is saturated.
    pub saturated_cpu_percent: u64,
    /// Replicas a scale remediation never goes above.
    pub scale_max_replicas: u32,
    /// Certificates expiring sooner than this many seconds are `high`.
    pub cert_urgent_seconds: i64,
    /// A cluster whose last full audit completed longer ago than this (ms) is `audit-stale`.
    pub audit_max_age_ms: i64,
    /// A cluster whose last complete inventory snapshot is older than this (ms) is
    /// `inventory-stale`.
    pub inventory_max_age_ms: i64,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            saturated_cpu_percent: 90,
            scale_max_replicas: 10,
            cert_urgent_seconds: 7 * 86_400,
            audit_max_age_ms: 3_600_000,
            inventory_max_age_ms: 1_800_000,
        }
    }
}

fn params(p: Params) -> CommandParams {
    CommandParams { params: Some(p) }
}

/// Every finding of `report` at `now_unix`, sorted by (rule, subject).
pub fn diagnose(report: &HealthReported, now_unix: i64, s: &RuleSettings) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in &report.nodes {
        if !n.ready {
            out.push(Finding {
                rule: "node-not-ready",
                subject: format!("Node {}", n.name),
                severity: Severity::High,
                summary: format!("node {} is not Ready", n.name),
                evidence: vec![format!(
                    "Ready=False{}",
                    if n.unschedulable {
                        ", already cordoned"
                    } else {
                        ""
                    }
                )],
                // A cordoned node takes no new pods already.
                remedy: (!n.unschedulable).then(|| {
                    (
                        Playbook::CordonNode,
                        params(Params::CordonNode(CordonNodeParams {
                            name: n.name.clone(),
                        })),
                    )
                }),
            });
        }
        let pressures: Vec<&str> = [
            (n.memory_pressure, "MemoryPressure"),
            (n.disk_pressure, "DiskPressure"),
            (n.pid_pressure, "PIDPressure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if !pressures.is_empty() {
            out.push(Finding {
                rule: "node-pressure",
                subject: format!("Node {}", n.name),
                severity: Severity::Medium,
                summary: format!("node {} is under {}", n.name, pressures.join(", ")),
                evidence: pressures.iter().map(|p| format!("{p}=True")).collect(),
                remedy: None,
            });
        }
    }

    // Crash loops grouped by the workload that owns the pods.
    let mut looping: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for p in &report.pods {
        let evidence = format!(
            "pod {}/{}: {} (container {}, {} restarts){}",
            p.namespace,
            p.name,
            p.reason,
            p.container,
            p.restarts,
            if p.message.is_empty() {
                String::new()
            } else {
                format!(": {}", p.message)
            }
        );
        let restartable = matches!(
            p.owner_kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        );
        match p.reason.as_str() {
            "CrashLoopBackOff" if restartable => looping
                .entry((
                    p.owner_kind.clone(),
                    p.namespace.clone(),
                    p.owner_name.clone(),
                ))
                .or_default()
                .push(evidence),
            "CrashLoopBackOff" => out.push(Finding {
                rule: "crash-looping-pod",
                subject: format!("Pod {}/{}", p.namespace, p.name),
                severity: Severity::Medium,
                summary: format!("pod {}/{} is crash-looping", p.namespace, p.name),
                evidence: vec![evidence],
                remedy: None,
            }),
            "Terminating" | "Unknown" => out.push(Finding {
                rule: "stuck-pod",
                subject: format!("Pod {}/{}", p.namespace, p.name),
                severity: Severity::Medium,
                summary: format!("pod {}/{} is stuck ({})", p.namespace, p.name, p.reason),
                evidence: vec![evidence],
                remedy: Some((
                    Playbook::DeletePod,
                    params(Params::DeletePod(DeletePodParams {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                    })),
                )),
            }),
            "Unschedulable" => out.push(Finding {
                rule: "unschedulable-pod",
                subject: format!("Pod {}/{}", p.namespace, p.name),
                severity: Severity::Medium,
                summary: format!("pod {}/{} cannot be scheduled", p.namespace, p.name),
                evidence: vec![evidence],
                remedy: None,
            }),
            _ => out.push(Finding {
                rule: "pod-failing",
                subject: format!("Pod {}/{}", p.namespace, p.name),
                severity: Severity::Medium,
                summary: format!("pod {}/{} cannot start: {}", p.namespace, p.name, p.reason),
                evidence: vec![evidence],
                remedy: None,
            }),
        }
    }
    for ((kind, ns, name), evidence) in &looping {
        out.push(Finding {
            rule: "crash-looping-workload",
            subject: format!("{kind} {ns}/{name}"),
            severity: Severity::High,
            summary: format!(
                "{kind} {ns}/{name} is crash-looping ({} pods)",
                evidence.len()
            ),
            evidence: evidence.clone(),
            remedy: Some((
                Playbook::RolloutRestart,
                params(Params::RolloutRestart(WorkloadRef {
                    kind: kind.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                })),
            )),
        });
    }

    for w in &report.workloads {
        let key = (w.kind.clone(), w.namespace.clone(), w.name.clone());
        if looping.contains_key(&key) {
            // Its crash loop is the diagnosis; the missing replicas are evidence of it.
            continue;
        }
        out.push(Finding {
            rule: "workload-unavailable",
            subject: format!("{} {}/{}", w.kind, w.namespace, w.name),
            severity: if w.available == 0 {
                Severity::High
            } else {
                Severity::Medium
            },
            summary: format!(
                "{} {}/{} has {} of {} replicas available",
                w.kind, w.namespace, w.name, w.available, w.desired
            ),
            evidence: vec![format!("desired {}, available {}", w.desired, w.available)],
            remedy: None,
        });
    }
    for c in &report.pvcs {
        out.push(Finding {
            rule: "pvc-pending",
            subject: format!("PersistentVolumeClaim {}/{}", c.namespace, c.name),
            severity: Severity::Medium,
            summary: format!("claim {}/{} is {}", c.namespace, c.name, c.phase),
            evidence: vec![format!("phase {}", c.phase)],
            remedy: None,
        });
    }
    for c in &report.certificates {
        let not_after = c.not_after.as_ref().map_or(0, |t| t.seconds);
        let left = not_after - now_unix;
        let (severity, when) = if left <= 0 {
            (Severity::Critical, "has expired".to_owned())
        } else if left < s.cert_urgent_seconds {
            (Severity::High, format!("expires in {}h", left / 3600))
        } else {
            (
                Severity::Medium,
                format!("expires in {} days", left / 86_400),
            )
        };
        out.push(Finding {
            rule: "certificate-expiring",
            subject: format!("Secret {}/{}", c.namespace, c.secret),
            severity,
            summary: format!("the certificate of {}/{} {when}", c.namespace, c.secret),
            evidence: vec![format!("subject {}, notAfter {}", c.subject, not_after)],
            remedy: None,
        });
    }
    for u in &report.usage {
        let Some(percent) = percent(u.cpu_usage_millis, u.cpu_request_millis) else {
            continue;
        };
        if percent < s.saturated_cpu_percent || u.kind == "DaemonSet" {
            continue;
        }
        let target = u.replicas.saturating_add(1).min(s.scale_max_replicas);
        out.push(Finding {
            rule: "workload-saturated",
            subject: format!("{} {}/{}", u.kind, u.namespace, u.name),
            severity: Severity::Low,
            summary: format!(
                "{} {}/{} uses {percent}% of its CPU requests",
                u.kind, u.namespace, u.name
            ),
            evidence: vec![format!(
                "cpu {}m of {}m requested over {} replicas",
                u.cpu_usage_millis, u.cpu_request_millis, u.replicas
            )],
            remedy: (target > u.replicas).then(|| {
                (
                    Playbook::Scale,
                    params(Params::ScaleWorkload(ScaleWorkloadParams {
                        workload: Some(WorkloadRef {
                            kind: u.kind.clone(),
                            namespace: u.namespace.clone(),
                            name: u.name.clone(),
                        }),
                        replicas: target,
                    })),
                )
            }),
        });
    }
    out.sort_by(|a, b| (a.rule, &a.subject).cmp(&(b.rule, &b.subject)));
    out
}

/// Rules of [`freshness`]: judged on every tick from the cluster's facts, not from its reports.
pub const FRESHNESS_RULES: [&str; 2] = [AUDIT_STALE, INVENTORY_STALE];
pub const AUDIT_STALE: &str = "audit-stale";
pub const INVENTORY_STALE: &str = "inventory-stale";

/// What the log says of a cluster's audits and inventory. Times in ms (event times).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// When the running agent started (its newest `AgentStarted`), else when the doctor first
    /// heard from it: the age of a cluster that never audited counts from there.
    pub since_ms: Option<i64>,
    /// The newest full `AuditCompleted`.
    pub last_audit_ms: Option<i64>,
    /// The newest failed `RunAudit` command: when, and why.
    pub audit_failed: Option<(i64, String)>,
    /// The newest complete `InventorySnapshot` (its last chunk).
    pub last_inventory_ms: Option<i64>,
    /// The newest failed `RefreshInventory` command.
    pub inventory_failed: Option<(i64, String)>,
}

fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// One freshness rule: failed since the last success, else stale past `max_age_ms`.
struct Fresh<'a> {
    rule: &'static str,
    what: &'static str,
    done: &'static str,
    last_ms: Option<i64>,
    failed: Option<&'a (i64, String)>,
    max_age_ms: i64,
    remedy: (Playbook, Params),
}

fn fresh(f: Fresh<'_>, since_ms: Option<i64>, now_ms: i64, cluster: &str) -> Option<Finding> {
    let last = match f.last_ms {
        Some(t) if since_ms.is_none_or(|s| t >= s) => {
            format!("last {} {} {} ago", f.what, f.done, age(now_ms - t))
        }
        Some(_) => format!("no {} {} since the agent started", f.what, f.done),
        None => format!("no {} {} since the agent started", f.what, f.done),
    };
    let (severity, summary, evidence) = match f.failed {
        Some((at, error)) if f.last_ms.is_none_or(|t| *at > t) => (
            Severity::Medium,
            format!("the last {} of {cluster} failed: {error}", f.what),
            vec![format!("failed {} ago: {error}", age(now_ms - at)), last],
        ),
        _ => {
            // An agent that (re)started audits and takes an inventory at once: count from then.
            let reference = f.last_ms.max(since_ms)?;
            let stale = now_ms - reference;
            if stale <= f.max_age_ms {
                return None;
            }
            (
                Severity::Low,
                format!(
                    "the {} of {cluster} is stale: none {} for {} (at most {})",
                    f.what,
                    f.done,
                    age(stale),
                    age(f.max_age_ms)
                ),
                vec![last],
            )
        }
    };
    Some(Finding {
        rule: f.rule,
        subject: format!("Cluster {cluster}"),
        severity,
        summary,
        evidence,
        remedy: Some((f.remedy.0, params(f.remedy.1))),
    })
}

/// Whether `cluster`'s audit and inventory are fresh at `now_ms`: `audit-stale` when its last
/// full audit is older than `audit_max_age_ms` or a `RunAudit` failed since (proposing
/// `rerun-audit`), `inventory-stale` likewise (proposing `refresh-inventory`). The caller only
/// asks while the cluster's heartbeats arrive. Sorted by rule.
pub fn freshness(cluster: &str, f: &Facts, now_ms: i64, s: &RuleSettings) -> Vec<Finding> {
    [
        Fresh {
            rule: AUDIT_STALE,
            what: "audit",
            done: "completed",
            last_ms: f.last_audit_ms,
            failed: f.audit_failed.as_ref(),
            max_age_ms: s.audit_max_age_ms,
            remedy: (Playbook::RerunAudit, Params::RunAudit(RunAuditParams {})),
        },
        Fresh {
            rule: INVENTORY_STALE,
            what: "inventory",
            done: "taken",
            last_ms: f.last_inventory_ms,
            failed: f.inventory_failed.as_ref(),
            max_age_ms: s.inventory_max_age_ms,
            remedy: (
                Playbook::RefreshInventory,
                Params::RefreshInventory(RefreshInventoryParams {}),
            ),
        },
    ]
    .into_iter()
    .filter_map(|r| fresh(r, f.since_ms, now_ms, cluster))
    .collect()
}

/// `used` as a percentage of `of`; `None` when nothing is requested.
pub fn percent(used: u64, of: u64) -> Option<u64> {
    (of > 0).then(|| used.saturating_mul(100) / of)
}

#[cfg(test)]
mod tests {
    use canopy_kit::proto::event::v1::{
        CertificateExpiry, NodeHealth, PodProblem, PvcProblem, WorkloadProblem, WorkloadUsage,
    };

    use super::*;

    fn sick() -> HealthReported {
        HealthReported {
            nodes: vec![
                NodeHealth {
                    name: "w1".into(),
                    ready: true,
                    ..Default::default()
                },
                NodeHealth {
                    name: "w3".into(),
                    ready: false,
                    memory_pressure: true,
                    ..Default::default()
                },
            ],
            pods: vec![
                PodProblem {
                    namespace: "shop".into(),
                    name: "api-1".into(),
                    owner_kind: "Deployment".into(),
                    owner_name: "api".into(),
                    reason: "CrashLoopBackOff".into(),
                    container: "api".into(),
                    restarts: 14,
                    ..Default::default()
                },
                PodProblem {
                    namespace: "shop".into(),
                    name: "api-2".into(),
                    owner_kind: "Deployment".into(),
                    owner_name: "api".into(),
                    reason: "CrashLoopBackOff".into(),
                    container: "api".into(),
                    restarts: 9,
                    ..Default::default()
                },
                PodProblem {
                    namespace: "shop".into(),
                    name: "big".into(),
                    reason: "Unschedulable".into(),
                    ..Default::default()
                },
                PodProblem {
                    namespace: "shop".into(),
                    name: "old".into(),
                    reason: "Terminating".into(),
                    ..Default::default()
                },
            ],
            workloads: vec![
                WorkloadProblem {
                    kind: "Deployment".into(),
                    namespace: "shop".into(),
                    name: "api".into(),
                    desired: 2,
                    available: 0,
                },
                WorkloadProblem {
                    kind: "StatefulSet".into(),
                    namespace: "db".into(),
                    name: "pg".into(),
                    desired: 3,
                    available: 2,
                },
            ],
            pvcs: vec![PvcProblem {
                namespace: "shop".into(),
                name: "data".into(),
                phase: "Pending".into(),
            }],
            certificates: vec![CertificateExpiry {
                namespace: "shop".into(),
                secret: "tls".into(),
                not_after: Some(prost_types::Timestamp {
                    seconds: 900,
                    nanos: 0,
                }),
                subject: "CN=x".into(),
            }],
            metrics_available: true,
            usage: vec![
                WorkloadUsage {
                    kind: "Deployment".into(),
                    namespace: "shop".into(),
                    name: "web".into(),
                    replicas: 2,
                    cpu_usage_millis: 480,
                    cpu_request_millis: 500,
                    ..Default::default()
                },
                WorkloadUsage {
                    kind: "Deployment".into(),
                    namespace: "shop".into(),
                    name: "idle".into(),
                    replicas: 2,
                    cpu_usage_millis: 10,
                    cpu_request_millis: 500,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn a_sick_report_gives_one_finding_per_problem() {
        let found = diagnose(&sick(), 1_000, &RuleSettings::default());
        let ids: Vec<(&str, &str)> = found.iter().map(|f| (f.rule, f.subject.as_str())).collect();
        assert_eq!(
            ids,
            [
                ("certificate-expiring", "Secret shop/tls"),
                ("crash-looping-workload", "Deployment shop/api"),
                ("node-not-ready", "Node w3"),
                ("node-pressure", "Node w3"),
                ("pvc-pending", "PersistentVolumeClaim shop/data"),
                ("stuck-pod", "Pod shop/old"),
                ("unschedulable-pod", "Pod shop/big"),
                ("workload-saturated", "Deployment shop/web"),
                ("workload-unavailable", "StatefulSet db/pg"),
            ]
        );
        let crash = &found[1];
        assert_eq!(crash.severity, Severity::High);
        assert_eq!(crash.evidence.len(), 2);
        assert!(matches!(crash.remedy, Some((Playbook::RolloutRestart, _))));
        assert_eq!(found[0].severity, Severity::Critical, "expired before now");
        let Some((Playbook::Scale, p)) = &found[7].remedy else {
            panic!("no scale remedy")
        };
        let Some(Params::ScaleWorkload(scale)) = &p.params else {
            panic!("not a scale")
        };
        assert_eq!(scale.replicas, 3);
    }

    const M: i64 = 60_000;

    fn ages() -> RuleSettings {
        RuleSettings {
            audit_max_age_ms: 60 * M,
            inventory_max_age_ms: 30 * M,
            ..RuleSettings::default()
        }
    }

    fn rules_of(found: &[Finding]) -> Vec<&str> {
        found.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn fresh_audits_and_inventories_give_nothing() {
        let facts = Facts {
            since_ms: Some(0),
            last_audit_ms: Some(100 * M),
            last_inventory_ms: Some(140 * M),
            ..Facts::default()
        };
        assert!(freshness("a", &facts, 150 * M, &ages()).is_empty());
        // A failure before the last success is over.
        let healed = Facts {
            audit_failed: Some((90 * M, "boom".into())),
            inventory_failed: Some((130 * M, "boom".into())),
            ..facts
        };
        assert!(freshness("a", &healed, 150 * M, &ages()).is_empty());
    }

    #[test]
    fn stale_audits_and_inventories_propose_their_playbook() {
        let facts = Facts {
            since_ms: Some(0),
            last_audit_ms: Some(10 * M),
            last_inventory_ms: Some(10 * M),
            ..Facts::default()
        };
        // 35 min: only the inventory (30 min) is stale.
        let found = freshness("prod-eu", &facts, 45 * M, &ages());
        assert_eq!(rules_of(&found), [INVENTORY_STALE]);
        let inv = &found[0];
        assert_eq!(inv.subject, "Cluster prod-eu");
        assert_eq!(inv.severity, Severity::Low);
        assert_eq!(
            inv.summary,
            "the inventory of prod-eu is stale: none taken for 35m (at most 30m)"
        );
        assert_eq!(inv.evidence, ["last inventory taken 35m ago"]);
        assert!(matches!(
            &inv.remedy,
            Some((
                Playbook::RefreshInventory,
                CommandParams {
                    params: Some(Params::RefreshInventory(_))
                }
            ))
        ));
        // 61 min: both.
        let found = freshness("prod-eu", &facts, 71 * M, &ages());
        assert_eq!(rules_of(&found), [AUDIT_STALE, INVENTORY_STALE]);
        assert!(matches!(
            &found[0].remedy,
            Some((
                Playbook::RerunAudit,
                CommandParams {
                    params: Some(Params::RunAudit(_))
                }
            ))
        ));
        assert!(
            found[0].summary.contains("none completed for 61m"),
            "{}",
            found[0].summary
        );
    }

    #[test]
    fn age_counts_from_the_agent_start_when_that_is_newer() {
        // Never audited: from the start; an old audit before a restart: from the restart too.
        for last_audit_ms in [None, Some(0)] {
            let facts = Facts {
                since_ms: Some(100 * M),
                last_audit_ms,
                last_inventory_ms: Some(155 * M),
                ..Facts::default()
            };
            assert!(freshness("a", &facts, 159 * M, &ages()).is_empty());
            let found = freshness("a", &facts, 161 * M, &ages());
            assert_eq!(rules_of(&found), [AUDIT_STALE]);
            assert_eq!(
                found[0].evidence,
                ["no audit completed since the agent started"]
            );
        }
        // Nothing known at all: no evidence, no diagnosis.
        assert!(freshness("a", &Facts::default(), 1_000 * M, &ages()).is_empty());
    }

    #[test]
    fn a_failure_since_the_last_success_is_diagnosed_at_once() {
        let facts = Facts {
            since_ms: Some(0),
            last_audit_ms: Some(10 * M),
            audit_failed: Some((12 * M, "failed to list pods (kubernetes)".into())),
            last_inventory_ms: Some(10 * M),
            inventory_failed: Some((13 * M, "forbidden (kubernetes)".into())),
        };
        let found = freshness("a", &facts, 14 * M, &ages());
        assert_eq!(rules_of(&found), [AUDIT_STALE, INVENTORY_STALE]);
        assert_eq!(found[0].severity, Severity::Medium);
        assert_eq!(
            found[0].summary,
            "the last audit of a failed: failed to list pods (kubernetes)"
        );
        assert_eq!(
            found[0].evidence,
            [
                "failed 2m ago: failed to list pods (kubernetes)",
                "last audit completed 4m ago"
            ]
        );
        assert!(matches!(
            found[1].remedy,
            Some((Playbook::RefreshInventory, _))
        ));
    }

    #[test]
    fn a_healthy_report_gives_nothing_and_bounds_hold() {
        let healthy = HealthReported {
            nodes: vec![NodeHealth {
                name: "w1".into(),
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(diagnose(&healthy, 0, &RuleSettings::default()).is_empty());
        let cordoned = HealthReported {
            nodes: vec![NodeHealth {
                name: "w1".into(),
                ready: false,
                unschedulable: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(
            diagnose(&cordoned, 0, &RuleSettings::default())[0]
                .remedy
                .is_none()
        );
        let at_max = HealthReported {
            usage: vec![WorkloadUsage {
                kind: "Deployment".into(),
                name: "w".into(),
                replicas: 10,
                cpu_usage_millis: 100,
                cpu_request_millis: 100,
                ..Default::default()
            }],
            ..Default::default()
        };
        let f = diagnose(&at_max, 0, &RuleSettings::default());
        assert_eq!(f.len(), 1);
        assert!(f[0].remedy.is_none(), "never above the configured maximum");
    }
}
