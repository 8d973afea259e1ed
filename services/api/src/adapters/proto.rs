//! The one place that translates between protobuf messages and the api's domain types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tracing::warn;

use canopy_kit::envelope;
use canopy_kit::proto::api::v1 as pb;
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_kit::subject;

use super::StoredEvent;
use crate::domain::{self, Cluster, WatchSpec, WatchStart};

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn datetime(field: &'static str, t: &Timestamp) -> Result<DateTime<Utc>, domain::Error> {
    u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| domain::Error::Invalid {
            field,
            reason: format!("{t:?} is not a valid timestamp"),
        })
}

impl From<Cluster> for pb::Cluster {
    fn from(c: Cluster) -> Self {
        let mut out = pb::Cluster {
            id: c.id,
            first_seen_at: Some(timestamp(c.first_seen_at)),
            labels: c.labels.into_iter().collect(),
            ..Default::default()
        };
        if let Some(a) = c.agent {
            out.heartbeats_missed = a.heartbeats_missed();
            out.agent_instance_id = a.instance_id;
            out.agent_version = a.version;
            out.kubernetes_version = a.kubernetes_version;
            out.agent_started_at = a.started_at.map(timestamp);
            out.node_count = a.node_count;
            out.pod_count = a.pod_count;
            out.last_heartbeat_at = a.last_heartbeat_at.map(timestamp);
            out.heartbeat_interval_seconds = a.heartbeat_interval_seconds;
            out.last_heartbeat_seq = a.last_heartbeat_seq;
            out.heartbeats_received = a.heartbeats_received;
        }
        if let Some(inv) = c.inventory {
            out.inventory_objects = inv.objects;
            out.inventory_at = inv.completed_at.map(timestamp);
            out.inventory_by_kind = inv.by_kind.into_iter().collect();
        }
        out
    }
}

impl TryFrom<&pb::WatchRequest> for WatchSpec {
    type Error = domain::Error;

    fn try_from(r: &pb::WatchRequest) -> Result<Self, Self::Error> {
        use pb::watch_request::Start;
        let start = match &r.start {
            None => WatchStart::New,
            Some(Start::FromSequence(seq)) => WatchStart::Sequence(*seq),
            Some(Start::FromTime(t)) => WatchStart::Time(datetime("from_time", t)?),
        };
        WatchSpec::new(&r.cluster_id, &r.types, start)
    }
}

/// A stored event as sent to watchers. An event whose envelope does not decode (or fails
/// validation) is still sent, with `envelope` unset and a warning logged: watchers then see
/// every sequence, so resuming with `stream_sequence + 1` never skips past something silently,
/// and the subject still says whose and what it was.
/// The cluster labels an AgentStarted event carries; `None` for any other event, or one that
/// does not decode.
pub fn started_labels(subject: &str, payload: &[u8]) -> Option<BTreeMap<String, String>> {
    match envelope::decode(subject, payload).ok()?.body? {
        Body::AgentStarted(s) => Some(s.labels.into_iter().collect()),
        _ => None,
    }
}

pub fn watch_event(e: StoredEvent) -> pb::WatchEvent {
    let event_type = subject::parse_event(&e.subject)
        .map(|s| s.event_type())
        .unwrap_or_default();
    let envelope = match envelope::decode(&e.subject, &e.payload) {
        Ok(env) => Some(env),
        Err(error) => {
            warn!(seq = e.seq, subject = %e.subject, %error, "sending an undecodable event without its envelope");
            metrics::counter!("canopy_api_watch_undecodable_total").increment(1);
            None
        }
    };
    pb::WatchEvent {
        stream_sequence: e.seq,
        subject: e.subject,
        r#type: event_type,
        stored_at: Some(timestamp(e.stored_at)),
        envelope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{Heartbeat, envelope::Body};
    use canopy_kit::subject::ClusterId;

    #[test]
    fn watch_requests_are_validated_on_the_way_in() {
        use pb::watch_request::Start;
        let ok = pb::WatchRequest {
            cluster_id: "a".into(),
            types: vec!["heartbeat".into()],
            start: Some(Start::FromTime(Timestamp {
                seconds: 10,
                nanos: 5,
            })),
        };
        let spec = WatchSpec::try_from(&ok).unwrap();
        assert_eq!(
            spec.start,
            WatchStart::Time(DateTime::from_timestamp(10, 5).unwrap())
        );
        let bad_time = pb::WatchRequest {
            start: Some(Start::FromTime(Timestamp {
                seconds: 0,
                nanos: -1,
            })),
            ..Default::default()
        };
        let err = WatchSpec::try_from(&bad_time).unwrap_err();
        assert!(matches!(
            err,
            domain::Error::Invalid {
                field: "from_time",
                ..
            }
        ));
    }

    #[test]
    fn undecodable_events_are_sent_without_envelope() {
        let c = ClusterId::parse("a").unwrap();
        let env = envelope::new(
            &c,
            "test",
            Body::Heartbeat(Heartbeat {
                agent_instance_id: "i".into(),
                sequence: 1,
                ..Default::default()
            }),
        );
        let good = watch_event(StoredEvent {
            seq: 7,
            subject: "canopy.evt.a.agent.heartbeat".into(),
            stored_at: DateTime::UNIX_EPOCH,
            payload: envelope::encode(&env),
        });
        assert_eq!(good.r#type, "agent.heartbeat");
        assert_eq!(good.envelope, Some(env));
        let bad = watch_event(StoredEvent {
            seq: 8,
            subject: "canopy.evt.a.agent.heartbeat".into(),
            stored_at: DateTime::UNIX_EPOCH,
            payload: bytes::Bytes::from_static(b"\xff\xff"),
        });
        assert_eq!(bad.stream_sequence, 8);
        assert_eq!(bad.r#type, "agent.heartbeat");
        assert_eq!(bad.envelope, None);
    }
}
