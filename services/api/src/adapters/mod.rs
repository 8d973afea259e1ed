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

/// What the log tells of a cluster's labels as of a stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelsAsOf {
    /// Its newest AgentStarted at or before the position: its sequence and labels.
    Started(u64, BTreeMap<String, String>),
    /// The log holds no AgentStarted of the cluster: its labels have not changed since the
    /// last one the read model projected.
    NotInLog,
    /// Only AgentStarted events after the position remain: the labels the cluster had then
    /// have aged out with the event that set them.
    AgedOut,
}

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

    /// The labels `cluster` had at stream sequence `seq`, from the AgentStarted events the
    /// log holds (one that does not decode set no labels, as for the read model).
    fn labels_as_of(
        &self,
        cluster: &ClusterId,
        seq: u64,
    ) -> impl Future<Output = Result<LabelsAsOf, EventLogError>> + Send;

    /// Ok when watches can be served.
    fn ping(&self) -> impl Future<Output = Result<(), EventLogError>> + Send;
}
