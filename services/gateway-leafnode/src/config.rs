//! gateway-leafnode's configuration.

use std::path::PathBuf;
use std::time::Duration;

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};
use canopy_kit::subject::ClusterId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Seed side: sources each approved leaf's EVENTS into FLEET_EVENTS and watches the links.
    Seed,
    /// Leaf side: sets up the leaf's COMMANDS and POLICIES streams, sourced from the seed.
    Leaf,
}

/// Who dials the link of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    LeafDials,
    SeedDials,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-gateway-leafnode",
    version,
    about = "Links leaf clusters to the seed"
)]
pub struct Config {
    #[arg(long, env = "CANOPY_GATEWAY_ROLE", value_enum)]
    pub role: Role,
    /// Leaf role: this cluster's id (also its JetStream domain).
    #[arg(long, env = "CANOPY_GATEWAY_CLUSTER_ID")]
    pub cluster_id: Option<ClusterId>,
    /// Seed role: clusters sourced without an interconnect request, e.g. linked with
    /// credentials from `canopyctl nats init` (comma-separated or repeated). Approved
    /// interconnects need no entry here.
    #[arg(long = "leaf", env = "CANOPY_GATEWAY_LEAVES", value_delimiter = ',')]
    pub leaves: Vec<ClusterId>,
    /// Seed role: the folder with what link users and revocations are signed with
    /// (`seed/gateway-keys` of `canopyctl nats init`). Without it, interconnect requests are
    /// not answered.
    #[arg(long, env = "CANOPY_GATEWAY_SIGNING_KEYS")]
    pub signing_keys: Option<PathBuf>,
    /// System-account credentials: seed role, to push revocations to the seed's (and trunks')
    /// resolver; leaf role, to reload the leaf's nats-server after writing its remote.
    #[arg(long, env = "CANOPY_GATEWAY_SYSTEM_CREDS")]
    pub system_creds: Option<PathBuf>,
    /// Seed role: client URLs of trunks whose resolvers also get revocations
    /// (`name=nats://host:port`, comma-separated or repeated).
    #[arg(
        long = "trunk-url",
        env = "CANOPY_GATEWAY_TRUNK_URLS",
        value_delimiter = ','
    )]
    pub trunk_urls: Vec<String>,
    /// Seed role: how long link credentials are valid; leaves renew them at half-life.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_VALIDITY", default_value = "30d", value_parser = humantime::parse_duration)]
    pub link_validity: Duration,
    /// Seed role: the `dial/` folder beside the dialer's configuration
    /// (`nats-config/dialer.conf`); with it, this seed dials the leaves that ask for it.
    #[arg(long, env = "CANOPY_GATEWAY_DIAL_DIR")]
    pub dial_dir: Option<PathBuf>,
    /// Seed role, with `--dial-dir`: client URL of the dialer (its system user reloads it and
    /// takes the accounts of the dialed clusters).
    #[arg(long, env = "CANOPY_GATEWAY_DIALER_URL")]
    pub dialer_url: Option<String>,
    /// Seed role, with `--dial-dir`: `nats-leaf://host:port` of the seed's leafnode listener as
    /// the dialer reaches it.
    #[arg(long, env = "CANOPY_GATEWAY_SEED_LEAF_URL")]
    pub seed_leaf_url: Option<String>,
    /// Leaf role: who opens the link once approved: this leaf (`leaf-dials`, to `--uplink-url`)
    /// or the seed's dialer (`seed-dials`, to `--leaf-url`).
    #[arg(
        long,
        env = "CANOPY_GATEWAY_DIRECTION",
        value_enum,
        default_value = "leaf-dials"
    )]
    pub direction: Direction,
    /// Leaf role, `seed-dials`: `nats-leaf://host:port` at which the seed's dialer reaches this
    /// leaf's leafnode listener.
    #[arg(long, env = "CANOPY_GATEWAY_LEAF_URL")]
    pub leaf_url: Option<String>,
    /// Leaf role, `seed-dials`: `host:port` the leaf's nats-server listens on for the dialer
    /// (written to `link/remotes.conf`; read when the server starts).
    #[arg(
        long,
        env = "CANOPY_GATEWAY_LEAFNODE_LISTEN",
        default_value = "0.0.0.0:7422"
    )]
    pub leafnode_listen: String,
    /// Leaf role, `seed-dials`: this leaf's account signing key
    /// (`leaves/<cluster>/account-signing.nk` of `canopyctl nats init`), to sign the dialer's
    /// user.
    #[arg(long, env = "CANOPY_GATEWAY_ACCOUNT_SIGNING_KEY")]
    pub account_signing_key: Option<PathBuf>,
    /// Leaf role: the `link/` folder beside the leaf nats-server's configuration (keys, request
    /// id, link credentials, `remotes.conf`). Without it the leaf does not ask to be linked.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_DIR")]
    pub link_dir: Option<PathBuf>,
    /// Leaf role: client URL of the seed (or trunk) that interconnect requests go to.
    #[arg(long, env = "CANOPY_GATEWAY_BOOTSTRAP_URL")]
    pub bootstrap_url: Option<String>,
    /// Leaf role: the bootstrap credential (`leaves/<cluster>/bootstrap.creds`): it may only
    /// send this cluster's request.
    #[arg(long, env = "CANOPY_GATEWAY_BOOTSTRAP_CREDS")]
    pub bootstrap_creds: Option<PathBuf>,
    /// Leaf role: `nats-leaf://host:port` of the seed's or trunk's leafnode listener, dialled
    /// once approved.
    #[arg(long, env = "CANOPY_GATEWAY_UPLINK_URL")]
    pub uplink_url: Option<String>,
    /// Leaf role: the trunk the link goes through (its id), if any.
    #[arg(long, env = "CANOPY_GATEWAY_TRUNK")]
    pub trunk: Option<ClusterId>,
    /// Leaf role: labels sent with the request (`k=v`, comma-separated or repeated).
    #[arg(long = "label", env = "CANOPY_GATEWAY_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Leaf role: how often a pending request is asked again.
    #[arg(long, env = "CANOPY_GATEWAY_REQUEST_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_interval: Duration,
    /// Leaf role: how often a linked leaf asks whether its link still stands (a revoked leaf
    /// removes its link and asks anew).
    #[arg(long, env = "CANOPY_GATEWAY_STATUS_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// JetStream domain of the seed.
    #[arg(long, env = "CANOPY_GATEWAY_SEED_DOMAIN", default_value = "seed")]
    pub seed_domain: String,
    /// Seed role: how often the state of each link's stream source is checked.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_CHECK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub link_check_interval: Duration,
    /// Seed role: the seed nats-server's monitoring URL (`http://IP:PORT`); when set, a link is
    /// up while the cluster's leaf holds a leafnode connection (`/leafz`, by server name = cluster
    /// id), else while its FLEET_EVENTS source hears from it.
    #[arg(long, env = "CANOPY_GATEWAY_MONITOR_URL")]
    pub monitor_url: Option<String>,
    /// Seed role: checks in a row a link must be seen up before `LinkEstablished` is published.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_UP_AFTER", default_value_t = 2)]
    pub link_up_after: u32,
    /// Seed role: checks in a row a link must be seen down before `LinkLost` is published.
    #[arg(long, env = "CANOPY_GATEWAY_LINK_DOWN_AFTER", default_value_t = 2)]
    pub link_down_after: u32,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
