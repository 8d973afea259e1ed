//! Configuration pieces shared by every service, flattened into each service's clap `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How to reach NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        global = true,
        env = "CANOPY_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long = "nats-creds", global = true, env = "CANOPY_NATS_CREDS")]
    pub creds: Option<PathBuf>,
}

impl NatsArgs {
    /// `url`, with the credentials of `$CANOPY_NATS_CREDS` when set (as on the command line).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            creds: std::env::var_os("CANOPY_NATS_CREDS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// With the credentials file `creds`.
    pub fn with_creds(mut self, creds: impl Into<PathBuf>) -> Self {
        self.creds = Some(creds.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Logs and traces.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format on stderr; the filter comes from RUST_LOG (default info).
    #[arg(
        long = "log-format",
        global = true,
        env = "CANOPY_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint to export spans to, e.g. http://127.0.0.1:4317 (Jaeger).
    #[arg(
        long = "otlp-endpoint",
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
}

/// Where `/healthz`, `/readyz` and `/metrics` are served.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address of the health and metrics endpoints (port 0 picks a free port).
    #[arg(
        long = "http-addr",
        global = true,
        env = "CANOPY_HTTP_ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub http_addr: SocketAddr,
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}
