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
//!
//! Each cluster's approved request is also kept in the key-value bucket `canopy-interconnects`
//! and restored before CONTROL is replayed, so that an approval outlives CONTROL's retention.
//! For a seed-dialed cluster the record also holds the newest JWT its leaf signed for the
//! dialer, so that a restarted seed whose dial dir is gone dials the leaf again at once.
//!
//! A leaf may instead ask to be dialed (seed-dials): then the approval names the key of the
//! user the seed's dialer will connect with, the leaf signs a JWT for it in its own account and
//! sends it in its next request, and the dialer (see [`crate::dialer`]) links it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, kv};
use canopy_auth::nats::{LinkSigner, sealed};
use canopy_kit::config::NatsArgs;
use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    ApprovedInterconnect, InterconnectReply, InterconnectRequested, InterconnectStatus,
    LinkDirection, envelope::Body,
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
    /// Clusters the link monitor watches, and how each link is made.
    pub watched: Arc<Mutex<BTreeMap<String, crate::links::Route>>>,
    /// The seed's dialer, when this seed dials leaves that ask for it.
    pub dialer: Option<crate::dialer::Dialer>,
}

/// How often the dialer is checked even without a change (credential renewal, a restarted
/// dialer).
const DIALER_CHECK: Duration = Duration::from_secs(30);

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
    let snapshot = snapshot_bucket(&js).await?;
    let mut registry = Registry::default();
    let restored = restore(&snapshot, &mut registry).await?;
    if !restored.is_empty() {
        info!(
            restored = restored.len(),
            "approvals restored from the bucket {SNAPSHOT_BUCKET}"
        );
    }
    let dial_jwts = restored_dial_jwts(&seed, restored);
    let shared = Arc::new(Shared {
        registry: Mutex::new(registry),
        snapshot,
        sealer: sealed::generate(),
        seed,
        js: js.clone(),
        last_iat: Mutex::new(0),
        recorded: Mutex::new(BTreeSet::new()),
        dial_jwts: Mutex::new(dial_jwts),
        dialed: Mutex::new(BTreeSet::new()),
        reconciling: tokio::sync::Mutex::new(()),
        dialer_wake: tokio::sync::Notify::new(),
    });
    let follower = follow(shared.clone(), ready.clone(), shutdown.clone());
    let dialer = dial_loop(shared.clone(), ready.subscribe(), shutdown.clone());
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
    tokio::try_join!(follower, responder, dialer)?;
    Ok(())
}

struct Shared {
    registry: Mutex<Registry>,
    /// Each cluster's approved request (see the module docs).
    snapshot: kv::Store,
    sealer: nkeys::XKey,
    seed: Seed,
    js: jetstream::Context,
    last_iat: Mutex<i64>,
    /// Requests recorded by this process and not yet seen back on CONTROL.
    recorded: Mutex<BTreeSet<String>>,
    /// Seed-dialed cluster → (request id, the user JWT its leaf signed for the dialer).
    dial_jwts: Mutex<BTreeMap<String, (String, String)>>,
    /// Wakes the dialer's reconciliation.
    dialer_wake: tokio::sync::Notify,
    /// Seed-dialed (cluster, request id) the dialer has held a connection to: their
    /// FLEET_EVENTS source is added only then, so that its first attempt finds the leaf (a
    /// source that fails retries only after a back-off).
    dialed: Mutex<BTreeSet<(String, String)>>,
    /// One source reconciliation at a time (CONTROL events and the dialer both start them).
    reconciling: tokio::sync::Mutex<()>,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        locked(&self.registry)
    }
}

/// Locks `m`, also after a panic elsewhere held it (the state stays usable).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
                        locked(&shared.recorded).remove(&r.request_id);
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
    if let Err(e) = sync_snapshot(shared).await {
        error!(
            error = format!("{e:#}"),
            "the approvals bucket is not in step with CONTROL"
        );
    }
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
            if let Err(e) = keep_approval(&shared.snapshot, &r, None).await {
                error!(cluster = %r.cluster, error = format!("{e:#}"), "approval not kept in the bucket");
            }
            reconcile(shared).await;
        }
        Change::Revoked { cluster } => {
            warn!(%cluster, "cluster revoked: its link user is refused and its events no longer sourced");
            if let Err(e) = shared.snapshot.delete(&cluster).await {
                error!(%cluster, error = %e, "revoked approval not removed from the bucket");
            }
            push_revocations(shared).await;
            reconcile(shared).await;
        }
    }
}

/// The bucket of approved interconnects.
pub const SNAPSHOT_BUCKET: &str = "canopy-interconnects";

