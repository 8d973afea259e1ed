//! The seed side of interconnects.
//!
//! A leaf's gateway-leafnode asks on `canopy.interconnect.request.<cluster>` (core request/reply,
//! with a bootstrap credential that may publish that one subject and read its own inbox). This
//! side answers from the [`Registry`] it rebuilds from CONTROL: an unknown request is recorded as
//! `InterconnectRequested` and answered "pending"; once an admin approved it through the api
//! (`InterconnectApproved` on CONTROL) the answer carries the cluster's link user JWT, signed
//! here for the public key the leaf generated and sealed to the leaf's xkey. Approved clusters
//! get a FLEET_EVENTS source; a revoked cluster loses it, and its link user is added to the
//! Canopy account's revocations, pushed to the seed's and the trunks' resolvers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use canopy_auth::nats::{LinkSigner, sealed};
use canopy_kit::config::NatsArgs;
use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    InterconnectReply, InterconnectRequested, InterconnectStatus, envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::domain::interconnect::{self, Answer, Change, Registry};

/// The subject a leaf sends its request on.
pub fn request_subject(cluster: &str) -> String {
    format!("canopy.interconnect.request.{cluster}")
}

/// What the seed side needs besides its NATS connection.
pub struct Seed {
    pub signer: LinkSigner,
    /// How long a link JWT is valid; the leaf renews it at half-life.
    pub link_validity: Duration,
    /// System-account clients of the seed and of each trunk (revocation pushes).
    pub resolvers: Vec<(String, async_nats::Client)>,
    /// Clusters sourced without an interconnect (`--leaf`).
    pub static_leaves: Vec<ClusterId>,
    /// Clusters the link monitor watches, and whether each goes through a trunk.
    pub watched: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// Follows CONTROL and answers requests until `shutdown`.
///
/// # Errors
/// When CONTROL cannot be read or the request subject cannot be subscribed.
pub async fn run(
    seed: Seed,
    client: async_nats::Client,
    js: jetstream::Context,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::default()),
        sealer: sealed::generate(),
        seed,
        js: js.clone(),
        last_iat: Mutex::new(0),
        recorded: Mutex::new(BTreeSet::new()),
    });
    let follower = follow(shared.clone(), ready.clone(), shutdown.clone());
    let mut ready_rx = ready.subscribe();
    let responder = async {
        // Answers only from a registry that has caught up with CONTROL.
        while !*ready_rx.borrow_and_update() {
            if ready_rx.changed().await.is_err() {
                return Ok(());
            }
        }
        respond(shared.clone(), client, shutdown.clone()).await
    };
    tokio::try_join!(follower, responder)?;
    Ok(())
}

struct Shared {
    registry: Mutex<Registry>,
    sealer: nkeys::XKey,
    seed: Seed,
    js: jetstream::Context,
    last_iat: Mutex<i64>,
    /// Requests recorded by this process and not yet seen back on CONTROL.
    recorded: Mutex<BTreeSet<String>>,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Replays `canopy.ctl.interconnect.>` from the start, then follows it.
async fn follow(
    shared: Arc<Shared>,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stream = shared
        .js
        .get_stream(streams::CONTROL)
        .await
        .context("failed to open CONTROL")?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: "canopy.ctl.interconnect.>".to_owned(),
            deliver_policy: DeliverPolicy::All,
            description: Some("gateway-leafnode interconnects".to_owned()),
            ..Default::default()
        })
        .await
        .context("failed to read the interconnect events on CONTROL")?;
    let mut caught_up = consumer.cached_info().num_pending == 0;
    if caught_up {
        after_replay(&shared).await;
        ready.send_replace(true);
    }
    let mut messages = consumer
        .messages()
        .await
        .context("failed to read the interconnect events on CONTROL")?;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(next) = next else {
            anyhow::bail!("the interconnect event stream ended");
        };
        let m = match next {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "interconnect events: read error (the consumer resumes)");
                continue;
            }
        };
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        match envelope::decode_on(Plane::Ctl, &m.subject, &m.payload) {
            Ok(env) => {
                let at = env.occurred_at.as_ref().map_or(0, |t| t.seconds);
                if let Some(body) = &env.body {
                    if let Body::InterconnectRequested(r) = body {
                        shared
                            .recorded
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&r.request_id);
                    }
                    let change = shared.registry().apply(&env.cluster_id, body, at);
                    if caught_up {
                        on_change(&shared, change).await;
                    }
                }
            }
            Err(e) => warn!(subject = %m.subject, error = %e, "unreadable interconnect event"),
        }
        if !caught_up && pending == 0 {
            caught_up = true;
            after_replay(&shared).await;
            ready.send_replace(true);
        }
    }
}

