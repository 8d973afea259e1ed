//! `canopyctl interconnects list|approve|reject` and `canopyctl clusters revoke`: leaf clusters
//! asking to join the fleet, and what an admin decides about them.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use canopy_proto::api::v1::{
    ApproveInterconnectRequest, Interconnect, ListInterconnectsRequest, RejectInterconnectRequest,
    RevokeClusterRequest, interconnect_service_client::InterconnectServiceClient,
};
use canopy_proto::event::v1::LinkDirection;

use super::Context;
use crate::cli::OutputFormat;
use crate::error::CliError;
use crate::output::{self, Align};

#[derive(Debug, Subcommand)]
pub enum InterconnectsCommand {
    /// Interconnect requests, pending ones first, then the newest.
    List(ListInterconnectsArgs),
    /// Approve a pending request: the seed signs the cluster's link credentials.
    Approve(ApproveArgs),
    /// Reject a pending request.
    Reject(RejectArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Approved,
    Rejected,
    Revoked,
    Superseded,
}

impl StatusArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
            Self::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Args)]
pub struct ListInterconnectsArgs {
    /// Only requests in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only requests of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// At most this many requests (the API caps it at 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The request id (from `interconnects list`).
    pub request_id: String,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The request id (from `interconnects list`).
    pub request_id: String,
    /// Why (kept with the request).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct RevokeClusterArgs {
    /// The cluster id.
    pub cluster: String,
    /// Why (kept with the request).
    #[arg(long, default_value = "")]
    pub reason: String,
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    output::datetime(t)
}

fn direction_name(d: i32) -> &'static str {
    match LinkDirection::try_from(d).unwrap_or(LinkDirection::Unspecified) {
        LinkDirection::Unspecified => "-",
        LinkDirection::LeafDials => "leaf-dials",
        LinkDirection::SeedDials => "seed-dials",
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// `k=v,k2=v2` in key order.
fn labels(i: &Interconnect) -> String {
    let mut pairs: Vec<(&String, &String)> = i.labels.iter().collect();
    pairs.sort();
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    dash(&text)
}

pub fn interconnect_json(i: &Interconnect) -> Value {
    let labels: std::collections::BTreeMap<&String, &String> = i.labels.iter().collect();
    json!({
        "request_id": i.request_id, "cluster": i.cluster_id, "status": i.status,
        "link_user_public_key": i.link_user_public_key, "xkey_public_key": i.xkey_public_key,
        "labels": labels, "direction": direction_name(i.direction), "trunk": i.trunk,
        "leaf_url": i.leaf_url, "gateway_version": i.gateway_version,
        "requested_at": output::rfc3339(i.requested_at.as_ref()),
        "decided_at": output::rfc3339(i.decided_at.as_ref()),
        "decided_by": i.decided_by, "reason": i.reason,
    })
}

/// `interconnects list` as a table.
pub fn interconnects_table(list: &[Interconnect], now: DateTime<Utc>) -> String {
    output::table(
        &[
            ("REQUEST ID", Align::Left),
            ("CLUSTER", Align::Left),
            ("STATUS", Align::Left),
            ("DIRECTION", Align::Left),
            ("TRUNK", Align::Left),
            ("LABELS", Align::Left),
            ("REQUESTED", Align::Left),
            ("DECIDED BY", Align::Left),
        ],
        &list
            .iter()
            .map(|i| {
                vec![
                    i.request_id.clone(),
                    i.cluster_id.clone(),
                    i.status.clone(),
                    direction_name(i.direction).to_owned(),
                    dash(&i.trunk),
                    labels(i),
                    time(i.requested_at.as_ref())
                        .map_or_else(|| "-".to_owned(), |t| output::age(t, now)),
                    dash(&i.decided_by),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// One request after a decision: a line for people, the object for programs.
fn one(ctx: &Context, i: &Interconnect) -> String {
    match ctx.output {
        OutputFormat::Table => {
            let by = if i.decided_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", i.decided_by)
            };
            let why = if i.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", i.reason)
            };
            format!(
                "interconnect request {} of cluster {}: {}{by}{why}\n",
                i.request_id, i.cluster_id, i.status
            )
        }
        OutputFormat::Json => output::json(&interconnect_json(i), true),
    }
}

pub async fn run(ctx: &Context, cmd: InterconnectsCommand) -> Result<(), CliError> {
    let mut client = InterconnectServiceClient::new(ctx.unary_channel().await?);
    let text = match cmd {
        InterconnectsCommand::List(args) => {
            let list = client
                .list_interconnects(ListInterconnectsRequest {
                    status: args
                        .status
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    cluster_id: args.cluster.unwrap_or_default(),
                    limit: args.limit,
                })
                .await?
                .into_inner()
                .interconnects;
            match ctx.output {
                OutputFormat::Table if list.is_empty() => "no interconnect request\n".to_owned(),
                OutputFormat::Table => interconnects_table(&list, Utc::now()),
                OutputFormat::Json => output::json(
                    &json!({"interconnects": list.iter().map(interconnect_json).collect::<Vec<_>>()}),
                    true,
                ),
            }
        }
        InterconnectsCommand::Approve(args) => one(
            ctx,
            &client
                .approve_interconnect(ApproveInterconnectRequest {
                    request_id: args.request_id,
                })
                .await?
                .into_inner(),
        ),
        InterconnectsCommand::Reject(args) => one(
            ctx,
            &client
                .reject_interconnect(RejectInterconnectRequest {
                    request_id: args.request_id,
                    reason: args.reason,
                })
                .await?
                .into_inner(),
        ),
    };
    output::emit(&text)?;
    Ok(())
}

/// `canopyctl clusters revoke`.
pub async fn revoke(ctx: &Context, args: RevokeClusterArgs) -> Result<(), CliError> {
    let mut client = InterconnectServiceClient::new(ctx.unary_channel().await?);
    let revoked = client
        .revoke_cluster(RevokeClusterRequest {
            cluster_id: args.cluster,
            reason: args.reason,
        })
        .await?
        .into_inner();
    output::emit(&one(ctx, &revoked))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, status: &str, by: &str) -> Interconnect {
        Interconnect {
            request_id: id.into(),
            cluster_id: "edge-1".into(),
            status: status.into(),
            labels: [("zone", "b"), ("env", "edge")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            direction: LinkDirection::LeafDials as i32,
            requested_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            decided_by: by.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_shows_one_request_per_line_with_sorted_labels() {
        let now = DateTime::from_timestamp(1_800_000_300, 0).unwrap();
        let text = interconnects_table(
            &[
                request("r2", "pending", ""),
                request("r1", "approved", "alice"),
            ],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("REQUEST ID  CLUSTER  STATUS"),
            "{text}"
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "r2",
                "edge-1",
                "pending",
                "leaf-dials",
                "-",
                "env=edge,zone=b",
                "5m",
                "ago",
                "-"
            ]
        );
        assert!(lines[2].ends_with("alice"), "{text}");
    }

    #[test]
    fn json_names_the_direction_and_times() {
        let v = interconnect_json(&request("r1", "approved", "alice"));
        assert_eq!(v["direction"], "leaf-dials");
        assert_eq!(v["requested_at"], "2027-01-15T08:00:00Z");
        assert_eq!(v["decided_at"], Value::Null);
        assert_eq!(v["labels"], json!({"env": "edge", "zone": "b"}));
    }
}
