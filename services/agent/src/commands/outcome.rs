//! How a command ended, with the one-line summary people read, and the liveness command.

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AuditResult, InventoryResult, LivenessChecked, LivenessResult, RemediationResult,
    command_params::Params, command_succeeded::Result as Detail, envelope::Body,
};

use super::Context;
use crate::adapters::publisher::{Published, publish_until_stored};
use crate::liveness;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        summary: String,
        result: Option<Detail>,
    },
    /// `reason` is machine-readable (see `CommandFailed`).
    Failed { reason: String, error: String },
}

impl Outcome {
    pub fn failed(reason: &str, error: &str) -> Self {
        Outcome::Failed {
            reason: reason.to_owned(),
            error: error.to_owned(),
        }
    }

    /// "audited 42 objects: 7 findings (1 exempted; critical 1, high 3)".
    pub fn audited(r: AuditResult) -> Self {
        let mut by: Vec<(&String, &u64)> =
            r.open_by_severity.iter().filter(|(_, n)| **n > 0).collect();
        by.sort_by_key(|(s, _)| severity_rank(s));
        let by = by
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut summary = format!(
            "audited {} objects: {} findings ({} exempted",
            r.objects_audited, r.findings, r.exempted
        );
        if !by.is_empty() {
            summary.push_str("; ");
            summary.push_str(&by);
        }
        summary.push(')');
        Outcome::Succeeded {
            summary,
            result: Some(Detail::Audit(r)),
        }
    }

    /// A remediation carried out: `action` says what was done.
    pub fn remediated(action: String) -> Self {
        Outcome::Succeeded {
            summary: action.clone(),
            result: Some(Detail::Remediation(RemediationResult { action })),
        }
    }

    pub fn inventoried(r: InventoryResult) -> Self {
        Outcome::Succeeded {
            summary: format!(
                "inventoried {} objects (snapshot {})",
                r.objects, r.snapshot_id
            ),
            result: Some(Detail::Inventory(r)),
        }
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    }
}

/// Probes the pool, stores `LivenessChecked` with every probe's result, and succeeds with the
/// count of live endpoints (a dead endpoint is a result, not a failure of the command).
pub async fn liveness(ctx: &Context, command_id: &str, params: Option<&Params>) -> Outcome {
    let Some(Params::CheckLiveness(pool)) = params else {
        return Outcome::failed("invalid", "a liveness check needs a LivenessPool");
    };
    if let Err(e) = liveness::validate(pool) {
        return Outcome::failed("invalid", &e);
    }
    let results = liveness::check(pool).await;
    let endpoints = u32::try_from(results.len()).unwrap_or(u32::MAX);
    let alive = u32::try_from(results.iter().filter(|r| r.alive).count()).unwrap_or(u32::MAX);
    let dead: Vec<String> = results
        .iter()
        .filter(|r| !r.alive)
        .map(|r| r.endpoint.clone())
        .take(5)
        .collect();
    let mut env = envelope::new(
        &ctx.cluster,
        "agent",
        Body::LivenessChecked(LivenessChecked {
            command_id: command_id.to_owned(),
            pool: pool.name.clone(),
            results,
        }),
    );
    env.correlation_id = command_id.to_owned();
    match publish_until_stored(&ctx.js, &env, &ctx.drain).await {
        Published::Stored => {}
        Published::Stopped => {
            return Outcome::failed("interrupted", "stopped before the results were stored");
        }
        Published::Invalid => return Outcome::failed("invalid", "the results do not validate"),
    }
    let mut summary = format!("{alive}/{endpoints} endpoints of {:?} alive", pool.name);
    if !dead.is_empty() {
        summary.push_str(&format!("; down: {}", dead.join(", ")));
    }
    Outcome::Succeeded {
        summary,
        result: Some(Detail::Liveness(LivenessResult {
            pool: pool.name.clone(),
            endpoints,
            alive,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_summary_starts_with_audited_and_lists_severities_in_order() {
        let r = AuditResult {
            audit_id: "a".into(),
            objects_audited: 42,
            findings: 7,
            exempted: 1,
            open_by_severity: [
                ("low".to_owned(), 3),
                ("critical".to_owned(), 1),
                ("high".to_owned(), 3),
                ("medium".to_owned(), 0),
            ]
            .into(),
        };
        let Outcome::Succeeded { summary, result } = Outcome::audited(r) else {
            panic!("an audit result is a success");
        };
        assert_eq!(
            summary,
            "audited 42 objects: 7 findings (1 exempted; critical 1, high 3, low 3)"
        );
        assert!(matches!(result, Some(Detail::Audit(_))));
    }
}
