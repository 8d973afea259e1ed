//! The audit trail: appending `ActionRecorded` to AUDIT_TRAIL as a hash chain that stays linear
//! across api replicas, walking the chain for `Verify`, listing the read model for `List`.
//!
//! Linearity: a record is published with `Nats-Expected-Last-Subject-Sequence` set to the
//! sequence of the record it chains onto (read from the stream), so two replicas cannot both
//! append onto the same record; the loser re-reads the last record and tries again (at most
//! [`MAX_ATTEMPTS`] times). `Nats-Msg-Id` is `audit:<action id>`, so a publish whose ack was
//! lost and is retried is stored once.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    context::PublishErrorKind,
    message::PublishMessage,
    stream::LastRawMessageErrorKind,
};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use sqlx::{PgPool, Row as _};
use thiserror::Error;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::{error, warn};
use uuid::Uuid;

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::api::v1::{
    BrokenLink, ListTrailRequest, ListTrailResponse, TrailRecord, VerifyTrailRequest,
    VerifyTrailResponse, audit_trail_service_server::AuditTrailService,
};
use canopy_kit::proto::event::v1::{ActionOutcome, ActionRecorded, Envelope, envelope::Body};
use canopy_kit::streams;

use crate::auth::{Action, Trail};
use crate::domain::trail::{self as chain, Stored, Verdict, Walk};

/// Appends that lost the race to another replica are retried this often.
pub const MAX_ATTEMPTS: u32 = 16;
/// A whole `Verify` walk may take this long without progress.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TrailError {
    #[error("failed to {action}: {detail}")]
    Nats {
        action: &'static str,
        detail: String,
    },
    #[error("the audit trail kept moving: no append after {MAX_ATTEMPTS} attempts")]
    Contended,
}

fn nats(action: &'static str) -> impl FnOnce(String) -> TrailError {
    move |detail| TrailError::Nats { action, detail }
}

/// `canopy.audit.action.recorded`.
pub fn subject() -> String {
    canopy_kit::subject::audit("action", "recorded")
        .unwrap_or_else(|_| "canopy.audit.action.recorded".into())
}

/// The record a new one chains onto.
#[derive(Debug, Clone, Default)]
struct Head {
    /// AUDIT_TRAIL sequence (0: the trail is empty).
    seq: u64,
    index: u64,
    hash: String,
    action_id: String,
}

/// Writes and walks AUDIT_TRAIL.
pub struct JetStreamTrail {
    js: jetstream::Context,
    /// The last record this replica knows of; appends of one replica are serialised here.
    head: Mutex<Option<Head>>,
}

