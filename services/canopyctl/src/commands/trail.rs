//! `canopyctl trail list` and `canopyctl trail verify`: the audit trail (admins only).

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use canopy_proto::api::v1::{
    ListTrailRequest, TrailRecord, VerifyTrailRequest, VerifyTrailResponse,
    audit_trail_service_client::AuditTrailServiceClient,
};
use canopy_proto::event::v1::ActionOutcome;

use super::Context;
use crate::cli::{OutputFormat, parse_since};
use crate::error::CliError;
use crate::output::{self, Align};

#[derive(Debug, Subcommand)]
pub enum TrailCommand {
    /// Recorded calls, newest first: every change, every denied call, every invalid one.
    List(ListTrailArgs),
    /// Walks the hash chain on AUDIT_TRAIL; exits 1 and names the first broken link when it
    /// does not hold.
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    Succeeded,
    Denied,
    Invalid,
    Failed,
}

#[derive(Debug, Args)]
pub struct ListTrailArgs {
    /// Only calls by this actor (the token's subject, or `anonymous`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this method: the full one or its last part (`SetPolicy`).
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Only calls about this target (a cluster id, a command id, ...).
    #[arg(long, visible_alias = "cluster")]
    pub target: Option<String>,
    /// Records this long ago (5m, 2h) or since an RFC 3339 time.
    #[arg(long, value_name = "DURATION_OR_RFC3339", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Records before this time (a duration ago or an RFC 3339 time).
    #[arg(long, value_name = "DURATION_OR_RFC3339", value_parser = parse_since)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn run(ctx: &Context, cmd: TrailCommand) -> Result<(), CliError> {
    match cmd {
        TrailCommand::List(args) => list(ctx, args).await,
        TrailCommand::Verify => verify(ctx).await,
    }
}

fn ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

pub fn outcome_name(o: i32) -> &'static str {
    match ActionOutcome::try_from(o).unwrap_or(ActionOutcome::Unspecified) {
        ActionOutcome::Unspecified => "-",
        ActionOutcome::Succeeded => "succeeded",
        ActionOutcome::Denied => "denied",
        ActionOutcome::Invalid => "invalid",
        ActionOutcome::Failed => "failed",
    }
}

fn record_json(r: &TrailRecord) -> Value {
    let a = r.action.clone().unwrap_or_default();
    json!({
        "index": a.index, "sequence": r.sequence,
        "recorded_at": output::rfc3339(r.recorded_at.as_ref()),
        "actor": a.actor, "roles": a.roles, "method": a.method, "target": a.target,
        "outcome": outcome_name(a.outcome), "detail": a.detail,
        "request_digest": a.request_digest, "previous_hash": a.previous_hash, "hash": a.hash,
        "action_id": a.action_id,
    })
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

async fn list(ctx: &Context, args: ListTrailArgs) -> Result<(), CliError> {
    let mut client = AuditTrailServiceClient::new(ctx.unary_channel().await?);
    let outcome = args
        .outcome
        .map_or(ActionOutcome::Unspecified, |o| match o {
            OutcomeArg::Succeeded => ActionOutcome::Succeeded,
            OutcomeArg::Denied => ActionOutcome::Denied,
            OutcomeArg::Invalid => ActionOutcome::Invalid,
            OutcomeArg::Failed => ActionOutcome::Failed,
        });
    let mut records = Vec::new();
    let mut token = String::new();
    while records.len() < args.limit as usize {
        let page = client
            .list(ListTrailRequest {
                actor: args.actor.clone().unwrap_or_default(),
                method: args.method.clone().unwrap_or_default(),
                outcome: outcome as i32,
                target: args.target.clone().unwrap_or_default(),
                since: ts(args.since),
                until: ts(args.until),
                page_size: (args.limit as usize - records.len()).min(1000) as u32,
                page_token: token,
            })
            .await?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let text = match ctx.output {
        OutputFormat::Json => output::json(
            &json!({ "records": records.iter().map(record_json).collect::<Vec<_>>() }),
            true,
        ),
        OutputFormat::Table if records.is_empty() => "no record matches\n".to_owned(),
        OutputFormat::Table => output::table(
            &[
                ("INDEX", Align::Right),
                ("TIME", Align::Left),
                ("ACTOR", Align::Left),
                ("METHOD", Align::Left),
                ("TARGET", Align::Left),
                ("OUTCOME", Align::Left),
                ("DETAIL", Align::Left),
            ],
            &records
                .iter()
                .map(|r| {
                    let a = r.action.clone().unwrap_or_default();
                    let time = output::datetime(r.recorded_at.as_ref()).map_or_else(
                        || "-".to_owned(),
                        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
                    );
                    let detail: String = a.detail.chars().take(60).collect();
                    vec![
                        a.index.to_string(),
                        time,
                        a.actor,
                        a.method.rsplit('/').next().unwrap_or_default().to_owned(),
                        dash(&a.target),
                        outcome_name(a.outcome).to_owned(),
                        dash(&detail),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    };
    output::emit(&text)?;
    Ok(())
}

/// The verdict for people.
pub fn verdict_text(v: &VerifyTrailResponse) -> String {
    match &v.broken {
        None if v.records_checked == 0 => "audit trail is empty: nothing to verify\n".to_owned(),
        None => format!(
            "audit trail intact: {} records checked (index {} to {}), last hash {}\n",
            v.records_checked, v.first_index, v.last_index, v.last_hash
        ),
        Some(b) => format!(
            "audit trail BROKEN at index {} (AUDIT_TRAIL sequence {}): {} expected {:?}, found {:?}\n\
             {} records before it verified\n",
            b.index, b.sequence, b.field, b.expected, b.found, v.records_checked
        ),
    }
}

async fn verify(ctx: &Context) -> Result<(), CliError> {
    let mut client = AuditTrailServiceClient::new(ctx.unary_channel().await?);
    let v = client.verify(VerifyTrailRequest {}).await?.into_inner();
    let text = match ctx.output {
        OutputFormat::Json => output::json(
            &json!({
                "ok": v.ok, "records_checked": v.records_checked,
                "first_index": v.first_index, "last_index": v.last_index,
                "last_hash": v.last_hash,
                "broken": v.broken.as_ref().map(|b| json!({
                    "index": b.index, "sequence": b.sequence, "field": b.field,
                    "expected": b.expected, "found": b.found,
                })),
            }),
            true,
        ),
        OutputFormat::Table => verdict_text(&v),
    };
    if v.ok {
        output::emit(&text)?;
        Ok(())
    } else if ctx.output == OutputFormat::Json {
        output::emit(&text)?;
        Err(CliError::Exit(1))
    } else {
        eprint!("{text}");
        Err(CliError::Exit(1))
    }
}
