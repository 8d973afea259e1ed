//! doctor: follows heartbeats, health reports and link events, judges each cluster's health,
//! raises and clears diagnoses, and proposes (or, where allowed, carries out) remediations.
//!
//! The state is rebuilt from the log on start: the newest heartbeat, start, health report and
//! inventory chunk of every cluster from FLEET_EVENTS (last per subject), the audits completed
//! and the commands failed within the freshness look-back (FLEET_EVENTS by start time), and
//! every link event and every decision of its own from CONTROL. Only once both are read up to their end does the doctor decide
//! anything; decisions carry ids derived from the log, so what a previous instance published is
//! neither repeated nor (thanks to `Nats-Msg-Id`) stored twice.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt as _;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use canopy_kit::envelope;
use canopy_kit::health::HealthServer;
use canopy_kit::proto::event::v1::{Envelope, InventorySnapshot, envelope::Body};
use canopy_kit::streams;

pub mod config;
pub mod domain;

use config::Config;
use domain::{Decision, Fleet};

/// What the doctor reads of FLEET_EVENTS (the newest of each, per cluster).
pub const FLEET_SUBJECTS: [&str; 4] = [
    "canopy.evt.*.agent.heartbeat",
    "canopy.evt.*.agent.started",
    "canopy.evt.*.health.reported",
    "canopy.evt.*.inventory.snapshot",
];
/// What the doctor reads of FLEET_EVENTS from the freshness look-back on (all of it): when
/// audits completed and which audit and inventory commands failed.
pub const FACT_SUBJECTS: [&str; 2] = [
    "canopy.evt.*.audit.completed",
    "canopy.evt.*.command.failed",
];
/// What the doctor reads of CONTROL (all of it): link events and its own decisions, approvals,
/// rejections and the commands of remediations.
pub const CONTROL_SUBJECTS: [&str; 5] = [
    "canopy.ctl.link.>",
    "canopy.ctl.health.>",
    "canopy.ctl.diagnosis.>",
    "canopy.ctl.remediation.>",
    "canopy.ctl.command.requested",
];
const DRAIN: Duration = Duration::from_secs(10);

pub struct App {
    cfg: Config,
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-doctor").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        for stream in [streams::fleet_events(), streams::control()] {
            streams::ensure(&js, &stream).await?;
        }
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            client,
            js,
            health,
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.health.readiness();
        let health = tokio::spawn(self.health.serve(shutdown.clone()));
        let result = follow(&self.cfg, &self.js, &readiness, &shutdown).await;
        readiness.set_ready(false);
        let _ = tokio::time::timeout(DRAIN, self.client.drain()).await;
        let _ = health.await;
        result
    }
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

/// An ordered consumer over `subjects` of `stream` and whether it has anything to replay.
async fn open(
    js: &jetstream::Context,
    stream: &str,
    subjects: &[&str],
    deliver_policy: DeliverPolicy,
) -> anyhow::Result<(pull::Ordered, bool)> {
    let stream = js
        .get_stream(stream)
        .await
        .with_context(|| format!("failed to open stream {stream}"))?;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("failed to create an ordered consumer")?;
    let pending = consumer
        .info()
        .await
        .context("failed to read the consumer")?
        .num_pending;
    let messages = consumer
        .messages()
        .await
        .context("failed to pull messages")?;
    Ok((messages, pending > 0))
}

/// How far back the doctor reads audits and failed commands: twice the larger freshness age, so
/// that a rebuilt doctor knows at least what any open freshness diagnosis was raised on.
fn look_back(cfg: &Config) -> Duration {
    2 * cfg.audit_max_age.max(cfg.inventory_max_age)
}

/// An inventory chunk's envelope without its objects (prost skips them unread): the doctor only
/// needs to know when a snapshot completed, and chunks are the largest events of the fleet.
#[derive(Clone, PartialEq, prost::Message)]
struct ChunkEnvelope {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(string, tag = "2")]
    cluster_id: String,
    #[prost(message, optional, tag = "3")]
    occurred_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "22")]
    inventory_snapshot: Option<ChunkHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChunkHead {
    #[prost(string, tag = "1")]
    snapshot_id: String,
    #[prost(uint32, tag = "2")]
    chunk_index: u32,
    #[prost(bool, tag = "3")]
    last_chunk: bool,
    #[prost(uint64, tag = "4")]
    total_objects: u64,
}

/// The head of an inventory chunk as a body; `None` when it is not one of `subject`'s cluster.
fn chunk_head(
    subject: &str,
    payload: &[u8],
) -> Option<(String, prost_types::Timestamp, String, Body)> {
    use prost::Message as _;
    let env = ChunkEnvelope::decode(payload).ok()?;
    let head = env.inventory_snapshot?;
    (subject.split('.').nth(2) == Some(env.cluster_id.as_str())).then_some(())?;
    Some((
        env.cluster_id,
        env.occurred_at?,
        env.event_id,
        Body::InventorySnapshot(InventorySnapshot {
            snapshot_id: head.snapshot_id,
            chunk_index: head.chunk_index,
            last_chunk: head.last_chunk,
            total_objects: head.total_objects,
            objects: Vec::new(),
        }),
    ))
}

fn millis_of(at: &prost_types::Timestamp) -> i64 {
    at.seconds * 1000 + i64::from(at.nanos / 1_000_000)
}

