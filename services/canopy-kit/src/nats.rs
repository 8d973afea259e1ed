//! Connecting to NATS: one place that sets names, inbox prefixes, retries and event logging.

use anyhow::Context as _;
use async_nats::{Client, ConnectOptions, Event, jetstream};
use tracing::{error, info, warn};

use crate::config::NatsArgs;

/// The inbox prefix of a client connected as `name`: `_INBOX_<name>`. Each service's NATS
/// user may subscribe to its own inbox only (see `canopy_auth::nats::perms`).
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX_{name}")
}

/// Connects with the service's name and its own inbox prefix, retrying until the server is
/// reachable, and logs connection events and server errors. Permission violations arrive
/// there, not as call errors: they are logged at error level with `nats_permission_violation`
/// set and counted in `canopy_nats_permission_violations_total`.
pub async fn connect(args: &NatsArgs, name: &str) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(inbox_prefix(name))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => info!("connected to NATS"),
                Event::Disconnected => warn!("disconnected from NATS"),
                Event::ServerError(e) => {
                    let text = e.to_string();
                    if text.to_ascii_lowercase().contains("permissions violation") {
                        metrics::counter!("canopy_nats_permission_violations_total").increment(1);
                        error!(
                            error = %text,
                            nats_permission_violation = true,
                            "NATS PERMISSION VIOLATION: this service's credentials do not allow that subject"
                        );
                    } else {
                        error!(error = %text, "NATS server error");
                    }
                }
                Event::ClientError(e) => error!(error = %e, "NATS client error"),
                Event::SlowConsumer(sid) => warn!(sid, "slow consumer"),
                other => info!(event = %other, "NATS event"),
            }
        });
    if let Some(creds) = &args.creds {
        opts = opts
            .credentials_file(creds)
            .await
            .with_context(|| format!("failed to read NATS credentials {}", creds.display()))?;
    }
    let client = opts
        .connect(args.url.as_str())
        .await
        .with_context(|| format!("failed to connect to NATS at {}", args.url))?;
    Ok(client)
}

/// A JetStream context, in `domain` when given.
pub fn jetstream(client: Client, domain: Option<&str>) -> jetstream::Context {
    match domain {
        Some(d) => jetstream::with_domain(client, d),
        None => jetstream::new(client),
    }
}
