//! Wiring: the Kubernetes client, the leaf's JetStream, the heartbeat and inventory loops, the
//! health server, and a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_kit::envelope;
use canopy_kit::health::HealthServer;
use canopy_kit::proto::event::v1::{AgentStarted, Envelope, Heartbeat, envelope::Body};
use canopy_kit::streams;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::adapters::kube::{self as k8s, KINDS};
use crate::adapters::publisher::publish_until_stored;
use crate::config::Config;
use crate::domain::{chunk::Chunker, inventory};

/// Heartbeats (and the start event) waiting to be stored while the leaf is unreachable.
const QUEUE: usize = 10_000;
/// How long the stop may take to store what is in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// A connected, bound, not yet running agent.
pub struct App {
    cfg: Config,
    client: async_nats::Client,
    js: jetstream::Context,
    kube: kube::Client,
    health: HealthServer,
    instance: String,
}

impl App {
    /// Connects to NATS, builds the Kubernetes client and binds the health server.
    ///
    /// # Errors
    /// When the Kubernetes configuration is invalid, or NATS or the health port fail.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let kube = k8s::client(cfg.api_url.as_deref()).await?;
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-agent").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            client,
            js,
            kube,
            health,
            instance: Uuid::now_v7().to_string(),
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// This run's agent instance id (heartbeat sequences count per instance).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Runs until `shutdown`, then stores what is in flight (bounded) and stops.
    ///
    /// # Errors
    /// Never for outside failures (they are retried); only when a task panics.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.health.readiness();
        let health_stop = CancellationToken::new();
        let health = tokio::spawn(self.health.serve(health_stop.clone()));
        let Some(k8s_version) = prepare(&self.cfg, &self.kube, &self.js, &shutdown).await else {
            health_stop.cancel();
            let _ = health.await;
            return Ok(());
        };
        readiness.set_ready(true);
        info!(cluster = %self.cfg.cluster_id, instance = %self.instance, %k8s_version, "agent running");

        // Publishing outlives the loops by DRAIN so that what is queued gets stored.
        let publish_stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel::<Envelope>(QUEUE);
        let interval_secs =
            u32::try_from(self.cfg.heartbeat_interval.as_secs()).unwrap_or(u32::MAX);
        let started = envelope::new(
            &self.cfg.cluster_id,
            "agent",
            Body::AgentStarted(AgentStarted {
                agent_instance_id: self.instance.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                kubernetes_version: k8s_version.clone(),
                heartbeat_interval_seconds: interval_secs,
            }),
        );
        let _ = tx.send(started).await;
        let publisher = tokio::spawn(publish_queue(self.js.clone(), rx, publish_stop.clone()));
        let heartbeats = tokio::spawn(heartbeat_loop(
            self.cfg.clone(),
            self.kube.clone(),
            self.instance.clone(),
            k8s_version,
            tx,
            shutdown.clone(),
        ));
        let inventory = tokio::spawn(inventory_loop(
            self.cfg.clone(),
            self.kube.clone(),
            self.js.clone(),
            shutdown.clone(),
        ));

        shutdown.cancelled().await;
        readiness.set_ready(false);
        let _ = heartbeats.await;
        let _ = inventory.await;
        // The heartbeat loop dropped its sender: the publisher ends once the queue is empty.
        let mut publisher = publisher;
        if tokio::time::timeout(DRAIN, &mut publisher).await.is_err() {
            warn!("events still queued after {DRAIN:?}; stopping without them");
            publish_stop.cancel();
            let _ = publisher.await;
        }
        let _ = tokio::time::timeout(DRAIN, self.client.drain()).await;
        health_stop.cancel();
        let _ = health.await;
        Ok(())
    }
}

