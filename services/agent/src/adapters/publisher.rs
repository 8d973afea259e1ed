//! Publishing into the leaf's EVENTS: an event is retried, as the very same envelope (same
//! `Nats-Msg-Id`, so JetStream stores it once), until it is stored or the agent stops.

use std::time::Duration;

use async_nats::jetstream;
use canopy_kit::proto::event::v1::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::warn;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes `env` until the stream acknowledges it; `false` when `shutdown` came first.
pub async fn publish_until_stored(
    js: &jetstream::Context,
    env: &Envelope,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        match canopy_kit::publish::publish(js, env).await {
            Ok(_) => return true,
            Err(e) => {
                attempt += 1;
                metrics::counter!("canopy_agent_publish_retries_total").increment(1);
                if attempt == 1 || attempt.is_multiple_of(10) {
                    warn!(error = %e, event_id = %env.event_id, attempt, "event not stored yet; retrying");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
