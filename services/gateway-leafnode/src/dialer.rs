//! The seed's dialer: links to leaves that the seed dials.
//!
//! The dialer is a nats-server of its own (`nats-config/dialer.conf`) beside this gateway; it
//! includes `dial/remotes.conf`, which this module writes. Per approved seed-dialed cluster it
//! has an account `DIAL-<cluster>` (no JetStream, no users) and two remotes bound to it: one to
//! the leaf's leafnode listener, as the user the leaf signed for the key named in the approval
//! (the dialer is the leaf's hub), and one to the seed's leafnode port as the cluster's link
//! user. The seed thus checks the link user's permissions on everything the leaf sends, exactly
//! as when the leaf dials, whatever the leaf's nats-server claims; and no two leaves meet in
//! one account on the dialer.
//!
//! Keys come from [`LinkSigner::dialer_keys`] (derived per request: nothing to keep); the
//! account JWTs are pushed to the dialer's resolver before a reload names them; the link user's
//! JWT is renewed at half-life; the leaf renews the JWT it signed and sends it again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use canopy_auth::nats::{DialerRemote, LinkSigner, dialer_remotes_conf, jwt};
use tracing::{info, warn};

use crate::interconnect::now_s;

/// What the seed side needs to dial leaves.
pub struct Dialer {
    /// The `dial/` folder beside the dialer's configuration.
    pub dir: PathBuf,
    /// `nats-leaf://` URL of the seed's leafnode listener, as the dialer reaches it.
    pub seed_leaf_url: String,
    /// System user on the dialer (account pushes, reloads).
    pub client: async_nats::Client,
}

/// One link the dialer should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub cluster: String,
    pub request_id: String,
    pub leaf_url: String,
    /// The user JWT the leaf signed for the dialer's key.
    pub leaf_jwt: String,
}

/// What the dialer was last brought to.
#[derive(Debug, Default)]
pub struct Applied {
    /// The server the state below belongs to (a restarted dialer starts over).
    server_id: String,
    accounts: BTreeSet<String>,
    remotes: Option<String>,
}

/// Makes the dialer hold exactly `wanted`: accounts pushed, credentials written, remotes
/// written and the server reloaded when they changed (or the server is a new one).
///
/// # Errors
/// When a file cannot be written or the dialer refuses an account or the reload; the next
/// round tries again.
pub async fn reconcile(
    dialer: &Dialer,
    signer: &LinkSigner,
    link_validity: Duration,
    wanted: &[Wanted],
    applied: &mut Applied,
) -> anyhow::Result<()> {
    dialer
        .client
        .flush()
        .await
        .context("the dialer does not answer")?;
    let server_id = dialer.client.server_info().server_id;
    if server_id != applied.server_id {
        *applied = Applied {
            server_id: server_id.clone(),
            ..Applied::default()
        };
    }
    std::fs::create_dir_all(&dialer.dir)
        .with_context(|| format!("failed to create {}", dialer.dir.display()))?;
    let mut remotes = Vec::new();
    for w in wanted {
        let keys = signer.dialer_keys(&w.cluster, &w.request_id)?;
        let account = keys.account.public_key();
        if !applied.accounts.contains(&account) {
            let jwt = signer.dialer_account_jwt(&w.cluster, &keys.account, now_s())?;
            crate::interconnect::push_claims(&dialer.client, &jwt)
                .await
                .with_context(|| format!("the dialer refused the account of {}", w.cluster))?;
            applied.accounts.insert(account.clone());
        }
        let leaf_creds = dialer.dir.join(format!("{}.leaf.creds", w.cluster));
        let seed_creds = dialer.dir.join(format!("{}.seed.creds", w.cluster));
        let leaf_seed = seed_of(&keys.leaf_user)?;
        write_if_changed(&leaf_creds, &jwt::creds_file(&w.leaf_jwt, &leaf_seed))?;
        if renewal_due(&seed_creds, &keys.link_user.public_key()) {
            let validity = i64::try_from(link_validity.as_secs()).unwrap_or(i64::MAX);
            let link_jwt = signer.link_jwt(
                &w.cluster,
                &keys.link_user.public_key(),
                now_s().saturating_add(validity),
            )?;
            write_if_changed(
                &seed_creds,
                &jwt::creds_file(&link_jwt, &seed_of(&keys.link_user)?),
            )?;
        }
        remotes.push(DialerRemote {
            cluster: w.cluster.clone(),
            leaf_url: w.leaf_url.clone(),
            leaf_creds,
            seed_url: dialer.seed_leaf_url.clone(),
            seed_creds,
            account,
        });
    }
    let text = dialer_remotes_conf(&remotes);
    if applied.remotes.as_deref() != Some(text.as_str()) {
        write_if_changed(&dialer.dir.join("remotes.conf"), &text)?;
        crate::interconnect::system_request(
            &dialer.client,
            format!("$SYS.REQ.SERVER.{server_id}.RELOAD"),
            String::new(),
        )
        .await
        .context("the dialer did not reload")?;
        let clusters: Vec<&str> = wanted.iter().map(|w| w.cluster.as_str()).collect();
        info!(?clusters, "dialer reloaded: it dials these leaves");
        applied.remotes = Some(text);
    }
    remove_stale_creds(&dialer.dir, wanted);
    Ok(())
}

