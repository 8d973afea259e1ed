//! The audit area's translation between protobuf messages and rows or domain types.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use canopy_kit::proto::api::v1 as api;
use canopy_kit::proto::event::v1 as ev;

use super::{AuditRow, DerogationRow, FindingRow, PostureRead};
use crate::adapters::proto::timestamp;
use crate::domain::audit::{self as rules, AuditError, DerogationState, FindingState, PolicyInput};

pub fn datetime(field: &'static str, t: &Timestamp) -> Result<DateTime<Utc>, AuditError> {
    u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| AuditError::Invalid {
            field,
            reason: format!("{t:?} is not a valid timestamp"),
        })
}

pub fn severity_name(v: i32) -> Option<&'static str> {
    match ev::Severity::try_from(v).ok()? {
        ev::Severity::Critical => Some("critical"),
        ev::Severity::High => Some("high"),
        ev::Severity::Medium => Some("medium"),
        ev::Severity::Low => Some("low"),
        ev::Severity::Unspecified => None,
    }
}

pub fn severity_value(name: &str) -> ev::Severity {
    match name {
        "critical" => ev::Severity::Critical,
        "high" => ev::Severity::High,
        "medium" => ev::Severity::Medium,
        "low" => ev::Severity::Low,
        _ => ev::Severity::Unspecified,
    }
}

