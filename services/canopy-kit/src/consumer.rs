//! The durable pull-consumer loop: batches, explicit acks, bounded in-flight work, retries with
//! backoff, and a graceful drain.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{
    self, AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Which durable consumer to run and how much work it may hold at once.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    pub durable: String,
    /// Subjects to consume (empty: the whole stream).
    pub filter_subjects: Vec<String>,
    /// Most messages handed to the handler at once (and pulled per request).
    pub batch: usize,
    /// Most delivered-but-unacked messages; bounds in-flight work.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// For handlers that keep their own checkpoint (the last sequence they applied): the durable
    /// consumer is recreated to deliver from the sequence after it, in order. Without this, a
    /// consumer whose previous instance died holding delivered, unacked messages hands out newer
    /// messages first and the older ones only after `ack_wait` — behind a checkpoint that has
    /// moved past them.
    pub resume_after: Option<u64>,
}

impl ConsumerSpec {
    pub fn new(stream: &str, durable: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            filter_subjects: Vec::new(),
            batch: 500,
            max_ack_pending: 5_000,
            ack_wait: Duration::from_secs(10),
            resume_after: None,
        }
    }
}

/// Handles one batch. Returning an error means "not applied": the batch is retried with backoff
/// (the handler must make re-applying safe, e.g. with a checkpoint). Messages that can never be
/// handled must be dealt with inside the handler (dead-lettered), not returned as errors.
pub trait BatchHandler: Send {
    fn handle(&mut self, batch: &[Message]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Creates the durable consumer when missing and runs it until `shutdown` is cancelled. On
/// shutdown the batch in hand is finished and acked; messages already delivered but not yet
/// handled are nak'ed so that the next instance gets them at once.
pub async fn run<H: BatchHandler>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: &mut H,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let stream = js
        .get_stream(&spec.stream)
        .await
        .with_context(|| format!("failed to open stream {}", spec.stream))?;
    let deliver_policy = match spec.resume_after {
        Some(applied) => {
            // A fresh consumer positioned after the checkpoint; the old one (and what it held
            // delivered but unacked) is gone.
            match stream.delete_consumer(&spec.durable).await {
                Ok(_) => {
                    debug!(consumer = %spec.durable, "recreating the consumer at the checkpoint")
                }
                Err(e) => debug!(consumer = %spec.durable, error = %e, "no consumer to recreate"),
            }
            DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            }
        }
        None => DeliverPolicy::All,
    };
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &spec.durable,
            pull::Config {
                durable_name: Some(spec.durable.clone()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy,
                filter_subjects: spec.filter_subjects.clone(),
                max_ack_pending: spec.max_ack_pending,
                ack_wait: spec.ack_wait,
                ..Default::default()
            },
        )
        .await
        .with_context(|| {
            format!(
                "failed to create consumer {} on {}",
                spec.durable, spec.stream
            )
        })?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .with_context(|| format!("failed to pull from consumer {}", spec.durable))?;
    let mut chunks = messages.ready_chunks(spec.batch);
    info!(stream = %spec.stream, consumer = %spec.durable, "consuming");
    loop {
        let chunk = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            warn!(consumer = %spec.durable, "message stream ended");
            break;
        };
        let mut batch = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item {
                Ok(m) => batch.push(m),
                // Missed heartbeats and the like: the stream recovers by itself.
                Err(e) => warn!(consumer = %spec.durable, error = %e, "pull error"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        if !handle_with_retry(handler, &batch, shutdown).await {
            // Shut down while retrying: leave the batch unacked for the next instance.
            nak_all(&batch).await;
            break;
        }
        ack_all(&batch).await;
        metrics::counter!("canopy_consumer_messages_total", "consumer" => spec.durable.clone())
            .increment(batch.len() as u64);
    }
    // Drain what was delivered but not handled.
    let mut leftover = Vec::new();
    while let Some(Some(chunk)) = chunks.next().now_or_never() {
        leftover.extend(chunk.into_iter().filter_map(Result::ok));
    }
    if !leftover.is_empty() {
        debug!(count = leftover.len(), "returning undelivered messages");
        nak_all(&leftover).await;
    }
    Ok(())
}

/// Retries until the handler succeeds (true) or shutdown is requested (false).
async fn handle_with_retry<H: BatchHandler>(
    handler: &mut H,
    batch: &[Message],
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match handler.handle(batch).await {
            Ok(()) => return true,
            Err(e) => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "batch failed; retrying");
                metrics::counter!("canopy_consumer_batch_failures_total").increment(1);
                // Keep the server from redelivering while we retry.
                for m in batch {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn ack_all(batch: &[Message]) {
    for m in batch {
        if let Err(e) = m.ack().await {
            // The message will be redelivered; handlers are idempotent.
            warn!(error = %e, subject = %m.subject, "ack failed");
        }
    }
}

async fn nak_all(batch: &[Message]) {
    for m in batch {
        let _ = m.ack_with(AckKind::Nak(None)).await;
    }
}
