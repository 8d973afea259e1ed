//! NATS decentralized JWT auth, minted by Canopy itself.
//!
//! Keys: an operator (identity + signing key), the system account `SYS`, the seed's account
//! `CANOPY` (identity + signing key) and, per leaf cluster, its own account `LEAF-<cluster>`
//! (identity + signing key), which only that leaf's nats-server knows: credentials of one leaf
//! are refused by the seed and by every other leaf. Users are signed by their account's signing
//! key with the permissions of [`perms::USERS`].
//!
//! [`init`] writes a directory that the servers and services run from:
//!
//! ```text
//! operator.jwt
//! keys/*.nk                         seeds (0600): operator, SYS, CANOPY, LEAF-<cluster>
//! seed/resolver/<account>.jwt       full resolver dir of the seed (SYS, CANOPY)
//! seed/nats.env                     CANOPY_NATS_* variables for nats-config/seed.conf
//! seed/<user>.creds                 gateway, ingestion, api, cnc, doctor, admin, sys
//! leaves/<c>/resolver/<account>.jwt full resolver dir of leaf <c> (SYS, LEAF-<c>)
//! leaves/<c>/nats.env               variables for nats-config/leaf.conf
//! leaves/<c>/<user>.creds           agent, gateway, admin (leaf); link, bootstrap (seed)
//! ```

pub mod jwt;
pub mod perms;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nkeys::KeyPair;

use jwt::{AccountClaims, AccountLimits, OperatorClaims, Permissions, UserClaims};
use perms::Home;

/// A user's credentials: its JWT and nkey seed.
#[derive(Debug, Clone)]
pub struct Creds {
    pub public_key: String,
    pub jwt: String,
    pub seed: String,
}

impl Creds {
    /// The `.creds` file text.
    pub fn file_text(&self) -> String {
        jwt::creds_file(&self.jwt, &self.seed)
    }
}

/// An account: identity key, signing key, name, JetStream on or off, revoked users.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub identity: KeyPair,
    pub signing: KeyPair,
    pub jetstream: bool,
    pub revocations: BTreeMap<String, i64>,
}

impl Account {
    pub fn generate(name: &str, jetstream: bool) -> Self {
        Self {
            name: name.to_owned(),
            identity: KeyPair::new_account(),
            signing: KeyPair::new_account(),
            jetstream,
            revocations: BTreeMap::new(),
        }
    }

    pub fn public_key(&self) -> String {
        self.identity.public_key()
    }

    /// A user of this account with `permissions`, valid until `exp` (unix seconds) if given.
    ///
    /// # Errors
    /// When signing fails.
    pub fn user(
        &self,
        name: &str,
        permissions: Permissions,
        connection_types: &[&str],
        exp: Option<i64>,
    ) -> anyhow::Result<Creds> {
        let user = KeyPair::new_user();
        let jwt = jwt::encode(
            &self.signing,
            &user.public_key(),
            name,
            now(),
            exp,
            UserClaims {
                permissions,
                allowed_connection_types: connection_types
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                subs: -1,
                data: -1,
                payload: -1,
                issuer_account: self.public_key(),
                kind: "user".into(),
                version: 2,
            },
        )?;
        Ok(Creds {
            public_key: user.public_key(),
            jwt,
            seed: user
                .seed()
                .map_err(|e| anyhow::anyhow!("failed to encode a user seed: {e}"))?,
        })
    }

    /// A user from the permission table.
    ///
    /// # Errors
    /// When signing fails.
    pub fn table_user(&self, spec: &perms::UserSpec, cluster: &str) -> anyhow::Result<Creds> {
        self.user(
            spec.name,
            perms::permissions(spec, cluster),
            &[spec.connection],
            None,
        )
    }

    /// Refuses `user` from now on (JWTs issued up to now); push the new account JWT to apply.
    pub fn revoke(&mut self, user_public_key: &str) {
        self.revocations.insert(user_public_key.to_owned(), now());
    }
}

