//! The api's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use canopy_kit::config::{HttpArgs, LogFormat, NatsArgs, TelemetryArgs};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-api",
    version,
    about = "Serves the fleet to users over gRPC"
)]
pub struct Config {
    /// Address of the gRPC server (port 0 picks a free port).
    #[arg(long, env = "CANOPY_API_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Postgres URL of the read models (written by ingestion; the api only reads).
    #[arg(long, env = "CANOPY_API_DATABASE_URL")]
    pub database_url: String,
    /// Postgres connections in the pool.
    #[arg(long, env = "CANOPY_API_DB_CONNECTIONS", default_value_t = 8)]
    pub db_connections: u32,
    /// JetStream domain that holds FLEET_EVENTS (default: the connected server's own).
    #[arg(long, env = "CANOPY_API_JS_DOMAIN")]
    pub js_domain: Option<String>,
    /// Events each Watch may buffer for a slow client before it stops reading the log.
    #[arg(long, env = "CANOPY_API_WATCH_BUFFER", default_value_t = 256)]
    pub watch_buffer: usize,
    /// How often Postgres and NATS are checked for the health service and /readyz.
    #[arg(long, env = "CANOPY_API_HEALTH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// How long in-flight calls may take to finish on shutdown.
    #[arg(long, env = "CANOPY_API_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Largest request message accepted, in bytes; larger ones are refused with
    /// RESOURCE_EXHAUSTED before any handler runs.
    #[arg(long, env = "CANOPY_API_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Token key file (JSON: issuer, audience, keys; see `canopy_auth::token`): every call
    /// but health checks needs a valid bearer token and the role of its method.
    #[arg(long, env = "CANOPY_API_AUTH_KEYS")]
    pub auth_keys: Option<PathBuf>,
    /// Serve without authentication (local development only). Without it the api refuses to
    /// start when --auth-keys is not given.
    #[arg(long, env = "CANOPY_API_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// 1 MiB: far above any legitimate request (a policy, a command, a filter).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

impl Config {
    /// Defaults for running in-process (tests, embedding): gRPC and HTTP on free loopback
    /// ports, no environment variables read, no authentication (set `auth_keys` and clear
    /// `insecure_no_auth` to turn it on).
    pub fn new(database_url: impl Into<String>, nats: NatsArgs) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            db_connections: 4,
            js_domain: None,
            watch_buffer: 256,
            health_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            auth_keys: None,
            insecure_no_auth: true,
            nats,
            http: HttpArgs::default(),
            telemetry: TelemetryArgs {
                log_format: LogFormat::Text,
                otlp_endpoint: None,
            },
        }
    }
}
