//! Wiring of both roles: stream setup, source reconciliation, link monitoring, CONTROL consumer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use canopy_kit::health::HealthServer;
use canopy_kit::streams;

use crate::config::{Config, Direction, Role};
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
        if cfg.role == Role::Leaf
            && let Some(dir) = &cfg.link_dir
        {
            // The leaf's nats-server includes link/remotes.conf: it must exist before that
            // server can start, unlinked until the interconnect is approved (with the listener
            // for the seed's dialer when the seed dials).
            let listen =
                (cfg.direction == Direction::SeedDials).then_some(cfg.leafnode_listen.as_str());
            crate::leaf_link::init_link_dir(dir, listen)?;
        }
        if cfg.role == Role::Seed
            && let Some(dir) = &cfg.dial_dir
        {
            // Likewise the dialer includes dial/remotes.conf.
            crate::dialer::init_dial_dir(dir)?;
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
    reconcile_sources(js, &cfg.leaves, &[]).await?;
    let watched: Arc<Mutex<BTreeMap<String, crate::links::Route>>> = Arc::new(Mutex::new(
        cfg.leaves
            .iter()
            .map(|c| (c.to_string(), crate::links::Route::leaf_dials()))
            .collect(),
    ));
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let interconnects = match &cfg.signing_keys {
        Some(dir) => {
            let signer = canopy_auth::nats::LinkSigner::load(dir)?;
            let mut resolvers = Vec::new();
            match &cfg.system_creds {
                Some(creds) => {
                    resolvers.push((
                        "seed".to_owned(),
                        crate::interconnect::system_client(&cfg.nats.url, creds).await?,
                    ));
                    for t in &cfg.trunk_urls {
                        let (name, url) = t.split_once('=').with_context(|| {
                            format!("--trunk-url {t:?}: expected name=nats://host:port")
                        })?;
                        resolvers.push((
                            format!("trunk {name}"),
                            crate::interconnect::system_client(url, creds).await?,
                        ));
                    }
                }
                None => warn!(
                    "no --system-creds: revoked link users are not pushed to the resolvers \
                     (their sources are still removed)"
                ),
            }
            let dialer = match &cfg.dial_dir {
                Some(dir) => {
                    let (Some(url), Some(seed_leaf_url), Some(creds)) =
                        (&cfg.dialer_url, &cfg.seed_leaf_url, &cfg.system_creds)
                    else {
                        anyhow::bail!(
                            "--dial-dir needs --dialer-url, --seed-leaf-url and --system-creds too"
                        );
                    };
                    Some(crate::dialer::Dialer {
                        dir: dir.clone(),
                        seed_leaf_url: seed_leaf_url.clone(),
                        client: crate::interconnect::system_client(url, creds)
                            .await
                            .context("failed to connect to the dialer as its system user")?,
                    })
                }
                None => None,
            };
            let seed = crate::interconnect::Seed {
                signer,
                link_validity: cfg.link_validity,
                resolvers,
                static_leaves: cfg.leaves.clone(),
                watched: watched.clone(),
                dialer,
            };
            Some(tokio::spawn(crate::interconnect::run(
                seed,
                client.clone(),
                js.clone(),
                ready_tx,
                shutdown.clone(),
            )))
        }
        None => {
            warn!("no --signing-keys: interconnect requests are not answered");
            ready_tx.send_replace(true);
            None
        }
    };
    // Ready once the interconnects are rebuilt from CONTROL (sources of approved leaves added).
    while !*ready_rx.borrow_and_update() {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = ready_rx.changed() => if changed.is_err() { break; },
        }
    }
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
            leaves: watched,
            debounce: crate::links::Debounce::new(cfg.link_up_after, cfg.link_down_after),
        },
        shutdown.clone(),
    ));
    let result = match interconnects {
        Some(task) => match task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the interconnect task failed: {e}")),
        },
        None => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    monitor.abort();
    result
}