impl JetStreamTrail {
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            head: Mutex::new(None),
        }
    }

    async fn read_head(&self) -> Result<Head, TrailError> {
        let stream = self
            .js
            .get_stream_no_info(streams::AUDIT_TRAIL)
            .await
            .map_err(|e| nats("open AUDIT_TRAIL")(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&subject()).await {
            Ok(m) => Ok(match decode(&m.subject, &m.payload) {
                Ok((r, _)) => Head {
                    seq: m.sequence,
                    index: r.index,
                    hash: r.hash,
                    action_id: r.action_id,
                },
                // Something that is not a record (a forgery): chain onto it anyway, so that
                // garbage cannot stop the api from recording; Verify names the break.
                Err(e) => {
                    error!(seq = m.sequence, error = %e, "the last AUDIT_TRAIL record does not decode");
                    Head {
                        seq: m.sequence,
                        index: m.sequence,
                        hash: chain::digest(&m.payload),
                        action_id: String::new(),
                    }
                }
            }),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                Ok(Head::default())
            }
            Err(e) => Err(nats("read the last AUDIT_TRAIL record")(e.to_string())),
        }
    }

    /// Whether a record could be appended now: reads the chain's head, then sends a probe that
    /// the server must refuse for its expected last sequence (`u64::MAX`) and stores nothing.
    /// That refusal proves the stream exists, takes this subject, accepts this publisher and is
    /// not sealed; anything else (no answer, a permission violation, a sealed or missing
    /// stream) is an error.
    pub async fn check(&self) -> Result<(), TrailError> {
        let head = self.read_head().await?;
        *self.head.lock().await = Some(head);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            u64::MAX.to_string().as_str(),
        );
        let probe = PublishMessage::build()
            .payload(bytes::Bytes::new())
            .headers(headers);
        let ack = self
            .js
            .send_publish(subject(), probe)
            .await
            .map_err(|e| nats("probe AUDIT_TRAIL")(e.to_string()))?;
        match ack.await {
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(()),
            Err(e) => Err(nats("probe AUDIT_TRAIL")(e.to_string())),
            Ok(ack) => Err(nats("probe AUDIT_TRAIL")(format!(
                "the probe was stored at sequence {}",
                ack.sequence
            ))),
        }
    }

    /// Appends one record; returns it with its index and hash.
    pub async fn append(&self, action: Action) -> Result<ActionRecorded, TrailError> {
        let mut cached = self.head.lock().await;
        let action_id = Uuid::now_v7().to_string();
        for attempt in 0..MAX_ATTEMPTS {
            let head = match cached.take() {
                Some(h) => h,
                None => self.read_head().await?,
            };
            if !head.action_id.is_empty() && head.action_id == action_id {
                // An earlier attempt was stored although its ack got lost.
                *cached = Some(head.clone());
                return Ok(ActionRecorded {
                    action_id,
                    index: head.index,
                    hash: head.hash,
                    ..Default::default()
                });
            }
            let mut record = ActionRecorded {
                action_id: action_id.clone(),
                actor: action.actor.clone(),
                roles: action.roles.clone(),
                method: action.method.clone(),
                target: action.target.clone(),
                outcome: action.outcome as i32,
                detail: action.detail.clone(),
                request_digest: action.request_digest.clone(),
                previous_hash: head.hash.clone(),
                hash: String::new(),
                index: head.index + 1,
            };
            let mut env = envelope::new_for(None, "api", Body::ActionRecorded(record.clone()));
            env.event_id.clone_from(&action_id);
            let at = env
                .occurred_at
                .as_ref()
                .map_or((0, 0), |t| (t.seconds, t.nanos));
            record.hash = chain::hash(&record, at);
            env.body = Some(Body::ActionRecorded(record.clone()));
            match self.publish(&env, head.seq).await {
                Ok(seq) => {
                    *cached = Some(Head {
                        seq,
                        index: record.index,
                        hash: record.hash.clone(),
                        action_id,
                    });
                    return Ok(record);
                }
                Err(Publish::WrongLastSequence) => {
                    // Another replica appended first: re-read and chain onto its record.
                    metrics::counter!("canopy_api_trail_append_retries_total").increment(1);
                    let jitter =
                        u64::from(attempt) * 5 + u64::from(Uuid::now_v7().as_bytes()[15] % 10);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(Publish::Other(e)) => return Err(e),
            }
        }
        Err(TrailError::Contended)
    }

    async fn publish(&self, env: &Envelope, last_seq: u64) -> Result<u64, Publish> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("audit:{}", env.event_id).as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last_seq.to_string().as_str(),
        );
        canopy_kit::telemetry::inject_current(&mut headers);
        let msg = PublishMessage::build()
            .payload(envelope::encode(env))
            .headers(headers);
        let ack = self
            .js
            .send_publish(subject(), msg)
            .await
            .map_err(|e| Publish::Other(nats("publish to AUDIT_TRAIL")(e.to_string())))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(Publish::WrongLastSequence)
            }
            Err(e) => Err(Publish::Other(nats("store on AUDIT_TRAIL")(e.to_string()))),
        }
    }

    /// Walks every record of the chain on AUDIT_TRAIL, oldest first, up to the newest one at
    /// the start of the walk.
    pub async fn verify(&self) -> Result<Verdict, TrailError> {
        let stream = self
            .js
            .get_stream_no_info(streams::AUDIT_TRAIL)
            .await
            .map_err(|e| nats("open AUDIT_TRAIL")(e.to_string()))?;
        let last = match stream.get_last_raw_message_by_subject(&subject()).await {
            Ok(m) => m.sequence,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Ok(Verdict::default());
            }
            Err(e) => return Err(nats("read the last AUDIT_TRAIL record")(e.to_string())),
        };
        let name = format!("api-trail-verify-{}", Uuid::now_v7().simple());
        let consumer = stream
            .create_consumer(OrderedConfig {
                name: Some(name.clone()),
                description: Some("canopy-api trail Verify".to_owned()),
                filter_subject: subject(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("create the verify consumer")(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| nats("read AUDIT_TRAIL")(e.to_string()))?;
        let mut walk = Walk::new();
        loop {
            let m = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(nats("read AUDIT_TRAIL")(e.to_string())),
                Ok(None) => break,
                Err(_) => {
                    return Err(nats("read AUDIT_TRAIL")(format!(
                        "no record within {READ_TIMEOUT:?}"
                    )));
                }
            };
            let seq = m
                .info()
                .map_err(|e| nats("read message metadata")(e.to_string()))?
                .stream_sequence;
            let stored = match decode(&m.subject, &m.payload) {
                Ok((record, at)) => Stored::Record {
                    seq,
                    record: Box::new(record),
                    at,
                },
                Err(error) => Stored::Undecodable { seq, error },
            };
            if !walk.feed(stored) || seq >= last {
                break;
            }
        }
        drop(messages);
        let _ = stream.delete_consumer(&name).await;
        Ok(walk.finish())
    }
}