fn counts(m: &BTreeMap<String, u64>) -> HashMap<String, u64> {
    m.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

// === policy ===

pub fn policy_input(p: &ev::Policy) -> Result<PolicyInput, AuditError> {
    let mut overrides = BTreeMap::new();
    for (check, sev) in &p.severity_overrides {
        let name = severity_name(*sev).ok_or_else(|| AuditError::Invalid {
            field: "policy.severity_overrides",
            reason: format!("{check}: severity is unspecified"),
        })?;
        overrides.insert(check.clone(), name.to_owned());
    }
    Ok(PolicyInput {
        disabled_checks: p.disabled_checks.clone(),
        severity_overrides: overrides,
        registry_allow_list: p.registry_allow_list.clone(),
        honour_ignore_annotations: p.honour_ignore_annotations,
        level: p.level.clone(),
    })
}

pub fn policy_proto(p: &PolicyInput) -> ev::Policy {
    ev::Policy {
        disabled_checks: p.disabled_checks.clone(),
        severity_overrides: p
            .severity_overrides
            .iter()
            .map(|(k, v)| (k.clone(), severity_value(v) as i32))
            .collect(),
        registry_allow_list: p.registry_allow_list.clone(),
        honour_ignore_annotations: p.honour_ignore_annotations,
        level: p.level.clone(),
    }
}

// === findings ===

pub fn finding_state(v: i32) -> Result<FindingState, AuditError> {
    match api::FindingState::try_from(v) {
        Ok(api::FindingState::Open) => Ok(FindingState::Open),
        Ok(api::FindingState::Exempted) => Ok(FindingState::Exempted),
        Ok(api::FindingState::Resolved) => Ok(FindingState::Resolved),
        _ => Err(AuditError::Invalid {
            field: "states",
            reason: format!("{v} is not a finding state"),
        }),
    }
}

pub fn finding_view(r: FindingRow, now: DateTime<Utc>) -> api::FindingView {
    let state = match rules::read_state(&r.state, r.exempted_until, now) {
        FindingState::Open => api::FindingState::Open,
        FindingState::Exempted => api::FindingState::Exempted,
        FindingState::Resolved => api::FindingState::Resolved,
    };
    api::FindingView {
        cluster_id: r.cluster_id,
        fingerprint: r.fingerprint,
        check: r.check_id,
        severity: severity_value(&r.severity) as i32,
        standards: r.standards,
        resource: Some(ev::ObjectRef {
            api_version: r.api_version,
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
        }),
        container: r.container,
        path: r.path,
        message: r.message,
        remediation: r.remediation,
        application: r.application,
        state: state as i32,
        derogation_id: r.derogation_id,
        exempted_until: r.exempted_until.map(timestamp),
        first_seen_at: Some(timestamp(r.first_seen_at)),
        last_seen_at: Some(timestamp(r.last_seen_at)),
        resolved_at: r.resolved_at.map(timestamp),
        first_audit_id: r.first_audit_id,
        last_audit_id: r.last_audit_id,
    }
}

// === posture and audits ===

pub fn posture(scope: &'static str, p: PostureRead) -> api::Posture {
    api::Posture {
        scope: scope.to_owned(),
        objects_audited: p.objects,
        score: rules::score(p.objects, &p.counts.open),
        counts: Some(api::SeverityCounts {
            open: counts(&p.counts.open),
            exempted: counts(&p.counts.exempted),
        }),
        clusters: p.clusters,
        history: p
            .history
            .into_iter()
            .map(|h| api::PosturePoint {
                at: Some(timestamp(h.at)),
                objects_audited: h.objects,
                score: rules::score(h.objects, &h.counts.open),
                counts: Some(api::SeverityCounts {
                    open: counts(&h.counts.open),
                    exempted: counts(&h.counts.exempted),
                }),
            })
            .collect(),
    }
}

pub fn audit(r: AuditRow) -> api::Audit {
    let trigger = match r.trigger.as_str() {
        "interval" => ev::AuditTrigger::Interval,
        "command" => ev::AuditTrigger::Command,
        "policy" => ev::AuditTrigger::Policy,
        "watch" => ev::AuditTrigger::Watch,
        "startup" => ev::AuditTrigger::Startup,
        _ => ev::AuditTrigger::Unspecified,
    };
    let scope = match r.scope.as_str() {
        "full" => ev::AuditScope::Full,
        "incremental" => ev::AuditScope::Incremental,
        _ => ev::AuditScope::Unspecified,
    };
    let state = match r.state.as_str() {
        "running" => api::AuditState::Running,
        "completed" => api::AuditState::Completed,
        "incomplete" => api::AuditState::Incomplete,
        _ => api::AuditState::Unspecified,
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let u = |v: i32| u32::try_from(v).unwrap_or(0);
    let field = |o: &BTreeMap<String, String>, k: &str| o.get(k).cloned().unwrap_or_default();
    api::Audit {
        cluster_id: r.cluster_id,
        audit_id: r.audit_id,
        trigger: trigger as i32,
        scope: scope as i32,
        state: state as i32,
        policy_version: n(r.policy_version),
        command_id: r.command_id,
        started_at: r.started_at.map(timestamp),
        completed_at: r.completed_at.map(timestamp),
        duration_ms: u(r.duration_ms),
        chunks: u(r.chunks),
        chunks_received: u(r.chunks_received),
        objects_audited: n(r.objects_audited),
        findings: n(r.findings),
        exempted: n(r.exempted),
        open_by_severity: counts(&r.open_by_severity.0),
        kinds_skipped: r.kinds_skipped,
        objects: r
            .objects
            .0
            .iter()
            .map(|o| ev::ObjectRef {
                api_version: field(o, "api_version"),
                kind: field(o, "kind"),
                namespace: field(o, "namespace"),
                name: field(o, "name"),
            })
            .collect(),
    }
}

// === derogations ===

pub fn derogation_state(v: i32) -> Result<DerogationState, AuditError> {
    match api::DerogationState::try_from(v) {
        Ok(api::DerogationState::Active) => Ok(DerogationState::Active),
        Ok(api::DerogationState::Expired) => Ok(DerogationState::Expired),
        Ok(api::DerogationState::Revoked) => Ok(DerogationState::Revoked),
        _ => Err(AuditError::Invalid {
            field: "states",
            reason: format!("{v} is not a derogation state"),
        }),
    }
}

pub fn derogation_view(r: DerogationRow, now: DateTime<Utc>) -> api::DerogationView {
    let state = match rules::derogation_state(r.revoked_at.is_some(), r.expires_at, now) {
        DerogationState::Active => api::DerogationState::Active,
        DerogationState::Expired => api::DerogationState::Expired,
        DerogationState::Revoked => api::DerogationState::Revoked,
    };
    api::DerogationView {
        derogation: Some(ev::Derogation {
            derogation_id: r.derogation_id,
            check: r.check_id,
            scope: Some(ev::DerogationScope {
                cluster_labels: r.cluster_labels.0.into_iter().collect(),
                cluster_id: r.cluster_id,
                namespace: r.namespace,
                workload_kind: r.workload_kind,
                workload_name: r.workload_name,
                container: r.container,
            }),
            reason: r.reason,
            approver: r.approver,
            expires_at: r.expires_at.map(timestamp),
            granted_by: r.granted_by,
            granted_at: r.granted_at.map(timestamp),
        }),
        state: state as i32,
        revoked_at: r.revoked_at.map(timestamp),
        revoked_by: r.revoked_by,
        revoke_reason: r.revoke_reason,
    }
}
