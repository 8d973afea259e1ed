//! Connecting to NATS: one place that sets names, inbox prefixes, retries and event logging.

use anyhow::Context as _;
use async_nats::{Client, ConnectOptions, Event, jetstream};
use tracing::{error, info, warn};

use crate::config::NatsArgs;

/// Connects with the service's name, retrying until the server is reachable, and logs
/// connection events and server errors (permission violations arrive there, not as call
/// errors).
pub async fn connect(args: &NatsArgs, name: &str) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => info!("connected to NATS"),
                Event::Disconnected => warn!("disconnected from NATS"),
                Event::ServerError(e) => error!(error = %e, "NATS server error"),
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
