//! The whole mesh on one machine, on the `nats-config/` topology: a seed nats-server (domain
//! `seed`) with Postgres and the seed services, and per simulated cluster a leaf nats-server (its
//! own JetStream domain, dialling the seed's leafnode port), a fake Kubernetes API server with a
//! fixture, the cluster's agent and its gateway-leafnode. Used by the end-to-end tests and by
//! `make demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use canopy_auth::nats::{Authority, Layout};
use canopy_testkit::{FakeKube, Fixture, NatsOpts, NatsProcess, Postgres, TcpProxy};

use crate::service::Service;

/// The database the read models live in.
pub const DATABASE: &str = "canopy";

/// One simulated cluster to run.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub cluster: String,
    pub fixture: Fixture,
    /// The cluster's labels (`--label k=v` of its agent).
    pub labels: Vec<(String, String)>,
    /// With `interconnect`: the seed's dialer dials this leaf's listener (seed-dials) instead of
    /// the leaf dialling the seed.
    pub seed_dials: bool,
}

impl LeafSpec {
    pub fn new(cluster: &str, fixture: Fixture) -> Self {
        Self {
            cluster: cluster.to_owned(),
            fixture,
            labels: Vec::new(),
            seed_dials: false,
        }
    }

    /// The seed dials this leaf.
    pub fn seed_dialed(mut self) -> Self {
        self.seed_dials = true;
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub leaves: Vec<LeafSpec>,
    /// Where servers keep data and logs; a temp dir (removed on drop) when `None`.
    pub state_dir: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub inventory_interval: Duration,
    /// The agents' `--audit-interval` and `--audit-debounce`.
    pub audit_interval: Duration,
    pub audit_debounce: Duration,
    /// The api's gRPC address; a free loopback port when `None`.
    pub api_listen: Option<SocketAddr>,
    /// Mint a new NATS operator and accounts (the demo) instead of signing with the test
    /// operator of `canopy_testkit::nats::test_auth_dir` (tests: its administrator, the
    /// default `CANOPY_NATS_CREDS` of `cargo test`, can then reach the seed).
    pub fresh_operator: bool,
    /// Run the api with token authentication (a fresh HS256 key file; the stack issues an
    /// admin token, [`Stack::admin_token`]). Off by default: the api then runs with
    /// `--insecure-no-auth` (NATS is in operator mode either way).
    pub api_auth: bool,
    /// The agents' `--health-interval`.
    pub health_interval: Duration,
    /// Extra arguments of the doctor (e.g. `--playbook rollout-restart=auto`).
    pub doctor_args: Vec<String>,
    /// Link each leaf through the interconnect flow (its gateway asks with its bootstrap
    /// credential, the seed's gateway signs its link user once approved). Off: the leaves start
    /// with pre-minted link credentials (`canopyctl nats init`) and the seed sources them by
    /// `--leaf`.
    pub interconnect: bool,
    /// With `interconnect`: approve every leaf's request at start-up and wait for its link.
    pub approve_interconnects: bool,
    /// With `api_auth`: approve through the api as its admin (recorded on the audit trail)
    /// instead of recording the approval on CONTROL directly.
    pub approve_through_api: bool,
    /// Put the leaves behind a trunk with this id: they send their requests to the trunk and
    /// dial its leafnode port; the trunk dials the seed.
    pub trunk: Option<String>,
}

impl StackOptions {
    pub fn new(leaves: Vec<LeafSpec>) -> Self {
        Self {
            leaves,
            state_dir: None,
            heartbeat_interval: Duration::from_millis(500),
            inventory_interval: Duration::from_secs(300),
            audit_interval: Duration::from_secs(600),
            audit_debounce: Duration::from_millis(500),
            api_listen: None,
            fresh_operator: false,
            api_auth: false,
            health_interval: Duration::from_secs(2),
            doctor_args: vec!["--recovery-hold".to_owned(), "2s".to_owned()],
            interconnect: true,
            approve_interconnects: true,
            approve_through_api: false,
            trunk: None,
        }
    }
}

/// A simulated cluster: its nats-server, fake Kubernetes API, agent and gateway.
#[derive(Debug)]
pub struct Leaf {
    pub cluster: String,
    pub nats: NatsProcess,
    /// The leafnode link to the seed goes through this proxy (from the dialer to the leaf's
    /// listener when the seed dials): `cut()` takes the link down with both servers still
    /// running, `restore()` lets them reconnect.
    pub link: TcpProxy,
    /// The seed's dialer dials this leaf.
    pub seed_dialed: bool,
    pub kube: FakeKube,
    pub agent: Service,
    pub gateway: Service,
    pub fixture: Fixture,
    /// The gateway's `--link-dir` (keys, request id, link credentials, `remotes.conf`) when
    /// the leaf links through an interconnect.
    pub link_dir: Option<PathBuf>,
}

/// The running mesh.
#[derive(Debug)]
pub struct Stack {
    pub dir: PathBuf,
    pub postgres: Postgres,
    pub database_url: String,
    pub seed: NatsProcess,
    /// The trunk's nats-server, when the leaves are behind one.
    pub trunk: Option<NatsProcess>,
    /// The seed's dialer, when a leaf is seed-dialed.
    pub dialer: Option<NatsProcess>,
    pub leaves: Vec<Leaf>,
    pub gateway: Service,
    pub ingestion: Service,
    pub api: Service,
    pub cnc: Service,
    pub doctor: Service,
    pub api_addr: SocketAddr,
    /// The NATS operator, accounts and every service's credentials (`canopyctl nats init`).
    pub nats_auth: Layout,
    /// The api's token key file and an admin token for it, when `api_auth` is on.
    pub api_token_keys: Option<PathBuf>,
    pub admin_token: Option<String>,
    approve_through_api: bool,
    seed_leaf_port: u16,
    _tmp: Option<tempfile::TempDir>,
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn nats_config(name: &str) -> PathBuf {
    canopy_testkit::workspace_root()
        .join("nats-config")
        .join(format!("{name}.conf"))
}

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Stack {
    /// Starts everything and waits until every service is ready.
    ///
    /// # Errors
    /// When a binary is missing (build first), a server does not start, or a service is not
    /// ready in time; the error names it and carries its log's tail.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Self> {
        if opts.leaves.is_empty() {
            bail!("a stack needs at least one leaf cluster");
        }
        let (dir, tmp) = match &opts.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new().prefix("canopy-stack-").tempdir()?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;

        let postgres = match &opts.state_dir {
            Some(_) => Postgres::start_in(&dir.join("postgres")).await?,
            None => Postgres::start().await?,
        };
        let database_url = match postgres.create_database(DATABASE).await {
            Ok(url) => url,
            Err(e) if format!("{e:#}").contains("already exists") => postgres.url_for(DATABASE),
            Err(e) => return Err(e),
        };

        let clusters: Vec<String> = opts.leaves.iter().map(|l| l.cluster.clone()).collect();
        let authority = if opts.fresh_operator {
            Authority::generate()
        } else {
            test_authority()?
        };
        let layout = canopy_auth::nats::init(&dir.join("nats-auth"), &authority, &clusters)?;
        let seed_leaf_port = canopy_testkit::try_free_port()?;
        let seed = start_seed_nats_with(&dir, seed_leaf_port, &layout).await?;
        let seed_url = seed.client_url();
        let trunk = match &opts.trunk {
            Some(id) => Some(start_trunk_nats(&dir, id, seed_leaf_port, &layout).await?),
            None => None,
        };
        let dialer = if opts.interconnect && opts.leaves.iter().any(|l| l.seed_dials) {
            Some(start_dialer_nats(&dir, &layout).await?)
        } else {
            None
        };
        // Where leaves ask and what they dial: the trunk when there is one, else the seed.
        let (uplink_client_url, uplink_leaf_port) = match &trunk {
            Some((t, port)) => (t.client_url(), *port),
            None => (seed_url.clone(), seed_leaf_port),
        };

        let mut leaves = Vec::new();
        for spec in &opts.leaves {
            leaves.push(
                start_leaf(
                    spec,
                    &dir,
                    uplink_leaf_port,
                    &uplink_client_url,
                    &opts,
                    &layout,
                )
                .await?,
            );
        }
        let cluster_list = opts
            .leaves
            .iter()
            .map(|l| l.cluster.as_str())
            .collect::<Vec<_>>()
            .join(",");

        let nats_env = |user: &str, extra: &[(&str, &str)]| {
            let creds = layout.seed_creds(user).display().to_string();
            let mut e = env(&[
                ("CANOPY_NATS_URL", &seed_url),
                ("CANOPY_NATS_CREDS", &creds),
            ]);
            e.extend(env(extra));
            e
        };
        let monitor_url = seed.monitor_url();
        let signing_keys = layout.gateway_keys().display().to_string();
        let gateway_sys = layout.seed_creds("gateway-sys").display().to_string();
        let trunk_urls = match (&opts.trunk, &trunk) {
            (Some(id), Some((t, _))) => format!("{id}={}", t.client_url()),
            _ => String::new(),
        };
        let mut gateway_vars = vec![
            ("CANOPY_GATEWAY_SIGNING_KEYS", signing_keys.as_str()),
            ("CANOPY_GATEWAY_SYSTEM_CREDS", gateway_sys.as_str()),
        ];
        if !trunk_urls.is_empty() {
            gateway_vars.push(("CANOPY_GATEWAY_TRUNK_URLS", trunk_urls.as_str()));
        }
        if !opts.interconnect {
            gateway_vars.push(("CANOPY_GATEWAY_LEAVES", cluster_list.as_str()));
        }
        let dial_dir = dir
            .join("nats-conf")
            .join("dialer")
            .join("dial")
            .display()
            .to_string();
        let dialer_url = dialer.as_ref().map(NatsProcess::client_url);
        let seed_leaf_url = format!("nats-leaf://127.0.0.1:{seed_leaf_port}");
        if let Some(url) = &dialer_url {
            gateway_vars.extend([
                ("CANOPY_GATEWAY_DIAL_DIR", dial_dir.as_str()),
                ("CANOPY_GATEWAY_DIALER_URL", url.as_str()),
                ("CANOPY_GATEWAY_SEED_LEAF_URL", seed_leaf_url.as_str()),
            ]);
        }
        let mut gateway = Service::new(
            "gateway-leafnode-seed",
            "canopy-gateway-leafnode",
            &[
                "--role",
                "seed",
                "--link-check-interval",
                "500ms",
                "--monitor-url",
                &monitor_url,
            ],
            nats_env("gateway", &gateway_vars),
            &logs,
        )?;
        let mut ingestion = Service::new(
            "ingestion",
            "canopy-ingestion",
            &[],
            nats_env(
                "ingestion",
                &[("CANOPY_INGESTION_DATABASE_URL", &database_url)],
            ),
            &logs,
        )?;
        let api_addr = match opts.api_listen {
            Some(addr) => addr,
            None => SocketAddr::from(([127, 0, 0, 1], canopy_testkit::try_free_port()?)),
        };
        let (api_token_keys, admin_token) = if opts.api_auth {
            let keys =
                canopy_auth::token::TokenConfig::generate_hs256("canopy", "canopy-api", "k1");
            let path = dir.join("api-auth").join("keys.json");
            std::fs::create_dir_all(dir.join("api-auth"))?;
            std::fs::write(&path, serde_json::to_string_pretty(&keys)?)?;
            let token = canopy_auth::token::issue(
                &keys,
                None,
                "admin",
                canopy_auth::token::Role::Admin,
                Default::default(),
                Duration::from_secs(7 * 24 * 3600),
            )?;
            (Some(path), Some(token))
        } else {
            (None, None)
        };
        let api_auth_env = match &api_token_keys {
            Some(path) => ("CANOPY_API_AUTH_KEYS", path.display().to_string()),
            None => ("CANOPY_API_INSECURE_NO_AUTH", "true".to_owned()),
        };
        let mut api = Service::new(
            "api",
            "canopy-api",
            &[],
            nats_env(
                "api",
                &[
                    ("CANOPY_API_DATABASE_URL", &database_url),
                    ("CANOPY_API_LISTEN", &api_addr.to_string()),
                    (api_auth_env.0, &api_auth_env.1),
                ],
            ),
            &logs,
        )?;
        let mut cnc = Service::new("cnc", "canopy-cnc", &[], nats_env("cnc", &[]), &logs)?;
        let doctor_args: Vec<&str> = opts.doctor_args.iter().map(String::as_str).collect();
        let mut doctor = Service::new(
            "doctor",
            "canopy-doctor",
            &doctor_args,
            nats_env("doctor", &[]),
            &logs,
        )?;
        // The gateway creates the seed streams and the leaf sources; the others wait for them.
        gateway.start().await?;
        for service in [&mut ingestion, &mut api, &mut cnc, &mut doctor] {
            service.spawn()?;
        }
        for service in [&mut ingestion, &mut api, &mut cnc, &mut doctor] {
            service.wait_ready().await?;
        }
        let stack = Self {
            dir,
            postgres,
            database_url,
            seed,
            trunk: trunk.map(|(t, _)| t),
            dialer,
            leaves,
            gateway,
            ingestion,
            api,
            cnc,
            doctor,
            api_addr,
            nats_auth: layout,
            api_token_keys,
            admin_token,
            approve_through_api: opts.approve_through_api,
            seed_leaf_port,
            _tmp: tmp,
        };
        if opts.interconnect && opts.approve_interconnects {
            for leaf in &stack.leaves {
                stack
                    .approve_interconnect(&leaf.cluster, "canopy-stack")
                    .await?;
            }
            for leaf in &stack.leaves {
                stack
                    .wait_linked(&leaf.cluster, Duration::from_secs(60))
                    .await?;
            }
        }
        Ok(stack)
    }