async fn snapshot_bucket(js: &jetstream::Context) -> anyhow::Result<kv::Store> {
    match js.get_key_value(SNAPSHOT_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: SNAPSHOT_BUCKET.to_owned(),
                description: "Each cluster's approved interconnect request (gateway-leafnode)"
                    .to_owned(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("failed to create the bucket {SNAPSHOT_BUCKET}")),
    }
}

/// Loads every kept approval into `registry`; returns them.
async fn restore(
    store: &kv::Store,
    registry: &mut Registry,
) -> anyhow::Result<Vec<ApprovedInterconnect>> {
    let mut keys = store
        .keys()
        .await
        .with_context(|| format!("failed to list the bucket {SNAPSHOT_BUCKET}"))?;
    let mut restored = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.with_context(|| format!("failed to list the bucket {SNAPSHOT_BUCKET}"))?;
        let Some(value) = store
            .get(&key)
            .await
            .with_context(|| format!("failed to read {key} in {SNAPSHOT_BUCKET}"))?
        else {
            continue;
        };
        let kept = ApprovedInterconnect::decode(value.as_ref())
            .ok()
            .filter(|k| k.cluster_id == key);
        let Some(request) = kept.as_ref().and_then(|k| k.request.as_ref()) else {
            warn!(%key, "unreadable approval in {SNAPSHOT_BUCKET} ignored");
            continue;
        };
        registry.restore(&key, request.clone());
        restored.extend(kept);
    }
    Ok(restored)
}

/// The dialer JWTs of the restored seed-dialed approvals that are still valid for the key the
/// seed derives for their request: cluster → (request id, JWT).
fn restored_dial_jwts(
    seed: &Seed,
    restored: Vec<ApprovedInterconnect>,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for kept in restored {
        let Some(request) = kept.request else {
            continue;
        };
        if kept.dial_jwt.is_empty() || request.direction != LinkDirection::SeedDials as i32 {
            continue;
        }
        let fits = seed
            .signer
            .dialer_keys(&kept.cluster_id, &request.request_id)
            .map_err(|e| format!("{e:#}"))
            .and_then(|keys| check_leaf_signed(&kept.dial_jwt, &keys.leaf_user.public_key()));
        match fits {
            Ok(()) => {
                out.insert(kept.cluster_id, (request.request_id, kept.dial_jwt));
            }
            Err(reason) => {
                info!(cluster = %kept.cluster_id, %reason, "kept dialer JWT not used: the leaf sends a new one");
            }
        }
    }
    out
}

/// Keeps `r` as its cluster's approval, with `dial_jwt` when given, else with the JWT already
/// kept for the same request.
async fn keep_approval(
    store: &kv::Store,
    r: &interconnect::Request,
    dial_jwt: Option<&str>,
) -> anyhow::Result<()> {
    let current = store.get(&r.cluster).await?;
    let dial_jwt = match dial_jwt {
        Some(jwt) => jwt.to_owned(),
        None => current
            .as_deref()
            .and_then(|v| ApprovedInterconnect::decode(v).ok())
            .filter(|kept| kept.request.as_ref() == Some(&r.body))
            .map(|kept| kept.dial_jwt)
            .unwrap_or_default(),
    };
    let value = ApprovedInterconnect {
        cluster_id: r.cluster.clone(),
        request: Some(r.body.clone()),
        dial_jwt,
    }
    .encode_to_vec();
    if current.as_deref() != Some(value.as_slice()) {
        store.put(&r.cluster, value.into()).await?;
    }
    Ok(())
}

/// After the replay: keeps every approved request, forgets the clusters that have none.
async fn sync_snapshot(shared: &Shared) -> anyhow::Result<()> {
    let approved: Vec<interconnect::Request> = shared.registry().approved().cloned().collect();
    for r in &approved {
        keep_approval(&shared.snapshot, r, None).await?;
    }
    let mut keys = shared.snapshot.keys().await?;
    let mut stale = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        if !approved.iter().any(|a| a.cluster == key) {
            stale.push(key);
        }
    }
    for key in stale {
        shared.snapshot.delete(&key).await?;
    }
    Ok(())
}

