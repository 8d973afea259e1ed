//! Command dispatch: builds its state from events (CONTROL command requests, dispatches,
//! rejections, time-outs and revocations; FLEET_EVENTS `AgentStarted` for clusters and labels and
//! the agents' command reports), both replayed from the beginning and then followed live. Each
//! request is decided once: refused (`CommandRejected`), or one `Command` per target cluster on
//! COMMANDS (`canopy.cmd.<cluster>.<kind>`, `Nats-Msg-Id` = `<cluster>:<command id>`, which each
//! leaf's COMMANDS sources) followed by a `CommandDispatched`. Runs that have not ended by their
//! deadline are marked `CommandTimedOut`.

pub mod domain;
pub mod schedules;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use chrono::Utc;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    Command, CommandDispatched, CommandRejected, CommandRequested, CommandTimedOut, Envelope,
    envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;

use domain::{CommandState, Decision};
use schedules::Schedules;

/// How dispatch behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Schedule ticks missed (cnc down) fire late when they are at most this old.
    pub catch_up: Duration,
}

/// CONTROL subjects the dispatcher folds.
pub const CONTROL_FILTERS: &[&str] = &[
    "canopy.ctl.command.>",
    "canopy.ctl.schedule.>",
    "canopy.ctl.interconnect.revoked",
];
/// FLEET_EVENTS subjects the dispatcher folds.
pub const FLEET_FILTERS: &[&str] = &["canopy.evt.*.agent.started", "canopy.evt.*.command.>"];
const PRODUCER: &str = "cnc";
/// How often runs are checked against their deadlines.
const SWEEP: Duration = Duration::from_millis(500);
/// A run's report may be on its way when the deadline passes: it gets this long to arrive.
const GRACE: chrono::Duration = chrono::Duration::seconds(1);

/// Runs dispatch until `shutdown`; failures (NATS away) restart it with backoff, replaying the
/// state from the streams.
pub async fn run(js: jetstream::Context, opts: Options, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = run_once(&js, opts, &shutdown) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "command dispatch failed; restarting")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn ordered(filters: &[&str]) -> OrderedConfig {
    OrderedConfig {
        filter_subjects: filters.iter().map(|s| (*s).to_owned()).collect(),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    }
}

async fn run_once(
    js: &jetstream::Context,
    opts: Options,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let catch_up = chrono::Duration::from_std(opts.catch_up).unwrap_or(chrono::Duration::zero());
    let control = js
        .get_stream(streams::CONTROL)
        .await
        .context("failed to open CONTROL")?
        .create_consumer(ordered(CONTROL_FILTERS))
        .await
        .context("failed to read CONTROL")?;
    let fleet = js
        .get_stream(streams::FLEET_EVENTS)
        .await
        .context("failed to open FLEET_EVENTS")?
        .create_consumer(ordered(FLEET_FILTERS))
        .await
        .context("failed to read FLEET_EVENTS")?;
    let mut caught_up = (
        control.cached_info().num_pending == 0,
        fleet.cached_info().num_pending == 0,
    );
    let mut control = control.messages().await?;
    let mut fleet = fleet.messages().await?;
    let mut state = CommandState::default();
    let mut schedules = Schedules::default();
    let mut live = false;
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut swept = false;
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = control.next() => {
                let m = m.context("the CONTROL consumer ended")??;
                let pending = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
                match envelope::decode_on(Plane::Ctl, &m.subject, &m.payload) {
                    Ok(env) => if let Some(body) = &env.body {
                        let at = domain::to_time(env.occurred_at.as_ref()).unwrap_or_else(Utc::now);
                        schedules.apply(at, body);
                        state.apply_control(&env.cluster_id, body);
                    },
                    Err(e) => warn!(subject = %m.subject, error = %e, "undecodable control event skipped"),
                }
                caught_up.0 |= pending == 0;
            }
            m = fleet.next() => {
                let m = m.context("the FLEET_EVENTS consumer ended")??;
                let pending = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
                match envelope::decode_on(Plane::Evt, &m.subject, &m.payload) {
                    Ok(env) => match &env.body {
                        Some(Body::AgentStarted(s)) => state.apply_agent(&env.cluster_id, &s.labels),
                        Some(body) => state.apply_result(&env.cluster_id, body),
                        None => {}
                    },
                    Err(e) => warn!(subject = %m.subject, error = %e, "undecodable fleet event skipped"),
                }
                caught_up.1 |= pending == 0;
            }
            _ = sweep.tick() => swept = true,
        }
        if !(caught_up.0 && caught_up.1) {
            continue;
        }
        if !live {
            live = true;
            info!(
                clusters = state.clusters(),
                tracked = state.tracked(),
                schedules = schedules.len(),
                "command state replayed; dispatching"
            );
        }
        if swept {
            for request in schedules.due(Utc::now(), catch_up) {
                fire(js, &request).await?;
                if let Some(tick) = domain::to_time(request.scheduled_for.as_ref()) {
                    schedules.fired(&request.schedule_id, tick);
                }
                state.apply_control("", &Body::CommandRequested(request));
            }
        }
        for request in state.take_undecided() {
            let decision = state.decide(&request, Utc::now());
            publish_decision(js, &request, &decision).await?;
            state.record(&request.command_id, &decision);
        }
        if swept {
            time_out(js, &mut state).await?;
            state.forget_finished();
        }
    }
}

