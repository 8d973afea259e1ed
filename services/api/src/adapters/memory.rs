//! In-memory read model and event log, for testing the gRPC layer without servers.

use std::collections::BTreeMap;

use futures::StreamExt as _;

use canopy_kit::subject::ClusterId;

use super::proto::started_labels;
use super::{
    EventLog, EventLogError, EventStream, LabelsAsOf, ReadModel, ReadModelError, StoredEvent,
};
use crate::domain::{Cluster, PageRequest, WatchSpec, WatchStart};

pub struct MemoryReadModel {
    clusters: BTreeMap<String, Cluster>,
}

impl MemoryReadModel {
    pub fn new(clusters: impl IntoIterator<Item = Cluster>) -> Self {
        Self {
            clusters: clusters.into_iter().map(|c| (c.id.clone(), c)).collect(),
        }
    }
}

impl ReadModel for MemoryReadModel {
    async fn list_clusters(&self, page: &PageRequest) -> Result<Vec<Cluster>, ReadModelError> {
        let after = page.after.as_ref().map(ClusterId::as_str);
        Ok(self
            .clusters
            .values()
            .filter(|c| after.is_none_or(|a| c.id.as_str() > a))
            .filter(|c| {
                page.match_labels
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .take(usize::try_from(page.size).unwrap_or(usize::MAX) + 1)
            .cloned()
            .collect())
    }

    async fn get_cluster(&self, id: &ClusterId) -> Result<Option<Cluster>, ReadModelError> {
        Ok(self.clusters.get(id.as_str()).cloned())
    }

    async fn cluster_labels(
        &self,
        id: &ClusterId,
    ) -> Result<Option<BTreeMap<String, String>>, ReadModelError> {
        Ok(self.clusters.get(id.as_str()).map(|c| c.labels.clone()))
    }

    async fn ping(&self) -> Result<(), ReadModelError> {
        Ok(())
    }
}

/// A fixed history; watches never see live events and end only when dropped.
pub struct MemoryEventLog {
    events: Vec<StoredEvent>,
}

impl MemoryEventLog {
    pub fn new(events: Vec<StoredEvent>) -> Self {
        Self { events }
    }
}

/// NATS subject matching: `*` is one token, `>` the rest.
fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl EventLog for MemoryEventLog {
    async fn open(&self, spec: &WatchSpec) -> Result<EventStream, EventLogError> {
        let filters = spec.filter_subjects();
        let selected: Vec<Result<StoredEvent, EventLogError>> = self
            .events
            .iter()
            .filter(|e| filters.iter().any(|f| matches(f, &e.subject)))
            .filter(|e| match spec.start {
                WatchStart::New => false,
                WatchStart::Sequence(seq) => e.seq >= seq,
                WatchStart::Time(t) => e.stored_at >= t,
            })
            .cloned()
            .map(Ok)
            .collect();
        Ok(futures::stream::iter(selected)
            .chain(futures::stream::pending())
            .boxed())
    }

    async fn labels_as_of(
        &self,
        cluster: &ClusterId,
        seq: u64,
    ) -> Result<LabelsAsOf, EventLogError> {
        let subject = canopy_kit::subject::event(cluster, "agent", "started").unwrap_or_default();
        let mut started = self
            .events
            .iter()
            .filter(|e| e.subject == subject)
            .peekable();
        if started.peek().is_none() {
            return Ok(LabelsAsOf::NotInLog);
        }
        Ok(started
            .filter(|e| e.seq <= seq)
            .filter_map(|e| {
                Some(LabelsAsOf::Started(
                    e.seq,
                    started_labels(&e.subject, &e.payload)?,
                ))
            })
            .last()
            .unwrap_or(LabelsAsOf::AgedOut))
    }

    async fn ping(&self) -> Result<(), EventLogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_matching() {
        assert!(super::matches(
            "canopy.evt.*.>",
            "canopy.evt.a.agent.heartbeat"
        ));
        assert!(super::matches(
            "canopy.evt.a.agent.heartbeat",
            "canopy.evt.a.agent.heartbeat"
        ));
        assert!(!super::matches(
            "canopy.evt.b.>",
            "canopy.evt.a.agent.heartbeat"
        ));
        assert!(!super::matches(
            "canopy.evt.a.agent.*",
            "canopy.evt.a.agent"
        ));
    }
}