/// Sources every approved and static cluster, drops the revoked ones, and tells the link
/// monitor what to watch.
async fn reconcile(shared: &Shared) {
    let _one_at_a_time = shared.reconciling.lock().await;
    let (wanted, revoked) = {
        let r = shared.registry();
        let dialed = locked(&shared.dialed).clone();
        let mut wanted: BTreeMap<String, crate::links::Route> = r
            .approved()
            .filter(|a| !a.seed_dials() || dialed.contains(&(a.cluster.clone(), a.id().to_owned())))
            .map(|a| {
                let route = crate::links::Route {
                    direction: if a.seed_dials() {
                        LinkDirection::SeedDials
                    } else {
                        LinkDirection::LeafDials
                    },
                    via: a.trunk().unwrap_or_default().to_owned(),
                };
                (a.cluster.clone(), route)
            })
            .collect();
        for c in &shared.seed.static_leaves {
            if !r.is_revoked(c.as_str()) {
                wanted
                    .entry(c.to_string())
                    .or_insert_with(crate::links::Route::leaf_dials);
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
    *locked(&shared.seed.watched) = wanted;
    shared.dialer_wake.notify_one();
}

/// Keeps the dialer in step with the approved seed-dialed clusters whose leaves sent the user
/// JWT for it, on every change and every [`DIALER_CHECK`].
async fn dial_loop(
    shared: Arc<Shared>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(dialer) = &shared.seed.dialer else {
        return Ok(());
    };
    while !*ready.borrow_and_update() {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = ready.changed() => if changed.is_err() { return Ok(()) },
        }
    }
    let mut applied = crate::dialer::Applied::default();
    // Cluster → (request id, JWT) as kept in the approvals bucket by this loop.
    let mut kept: BTreeMap<String, (String, String)> = locked(&shared.dial_jwts).clone();
    let mut tick = tokio::time::interval(DIALER_CHECK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = shared.dialer_wake.notified() => {}
            _ = tick.tick() => {}
        }
        let wanted = dialer_wanted(&shared);
        if let Err(e) = crate::dialer::reconcile(
            dialer,
            &shared.seed.signer,
            shared.seed.link_validity,
            &wanted,
            &mut applied,
        )
        .await
        {
            error!(
                error = format!("{e:#}"),
                "dialer not reconciled; trying again"
            );
            continue;
        }
        keep_dial_jwts(&shared, &wanted, &mut kept).await;
        await_dialed(&shared, dialer, &wanted, &shutdown).await;
    }
}

/// Keeps the newest JWT of each dialed leaf with its approval, so that a seed whose dialer lost
/// its files dials it again at once.
async fn keep_dial_jwts(
    shared: &Shared,
    wanted: &[crate::dialer::Wanted],
    kept: &mut BTreeMap<String, (String, String)>,
) {
    for w in wanted {
        let entry = (w.request_id.clone(), w.leaf_jwt.clone());
        if kept.get(&w.cluster) == Some(&entry) {
            continue;
        }
        let approved = shared
            .registry()
            .approved()
            .find(|a| a.cluster == w.cluster && a.id() == w.request_id)
            .cloned();
        let Some(r) = approved else { continue };
        match keep_approval(&shared.snapshot, &r, Some(&w.leaf_jwt)).await {
            Ok(()) => {
                kept.insert(w.cluster.clone(), entry);
            }
            Err(e) => {
                warn!(cluster = %w.cluster, error = format!("{e:#}"), "dialer JWT not kept; trying again");
            }
        }
    }
}

/// How long a newly dialed leaf is waited for before the next regular check.
const DIAL_WAIT: Duration = Duration::from_secs(30);

/// Waits (up to [`DIAL_WAIT`]) until the dialer holds every wanted leaf it never held, and
/// sources each one as soon as it does.
async fn await_dialed(
    shared: &Shared,
    dialer: &crate::dialer::Dialer,
    wanted: &[crate::dialer::Wanted],
    shutdown: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + DIAL_WAIT;
    loop {
        let missing: Vec<&crate::dialer::Wanted> = {
            let dialed = locked(&shared.dialed);
            wanted
                .iter()
                .filter(|w| !dialed.contains(&(w.cluster.clone(), w.request_id.clone())))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        match crate::dialer::linked_leaves(dialer).await {
            Ok(linked) => {
                let new: Vec<&&crate::dialer::Wanted> = missing
                    .iter()
                    .filter(|w| linked.contains(&w.cluster))
                    .collect();
                if !new.is_empty() {
                    {
                        let mut dialed = locked(&shared.dialed);
                        for w in &new {
                            info!(cluster = %w.cluster, "the dialer holds the leaf: sourcing its events");
                            dialed.insert((w.cluster.clone(), w.request_id.clone()));
                        }
                    }
                    reconcile(shared).await;
                    continue;
                }
            }
            Err(e) => warn!(error = format!("{e:#}"), "the dialer's leaves not read"),
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The links the dialer should hold: approved seed-dialed requests whose leaf sent its JWT.
fn dialer_wanted(shared: &Shared) -> Vec<crate::dialer::Wanted> {
    let jwts = locked(&shared.dial_jwts).clone();
    shared
        .registry()
        .approved()
        .filter(|a| a.seed_dials())
        .filter_map(|a| {
            let leaf_jwt = match jwts.get(&a.cluster) {
                Some((id, jwt)) if id == a.id() => jwt.clone(),
                // After a restart: what the dialer already holds, while it still fits.
                _ => {
                    let dialer = shared.seed.dialer.as_ref()?;
                    let jwt = crate::dialer::stored_leaf_jwt(&dialer.dir, &a.cluster)?;
                    let keys = shared.seed.signer.dialer_keys(&a.cluster, a.id()).ok()?;
                    check_leaf_signed(&jwt, &keys.leaf_user.public_key()).ok()?;
                    jwt
                }
            };
            Some(crate::dialer::Wanted {
                cluster: a.cluster.clone(),
                request_id: a.id().to_owned(),
                leaf_url: a.body.leaf_url.clone(),
                leaf_jwt,
            })
        })
        .collect()
}

/// Pushes the Canopy account JWT with every revoked link user to each resolver.
async fn push_revocations(shared: &Shared) {
    let mut revoked = shared.registry().revoked_users().clone();
    // The link users the dialer held for revoked seed-dialed clusters.
    let dialed: Vec<(interconnect::Request, i64)> = shared.registry().revoked_dialed().to_vec();
    for (r, at) in dialed {
        match shared.seed.signer.dialer_keys(&r.cluster, r.id()) {
            Ok(keys) => {
                revoked.insert(keys.link_user.public_key(), at);
            }
            Err(e) => {
                error!(cluster = %r.cluster, error = format!("{e:#}"), "dialer link user not revoked")
            }
        }
    }
    let iat = {
        let mut last = locked(&shared.last_iat);
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
    if request.direction == LinkDirection::SeedDials as i32 && shared.seed.dialer.is_none() {
        return invalid(
            "this seed dials no leaves (its gateway runs without --dial-dir): ask with leaf-dials",
        );
    }
    let decided = shared.registry().answer(cluster, &request);
    match decided {
        Answer::Record => {
            let first = locked(&shared.recorded).insert(request.request_id.clone());
            if first {
                let env = envelope::new(
                    &cluster_id,
                    "gateway-leafnode",
                    Body::InterconnectRequested(request.clone()),
                );
                if let Err(e) = canopy_kit::publish::publish(&shared.js, &env).await {
                    locked(&shared.recorded).remove(&request.request_id);
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
        Answer::Approved(r) if r.seed_dials() => dial_approval(shared, &r, &request),
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

/// The approval of a seed-dialed request: the key the dialer connects with and how long the
/// leaf should sign for; takes the JWT the leaf signed for it when the request carries one.
fn dial_approval(
    shared: &Shared,
    r: &interconnect::Request,
    request: &InterconnectRequested,
) -> InterconnectReply {
    let keys = match shared.seed.signer.dialer_keys(&r.cluster, r.id()) {
        Ok(k) => k,
        Err(e) => {
            error!(cluster = %r.cluster, error = format!("{e:#}"), "dialer keys not derived");
            return invalid("the seed could not derive the dialer's keys");
        }
    };
    let key = keys.leaf_user.public_key();
    if !request.seed_user_jwt.is_empty() {
        match check_leaf_signed(&request.seed_user_jwt, &key) {
            Ok(()) => {
                let changed = {
                    let mut jwts = locked(&shared.dial_jwts);
                    let entry = (r.id().to_owned(), request.seed_user_jwt.clone());
                    jwts.insert(r.cluster.clone(), entry.clone()) != Some(entry)
                };
                if changed {
                    info!(cluster = %r.cluster, "the leaf signed the dialer's user: the dialer links it");
                    shared.dialer_wake.notify_one();
                }
            }
            Err(reason) => return invalid(reason),
        }
    }
    let validity = i64::try_from(shared.seed.link_validity.as_secs()).unwrap_or(i64::MAX);
    InterconnectReply {
        status: InterconnectStatus::Approved as i32,
        seed_user_public_key: key,
        expires_at: Some(prost_types::Timestamp {
            seconds: now_s().saturating_add(validity),
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Checks a user JWT a leaf signed for the dialer: signature, subject, a LEAFNODE user, not
/// expired.
fn check_leaf_signed(token: &str, key: &str) -> Result<(), String> {
    use canopy_auth::nats::jwt;
    let claims: jwt::Claims<jwt::UserClaims> =
        jwt::decode(token).map_err(|e| format!("seed_user_jwt: {e:#}"))?;
    if claims.sub != key {
        return Err("seed_user_jwt is for another key than the one the seed named".to_owned());
    }
    if claims.nats.allowed_connection_types != ["LEAFNODE"] {
        return Err("seed_user_jwt must allow LEAFNODE connections only".to_owned());
    }
    if claims.exp.is_some_and(|exp| exp <= now_s()) {
        return Err("seed_user_jwt has expired".to_owned());
    }
    Ok(())
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
