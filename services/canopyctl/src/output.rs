//! Rendering: aligned tables and key/value blocks for people, JSON with stable snake_case
//! names and RFC 3339 times for programs.

use std::collections::BTreeMap;
use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use canopy_proto::api::v1::{Cluster, WatchEvent};
use canopy_proto::event::v1::{
    AgentStarted, Envelope, Heartbeat, InventoryObject, InventorySnapshot, envelope::Body,
};

/// Writes `text` to stdout at once (a closed pipe surfaces as `BrokenPipe`).
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// JSON of `value` plus a newline; `pretty` for whole documents, compact for NDJSON lines.
pub fn json<T: Serialize>(value: &T, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    // Serializing these plain structs cannot fail; an empty object keeps the output valid.
    let mut text = text.unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

// === Time ===

pub fn datetime(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// RFC 3339 in UTC with as many fraction digits as needed.
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    datetime(t).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// `3s ago`, `5m ago`, `2h ago`, `4d ago`; `in 3s` for clocks ahead of ours.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = if secs < 0 {
        (-secs, true)
    } else {
        (secs, false)
    };
    let short = match n {
        0..60 => format!("{n}s"),
        60..3600 => format!("{}m", n / 60),
        3600..86_400 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if future {
        format!("in {short}")
    } else {
        format!("{short} ago")
    }
}

/// A heartbeat is stale when three intervals passed without one.
pub fn is_stale(c: &Cluster, now: DateTime<Utc>) -> bool {
    match datetime(c.last_heartbeat_at.as_ref()) {
        Some(at) if c.heartbeat_interval_seconds > 0 => {
            (now - at).num_seconds() > 3 * i64::from(c.heartbeat_interval_seconds)
        }
        _ => false,
    }
}

fn last_heartbeat(c: &Cluster, now: DateTime<Utc>) -> String {
    match datetime(c.last_heartbeat_at.as_ref()) {
        Some(at) if is_stale(c, now) => format!("{} (stale)", age(at, now)),
        Some(at) => age(at, now),
        None => "never".to_owned(),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

// === Tables ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, ((_, align), width))) in
            cells.iter().zip(headers.iter().zip(&widths)).enumerate()
        {
            let pad = width.saturating_sub(cell.chars().count());
            match align {
                Align::Right => {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
                Align::Left => {
                    out.push_str(cell);
                    if i != last {
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            if i != last {
                out.push_str("  ");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `Key:  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:")))
        .collect()
}

// === Clusters ===

pub fn clusters_table(clusters: &[Cluster], now: DateTime<Utc>) -> String {
    if clusters.is_empty() {
        return "No clusters yet.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                or_dash(&c.kubernetes_version).to_owned(),
                c.node_count.to_string(),
                c.pod_count.to_string(),
                c.inventory_objects.to_string(),
                last_heartbeat(c, now),
                or_dash(&c.agent_version).to_owned(),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Align::Left),
            ("K8S VERSION", Align::Left),
            ("NODES", Align::Right),
            ("PODS", Align::Right),
            ("OBJECTS", Align::Right),
            ("LAST HEARTBEAT", Align::Left),
            ("AGENT", Align::Left),
        ],
        &rows,
    )
}

pub fn cluster_details(c: &Cluster, now: DateTime<Utc>) -> String {
    let when = |t: Option<&prost_types::Timestamp>| match datetime(t) {
        Some(at) => format!(
            "{} ({})",
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            age(at, now)
        ),
        None => "-".to_owned(),
    };
    let agent = if c.agent_instance_id.is_empty() {
        "- (no agent has reported)".to_owned()
    } else {
        format!(
            "{} (instance {})",
            or_dash(&c.agent_version),
            c.agent_instance_id
        )
    };
    let interval = match c.heartbeat_interval_seconds {
        0 => String::new(),
        s => format!(", every {s}s"),
    };
    let labels: BTreeMap<&String, &String> = c.labels.iter().collect();
    let labels = if labels.is_empty() {
        "-".to_owned()
    } else {
        labels
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = key_values(&[
        ("ID", c.id.clone()),
        ("Labels", labels),
        ("First seen", when(c.first_seen_at.as_ref())),
        ("Agent", agent),
        ("Agent started", when(c.agent_started_at.as_ref())),
        ("Kubernetes", or_dash(&c.kubernetes_version).to_owned()),
        ("Nodes", c.node_count.to_string()),
        ("Pods", c.pod_count.to_string()),
        (
            "Last heartbeat",
            format!("{}{interval}", last_heartbeat(c, now)),
        ),
        (
            "Heartbeats",
            format!(
                "{} received, {} missed (last #{})",
                c.heartbeats_received, c.heartbeats_missed, c.last_heartbeat_seq
            ),
        ),
        (
            "Inventory",
            match datetime(c.inventory_at.as_ref()) {
                Some(_) => format!(
                    "{} objects, snapshot of {}",
                    c.inventory_objects,
                    when(c.inventory_at.as_ref())
                ),
                None => "- (no complete snapshot yet)".to_owned(),
            },
        ),
    ]);
    if !c.inventory_by_kind.is_empty() {
        let kinds: BTreeMap<&String, &u64> = c.inventory_by_kind.iter().collect();
        let rows: Vec<Vec<String>> = kinds
            .into_iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[("KIND", Align::Left), ("OBJECTS", Align::Right)],
            &rows,
        ));
    }
    out
}

/// A cluster in JSON.
#[derive(Debug, Serialize)]
pub struct ClusterJson {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub first_seen_at: Option<String>,
    pub agent_instance_id: String,
    pub agent_version: String,
    pub kubernetes_version: String,
    pub agent_started_at: Option<String>,
    pub node_count: u32,
    pub pod_count: u32,
    pub last_heartbeat_at: Option<String>,
    pub heartbeat_interval_seconds: u32,
    pub last_heartbeat_seq: u64,
    pub heartbeats_received: u64,
    pub heartbeats_missed: u64,
    pub inventory_objects: u64,
    pub inventory_at: Option<String>,
    /// Only `clusters get` knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_by_kind: Option<BTreeMap<String, u64>>,
}

impl ClusterJson {
    pub fn new(c: &Cluster, with_kinds: bool) -> Self {
        Self {
            id: c.id.clone(),
            labels: c.labels.clone().into_iter().collect(),
            first_seen_at: rfc3339(c.first_seen_at.as_ref()),
            agent_instance_id: c.agent_instance_id.clone(),
            agent_version: c.agent_version.clone(),
            kubernetes_version: c.kubernetes_version.clone(),
            agent_started_at: rfc3339(c.agent_started_at.as_ref()),
            node_count: c.node_count,
            pod_count: c.pod_count,
            last_heartbeat_at: rfc3339(c.last_heartbeat_at.as_ref()),
            heartbeat_interval_seconds: c.heartbeat_interval_seconds,
            last_heartbeat_seq: c.last_heartbeat_seq,
            heartbeats_received: c.heartbeats_received,
            heartbeats_missed: c.heartbeats_missed,
            inventory_objects: c.inventory_objects,
            inventory_at: rfc3339(c.inventory_at.as_ref()),
            inventory_by_kind: with_kinds.then(|| {
                c.inventory_by_kind
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterListJson {
    pub clusters: Vec<ClusterJson>,
}

// === Events ===

/// The cluster of an event: from its envelope, else from its subject.
fn event_cluster(e: &WatchEvent) -> &str {
    match &e.envelope {
        Some(env) if !env.cluster_id.is_empty() => &env.cluster_id,
        _ => e.subject.split('.').nth(2).unwrap_or("-"),
    }
}

pub fn summary(e: &WatchEvent) -> String {
    let Some(body) = e.envelope.as_ref().and_then(|env| env.body.as_ref()) else {
        return "(undecodable payload)".to_owned();
    };
    match body {
        Body::AgentStarted(s) => format!(
            "agent {} started (instance {}), kubernetes {}, heartbeat every {}s",
            or_dash(&s.agent_version),
            s.agent_instance_id,
            or_dash(&s.kubernetes_version),
            s.heartbeat_interval_seconds
        ),
        Body::Heartbeat(h) => format!(
            "#{} nodes={} pods={} agent {}",
            h.sequence,
            h.node_count,
            h.pod_count,
            or_dash(&h.agent_version)
        ),
        Body::InventorySnapshot(s) => {
            let mut text = format!(
                "snapshot {} chunk {}: {} objects",
                s.snapshot_id,
                s.chunk_index,
                s.objects.len()
            );
            if s.last_chunk {
                text.push_str(&format!(" (last chunk, {} in total)", s.total_objects));
            }
            text
        }
        _ => e.r#type.clone(),
    }
}

pub const EVENT_HEADER: &str =
    "     SEQ  STORED AT             CLUSTER           TYPE                SUMMARY\n";

/// One line per event, in fixed columns (a stream cannot be measured in advance).
pub fn event_line(e: &WatchEvent) -> String {
    let stored = datetime(e.stored_at.as_ref())
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "{:>8}  {:<20}  {:<16}  {:<18}  {}\n",
        e.stream_sequence,
        stored,
        event_cluster(e),
        or_dash(&e.r#type),
        summary(e)
    )
}

/// A watched event in JSON.
#[derive(Debug, Serialize)]
pub struct WatchEventJson {
    pub stream_sequence: u64,
    pub subject: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stored_at: Option<String>,
    /// Absent when the stored payload could not be decoded.
    pub envelope: Option<EnvelopeJson>,
}

#[derive(Debug, Serialize)]
pub struct EnvelopeJson {
    pub event_id: String,
    pub cluster_id: String,
    pub occurred_at: Option<String>,
    pub producer: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub schema_version: u32,
    /// `{"<event>": {...}}`, named like the envelope's `body` fields.
    pub body: Option<BodyJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyJson {
    AgentStarted(AgentStartedJson),
    Heartbeat(HeartbeatJson),
    InventorySnapshot(InventorySnapshotJson),
    /// Any other event: its body's message name and its fields as Rust's debug format shows them.
    Other {
        event: String,
        fields: String,
    },
}

#[derive(Debug, Serialize)]
pub struct AgentStartedJson {
    pub agent_instance_id: String,
    pub agent_version: String,
    pub kubernetes_version: String,
    pub heartbeat_interval_seconds: u32,
}

#[derive(Debug, Serialize)]
pub struct HeartbeatJson {
    pub agent_instance_id: String,
    pub sequence: u64,
    pub agent_version: String,
    pub kubernetes_version: String,
    pub node_count: u32,
    pub pod_count: u32,
    pub heartbeat_interval_seconds: u32,
}

#[derive(Debug, Serialize)]
pub struct InventorySnapshotJson {
    pub snapshot_id: String,
    pub chunk_index: u32,
    pub last_chunk: bool,
    pub total_objects: u64,
    pub objects: Vec<InventoryObjectJson>,
}

#[derive(Debug, Serialize)]
pub struct InventoryObjectJson {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub owner_kind: String,
    pub owner_name: String,
    pub digest: String,
    pub attributes: BTreeMap<String, String>,
    pub created_at: Option<String>,
}

impl From<&AgentStarted> for AgentStartedJson {
    fn from(s: &AgentStarted) -> Self {
        Self {
            agent_instance_id: s.agent_instance_id.clone(),
            agent_version: s.agent_version.clone(),
            kubernetes_version: s.kubernetes_version.clone(),
            heartbeat_interval_seconds: s.heartbeat_interval_seconds,
        }
    }
}

impl From<&Heartbeat> for HeartbeatJson {
    fn from(h: &Heartbeat) -> Self {
        Self {
            agent_instance_id: h.agent_instance_id.clone(),
            sequence: h.sequence,
            agent_version: h.agent_version.clone(),
            kubernetes_version: h.kubernetes_version.clone(),
            node_count: h.node_count,
            pod_count: h.pod_count,
            heartbeat_interval_seconds: h.heartbeat_interval_seconds,
        }
    }
}

impl From<&InventoryObject> for InventoryObjectJson {
    fn from(o: &InventoryObject) -> Self {
        Self {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            resource_version: o.resource_version.clone(),
            labels: o.labels.clone().into_iter().collect(),
            owner_kind: o.owner_kind.clone(),
            owner_name: o.owner_name.clone(),
            digest: o.digest.clone(),
            attributes: o.attributes.clone().into_iter().collect(),
            created_at: rfc3339(o.created_at.as_ref()),
        }
    }
}

impl From<&InventorySnapshot> for InventorySnapshotJson {
    fn from(s: &InventorySnapshot) -> Self {
        Self {
            snapshot_id: s.snapshot_id.clone(),
            chunk_index: s.chunk_index,
            last_chunk: s.last_chunk,
            total_objects: s.total_objects,
            objects: s.objects.iter().map(InventoryObjectJson::from).collect(),
        }
    }
}

impl From<&Body> for BodyJson {
    fn from(b: &Body) -> Self {
        match b {
            Body::AgentStarted(s) => Self::AgentStarted(s.into()),
            Body::Heartbeat(h) => Self::Heartbeat(h.into()),
            Body::InventorySnapshot(s) => Self::InventorySnapshot(s.into()),
            other => {
                let fields = format!("{other:?}");
                Self::Other {
                    event: fields.split('(').next().unwrap_or_default().to_owned(),
                    fields,
                }
            }
        }
    }
}

impl From<&Envelope> for EnvelopeJson {
    fn from(e: &Envelope) -> Self {
        Self {
            event_id: e.event_id.clone(),
            cluster_id: e.cluster_id.clone(),
            occurred_at: rfc3339(e.occurred_at.as_ref()),
            producer: e.producer.clone(),
            correlation_id: e.correlation_id.clone(),
            causation_id: e.causation_id.clone(),
            schema_version: e.schema_version,
            body: e.body.as_ref().map(BodyJson::from),
        }
    }
}

impl From<&WatchEvent> for WatchEventJson {
    fn from(e: &WatchEvent) -> Self {
        Self {
            stream_sequence: e.stream_sequence,
            subject: e.subject.clone(),
            event_type: e.r#type.clone(),
            stored_at: rfc3339(e.stored_at.as_ref()),
            envelope: e.envelope.as_ref().map(EnvelopeJson::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap(),
        })
    }

    #[test]
    fn ages_are_short() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(3), now), "3s ago");
        assert_eq!(age(now - chrono::Duration::seconds(125), now), "2m ago");
        assert_eq!(age(now - chrono::Duration::hours(5), now), "5h ago");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d ago");
        assert_eq!(age(now + chrono::Duration::seconds(2), now), "in 2s");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &[
                ("ID", Align::Left),
                ("NODES", Align::Right),
                ("AGENT", Align::Left),
            ],
            &[
                vec!["a".into(), "3".into(), "0.1.0".into()],
                vec!["long-name".into(), "12".into(), "-".into()],
            ],
        );
        assert_eq!(
            t,
            "ID         NODES  AGENT\na              3  0.1.0\nlong-name     12  -\n"
        );
    }

    #[test]
    fn clusters_table_shows_heartbeat_age_and_staleness() {
        let now = Utc::now();
        let fresh = Cluster {
            id: "a".into(),
            kubernetes_version: "v1.31.2".into(),
            agent_version: "0.1.0".into(),
            node_count: 3,
            pod_count: 40,
            inventory_objects: 212,
            heartbeat_interval_seconds: 10,
            last_heartbeat_at: ts(now - chrono::Duration::seconds(3)),
            ..Default::default()
        };
        let stale = Cluster {
            id: "b".into(),
            heartbeat_interval_seconds: 10,
            last_heartbeat_at: ts(now - chrono::Duration::seconds(120)),
            ..Default::default()
        };
        let t = clusters_table(&[fresh, stale], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  K8S VERSION  NODES  PODS  OBJECTS  LAST HEARTBEAT"));
        assert!(
            lines[1].contains("v1.31.2") && lines[1].contains("3s ago"),
            "{t}"
        );
        assert!(lines[2].contains("2m ago (stale)"), "{t}");
    }

    #[test]
    fn json_names_are_snake_case_and_times_rfc3339() {
        let c = Cluster {
            id: "a".into(),
            first_seen_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&ClusterJson::new(&c, false), false)).unwrap();
        assert_eq!(v["first_seen_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["last_heartbeat_at"], serde_json::Value::Null);
        assert!(v.get("inventory_by_kind").is_none());
        let e = WatchEvent {
            stream_sequence: 5,
            r#type: "agent.heartbeat".into(),
            envelope: Some(Envelope {
                body: Some(Body::Heartbeat(Heartbeat {
                    sequence: 9,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&WatchEventJson::from(&e), false)).unwrap();
        assert_eq!(v["type"], "agent.heartbeat");
        assert_eq!(v["envelope"]["body"]["heartbeat"]["sequence"], 9);
    }
}
