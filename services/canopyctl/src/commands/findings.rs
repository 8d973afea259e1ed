//! `canopyctl findings list` and `canopyctl posture`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use canopy_proto::api::v1::{
    FindingState, FindingView, GetPostureRequest, ListFindingsRequest, Posture, SeverityCounts,
    findings_service_client::FindingsServiceClient,
};
use canopy_proto::event::v1::Severity;

use super::Context;
use crate::cli::{
    FindingStateArg, FindingsCommand, ListFindingsArgs, OutputFormat, PostureArgs, SeverityArg,
};
use crate::error::CliError;
use crate::output::{self, Align, datetime, rfc3339};

const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

fn severity(a: SeverityArg) -> i32 {
    match a {
        SeverityArg::Low => Severity::Low as i32,
        SeverityArg::Medium => Severity::Medium as i32,
        SeverityArg::High => Severity::High as i32,
        SeverityArg::Critical => Severity::Critical as i32,
    }
}

pub fn severity_name(v: i32) -> &'static str {
    match Severity::try_from(v).unwrap_or(Severity::Unspecified) {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Unspecified => "-",
    }
}

fn state_name(v: i32) -> &'static str {
    match FindingState::try_from(v).unwrap_or(FindingState::Unspecified) {
        FindingState::Open => "open",
        FindingState::Exempted => "exempted",
        FindingState::Resolved => "resolved",
        FindingState::Unspecified => "-",
    }
}

/// A finding in JSON: the fields of `canopyctl audit -o json` plus where and since when.
#[derive(Debug, Serialize)]
pub struct FindingJson {
    pub cluster_id: String,
    pub check: String,
    pub severity: &'static str,
    pub standards: Vec<String>,
    pub resource: ResourceJson,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    pub path: String,
    pub message: String,
    pub remediation: String,
    pub application: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub derogation_id: String,
    pub exempted_until: Option<String>,
    pub first_seen_at: Option<String>,
    pub last_seen_at: Option<String>,
    pub resolved_at: Option<String>,
    pub fingerprint: String,
}