    /// The request id the gateway of `cluster` asks with (from its link dir).
    ///
    /// # Errors
    /// When the leaf does not link through an interconnect or has not asked in 30 s.
    pub async fn request_id(&self, cluster: &str) -> anyhow::Result<String> {
        let leaf = self
            .leaves
            .iter()
            .find(|l| l.cluster == cluster)
            .with_context(|| format!("no leaf cluster {cluster}"))?;
        let dir = leaf
            .link_dir
            .clone()
            .with_context(|| format!("{cluster} does not link through an interconnect"))?;
        canopy_testkit::eventually(
            Duration::from_secs(30),
            &format!("the request id of {cluster}"),
            || {
                let path = dir.join("request-id");
                async move {
                    Ok(std::fs::read_to_string(path)
                        .ok()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty()))
                }
            },
        )
        .await
    }

    /// Waits until the seed recorded `cluster`'s interconnect request, then approves it: through
    /// the api's `ApproveInterconnect` with the admin token with `approve_through_api` (the
    /// approval is then on the audit trail), else by recording the approval on CONTROL as `by`
    /// (what that call publishes).
    ///
    /// # Errors
    /// When the request is not recorded in 30 s or the approval is refused or not published.
    pub async fn approve_interconnect(&self, cluster: &str, by: &str) -> anyhow::Result<()> {
        use canopy_kit::proto::event::v1::{InterconnectApproved, envelope::Body};
        let request_id = self.request_id(cluster).await?;
        self.wait_requested(cluster, &request_id).await?;
        if self.approve_through_api && self.admin_token.is_some() {
            use canopy_proto::api::v1::{
                ApproveInterconnectRequest, interconnect_service_client::InterconnectServiceClient,
            };
            let api = InterconnectServiceClient::new(crate::admin_channel(self).await?);
            // The api decides on what ingestion has projected: wait until it lists the request.
            canopy_testkit::eventually(
                Duration::from_secs(30),
                &format!("the api to approve the request of {cluster}"),
                || {
                    let mut api = api.clone();
                    let request_id = request_id.clone();
                    async move {
                        match api
                            .approve_interconnect(ApproveInterconnectRequest { request_id })
                            .await
                        {
                            Ok(_) => Ok(Some(())),
                            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                            Err(s) => Err(anyhow::anyhow!("ApproveInterconnect refused: {s}")),
                        }
                    }
                },
            )
            .await?;
            return Ok(());
        }
        let client = self.seed.connect().await?;
        let js = canopy_kit::nats::jetstream(client, None);
        let id = canopy_kit::subject::ClusterId::parse(cluster)?;
        let env = canopy_kit::envelope::new(
            &id,
            "canopy-stack",
            Body::InterconnectApproved(InterconnectApproved {
                request_id,
                approved_by: by.to_owned(),
                ..Default::default()
            }),
        );
        canopy_kit::publish::publish(&js, &env).await?;
        Ok(())
    }

