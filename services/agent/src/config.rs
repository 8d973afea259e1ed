//! The agent's configuration.

use std::time::Duration;

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};
use canopy_kit::subject::ClusterId;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-agent",
    version,
    about = "Inventories and audits a Kubernetes cluster and reports to its leaf's EVENTS stream"
)]
pub struct Config {
    /// This cluster's id (a DNS label); also its leaf's JetStream domain.
    #[arg(long, env = "CANOPY_AGENT_CLUSTER_ID")]
    pub cluster_id: ClusterId,
    /// Labels of this cluster, `key=value` (repeatable or comma-separated): command selectors,
    /// derogation scopes and user scopes match on them.
    #[arg(long = "label", env = "CANOPY_AGENT_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Kubernetes API URL (plain http allowed); default: in-cluster config, else kubeconfig.
    #[arg(long, env = "CANOPY_AGENT_API_URL")]
    pub api_url: Option<String>,
    /// Time between heartbeats.
    #[arg(long, env = "CANOPY_AGENT_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = positive_duration)]
    pub heartbeat_interval: Duration,
    /// Time between full inventory snapshots.
    #[arg(long, env = "CANOPY_AGENT_INVENTORY_INTERVAL", default_value = "5m", value_parser = positive_duration)]
    pub inventory_interval: Duration,
    /// Time between full security audits (audits also run at start-up, after a policy change,
    /// on request, and for watched changes in between).
    #[arg(long, env = "CANOPY_AGENT_AUDIT_INTERVAL", default_value = "10m", value_parser = positive_duration)]
    pub audit_interval: Duration,
    /// How long watched changes are collected, from the first one, before the objects that
    /// changed are re-audited together.
    #[arg(long, env = "CANOPY_AGENT_AUDIT_DEBOUNCE", default_value = "2s", value_parser = positive_duration)]
    pub audit_debounce: Duration,
    /// Time between health reports (node conditions, pods in trouble, workloads short of
    /// replicas, pending claims, expiring certificates, usage against requests).
    #[arg(long, env = "CANOPY_AGENT_HEALTH_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub health_interval: Duration,
    /// TLS secrets whose certificate expires within this window are reported.
    #[arg(long, env = "CANOPY_AGENT_CERT_EXPIRY_WINDOW", default_value = "30days", value_parser = positive_duration)]
    pub cert_expiry_window: Duration,
    /// Restarts from which a container counts as crash-looping even between back-offs.
    #[arg(long, env = "CANOPY_AGENT_CRASHLOOP_RESTARTS", default_value_t = 5)]
    pub crashloop_restarts: u32,
    /// Objects per Kubernetes list call.
    #[arg(long, env = "CANOPY_AGENT_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Largest inventory message, in bytes (NATS refuses payloads above its max_payload, 1 MiB).
    #[arg(long, env = "CANOPY_AGENT_MAX_CHUNK_BYTES", default_value_t = 512 * 1024, value_parser = clap::value_parser!(u32).range(4096..=1_000_000))]
    pub max_chunk_bytes: u32,
    /// Size limit of the leaf's EVENTS stream (sized for the longest outage to ride out).
    #[arg(long, env = "CANOPY_AGENT_EVENTS_MAX_BYTES", default_value_t = 1 << 30)]
    pub events_max_bytes: i64,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// `key=value`, validated by [`canopy_kit::labels::parse`].
fn parse_label(s: &str) -> Result<(String, String), String> {
    canopy_kit::labels::parse(s).map_err(|e| e.to_string())
}

/// A humantime duration above zero (a zero period would make the timers spin).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let cfg = Config::try_parse_from(["canopy-agent", "--cluster-id", "prod-eu"]).unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(cfg.inventory_interval, Duration::from_secs(300));
        assert_eq!(cfg.audit_interval, Duration::from_secs(600));
        assert_eq!(cfg.audit_debounce, Duration::from_secs(2));
        assert_eq!(cfg.health_interval, Duration::from_secs(30));
        assert_eq!(cfg.cert_expiry_window, Duration::from_secs(30 * 86_400));
        assert_eq!((cfg.page_size, cfg.max_chunk_bytes), (500, 524_288));
        assert!(cfg.api_url.is_none());
        assert!(cfg.labels.is_empty());
        let labelled = Config::try_parse_from([
            "canopy-agent",
            "--cluster-id",
            "a",
            "--label",
            "env=prod,region=eu",
            "--label",
            "team=core",
        ])
        .unwrap();
        assert_eq!(labelled.labels.len(), 3);
        assert_eq!(labelled.labels[0], ("env".to_owned(), "prod".to_owned()));
        for bad in [
            &["--cluster-id", "Prod_EU"][..],
            &["--cluster-id", "a", "--heartbeat-interval", "0s"],
            &["--cluster-id", "a", "--inventory-interval", "0"],
            &["--cluster-id", "a", "--audit-interval", "0s"],
            &["--cluster-id", "a", "--page-size", "0"],
            &["--cluster-id", "a", "--max-chunk-bytes", "2000000"],
            &["--cluster-id", "a", "--label", "env"],
            &["--cluster-id", "a", "--label", "env=a b"],
            &["--cluster-id", "a", "--label", "=x"],
        ] {
            let args = std::iter::once("canopy-agent").chain(bad.iter().copied());
            assert!(
                Config::try_parse_from(args).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
