//! `canopyctl audits list|get`.

use std::collections::BTreeMap;

use serde::Serialize;

use canopy_proto::api::v1::{
    Audit, AuditState, GetAuditRequest, ListAuditsRequest,
    findings_service_client::FindingsServiceClient,
};
use canopy_proto::event::v1::{AuditScope, AuditTrigger};

use super::Context;
use crate::cli::{AuditsCommand, OutputFormat};
use crate::error::CliError;
use crate::output::{self, Align, rfc3339};

fn trigger(v: i32) -> &'static str {
    match AuditTrigger::try_from(v).unwrap_or(AuditTrigger::Unspecified) {
        AuditTrigger::Interval => "interval",
        AuditTrigger::Command => "command",
        AuditTrigger::Policy => "policy",
        AuditTrigger::Watch => "watch",
        AuditTrigger::Startup => "startup",
        AuditTrigger::Unspecified => "-",
    }
}

fn scope(v: i32) -> &'static str {
    match AuditScope::try_from(v).unwrap_or(AuditScope::Unspecified) {
        AuditScope::Full => "full",
        AuditScope::Incremental => "incremental",
        AuditScope::Unspecified => "-",
    }
}

fn state(v: i32) -> &'static str {
    match AuditState::try_from(v).unwrap_or(AuditState::Unspecified) {
        AuditState::Running => "running",
        AuditState::Completed => "completed",
        AuditState::Incomplete => "incomplete",
        AuditState::Unspecified => "-",
    }
}

#[derive(Debug, Serialize)]
struct AuditJson {
    cluster_id: String,
    audit_id: String,
    trigger: &'static str,
    scope: &'static str,
    state: &'static str,
    policy_version: u64,
    command_id: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_ms: u32,
    chunks: u32,
    chunks_received: u32,
    objects_audited: u64,
    findings: u64,
    exempted: u64,
    open_by_severity: BTreeMap<String, u64>,
    kinds_skipped: Vec<String>,
    objects: Vec<String>,
}

fn object_name(o: &canopy_proto::event::v1::ObjectRef) -> String {
    if o.namespace.is_empty() {
        format!("{} {}", o.kind, o.name)
    } else {
        format!("{} {}/{}", o.kind, o.namespace, o.name)
    }
}

fn to_json(a: &Audit) -> AuditJson {
    AuditJson {
        cluster_id: a.cluster_id.clone(),
        audit_id: a.audit_id.clone(),
        trigger: trigger(a.trigger),
        scope: scope(a.scope),
        state: state(a.state),
        policy_version: a.policy_version,
        command_id: a.command_id.clone(),
        started_at: rfc3339(a.started_at.as_ref()),
        completed_at: rfc3339(a.completed_at.as_ref()),
        duration_ms: a.duration_ms,
        chunks: a.chunks,
        chunks_received: a.chunks_received,
        objects_audited: a.objects_audited,
        findings: a.findings,
        exempted: a.exempted,
        open_by_severity: a.open_by_severity.clone().into_iter().collect(),
        kinds_skipped: a.kinds_skipped.clone(),
        objects: a.objects.iter().map(object_name).collect(),
    }
}

fn open_text(a: &Audit) -> String {
    ["critical", "high", "medium", "low"]
        .iter()
        .map(|s| a.open_by_severity.get(*s).copied().unwrap_or(0).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub async fn run(ctx: &Context, cmd: AuditsCommand) -> Result<(), CliError> {
    let mut client = FindingsServiceClient::new(ctx.unary_channel().await?);
    match cmd {
        AuditsCommand::List(args) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            while all.len() < args.limit {
                let page = client
                    .list_audits(ListAuditsRequest {
                        cluster_id: args.cluster.clone().unwrap_or_default(),
                        page_size: u32::try_from((args.limit - all.len()).min(1000))
                            .unwrap_or(1000),
                        page_token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.audits);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let text = match ctx.output {
                OutputFormat::Json => {
                    let list: Vec<AuditJson> = all.iter().map(to_json).collect();
                    output::json(&serde_json::json!({ "audits": list }), true)
                }
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|a| {
                            vec![
                                a.cluster_id.clone(),
                                a.audit_id.clone(),
                                trigger(a.trigger).to_owned(),
                                scope(a.scope).to_owned(),
                                state(a.state).to_owned(),
                                rfc3339(a.started_at.as_ref()).unwrap_or_else(|| "-".into()),
                                a.objects_audited.to_string(),
                                a.findings.to_string(),
                                a.exempted.to_string(),
                                open_text(a),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            ("CLUSTER", Align::Left),
                            ("AUDIT", Align::Left),
                            ("TRIGGER", Align::Left),
                            ("SCOPE", Align::Left),
                            ("STATE", Align::Left),
                            ("STARTED", Align::Left),
                            ("OBJECTS", Align::Right),
                            ("FINDINGS", Align::Right),
                            ("EXEMPTED", Align::Right),
                            ("OPEN C/H/M/L", Align::Left),
                        ],
                        &rows,
                    )
                }
            };
            output::emit(&text)?;
        }
        AuditsCommand::Get(args) => {
            let a = client
                .get_audit(GetAuditRequest {
                    cluster_id: args.cluster,
                    audit_id: args.audit_id,
                })
                .await?
                .into_inner();
            let text = match ctx.output {
                OutputFormat::Json => output::json(&to_json(&a), true),
                OutputFormat::Table => {
                    let mut pairs = vec![
                        ("Cluster", a.cluster_id.clone()),
                        ("Audit", a.audit_id.clone()),
                        ("Trigger", trigger(a.trigger).to_owned()),
                        ("Scope", scope(a.scope).to_owned()),
                        ("State", state(a.state).to_owned()),
                        ("Policy version", a.policy_version.to_string()),
                        (
                            "Started",
                            rfc3339(a.started_at.as_ref()).unwrap_or_else(|| "-".into()),
                        ),
                        (
                            "Completed",
                            rfc3339(a.completed_at.as_ref()).unwrap_or_else(|| "-".into()),
                        ),
                        ("Duration", format!("{} ms", a.duration_ms)),
                        (
                            "Chunks",
                            format!("{} of {} received", a.chunks_received, a.chunks),
                        ),
                        ("Objects audited", a.objects_audited.to_string()),
                        (
                            "Findings",
                            format!("{} ({} exempted)", a.findings, a.exempted),
                        ),
                        ("Open C/H/M/L", open_text(&a)),
                    ];
                    if !a.command_id.is_empty() {
                        pairs.push(("Command", a.command_id.clone()));
                    }
                    if !a.kinds_skipped.is_empty() {
                        pairs.push(("Kinds skipped", a.kinds_skipped.join(", ")));
                    }
                    if !a.objects.is_empty() {
                        pairs.push((
                            "Objects",
                            a.objects
                                .iter()
                                .map(object_name)
                                .collect::<Vec<_>>()
                                .join(", "),
                        ));
                    }
                    output::key_values(&pairs)
                }
            };
            output::emit(&text)?;
        }
    }
    Ok(())
}
