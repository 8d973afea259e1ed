//! Wiring: the Kubernetes client, the leaf's JetStream, the heartbeat and inventory loops, the
//! health server, and a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_kit::envelope;
use canopy_kit::health::HealthServer;
use canopy_kit::proto::event::v1::{AgentStarted, Envelope, InventoryResult, envelope::Body};
use canopy_kit::streams;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::adapters::kube::{self as k8s, KINDS, Kind};
use crate::adapters::publisher::{Published, publish_until_stored};
use crate::config::Config;
use crate::domain::heartbeat::{self, Heartbeats, Observation};
use crate::domain::{chunk::Chunker, inventory};
use crate::requests::{self, Inbox, Requesters};

/// Heartbeats (and the start event) waiting to be stored while the leaf is unreachable: at the
/// default 10 s interval, a day of leaf outage.
const QUEUE: usize = 10_000;
/// How long the stop may take to store what is queued or in flight.
const DRAIN: Duration = Duration::from_secs(10);
/// Attempts at one page of a list before the snapshot is abandoned.
const PAGE_ATTEMPTS: u32 = 3;
const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
const PRODUCER: &str = "agent";

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

    /// Where `/healthz`, `/readyz` and `/metrics` are served (the real port when 0 was asked).
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// This run's agent instance id (heartbeat sequences count per instance).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Runs until `shutdown`, then stores what is queued or in flight (within [`DRAIN`]) and
    /// stops.
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

        // Cancelled DRAIN after `shutdown`: until then, publishing goes on so that what is
        // queued or in flight gets stored.
        let drain = CancellationToken::new();
        let (tx, rx) = mpsc::channel::<Envelope>(QUEUE);
        let started = envelope::new(
            &self.cfg.cluster_id,
            PRODUCER,
            Body::AgentStarted(AgentStarted {
                agent_instance_id: self.instance.clone(),
                agent_version: AGENT_VERSION.to_owned(),
                kubernetes_version: k8s_version.clone(),
                heartbeat_interval_seconds: heartbeat::interval_seconds(
                    self.cfg.heartbeat_interval,
                ),
                labels: self.cfg.labels.iter().cloned().collect(),
            }),
        );
        // The queue is empty: the start event always fits, and goes out before any heartbeat.
        let _ = tx.try_send(started);
        let beats = Heartbeats::new(
            self.instance.clone(),
            AGENT_VERSION.to_owned(),
            self.cfg.heartbeat_interval,
            k8s_version,
        );
        let publisher = tokio::spawn(publish_queue(self.js.clone(), rx, drain.clone()));
        let reports = tokio::spawn(crate::health::health_loop(
            self.cfg.clone(),
            self.kube.clone(),
            tx.clone(),
            shutdown.clone(),
        ));
        let heartbeats = tokio::spawn(heartbeat_loop(
            self.cfg.clone(),
            self.kube.clone(),
            beats,
            tx,
            shutdown.clone(),
        ));
        let (inventory_requests, inventory_inbox) = requests::channel();
        let (audit_requests, audit_inbox) = requests::channel();
        let audits = crate::audit::start(
            &self.cfg,
            &self.kube,
            &self.js,
            audit_inbox,
            &shutdown,
            &drain,
        );
        let runner = tokio::spawn(crate::commands::run(crate::commands::Context {
            cluster: self.cfg.cluster_id.clone(),
            js: self.js.clone(),
            kube: self.kube.clone(),
            requesters: Requesters {
                audit: audit_requests,
                inventory: inventory_requests,
            },
            shutdown: shutdown.clone(),
            drain: drain.clone(),
        }));
        let inventory = tokio::spawn(inventory_loop(
            self.cfg.clone(),
            self.kube.clone(),
            self.js.clone(),
            inventory_inbox,
            shutdown.clone(),
            drain.clone(),
        ));

        shutdown.cancelled().await;
        info!("stopping: storing what is in flight");
        readiness.set_ready(false);
        let deadline = tokio::spawn({
            let drain = drain.clone();
            async move {
                tokio::time::sleep(DRAIN).await;
                drain.cancel();
            }
        });
        // The heartbeat loop drops its sender when it returns: the publisher then ends once the
        // queue is empty, or at the deadline.
        let commands = runner.await;
        let joined = (
            async { (heartbeats.await, reports.await) }.await,
            inventory.await,
            publisher.await,
            audits.await,
        );
        if drain.is_cancelled() {
            warn!("events were still unstored after {DRAIN:?}; stopped without them");
        }
        deadline.abort();
        if tokio::time::timeout(DRAIN, self.client.drain())
            .await
            .is_err()
        {
            warn!("the NATS connection did not drain within {DRAIN:?}");
        }
        health_stop.cancel();
        let _ = health.await;
        joined.0.0.context("the heartbeat task failed")?;
        joined.0.1.context("the health task failed")?;
        joined.1.context("the inventory task failed")?;
        joined.2.context("the publishing task failed")?;
        joined.3.context("the audit task failed")?;
        commands.context("the command runner failed")?;
        info!("stopped");
        Ok(())
    }
}