/// Publishes a schedule's tick as a request; its id is derived from (schedule, tick), so a tick
/// fired twice (a crash before the state moved on) is stored once.
async fn fire(js: &jetstream::Context, request: &CommandRequested) -> anyhow::Result<()> {
    let mut env = envelope::new_for(None, PRODUCER, Body::CommandRequested(request.clone()));
    env.event_id = request.command_id.clone();
    env.correlation_id = request.schedule_id.clone();
    canopy_kit::publish::publish(js, &env)
        .await
        .context("failed to fire a schedule")?;
    metrics::counter!("canopy_cnc_schedule_fires_total").increment(1);
    info!(
        schedule_id = %request.schedule_id,
        command_id = %request.command_id,
        "schedule fired"
    );
    Ok(())
}

/// A deterministic event id, so that a decision published again after a crash is dropped by
/// the stream's duplicate window.
fn event_id(command_id: &str, cluster: &str, what: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy/{command_id}/{cluster}/{what}").as_bytes(),
    )
    .to_string()
}

fn control_env(request_id: &str, cluster: Option<&ClusterId>, what: &str, body: Body) -> Envelope {
    let mut env = envelope::new_for(cluster, PRODUCER, body);
    env.event_id = event_id(request_id, cluster.map_or("", ClusterId::as_str), what);
    env.correlation_id = request_id.to_owned();
    env.causation_id = request_id.to_owned();
    env
}

async fn publish_decision(
    js: &jetstream::Context,
    request: &CommandRequested,
    decision: &Decision,
) -> anyhow::Result<()> {
    let id = request.command_id.as_str();
    let clusters = match decision {
        Decision::Reject { reason, detail } => {
            let env = control_env(
                id,
                None,
                "rejected",
                Body::CommandRejected(CommandRejected {
                    command_id: id.to_owned(),
                    kind: request.kind,
                    reason: (*reason).to_owned(),
                    detail: detail.clone(),
                }),
            );
            canopy_kit::publish::publish(js, &env)
                .await
                .context("failed to publish a CommandRejected")?;
            metrics::counter!("canopy_cnc_commands_rejected_total", "reason" => *reason)
                .increment(1);
            info!(command_id = id, reason, detail, "command rejected");
            return Ok(());
        }
        Decision::Dispatch(clusters) => clusters,
    };
    // The commands first (pipelined), then their CommandDispatched: a dispatch on CONTROL always
    // names a command that is on COMMANDS.
    let mut acks = Vec::with_capacity(clusters.len());
    for cluster in clusters {
        let Ok(cid) = ClusterId::parse(cluster) else {
            continue;
        };
        let mut env = envelope::new(
            &cid,
            PRODUCER,
            Body::Command(Command {
                command_id: id.to_owned(),
                kind: request.kind,
                params: request.params.clone(),
                deadline: request.deadline,
                requested_by: request.requested_by.clone(),
            }),
        );
        // Nats-Msg-Id = <cluster>:<command id>: the same run is stored once, on the seed and on
        // the leaf that sources it.
        env.event_id = id.to_owned();
        env.correlation_id = id.to_owned();
        env.causation_id = id.to_owned();
        let ack = canopy_kit::publish::send(js, &env)
            .await
            .context("failed to send a command")?;
        acks.push((cid, ack));
    }
    let mut dispatched = Vec::with_capacity(acks.len());
    for (cid, ack) in acks {
        let ack = ack
            .await
            .with_context(|| format!("failed to store the command for {cid}"))?;
        let env = control_env(
            id,
            Some(&cid),
            "dispatched",
            Body::CommandDispatched(CommandDispatched {
                command_id: id.to_owned(),
                kind: request.kind,
                deadline: request.deadline,
                commands_sequence: ack.sequence,
            }),
        );
        dispatched.push(
            canopy_kit::publish::send(js, &env)
                .await
                .context("failed to send a CommandDispatched")?,
        );
    }
    for ack in dispatched {
        ack.await.context("failed to store a CommandDispatched")?;
    }
    metrics::counter!("canopy_cnc_commands_dispatched_total").increment(clusters.len() as u64);
    info!(
        command_id = id,
        kind = envelope::command_kind_token(request.kind),
        clusters = clusters.len(),
        "command dispatched"
    );
    Ok(())
}

async fn time_out(js: &jetstream::Context, state: &mut CommandState) -> anyhow::Result<()> {
    for o in state.overdue(Utc::now(), GRACE) {
        let Ok(cid) = ClusterId::parse(&o.cluster) else {
            continue;
        };
        let body = Body::CommandTimedOut(CommandTimedOut {
            command_id: o.command_id.clone(),
            kind: o.kind,
            deadline: Some(prost_types::Timestamp {
                seconds: o.deadline.timestamp(),
                nanos: i32::try_from(o.deadline.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            last_state: o.last_state.name().to_owned(),
        });
        let env = control_env(&o.command_id, Some(&cid), "timed_out", body.clone());
        canopy_kit::publish::publish(js, &env)
            .await
            .context("failed to publish a CommandTimedOut")?;
        metrics::counter!("canopy_cnc_commands_timed_out_total").increment(1);
        info!(command_id = %o.command_id, cluster = %o.cluster, last_state = o.last_state.name(), "command timed out");
        state.apply_control(&o.cluster, &body);
    }
    Ok(())
}