enum Publish {
    WrongLastSequence,
    Other(TrailError),
}

/// A stored trail message as a record and its time.
fn decode(subject: &str, payload: &[u8]) -> Result<(ActionRecorded, (i64, i32)), String> {
    let env = envelope::decode_on(Plane::Audit, subject, payload).map_err(|e| e.to_string())?;
    let at = env
        .occurred_at
        .as_ref()
        .map_or((0, 0), |t| (t.seconds, t.nanos));
    match env.body {
        Some(Body::ActionRecorded(r)) => Ok((r, at)),
        _ => Err("not an ActionRecorded".into()),
    }
}

impl Trail for JetStreamTrail {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.check().await.map_err(|e| e.to_string()) })
    }

    fn record(&self, action: Action) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.append(action)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

// === List (Postgres) and Verify (AUDIT_TRAIL) ===

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct TrailApi {
    pool: PgPool,
    trail: std::sync::Arc<JetStreamTrail>,
}

impl TrailApi {
    pub fn new(pool: PgPool, trail: std::sync::Arc<JetStreamTrail>) -> Self {
        Self { pool, trail }
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| {
        DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
            .ok_or_else(|| Status::invalid_argument(format!("invalid {field}: not a valid time")))
    })
    .transpose()
}

/// The filters of a List, checked.
struct ListQuery {
    actor: Option<String>,
    method: Option<String>,
    outcome: Option<&'static str>,
    target: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: u32,
    /// Only records below this sequence (the page token).
    before: Option<i64>,
}

fn text_filter(field: &str, value: &str) -> Result<Option<String>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 512 || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "invalid {field}: at most 512 printable characters"
        )));
    }
    Ok(Some(value.to_owned()))
}

fn list_query(r: &ListTrailRequest) -> Result<ListQuery, Status> {
    let outcome = match ActionOutcome::try_from(r.outcome) {
        Ok(ActionOutcome::Unspecified) => None,
        Ok(o) => Some(chain::outcome_name(o as i32)),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "invalid outcome: {} is not an outcome",
                r.outcome
            )));
        }
    };
    let since = from_timestamp("since", r.since.as_ref())?;
    let until = from_timestamp("until", r.until.as_ref())?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(Status::invalid_argument(
            "invalid until: must be after since",
        ));
    }
    let before = if r.page_token.is_empty() {
        None
    } else {
        Some(
            r.page_token
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| Status::invalid_argument("invalid page_token"))?,
        )
    };
    Ok(ListQuery {
        actor: text_filter("actor", &r.actor)?,
        method: text_filter("method", &r.method)?,
        outcome,
        target: text_filter("target", &r.target)?,
        since,
        until,
        limit: match r.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        },
        before,
    })
}

fn unavailable(e: &impl std::fmt::Display) -> Status {
    error!(error = %e, "audit trail read failed");
    Status::unavailable("the audit trail is unreachable; retry later")
}

