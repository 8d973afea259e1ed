//! `canopyctl health`, `diagnoses list`, `remediations list|approve|reject` and
//! `recommendations list`: the doctor's view of the fleet.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use canopy_proto::api::v1::{
    ApproveRemediationRequest, ClusterHealthView, Diagnosis, GetFleetHealthRequest,
    ListDiagnosesRequest, ListRecommendationsRequest, ListRemediationsRequest,
    RejectRemediationRequest, Remediation, health_service_client::HealthServiceClient,
};
use canopy_proto::event::v1::{ClusterHealth, Severity};

use super::Context;
use crate::cli::OutputFormat;
use crate::error::CliError;
use crate::output::{self, Align};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Only this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DiagnosesCommand {
    /// Open diagnoses (with --all, cleared ones too), newest first.
    List(ListDiagnosesArgs),
}

#[derive(Debug, Args)]
pub struct ListDiagnosesArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    /// Cleared diagnoses too.
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum RemediationsCommand {
    /// Remediations, newest first, and proposals the limits suppressed.
    List(ListRemediationsArgs),
    /// Approve a proposed remediation: the doctor then has cnc carry it out.
    Approve(DecideArgs),
    /// Reject a proposed remediation.
    Reject(RejectArgs),
}

#[derive(Debug, Args)]
pub struct ListRemediationsArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    /// proposed, approved, rejected, requested, running, succeeded, failed or timed-out.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The remediation id (from `remediations list`).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    pub id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum RecommendationsCommand {
    /// Usage against requests per workload, with what to change.
    List(ListRecommendationsArgs),
}

#[derive(Debug, Args)]
pub struct ListRecommendationsArgs {
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> Value {
    time(t).map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

fn ago(t: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    time(t).map_or_else(|| "-".to_owned(), |t| output::age(t, now))
}

pub fn state_name(s: i32) -> &'static str {
    match ClusterHealth::try_from(s).unwrap_or(ClusterHealth::Unspecified) {
        ClusterHealth::Unspecified => "unknown",
        ClusterHealth::Healthy => "healthy",
        ClusterHealth::Degraded => "degraded",
        ClusterHealth::Unreachable => "unreachable",
        ClusterHealth::LinkDown => "link-down",
    }
}

fn severity_name(s: i32) -> &'static str {
    match Severity::try_from(s).unwrap_or(Severity::Unspecified) {
        Severity::Unspecified => "-",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn diagnosis_json(d: &Diagnosis) -> Value {
    json!({
        "id": d.diagnosis_id, "cluster": d.cluster_id, "rule": d.rule,
        "severity": severity_name(d.severity), "summary": d.summary, "evidence": d.evidence,
        "subject": d.subject, "suggested_playbook": d.suggested_playbook,
        "raised_at": rfc3339(d.raised_at.as_ref()), "cleared_at": rfc3339(d.cleared_at.as_ref()),
        "clear_reason": d.clear_reason,
    })
}

fn remediation_json(r: &Remediation) -> Value {
    json!({
        "id": r.remediation_id, "cluster": r.cluster_id, "diagnosis_id": r.diagnosis_id,
        "playbook": r.playbook, "kind": r.kind, "target": r.target, "reason": r.reason,
        "auto": r.auto, "state": r.state, "proposed_at": rfc3339(r.proposed_at.as_ref()),
        "decided_by": r.decided_by, "decided_at": rfc3339(r.decided_at.as_ref()),
        "decision_reason": r.decision_reason, "command_id": r.command_id,
        "requested_at": rfc3339(r.requested_at.as_ref()), "result": r.result,
        "finished_at": rfc3339(r.finished_at.as_ref()),
    })
}

/// `canopyctl health` as a table: one line per cluster, then why each sick one is sick.
pub fn health_table(clusters: &[ClusterHealthView], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                c.cluster_id.clone(),
                state_name(c.state).to_owned(),
                ago(c.since.as_ref(), now),
                c.diagnoses.len().to_string(),
                dash(&c.reason),
            ]
        })
        .collect();
    let mut out = output::table(
        &[
            ("CLUSTER", Align::Left),
            ("HEALTH", Align::Left),
            ("SINCE", Align::Left),
            ("DIAGNOSES", Align::Right),
            ("WHY", Align::Left),
        ],
        &rows,
    );
    for c in clusters.iter().filter(|c| !c.diagnoses.is_empty()) {
        out.push_str(&format!("\n{} ({}):\n", c.cluster_id, state_name(c.state)));
        for d in &c.diagnoses {
            let fix = if d.suggested_playbook.is_empty() {
                String::new()
            } else {
                format!("  [fix: {}]", d.suggested_playbook)
            };
            out.push_str(&format!(
                "  {:<8} {}{fix}\n",
                severity_name(d.severity),
                d.summary
            ));
            for e in d.evidence.iter().take(3) {
                out.push_str(&format!("           - {e}\n"));
            }
        }
    }
    out
}