/// Adds a FLEET_EVENTS source for every approved leaf that has none, and removes the sources of
/// revoked clusters.
pub async fn reconcile_sources(
    js: &jetstream::Context,
    approved: &[canopy_kit::subject::ClusterId],
    revoked: &[canopy_kit::subject::ClusterId],
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
    if let Some((all, added, removed)) = domain::wanted_sources(&existing, approved, revoked) {
        config.sources = Some(all);
        js.update_stream(config)
            .await
            .context("failed to update the sources of FLEET_EVENTS")?;
        for c in added {
            info!(cluster = %c, "FLEET_EVENTS now sources the cluster's EVENTS");
        }
        for c in removed {
            info!(cluster = %c, "FLEET_EVENTS no longer sources the cluster's EVENTS");
        }
    }
    Ok(())
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
    /// Clusters to watch → how each link is made.
    leaves: Arc<Mutex<BTreeMap<String, crate::links::Route>>>,
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
        let leaves = watch
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(addr) = watch.leafz {
            match crate::links::connected_leaves(addr).await {
                Ok(connected) => {
                    for (cluster, route) in &leaves {
                        if !route.relayed() {
                            let up = connected.contains(cluster);
                            observed.insert(cluster.clone(), up);
                        }
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
                && let Err(e) = crate::links::publish(&js, &change, leaves.get(cluster)).await
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
    match leaf_link(cfg, cluster)? {
        Some(link) => crate::leaf_link::run(link, shutdown.clone()).await,
        None => {
            info!(
                "no --link-dir: this leaf does not ask to be linked (its remote is configured by hand)"
            );
            shutdown.cancelled().await;
            Ok(())
        }
    }
}

/// The leaf's interconnect settings, when `--link-dir` is given.
fn leaf_link(
    cfg: &Config,
    cluster: &canopy_kit::subject::ClusterId,
) -> anyhow::Result<Option<crate::leaf_link::LeafLink>> {
    let Some(link_dir) = cfg.link_dir.clone() else {
        return Ok(None);
    };
    let seed_dials = cfg.direction == Direction::SeedDials;
    for (missing, flag) in [
        (cfg.bootstrap_url.is_none(), "--bootstrap-url"),
        (cfg.bootstrap_creds.is_none(), "--bootstrap-creds"),
        (!seed_dials && cfg.uplink_url.is_none(), "--uplink-url"),
        (cfg.system_creds.is_none(), "--system-creds"),
        (
            seed_dials && cfg.leaf_url.is_none(),
            "--leaf-url (seed-dials)",
        ),
        (
            seed_dials && cfg.account_signing_key.is_none(),
            "--account-signing-key (seed-dials)",
        ),
    ] {
        if missing {
            anyhow::bail!("--link-dir needs {flag} too");
        }
    }
    if seed_dials && cfg.trunk.is_some() {
        anyhow::bail!(
            "--trunk: the seed dials a leaf directly (use leaf-dials to go through a trunk)"
        );
    }
    let own_creds = cfg
        .nats
        .creds
        .as_ref()
        .context("--link-dir needs --nats-creds (the remote binds the account of this user)")?;
    let account = own_account(own_creds)?;
    let signer = match (&cfg.account_signing_key, seed_dials) {
        (Some(path), true) => Some(std::sync::Arc::new(
            canopy_auth::nats::LeafSigner::load(path, &account)
                .with_context(|| format!("--account-signing-key {}", path.display()))?,
        )),
        _ => None,
    };
    let mut labels = HashMap::new();
    for l in &cfg.labels {
        let (k, v) =
            canopy_kit::labels::parse(l).map_err(|e| anyhow::anyhow!("--label {l:?}: {e}"))?;
        labels.insert(k, v);
    }
    Ok(Some(crate::leaf_link::LeafLink {
        cluster: cluster.clone(),
        link_dir,
        bootstrap_url: cfg.bootstrap_url.clone().unwrap_or_default(),
        bootstrap_creds: cfg.bootstrap_creds.clone().unwrap_or_default(),
        uplink_url: cfg.uplink_url.clone().unwrap_or_default(),
        nats_url: cfg.nats.url.clone(),
        system_creds: cfg.system_creds.clone().unwrap_or_default(),
        account,
        direction: if seed_dials {
            canopy_kit::proto::event::v1::LinkDirection::SeedDials
        } else {
            canopy_kit::proto::event::v1::LinkDirection::LeafDials
        },
        trunk: cfg.trunk.as_ref().map(ToString::to_string),
        leaf_url: cfg.leaf_url.clone(),
        listen: cfg.leafnode_listen.clone(),
        signer,
        labels,
        request_interval: cfg.request_interval,
        status_interval: cfg.status_interval,
    }))
}

/// The account of the user in `creds` (the leaf's own account).
fn own_account(creds: &std::path::Path) -> anyhow::Result<String> {
    use canopy_auth::nats::jwt;
    let text = std::fs::read_to_string(creds)
        .with_context(|| format!("failed to read {}", creds.display()))?;
    let (token, _) = jwt::parse_creds(&text)?;
    let claims: jwt::Claims<jwt::UserClaims> = jwt::decode(&token)?;
    Ok(claims.nats.issuer_account)
}
