//! `canopyctl derogations list|grant|revoke`.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use canopy_proto::api::v1::{
    DerogationState, DerogationView, GrantDerogationRequest, ListDerogationsRequest,
    RevokeDerogationRequest, policy_service_client::PolicyServiceClient,
};
use canopy_proto::event::v1::DerogationScope;

use super::Context;
use crate::cli::{DerogationStateArg, DerogationsCommand, OutputFormat};
use crate::error::CliError;
use crate::output::{self, Align, datetime, rfc3339};

fn state_name(v: i32) -> &'static str {
    match DerogationState::try_from(v).unwrap_or(DerogationState::Unspecified) {
        DerogationState::Active => "active",
        DerogationState::Expired => "expired",
        DerogationState::Revoked => "revoked",
        DerogationState::Unspecified => "-",
    }
}

/// `cluster=prod-eu,env=prod,ns=ingress,DaemonSet/ingress-nginx,container=controller`.
pub fn scope_text(s: &DerogationScope) -> String {
    let mut parts = Vec::new();
    if !s.cluster_id.is_empty() {
        parts.push(format!("cluster={}", s.cluster_id));
    }
    let labels: BTreeMap<&String, &String> = s.cluster_labels.iter().collect();
    parts.extend(labels.into_iter().map(|(k, v)| format!("{k}={v}")));
    if !s.namespace.is_empty() {
        parts.push(format!("ns={}", s.namespace));
    }
    match (s.workload_kind.as_str(), s.workload_name.as_str()) {
        ("", "") => {}
        (k, "") => parts.push(format!("{k}/*")),
        ("", n) => parts.push(format!("*/{n}")),
        (k, n) => parts.push(format!("{k}/{n}")),
    }
    if !s.container.is_empty() {
        parts.push(format!("container={}", s.container));
    }
    if parts.is_empty() {
        "everywhere".to_owned()
    } else {
        parts.join(",")
    }
}

#[derive(Debug, Serialize)]
struct DerogationJson {
    derogation_id: String,
    check: String,
    state: &'static str,
    scope: ScopeJson,
    reason: String,
    approver: String,
    expires_at: Option<String>,
    granted_by: String,
    granted_at: Option<String>,
    revoked_at: Option<String>,
    revoked_by: String,
    revoke_reason: String,
}

#[derive(Debug, Serialize)]
struct ScopeJson {
    cluster_id: String,
    cluster_labels: BTreeMap<String, String>,
    namespace: String,
    workload_kind: String,
    workload_name: String,
    container: String,
}

fn to_json(v: &DerogationView) -> DerogationJson {
    let d = v.derogation.clone().unwrap_or_default();
    let s = d.scope.clone().unwrap_or_default();
    DerogationJson {
        derogation_id: d.derogation_id,
        check: d.check,
        state: state_name(v.state),
        scope: ScopeJson {
            cluster_id: s.cluster_id,
            cluster_labels: s.cluster_labels.into_iter().collect(),
            namespace: s.namespace,
            workload_kind: s.workload_kind,
            workload_name: s.workload_name,
            container: s.container,
        },
        reason: d.reason,
        approver: d.approver,
        expires_at: rfc3339(d.expires_at.as_ref()),
        granted_by: d.granted_by,
        granted_at: rfc3339(d.granted_at.as_ref()),
        revoked_at: rfc3339(v.revoked_at.as_ref()),
        revoked_by: v.revoked_by.clone(),
        revoke_reason: v.revoke_reason.clone(),
    }
}

pub fn table(list: &[DerogationView]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let d = v.derogation.clone().unwrap_or_default();
            let expires = match datetime(d.expires_at.as_ref()) {
                Some(t) => format!("{} ({})", t.format("%Y-%m-%d %H:%M"), output::age(t, now)),
                None => "-".to_owned(),
            };
            vec![
                d.derogation_id,
                d.check,
                scope_text(&d.scope.unwrap_or_default()),
                state_name(v.state).to_owned(),
                expires,
                d.approver,
                d.reason,
            ]
        })
        .collect();
    output::table(
        &[
            ("ID", Align::Left),
            ("CHECK", Align::Left),
            ("SCOPE", Align::Left),
            ("STATE", Align::Left),
            ("EXPIRES", Align::Left),
            ("APPROVER", Align::Left),
            ("REASON", Align::Left),
        ],
        &rows,
    )
}

