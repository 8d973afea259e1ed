//! Reads FLEET_EVENTS for Watch through ephemeral ordered pull consumers.
//!
//! An ordered consumer needs no acks, recreates itself after a gap (resuming at the next
//! sequence) and lives in memory on the server; each Watch gets its own, and deletes it when
//! the Watch ends so that the server need not wait for the inactivity threshold (30 s) to reap
//! it.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{
    self, ErrorCode,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    context::GetStreamErrorKind,
    message::StreamMessage,
    stream::{LastRawMessageError, LastRawMessageErrorKind, Stream as JsStream},
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use thiserror::Error;
use tracing::{debug, warn};

use canopy_kit::subject::{self, ClusterId};

use super::proto::started_labels;
use super::{EventLog, EventStream, LabelsAsOf, StoredEvent};
use crate::domain::{WatchSpec, WatchStart};

#[derive(Debug, Error)]
pub enum EventLogError {
    #[error("stream {0} does not exist (yet)")]
    StreamMissing(String),
    #[error("failed to {action}: {source}")]
    Nats {
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl EventLogError {
    fn nats(action: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Self::Nats {
            action,
            source: source.into(),
        }
    }
}

/// One JetStream stream of events (FLEET_EVENTS on the seed).
#[derive(Clone)]
pub struct JetStreamLog {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
}

impl JetStreamLog {
    pub fn new(client: async_nats::Client, js: jetstream::Context, stream: &str) -> Self {
        Self {
            js,
            client,
            stream: stream.to_owned(),
        }
    }

    async fn stream(&self) -> Result<JsStream, EventLogError> {
        self.js.get_stream(&self.stream).await.map_err(|e| {
            let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND);
            if missing {
                EventLogError::StreamMissing(self.stream.clone())
            } else {
                EventLogError::nats("open the event stream", e)
            }
        })
    }
}

fn deliver_policy(start: WatchStart) -> Result<DeliverPolicy, EventLogError> {
    Ok(match start {
        WatchStart::New => DeliverPolicy::New,
        WatchStart::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        WatchStart::Time(t) => {
            let nanos = t.timestamp_nanos_opt().map_or(i128::MAX, i128::from);
            let start_time = async_nats::datetime::from_nanos(nanos)
                .map_err(|e| EventLogError::nats("convert the start time", e))?;
            DeliverPolicy::ByStartTime { start_time }
        }
    })
}

impl EventLog for JetStreamLog {
    async fn open(&self, spec: &WatchSpec) -> Result<EventStream, EventLogError> {
        let stream = self.stream().await?;
        let name = format!("api-watch-{}", uuid::Uuid::now_v7().simple());
        let mut filters = spec.filter_subjects();
        // One filter goes into filter_subject so that servers before 2.10 understand it too.
        let (filter_subject, filter_subjects) = if filters.len() == 1 {
            (filters.pop().unwrap_or_default(), Vec::new())
        } else {
            (String::new(), filters)
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                name: Some(name.clone()),
                description: Some("canopy-api Watch".to_owned()),
                filter_subject,
                filter_subjects,
                deliver_policy: deliver_policy(spec.start)?,
                ..Default::default()
            })
            .await
            .map_err(|e| EventLogError::nats("create the watch consumer", e))?;
        let cleanup = ConsumerCleanup {
            stream: Some(stream),
            name,
        };
        let messages = consumer
            .messages()
            .await
            .map_err(|e| EventLogError::nats("start the watch consumer", e))?;
        let events = messages.map(|r| -> Result<StoredEvent, EventLogError> {
            let m = r.map_err(|e| EventLogError::nats("read the event stream", e))?;
            let info = m
                .info()
                .map_err(|e| EventLogError::nats("read message metadata", e))?;
            Ok(StoredEvent {
                seq: info.stream_sequence,
                subject: m.subject.to_string(),
                stored_at: stored_at(info.published),
                payload: m.payload.clone(),
            })
        });
        Ok(Box::pin(WithCleanup {
            inner: events,
            _cleanup: cleanup,
        }))
    }

    async fn labels_as_of(
        &self,
        cluster: &ClusterId,
        seq: u64,
    ) -> Result<LabelsAsOf, EventLogError> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| EventLogError::nats("open the event stream", e))?;
        let subject = subject::event(cluster, "agent", "started")
            .map_err(|e| EventLogError::nats("name the AgentStarted subject", e))?;
        let read = |e: LastRawMessageError| EventLogError::nats("read a cluster's AgentStarted", e);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Ok(LabelsAsOf::NotInLog);
            }
            Err(e) => return Err(read(e)),
        };
        let stored = |m: &StreamMessage| started_labels(&m.subject, &m.payload);
        // Live, the newest is almost always behind the watch already.
        if last.sequence <= seq
            && let Some(labels) = stored(&last)
        {
            return Ok(LabelsAsOf::Started(last.sequence, labels));
        }
        // Replaying: walk the cluster's AgentStarted events (one per agent start) up to `seq`.
        let mut found = LabelsAsOf::AgedOut;
        let mut next = 1;
        loop {
            let m = match stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(m) if m.sequence <= seq => m,
                Ok(_) => break,
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => break,
                Err(e) => return Err(read(e)),
            };
            if let Some(labels) = stored(&m) {
                found = LabelsAsOf::Started(m.sequence, labels);
            }
            next = m.sequence + 1;
        }
        Ok(found)
    }

    async fn ping(&self) -> Result<(), EventLogError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(EventLogError::nats(
                "reach NATS",
                std::io::Error::new(std::io::ErrorKind::NotConnected, "not connected"),
            ));
        }
        self.stream().await.map(|_| ())
    }
}

fn stored_at(published: async_nats::datetime::DateTime) -> DateTime<Utc> {
    let nanos = published.unix_timestamp_nanos();
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    DateTime::from_timestamp(secs, sub).unwrap_or_default()
}

/// A stream that deletes its consumer when dropped.
struct WithCleanup<S> {
    inner: S,
    _cleanup: ConsumerCleanup,
}

impl<S: Stream + Unpin> Stream for WithCleanup<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

struct ConsumerCleanup {
    stream: Option<JsStream>,
    name: String,
}

impl Drop for ConsumerCleanup {
    fn drop(&mut self) {
        let (Some(stream), Ok(rt)) = (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        rt.spawn(async move { delete_consumers(&stream, &name).await });
    }
}

/// Deletes the watch consumer, or the ones an ordered consumer recreated in its place
/// (`<name>_<n>`) when the first one is gone.
async fn delete_consumers(stream: &JsStream, name: &str) {
    match stream.delete_consumer(name).await {
        Ok(_) => debug!(consumer = name, "watch consumer deleted"),
        Err(e) => {
            debug!(consumer = name, error = %e, "watch consumer not deleted; looking for replacements");
            let prefix = format!("{name}_");
            let names: Vec<String> = stream
                .consumer_names()
                .filter_map(|n| async move { n.ok() })
                .filter(|n| futures::future::ready(n.starts_with(&prefix)))
                .collect()
                .await;
            for n in names {
                if let Err(e) = stream.delete_consumer(&n).await {
                    warn!(consumer = %n, error = %e, "failed to delete a watch consumer; the server reaps it after 30 s");
                }
            }
        }
    }
}
