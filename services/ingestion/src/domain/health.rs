//! Projection rules of fleet health: the doctor's decisions (CONTROL) and the sizing
//! recommendation of each workload from its usage against requests and limits (FLEET_EVENTS).

use chrono::{DateTime, Utc};

use canopy_kit::proto::event::v1::{
    ClusterHealth, CommandParams, CommandRequested, DiagnosisCleared, DiagnosisRaised,
    HealthChanged, RemediationApproved, RemediationProposed, RemediationRejected,
    RemediationSuppressed, Severity, WorkloadUsage, command_params::Params,
};

/// Health events, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthOp {
    Changed {
        seq: u64,
        cluster_id: String,
        at: DateTime<Utc>,
        changed: HealthChanged,
    },
    Raised {
        seq: u64,
        cluster_id: String,
        at: DateTime<Utc>,
        raised: DiagnosisRaised,
    },
    Cleared {
        seq: u64,
        at: DateTime<Utc>,
        cleared: DiagnosisCleared,
    },
    Proposed {
        seq: u64,
        cluster_id: String,
        at: DateTime<Utc>,
        proposed: RemediationProposed,
    },
    Approved {
        seq: u64,
        at: DateTime<Utc>,
        approved: RemediationApproved,
    },
    Rejected {
        seq: u64,
        at: DateTime<Utc>,
        rejected: RemediationRejected,
    },
    Suppressed {
        seq: u64,
        cluster_id: String,
        at: DateTime<Utc>,
        suppressed: RemediationSuppressed,
    },
    Requested {
        seq: u64,
        at: DateTime<Utc>,
        requested: CommandRequested,
    },
    /// A cluster's usage per workload (only reports with metrics).
    Usage {
        cluster_id: String,
        at: DateTime<Utc>,
        usage: Vec<WorkloadUsage>,
    },
}

pub fn health_name(h: i32) -> &'static str {
    match ClusterHealth::try_from(h).unwrap_or(ClusterHealth::Unspecified) {
        ClusterHealth::Unspecified => "unknown",
        ClusterHealth::Healthy => "healthy",
        ClusterHealth::Degraded => "degraded",
        ClusterHealth::Unreachable => "unreachable",
        ClusterHealth::LinkDown => "link-down",
    }
}

pub fn severity_name(s: i32) -> &'static str {
    match Severity::try_from(s).unwrap_or(Severity::Unspecified) {
        Severity::Unspecified => "unspecified",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// What a remediation acts on, for people: "Deployment shop/api", "Node worker-3".
pub fn target_of(params: Option<&CommandParams>) -> String {
    match params.and_then(|p| p.params.as_ref()) {
        Some(Params::RolloutRestart(w)) => format!("{} {}/{}", w.kind, w.namespace, w.name),
        Some(Params::DeletePod(p)) => format!("Pod {}/{}", p.namespace, p.name),
        Some(Params::CordonNode(n)) => format!("Node {}", n.name),
        Some(Params::ScaleWorkload(s)) => s.workload.as_ref().map_or_else(String::new, |w| {
            format!(
                "{} {}/{} to {} replicas",
                w.kind, w.namespace, w.name, s.replicas
            )
        }),
        Some(Params::RunAudit(_)) => "audit".to_owned(),
        Some(Params::RefreshInventory(_)) => "inventory".to_owned(),
        Some(Params::CheckLiveness(p)) => format!("pool {}", p.name),
        None => String::new(),
    }
}

/// Utilisation a recommendation aims at (percent of the request).
const TARGET_PERCENT: u64 = 70;
/// Above this share of requests a workload needs more; below `LOW` it holds too much.
const HIGH_PERCENT: u64 = 90;
const LOW_PERCENT: u64 = 30;

/// The sizing advice for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: u32,
    /// Per replica.
    pub cpu_request_millis: u64,
    pub memory_request_bytes: u64,
    pub text: String,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    if b == 0 { 0 } else { a.div_ceil(b) }
}