/// Builds and runs an agent until `shutdown`.
///
/// # Errors
/// As [`App::build`] and [`App::run`].
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
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
    // A drifted stream is reported by `ensure` and used as it is.
    retry(shutdown, "ensure the EVENTS stream", || async {
        streams::ensure(js, &wanted)
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    Some(version)
}

async fn retry<T, F, Fut>(shutdown: &CancellationToken, what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = f() => match outcome {
                Ok(v) => return Some(v),
                Err(e) => warn!(error = format!("{e:#}"), retry_in = ?backoff, "failed to {what}"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

// === heartbeats ===

/// Stores queued events one by one, in order, each until it is acknowledged.
async fn publish_queue(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Envelope>,
    stop: CancellationToken,
) {
    while let Some(env) = rx.recv().await {
        match publish_until_stored(&js, &env, &stop).await {
            Published::Stored => {
                if matches!(env.body, Some(Body::Heartbeat(_))) {
                    metrics::counter!("canopy_agent_heartbeats_published_total").increment(1);
                }
            }
            Published::Invalid => {}
            Published::Stopped => {
                warn!(events = rx.len() + 1, "stopped with events not stored");
                return;
            }
        }
    }
}

/// Produces a heartbeat every interval, whether or not Kubernetes or NATS answer: NATS outages
/// are absorbed by the queue, Kubernetes outages by reporting the last known figures.
async fn heartbeat_loop(
    cfg: Config,
    kube: kube::Client,
    mut beats: Heartbeats,
    tx: mpsc::Sender<Envelope>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A hung API server must not hold heartbeats back for the client's own 295 s read timeout.
    let budget = cfg
        .heartbeat_interval
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = tokio::select! {
            () = shutdown.cancelled() => return,
            seen = observe(&kube, budget) => seen,
        };
        let hb = beats.next(seen);
        let sequence = hb.sequence;
        let env = envelope::new(&cfg.cluster_id, PRODUCER, Body::Heartbeat(hb));
        if tx.try_send(env).is_err() {
            // The queue holds QUEUE events: an outage longer than that loses the newest, which
            // the sequence numbers make visible downstream.
            metrics::counter!("canopy_agent_heartbeats_dropped_total").increment(1);
            warn!(sequence, "heartbeat queue full; heartbeat dropped");
        }
    }
}

/// Kubernetes version, node and pod counts; `None` (logged, counted) when the API does not
/// answer within `budget`.
async fn observe(kube: &kube::Client, budget: Duration) -> Option<Observation> {
    let (Some(nodes), Some(pods)) = (k8s::kind_named("Node"), k8s::kind_named("Pod")) else {
        return None;
    };
    let calls = async {
        tokio::try_join!(
            k8s::version(kube),
            k8s::count(kube, nodes),
            k8s::count(kube, pods)
        )
    };
    let failure = match tokio::time::timeout(budget, calls).await {
        Ok(Ok((kubernetes_version, nodes, pods))) => {
            return Some(Observation {
                kubernetes_version,
                nodes,
                pods,
            });
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => format!("no answer within {budget:?}"),
    };
    metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => "heartbeat").increment(1);
    warn!(
        error = failure,
        "failed to count nodes and pods; reporting the last counts"
    );
    None
}

// === inventory ===

/// A snapshot every `--inventory-interval`, and one on each request (a RefreshInventory
/// command); a request restarts the interval.
async fn inventory_loop(
    cfg: Config,
    kube: kube::Client,
    js: jetstream::Context,
    mut requests: Inbox<InventoryResult>,
    shutdown: CancellationToken,
    drain: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.inventory_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let request = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => None,
            Some(request) = requests.recv() => {
                tick.reset();
                Some(request)
            }
        };
        let outcome = snapshot(&cfg, &kube, &js, &shutdown, &drain).await;
        let answer = match &outcome {
            Ok(Some(done)) => {
                info!(objects = done.objects, "inventory snapshot published");
                Ok(done.clone())
            }
            Ok(None) => Err("the agent stopped before the snapshot was complete".to_owned()),
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "inventory snapshot abandoned; the previous one stays current until the next one"
                );
                Err(format!("{e:#}"))
            }
        };
        if let Some(request) = request {
            let _ = request.reply.send(answer);
        }
        if matches!(outcome, Ok(None)) {
            info!("inventory snapshot interrupted by the stop");
            return;
        }
    }
}

