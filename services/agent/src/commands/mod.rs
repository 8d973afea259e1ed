//! The command runner: a durable consumer on the leaf's COMMANDS stream (sourced from the
//! seed's, filtered to this cluster) that runs each command **at most once**.
//!
//! Before a command runs, its id is written to the leaf's `canopy-agent` key-value bucket with
//! `create` (which fails when the key exists), then `CommandAccepted` is stored; the outcome
//! (`CommandSucceeded` or `CommandFailed`) is stored and the key set to `done` before the
//! message is acked. So a redelivered command whose key exists is never run again: when it is
//! `done` it is only acked; when it is still `accepted` the agent that accepted it stopped
//! midway, and the run is reported failed ("interrupted"), not started again. At start-up every
//! key left `accepted` by an earlier instance is reported that way at once. A command whose
//! deadline has passed is never started (failed, "deadline_passed"), and a running one is
//! abandoned at its deadline.

pub mod outcome;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self, AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, pull},
    kv,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    Command, CommandAccepted, CommandFailed, CommandKind, CommandSucceeded, Envelope,
    envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::{self, ClusterId};

use crate::adapters::publisher::{Published, publish_until_stored};
use crate::requests::Requesters;

pub use outcome::Outcome;

/// The leaf's key-value bucket of the agent's own state.
pub const BUCKET: &str = "canopy-agent";
/// The durable consumer of the leaf's COMMANDS.
pub const CONSUMER: &str = "agent";
/// Commands run at once.
const PARALLEL: usize = 8;
/// The server redelivers an unacked command after this long; a running command keeps telling
/// it that it is in progress well within it.
const ACK_WAIT: Duration = Duration::from_secs(30);
const PROGRESS: Duration = Duration::from_secs(10);
const PRODUCER: &str = "agent";

const ACCEPTED: &[u8] = b"accepted";
const DONE: &[u8] = b"done";

/// What a command needs to run.
#[derive(Clone)]
pub struct Context {
    pub cluster: ClusterId,
    pub js: jetstream::Context,
    /// For the remediation kinds (see `crate::remediate`).
    pub kube: kube::Client,
    pub requesters: Requesters,
    /// Cancelled when the agent stops: running commands are interrupted.
    pub shutdown: CancellationToken,
    /// Cancelled when the stop's deadline is reached: storing reports is abandoned.
    pub drain: CancellationToken,
}

/// Runs commands until `shutdown`; returns once the running ones have reported.
pub async fn run(ctx: Context) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            outcome = run_once(&ctx) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "command runner failed; restarting")
            }
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn run_once(ctx: &Context) -> anyhow::Result<()> {
    // The leaf's COMMANDS is created by the leaf's gateway; wait for it rather than create it
    // with other settings.
    let stream = ctx
        .js
        .get_stream(streams::COMMANDS)
        .await
        .context("the leaf's COMMANDS stream is not there yet")?;
    let store = bucket(&ctx.js).await?;
    report_interrupted(ctx, &store).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                filter_subject: subject::cluster_commands(&ctx.cluster),
                ack_wait: ACK_WAIT,
                max_ack_pending: 256,
                ..Default::default()
            },
        )
        .await
        .context("failed to create the command consumer")?;
    let mut messages = consumer
        .stream()
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .context("failed to pull commands")?;
    info!("running commands");
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let result = loop {
        let m = tokio::select! {
            () = ctx.shutdown.cancelled() => break Ok(()),
            m = messages.next() => m,
        };
        let m = match m {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(error = %e, "command pull error");
                continue;
            }
            None => break Err(anyhow::anyhow!("the command consumer ended")),
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let (ctx, store, running) = (ctx.clone(), store.clone(), running.clone());
        tasks.spawn(async move {
            handle(&ctx, &store, &running, m).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    };
    // Running commands see the stop and report themselves interrupted.
    while tasks.join_next().await.is_some() {}
    result
}

async fn bucket(js: &jetstream::Context) -> anyhow::Result<kv::Store> {
    match js.get_key_value(BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_owned(),
                description: "The agent's own state: commands accepted and done".to_owned(),
                history: 1,
                max_age: 30 * 24 * Duration::from_secs(3600),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("failed to create the agent's key-value bucket"),
    }
}

fn key(command_id: &str) -> String {
    format!("cmd.{command_id}")
}

/// Reports every command an earlier instance accepted and did not finish.
async fn report_interrupted(ctx: &Context, store: &kv::Store) -> anyhow::Result<()> {
    let mut keys = store
        .keys()
        .await
        .context("failed to list the agent's state")?;
    let mut left = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.context("failed to list the agent's state")?;
        if let Some(v) = store
            .get(&k)
            .await
            .context("failed to read the agent's state")?
            && v.as_ref() == ACCEPTED
        {
            left.push(k);
        }
    }
    for k in left {
        let Some(command_id) = k.strip_prefix("cmd.") else {
            continue;
        };
        warn!(
            command_id,
            "a command was accepted by an earlier run and not finished; reported interrupted"
        );
        let failed = Outcome::failed(
            "interrupted",
            "the agent stopped while it ran the command; it is not run again",
        );
        finish(
            ctx,
            store,
            command_id,
            CommandKind::Unspecified as i32,
            failed,
            0,
        )
        .await?;
    }
    Ok(())
}

