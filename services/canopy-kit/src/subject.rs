//! Subject tokens and builders: every subject Canopy publishes to is built here.
//!
//! Subjects carry the cluster id so that permissions and stream source filters can enforce
//! identity; a token that contained `.`, `*`, `>` or whitespace would let one cluster address
//! another's subjects, so such tokens are rejected at the edge.

use std::fmt;

use thiserror::Error;

/// Prefix of every event subject: `canopy.evt.<cluster>.<area>.<event>`.
pub const EVENT_PREFIX: &str = "canopy.evt";
/// Prefix of command subjects: `canopy.cmd.<cluster>.<kind>`.
pub const COMMAND_PREFIX: &str = "canopy.cmd";
/// Prefix of control-plane subjects: `canopy.ctl.<area>.<event>`.
pub const CONTROL_PREFIX: &str = "canopy.ctl";
/// Prefix of effective-policy subjects: `canopy.pol.<cluster>.effective`.
pub const POLICY_PREFIX: &str = "canopy.pol";
/// Prefix of audit-trail subjects: `canopy.audit.<area>.<event>`.
pub const AUDIT_PREFIX: &str = "canopy.audit";
/// Prefix of dead-letter subjects: `canopy.dlq.<service>.<reason>`.
pub const DLQ_PREFIX: &str = "canopy.dlq";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubjectError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} is longer than {max} characters")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} {value:?} contains {found:?}, which is not allowed in a subject token")]
    Forbidden {
        what: &'static str,
        value: String,
        found: char,
    },
    #[error(
        "cluster id {0:?} must be lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters"
    )]
    ClusterId(String),
    #[error("event type {0:?} must be <area>.<event>, e.g. agent.heartbeat")]
    EventType(String),
    #[error("subject {0:?} is not a Canopy event subject (canopy.evt.<cluster>.<area>.<event>)")]
    NotAnEventSubject(String),
}