/// Lists every kind page by page and publishes the chunks; `Ok(None)` when stopped midway.
///
/// A kind the API refuses for good (403, 404) is left out. A page that keeps failing otherwise
/// abandons the snapshot (no final chunk): the read model deletes what a complete snapshot does
/// not list, so a listing with holes must never be marked complete.
async fn snapshot(
    cfg: &Config,
    kube: &kube::Client,
    js: &jetstream::Context,
    shutdown: &CancellationToken,
    drain: &CancellationToken,
) -> anyhow::Result<Option<InventoryResult>> {
    let snapshot_id = Uuid::now_v7().to_string();
    let mut chunker = Chunker::new(
        cfg.cluster_id.clone(),
        snapshot_id.clone(),
        cfg.max_chunk_bytes as usize,
    );
    for kind in KINDS {
        let api_version = kind.api_version();
        let mut pager = k8s::Pager::new(kube, kind, cfg.page_size);
        loop {
            let page = tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                page = next_page(&mut pager, kind) => page,
            };
            let page = match page {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
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
                if object.name.is_empty() {
                    metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => kind.kind)
                        .increment(1);
                    warn!(kind = kind.kind, "listed object without a name; left out");
                    continue;
                }
                if let Some(chunk) = chunker.push(object)
                    && (!publish_chunk(js, &chunk, drain).await? || shutdown.is_cancelled())
                {
                    return Ok(None);
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
    if !publish_chunk(js, &chunker.finish(), drain).await? {
        return Ok(None);
    }
    metrics::counter!("canopy_agent_inventory_objects_total").increment(total);
    metrics::counter!("canopy_agent_inventory_snapshots_total").increment(1);
    Ok(Some(InventoryResult {
        snapshot_id,
        objects: total,
    }))
}

/// The next page of `kind`, trying a failing page again (same continue token) a few times
/// before giving up on it.
async fn next_page(
    pager: &mut k8s::Pager,
    kind: &Kind,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match pager.next_page().await {
            Ok(page) => return Ok(page),
            Err(e) => {
                metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => kind.kind)
                    .increment(1);
                if attempt >= PAGE_ATTEMPTS || !k8s::retryable(&e) {
                    return Err(e);
                }
                warn!(kind = kind.kind, attempt, error = format!("{e:#}"), retry_in = ?backoff, "failed to list a page; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// `Ok(false)` when stopped before the chunk was stored.
async fn publish_chunk(
    js: &jetstream::Context,
    chunk: &Envelope,
    drain: &CancellationToken,
) -> anyhow::Result<bool> {
    match publish_until_stored(js, chunk, drain).await {
        Published::Stored => {
            metrics::counter!("canopy_agent_inventory_chunks_total").increment(1);
            Ok(true)
        }
        Published::Stopped => Ok(false),
        Published::Invalid => anyhow::bail!("an inventory chunk does not validate"),
    }
}