    /// Waits until CONTROL holds `cluster`'s `InterconnectRequested` with `request_id`.
    ///
    /// # Errors
    /// When it does not within 30 s.
    pub async fn wait_requested(&self, cluster: &str, request_id: &str) -> anyhow::Result<()> {
        let client = self.seed.connect().await?;
        let js = canopy_kit::nats::jetstream(client, None);
        canopy_testkit::wait_until(
            Duration::from_secs(30),
            &format!("the interconnect request of {cluster} on CONTROL"),
            || interconnect_recorded(&js, cluster, request_id),
        )
        .await
    }

    /// The monitoring address of the server `cluster`'s leaf links to: the dialer when the
    /// seed dials it, else the trunk when there is one, else the seed.
    pub fn link_monitor(&self, cluster: &str) -> SocketAddr {
        let dialed = self
            .leaves
            .iter()
            .any(|l| l.cluster == cluster && l.seed_dialed);
        match (&self.dialer, &self.trunk) {
            (Some(d), _) if dialed => d.monitor_addr(),
            (_, Some(t)) => t.monitor_addr(),
            _ => self.seed.monitor_addr(),
        }
    }

    /// Waits until the server `cluster` links to ([`Stack::link_monitor`]) holds a leafnode
    /// connection from it.
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub async fn wait_linked(&self, cluster: &str, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.link_monitor(cluster);
        canopy_testkit::wait_until(timeout, &format!("the link of {cluster}"), || async move {
            Ok(leafz_names(addr).await?.iter().any(|n| n == cluster))
        })
        .await
    }

