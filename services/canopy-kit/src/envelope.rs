//! The event envelope: building, encoding, and decoding with validation.

use bytes::Bytes;
use prost::Message;
use thiserror::Error;
use uuid::Uuid;

use crate::proto::event::v1::{CommandKind, Envelope, envelope::Body};
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

/// The kind of stream a body travels on; each plane has its own subject shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    /// `canopy.evt.<cluster>.<area>.<event>`: what a cluster reports (EVENTS, FLEET_EVENTS).
    Evt,
    /// `canopy.ctl.<area>.<event>`: the control plane (CONTROL).
    Ctl,
    /// `canopy.cmd.<cluster>.<kind>`: a command to one cluster (COMMANDS).
    Cmd,
    /// `canopy.pol.<cluster>.effective`: a cluster's effective policy (POLICIES).
    Pol,
    /// `canopy.audit.<area>.<event>`: the audit trail (AUDIT_TRAIL).
    Audit,
}

impl Plane {
    /// Whether the subject carries the cluster id (and the envelope must name one).
    pub fn has_cluster(self) -> bool {
        matches!(self, Plane::Evt | Plane::Cmd | Plane::Pol)
    }

    /// The subject's second token.
    pub fn token(self) -> &'static str {
        match self {
            Plane::Evt => "evt",
            Plane::Ctl => "ctl",
            Plane::Cmd => "cmd",
            Plane::Pol => "pol",
            Plane::Audit => "audit",
        }
    }
}

/// Where a body goes: its plane and the `(area, event)` tokens of its subject. For commands
/// the area is `cmd` and the event is the command kind's token ([`command_kind_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub plane: Plane,
    pub area: &'static str,
    pub event: &'static str,
}

const fn r(plane: Plane, area: &'static str, event: &'static str) -> Route {
    Route { plane, area, event }
}

/// The subject token of a command kind (`canopy.cmd.<cluster>.<token>`).
pub fn command_kind_token(kind: i32) -> &'static str {
    match CommandKind::try_from(kind).unwrap_or(CommandKind::Unspecified) {
        CommandKind::Unspecified => "unspecified",
        CommandKind::RunAudit => "run-audit",
        CommandKind::RefreshInventory => "refresh-inventory",
        CommandKind::CheckLiveness => "check-liveness",
        CommandKind::RolloutRestart => "rollout-restart",
        CommandKind::DeletePod => "delete-pod",
        CommandKind::CordonNode => "cordon-node",
        CommandKind::ScaleWorkload => "scale-workload",
    }
}

/// The plane and subject tokens of a body.
pub fn route(body: &Body) -> Route {
    use Plane::{Audit, Cmd, Ctl, Evt, Pol};
    match body {
        Body::AgentStarted(_) => r(Evt, "agent", "started"),
        Body::Heartbeat(_) => r(Evt, "agent", "heartbeat"),
        Body::InventorySnapshot(_) => r(Evt, "inventory", "snapshot"),
        Body::AuditStarted(_) => r(Evt, "audit", "started"),
        Body::FindingsChunk(_) => r(Evt, "audit", "findings"),
        Body::AuditCompleted(_) => r(Evt, "audit", "completed"),
        Body::PolicyChanged(_) => r(Ctl, "policy", "changed"),
        Body::DerogationGranted(_) => r(Ctl, "policy", "derogation_granted"),
        Body::DerogationRevoked(_) => r(Ctl, "policy", "derogation_revoked"),
        Body::EffectivePolicy(_) => r(Pol, "pol", "effective"),
        Body::CommandRequested(_) => r(Ctl, "command", "requested"),
        Body::CommandDispatched(_) => r(Ctl, "command", "dispatched"),
        Body::CommandRejected(_) => r(Ctl, "command", "rejected"),
        Body::CommandTimedOut(_) => r(Ctl, "command", "timed_out"),
        Body::Command(c) => r(Cmd, "cmd", command_kind_token(c.kind)),
        Body::CommandAccepted(_) => r(Evt, "command", "accepted"),
        Body::CommandSucceeded(_) => r(Evt, "command", "succeeded"),
        Body::CommandFailed(_) => r(Evt, "command", "failed"),
        Body::LivenessChecked(_) => r(Evt, "liveness", "checked"),
        Body::ScheduleCreated(_) => r(Ctl, "schedule", "created"),
        Body::ScheduleDeleted(_) => r(Ctl, "schedule", "deleted"),
        Body::HealthReported(_) => r(Evt, "health", "reported"),
        Body::HealthChanged(_) => r(Ctl, "health", "changed"),
        Body::DiagnosisRaised(_) => r(Ctl, "diagnosis", "raised"),
        Body::DiagnosisCleared(_) => r(Ctl, "diagnosis", "cleared"),
        Body::RemediationProposed(_) => r(Ctl, "remediation", "proposed"),
        Body::RemediationApproved(_) => r(Ctl, "remediation", "approved"),
        Body::RemediationRejected(_) => r(Ctl, "remediation", "rejected"),
        Body::RemediationSuppressed(_) => r(Ctl, "remediation", "suppressed"),
        Body::InterconnectRequested(_) => r(Ctl, "interconnect", "requested"),
        Body::InterconnectApproved(_) => r(Ctl, "interconnect", "approved"),
        Body::InterconnectRejected(_) => r(Ctl, "interconnect", "rejected"),
        Body::ClusterRevoked(_) => r(Ctl, "interconnect", "revoked"),
        Body::LinkEstablished(_) => r(Ctl, "link", "established"),
        Body::LinkLost(_) => r(Ctl, "link", "lost"),
        Body::LinkLagging(_) => r(Ctl, "link", "lagging"),
        Body::ActionRecorded(_) => r(Audit, "action", "recorded"),
    }
}

