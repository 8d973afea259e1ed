//! Wiring of both roles: stream setup, source reconciliation, link monitoring, CONTROL consumer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, Message};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use canopy_kit::consumer::{self, BatchHandler, ConsumerSpec};
use canopy_kit::health::HealthServer;
use canopy_kit::streams;

use crate::config::{Config, Role};
use crate::domain::{self, LinkState};

/// A connected, bound, not yet running gateway.
pub struct App {
    cfg: Config,
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl App {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        if cfg.role == Role::Leaf && cfg.cluster_id.is_none() {
            anyhow::bail!("--cluster-id (CANOPY_GATEWAY_CLUSTER_ID) is required with --role leaf");
        }
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-gateway-leafnode").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), None);
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            client,
            js,
            health,
        })
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.health.readiness();
        let health = tokio::spawn(self.health.serve(shutdown.clone()));
        let result = match self.cfg.role {
            Role::Seed => run_seed(&self.cfg, &self.client, &self.js, &readiness, &shutdown).await,
            Role::Leaf => run_leaf(&self.cfg, &self.js, &readiness, &shutdown).await,
        };
        readiness.set_ready(false);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.drain()).await;
        let _ = health.await;
        result
    }
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

// === seed role ===

async fn run_seed(
    cfg: &Config,
    client: &async_nats::Client,
    js: &jetstream::Context,
    readiness: &canopy_kit::health::Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    for stream in streams::seed_streams() {
        streams::ensure(js, &stream).await?;
    }
    reconcile_sources(js, &cfg.leaves).await?;
    readiness.set_ready(true);
    let leafz = cfg
        .monitor_url
        .as_deref()
        .map(crate::links::monitor_addr)
        .transpose()?;
    let monitor = tokio::spawn(monitor_links(
        client.clone(),
        js.clone(),
        LinkWatch {
            every: cfg.link_check_interval,
            leafz,
            leaves: cfg.leaves.iter().map(ToString::to_string).collect(),
            debounce: crate::links::Debounce::new(cfg.link_up_after, cfg.link_down_after),
        },
        shutdown.clone(),
    ));
    let spec = ConsumerSpec {
        filter_subjects: vec!["canopy.ctl.interconnect.>".to_owned()],
        ..ConsumerSpec::new(streams::CONTROL, "gateway-leafnode")
    };
    let result = consumer::run(js, &spec, &mut ControlHandler, shutdown).await;
    monitor.abort();
    result
}

/// Adds a FLEET_EVENTS source for every approved leaf that has none.
pub async fn reconcile_sources(
    js: &jetstream::Context,
    approved: &[canopy_kit::subject::ClusterId],
) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(streams::FLEET_EVENTS)
        .await
        .context("failed to open FLEET_EVENTS")?;
    let mut config = stream
        .info()
        .await
        .context("failed to read FLEET_EVENTS")?
        .config
        .clone();
    let existing = config.sources.clone().unwrap_or_default();
    if let Some((all, added)) = domain::missing_sources(&existing, approved) {
        config.sources = Some(all);
        js.update_stream(config)
            .await
            .context("failed to add sources to FLEET_EVENTS")?;
        for c in added {
            info!(cluster = %c, "FLEET_EVENTS now sources the cluster's EVENTS");
        }
    }
    Ok(())
}

/// Interconnect events arrive here; approvals are handled by the interconnect flow.
struct ControlHandler;

