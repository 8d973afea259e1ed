//! The leaf side of an interconnect.
//!
//! The gateway keeps its link state in `--link-dir` (the `link/` folder beside the leaf's
//! nats-server configuration, which includes `link/remotes.conf`):
//!
//! ```text
//! link-user.nk   the link user's nkey seed, generated here (0600); only its public key leaves
//! link-xkey.nk   the curve key the seed seals the credentials to (0600)
//! request-id     this cluster's current request
//! link.creds     the approved link user: the JWT from the seed + the seed above (0600)
//! remotes.conf   `remotes: []` until approved, then the remote to the uplink
//! seed-user.jwt  seed-dials: the JWT this gateway signed for the seed's dialer
//! ```
//!
//! When the seed dials (`--direction seed-dials`), `remotes.conf` holds the leafnode listener
//! from the start and no remote; the approval names the key the seed's dialer connects with,
//! this gateway signs a user JWT for it in the leaf's own account (the `dial` row of the
//! permission table, valid as long as the seed asked) and sends it in every later request; the
//! dialer then connects. It signs anew at half-life or when the seed names another key.
//!
//! Until approved it asks the seed (or its trunk) every `--request-interval` with its bootstrap
//! credential; once approved it writes `link.creds` and `remotes.conf` and asks its nats-server
//! to reload (`$SYS.REQ.SERVER.<id>.RELOAD`, with the leaf's system user), which then dials the
//! uplink. It asks again at half the credentials' lifetime to renew them. A rejected request is
//! reported and not asked again; a revoked cluster removes its link.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use canopy_auth::nats::{jwt, leaf_listener_conf, remotes_conf, sealed};
use canopy_kit::config::NatsArgs;
use canopy_kit::proto::event::v1::{
    InterconnectReply, InterconnectRequested, InterconnectStatus, LinkDirection,
};
use canopy_kit::subject::ClusterId;
use nkeys::KeyPair;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::interconnect::now_s;
use tracing::{debug, error, info, warn};

/// What the leaf side needs.
#[derive(Debug, Clone)]
pub struct LeafLink {
    pub cluster: ClusterId,
    pub link_dir: PathBuf,
    /// Client URL of the seed or trunk the request goes to.
    pub bootstrap_url: String,
    pub bootstrap_creds: PathBuf,
    /// `nats-leaf://` URL the leaf's nats-server dials once approved.
    pub uplink_url: String,
    /// The leaf's nats-server and its system user (reloads).
    pub nats_url: String,
    pub system_creds: PathBuf,
    /// Public key of the leaf's own account (the remote binds it).
    pub account: String,
    pub direction: LinkDirection,
    pub trunk: Option<String>,
    /// Seed-dials: where the seed's dialer reaches the leaf's listener, the listener's address,
    /// and the leaf account's signing key.
    pub leaf_url: Option<String>,
    pub listen: String,
    pub signer: Option<std::sync::Arc<canopy_auth::nats::LeafSigner>>,
    pub labels: HashMap<String, String>,
    pub request_interval: Duration,
    /// How often a linked leaf asks whether it still is (a revoked one removes its link).
    pub status_interval: Duration,
}

/// The keys and request id, created once and kept in the link dir.
struct Identity {
    user: KeyPair,
    xkey: nkeys::XKey,
    request_id: String,
}