/// `(area, event)` of a body: the last two tokens of its subject (for commands: `cmd` and the
/// kind).
pub fn event_type(body: &Body) -> (&'static str, &'static str) {
    let r = route(body);
    (r.area, r.event)
}

/// Every type a cluster reports (the `evt` plane), as `<area>.<event>`, for help texts and
/// validation of watch filters.
pub const EVENT_TYPES: &[&str] = &[
    "agent.started",
    "agent.heartbeat",
    "inventory.snapshot",
    "audit.started",
    "audit.findings",
    "audit.completed",
    "command.accepted",
    "command.succeeded",
    "command.failed",
    "liveness.checked",
    "health.reported",
];

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
    new_for(Some(cluster), producer, body)
}

/// A new envelope about `cluster`, or about no cluster (control and audit-trail events).
pub fn new_for(cluster: Option<&ClusterId>, producer: &str, body: Body) -> Envelope {
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        cluster_id: cluster.map(ToString::to_string).unwrap_or_default(),
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
    let route = route(body);
    if route.plane.has_cluster() {
        let cluster = ClusterId::parse(&env.cluster_id).map_err(EnvelopeError::Cluster)?;
        return Ok(match route.plane {
            Plane::Evt => subject::event(&cluster, route.area, route.event)?,
            Plane::Cmd => subject::command(&cluster, route.event)?,
            _ => subject::policy(&cluster),
        });
    }
    Ok(match route.plane {
        Plane::Audit => subject::audit(route.area, route.event)?,
        _ => subject::control(route.area, route.event)?,
    })
}

/// `Nats-Msg-Id`: `<cluster>:<event id>`, unique across the fleet so that dedup also works on
/// sourced streams; `ctl:<event id>` for events about no cluster.
pub fn msg_id(env: &Envelope) -> String {
    if env.cluster_id.is_empty() {
        format!("ctl:{}", env.event_id)
    } else {
        format!("{}:{}", env.cluster_id, env.event_id)
    }
}

pub fn encode(env: &Envelope) -> Bytes {
    Bytes::from(env.encode_to_vec())
}

/// Decodes and validates an envelope received on `subject` (any plane): the subject must be the
/// one its body is published on, cluster token included.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Envelope, EnvelopeError> {
    let env = Envelope::decode(payload)?;
    validate(&env)?;
    let expected = subject_of(&env)?;
    if expected == subject {
        return Ok(env);
    }
    let body = env.body.as_ref().ok_or(EnvelopeError::NoBody)?;
    let route = route(body);
    // Name the cluster when that is what differs: a leaf publishing as another cluster.
    if route.plane.has_cluster()
        && let Some(token) = subject.split('.').nth(2)
        && token != env.cluster_id
        && subject.split('.').nth(1) == Some(route.plane.token())
    {
        return Err(EnvelopeError::ClusterMismatch {
            subject: token.to_owned(),
            envelope: env.cluster_id.clone(),
        });
    }
    Err(EnvelopeError::TypeMismatch {
        subject: subject.to_owned(),
        body_type: format!("{}.{}.{}", route.plane.token(), route.area, route.event),
    })
}

/// [`decode`], and the body must belong on `plane` (e.g. only `evt` events on FLEET_EVENTS).
pub fn decode_on(plane: Plane, subject: &str, payload: &[u8]) -> Result<Envelope, EnvelopeError> {
    let env = decode(subject, payload)?;
    match env.body.as_ref().map(route) {
        Some(r) if r.plane == plane => Ok(env),
        Some(r) => Err(EnvelopeError::TypeMismatch {
            subject: subject.to_owned(),
            body_type: format!("{}.{}.{}", r.plane.token(), r.area, r.event),
        }),
        None => Err(EnvelopeError::NoBody),
    }
}