/// The operator and the accounts every server trusts.
#[derive(Debug)]
pub struct Authority {
    pub operator: KeyPair,
    pub operator_signing: KeyPair,
    pub system: Account,
    pub canopy: Account,
}

impl Authority {
    /// Fresh keys for a new deployment.
    pub fn generate() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            operator_signing: KeyPair::new_operator(),
            system: Account::generate("SYS", false),
            canopy: Account::generate("CANOPY", true),
        }
    }

    /// Loads the keys [`init`] wrote under `dir/keys`.
    ///
    /// # Errors
    /// When a seed is missing or unreadable.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let keys = dir.join("keys");
        let account = |name: &str, js: bool| -> anyhow::Result<Account> {
            Ok(Account {
                name: name.to_owned(),
                identity: read_seed(&keys.join(format!("{name}.nk")))?,
                signing: read_seed(&keys.join(format!("{name}-signing.nk")))?,
                jetstream: js,
                revocations: BTreeMap::new(),
            })
        };
        Ok(Self {
            operator: read_seed(&keys.join("operator.nk"))?,
            operator_signing: read_seed(&keys.join("operator-signing.nk"))?,
            system: account("SYS", false)?,
            canopy: account("CANOPY", true)?,
        })
    }

    /// The operator JWT (self-signed, names the signing key and the system account).
    ///
    /// # Errors
    /// When signing fails.
    pub fn operator_jwt(&self) -> anyhow::Result<String> {
        jwt::encode(
            &self.operator,
            &self.operator.public_key(),
            "canopy",
            now(),
            None,
            OperatorClaims {
                signing_keys: vec![self.operator_signing.public_key()],
                system_account: self.system.public_key(),
                kind: "operator".into(),
                version: 2,
            },
        )
    }

    /// The JWT of `account`, signed by the operator's signing key.
    ///
    /// # Errors
    /// When signing fails.
    pub fn account_jwt(&self, account: &Account) -> anyhow::Result<String> {
        self.account_jwt_issued_at(account, now())
    }

    /// [`Authority::account_jwt`] issued at `iat` (unix seconds): a resolver replaces a stored
    /// account JWT only with a newer one.
    ///
    /// # Errors
    /// When signing fails.
    pub fn account_jwt_issued_at(&self, account: &Account, iat: i64) -> anyhow::Result<String> {
        jwt::encode(
            &self.operator_signing,
            &account.public_key(),
            &account.name,
            iat,
            None,
            AccountClaims {
                limits: AccountLimits::unlimited(account.jetstream),
                signing_keys: vec![account.signing.public_key()],
                revocations: account.revocations.clone(),
                default_permissions: Permissions::default(),
                kind: "account".into(),
                version: 2,
            },
        )
    }
}

/// What [`init`] wrote, for callers that start the servers themselves.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub operator_jwt: PathBuf,
    pub system_account: String,
    pub canopy_account: String,
    /// Cluster → its account's public key.
    pub leaf_accounts: BTreeMap<String, String>,
}

impl Layout {
    pub fn seed_dir(&self) -> PathBuf {
        self.dir.join("seed")
    }