    /// `http://<api address>` for gRPC clients and `canopyctl --api`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The leafnode port of the seed (what leaves dial).
    pub fn seed_leaf_port(&self) -> u16 {
        self.seed_leaf_port
    }

    /// The simulated cluster named `cluster`.
    ///
    /// # Errors
    /// When there is none.
    pub fn leaf_mut(&mut self, cluster: &str) -> anyhow::Result<&mut Leaf> {
        self.leaves
            .iter_mut()
            .find(|l| l.cluster == cluster)
            .with_context(|| format!("no leaf cluster {cluster}"))
    }

    /// Stops everything in dependency order, each service with a graceful drain.
    ///
    /// # Errors
    /// The first service that did not stop cleanly (all are still stopped).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        };
        for leaf in &mut self.leaves {
            note(leaf.agent.stop().await);
            note(leaf.gateway.stop().await);
        }
        for service in [
            &mut self.api,
            &mut self.cnc,
            &mut self.doctor,
            &mut self.ingestion,
            &mut self.gateway,
        ] {
            note(service.stop().await);
        }
        for leaf in &mut self.leaves {
            note(leaf.nats.stop().await);
        }
        if let Some(trunk) = &mut self.trunk {
            note(trunk.stop().await);
        }
        if let Some(dialer) = &mut self.dialer {
            note(dialer.stop().await);
        }
        note(self.seed.stop().await);
        note(self.postgres.stop());
        first_err.map_or(Ok(()), Err)
    }

    /// Every service, for status printing.
    pub fn services(&self) -> Vec<&Service> {
        let mut all = vec![
            &self.gateway,
            &self.ingestion,
            &self.api,
            &self.cnc,
            &self.doctor,
        ];
        for leaf in &self.leaves {
            all.push(&leaf.gateway);
            all.push(&leaf.agent);
        }
        all
    }
}