/// Requests per replica sized for [`TARGET_PERCENT`] utilisation, replicas to keep the current
/// requests at it, and one line saying what to change (or that the sizing is right).
pub fn recommend(u: &WorkloadUsage) -> Recommendation {
    let replicas = u64::from(u.replicas.max(1));
    let per_cpu = ceil_div(u.cpu_usage_millis, replicas);
    let per_mem = ceil_div(u.memory_usage_bytes, replicas);
    // Round CPU to 10m and memory to 16 MiB, never below them.
    let cpu = (ceil_div(per_cpu * 100, TARGET_PERCENT).div_ceil(10) * 10).max(10);
    let mib16 = 16 * 1_048_576;
    let mem = (ceil_div(per_mem * 100, TARGET_PERCENT).div_ceil(mib16) * mib16).max(mib16);
    let req_cpu_per = ceil_div(u.cpu_request_millis, replicas);
    let target_replicas = if req_cpu_per > 0 {
        ceil_div(u.cpu_usage_millis * 100, req_cpu_per * TARGET_PERCENT).max(1)
    } else {
        replicas
    };
    let pct = |used: u64, of: u64| (of > 0).then(|| used * 100 / of);
    let mut advice = Vec::new();
    match pct(u.cpu_usage_millis, u.cpu_request_millis) {
        None => advice.push(format!("set a CPU request (~{cpu}m per replica)")),
        Some(p) if p >= HIGH_PERCENT => advice.push(format!(
            "CPU at {p}% of requests: scale to {target_replicas} replicas or raise the request to {cpu}m"
        )),
        Some(p) if p < LOW_PERCENT => {
            advice.push(format!("CPU at {p}% of requests: lower the request to {cpu}m"));
        }
        Some(_) => {}
    }
    match pct(u.memory_usage_bytes, u.memory_request_bytes) {
        None => advice.push(format!(
            "set a memory request (~{}Mi per replica)",
            mem / 1_048_576
        )),
        Some(p) if p >= HIGH_PERCENT => advice.push(format!(
            "memory at {p}% of requests: raise the request to {}Mi",
            mem / 1_048_576
        )),
        Some(p) if p < LOW_PERCENT => advice.push(format!(
            "memory at {p}% of requests: lower the request to {}Mi",
            mem / 1_048_576
        )),
        Some(_) => {}
    }
    if let Some(p) = pct(u.memory_usage_bytes, u.memory_limit_bytes).filter(|p| *p >= HIGH_PERCENT)
    {
        advice.push(format!("memory at {p}% of its limit: OOM kills are near"));
    }
    Recommendation {
        replicas: u32::try_from(target_replicas).unwrap_or(u32::MAX),
        cpu_request_millis: cpu,
        memory_request_bytes: mem,
        text: if advice.is_empty() {
            "sized right".to_owned()
        } else {
            advice.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: u64, cpu_req: u64, mem: u64, mem_req: u64) -> WorkloadUsage {
        WorkloadUsage {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            replicas: 2,
            cpu_usage_millis: cpu,
            cpu_request_millis: cpu_req,
            memory_usage_bytes: mem,
            memory_request_bytes: mem_req,
            ..Default::default()
        }
    }

    const MI: u64 = 1_048_576;

    #[test]
    fn hot_workloads_scale_out_idle_ones_shrink_right_ones_stay() {
        let hot = recommend(&usage(483, 500, 238 * MI, 256 * MI));
        assert_eq!(hot.replicas, 3);
        assert_eq!(hot.cpu_request_millis, 350);
        assert!(
            hot.text
                .starts_with("CPU at 96% of requests: scale to 3 replicas"),
            "{}",
            hot.text
        );
        assert!(hot.text.contains("memory at 92%"), "{}", hot.text);
        let idle = recommend(&usage(20, 1000, 30 * MI, 512 * MI));
        assert_eq!(idle.cpu_request_millis, 20);
        assert!(
            idle.text.contains("lower the request to 20m"),
            "{}",
            idle.text
        );
        let right = recommend(&usage(300, 500, 150 * MI, 256 * MI));
        assert_eq!(right.text, "sized right");
        assert_eq!(right.replicas, 2);
    }

    #[test]
    fn missing_requests_are_named() {
        let r = recommend(&usage(100, 0, 64 * MI, 0));
        assert!(r.text.contains("set a CPU request"), "{}", r.text);
        assert!(r.text.contains("set a memory request"), "{}", r.text);
    }
}
