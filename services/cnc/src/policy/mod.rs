//! Policy distribution: builds its state from events (CONTROL `canopy.ctl.policy.>` and
//! FLEET_EVENTS `canopy.evt.*.agent.started` for cluster labels, both replayed from the
//! beginning, then followed live) and publishes each known cluster's `EffectivePolicy` to
//! `canopy.pol.<cluster>.effective` on the seed's POLICIES whenever its content changes.
//! Each leaf's POLICIES sources its own subject and keeps the newest one.

pub mod domain;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::LastRawMessageErrorKind,
};
use chrono::Utc;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::envelope::Body;
use canopy_kit::streams;
use canopy_kit::subject::{self, ClusterId};

use domain::PolicyState;

/// CONTROL subjects of the policy area.
pub const CONTROL_FILTER: &str = "canopy.ctl.policy.>";
/// FLEET_EVENTS subjects that carry cluster labels.
pub const AGENTS_FILTER: &str = "canopy.evt.*.agent.started";
/// How often expired derogations are dropped from the published policies.
const SWEEP: Duration = Duration::from_secs(60);
const PRODUCER: &str = "cnc";

/// Runs policy distribution until `shutdown`; failures (NATS away) restart it with backoff,
/// replaying the state from the streams.
pub async fn run(js: jetstream::Context, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = run_once(&js, &shutdown) => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "policy distribution failed; restarting")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn run_once(js: &jetstream::Context, shutdown: &CancellationToken) -> anyhow::Result<()> {
    streams::ensure(js, &streams::policies()).await?;
    let ordered = |filter: &str| OrderedConfig {
        filter_subject: filter.to_owned(),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let control = js
        .get_stream(streams::CONTROL)
        .await
        .context("failed to open CONTROL")?
        .create_consumer(ordered(CONTROL_FILTER))
        .await
        .context("failed to read CONTROL")?;
    let agents = js
        .get_stream(streams::FLEET_EVENTS)
        .await
        .context("failed to open FLEET_EVENTS")?
        .create_consumer(ordered(AGENTS_FILTER))
        .await
        .context("failed to read FLEET_EVENTS")?;
    let policies = js
        .get_stream(streams::POLICIES)
        .await
        .context("failed to open POLICIES")?;
    let mut caught_up = (
        control.cached_info().num_pending == 0,
        agents.cached_info().num_pending == 0,
    );
    let mut control = control.messages().await?;
    let mut agents = agents.messages().await?;
    let mut state = PolicyState::default();
    let mut loaded = false;
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = control.next() => {
                let m = m.context("the CONTROL consumer ended")??;
                let meta = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                let (seq, pending) = (meta.stream_sequence, meta.pending);
                match envelope::decode_on(Plane::Ctl, &m.subject, &m.payload) {
                    Ok(env) => if let Some(body) = &env.body { state.apply_control(seq, body) },
                    Err(e) => warn!(seq, error = %e, "undecodable policy event skipped"),
                }
                caught_up.0 |= pending == 0;
            }
            m = agents.next() => {
                let m = m.context("the FLEET_EVENTS consumer ended")??;
                let pending = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
                match envelope::decode_on(Plane::Evt, &m.subject, &m.payload) {
                    Ok(env) => if let Some(Body::AgentStarted(s)) = &env.body {
                        state.apply_agent(&env.cluster_id, &s.labels);
                    },
                    Err(e) => warn!(error = %e, "undecodable AgentStarted skipped"),
                }
                caught_up.1 |= pending == 0;
            }
            _ = sweep.tick() => {}
        }
        if !(caught_up.0 && caught_up.1) {
            continue;
        }
        if !loaded {
            load_published(&policies, &mut state).await?;
            loaded = true;
            info!(
                clusters = state.clusters().count(),
                "policy state replayed; distributing effective policies"
            );
        }
        for (cluster, effective) in state.due(Utc::now()) {
            let Ok(id) = ClusterId::parse(&cluster) else {
                continue;
            };
            let env = envelope::new(&id, PRODUCER, Body::EffectivePolicy(effective.clone()));
            canopy_kit::publish::publish(js, &env)
                .await
                .with_context(|| format!("failed to publish the effective policy of {cluster}"))?;
            metrics::counter!("canopy_cnc_effective_policies_published_total").increment(1);
            info!(
                %cluster,
                version = effective.policy_version,
                derogations = effective.derogations.len(),
                "effective policy published"
            );
            state.published(&cluster, &effective);
        }
    }
}

/// What POLICIES already holds for each known cluster, so that a restart republishes nothing
/// that did not change.
async fn load_published(
    policies: &jetstream::stream::Stream,
    state: &mut PolicyState,
) -> anyhow::Result<()> {
    let clusters: Vec<String> = state.clusters().cloned().collect();
    for cluster in clusters {
        let Ok(id) = ClusterId::parse(&cluster) else {
            continue;
        };
        let subject = subject::policy(&id);
        match policies.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => match envelope::decode_on(Plane::Pol, &m.subject, &m.payload) {
                Ok(env) => {
                    if let Some(Body::EffectivePolicy(e)) = env.body {
                        state.already_published(&cluster, e);
                    }
                }
                Err(e) => warn!(%cluster, error = %e, "stored effective policy does not decode"),
            },
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {}
            Err(e) => return Err(e).context("failed to read POLICIES"),
        }
    }
    Ok(())
}