/// Runs until `shutdown`.
///
/// # Errors
/// When the link dir cannot be read or written.
pub async fn run(link: LeafLink, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&link.link_dir)
        .with_context(|| format!("failed to create {}", link.link_dir.display()))?;
    let mut bootstrap: Option<async_nats::Client> = None;
    let mut applied: Option<String> = None;
    loop {
        let wait = match step(&link, &mut bootstrap, &mut applied, &shutdown).await {
            Ok(wait) => wait,
            Err(e) => {
                error!(cluster = %link.cluster, error = format!("{e:#}"), "link not set up; trying again");
                link.request_interval.max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {
                if let Some(c) = bootstrap.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.drain()).await;
                }
                return Ok(());
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: make the server's remote match the credentials, ask when there are none or they
/// are due for renewal; returns how long to wait before the next round.
async fn step(
    link: &LeafLink,
    bootstrap: &mut Option<async_nats::Client>,
    applied: &mut Option<String>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Duration> {
    let id = identity(&link.link_dir)?;
    if link.direction == LinkDirection::SeedDials {
        ensure_remote(link, false, applied).await?;
        let signed = std::fs::read_to_string(link.link_dir.join("seed-user.jwt")).ok();
        return match ask(link, &id, signed.as_deref(), bootstrap, shutdown).await {
            Some(reply) => handle(link, &id, reply, applied).await,
            None => Ok(link.request_interval),
        };
    }
    if let Some(exp) = current_link(&link.link_dir, &id)? {
        // Linked: make sure the server has the remote; ask now and then whether the link still
        // stands, and take fresh credentials from half their lifetime on.
        ensure_remote(link, true, applied).await?;
        let now = now_s();
        let iat = link_issued_at(&link.link_dir).unwrap_or(now);
        let renew_due = now >= iat + (exp - iat) / 2;
        return match ask(link, &id, None, bootstrap, shutdown).await {
            Some(reply) if reply.status == InterconnectStatus::Approved as i32 && !renew_due => {
                debug!(cluster = %link.cluster, "link still approved");
                Ok(link.status_interval)
            }
            Some(reply) => handle(link, &id, reply, applied)
                .await
                .map(|wait| wait.max(link.status_interval.min(link.request_interval))),
            None => Ok(link.request_interval),
        };
    }
    ensure_remote(link, false, applied).await?;
    match ask(link, &id, None, bootstrap, shutdown).await {
        Some(reply) => handle(link, &id, reply, applied).await,
        None => Ok(link.request_interval),
    }
}

/// Acts on an answer; returns how long to wait before asking again.
async fn handle(
    link: &LeafLink,
    id: &Identity,
    reply: InterconnectReply,
    applied: &mut Option<String>,
) -> anyhow::Result<Duration> {
    let cluster = &link.cluster;
    match InterconnectStatus::try_from(reply.status) {
        Ok(InterconnectStatus::Pending) => {
            info!(%cluster, request_id = %id.request_id,
                "interconnect pending: an admin approves it with `canopyctl interconnects approve {}`",
                id.request_id);
            Ok(link.request_interval)
        }
        Ok(InterconnectStatus::Approved) if link.direction == LinkDirection::SeedDials => {
            sign_for_dialer(link, &reply)
        }
        Ok(InterconnectStatus::Approved) => {
            let jwt = sealed::open(&reply.sealed_jwt, &id.xkey, &reply.sealer_xkey_public_key)
                .context("the approved credentials could not be opened")?;
            let jwt = String::from_utf8(jwt).context("the approved credentials are not text")?;
            let claims: jwt::Claims<jwt::UserClaims> =
                jwt::decode(&jwt).context("the approved credentials hold no user JWT")?;
            if claims.sub != id.user.public_key() {
                bail!("the approved credentials are for another user key");
            }
            let seed = id
                .user
                .seed()
                .map_err(|e| anyhow::anyhow!("failed to encode the link seed: {e}"))?;
            write_secret(
                &link.link_dir.join("link.creds"),
                &jwt::creds_file(&jwt, &seed),
            )?;
            info!(%cluster, expires_at = claims.exp.unwrap_or(0), "interconnect approved: link credentials written");
            ensure_remote(link, true, applied).await?;
            Ok(Duration::ZERO)
        }
        Ok(InterconnectStatus::Rejected) => {
            error!(%cluster, request_id = %id.request_id, reason = %reply.reason,
                "interconnect rejected; remove the link dir's request-id and restart to ask again");
            Ok(Duration::from_secs(24 * 3600))
        }
        Ok(InterconnectStatus::Revoked) => {
            error!(%cluster, "cluster revoked by the seed: link removed; a new request follows");
            for f in [
                "link.creds",
                "seed-user.jwt",
                "link-user.nk",
                "link-xkey.nk",
                "request-id",
            ] {
                let _ = std::fs::remove_file(link.link_dir.join(f));
            }
            ensure_remote(link, false, applied).await?;
            Ok(link.request_interval)
        }
        _ => {
            error!(%cluster, reason = %reply.reason, "interconnect request refused as invalid");
            Ok(link.request_interval.max(Duration::from_secs(60)))
        }
    }
}

/// Seed-dials, approved: signs the dialer's user unless the JWT already sent is for the key
/// the seed named and not past half-life; returns how long to wait before asking again (at
/// once after signing, to hand it over).
fn sign_for_dialer(link: &LeafLink, reply: &InterconnectReply) -> anyhow::Result<Duration> {
    let cluster = &link.cluster;
    let key = reply.seed_user_public_key.as_str();
    canopy_auth::nats::check_user_key(key).context("the approval names no dialer key")?;
    let path = link.link_dir.join("seed-user.jwt");
    let current = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| jwt::decode::<jwt::UserClaims>(&t).ok());
    let now = now_s();
    let fresh = current
        .is_some_and(|c| c.sub == key && c.exp.is_none_or(|exp| now < c.iat + (exp - c.iat) / 2));
    if fresh {
        debug!(%cluster, "seed-dialed link still approved");
        return Ok(link.status_interval);
    }
    let signer = link
        .signer
        .as_ref()
        .context("seed-dials needs the leaf account's signing key")?;
    let exp = reply
        .expires_at
        .as_ref()
        .map_or(now + 30 * 24 * 3600, |t| t.seconds);
    let token = signer.dial_jwt(cluster.as_str(), key, exp)?;
    write_secret(&path, &token)?;
    info!(%cluster, dialer_key = %key, expires_at = exp,
        "interconnect approved: signed the seed's dialer user; it connects to this leaf's listener");
    Ok(Duration::ZERO)
}

/// Sends the request (with the JWT signed for the seed's dialer, when there is one); `None`
/// when there is no answer (logged).
async fn ask(
    link: &LeafLink,
    id: &Identity,
    seed_user_jwt: Option<&str>,
    bootstrap: &mut Option<async_nats::Client>,
    shutdown: &CancellationToken,
) -> Option<InterconnectReply> {
    if bootstrap.is_none() {
        let args = NatsArgs {
            url: link.bootstrap_url.clone(),
            creds: Some(link.bootstrap_creds.clone()),
        };
        let name = format!("canopy-bootstrap.{}", link.cluster);
        let connected = tokio::select! {
            () = shutdown.cancelled() => return None,
            c = canopy_kit::nats::connect(&args, &name) => c,
        };
        match connected {
            Ok(c) => *bootstrap = Some(c),
            Err(e) => {
                warn!(url = %link.bootstrap_url, error = format!("{e:#}"), "bootstrap connection failed");
                return None;
            }
        }
    }
    let client = bootstrap.as_ref()?;
    let request = InterconnectRequested {
        request_id: id.request_id.clone(),
        link_user_public_key: id.user.public_key(),
        xkey_public_key: id.xkey.public_key(),
        labels: link.labels.clone(),
        direction: link.direction as i32,
        trunk: link.trunk.clone().unwrap_or_default(),
        leaf_url: link.leaf_url.clone().unwrap_or_default(),
        gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
        seed_user_jwt: seed_user_jwt.unwrap_or_default().trim().to_owned(),
    };
    let subject = crate::interconnect::request_subject(link.cluster.as_str());
    match tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, request.encode_to_vec().into()),
    )
    .await
    {
        Ok(Ok(m)) => match InterconnectReply::decode(m.payload.as_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "unreadable interconnect answer");
                None
            }
        },
        Ok(Err(e)) => {
            warn!(error = %e, "interconnect request not answered (is the seed's gateway-leafnode running?)");
            None
        }
        Err(_) => {
            warn!("interconnect request not answered in 10 s");
            None
        }
    }
}