    pub fn leaf_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join("leaves").join(cluster)
    }

    /// `seed/<user>.creds`.
    pub fn seed_creds(&self, user: &str) -> PathBuf {
        self.seed_dir().join(format!("{user}.creds"))
    }

    /// `leaves/<cluster>/<user>.creds`.
    pub fn leaf_creds(&self, cluster: &str, user: &str) -> PathBuf {
        self.leaf_dir(cluster).join(format!("{user}.creds"))
    }

    /// The variables `nats-config/seed.conf` reads for operator mode.
    pub fn seed_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CANOPY_NATS_OPERATOR_JWT".into(),
                self.operator_jwt.display().to_string(),
            ),
            (
                "CANOPY_NATS_SYSTEM_ACCOUNT".into(),
                self.system_account.clone(),
            ),
            (
                "CANOPY_NATS_RESOLVER_DIR".into(),
                self.seed_dir().join("resolver").display().to_string(),
            ),
        ]
    }

    /// The variables `nats-config/leaf.conf` reads for operator mode and its link.
    pub fn leaf_env(&self, cluster: &str) -> Vec<(String, String)> {
        vec![
            (
                "CANOPY_NATS_OPERATOR_JWT".into(),
                self.operator_jwt.display().to_string(),
            ),
            (
                "CANOPY_NATS_SYSTEM_ACCOUNT".into(),
                self.system_account.clone(),
            ),
            (
                "CANOPY_NATS_RESOLVER_DIR".into(),
                self.leaf_dir(cluster)
                    .join("resolver")
                    .display()
                    .to_string(),
            ),
            (
                "CANOPY_NATS_ACCOUNT".into(),
                self.leaf_accounts.get(cluster).cloned().unwrap_or_default(),
            ),
            (
                "CANOPY_UPLINK_CREDS".into(),
                self.leaf_creds(cluster, "link").display().to_string(),
            ),
        ]
    }
}

/// Seed users `init` writes besides the table's.
const SEED_EXTRA: &[&str] = &["admin", "sys"];

/// Writes operator, accounts, resolver dirs and every user's creds for the seed and `clusters`
/// into `dir` (see the module docs). Existing files are overwritten.
///
/// # Errors
/// When a cluster id is not a valid subject token, or a file cannot be written.
pub fn init(dir: &Path, authority: &Authority, clusters: &[String]) -> anyhow::Result<Layout> {
    for c in clusters {
        check_cluster(c)?;
    }
    let dir = &std::path::absolute(dir)
        .with_context(|| format!("failed to resolve {}", dir.display()))?;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)
        .with_context(|| format!("failed to create {}", keys.display()))?;
    write_seed(&keys.join("operator.nk"), &authority.operator)?;
    write_seed(
        &keys.join("operator-signing.nk"),
        &authority.operator_signing,
    )?;
    for a in [&authority.system, &authority.canopy] {
        write_seed(&keys.join(format!("{}.nk", a.name)), &a.identity)?;
        write_seed(&keys.join(format!("{}-signing.nk", a.name)), &a.signing)?;
    }
    let operator_jwt = dir.join("operator.jwt");
    write(&operator_jwt, &authority.operator_jwt()?, false)?;

    let seed = dir.join("seed");
    let sys_jwt = authority.account_jwt(&authority.system)?;
    write_resolver(
        &seed.join("resolver"),
        &[
            (&authority.system.public_key(), &sys_jwt),
            (
                &authority.canopy.public_key(),
                &authority.account_jwt(&authority.canopy)?,
            ),
        ],
    )?;
    for spec in perms::USERS
        .iter()
        .filter(|u| u.home == Home::Seed && !matches!(u.name, "link" | "bootstrap"))
    {
        let creds = authority.canopy.table_user(spec, "")?;
        write(
            &seed.join(format!("{}.creds", spec.name)),
            &creds.file_text(),
            true,
        )?;
    }
    for extra in SEED_EXTRA {
        let creds = match *extra {
            "admin" => authority.canopy.user("admin", perms::admin(), &[], None)?,
            _ => authority.system.user("sys", perms::admin(), &[], None)?,
        };
        write(
            &seed.join(format!("{extra}.creds")),
            &creds.file_text(),
            true,
        )?;
    }

    let mut layout = Layout {
        dir: dir.to_path_buf(),
        operator_jwt,
        system_account: authority.system.public_key(),
        canopy_account: authority.canopy.public_key(),
        leaf_accounts: BTreeMap::new(),
    };
    for cluster in clusters {
        let account = Account::generate(&format!("LEAF-{cluster}"), true);
        write_seed(
            &keys.join(format!("{}.nk", account.name)),
            &account.identity,
        )?;
        write_seed(
            &keys.join(format!("{}-signing.nk", account.name)),
            &account.signing,
        )?;
        let leaf = layout.leaf_dir(cluster);
        write_resolver(
            &leaf.join("resolver"),
            &[
                (&authority.system.public_key(), &sys_jwt),
                (&account.public_key(), &authority.account_jwt(&account)?),
            ],
        )?;
        for spec in perms::USERS.iter().filter(|u| u.home == Home::Leaf) {
            let creds = account.table_user(spec, cluster)?;
            write(
                &leaf.join(format!("{}.creds", spec.name)),
                &creds.file_text(),
                true,
            )?;
        }
        let admin = account.user("admin", perms::admin(), &[], None)?;
        write(&leaf.join("admin.creds"), &admin.file_text(), true)?;
        for name in ["link", "bootstrap"] {
            let spec = perms::spec(Home::Seed, name).context("link user missing from table")?;
            let creds = authority.canopy.table_user(spec, cluster)?;
            write(
                &leaf.join(format!("{name}.creds")),
                &creds.file_text(),
                true,
            )?;
        }
        layout
            .leaf_accounts
            .insert(cluster.clone(), account.public_key());
    }
    write(&seed.join("nats.env"), &env_file(&layout.seed_env()), false)?;
    for cluster in clusters {
        write(
            &layout.leaf_dir(cluster).join("nats.env"),
            &env_file(&layout.leaf_env(cluster)),
            false,
        )?;
    }
    Ok(layout)
}

