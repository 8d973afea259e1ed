//! Shared helpers: the agent run in-process, the events it stored, and a raw HTTP GET.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use canopy_agent::{App, config::Config};
use canopy_kit::proto::event::v1::{Envelope, Heartbeat, envelope::Body};
use canopy_kit::streams;
use canopy_testkit::NatsProcess;
use clap::Parser as _;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

/// An agent running in this process until [`Agent::stop`].
pub struct Agent {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    pub http: SocketAddr,
}

impl Agent {
    /// Starts an agent for cluster `prod-eu` with 200 ms heartbeats against `api_url`.
    pub async fn start(nats: &NatsProcess, api_url: &str, extra: &[&str]) -> Self {
        let nats_url = nats.client_url();
        let mut args = vec![
            "canopy-agent",
            "--cluster-id",
            "prod-eu",
            "--heartbeat-interval",
            "200ms",
            "--log-format",
            "text",
            "--api-url",
            api_url,
            "--nats-url",
            &nats_url,
        ];
        args.extend_from_slice(extra);
        let cfg = Config::try_parse_from(args).unwrap();
        let app = App::build(cfg).await.unwrap();
        let http = app.http_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        Self { stop, task, http }
    }

    /// Stops the agent and waits for `run` to return `Ok`; returns how long that took.
    pub async fn stop(self) -> Duration {
        let began = tokio::time::Instant::now();
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent did not stop")
            .unwrap()
            .unwrap();
        began.elapsed()
    }
}

/// The agent and inventory events of EVENTS (with their payload sizes), in stream order; audit
/// events are left out (a large cluster's findings would make every read slow).
pub async fn events(js: &jetstream::Context) -> anyhow::Result<Vec<(usize, Envelope)>> {
    events_of(
        js,
        vec![
            "canopy.evt.*.agent.>".to_owned(),
            "canopy.evt.*.inventory.>".to_owned(),
        ],
    )
    .await
}

/// Every event of EVENTS, audits included.
pub async fn all_events(js: &jetstream::Context) -> anyhow::Result<Vec<(usize, Envelope)>> {
    events_of(js, Vec::new()).await
}

async fn events_of(
    js: &jetstream::Context,
    filter_subjects: Vec<String>,
) -> anyhow::Result<Vec<(usize, Envelope)>> {
    let stream = js.get_stream(streams::EVENTS).await?;
    let mut out = Vec::new();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects,
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await?;
    while let Some(m) = tokio::time::timeout(WAIT, messages.next()).await? {
        let m = m?;
        out.push((
            m.payload.len(),
            canopy_kit::envelope::decode(&m.subject, &m.payload)?,
        ));
        if m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 {
            break;
        }
    }
    Ok(out)
}

pub fn heartbeats(events: &[(usize, Envelope)]) -> Vec<Heartbeat> {
    events
        .iter()
        .filter_map(|(_, e)| match &e.body {
            Some(Body::Heartbeat(h)) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

pub fn sequences(events: &[(usize, Envelope)]) -> Vec<u64> {
    heartbeats(events).iter().map(|h| h.sequence).collect()
}

/// One snapshot as found in the stream.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub id: String,
    pub counts: BTreeMap<String, usize>,
    /// `total_objects` of the last chunk.
    pub total: u64,
    pub chunk_indexes: Vec<u32>,
    pub chunk_sizes: Vec<usize>,
    pub complete: bool,
}

/// The snapshots in the stream, in the order their first chunk was stored.
pub fn snapshots(events: &[(usize, Envelope)]) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = Vec::new();
    for (size, e) in events {
        let Some(Body::InventorySnapshot(s)) = &e.body else {
            continue;
        };
        assert_eq!(
            e.correlation_id, s.snapshot_id,
            "chunks carry their snapshot id as correlation id"
        );
        let i = match out.iter().position(|x| x.id == s.snapshot_id) {
            Some(i) => i,
            None => {
                out.push(Snapshot {
                    id: s.snapshot_id.clone(),
                    ..Snapshot::default()
                });
                out.len() - 1
            }
        };
        let snap = &mut out[i];
        snap.chunk_indexes.push(s.chunk_index);
        snap.chunk_sizes.push(*size);
        for o in &s.objects {
            *snap.counts.entry(o.kind.clone()).or_insert(0) += 1;
        }
        if s.last_chunk {
            snap.complete = true;
            snap.total = s.total_objects;
        }
    }
    out
}

/// The first complete snapshot, checked for chunk indexes 0, 1, 2, ... in stream order.
pub fn first_complete(events: &[(usize, Envelope)]) -> Option<Snapshot> {
    let snap = snapshots(events).into_iter().find(|s| s.complete)?;
    let expected: Vec<u32> = (0..snap.chunk_indexes.len() as u32).collect();
    assert_eq!(
        snap.chunk_indexes, expected,
        "chunks out of order or missing"
    );
    Some(snap)
}

/// Status code and body of `GET path` (HTTP/1.0, no client crate needed).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed response {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The value of a Prometheus counter line `name{labels} value` (0 when absent).
pub fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name_and_labels))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .sum()
}