/// Creates `dir` and an unlinked `remotes.conf` in it when there is none; with `listen` (the
/// seed dials), one with that leafnode listener, replacing any other.
///
/// # Errors
/// When they cannot be written.
pub fn init_link_dir(dir: &Path, listen: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join("remotes.conf");
    let text = match listen {
        Some(listen) => leaf_listener_conf(listen),
        None if path.exists() => return Ok(()),
        None => remotes_conf(None),
    };
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// The identity in `dir`, created on first use.
fn identity(dir: &Path) -> anyhow::Result<Identity> {
    let user_path = dir.join("link-user.nk");
    let xkey_path = dir.join("link-xkey.nk");
    let id_path = dir.join("request-id");
    let user = match std::fs::read_to_string(&user_path) {
        Ok(s) => KeyPair::from_seed(s.trim())
            .map_err(|e| anyhow::anyhow!("{} holds no user seed: {e}", user_path.display()))?,
        Err(_) => {
            let k = KeyPair::new_user();
            let seed = k
                .seed()
                .map_err(|e| anyhow::anyhow!("failed to encode a seed: {e}"))?;
            write_secret(&user_path, &format!("{seed}\n"))?;
            k
        }
    };
    let xkey = match std::fs::read_to_string(&xkey_path) {
        Ok(s) => sealed::from_seed(&s)
            .with_context(|| format!("{} holds no xkey seed", xkey_path.display()))?,
        Err(_) => {
            let k = sealed::generate();
            write_secret(&xkey_path, &format!("{}\n", sealed::seed(&k)?))?;
            k
        }
    };
    let request_id = match std::fs::read_to_string(&id_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => {
            let id = uuid::Uuid::now_v7().to_string();
            write_secret(&id_path, &format!("{id}\n"))?;
            id
        }
    };
    Ok(Identity {
        user,
        xkey,
        request_id,
    })
}

/// The expiry (unix seconds) of the link credentials in `dir`, when they exist, belong to the
/// current key and have not expired.
fn current_link(dir: &Path, id: &Identity) -> anyhow::Result<Option<i64>> {
    let Ok(text) = std::fs::read_to_string(dir.join("link.creds")) else {
        return Ok(None);
    };
    let Ok((jwt, _)) = jwt::parse_creds(&text) else {
        warn!("link.creds is unreadable; asking again");
        return Ok(None);
    };
    let claims: jwt::Claims<jwt::UserClaims> = match jwt::decode(&jwt) {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    if claims.sub != id.user.public_key() {
        return Ok(None);
    }
    match claims.exp {
        Some(exp) if exp > now_s() => Ok(Some(exp)),
        Some(_) => Ok(None),
        None => Ok(Some(i64::MAX)),
    }
}

fn link_issued_at(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join("link.creds")).ok()?;
    let (jwt, _) = jwt::parse_creds(&text).ok()?;
    let claims: jwt::Claims<jwt::UserClaims> = jwt::decode(&jwt).ok()?;
    Some(claims.iat)
}

/// Writes `remotes.conf` for the linked (or not) state and reloads the server unless it
/// already runs with that text (`applied`, what the last successful reload saw).
async fn ensure_remote(
    link: &LeafLink,
    linked: bool,
    applied: &mut Option<String>,
) -> anyhow::Result<()> {
    let path = link.link_dir.join("remotes.conf");
    let creds = link.link_dir.join("link.creds");
    let text = if link.direction == LinkDirection::SeedDials {
        leaf_listener_conf(&link.listen)
    } else if linked {
        remotes_conf(Some((&link.uplink_url, &creds, &link.account)))
    } else {
        remotes_conf(None)
    };
    if applied.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = path.with_extension("conf.tmp");
        std::fs::write(&tmp, &text)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    reload(link).await?;
    *applied = Some(text);
    info!(cluster = %link.cluster, linked, uplink = %link.uplink_url, "leafnode remote updated and nats-server reloaded");
    Ok(())
}

/// Asks the leaf's nats-server to reload its configuration.
async fn reload(link: &LeafLink) -> anyhow::Result<()> {
    let client = crate::interconnect::system_client(&link.nats_url, &link.system_creds)
        .await
        .context("failed to connect to the leaf's nats-server as its system user")?;
    // The server's INFO (with its id) has arrived once a round trip has.
    client
        .flush()
        .await
        .context("the leaf's nats-server did not answer")?;
    let id = client.server_info().server_id;
    if id.is_empty() {
        bail!("the leaf's nats-server did not say its id");
    }
    let result = crate::interconnect::system_request(
        &client,
        format!("$SYS.REQ.SERVER.{id}.RELOAD"),
        String::new(),
    )
    .await;
    let _ = client.drain().await;
    result.context("the leaf's nats-server did not reload")
}

/// Writes `text` to `path` atomically (a temp file beside it, synced, renamed), readable by the
/// owner only.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write {}", path.display()))
}
