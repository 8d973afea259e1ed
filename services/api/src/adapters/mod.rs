//! The api's outside world: Postgres read models, the JetStream event log, gRPC and protobuf.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use canopy_kit::subject::ClusterId;

use crate::domain::{Cluster, PageRequest, WatchSpec};

pub mod audit;
pub mod commands;
pub mod grpc;
pub mod health;
pub mod interconnect;
pub mod jetstream;
#[cfg(test)]
pub mod memory;
pub mod postgres;
pub mod proto;
pub mod status;
pub mod trail;

pub use jetstream::EventLogError;
pub use postgres::ReadModelError;

/// Where cluster views are read from.
pub trait ReadModel: Send + Sync + 'static {
    /// Up to `page.size + 1` clusters above `page.after`, in id order (the extra one tells
    /// that another page exists).
    fn list_clusters(
        &self,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Vec<Cluster>, ReadModelError>> + Send;

    /// One cluster with its inventory counts per kind.
    fn get_cluster(
        &self,
        id: &ClusterId,
    ) -> impl Future<Output = Result<Option<Cluster>, ReadModelError>> + Send;

    /// The labels of a cluster, `None` when it is unknown.
    fn cluster_labels(
        &self,
        id: &ClusterId,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, ReadModelError>> + Send;

    /// Ok when reads can be served.
    fn ping(&self) -> impl Future<Output = Result<(), ReadModelError>> + Send;
}

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub subject: String,
    pub stored_at: DateTime<Utc>,
    pub payload: Bytes,
}

/// A cluster's labels as its AgentStarted at this stream sequence gave them.
pub type LabelsAt = (u64, BTreeMap<String, String>);

/// Events in stream order; ends only on error or when dropped.
pub type EventStream = BoxStream<'static, Result<StoredEvent, EventLogError>>;

/// Where Watch reads events from.
pub trait EventLog: Send + Sync + 'static {
    /// Starts reading the events `spec` selects; dropping the stream releases what it holds on
    /// the server.
    fn open(
        &self,
        spec: &WatchSpec,
    ) -> impl Future<Output = Result<EventStream, EventLogError>> + Send;

    /// The labels of the cluster's newest AgentStarted in the log and its sequence, `None`
    /// when the log holds none (never started, or aged out).
    fn last_labels(
        &self,
        cluster: &ClusterId,
    ) -> impl Future<Output = Result<Option<LabelsAt>, EventLogError>> + Send;

    /// Ok when watches can be served.
    fn ping(&self) -> impl Future<Output = Result<(), EventLogError>> + Send;
}