fn deadline_of(cmd: &Command) -> Option<DateTime<Utc>> {
    let t = cmd.deadline.as_ref()?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

/// Handles one delivery of a command; acks it once its outcome is stored (or it needs nothing).
async fn handle(ctx: &Context, store: &kv::Store, running: &Mutex<HashSet<String>>, m: Message) {
    let cmd = match envelope::decode_on(Plane::Cmd, &m.subject, &m.payload) {
        Ok(Envelope {
            body: Some(Body::Command(cmd)),
            ..
        }) => cmd,
        Ok(_) | Err(_) => {
            warn!(subject = %m.subject, "undecodable command dropped");
            let _ = m.ack_with(AckKind::Term).await;
            return;
        }
    };
    let id = cmd.command_id.clone();
    {
        let Ok(mut running) = running.lock() else {
            return;
        };
        // Redelivered while this agent runs it: the running task acks it when done.
        if !running.insert(id.clone()) {
            return;
        }
    }
    let acked = match execute_once(ctx, store, &m, &cmd).await {
        Ok(()) => m.ack().await.map_err(|e| anyhow::anyhow!("{e}")),
        Err(e) => Err(e),
    };
    if let Err(e) = acked {
        // Not acked: redelivered later, and the state in the bucket decides what happens then.
        warn!(command_id = %id, error = format!("{e:#}"), "command not settled; it will be looked at again");
    }
    if let Ok(mut running) = running.lock() {
        running.remove(&id);
    }
}

async fn execute_once(
    ctx: &Context,
    store: &kv::Store,
    m: &Message,
    cmd: &Command,
) -> anyhow::Result<()> {
    let id = cmd.command_id.as_str();
    match store
        .get(key(id))
        .await
        .context("failed to read the command's state")?
    {
        Some(v) if v.as_ref() == DONE => return Ok(()),
        Some(_) => {
            let failed = Outcome::failed(
                "interrupted",
                "the agent stopped while it ran the command; it is not run again",
            );
            return finish(ctx, store, id, cmd.kind, failed, 0).await;
        }
        None => {}
    }
    let Some(deadline) = deadline_of(cmd) else {
        let failed = Outcome::failed("invalid", "the command has no deadline");
        return finish(ctx, store, id, cmd.kind, failed, 0).await;
    };
    let now = Utc::now();
    if deadline <= now {
        info!(command_id = id, %deadline, "command arrived after its deadline; not run");
        metrics::counter!("canopy_agent_commands_expired_total").increment(1);
        let failed = Outcome::failed(
            "deadline_passed",
            &format!("the deadline {deadline} passed before the command reached the agent"),
        );
        return finish(ctx, store, id, cmd.kind, failed, 0).await;
    }
    // The claim: whoever creates the key runs the command.
    match store.create(key(id), Bytes::from_static(ACCEPTED)).await {
        Ok(_) => {}
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "failed to record the command as accepted: {e}"
            ));
        }
    }
    let accepted = envelope::new(
        &ctx.cluster,
        PRODUCER,
        Body::CommandAccepted(CommandAccepted {
            command_id: id.to_owned(),
            kind: cmd.kind,
        }),
    );
    store_event(ctx, accepted, id).await?;
    info!(
        command_id = id,
        kind = envelope::command_kind_token(cmd.kind),
        "command accepted"
    );
    let started = Instant::now();
    let budget = (deadline - now).to_std().unwrap_or_default();
    let work = async {
        tokio::select! {
            () = ctx.shutdown.cancelled() => Outcome::failed(
                "interrupted",
                "the agent was stopped while it ran the command",
            ),
            r = tokio::time::timeout(budget, execute(ctx, cmd)) => r.unwrap_or_else(|_| {
                Outcome::failed("deadline_passed", &format!("not finished by the deadline {deadline}"))
            }),
        }
    };
    tokio::pin!(work);
    let mut progress = tokio::time::interval(PROGRESS);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = progress.tick() => { let _ = m.ack_with(AckKind::Progress).await; }
        }
    };
    let took = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    finish(ctx, store, id, cmd.kind, outcome, took).await
}