pub async fn run(ctx: &Context, cmd: DerogationsCommand) -> Result<(), CliError> {
    let mut client = PolicyServiceClient::new(ctx.unary_channel().await?);
    match cmd {
        DerogationsCommand::List(args) => {
            let states = args
                .state
                .iter()
                .map(|s| match s {
                    DerogationStateArg::Active => DerogationState::Active as i32,
                    DerogationStateArg::Expired => DerogationState::Expired as i32,
                    DerogationStateArg::Revoked => DerogationState::Revoked as i32,
                })
                .collect::<Vec<_>>();
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_derogations(ListDerogationsRequest {
                        states: states.clone(),
                        check: args.check.clone().unwrap_or_default(),
                        cluster_id: args.cluster.clone().unwrap_or_default(),
                        page_size: 500,
                        page_token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.derogations);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let text = match ctx.output {
                OutputFormat::Table => table(&all),
                OutputFormat::Json => {
                    let list: Vec<DerogationJson> = all.iter().map(to_json).collect();
                    output::json(&serde_json::json!({ "derogations": list }), true)
                }
            };
            output::emit(&text)?;
        }
        DerogationsCommand::Grant(args) => {
            let (kind, name) = match &args.workload {
                Some(w) => match w.split_once('/') {
                    Some((k, n)) if !k.is_empty() && !n.is_empty() => (k.to_owned(), n.to_owned()),
                    _ => {
                        return Err(CliError::Usage(format!(
                            "--workload {w:?} must be Kind/name, e.g. Deployment/api"
                        )));
                    }
                },
                None => (String::new(), String::new()),
            };
            let expires = match (args.expires_at, args.expires_in) {
                (Some(t), _) => t,
                (None, Some(d)) => {
                    Utc::now()
                        + chrono::Duration::from_std(d)
                            .map_err(|e| CliError::Usage(format!("--expires-in: {e}")))?
                }
                (None, None) => {
                    return Err(CliError::Usage(
                        "--expires-in or --expires-at is required".into(),
                    ));
                }
            };
            let granted = client
                .grant_derogation(GrantDerogationRequest {
                    check: args.check,
                    scope: Some(DerogationScope {
                        cluster_labels: args.cluster_labels.into_iter().collect(),
                        cluster_id: args.cluster.unwrap_or_default(),
                        namespace: args.namespace.unwrap_or_default(),
                        workload_kind: kind,
                        workload_name: name,
                        container: args.container.unwrap_or_default(),
                    }),
                    reason: args.reason,
                    approver: args.approver,
                    expires_at: Some(prost_types::Timestamp {
                        seconds: expires.timestamp(),
                        nanos: 0,
                    }),
                })
                .await?
                .into_inner();
            let d = granted.derogation.unwrap_or_default();
            let text = match ctx.output {
                OutputFormat::Json => output::json(
                    &serde_json::json!({
                        "derogation_id": d.derogation_id,
                        "check": d.check,
                        "expires_at": rfc3339(d.expires_at.as_ref()),
                        "control_sequence": granted.control_sequence,
                    }),
                    true,
                ),
                OutputFormat::Table => format!(
                    "derogation {} granted: {} exempted ({}) until {}\n",
                    d.derogation_id,
                    d.check,
                    scope_text(&d.scope.unwrap_or_default()),
                    rfc3339(d.expires_at.as_ref()).unwrap_or_default()
                ),
            };
            output::emit(&text)?;
        }
        DerogationsCommand::Revoke(args) => {
            let r = client
                .revoke_derogation(RevokeDerogationRequest {
                    derogation_id: args.id.clone(),
                    reason: args.reason,
                })
                .await?
                .into_inner();
            let text = match ctx.output {
                OutputFormat::Json => output::json(
                    &serde_json::json!({"derogation_id": args.id, "control_sequence": r.control_sequence}),
                    true,
                ),
                OutputFormat::Table => format!("derogation {} revoked\n", args.id),
            };
            output::emit(&text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_one_line() {
        assert_eq!(scope_text(&DerogationScope::default()), "everywhere");
        let s = DerogationScope {
            cluster_id: "prod-eu".into(),
            cluster_labels: [("env".to_owned(), "prod".to_owned())].into(),
            namespace: "ingress".into(),
            workload_kind: "DaemonSet".into(),
            workload_name: "nginx".into(),
            container: "c".into(),
        };
        assert_eq!(
            scope_text(&s),
            "cluster=prod-eu,env=prod,ns=ingress,DaemonSet/nginx,container=c"
        );
    }
}