/// Checks one subject token: non-empty, printable, none of `.`, `*`, `>` or whitespace.
pub fn check_token(what: &'static str, value: &str) -> Result<(), SubjectError> {
    const MAX: usize = 128;
    if value.is_empty() {
        return Err(SubjectError::Empty { what });
    }
    if value.len() > MAX {
        return Err(SubjectError::TooLong {
            what,
            value: value.to_owned(),
            max: MAX,
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(SubjectError::Forbidden {
            what,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

/// A validated cluster id. It names the cluster's subjects and its JetStream domain, so it is
/// a DNS label: `[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn parse(value: &str) -> Result<Self, SubjectError> {
        check_token("cluster id", value)?;
        let bytes = value.as_bytes();
        let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let ok_edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = bytes.len() <= 63
            && bytes.iter().all(ok_char)
            && bytes.first().is_some_and(ok_edge)
            && bytes.last().is_some_and(ok_edge);
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(SubjectError::ClusterId(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `canopy.evt.<cluster>.<area>.<event>`.
pub fn event(cluster: &ClusterId, area: &str, event: &str) -> Result<String, SubjectError> {
    check_token("event area", area)?;
    check_token("event name", event)?;
    Ok(format!("{EVENT_PREFIX}.{cluster}.{area}.{event}"))
}

/// `canopy.evt.<cluster>.>`: everything one cluster may publish.
pub fn cluster_events(cluster: &ClusterId) -> String {
    format!("{EVENT_PREFIX}.{cluster}.>")
}

/// Filter subject for events of an optional cluster and an optional `<area>.<event>` type.
pub fn event_filter(
    cluster: Option<&ClusterId>,
    event_type: Option<&str>,
) -> Result<String, SubjectError> {
    let cluster = cluster.map_or("*", ClusterId::as_str);
    match event_type {
        None => Ok(format!("{EVENT_PREFIX}.{cluster}.>")),
        Some(t) => {
            let (area, name) = t
                .split_once('.')
                .ok_or_else(|| SubjectError::EventType(t.to_owned()))?;
            check_token("event area", area)?;
            check_token("event name", name)?;
            Ok(format!("{EVENT_PREFIX}.{cluster}.{area}.{name}"))
        }
    }
}

/// `canopy.ctl.<area>.<event>`.
pub fn control(area: &str, event: &str) -> Result<String, SubjectError> {
    check_token("control area", area)?;
    check_token("control event", event)?;
    Ok(format!("{CONTROL_PREFIX}.{area}.{event}"))
}

/// `canopy.audit.<area>.<event>`.
pub fn audit(area: &str, event: &str) -> Result<String, SubjectError> {
    check_token("audit area", area)?;
    check_token("audit event", event)?;
    Ok(format!("{AUDIT_PREFIX}.{area}.{event}"))
}

/// `canopy.cmd.<cluster>.<kind>`.
pub fn command(cluster: &ClusterId, kind: &str) -> Result<String, SubjectError> {
    check_token("command kind", kind)?;
    Ok(format!("{COMMAND_PREFIX}.{cluster}.{kind}"))
}

/// `canopy.pol.<cluster>.effective`: the effective policy of one cluster.
pub fn policy(cluster: &ClusterId) -> String {
    format!("{POLICY_PREFIX}.{cluster}.effective")
}

/// `canopy.pol.<cluster>.>`: what a cluster's POLICIES sources.
pub fn cluster_policies(cluster: &ClusterId) -> String {
    format!("{POLICY_PREFIX}.{cluster}.>")
}

/// `canopy.cmd.<cluster>.>`: the commands one cluster receives.
pub fn cluster_commands(cluster: &ClusterId) -> String {
    format!("{COMMAND_PREFIX}.{cluster}.>")
}

/// `canopy.dlq.<service>.<reason>`.
pub fn dead_letter(service: &str, reason: &str) -> Result<String, SubjectError> {
    check_token("service", service)?;
    check_token("reason", reason)?;
    Ok(format!("{DLQ_PREFIX}.{service}.{reason}"))
}

/// The parts of an event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject<'a> {
    pub cluster: &'a str,
    pub area: &'a str,
    pub event: &'a str,
}

impl EventSubject<'_> {
    /// `<area>.<event>`, the event type users filter on.
    pub fn event_type(&self) -> String {
        format!("{}.{}", self.area, self.event)
    }
}

/// Splits `canopy.evt.<cluster>.<area>.<event>`.
pub fn parse_event(subject: &str) -> Result<EventSubject<'_>, SubjectError> {
    let mut parts = subject.split('.');
    let bad = || SubjectError::NotAnEventSubject(subject.to_owned());
    if parts.next() != Some("canopy") || parts.next() != Some("evt") {
        return Err(bad());
    }
    let cluster = parts.next().ok_or_else(bad)?;
    let area = parts.next().ok_or_else(bad)?;
    let event = parts.next().ok_or_else(bad)?;
    if parts.next().is_some() || cluster.is_empty() || area.is_empty() || event.is_empty() {
        return Err(bad());
    }
    Ok(EventSubject {
        cluster,
        area,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_tokens_that_would_escape_their_subject() {
        for bad in ["a.b", "a*", ">", "a b", "a\tb", "", "a\nb"] {
            assert!(check_token("t", bad).is_err(), "{bad:?} accepted");
            assert!(
                ClusterId::parse(bad).is_err(),
                "{bad:?} accepted as cluster"
            );
        }
        assert!(check_token("t", "heartbeat").is_ok());
    }

    #[test]
    fn cluster_ids_are_dns_labels() {
        for good in ["prod-eu", "a", "c0", "leaf-1"] {
            assert!(ClusterId::parse(good).is_ok(), "{good}");
        }
        for bad in ["Prod", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(ClusterId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_and_parses_event_subjects() -> Result<(), SubjectError> {
        let c = ClusterId::parse("prod-eu")?;
        let s = event(&c, "agent", "heartbeat")?;
        assert_eq!(s, "canopy.evt.prod-eu.agent.heartbeat");
        let p = parse_event(&s)?;
        assert_eq!(p.cluster, "prod-eu");
        assert_eq!(p.event_type(), "agent.heartbeat");
        assert!(parse_event("canopy.evt.x.y").is_err());
        assert!(parse_event("canopy.cmd.x.y.z").is_err());
        assert!(event(&c, "agent", "heart.beat").is_err());
        Ok(())
    }

    #[test]
    fn filters() -> Result<(), SubjectError> {
        let c = ClusterId::parse("a")?;
        assert_eq!(event_filter(None, None)?, "canopy.evt.*.>");
        assert_eq!(event_filter(Some(&c), None)?, "canopy.evt.a.>");
        assert_eq!(
            event_filter(Some(&c), Some("agent.heartbeat"))?,
            "canopy.evt.a.agent.heartbeat"
        );
        assert!(event_filter(None, Some("heartbeat")).is_err());
        assert!(event_filter(None, Some("agent.>")).is_err());
        Ok(())
    }
}