/// Rejects cluster ids that are not a plain subject token of lowercase letters, digits and `-`.
///
/// # Errors
/// When `cluster` could inject subject tokens or is not a valid id.
pub fn check_cluster(cluster: &str) -> anyhow::Result<()> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    if !ok {
        bail!(
            "cluster id {cluster:?} must be lowercase letters, digits and '-' (no '.', '*', '>' or spaces)"
        );
    }
    Ok(())
}

fn env_file(vars: &[(String, String)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn write_resolver(dir: &Path, accounts: &[(&String, &String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (key, jwt) in accounts {
        write(&dir.join(format!("{key}.jwt")), jwt, false)?;
    }
    Ok(())
}

fn write_seed(path: &Path, key: &KeyPair) -> anyhow::Result<()> {
    let seed = key
        .seed()
        .map_err(|e| anyhow::anyhow!("failed to encode a seed: {e}"))?;
    write(path, &format!("{seed}\n"), true)
}

fn read_seed(path: &Path) -> anyhow::Result<KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    KeyPair::from_seed(text.trim())
        .map_err(|e| anyhow::anyhow!("{} holds no valid seed: {e}", path.display()))
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
    if secret {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_complete_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::generate();
        let layout = init(tmp.path(), &auth, &["a".into(), "b".into()]).unwrap();
        for f in [
            "operator.jwt",
            "seed/api.creds",
            "seed/admin.creds",
            "seed/nats.env",
            "leaves/a/agent.creds",
            "leaves/a/link.creds",
            "leaves/b/bootstrap.creds",
        ] {
            assert!(tmp.path().join(f).is_file(), "{f}");
        }
        let (jwt, _) =
            jwt::parse_creds(&std::fs::read_to_string(layout.leaf_creds("a", "agent")).unwrap())
                .unwrap();
        let claims: jwt::Claims<UserClaims> = jwt::decode(&jwt).unwrap();
        assert_eq!(claims.nats.issuer_account, layout.leaf_accounts["a"]);
        let again = Authority::load(tmp.path()).unwrap();
        assert_eq!(again.canopy.public_key(), auth.canopy.public_key());
        assert!(init(tmp.path(), &auth, &["a.b".into()]).is_err());
        assert!(init(tmp.path(), &auth, &["*".into()]).is_err());
    }
}