/// The test operator (`canopy_testkit::nats::test_auth_dir`), whose administrator is the
/// default `CANOPY_NATS_CREDS` of `cargo test`.
///
/// # Errors
/// When its keys are missing.
pub fn test_authority() -> anyhow::Result<Authority> {
    Authority::load(&canopy_testkit::nats::test_auth_dir())
}

/// Starts the seed nats-server from `nats-config/seed.conf` (data and logs under `dir`), with
/// its leafnode listener on `leaf_port`, in operator mode with the test operator (credentials
/// under `dir/nats-auth`).
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_seed_nats(dir: &Path, leaf_port: u16) -> anyhow::Result<NatsProcess> {
    let layout = canopy_auth::nats::init(&dir.join("nats-auth"), &test_authority()?, &[])?;
    start_seed_nats_with(dir, leaf_port, &layout).await
}

/// [`start_seed_nats`] with the operator and accounts of `layout`; `connect()` uses its admin.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_seed_nats_with(
    dir: &Path,
    leaf_port: u16,
    layout: &Layout,
) -> anyhow::Result<NatsProcess> {
    let mut vars = layout.seed_env();
    vars.extend(env(&[
        ("CANOPY_LEAF_HOST", "127.0.0.1"),
        ("CANOPY_LEAF_PORT", &leaf_port.to_string()),
    ]));
    let mut nats = start_nats("seed", "seed", dir, &vars, None).await?;
    nats.set_connect_creds(layout.seed_creds("admin"));
    Ok(nats)
}

