//! The event envelope: building, encoding, and decoding with validation.

use bytes::Bytes;
use prost::Message;
use thiserror::Error;
use uuid::Uuid;

use crate::proto::event::v1::{Envelope, envelope::Body};
use crate::subject::{self, ClusterId, SubjectError};

/// Highest envelope schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("not a protobuf Envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("envelope has no body")]
    NoBody,
    #[error("event id {0:?} is not a UUID")]
    EventId(String),
    #[error("invalid cluster id: {0}")]
    Cluster(SubjectError),
    #[error("envelope has no occurred_at")]
    NoTime,
    #[error("schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    SchemaVersion(u32),
    #[error("subject says cluster {subject:?} but the envelope says {envelope:?}")]
    ClusterMismatch { subject: String, envelope: String },
    #[error("subject {subject:?} does not match the body type {body_type:?}")]
    TypeMismatch { subject: String, body_type: String },
    #[error("{0}")]
    Subject(#[from] SubjectError),
    #[error("invalid {event}: {reason}")]
    Body { event: &'static str, reason: String },
}

/// `(area, event)` of a body: the last two tokens of its subject.
pub fn event_type(body: &Body) -> (&'static str, &'static str) {
    match body {
        Body::AgentStarted(_) => ("agent", "started"),
        Body::Heartbeat(_) => ("agent", "heartbeat"),
        Body::InventorySnapshot(_) => ("inventory", "snapshot"),
    }
}

/// Every event type, as `<area>.<event>`, for help texts and validation of filters.
pub const EVENT_TYPES: &[&str] = &["agent.started", "agent.heartbeat", "inventory.snapshot"];

/// Resolves a user-given event type: the full `<area>.<event>` or just `<event>` when that is
/// unambiguous (`heartbeat` → `agent.heartbeat`).
pub fn resolve_event_type(given: &str) -> Option<&'static str> {
    if let Some(t) = EVENT_TYPES.iter().find(|t| **t == given) {
        return Some(t);
    }
    let mut matches = EVENT_TYPES
        .iter()
        .filter(|t| t.split_once('.').is_some_and(|(_, e)| e == given));
    match (matches.next(), matches.next()) {
        (Some(t), None) => Some(t),
        _ => None,
    }
}

/// A new envelope with a fresh UUID v7 and the current time.
pub fn new(cluster: &ClusterId, producer: &str, body: Body) -> Envelope {
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        cluster_id: cluster.to_string(),
        occurred_at: Some(now()),
        producer: producer.to_owned(),
        correlation_id: String::new(),
        causation_id: String::new(),
        schema_version: SCHEMA_VERSION,
        body: Some(body),
    }
}

/// The current time as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The subject an envelope is published on.
pub fn subject_of(env: &Envelope) -> Result<String, EnvelopeError> {
    let body = env.body.as_ref().ok_or(EnvelopeError::NoBody)?;
    let cluster = ClusterId::parse(&env.cluster_id).map_err(EnvelopeError::Cluster)?;
    let (area, event) = event_type(body);
    Ok(subject::event(&cluster, area, event)?)
}

/// `Nats-Msg-Id`: `<cluster>:<event id>`, unique across the fleet so that dedup also works on
/// sourced streams.
pub fn msg_id(env: &Envelope) -> String {
    format!("{}:{}", env.cluster_id, env.event_id)
}

pub fn encode(env: &Envelope) -> Bytes {
    Bytes::from(env.encode_to_vec())
}

/// Decodes and validates an envelope received on `subject`.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Envelope, EnvelopeError> {
    let env = Envelope::decode(payload)?;
    validate(&env)?;
    let parsed = subject::parse_event(subject)?;
    if parsed.cluster != env.cluster_id {
        return Err(EnvelopeError::ClusterMismatch {
            subject: parsed.cluster.to_owned(),
            envelope: env.cluster_id.clone(),
        });
    }
    let (area, event) = env
        .body
        .as_ref()
        .map(event_type)
        .ok_or(EnvelopeError::NoBody)?;
    if parsed.area != area || parsed.event != event {
        return Err(EnvelopeError::TypeMismatch {
            subject: subject.to_owned(),
            body_type: format!("{area}.{event}"),
        });
    }
    Ok(env)
}

