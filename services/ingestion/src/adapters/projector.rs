//! The batch handler: decodes FLEET_EVENTS messages, dead-letters what cannot be applied, and
//! applies the rest with the checkpoint in one transaction.

use anyhow::Context as _;
use async_nats::jetstream::{self, Message, message::PublishMessage};
use chrono::DateTime;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::{instrument, warn};

use canopy_kit::consumer::BatchHandler;
use canopy_kit::envelope::{self, EnvelopeError, Plane};
use canopy_kit::subject;

use super::postgres;
use crate::domain::{self, Event};

pub struct Projector {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub stream: String,
    /// The plane every event of `stream` must be on (anything else is dead-lettered).
    pub plane: Plane,
    pub consumer: String,
    /// The last applied stream sequence, for `rebuild` progress and tests.
    pub progress: watch::Sender<u64>,
}

struct Rejected<'a> {
    seq: u64,
    message: &'a Message,
    error: EnvelopeError,
}

impl BatchHandler for Projector {
    #[instrument(skip_all, fields(size = batch.len()))]
    async fn handle(&mut self, batch: &[Message]) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        let mut max_seq = 0;
        for m in batch {
            let span = tracing::Span::current();
            canopy_kit::telemetry::set_parent_from(&span, m.headers.as_ref());
            let seq = m
                .info()
                .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?
                .stream_sequence;
            max_seq = max_seq.max(seq);
            match envelope::decode_on(self.plane, &m.subject, &m.payload)
                .and_then(|env| to_event(seq, env))
            {
                Ok(e) => events.push(e),
                Err(error) => rejected.push(Rejected {
                    seq,
                    message: m,
                    error,
                }),
            }
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .context("failed to begin a transaction")?;
        let checkpoint = postgres::lock_checkpoint(&mut tx, &self.stream, &self.consumer).await?;
        if max_seq <= checkpoint {
            // All redeliveries of what is applied already.
            return Ok(());
        }
        events.retain(|e| e.seq > checkpoint);
        for r in rejected.iter().filter(|r| r.seq > checkpoint) {
            self.dead_letter(r).await?;
        }
        let applied = events.len();
        postgres::apply(&mut tx, domain::plan(events)).await?;
        postgres::save_checkpoint(&mut tx, &self.stream, &self.consumer, max_seq).await?;
        tx.commit().await.context("failed to commit the batch")?;
        metrics::counter!("canopy_ingestion_events_applied_total").increment(applied as u64);
        self.progress.send_replace(max_seq);
        Ok(())
    }
}

impl Projector {
    /// Publishes the original message to DEAD_LETTER with the reason; dedup by source sequence
    /// makes a retried batch publish it once.
    async fn dead_letter(&self, r: &Rejected<'_>) -> anyhow::Result<()> {
        let reason = match r.error {
            EnvelopeError::Decode(_) => "undecodable",
            EnvelopeError::ClusterMismatch { .. } => "forged",
            _ => "invalid",
        };
        let subject = subject::dead_letter("ingestion", reason)?;
        let error: String = r.error.to_string().chars().take(512).collect::<String>();
        warn!(seq = r.seq, subject = %r.message.subject, %error, "dead-lettering event");
        let msg = PublishMessage::build()
            .payload(r.message.payload.clone())
            .message_id(format!("dlq:ingestion:{}:{}", self.stream, r.seq))
            .header("Canopy-Source-Stream", self.stream.as_str())
            .header("Canopy-Source-Sequence", r.seq.to_string().as_str())
            .header("Canopy-Source-Subject", r.message.subject.as_str())
            .header("Canopy-Error", error.replace(['\r', '\n'], " ").as_str());
        self.js
            .send_publish(subject, msg)
            .await
            .context("failed to publish to DEAD_LETTER")?
            .await
            .context("DEAD_LETTER did not acknowledge")?;
        metrics::counter!("canopy_ingestion_dead_lettered_total", "reason" => reason).increment(1);
        Ok(())
    }
}

fn to_event(seq: u64, env: canopy_kit::proto::event::v1::Envelope) -> Result<Event, EnvelopeError> {
    let at = env.occurred_at.ok_or(EnvelopeError::NoTime)?;
    let occurred_at = DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
        .ok_or(EnvelopeError::NoTime)?;
    Ok(Event {
        seq,
        cluster_id: env.cluster_id,
        occurred_at,
        body: env.body.ok_or(EnvelopeError::NoBody)?,
    })
}
