//! Publishing envelopes to JetStream with `Nats-Msg-Id` and `traceparent`.

use async_nats::{
    HeaderMap,
    jetstream::{self, context::PublishAckFuture, message::PublishMessage},
};
use thiserror::Error;

use crate::envelope::{self, EnvelopeError};
use crate::proto::event::v1::Envelope;
use crate::telemetry;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("cannot publish an invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
    #[error("failed to publish to {subject}: {source}")]
    Publish {
        subject: String,
        source: jetstream::context::PublishError,
    },
}

/// Headers of an event: its dedup id and the current trace context.
pub fn headers_for(env: &Envelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", envelope::msg_id(env).as_str());
    telemetry::inject_current(&mut headers);
    headers
}

/// Sends a validated envelope on its subject and returns the future of the stream's ack, so
/// that callers can keep many publishes in flight.
pub async fn send(
    js: &jetstream::Context,
    env: &Envelope,
) -> Result<PublishAckFuture, PublishError> {
    envelope::validate(env)?;
    let subject = envelope::subject_of(env)?;
    let msg = PublishMessage::build()
        .payload(envelope::encode(env))
        .headers(headers_for(env));
    js.send_publish(subject.clone(), msg)
        .await
        .map_err(|source| PublishError::Publish { subject, source })
}

/// Publishes and waits for the stream's ack; returns the stream sequence.
pub async fn publish(js: &jetstream::Context, env: &Envelope) -> Result<u64, PublishError> {
    let subject = envelope::subject_of(env)?;
    let ack = send(js, env).await?;
    let ack = ack
        .await
        .map_err(|source| PublishError::Publish { subject, source })?;
    Ok(ack.sequence)
}