/// Starts the leaf nats-server of `cluster` from `nats-config/leaf.conf` (JetStream domain =
/// the cluster id), dialling the seed's leafnode port.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_leaf_nats(
    dir: &Path,
    cluster: &str,
    seed_leaf_port: u16,
) -> anyhow::Result<NatsProcess> {
    let layout = canopy_auth::nats::init(
        &dir.join("nats-auth"),
        &test_authority()?,
        &[cluster.to_owned()],
    )?;
    start_leaf_nats_with(dir, cluster, seed_leaf_port, &layout).await
}

/// [`start_leaf_nats`] with the leaf account and link user of `layout`; `connect()` uses the
/// leaf's admin.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_leaf_nats_with(
    dir: &Path,
    cluster: &str,
    seed_leaf_port: u16,
    layout: &Layout,
) -> anyhow::Result<NatsProcess> {
    let account = layout
        .leaf_accounts
        .get(cluster)
        .with_context(|| format!("no account for {cluster} in the layout"))?;
    let remotes = canopy_auth::nats::remotes_conf(Some((
        &format!("nats-leaf://127.0.0.1:{seed_leaf_port}"),
        &layout.leaf_creds(cluster, "link"),
        account,
    )));
    start_leaf_nats_inner(dir, cluster, layout, &remotes).await
}

/// Starts a trunk nats-server from `nats-config/trunk.conf` (JetStream domain `id`) dialling
/// the seed's leafnode port; returns it and the leafnode port leaves dial.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_trunk_nats(
    dir: &Path,
    id: &str,
    seed_leaf_port: u16,
    layout: &Layout,
) -> anyhow::Result<(NatsProcess, u16)> {
    let leaf_port = canopy_testkit::try_free_port()?;
    let mut vars = layout.trunk_env();
    vars.extend(env(&[
        ("CANOPY_TRUNK_ID", id),
        ("CANOPY_LEAF_HOST", "127.0.0.1"),
        ("CANOPY_LEAF_PORT", &leaf_port.to_string()),
        (
            "CANOPY_UPLINK_URL",
            &format!("nats-leaf://127.0.0.1:{seed_leaf_port}"),
        ),
    ]));
    let mut nats = start_nats(id, "trunk", dir, &vars, None).await?;
    nats.set_connect_creds(layout.seed_creds("admin"));
    Ok((nats, leaf_port))
}

/// Starts the seed's dialer from `nats-config/dialer.conf`, with no remotes yet (the seed's
/// gateway writes them to `dir/nats-conf/dialer/dial/`); `connect()` uses the seed's system
/// user.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_dialer_nats(dir: &Path, layout: &Layout) -> anyhow::Result<NatsProcess> {
    let empty = canopy_auth::nats::dialer_remotes_conf(&[]);
    let mut nats = start_nats(
        "dialer",
        "dialer",
        dir,
        &layout.dialer_env(),
        Some(("dial", &empty)),
    )
    .await?;
    nats.set_connect_creds(layout.seed_creds("sys"));
    Ok(nats)
}

/// Starts the leaf nats-server of `cluster` without a link: its gateway asks for one
/// (interconnect) and writes it to the returned `link/` folder.
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_leaf_nats_unlinked(
    dir: &Path,
    cluster: &str,
    layout: &Layout,
) -> anyhow::Result<(NatsProcess, PathBuf)> {
    start_leaf_nats_linkable(dir, cluster, layout, &canopy_auth::nats::remotes_conf(None)).await
}

/// [`start_leaf_nats_unlinked`] with `remotes` as its first `link/remotes.conf` (e.g. the
/// listener of a seed-dialed leaf).
///
/// # Errors
/// When nats-server is missing or does not become healthy.
pub async fn start_leaf_nats_linkable(
    dir: &Path,
    cluster: &str,
    layout: &Layout,
    remotes: &str,
) -> anyhow::Result<(NatsProcess, PathBuf)> {
    let nats = start_leaf_nats_inner(dir, cluster, layout, remotes).await?;
    Ok((nats, dir.join("nats-conf").join(cluster).join("link")))
}

async fn start_leaf_nats_inner(
    dir: &Path,
    cluster: &str,
    layout: &Layout,
    remotes: &str,
) -> anyhow::Result<NatsProcess> {
    let mut vars = layout.leaf_env(cluster);
    vars.extend(env(&[("CANOPY_CLUSTER_ID", cluster)]));
    let mut nats = start_nats(cluster, "leaf", dir, &vars, Some(("link", remotes))).await?;
    nats.set_connect_creds(layout.leaf_creds(cluster, "admin"));
    Ok(nats)
}