/// Waits until Kubernetes answers and EVENTS exists; `None` when stopped first.
async fn prepare(
    cfg: &Config,
    kube: &kube::Client,
    js: &jetstream::Context,
    shutdown: &CancellationToken,
) -> Option<String> {
    let version = retry(shutdown, "read the Kubernetes version", || {
        k8s::version(kube)
    })
    .await?;
    let wanted = streams::leaf_events(&cfg.cluster_id, cfg.events_max_bytes);
    retry(shutdown, "ensure the EVENTS stream", || async {
        streams::ensure(js, &wanted)
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    Some(version)
}

/// Builds and runs an agent until `shutdown`.
///
/// # Errors
/// As [`App::build`] and [`App::run`].
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

async fn retry<T, F, Fut>(shutdown: &CancellationToken, what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => warn!(error = format!("{e:#}"), retry_in = ?backoff, "failed to {what}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Stores queued events one by one, in order, each until it is acknowledged.
async fn publish_queue(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Envelope>,
    stop: CancellationToken,
) {
    while let Some(env) = rx.recv().await {
        if !publish_until_stored(&js, &env, &stop).await {
            return;
        }
        if matches!(env.body, Some(Body::Heartbeat(_))) {
            metrics::counter!("canopy_agent_heartbeats_published_total").increment(1);
        }
    }
}

async fn heartbeat_loop(
    cfg: Config,
    kube: kube::Client,
    instance: String,
    mut k8s_version: String,
    tx: mpsc::Sender<Envelope>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (node_kind, pod_kind) = match (k8s::kind_named("Node"), k8s::kind_named("Pod")) {
        (Some(n), Some(p)) => (*n, *p),
        _ => return,
    };
    let (mut nodes, mut pods) = (0u32, 0u32);
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Counts and version are refreshed when the API answers; a heartbeat goes out anyway.
        match tokio::try_join!(
            k8s::count(&kube, &node_kind),
            k8s::count(&kube, &pod_kind),
            k8s::version(&kube)
        ) {
            Ok((n, p, v)) => {
                nodes = u32::try_from(n).unwrap_or(u32::MAX);
                pods = u32::try_from(p).unwrap_or(u32::MAX);
                k8s_version = v;
            }
            Err(e) => {
                metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => "heartbeat")
                    .increment(1);
                warn!(
                    error = format!("{e:#}"),
                    "failed to count nodes and pods; reporting the last counts"
                );
            }
        }
        sequence += 1;
        let env = envelope::new(
            &cfg.cluster_id,
            "agent",
            Body::Heartbeat(Heartbeat {
                agent_instance_id: instance.clone(),
                sequence,
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                kubernetes_version: k8s_version.clone(),
                node_count: nodes,
                pod_count: pods,
                heartbeat_interval_seconds: u32::try_from(cfg.heartbeat_interval.as_secs())
                    .unwrap_or(u32::MAX),
            }),
        );
        if tx.try_send(env).is_err() {
            // The queue holds QUEUE heartbeats: an outage longer than that loses the newest,
            // which the sequence numbers make visible downstream.
            metrics::counter!("canopy_agent_heartbeats_dropped_total").increment(1);
            warn!(sequence, "heartbeat queue full; heartbeat dropped");
        }
    }
}

async fn inventory_loop(
    cfg: Config,
    kube: kube::Client,
    js: jetstream::Context,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.inventory_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match snapshot(&cfg, &kube, &js, &shutdown).await {
            Ok(Some(total)) => info!(objects = total, "inventory snapshot published"),
            Ok(None) => return,
            Err(e) => warn!(
                error = format!("{e:#}"),
                "inventory snapshot abandoned; the previous one stays current"
            ),
        }
    }
}

/// Lists every kind page by page and publishes the chunks; `Ok(None)` when stopped midway.
/// A kind the API refuses for good (403, 404) is left out; any other failure abandons the
/// snapshot (no final chunk), so an incomplete listing never replaces a complete one.
async fn snapshot(
    cfg: &Config,
    kube: &kube::Client,
    js: &jetstream::Context,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<u64>> {
    let mut chunker = Chunker::new(
        cfg.cluster_id.clone(),
        Uuid::now_v7().to_string(),
        cfg.max_chunk_bytes as usize,
    );
    for kind in KINDS {
        let api_version = kind.api_version();
        let mut pager = k8s::Pager::new(kube, kind, cfg.page_size);
        loop {
            let page = match pager.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => kind.kind)
                        .increment(1);
                    if let Some(code) = k8s::refused(&e) {
                        // Refused for good (e.g. RBAC without secrets): the snapshot is complete
                        // without this kind, as it will be every time.
                        warn!(
                            kind = kind.kind,
                            code,
                            error = format!("{e:#}"),
                            "kind not inventoried: refused by the API"
                        );
                        break;
                    }
                    return Err(e).with_context(|| format!("failed to list {}", kind.plural));
                }
            };
            for obj in &page {
                let object = inventory::to_inventory_object(&api_version, kind.kind, obj);
                if let Some(chunk) = chunker.push(object) {
                    if !publish_until_stored(js, &chunk, shutdown).await {
                        return Ok(None);
                    }
                    metrics::counter!("canopy_agent_inventory_chunks_total").increment(1);
                }
            }
        }
    }
    let total = chunker.total();
    if chunker.truncated() > 0 {
        warn!(
            objects = chunker.truncated(),
            "objects too large for one chunk were sent without attributes"
        );
    }
    if !publish_until_stored(js, &chunker.finish(), shutdown).await {
        return Ok(None);
    }
    metrics::counter!("canopy_agent_inventory_chunks_total").increment(1);
    metrics::counter!("canopy_agent_inventory_objects_total").increment(total);
    Ok(Some(total))
}