async fn after_replay(shared: &Shared) {
    let (approved, revoked) = {
        let r = shared.registry();
        (r.approved().count(), r.revoked_users().len())
    };
    info!(
        approved,
        revoked_link_users = revoked,
        "interconnects rebuilt from CONTROL"
    );
    reconcile(shared).await;
    if revoked > 0 {
        push_revocations(shared).await;
    }
}

async fn on_change(shared: &Shared, change: Change) {
    match change {
        Change::None => {}
        Change::Approved(r) => {
            info!(cluster = %r.cluster, request_id = %r.id(), trunk = r.trunk().unwrap_or("-"),
                "interconnect approved; the leaf gets its link credentials on its next request");
            reconcile(shared).await;
        }
        Change::Revoked { cluster } => {
            warn!(%cluster, "cluster revoked: its link user is refused and its events no longer sourced");
            push_revocations(shared).await;
            reconcile(shared).await;
        }
    }
}

/// Sources every approved and static cluster, drops the revoked ones, and tells the link
/// monitor what to watch.
async fn reconcile(shared: &Shared) {
    let (wanted, revoked) = {
        let r = shared.registry();
        let mut wanted: BTreeMap<String, bool> = r
            .approved()
            .map(|a| (a.cluster.clone(), a.trunk().is_some()))
            .collect();
        for c in &shared.seed.static_leaves {
            if !r.is_revoked(c.as_str()) {
                wanted.entry(c.to_string()).or_insert(false);
            }
        }
        let revoked: Vec<ClusterId> = r
            .revoked_clusters()
            .filter_map(|c| ClusterId::parse(c).ok())
            .collect();
        (wanted, revoked)
    };
    let clusters: Vec<ClusterId> = wanted
        .keys()
        .filter_map(|c| ClusterId::parse(c).ok())
        .collect();
    if let Err(e) = crate::app::reconcile_sources(&shared.js, &clusters, &revoked).await {
        error!(
            error = format!("{e:#}"),
            "FLEET_EVENTS sources not reconciled"
        );
    }
    *shared
        .seed
        .watched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = wanted;
}

/// Pushes the Canopy account JWT with every revoked link user to each resolver.
async fn push_revocations(shared: &Shared) {
    let revoked = shared.registry().revoked_users().clone();
    let iat = {
        let mut last = shared
            .last_iat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = now_s().max(*last + 1);
        *last = now;
        now
    };
    let jwt = match shared.seed.signer.canopy_account_jwt(&revoked, iat) {
        Ok(j) => j,
        Err(e) => {
            error!(
                error = format!("{e:#}"),
                "failed to sign the Canopy account JWT"
            );
            return;
        }
    };
    for (name, client) in &shared.seed.resolvers {
        match push_claims(client, &jwt).await {
            Ok(()) => info!(server = %name, revoked = revoked.len(), "revocations pushed"),
            Err(e) => error!(server = %name, error = format!("{e:#}"), "revocations not pushed"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SysReply {
    error: Option<SysError>,
}

#[derive(Debug, Deserialize)]
struct SysError {
    #[serde(default)]
    description: String,
}

/// `$SYS.REQ.CLAIMS.UPDATE` with `jwt`.
///
/// # Errors
/// When the server does not answer or refuses.
pub async fn push_claims(client: &async_nats::Client, jwt: &str) -> anyhow::Result<()> {
    system_request(client, "$SYS.REQ.CLAIMS.UPDATE".to_owned(), jwt.to_owned()).await
}

/// A system-account request whose reply is `{"error": ...}` on failure.
///
/// # Errors
/// When the server does not answer in 5 s or answers with an error.
pub async fn system_request(
    client: &async_nats::Client,
    subject: String,
    payload: String,
) -> anyhow::Result<()> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.clone(), payload.into()),
    )
    .await
    .with_context(|| format!("no answer to {subject} in 5 s"))?
    .with_context(|| format!("{subject} failed"))?;
    let parsed: SysReply = serde_json::from_slice(&reply.payload)
        .with_context(|| format!("unreadable answer to {subject}"))?;
    if let Some(e) = parsed.error {
        anyhow::bail!("{subject} refused: {}", e.description);
    }
    Ok(())
}

/// Answers requests until `shutdown`.
async fn respond(
    shared: Arc<Shared>,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut sub = client
        .queue_subscribe(request_subject("*"), "gateway-leafnode".to_owned())
        .await
        .context("failed to subscribe to interconnect requests")?;
    info!("answering interconnect requests");
    loop {
        let m = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = sub.next() => m,
        };
        let Some(m) = m else {
            anyhow::bail!("the interconnect request subscription ended");
        };
        let Some(reply_to) = m.reply.clone() else {
            debug!(subject = %m.subject, "request without a reply subject ignored");
            continue;
        };
        let cluster = m
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let answer = answer(&shared, &cluster, &reply_to, &m.payload).await;
        debug!(%cluster, status = status_name(answer.status), "interconnect request answered");
        metrics::counter!("canopy_gateway_interconnect_requests_total",
            "status" => status_name(answer.status))
        .increment(1);
        if let Err(e) = client
            .publish(reply_to, answer.encode_to_vec().into())
            .await
        {
            warn!(%cluster, error = %e, "interconnect answer not sent");
        }
    }
}