/// Folds one message; true when it was the last one pending at delivery.
fn fold(fleet: &mut Fleet, m: &jetstream::Message) -> bool {
    let pending = m.info().map(|i| i.pending).unwrap_or(0);
    if m.subject.ends_with(".inventory.snapshot") {
        match chunk_head(&m.subject, &m.payload) {
            Some((cluster, at, id, body)) => fleet.apply(&cluster, millis_of(&at), &id, &body),
            None => warn!(subject = %m.subject, "skipping an undecodable inventory chunk"),
        }
        return pending == 0;
    }
    match envelope::decode(&m.subject, &m.payload) {
        Ok(env) => {
            if let (Some(body), Some(at)) = (&env.body, env.occurred_at) {
                fleet.apply(&env.cluster_id, millis_of(&at), &env.event_id, body);
            }
        }
        // Ingestion dead-letters these; the doctor only skips them.
        Err(e) => warn!(subject = %m.subject, error = %e, "skipping undecodable event"),
    }
    pending == 0
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn follow(
    cfg: &Config,
    js: &jetstream::Context,
    readiness: &canopy_kit::health::Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut fleet = Fleet::new(cfg.settings());
    let (mut fleet_msgs, mut fleet_behind) = open(
        js,
        streams::FLEET_EVENTS,
        &FLEET_SUBJECTS,
        DeliverPolicy::LastPerSubject,
    )
    .await?;
    let from = chrono::Utc::now() - chrono::Duration::from_std(look_back(cfg))?;
    let start_time =
        async_nats::datetime::from_nanos(from.timestamp_nanos_opt().map_or(0, i128::from))
            .map_err(|e| anyhow::anyhow!("failed to convert the look-back time: {e}"))?;
    let (mut fact_msgs, mut facts_behind) = open(
        js,
        streams::FLEET_EVENTS,
        &FACT_SUBJECTS,
        DeliverPolicy::ByStartTime { start_time },
    )
    .await?;
    let (mut control_msgs, mut control_behind) =
        open(js, streams::CONTROL, &CONTROL_SUBJECTS, DeliverPolicy::All).await?;
    let started = Instant::now();
    let mut live = false;
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unpublished: VecDeque<Decision> = VecDeque::new();
    loop {
        if !live && !fleet_behind && !facts_behind && !control_behind {
            live = true;
            readiness.set_ready(true);
            info!(
                clusters = fleet.clusters.len(),
                remediations = fleet.remediations.len(),
                took = ?started.elapsed(),
                "fleet state rebuilt from the log; judging"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            m = fleet_msgs.next() => match m {
                Some(Ok(m)) => {
                    metrics::counter!("canopy_doctor_events_total", "stream" => "fleet").increment(1);
                    if fold(&mut fleet, &m) { fleet_behind = false; }
                }
                Some(Err(e)) => warn!(error = %e, "FLEET_EVENTS consumer error"),
                None => anyhow::bail!("the FLEET_EVENTS consumer ended"),
            },
            m = fact_msgs.next() => match m {
                Some(Ok(m)) => {
                    metrics::counter!("canopy_doctor_events_total", "stream" => "fleet").increment(1);
                    if fold(&mut fleet, &m) { facts_behind = false; }
                }
                Some(Err(e)) => warn!(error = %e, "FLEET_EVENTS consumer error"),
                None => anyhow::bail!("the FLEET_EVENTS consumer ended"),
            },
            m = control_msgs.next() => match m {
                Some(Ok(m)) => {
                    metrics::counter!("canopy_doctor_events_total", "stream" => "control").increment(1);
                    if fold(&mut fleet, &m) { control_behind = false; }
                }
                Some(Err(e)) => warn!(error = %e, "CONTROL consumer error"),
                None => anyhow::bail!("the CONTROL consumer ended"),
            },
            _ = tick.tick(), if live => {
                let began = Instant::now();
                unpublished.extend(fleet.tick(now_ms()));
                publish_all(js, &mut unpublished).await;
                metrics::histogram!("canopy_doctor_tick_seconds").record(began.elapsed().as_secs_f64());
                for (state, n) in fleet.counts() {
                    metrics::gauge!("canopy_doctor_clusters", "health" => state).set(n as f64);
                }
            }
        }
    }
    Ok(())
}

/// Publishes decisions in order; stops at the first failure and keeps the rest for the next
/// tick (same event ids: JetStream stores each once).
async fn publish_all(js: &jetstream::Context, queue: &mut VecDeque<Decision>) {
    while let Some(d) = queue.front() {
        let env = to_envelope(d);
        match canopy_kit::publish::publish(js, &env).await {
            Ok(_) => {
                let (area, event) = envelope::event_type(&d.body);
                info!(cluster = d.cluster.as_deref().unwrap_or(""), area, event, id = %d.event_id, "decided");
                metrics::counter!("canopy_doctor_decisions_total", "event" => format!("{area}.{event}")).increment(1);
                queue.pop_front();
            }
            Err(e) => {
                warn!(error = %e, pending = queue.len(), "failed to publish a decision; retrying next tick");
                return;
            }
        }
    }
}

fn to_envelope(d: &Decision) -> Envelope {
    let cluster = d
        .cluster
        .as_deref()
        .and_then(|c| canopy_kit::subject::ClusterId::parse(c).ok());
    let mut env = envelope::new_for(cluster.as_ref(), "doctor", d.body.clone());
    env.event_id.clone_from(&d.event_id);
    env
}