/// Stores the outcome, then marks the command done.
async fn finish(
    ctx: &Context,
    store: &kv::Store,
    command_id: &str,
    kind: i32,
    outcome: Outcome,
    duration_ms: u32,
) -> anyhow::Result<()> {
    let body = match outcome {
        Outcome::Succeeded { summary, result } => {
            metrics::counter!("canopy_agent_commands_total", "outcome" => "succeeded").increment(1);
            info!(command_id, %summary, "command succeeded");
            Body::CommandSucceeded(CommandSucceeded {
                command_id: command_id.to_owned(),
                kind,
                summary,
                duration_ms,
                result,
            })
        }
        Outcome::Failed { reason, error } => {
            metrics::counter!("canopy_agent_commands_total", "outcome" => "failed").increment(1);
            warn!(command_id, %reason, %error, "command failed");
            Body::CommandFailed(CommandFailed {
                command_id: command_id.to_owned(),
                kind,
                reason,
                error,
                duration_ms,
            })
        }
    };
    let env = envelope::new(&ctx.cluster, PRODUCER, body);
    store_event(ctx, env, command_id).await?;
    store
        .put(key(command_id), Bytes::from_static(DONE))
        .await
        .context("failed to record the command as done")?;
    Ok(())
}

async fn store_event(ctx: &Context, env: Envelope, command_id: &str) -> anyhow::Result<()> {
    let mut env = env;
    env.correlation_id = command_id.to_owned();
    env.causation_id = command_id.to_owned();
    match publish_until_stored(&ctx.js, &env, &ctx.drain).await {
        Published::Stored => Ok(()),
        Published::Stopped => anyhow::bail!("stopped before the report was stored"),
        Published::Invalid => anyhow::bail!("the report does not validate"),
    }
}

/// Runs one command by kind: the one place that knows every kind.
async fn execute(ctx: &Context, cmd: &Command) -> Outcome {
    let kind = CommandKind::try_from(cmd.kind).unwrap_or(CommandKind::Unspecified);
    let params = cmd.params.as_ref().and_then(|p| p.params.as_ref());
    match kind {
        CommandKind::RunAudit => match ctx.requesters.audit.ask(&cmd.command_id).await {
            Ok(r) => Outcome::audited(r),
            Err(e) => Outcome::failed("audit", &e),
        },
        CommandKind::RefreshInventory => {
            match ctx.requesters.inventory.ask(&cmd.command_id).await {
                Ok(r) => Outcome::inventoried(r),
                Err(e) => Outcome::failed("kubernetes", &e),
            }
        }
        CommandKind::CheckLiveness => outcome::liveness(ctx, &cmd.command_id, params).await,
        CommandKind::RolloutRestart
        | CommandKind::DeletePod
        | CommandKind::CordonNode
        | CommandKind::ScaleWorkload => {
            match crate::remediate::execute(&ctx.kube, kind, params, chrono::Utc::now()).await {
                Ok(action) => Outcome::remediated(action),
                Err(e) => Outcome::failed(e.reason(), &e.to_string()),
            }
        }
        CommandKind::Unspecified => Outcome::failed("invalid", "the command kind is unspecified"),
    }
}