/// Checks the envelope's own fields and its body.
pub fn validate(env: &Envelope) -> Result<(), EnvelopeError> {
    Uuid::parse_str(&env.event_id).map_err(|_| EnvelopeError::EventId(env.event_id.clone()))?;
    ClusterId::parse(&env.cluster_id).map_err(EnvelopeError::Cluster)?;
    if env.occurred_at.is_none() {
        return Err(EnvelopeError::NoTime);
    }
    if env.schema_version == 0 || env.schema_version > SCHEMA_VERSION {
        return Err(EnvelopeError::SchemaVersion(env.schema_version));
    }
    let body = env.body.as_ref().ok_or(EnvelopeError::NoBody)?;
    validate_body(body)
}

fn validate_body(body: &Body) -> Result<(), EnvelopeError> {
    let fail = |event, reason: &str| {
        Err(EnvelopeError::Body {
            event,
            reason: reason.to_owned(),
        })
    };
    match body {
        Body::AgentStarted(s) if s.agent_instance_id.is_empty() => {
            fail("AgentStarted", "agent_instance_id is empty")
        }
        Body::Heartbeat(h) if h.agent_instance_id.is_empty() => {
            fail("Heartbeat", "agent_instance_id is empty")
        }
        Body::Heartbeat(h) if h.sequence == 0 => fail("Heartbeat", "sequence starts at 1"),
        Body::InventorySnapshot(s) if s.snapshot_id.is_empty() => {
            fail("InventorySnapshot", "snapshot_id is empty")
        }
        Body::InventorySnapshot(s) => {
            match s
                .objects
                .iter()
                .find(|o| o.kind.is_empty() || o.name.is_empty() || o.api_version.is_empty())
            {
                Some(o) => fail(
                    "InventorySnapshot",
                    &format!(
                        "object {:?}/{:?} lacks apiVersion, kind or name",
                        o.kind, o.name
                    ),
                ),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::event::v1::Heartbeat;

    fn heartbeat(seq: u64) -> Body {
        Body::Heartbeat(Heartbeat {
            agent_instance_id: "i-1".into(),
            sequence: seq,
            ..Default::default()
        })
    }

    #[test]
    fn round_trips_and_checks_subject() -> Result<(), Box<dyn std::error::Error>> {
        let c = ClusterId::parse("prod-eu")?;
        let env = new(&c, "agent/0.1.0", heartbeat(1));
        let subject = subject_of(&env)?;
        assert_eq!(subject, "canopy.evt.prod-eu.agent.heartbeat");
        let back = decode(&subject, &encode(&env))?;
        assert_eq!(back, env);
        assert!(msg_id(&env).starts_with("prod-eu:"));
        Ok(())
    }

    #[test]
    fn rejects_forged_and_broken_envelopes() -> Result<(), Box<dyn std::error::Error>> {
        let c = ClusterId::parse("a")?;
        let env = new(&c, "agent", heartbeat(1));
        let bytes = encode(&env);
        // Published by cluster b's subject but claiming cluster a.
        assert!(matches!(
            decode("canopy.evt.b.agent.heartbeat", &bytes),
            Err(EnvelopeError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            decode("canopy.evt.a.inventory.snapshot", &bytes),
            Err(EnvelopeError::TypeMismatch { .. })
        ));
        assert!(matches!(
            decode("canopy.evt.a.agent.heartbeat", b"\xff\xff\xff"),
            Err(EnvelopeError::Decode(_))
        ));
        let mut no_body = env.clone();
        no_body.body = None;
        assert!(matches!(validate(&no_body), Err(EnvelopeError::NoBody)));
        let mut future = env.clone();
        future.schema_version = SCHEMA_VERSION + 1;
        assert!(matches!(
            validate(&future),
            Err(EnvelopeError::SchemaVersion(_))
        ));
        let zero = new(&c, "agent", heartbeat(0));
        assert!(matches!(validate(&zero), Err(EnvelopeError::Body { .. })));
        let mut bad_id = env;
        bad_id.event_id = "nope".into();
        assert!(matches!(validate(&bad_id), Err(EnvelopeError::EventId(_))));
        Ok(())
    }

    #[test]
    fn resolves_short_event_types() {
        assert_eq!(resolve_event_type("heartbeat"), Some("agent.heartbeat"));
        assert_eq!(resolve_event_type("agent.started"), Some("agent.started"));
        assert_eq!(resolve_event_type("snapshot"), Some("inventory.snapshot"));
        assert_eq!(resolve_event_type("nope"), None);
    }
}
