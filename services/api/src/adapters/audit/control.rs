//! CONTROL for the policy: the current PolicyChanged (read directly from the stream, so a
//! SetPolicy sees the previous one at once), publishing with optimistic concurrency on
//! `canopy.ctl.policy.changed`, and publishing derogation events.

use async_nats::jetstream::{
    self, context::PublishErrorKind, message::PublishMessage, stream::LastRawMessageErrorKind,
};
use chrono::{DateTime, Utc};
use thiserror::Error;

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{Envelope, PolicyChanged, envelope::Body};
use canopy_kit::streams;
use canopy_kit::subject;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("failed to {action}: {detail}")]
    Nats {
        action: &'static str,
        detail: String,
    },
    /// The subject's last sequence was not the one the write was based on.
    #[error("another policy change was stored first")]
    WrongLastSequence,
    #[error("a stored PolicyChanged does not decode: {0}")]
    Corrupt(String),
}

fn nats(action: &'static str) -> impl FnOnce(String) -> ControlError {
    move |detail| ControlError::Nats { action, detail }
}

/// The current policy as CONTROL holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredPolicy {
    pub changed: PolicyChanged,
    pub at: Option<DateTime<Utc>>,
    /// CONTROL sequence of the PolicyChanged (0: none yet).
    pub seq: u64,
}

/// Publishes control events and reads the policy from CONTROL.
pub trait PolicyLog: Send + Sync + 'static {
    fn current_policy(&self) -> impl Future<Output = Result<StoredPolicy, ControlError>> + Send;
    /// Publishes a PolicyChanged only if `canopy.ctl.policy.changed` is still at `last_seq`.
    fn publish_policy(
        &self,
        env: &Envelope,
        last_seq: u64,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;
    fn publish(&self, env: &Envelope) -> impl Future<Output = Result<u64, ControlError>> + Send;
    /// CONTROL's last sequence.
    fn last_sequence(&self) -> impl Future<Output = Result<u64, ControlError>> + Send;
}

#[derive(Clone)]
pub struct JetStreamControl {
    js: jetstream::Context,
}

impl JetStreamControl {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }
}

fn policy_subject() -> String {
    // Built from constant tokens: cannot fail.
    subject::control("policy", "changed").unwrap_or_else(|_| "canopy.ctl.policy.changed".into())
}

impl PolicyLog for JetStreamControl {
    async fn current_policy(&self) -> Result<StoredPolicy, ControlError> {
        let stream = self
            .js
            .get_stream_no_info(streams::CONTROL)
            .await
            .map_err(|e| nats("open CONTROL")(e.to_string()))?;
        let subject = policy_subject();
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => {
                let env = envelope::decode_on(Plane::Ctl, &m.subject, &m.payload)
                    .map_err(|e| ControlError::Corrupt(e.to_string()))?;
                let at = env.occurred_at.as_ref().and_then(|t| {
                    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                });
                match env.body {
                    Some(Body::PolicyChanged(changed)) => Ok(StoredPolicy {
                        changed,
                        at,
                        seq: m.sequence,
                    }),
                    _ => Err(ControlError::Corrupt("not a PolicyChanged".into())),
                }
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                Ok(StoredPolicy::default())
            }
            Err(e) => Err(nats("read the policy")(e.to_string())),
        }
    }

    async fn publish_policy(&self, env: &Envelope, last_seq: u64) -> Result<u64, ControlError> {
        envelope::validate(env).map_err(|e| ControlError::Corrupt(e.to_string()))?;
        let subject =
            envelope::subject_of(env).map_err(|e| ControlError::Corrupt(e.to_string()))?;
        let mut headers = canopy_kit::publish::headers_for(env);
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last_seq.to_string().as_str(),
        );
        let msg = PublishMessage::build()
            .payload(envelope::encode(env))
            .headers(headers);
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| nats("publish the policy")(e.to_string()))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(ControlError::WrongLastSequence)
            }
            Err(e) => Err(nats("store the policy")(e.to_string())),
        }
    }

    async fn publish(&self, env: &Envelope) -> Result<u64, ControlError> {
        canopy_kit::publish::publish(&self.js, env)
            .await
            .map_err(|e| nats("publish to CONTROL")(e.to_string()))
    }

    async fn last_sequence(&self) -> Result<u64, ControlError> {
        let mut stream = self
            .js
            .get_stream(streams::CONTROL)
            .await
            .map_err(|e| nats("open CONTROL")(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats("read CONTROL")(e.to_string()))?;
        Ok(info.state.last_sequence)
    }
}