/// Starts a nats-server of `name` on a copy of `nats-config/<conf>.conf` in
/// `dir/nats-conf/<name>/` (a leaf's configuration includes `link/remotes.conf` beside it, the
/// dialer's `dial/remotes.conf`: `include` = (that folder, its first text)).
async fn start_nats(
    name: &str,
    conf: &str,
    dir: &Path,
    extra: &[(String, String)],
    include: Option<(&str, &str)>,
) -> anyhow::Result<NatsProcess> {
    let conf_dir = dir.join("nats-conf").join(name);
    std::fs::create_dir_all(&conf_dir)?;
    let config_file = conf_dir.join(format!("{conf}.conf"));
    std::fs::copy(nats_config(conf), &config_file)
        .with_context(|| format!("failed to copy nats-config/{conf}.conf"))?;
    if let Some((folder, remotes)) = include {
        std::fs::create_dir_all(conf_dir.join(folder))?;
        let path = conf_dir.join(folder).join("remotes.conf");
        // A restarted server keeps the link its gateway wrote.
        if !path.exists() {
            std::fs::write(&path, remotes)?;
        }
    }
    let client_port = canopy_testkit::try_free_port()?;
    let monitor_port = canopy_testkit::try_free_port()?;
    let store = dir.join("nats").join(name);
    std::fs::create_dir_all(&store)?;
    let mut vars = env(&[
        ("CANOPY_SERVER_NAME", name),
        ("CANOPY_NATS_HOST", "127.0.0.1"),
        ("CANOPY_NATS_PORT", &client_port.to_string()),
        (
            "CANOPY_NATS_MONITOR_ADDR",
            &format!("127.0.0.1:{monitor_port}"),
        ),
        ("CANOPY_NATS_STORE_DIR", &store.display().to_string()),
    ]);
    vars.extend(extra.iter().cloned());
    NatsProcess::spawn(NatsOpts {
        name: name.to_owned(),
        config_file,
        env: vars,
        client_port,
        monitor_port,
        log_file: dir.join("logs").join(format!("nats-{name}.log")),
    })
    .await
}