impl BatchHandler for ControlHandler {
    async fn handle(&mut self, batch: &[Message]) -> anyhow::Result<()> {
        for m in batch {
            info!(subject = %m.subject, "control event");
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct StreamInfoReply {
    #[serde(default)]
    sources: Vec<SourceInfoRaw>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct SourceInfoRaw {
    name: String,
    #[serde(default)]
    external: Option<ExternalRaw>,
    #[serde(default)]
    lag: u64,
    #[serde(default)]
    active: i64,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ExternalRaw {
    api: String,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    description: String,
}

/// How the links are watched.
struct LinkWatch {
    every: Duration,
    /// The seed nats-server's monitoring address, for `/leafz`.
    leafz: Option<SocketAddr>,
    leaves: Vec<String>,
    debounce: crate::links::Debounce,
}

/// Reads the sources' state from the raw STREAM.INFO reply (the typed client has no `error`
/// field) and exports lag and link state per cluster; logs every transition; publishes link
/// events (see [`crate::links`]).
async fn monitor_links(
    client: async_nats::Client,
    js: jetstream::Context,
    mut watch: LinkWatch,
    shutdown: CancellationToken,
) {
    let every = watch.every;
    let mut observed: HashMap<String, bool> = HashMap::new();
    let max_silence =
        i64::try_from((every * 3).max(Duration::from_secs(15)).as_nanos()).unwrap_or(i64::MAX);
    let mut last: HashMap<String, LinkState> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        observed.clear();
        sources(&client, max_silence, &mut last, &mut observed).await;
        if let Some(addr) = watch.leafz {
            match crate::links::connected_leaves(addr).await {
                Ok(connected) => {
                    for cluster in &watch.leaves {
                        observed.insert(cluster.clone(), connected.contains(cluster));
                    }
                }
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "failed to read /leafz; link state not observed"
                    );
                    continue;
                }
            }
        }
        let now_ms = chrono_now_ms();
        for (cluster, up) in &observed {
            if let Some(change) = watch.debounce.observe(cluster, *up, now_ms)
                && let Err(e) = crate::links::publish(&js, &change).await
            {
                warn!(error = format!("{e:#}"), %cluster, "link event not published");
            }
        }
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One look at the FLEET_EVENTS sources: metrics, transition logs, and the observed link state
/// of each sourced cluster into `observed`.
async fn sources(
    client: &async_nats::Client,
    max_silence: i64,
    last: &mut HashMap<String, LinkState>,
    observed: &mut HashMap<String, bool>,
) {
    {
        let reply = match client
            .request(
                format!("$JS.API.STREAM.INFO.{}", streams::FLEET_EVENTS),
                "".into(),
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "failed to read FLEET_EVENTS sources");
                return;
            }
        };
        let info: StreamInfoReply = match serde_json::from_slice(&reply.payload) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "unreadable STREAM.INFO reply");
                return;
            }
        };
        if let Some(e) = info.error {
            warn!(error = %e.description, "STREAM.INFO failed");
            return;
        }
        for s in info.sources {
            let Some(cluster) = s
                .external
                .as_ref()
                .and_then(|e| e.api.strip_prefix("$JS.")?.strip_suffix(".API"))
                .filter(|_| s.name == streams::EVENTS)
                .map(str::to_owned)
            else {
                continue;
            };
            let state = domain::link_state(s.active, s.lag, s.error.is_some(), max_silence);
            let up = matches!(state, LinkState::Up { .. });
            metrics::gauge!("canopy_gateway_link_up", "cluster" => cluster.clone()).set(if up {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("canopy_gateway_source_lag", "cluster" => cluster.clone())
                .set(s.lag as f64);
            let was_up = last
                .get(&cluster)
                .map(|l| matches!(l, LinkState::Up { .. }));
            if was_up != Some(up) {
                match (&s.error, up) {
                    (Some(e), _) => warn!(%cluster, error = %e.description, "link down"),
                    (None, false) => warn!(%cluster, "link down: no contact from the leaf"),
                    (None, true) => info!(%cluster, lag = s.lag, "link up"),
                }
            }
            observed.insert(cluster.clone(), up);
            last.insert(cluster, state);
        }
    }
}

// === leaf role ===

async fn run_leaf(
    cfg: &Config,
    js: &jetstream::Context,
    readiness: &canopy_kit::health::Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let cluster = cfg
        .cluster_id
        .as_ref()
        .context("--cluster-id is required with --role leaf")?;
    streams::ensure(js, &streams::leaf_commands(cluster, &cfg.seed_domain)).await?;
    streams::ensure(js, &streams::leaf_policies(cluster, &cfg.seed_domain)).await?;
    readiness.set_ready(true);
    shutdown.cancelled().await;
    Ok(())
}