fn status_name(s: i32) -> &'static str {
    match InterconnectStatus::try_from(s) {
        Ok(InterconnectStatus::Pending) => "pending",
        Ok(InterconnectStatus::Approved) => "approved",
        Ok(InterconnectStatus::Rejected) => "rejected",
        Ok(InterconnectStatus::Revoked) => "revoked",
        _ => "invalid",
    }
}

fn invalid(reason: impl Into<String>) -> InterconnectReply {
    InterconnectReply {
        status: InterconnectStatus::Invalid as i32,
        reason: reason.into(),
        ..Default::default()
    }
}

async fn answer(
    shared: &Shared,
    cluster: &str,
    reply_to: &str,
    payload: &[u8],
) -> InterconnectReply {
    let Ok(cluster_id) = ClusterId::parse(cluster) else {
        return invalid("the request subject names no valid cluster id");
    };
    // The bootstrap user reads only its own cluster's inbox: a reply elsewhere is a forgery.
    if !reply_to.starts_with(&format!("_INBOX_canopy-bootstrap.{cluster}.")) {
        return invalid("the reply subject is not the cluster's bootstrap inbox");
    }
    let request = match InterconnectRequested::decode(payload) {
        Ok(r) => r,
        Err(e) => return invalid(format!("not an InterconnectRequested message: {e}")),
    };
    if let Err(reason) = interconnect::validate(&request) {
        return invalid(reason);
    }
    let decided = shared.registry().answer(cluster, &request);
    match decided {
        Answer::Record => {
            let first = shared
                .recorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(request.request_id.clone());
            if first {
                let env = envelope::new(
                    &cluster_id,
                    "gateway-leafnode",
                    Body::InterconnectRequested(request.clone()),
                );
                if let Err(e) = canopy_kit::publish::publish(&shared.js, &env).await {
                    shared
                        .recorded
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&request.request_id);
                    warn!(%cluster, error = format!("{e:#}"), "interconnect request not recorded");
                    return invalid("the seed could not record the request; ask again");
                }
                info!(%cluster, request_id = %request.request_id,
                    "interconnect requested; waiting for an admin (canopyctl interconnects approve)");
            }
            InterconnectReply {
                status: InterconnectStatus::Pending as i32,
                ..Default::default()
            }
        }
        Answer::Pending => InterconnectReply {
            status: InterconnectStatus::Pending as i32,
            ..Default::default()
        },
        Answer::Approved(r) => match credentials(shared, &r) {
            Ok(reply) => reply,
            Err(e) => {
                error!(%cluster, error = format!("{e:#}"), "link credentials not issued");
                invalid("the seed could not issue the link credentials")
            }
        },
        Answer::Rejected(reason) => InterconnectReply {
            status: InterconnectStatus::Rejected as i32,
            reason,
            ..Default::default()
        },
        Answer::Revoked => InterconnectReply {
            status: InterconnectStatus::Revoked as i32,
            reason: "the cluster was revoked".to_owned(),
            ..Default::default()
        },
        Answer::Invalid(reason) => invalid(reason),
    }
}

/// Signs the link user of an approved request and seals its JWT to the leaf.
fn credentials(shared: &Shared, r: &interconnect::Request) -> anyhow::Result<InterconnectReply> {
    let validity = i64::try_from(shared.seed.link_validity.as_secs()).unwrap_or(i64::MAX);
    let exp = now_s().saturating_add(validity);
    let jwt = shared
        .seed
        .signer
        .link_jwt(&r.cluster, &r.body.link_user_public_key, exp)?;
    let sealed = sealed::seal(jwt.as_bytes(), &shared.sealer, &r.body.xkey_public_key)?;
    Ok(InterconnectReply {
        status: InterconnectStatus::Approved as i32,
        sealed_jwt: sealed,
        sealer_xkey_public_key: shared.sealer.public_key(),
        expires_at: Some(prost_types::Timestamp {
            seconds: exp,
            nanos: 0,
        }),
        ..Default::default()
    })
}

/// Unix seconds now.
pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Connects a system-account client (revocation pushes, reloads).
///
/// # Errors
/// When the connection fails.
pub async fn system_client(
    url: &str,
    creds: &std::path::Path,
) -> anyhow::Result<async_nats::Client> {
    let args = NatsArgs {
        url: url.to_owned(),
        creds: Some(creds.to_path_buf()),
    };
    canopy_kit::nats::connect(&args, "canopy-gateway-sys").await
}
