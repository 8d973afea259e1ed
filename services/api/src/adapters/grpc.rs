//! The gRPC services: FleetService over the read models, EventService over the event log,
//! each limited to the caller's cluster-label scope.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, instrument};

use canopy_kit::proto::api::v1::{
    Cluster, GetClusterRequest, ListClustersRequest, ListClustersResponse, WatchEvent,
    WatchRequest, event_service_server::EventService, fleet_service_server::FleetService,
};

use canopy_kit::subject::{self, ClusterId};

use super::{EventLog, EventStream, LabelsAsOf, ReadModel, StoredEvent, proto, status};
use crate::domain::scope::WatchScope;
use crate::domain::{self, LABELS_CHANGED, PageRequest, WatchSpec};

// === impl FleetApi ===

/// FleetService: clusters as the read models know them.
pub struct FleetApi<R> {
    read_model: R,
}

impl<R: ReadModel> FleetApi<R> {
    pub fn new(read_model: R) -> Self {
        Self { read_model }
    }
}

#[tonic::async_trait]
impl<R: ReadModel> FleetService for FleetApi<R> {
    #[instrument(skip_all, fields(page_size = request.get_ref().page_size))]
    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        // A token scoped by cluster labels sees only clusters carrying all of them: the scope
        // joins the request's own label match (a conflicting value matches nothing).
        let scope = crate::auth::scope(&request);
        let r = request.into_inner();
        let Some(labels) = scope.narrow(r.match_labels) else {
            return Ok(Response::new(ListClustersResponse::default()));
        };
        let page_request = PageRequest::new(r.page_size, &r.page_token)?.with_labels(labels)?;
        let rows = self.read_model.list_clusters(&page_request).await?;
        let page = domain::page(rows, page_request.size);
        Ok(Response::new(ListClustersResponse {
            clusters: page.items.into_iter().map(Cluster::from).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(cluster = %request.get_ref().cluster_id))]
    async fn get_cluster(
        &self,
        request: Request<GetClusterRequest>,
    ) -> Result<Response<Cluster>, Status> {
        let id = domain::cluster_id("cluster_id", &request.get_ref().cluster_id)?;
        let cluster: Cluster = self
            .read_model
            .get_cluster(&id)
            .await?
            .ok_or_else(|| domain::Error::ClusterNotFound(id.to_string()))?
            .into();
        // Out of scope looks exactly like missing: a scoped caller learns nothing more.
        if !crate::auth::scope(&request).admits_cluster(&cluster.labels) {
            return Err(domain::Error::ClusterNotFound(id.to_string()).into());
        }
        Ok(Response::new(cluster))
    }
}

// === impl EventApi ===

/// EventService: FLEET_EVENTS, history and live, for as long as the client listens.
pub struct EventApi<L, R> {
    log: Arc<L>,
    /// Where a scoped watch reads the labels of a cluster the log has no AgentStarted of.
    read_model: Arc<R>,
    shutdown: CancellationToken,
    buffer: usize,
}

impl<L: EventLog, R: ReadModel> EventApi<L, R> {
    /// Watches end (with UNAVAILABLE) when `shutdown` is cancelled; `buffer` events may wait
    /// for a slow client before the log is no longer read.
    pub fn new(log: L, read_model: R, shutdown: CancellationToken, buffer: usize) -> Self {
        Self {
            log: Arc::new(log),
            read_model: Arc::new(read_model),
            shutdown,
            buffer: buffer.max(1),
        }
    }
}

#[tonic::async_trait]
impl<L: EventLog, R: ReadModel> EventService for EventApi<L, R> {
    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    #[instrument(skip_all, fields(
        cluster = %request.get_ref().cluster_id,
        types = ?request.get_ref().types,
        start = ?request.get_ref().start,
    ))]
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(status::shutting_down(None));
        }
        let scope = crate::auth::scope(&request);
        let mut spec = WatchSpec::try_from(request.get_ref())?;
        // A token scoped by cluster labels gets the events of clusters in its scope only; the
        // watch reads label changes from the log itself, in order (see `WatchScope`).
        let judge = if scope.is_fleet() {
            None
        } else {
            spec = spec.with_label_changes();
            Some(Judge {
                rule: WatchScope::new(scope),
                log: Arc::clone(&self.log),
                read_model: Arc::clone(&self.read_model),
            })
        };
        let events = self.log.open(&spec).await?;
        let (tx, rx) = mpsc::channel(self.buffer);
        tokio::spawn(forward(events, tx, self.shutdown.clone(), judge, spec).in_current_span());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Decides which events of a scoped watch reach the caller.