pub async fn health(ctx: &Context, args: HealthArgs) -> Result<(), CliError> {
    let mut client = HealthServiceClient::new(ctx.unary_channel().await?);
    let fleet = client
        .get_fleet_health(GetFleetHealthRequest {
            cluster_id: args.cluster.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let text = match ctx.output {
        OutputFormat::Table if fleet.clusters.is_empty() => {
            "no cluster judged yet (is the doctor running?)\n".to_owned()
        }
        OutputFormat::Table => health_table(&fleet.clusters, Utc::now()),
        OutputFormat::Json => output::json(
            &json!({
                "clusters": fleet.clusters.iter().map(|c| json!({
                    "cluster": c.cluster_id, "health": state_name(c.state),
                    "previous": state_name(c.previous), "reason": c.reason,
                    "since": rfc3339(c.since.as_ref()),
                    "diagnoses": c.diagnoses.iter().map(diagnosis_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "counts": fleet.counts,
            }),
            true,
        ),
    };
    output::emit(&text)?;
    Ok(())
}

pub async fn diagnoses(ctx: &Context, cmd: DiagnosesCommand) -> Result<(), CliError> {
    let mut client = HealthServiceClient::new(ctx.unary_channel().await?);
    let DiagnosesCommand::List(args) = cmd;
    let list = client
        .list_diagnoses(ListDiagnosesRequest {
            cluster_id: args.cluster.unwrap_or_default(),
            include_cleared: args.all,
            limit: args.limit,
        })
        .await?
        .into_inner()
        .diagnoses;
    let now = Utc::now();
    let text = match ctx.output {
        OutputFormat::Table => output::table(
            &[
                ("CLUSTER", Align::Left),
                ("SEVERITY", Align::Left),
                ("RULE", Align::Left),
                ("SUBJECT", Align::Left),
                ("RAISED", Align::Left),
                ("CLEARED", Align::Left),
                ("FIX", Align::Left),
                ("SUMMARY", Align::Left),
            ],
            &list
                .iter()
                .map(|d| {
                    vec![
                        d.cluster_id.clone(),
                        severity_name(d.severity).to_owned(),
                        d.rule.clone(),
                        d.subject.clone(),
                        ago(d.raised_at.as_ref(), now),
                        ago(d.cleared_at.as_ref(), now),
                        dash(&d.suggested_playbook),
                        d.summary.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Json => output::json(
            &json!({"diagnoses": list.iter().map(diagnosis_json).collect::<Vec<_>>()}),
            true,
        ),
    };
    output::emit(&text)?;
    Ok(())
}

pub async fn remediations(ctx: &Context, cmd: RemediationsCommand) -> Result<(), CliError> {
    let mut client = HealthServiceClient::new(ctx.unary_channel().await?);
    let now = Utc::now();
    let one = |r: Remediation| -> String {
        match ctx.output {
            OutputFormat::Table => format!(
                "remediation {} ({} {} on {}): {}{}{}\n",
                r.remediation_id,
                r.playbook,
                r.target,
                r.cluster_id,
                r.state,
                if r.decided_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", r.decided_by)
                },
                if r.result.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.result)
                }
            ),
            OutputFormat::Json => output::json(&remediation_json(&r), true),
        }
    };
    let text = match cmd {
        RemediationsCommand::Approve(args) => one(client
            .approve_remediation(ApproveRemediationRequest {
                remediation_id: args.id,
            })
            .await?
            .into_inner()),
        RemediationsCommand::Reject(args) => one(client
            .reject_remediation(RejectRemediationRequest {
                remediation_id: args.id,
                reason: args.reason,
            })
            .await?
            .into_inner()),
        RemediationsCommand::List(args) => {
            let list = client
                .list_remediations(ListRemediationsRequest {
                    cluster_id: args.cluster.unwrap_or_default(),
                    state: args.state.unwrap_or_default(),
                    limit: args.limit,
                })
                .await?
                .into_inner();
            match ctx.output {
                OutputFormat::Table => {
                    let mut out = output::table(
                        &[
                            ("ID", Align::Left),
                            ("CLUSTER", Align::Left),
                            ("PLAYBOOK", Align::Left),
                            ("TARGET", Align::Left),
                            ("STATE", Align::Left),
                            ("MODE", Align::Left),
                            ("PROPOSED", Align::Left),
                            ("BY", Align::Left),
                            ("RESULT", Align::Left),
                        ],
                        &list
                            .remediations
                            .iter()
                            .map(|r| {
                                vec![
                                    r.remediation_id.clone(),
                                    r.cluster_id.clone(),
                                    r.playbook.clone(),
                                    r.target.clone(),
                                    r.state.clone(),
                                    if r.auto { "auto" } else { "propose" }.to_owned(),
                                    ago(r.proposed_at.as_ref(), now),
                                    dash(&r.decided_by),
                                    dash(&r.result),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                    if !list.suppressed.is_empty() {
                        out.push_str("\nsuppressed by the limits:\n");
                        for s in &list.suppressed {
                            out.push_str(&format!(
                                "  {} {} ({}): {}\n",
                                s.cluster_id,
                                s.playbook,
                                ago(s.at.as_ref(), now),
                                s.reason
                            ));
                        }
                    }
                    out
                }
                OutputFormat::Json => output::json(
                    &json!({
                        "remediations": list.remediations.iter().map(remediation_json).collect::<Vec<_>>(),
                        "suppressed": list.suppressed.iter().map(|s| json!({
                            "cluster": s.cluster_id, "diagnosis_id": s.diagnosis_id,
                            "playbook": s.playbook, "reason": s.reason, "at": rfc3339(s.at.as_ref()),
                        })).collect::<Vec<_>>(),
                    }),
                    true,
                ),
            }
        }
    };
    output::emit(&text)?;
    Ok(())
}

pub async fn recommendations(ctx: &Context, cmd: RecommendationsCommand) -> Result<(), CliError> {
    let mut client = HealthServiceClient::new(ctx.unary_channel().await?);
    let RecommendationsCommand::List(args) = cmd;
    let list = client
        .list_recommendations(ListRecommendationsRequest {
            cluster_id: args.cluster.unwrap_or_default(),
            namespace: args.namespace.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .recommendations;
    let mi = |b: u64| format!("{}Mi", b / 1_048_576);
    let text = match ctx.output {
        OutputFormat::Table => output::table(
            &[
                ("CLUSTER", Align::Left),
                ("WORKLOAD", Align::Left),
                ("REPLICAS", Align::Right),
                ("CPU USED/REQ", Align::Right),
                ("MEM USED/REQ", Align::Right),
                ("ADVICE", Align::Left),
            ],
            &list
                .iter()
                .map(|r| {
                    vec![
                        r.cluster_id.clone(),
                        format!("{} {}/{}", r.kind, r.namespace, r.name),
                        format!("{} (→{})", r.replicas, r.recommended_replicas),
                        format!("{}m/{}m", r.cpu_usage_millis, r.cpu_request_millis),
                        format!(
                            "{}/{}",
                            mi(r.memory_usage_bytes),
                            mi(r.memory_request_bytes)
                        ),
                        r.recommendation.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Json => output::json(
            &json!({"recommendations": list.iter().map(|r| json!({
                "cluster": r.cluster_id, "kind": r.kind, "namespace": r.namespace, "name": r.name,
                "replicas": r.replicas, "recommended_replicas": r.recommended_replicas,
                "cpu_usage_millis": r.cpu_usage_millis, "cpu_request_millis": r.cpu_request_millis,
                "cpu_limit_millis": r.cpu_limit_millis,
                "memory_usage_bytes": r.memory_usage_bytes, "memory_request_bytes": r.memory_request_bytes,
                "memory_limit_bytes": r.memory_limit_bytes,
                "recommended_cpu_request_millis": r.recommended_cpu_request_millis,
                "recommended_memory_request_bytes": r.recommended_memory_request_bytes,
                "recommendation": r.recommendation, "reported_at": rfc3339(r.reported_at.as_ref()),
            })).collect::<Vec<_>>()}),
            true,
        ),
    };
    output::emit(&text)?;
    Ok(())
}