async fn start_leaf(
    spec: &LeafSpec,
    dir: &Path,
    seed_leaf_port: u16,
    seed_url: &str,
    opts: &StackOptions,
    layout: &Layout,
) -> anyhow::Result<Leaf> {
    let cluster = spec.cluster.as_str();
    let seed_dialed = opts.interconnect && spec.seed_dials;
    // A seed-dialed leaf listens; the dialer reaches it through the proxy.
    let listen_port = canopy_testkit::try_free_port()?;
    let listen = format!("127.0.0.1:{listen_port}");
    let link_target = if seed_dialed {
        listen_port
    } else {
        seed_leaf_port
    };
    let link = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], link_target))).await?;
    let (nats, link_dir) = if seed_dialed {
        let (nats, link_dir) = start_leaf_nats_linkable(
            dir,
            cluster,
            layout,
            &canopy_auth::nats::leaf_listener_conf(&listen),
        )
        .await?;
        (nats, Some(link_dir))
    } else if opts.interconnect {
        let (nats, link_dir) = start_leaf_nats_unlinked(dir, cluster, layout).await?;
        (nats, Some(link_dir))
    } else {
        (
            start_leaf_nats_with(dir, cluster, link.port(), layout).await?,
            None,
        )
    };
    let kube = FakeKube::start(spec.fixture.clone())
        .await
        .with_context(|| format!("failed to start the fake Kubernetes API of {cluster}"))?;
    let logs = dir.join("logs");
    let nats_url = nats.client_url();
    let labels = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut gateway_env = env(&[
        ("CANOPY_NATS_URL", &nats_url),
        (
            "CANOPY_NATS_CREDS",
            &layout.leaf_creds(cluster, "gateway").display().to_string(),
        ),
    ]);
    if let Some(link_dir) = &link_dir {
        gateway_env.extend(env(&[
            ("CANOPY_GATEWAY_LINK_DIR", &link_dir.display().to_string()),
            ("CANOPY_GATEWAY_BOOTSTRAP_URL", seed_url),
            (
                "CANOPY_GATEWAY_BOOTSTRAP_CREDS",
                &layout
                    .leaf_creds(cluster, "bootstrap")
                    .display()
                    .to_string(),
            ),
            (
                "CANOPY_GATEWAY_UPLINK_URL",
                &format!("nats-leaf://127.0.0.1:{}", link.port()),
            ),
            (
                "CANOPY_GATEWAY_SYSTEM_CREDS",
                &layout
                    .leaf_creds(cluster, "gateway-sys")
                    .display()
                    .to_string(),
            ),
            ("CANOPY_GATEWAY_REQUEST_INTERVAL", "200ms"),
            ("CANOPY_GATEWAY_STATUS_INTERVAL", "500ms"),
        ]));
        if !labels.is_empty() {
            gateway_env.extend(env(&[("CANOPY_GATEWAY_LABELS", &labels)]));
        }
        if seed_dialed {
            gateway_env.extend(env(&[
                ("CANOPY_GATEWAY_DIRECTION", "seed-dials"),
                (
                    "CANOPY_GATEWAY_LEAF_URL",
                    &format!("nats-leaf://127.0.0.1:{}", link.port()),
                ),
                ("CANOPY_GATEWAY_LEAFNODE_LISTEN", &listen),
                (
                    "CANOPY_GATEWAY_ACCOUNT_SIGNING_KEY",
                    &layout
                        .leaf_dir(cluster)
                        .join("account-signing.nk")
                        .display()
                        .to_string(),
                ),
            ]));
        } else if let Some(trunk) = &opts.trunk {
            gateway_env.extend(env(&[("CANOPY_GATEWAY_TRUNK", trunk)]));
        }
    }
    let mut gateway = Service::new(
        &format!("gateway-leafnode-{cluster}"),
        "canopy-gateway-leafnode",
        &["--role", "leaf", "--cluster-id", cluster],
        gateway_env,
        &logs,
    )?;
    let mut agent_env = env(&[
        ("CANOPY_NATS_URL", &nats_url),
        (
            "CANOPY_NATS_CREDS",
            &layout.leaf_creds(cluster, "agent").display().to_string(),
        ),
    ]);
    if !labels.is_empty() {
        agent_env.extend(env(&[("CANOPY_AGENT_LABELS", &labels)]));
    }
    let mut agent = Service::new(
        &format!("agent-{cluster}"),
        "canopy-agent",
        &[
            "--cluster-id",
            cluster,
            "--api-url",
            &kube.url(),
            "--heartbeat-interval",
            &humantime(opts.heartbeat_interval),
            "--inventory-interval",
            &humantime(opts.inventory_interval),
            "--audit-interval",
            &humantime(opts.audit_interval),
            "--audit-debounce",
            &humantime(opts.audit_debounce),
            "--health-interval",
            &humantime(opts.health_interval),
        ],
        agent_env,
        &logs,
    )?;
    gateway.start().await?;
    agent.start().await?;
    Ok(Leaf {
        cluster: cluster.to_owned(),
        nats,
        link,
        seed_dialed,
        kube,
        agent,
        gateway,
        fixture: spec.fixture.clone(),
        link_dir,
    })
}

/// Whether CONTROL holds `cluster`'s `InterconnectRequested` with `request_id`.
async fn interconnect_recorded(
    js: &async_nats::jetstream::Context,
    cluster: &str,
    request_id: &str,
) -> anyhow::Result<bool> {
    use canopy_kit::proto::event::v1::envelope::Body;
    let events = stream_events(
        js,
        canopy_kit::streams::CONTROL,
        "canopy.ctl.interconnect.requested",
    )
    .await?;
    Ok(events.iter().any(|env| {
        env.cluster_id == cluster
            && matches!(&env.body, Some(Body::InterconnectRequested(r)) if r.request_id == request_id)
    }))
}

/// Every event stored on `stream` under `filter`, oldest first.
///
/// # Errors
/// When the stream cannot be read or an event not decoded.
pub async fn stream_events(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> anyhow::Result<Vec<canopy_kit::proto::event::v1::Envelope>> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt as _;
    let stream = js.get_stream(stream).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut left = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    while left > 0 {
        let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await? else {
            break;
        };
        let m = m?;
        left = m.info().map(|i| i.pending).unwrap_or(0);
        out.push(canopy_kit::envelope::decode(&m.subject, &m.payload)?);
    }
    Ok(out)
}

/// The server names of the leafnode connections of the server whose monitoring endpoint is
/// `addr` (`/leafz`).
///
/// # Errors
/// When `/leafz` cannot be read.
pub async fn leafz_names(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let (status, body) = canopy_testkit::http::get(addr, "/leafz", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("/leafz answered {status}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["leafs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