struct Judge<L, R> {
    rule: WatchScope,
    log: Arc<L>,
    read_model: Arc<R>,
}

impl<L: EventLog, R: ReadModel> Judge<L, R> {
    /// Whether `event` reaches the caller: its cluster was in scope when the event was stored
    /// (an event of no cluster never is) and `spec` asks for its type.
    async fn admits(&mut self, event: &StoredEvent, spec: &WatchSpec) -> Result<bool, Status> {
        let Ok(parsed) = subject::parse_event(&event.subject) else {
            return Ok(false);
        };
        let (cluster, event_type) = (parsed.cluster, parsed.event_type());
        if event_type == LABELS_CHANGED
            && let Some(labels) = proto::started_labels(&event.subject, &event.payload)
        {
            self.rule.learn(cluster, event.seq, Some(&labels));
        } else if self.rule.admits(cluster).is_none() {
            self.look_up(cluster, event.seq).await?;
        }
        Ok(self.rule.admits(cluster) == Some(true) && spec.delivers(&event_type))
    }

    /// Learns the labels `cluster` had at stream sequence `seq`, when the watch first meets
    /// it; from then on the AgentStarted events the watch passes keep them current.
    async fn look_up(&mut self, cluster: &str, seq: u64) -> Result<(), Status> {
        let none = None::<&BTreeMap<String, String>>;
        let Ok(id) = ClusterId::parse(cluster) else {
            self.rule.learn(cluster, 0, none);
            return Ok(());
        };
        match self.log.labels_as_of(&id, seq).await? {
            LabelsAsOf::Started(at, labels) => self.rule.learn(cluster, at, Some(&labels)),
            LabelsAsOf::NotInLog => {
                let labels = self.read_model.cluster_labels(&id).await?;
                self.rule.learn(cluster, 0, labels.as_ref());
            }
            // The labels then are unknown: held back until the watch passes the cluster's
            // next AgentStarted, which the log holds.
            LabelsAsOf::AgedOut => self.rule.learn(cluster, 0, none),
        }
        Ok(())
    }
}