#[derive(Debug, Serialize)]
pub struct ResourceJson {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl From<&FindingView> for FindingJson {
    fn from(f: &FindingView) -> Self {
        let r = f.resource.clone().unwrap_or_default();
        Self {
            cluster_id: f.cluster_id.clone(),
            check: f.check.clone(),
            severity: severity_name(f.severity),
            standards: f.standards.clone(),
            resource: ResourceJson {
                api_version: r.api_version,
                kind: r.kind,
                namespace: r.namespace,
                name: r.name,
            },
            container: f.container.clone(),
            path: f.path.clone(),
            message: f.message.clone(),
            remediation: f.remediation.clone(),
            application: f.application.clone(),
            state: state_name(f.state),
            derogation_id: f.derogation_id.clone(),
            exempted_until: rfc3339(f.exempted_until.as_ref()),
            first_seen_at: rfc3339(f.first_seen_at.as_ref()),
            last_seen_at: rfc3339(f.last_seen_at.as_ref()),
            resolved_at: rfc3339(f.resolved_at.as_ref()),
            fingerprint: f.fingerprint.clone(),
        }
    }
}

pub fn findings_table(list: &[FindingView]) -> String {
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|f| {
            let r = f.resource.clone().unwrap_or_default();
            let object = if r.namespace.is_empty() {
                format!("{} {}", r.kind, r.name)
            } else {
                format!("{} {}/{}", r.kind, r.namespace, r.name)
            };
            let since = datetime(f.first_seen_at.as_ref())
                .map(|t| output::age(t, now))
                .unwrap_or_else(|| "-".into());
            vec![
                severity_name(f.severity).to_uppercase(),
                f.cluster_id.clone(),
                object,
                f.check.clone(),
                state_name(f.state).to_owned(),
                since,
                f.message.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            ("SEVERITY", Align::Left),
            ("CLUSTER", Align::Left),
            ("OBJECT", Align::Left),
            ("CHECK", Align::Left),
            ("STATE", Align::Left),
            ("SINCE", Align::Left),
            ("MESSAGE", Align::Left),
        ],
        &rows,
    )
}

pub async fn run(ctx: &Context, cmd: FindingsCommand) -> Result<(), CliError> {
    let FindingsCommand::List(args) = cmd;
    let list = list_all(ctx, &args).await?;
    let text = match ctx.output {
        OutputFormat::Table if list.is_empty() => "no findings\n".to_owned(),
        OutputFormat::Table => {
            let mut t = findings_table(&list);
            t.push_str(&format!("{} findings\n", list.len()));
            t
        }
        OutputFormat::Json => {
            let findings: Vec<FindingJson> = list.iter().map(FindingJson::from).collect();
            output::json(&serde_json::json!({ "findings": findings }), true)
        }
    };
    output::emit(&text)?;
    Ok(())
}

async fn list_all(ctx: &Context, args: &ListFindingsArgs) -> Result<Vec<FindingView>, CliError> {
    let mut client = FindingsServiceClient::new(ctx.unary_channel().await?);
    let states = args
        .state
        .iter()
        .map(|s| match s {
            FindingStateArg::Open => FindingState::Open as i32,
            FindingStateArg::Exempted => FindingState::Exempted as i32,
            FindingStateArg::Resolved => FindingState::Resolved as i32,
        })
        .collect::<Vec<_>>();
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut all = Vec::new();
    let mut page_token = String::new();
    while all.len() < limit {
        let page = client
            .list_findings(ListFindingsRequest {
                cluster_id: args.cluster.clone().unwrap_or_default(),
                namespace: args.namespace.clone().unwrap_or_default(),
                application: args.application.clone().unwrap_or_default(),
                check: args.check.clone().unwrap_or_default(),
                min_severity: args.min_severity.map(severity).unwrap_or(0),
                severities: args.severity.iter().map(|s| severity(*s)).collect(),
                standard: args.standard.clone().unwrap_or_default(),
                states: states.clone(),
                page_size: u32::try_from((limit - all.len()).min(1000)).unwrap_or(1000),
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.findings);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    all.truncate(limit);
    Ok(all)
}

// === posture ===

fn count_line(m: &HashMap<String, u64>) -> String {
    SEVERITIES
        .iter()
        .map(|s| format!("{} {s}", m.get(*s).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Serialize)]
struct CountsJson {
    open: BTreeMap<String, u64>,
    exempted: BTreeMap<String, u64>,
}

fn counts_json(c: Option<&SeverityCounts>) -> CountsJson {
    let c = c.cloned().unwrap_or_default();
    CountsJson {
        open: c.open.into_iter().collect(),
        exempted: c.exempted.into_iter().collect(),
    }
}

#[derive(Debug, Serialize)]
struct PostureJson {
    scope: String,
    clusters: u32,
    objects_audited: u64,
    score: u32,
    counts: CountsJson,
    history: Vec<PointJson>,
}

#[derive(Debug, Serialize)]
struct PointJson {
    at: Option<String>,
    objects_audited: u64,
    score: u32,
    counts: CountsJson,
}

pub fn posture_text(p: &Posture) -> String {
    let c = p.counts.clone().unwrap_or_default();
    let mut out = output::key_values(&[
        ("Scope", p.scope.clone()),
        ("Score", format!("{}/100", p.score)),
        ("Clusters", p.clusters.to_string()),
        ("Objects audited", p.objects_audited.to_string()),
        ("Open", count_line(&c.open)),
        ("Exempted", count_line(&c.exempted)),
    ]);
    if !p.history.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = p
            .history
            .iter()
            .map(|h| {
                let open = h.counts.clone().unwrap_or_default().open;
                let mut row = vec![
                    rfc3339(h.at.as_ref()).unwrap_or_default(),
                    h.score.to_string(),
                    h.objects_audited.to_string(),
                ];
                row.extend(
                    SEVERITIES
                        .iter()
                        .map(|s| open.get(*s).copied().unwrap_or(0).to_string()),
                );
                row
            })
            .collect();
        out.push_str(&output::table(
            &[
                ("AUDITED AT", Align::Left),
                ("SCORE", Align::Right),
                ("OBJECTS", Align::Right),
                ("CRITICAL", Align::Right),
                ("HIGH", Align::Right),
                ("MEDIUM", Align::Right),
                ("LOW", Align::Right),
            ],
            &rows,
        ));
    }
    out
}

pub async fn posture(ctx: &Context, args: PostureArgs) -> Result<(), CliError> {
    let mut client = FindingsServiceClient::new(ctx.unary_channel().await?);
    let p = client
        .get_posture(GetPostureRequest {
            cluster_id: args.cluster.unwrap_or_default(),
            namespace: args.namespace.unwrap_or_default(),
            application: args.application.unwrap_or_default(),
            history_limit: args.history,
        })
        .await?
        .into_inner();
    let text = match ctx.output {
        OutputFormat::Table => posture_text(&p),
        OutputFormat::Json => output::json(
            &PostureJson {
                scope: p.scope.clone(),
                clusters: p.clusters,
                objects_audited: p.objects_audited,
                score: p.score,
                counts: counts_json(p.counts.as_ref()),
                history: p
                    .history
                    .iter()
                    .map(|h| PointJson {
                        at: rfc3339(h.at.as_ref()),
                        objects_audited: h.objects_audited,
                        score: h.score,
                        counts: counts_json(h.counts.as_ref()),
                    })
                    .collect(),
            },
            true,
        ),
    };
    output::emit(&text)?;
    Ok(())
}