/// Checks the envelope's own fields and its body. The cluster id is required on the planes
/// whose subjects carry it, and must be valid wherever it is set.
pub fn validate(env: &Envelope) -> Result<(), EnvelopeError> {
    Uuid::parse_str(&env.event_id).map_err(|_| EnvelopeError::EventId(env.event_id.clone()))?;
    let body = env.body.as_ref().ok_or(EnvelopeError::NoBody)?;
    if route(body).plane.has_cluster() || !env.cluster_id.is_empty() {
        ClusterId::parse(&env.cluster_id).map_err(EnvelopeError::Cluster)?;
    }
    if env.occurred_at.is_none() {
        return Err(EnvelopeError::NoTime);
    }
    if env.schema_version == 0 || env.schema_version > SCHEMA_VERSION {
        return Err(EnvelopeError::SchemaVersion(env.schema_version));
    }
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
        Body::AuditStarted(a) if a.audit_id.is_empty() => fail("AuditStarted", "audit_id is empty"),
        Body::FindingsChunk(c) if c.audit_id.is_empty() => {
            fail("FindingsChunk", "audit_id is empty")
        }
        Body::AuditCompleted(a) if a.audit_id.is_empty() => {
            fail("AuditCompleted", "audit_id is empty")
        }
        Body::Command(c) if Uuid::parse_str(&c.command_id).is_err() => {
            fail("Command", "command_id is not a UUID")
        }
        Body::Command(c) if c.kind == CommandKind::Unspecified as i32 => {
            fail("Command", "kind is unspecified")
        }
        Body::CommandRequested(c) if Uuid::parse_str(&c.command_id).is_err() => {
            fail("CommandRequested", "command_id is not a UUID")
        }
        Body::CommandAccepted(c) if c.command_id.is_empty() => {
            fail("CommandAccepted", "command_id is empty")
        }
        Body::CommandSucceeded(c) if c.command_id.is_empty() => {
            fail("CommandSucceeded", "command_id is empty")
        }
        Body::CommandFailed(c) if c.command_id.is_empty() => {
            fail("CommandFailed", "command_id is empty")
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
    fn every_plane_has_its_subject() -> Result<(), Box<dyn std::error::Error>> {
        use crate::proto::event::v1::{ActionRecorded, Command, EffectivePolicy, PolicyChanged};
        let c = ClusterId::parse("leaf-a")?;
        let cases = [
            (
                new_for(None, "api", Body::PolicyChanged(PolicyChanged::default())),
                "canopy.ctl.policy.changed",
            ),
            (
                new(&c, "cnc", Body::EffectivePolicy(EffectivePolicy::default())),
                "canopy.pol.leaf-a.effective",
            ),
            (
                new(
                    &c,
                    "cnc",
                    Body::Command(Command {
                        command_id: Uuid::now_v7().to_string(),
                        kind: CommandKind::RunAudit as i32,
                        ..Default::default()
                    }),
                ),
                "canopy.cmd.leaf-a.run-audit",
            ),
            (
                new_for(None, "api", Body::ActionRecorded(ActionRecorded::default())),
                "canopy.audit.action.recorded",
            ),
        ];
        for (env, subject) in cases {
            assert_eq!(subject_of(&env)?, subject);
            let back = decode(subject, &encode(&env))?;
            assert_eq!(back, env);
        }
        let ctl = new_for(None, "api", Body::PolicyChanged(PolicyChanged::default()));
        assert!(msg_id(&ctl).starts_with("ctl:"));
        // A control event cannot be passed off as a cluster's event, nor the reverse.
        assert!(decode_on(Plane::Evt, "canopy.ctl.policy.changed", &encode(&ctl)).is_err());
        assert!(decode("canopy.evt.leaf-a.policy.changed", &encode(&ctl)).is_err());
        // Commands for one cluster cannot be replayed to another.
        let cmd = new(
            &c,
            "cnc",
            Body::Command(Command {
                command_id: Uuid::now_v7().to_string(),
                kind: CommandKind::RunAudit as i32,
                ..Default::default()
            }),
        );
        assert!(matches!(
            decode("canopy.cmd.leaf-b.run-audit", &encode(&cmd)),
            Err(EnvelopeError::ClusterMismatch { .. })
        ));
        // Planes with a cluster token need a cluster id.
        let mut orphan = cmd;
        orphan.cluster_id.clear();
        assert!(matches!(validate(&orphan), Err(EnvelopeError::Cluster(_))));
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