/// Sends events to the client until it goes away, the log fails or the api shuts down; the
/// event stream (and with it the server-side consumer) is dropped on return. A scoped watch's
/// `judge` holds back the events out of its scope.
async fn forward<L: EventLog, R: ReadModel>(
    mut events: EventStream,
    tx: mpsc::Sender<Result<WatchEvent, Status>>,
    shutdown: CancellationToken,
    mut judge: Option<Judge<L, R>>,
    spec: WatchSpec,
) {
    use futures::StreamExt as _;
    metrics::gauge!("canopy_api_watches_active").increment(1.0);
    debug!("watch started");
    let mut last_seq = None;
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Best effort: a client too slow to take it still sees the stream end.
                let _ = tx.try_send(Err(status::shutting_down(last_seq)));
                break;
            }
            () = tx.closed() => {
                debug!("watcher went away");
                break;
            }
            next = events.next() => next,
        };
        let item = match next {
            Some(Ok(event)) => {
                let admitted = match judge.as_mut() {
                    None => Ok(true),
                    Some(j) => j.admits(&event, &spec).await,
                };
                last_seq = Some(event.seq);
                match admitted {
                    Ok(true) => Ok(proto::watch_event(event)),
                    Ok(false) => continue,
                    Err(e) => Err(e),
                }
            }
            Some(Err(e)) => Err(Status::from(e)),
            None => break,
        };
        let failed = item.is_err();
        let sent = tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            r = tx.send(item) => r.is_ok(),
        };
        if failed || !sent {
            if shutdown.is_cancelled() {
                let _ = tx.try_send(Err(status::shutting_down(last_seq)));
            }
            break;
        }
        metrics::counter!("canopy_api_watch_events_total").increment(1);
    }
    metrics::gauge!("canopy_api_watches_active").decrement(1.0);
    debug!(?last_seq, "watch ended");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use chrono::{DateTime, Utc};
    use futures::StreamExt as _;
    use tonic::Code;

    use canopy_kit::envelope;
    use canopy_kit::proto::api::v1::watch_request::Start;
    use canopy_kit::proto::event::v1::{Heartbeat, envelope::Body};
    use canopy_kit::subject::ClusterId;

    use super::*;
    use crate::adapters::StoredEvent;
    use crate::adapters::memory::{MemoryEventLog, MemoryReadModel};
    use crate::domain::Cluster as DomainCluster;

    fn fleet(ids: &[&str]) -> FleetApi<MemoryReadModel> {
        let clusters = ids.iter().map(|id| DomainCluster {
            id: (*id).to_owned(),
            first_seen_at: DateTime::<Utc>::UNIX_EPOCH,
            agent: None,
            inventory: None,
            labels: [(
                "env".to_owned(),
                if *id < "c" { "prod" } else { "dev" }.to_owned(),
            )]
            .into(),
        });
        FleetApi::new(MemoryReadModel::new(clusters))
    }

    #[tokio::test]
    async fn list_pages_through_every_cluster_in_id_order() {
        let api = fleet(&["c", "a", "e", "b", "d"]);
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = api
                .list_clusters(Request::new(ListClustersRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            seen.extend(page.clusters.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert_eq!(pages, 3);
        let bad = api
            .list_clusters(Request::new(ListClustersRequest {
                page_size: 2,
                page_token: "nonsense".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn list_filters_on_labels_and_rejects_bad_selectors() {
        let api = fleet(&["c", "a", "e", "b", "d"]);
        let list = |labels: &[(&str, &str)]| {
            api.list_clusters(Request::new(ListClustersRequest {
                match_labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }))
        };
        let ids = |r: Response<ListClustersResponse>| -> Vec<String> {
            r.into_inner().clusters.into_iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(list(&[("env", "prod")]).await.unwrap()), ["a", "b"]);
        assert_eq!(ids(list(&[("env", "dev")]).await.unwrap()), ["c", "d", "e"]);
        assert!(ids(list(&[("env", "qa")]).await.unwrap()).is_empty());
        let bad = list(&[("env", "prod>")]).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("match_labels"), "{}", bad.message());
    }

    #[tokio::test]
    async fn get_rejects_bad_ids_and_reports_unknown_ones() {
        let api = fleet(&["a"]);
        let get = |id: &str| {
            api.get_cluster(Request::new(GetClusterRequest {
                cluster_id: id.into(),
            }))
        };
        assert_eq!(get("a").await.unwrap().into_inner().id, "a");
        let err = get("b").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = get("A.b").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("cluster_id"), "{}", err.message());
    }

    fn heartbeat(cluster: &str, seq: u64) -> StoredEvent {
        let c = ClusterId::parse(cluster).unwrap();
        let env = envelope::new(
            &c,
            "test",
            Body::Heartbeat(Heartbeat {
                agent_instance_id: "i".into(),
                sequence: seq,
                ..Default::default()
            }),
        );
        StoredEvent {
            seq,
            subject: envelope::subject_of(&env).unwrap(),
            stored_at: Utc::now(),
            payload: envelope::encode(&env),
        }
    }

    #[tokio::test]
    async fn watch_streams_until_shutdown_then_says_where_to_resume() {
        let garbage = StoredEvent {
            seq: 3,
            subject: "canopy.evt.a.agent.heartbeat".into(),
            stored_at: Utc::now(),
            payload: Bytes::from_static(b"\x01"),
        };
        let log = MemoryEventLog::new(vec![heartbeat("a", 1), heartbeat("b", 2), garbage]);
        let shutdown = CancellationToken::new();
        let api = EventApi::new(log, MemoryReadModel::new([]), shutdown.clone(), 8);
        let mut stream = api
            .watch(Request::new(WatchRequest {
                cluster_id: "a".into(),
                types: vec!["heartbeat".into()],
                start: Some(Start::FromSequence(1)),
            }))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.stream_sequence, 1);
        assert!(first.envelope.is_some());
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.stream_sequence, 3);
        assert!(second.envelope.is_none());
        shutdown.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(end.code(), Code::Unavailable);
        assert!(
            end.message().contains("from_sequence = 4"),
            "{}",
            end.message()
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_rejects_bad_filters() {
        let api = EventApi::new(
            MemoryEventLog::new(Vec::new()),
            MemoryReadModel::new([]),
            CancellationToken::new(),
            8,
        );
        for req in [
            WatchRequest {
                cluster_id: "Nope!".into(),
                ..Default::default()
            },
            WatchRequest {
                types: vec!["agent.*".into()],
                ..Default::default()
            },
            WatchRequest {
                start: Some(Start::FromSequence(0)),
                ..Default::default()
            },
        ] {
            let err = api.watch(Request::new(req.clone())).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{req:?}");
        }
    }
}