fn seed_of(key: &nkeys::KeyPair) -> anyhow::Result<String> {
    key.seed()
        .map_err(|e| anyhow::anyhow!("failed to encode a seed: {e}"))
}

/// Whether the link credentials in `path` are missing, for another key, or past half-life.
fn renewal_due(path: &Path, key: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    let Ok((token, _)) = jwt::parse_creds(&text) else {
        return true;
    };
    let Ok(claims) = jwt::decode::<jwt::UserClaims>(&token) else {
        return true;
    };
    match claims.exp {
        _ if claims.sub != key => true,
        Some(exp) => now_s() >= claims.iat + (exp - claims.iat) / 2,
        None => false,
    }
}

/// Deletes the credentials of clusters no longer dialed.
fn remove_stale_creds(dir: &Path, wanted: &[Wanted]) {
    let keep: BTreeMap<String, ()> = wanted
        .iter()
        .flat_map(|w| {
            [
                (format!("{}.leaf.creds", w.cluster), ()),
                (format!("{}.seed.creds", w.cluster), ()),
            ]
        })
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".creds")
            && !keep.contains_key(&name)
            && let Err(err) = std::fs::remove_file(e.path())
        {
            warn!(file = %e.path().display(), error = %err, "stale dialer credentials not removed");
        }
    }
}

/// Writes `text` to `path` (0600, atomically) unless it already holds it.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    crate::leaf_link::write_secret(path, text)
}

/// The server names of the leaves the dialer holds a connection to (`$SYS.REQ.SERVER.<id>.LEAFZ`;
/// a leaf's server name is its cluster id).
///
/// # Errors
/// When the dialer does not answer or the answer is unreadable.
pub async fn linked_leaves(dialer: &Dialer) -> anyhow::Result<BTreeSet<String>> {
    #[derive(serde::Deserialize)]
    struct Reply {
        data: Option<Data>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(default)]
        leafs: Vec<Leaf>,
    }
    #[derive(serde::Deserialize)]
    struct Leaf {
        #[serde(default)]
        name: String,
    }
    dialer
        .client
        .flush()
        .await
        .context("the dialer does not answer")?;
    let id = dialer.client.server_info().server_id;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        dialer
            .client
            .request(format!("$SYS.REQ.SERVER.{id}.LEAFZ"), "".into()),
    )
    .await
    .context("no answer to LEAFZ from the dialer in 5 s")?
    .context("LEAFZ of the dialer failed")?;
    let reply: Reply =
        serde_json::from_slice(&reply.payload).context("unreadable LEAFZ answer of the dialer")?;
    Ok(reply
        .data
        .map(|d| d.leafs.into_iter().map(|l| l.name).collect())
        .unwrap_or_default())
}

/// The user JWT the leaf signed that the dialer holds for `cluster`, if any.
pub fn stored_leaf_jwt(dir: &Path, cluster: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{cluster}.leaf.creds"))).ok()?;
    jwt::parse_creds(&text).ok().map(|(token, _)| token)
}

/// An empty `remotes.conf` in `dir` when there is none, so that the dialer can start.
///
/// # Errors
/// When it cannot be written.
pub fn init_dial_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join("remotes.conf");
    if !path.exists() {
        write_if_changed(&path, &dialer_remotes_conf(&[]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_credentials_go_and_wanted_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        for f in [
            "a.leaf.creds",
            "a.seed.creds",
            "b.leaf.creds",
            "remotes.conf",
        ] {
            std::fs::write(tmp.path().join(f), "x").unwrap();
        }
        let wanted = [Wanted {
            cluster: "a".into(),
            request_id: "r".into(),
            leaf_url: "nats-leaf://a:1".into(),
            leaf_jwt: "j".into(),
        }];
        remove_stale_creds(tmp.path(), &wanted);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.leaf.creds", "a.seed.creds", "remotes.conf"]);
    }

    #[test]
    fn credentials_are_renewed_when_missing_foreign_or_past_half_life() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.seed.creds");
        let user = nkeys::KeyPair::new_user();
        assert!(renewal_due(&path, &user.public_key()));
        let account = canopy_auth::nats::Account::generate("X", false);
        let write = |iat_offset: i64, exp_offset: i64| {
            let now = now_s();
            let token = jwt::encode(
                &account.signing,
                &user.public_key(),
                "u",
                now + iat_offset,
                Some(now + exp_offset),
                jwt::UserClaims {
                    permissions: jwt::Permissions::default(),
                    allowed_connection_types: Vec::new(),
                    src: Vec::new(),
                    subs: -1,
                    data: -1,
                    payload: -1,
                    issuer_account: account.public_key(),
                    kind: "user".into(),
                    version: 2,
                },
            )
            .unwrap();
            std::fs::write(&path, jwt::creds_file(&token, "SU")).unwrap();
        };
        write(0, 1000);
        assert!(!renewal_due(&path, &user.public_key()));
        assert!(renewal_due(&path, &nkeys::KeyPair::new_user().public_key()));
        write(-800, 200);
        assert!(renewal_due(&path, &user.public_key()));
    }
}
