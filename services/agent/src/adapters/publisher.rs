//! Publishing into the leaf's EVENTS: an event is retried, as the very same envelope (same
//! `Nats-Msg-Id`, so JetStream stores it once), until it is stored or the agent gives up on it.

use std::time::Duration;

use async_nats::jetstream;
use canopy_kit::proto::event::v1::Envelope;
use canopy_kit::publish::PublishError;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How publishing one event ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Stored,
    /// `stop` came first; the event may or may not be stored.
    Stopped,
    /// The envelope does not validate: retrying cannot help (a bug, logged and counted).
    Invalid,
}

/// Publishes `env` until the stream acknowledges it or `stop` comes. An attempt in flight is
/// abandoned at `stop` too: while the server is away an attempt only ends with the JetStream ack
/// timeout, which would otherwise stretch the shutdown deadline.
pub async fn publish_until_stored(
    js: &jetstream::Context,
    env: &Envelope,
    stop: &CancellationToken,
) -> Published {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return Published::Stopped,
            outcome = canopy_kit::publish::publish(js, env) => outcome,
        };
        match outcome {
            Ok(_) => return Published::Stored,
            Err(PublishError::Invalid(e)) => {
                metrics::counter!("canopy_agent_invalid_events_total").increment(1);
                error!(error = %e, event_id = %env.event_id, "event does not validate; not published");
                return Published::Invalid;
            }
            Err(e) => {
                attempt += 1;
                metrics::counter!("canopy_agent_publish_retries_total").increment(1);
                if attempt == 1 || attempt.is_multiple_of(10) {
                    warn!(error = %e, event_id = %env.event_id, attempt, "event not stored yet; retrying");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Published::Stopped,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