#[tonic::async_trait]
impl AuditTrailService for TrailApi {
    async fn list(
        &self,
        request: Request<ListTrailRequest>,
    ) -> Result<Response<ListTrailResponse>, Status> {
        let q = list_query(request.get_ref())?;
        // A bare method name matches the last part of the full one.
        let method_suffix = q.method.as_ref().map(|m| {
            if m.starts_with('/') {
                m.clone()
            } else {
                format!("/{m}")
            }
        });
        let rows = sqlx::query(
            "SELECT seq, action_id, recorded_at, actor, roles, method, target, outcome, detail,
                    request_digest, previous_hash, hash, chain_index
             FROM audit_trail
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR method = $2 OR right(method, length($2)) = $2)
               AND ($3::text IS NULL OR outcome = $3)
               AND ($4::text IS NULL OR target = $4)
               AND ($5::timestamptz IS NULL OR recorded_at >= $5)
               AND ($6::timestamptz IS NULL OR recorded_at < $6)
               AND ($7::bigint IS NULL OR seq < $7)
             ORDER BY seq DESC
             LIMIT $8",
        )
        .bind(&q.actor)
        .bind(&method_suffix)
        .bind(q.outcome)
        .bind(&q.target)
        .bind(q.since)
        .bind(q.until)
        .bind(q.before)
        .bind(i64::from(q.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(&e))?;
        let more = rows.len() > q.limit as usize;
        let mut records = Vec::with_capacity(rows.len());
        for r in rows.iter().take(q.limit as usize) {
            let get = |e: sqlx::Error| unavailable(&e);
            let outcome: String = r.try_get("outcome").map_err(get)?;
            let seq: i64 = r.try_get("seq").map_err(get)?;
            let index: i64 = r.try_get("chain_index").map_err(get)?;
            let at: DateTime<Utc> = r.try_get("recorded_at").map_err(get)?;
            records.push(TrailRecord {
                action: Some(ActionRecorded {
                    action_id: r.try_get("action_id").map_err(get)?,
                    actor: r.try_get("actor").map_err(get)?,
                    roles: r.try_get("roles").map_err(get)?,
                    method: r.try_get("method").map_err(get)?,
                    target: r.try_get("target").map_err(get)?,
                    outcome: chain::outcome_from_name(&outcome)
                        .map_or(ActionOutcome::Unspecified as i32, |o| o as i32),
                    detail: r.try_get("detail").map_err(get)?,
                    request_digest: r.try_get("request_digest").map_err(get)?,
                    previous_hash: r.try_get("previous_hash").map_err(get)?,
                    hash: r.try_get("hash").map_err(get)?,
                    index: u64::try_from(index).unwrap_or(0),
                }),
                recorded_at: Some(timestamp(at)),
                sequence: u64::try_from(seq).unwrap_or(0),
            });
        }
        let next_page_token = match records.last() {
            Some(last) if more => last.sequence.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListTrailResponse {
            records,
            next_page_token,
        }))
    }

    async fn verify(
        &self,
        _request: Request<VerifyTrailRequest>,
    ) -> Result<Response<VerifyTrailResponse>, Status> {
        let mut v = self.trail.verify().await.map_err(|e| unavailable(&e))?;
        // The read model remembers how far the chain went: a stream that ends before that lost
        // records (deleted and recreated), although what it holds may chain well.
        if v.broken.is_none() {
            match sqlx::query_scalar::<_, Option<i64>>("SELECT max(chain_index) FROM audit_trail")
                .fetch_one(&self.pool)
                .await
            {
                Ok(Some(seen)) if u64::try_from(seen).unwrap_or(0) > v.last_index => {
                    v.broken = Some(chain::Broken {
                        index: v.last_index + 1,
                        seq: 0,
                        field: "missing",
                        expected: format!("records up to index {seen}, as the read model saw"),
                        found: format!("the stream ends at index {}", v.last_index),
                    });
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "Verify could not compare with the read model"),
            }
        }
        if let Some(b) = &v.broken {
            warn!(
                index = b.index,
                seq = b.seq,
                field = b.field,
                "the audit trail's hash chain is broken"
            );
        }
        Ok(Response::new(VerifyTrailResponse {
            ok: v.broken.is_none(),
            records_checked: v.checked,
            first_index: v.first_index,
            last_index: v.last_index,
            last_hash: v.last_hash,
            broken: v.broken.map(|b| BrokenLink {
                index: b.index,
                sequence: b.seq,
                field: b.field.to_owned(),
                expected: b.expected,
                found: b.found,
            }),
        }))
    }
}
