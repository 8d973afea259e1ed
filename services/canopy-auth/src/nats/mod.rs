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
//! seed/<user>.creds                 gateway, gateway-sys, ingestion, api, cnc, doctor, admin, sys
//! seed/gateway-keys/                what the seed's gateway signs link users and revocations with
//! trunk/resolver/, trunk/nats.env   for nats-config/trunk.conf; trunk/link.creds its seed link
//! dialer/resolver/, dialer/nats.env for nats-config/dialer.conf (the seed's dialer)
//! leaves/<c>/resolver/<account>.jwt full resolver dir of leaf <c> (SYS, LEAF-<c>)
//! leaves/<c>/nats.env               variables for nats-config/leaf.conf
//! leaves/<c>/<user>.creds           agent, gateway, gateway-sys, admin (leaf); bootstrap (seed);
//!                                   link (seed): a pre-approved link for tests and benchmarks —
//!                                   a deployed leaf gets its link through the interconnect flow
//! leaves/<c>/account-signing.nk     LEAF-<c>'s signing key: the leaf's gateway signs the seed's
//!                                   dialer user with it when the seed dials the leaf
//! ```

pub mod jwt;
pub mod perms;
pub mod sealed;

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
        self.user_from(name, permissions, connection_types, &[], exp)
    }

    /// Like [`Account::user`], connecting only from the CIDRs `sources` (empty: anywhere).
    fn user_from(
        &self,
        name: &str,
        permissions: Permissions,
        connection_types: &[&str],
        sources: &[&str],
        exp: Option<i64>,
    ) -> anyhow::Result<Creds> {
        let user = KeyPair::new_user();
        let jwt = self.signed_user_jwt(
            name,
            &user.public_key(),
            permissions,
            (connection_types, sources),
            exp,
        )?;
        Ok(Creds {
            public_key: user.public_key(),
            jwt,
            seed: user
                .seed()
                .map_err(|e| anyhow::anyhow!("failed to encode a user seed: {e}"))?,
        })
    }

    /// The JWT of a user whose key pair someone else holds (`user_public_key`, `U...`).
    ///
    /// # Errors
    /// When the key is not a user public key, or signing fails.
    pub fn user_jwt(
        &self,
        name: &str,
        user_public_key: &str,
        permissions: Permissions,
        connection_types: &[&str],
        exp: Option<i64>,
    ) -> anyhow::Result<String> {
        self.signed_user_jwt(
            name,
            user_public_key,
            permissions,
            (connection_types, &[]),
            exp,
        )
    }

    /// A user JWT; `(connection types, source CIDRs)` limit how and from where it connects.
    fn signed_user_jwt(
        &self,
        name: &str,
        user_public_key: &str,
        permissions: Permissions,
        (connection_types, sources): (&[&str], &[&str]),
        exp: Option<i64>,
    ) -> anyhow::Result<String> {
        check_user_key(user_public_key)?;
        jwt::encode(
            &self.signing,
            user_public_key,
            name,
            now(),
            exp,
            UserClaims {
                permissions,
                allowed_connection_types: connection_types
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                src: sources.iter().map(|c| (*c).to_owned()).collect(),
                subs: -1,
                data: -1,
                payload: -1,
                issuer_account: self.public_key(),
                kind: "user".into(),
                version: 2,
            },
        )
    }

    /// The JWT of the table row `row` for `cluster`, named `name`, for a key someone else
    /// holds, valid until `exp`.
    ///
    /// # Errors
    /// When the cluster id or key is invalid, the row is missing, or signing fails.
    pub fn cluster_user_jwt(
        &self,
        row: (Home, &str),
        name: &str,
        cluster: &str,
        user_public_key: &str,
        exp: i64,
    ) -> anyhow::Result<String> {
        check_cluster(cluster)?;
        let spec = perms::spec(row.0, row.1)
            .with_context(|| format!("{} user missing from table", row.1))?;
        self.user_jwt(
            name,
            user_public_key,
            perms::permissions(spec, cluster),
            &[spec.connection],
            Some(exp),
        )
    }

    /// A user from the permission table.
    ///
    /// # Errors
    /// When signing fails.
    pub fn table_user(&self, spec: &perms::UserSpec, cluster: &str) -> anyhow::Result<Creds> {
        self.user_from(
            spec.name,
            perms::permissions(spec, cluster),
            &[spec.connection],
            spec.sources,
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
        account_jwt_signed(
            &self.operator_signing,
            &AccountParts {
                name: &account.name,
                public_key: &account.public_key(),
                signing_public_key: Some(&account.signing.public_key()),
                jetstream: account.jetstream,
                revocations: &account.revocations,
            },
            iat,
        )
    }
}

struct AccountParts<'a> {
    name: &'a str,
    public_key: &'a str,
    signing_public_key: Option<&'a str>,
    jetstream: bool,
    revocations: &'a BTreeMap<String, i64>,
}

fn account_jwt_signed(
    operator_signing: &KeyPair,
    account: &AccountParts<'_>,
    iat: i64,
) -> anyhow::Result<String> {
    jwt::encode(
        operator_signing,
        account.public_key,
        account.name,
        iat,
        None,
        AccountClaims {
            limits: AccountLimits::unlimited(account.jetstream),
            signing_keys: account
                .signing_public_key
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            revocations: account.revocations.clone(),
            default_permissions: Permissions::default(),
            kind: "account".into(),
            version: 2,
        },
    )
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

    /// The operator-mode variables every `nats-config/*.conf` reads, for a server whose full
    /// resolver folder is `resolver`.
    fn operator_env(&self, resolver: PathBuf) -> Vec<(String, String)> {
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
                resolver.display().to_string(),
            ),
        ]
    }

    /// The variables `nats-config/seed.conf` reads for operator mode.
    pub fn seed_env(&self) -> Vec<(String, String)> {
        self.operator_env(self.seed_dir().join("resolver"))
    }

    /// The variables `nats-config/leaf.conf` reads for operator mode (its link is in the
    /// `link/remotes.conf` that gateway-leafnode writes once approved, see [`remotes_conf`]).
    pub fn leaf_env(&self, cluster: &str) -> Vec<(String, String)> {
        self.operator_env(self.leaf_dir(cluster).join("resolver"))
    }

    /// The variables `nats-config/trunk.conf` reads for operator mode and its link to the seed.
    pub fn trunk_env(&self) -> Vec<(String, String)> {
        let trunk = self.dir.join("trunk");
        let mut vars = self.operator_env(trunk.join("resolver"));
        vars.extend([
            ("CANOPY_NATS_ACCOUNT".into(), self.canopy_account.clone()),
            (
                "CANOPY_UPLINK_CREDS".into(),
                trunk.join("link.creds").display().to_string(),
            ),
        ]);
        vars
    }

    /// The variables `nats-config/dialer.conf` reads for operator mode.
    pub fn dialer_env(&self) -> Vec<(String, String)> {
        self.operator_env(self.dir.join("dialer").join("resolver"))
    }

    /// `seed/gateway-keys`: what the seed's gateway-leafnode signs with ([`LinkSigner`]).
    pub fn gateway_keys(&self) -> PathBuf {
        self.seed_dir().join("gateway-keys")
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
    for spec in perms::USERS.iter().filter(|u| {
        (u.home == Home::Seed && !matches!(u.name, "link" | "bootstrap" | "trunk"))
            || u.home == Home::SeedSystem
    }) {
        let account = if spec.home == Home::SeedSystem {
            &authority.system
        } else {
            &authority.canopy
        };
        let creds = account.table_user(spec, "")?;
        write(
            &seed.join(format!("{}.creds", spec.name)),
            &creds.file_text(),
            true,
        )?;
    }
    // What the seed's gateway-leafnode signs link users and revocations with.
    let gateway_keys = seed.join("gateway-keys");
    write_seed(
        &gateway_keys.join("operator-signing.nk"),
        &authority.operator_signing,
    )?;
    write_seed(
        &gateway_keys.join("CANOPY-signing.nk"),
        &authority.canopy.signing,
    )?;
    write(
        &gateway_keys.join("CANOPY.pub"),
        &format!("{}\n", authority.canopy.public_key()),
        false,
    )?;
    // A trunk trusts the same operator and serves the Canopy account to its leaves.
    let trunk = dir.join("trunk");
    write_resolver(
        &trunk.join("resolver"),
        &[
            (&authority.system.public_key(), &sys_jwt),
            (
                &authority.canopy.public_key(),
                &authority.account_jwt(&authority.canopy)?,
            ),
        ],
    )?;
    let trunk_spec = perms::spec(Home::Seed, "trunk").context("trunk user missing from table")?;
    write(
        &trunk.join("link.creds"),
        &authority.canopy.table_user(trunk_spec, "")?.file_text(),
        true,
    )?;
    // The seed's dialer: its resolver starts with SYS; the seed's gateway pushes the account of
    // each seed-dialed cluster to it.
    write_resolver(
        &dir.join("dialer").join("resolver"),
        &[(&authority.system.public_key(), &sys_jwt)],
    )?;
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
        for spec in perms::USERS
            .iter()
            .filter(|u| matches!(u.home, Home::Leaf | Home::LeafSystem) && u.name != "dial")
        {
            let creds = if spec.home == Home::LeafSystem {
                authority.system.table_user(spec, cluster)?
            } else {
                account.table_user(spec, cluster)?
            };
            write(
                &leaf.join(format!("{}.creds", spec.name)),
                &creds.file_text(),
                true,
            )?;
        }
        let admin = account.user("admin", perms::admin(), &[], None)?;
        write(&leaf.join("admin.creds"), &admin.file_text(), true)?;
        // What the leaf's gateway signs the seed's dialer user with, when the seed dials it.
        write_seed(&leaf.join("account-signing.nk"), &account.signing)?;
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
    write(
        &trunk.join("nats.env"),
        &env_file(&layout.trunk_env()),
        false,
    )?;
    write(
        &dir.join("dialer").join("nats.env"),
        &env_file(&layout.dialer_env()),
        false,
    )?;
    for cluster in clusters {
        write(
            &layout.leaf_dir(cluster).join("nats.env"),
            &env_file(&layout.leaf_env(cluster)),
            false,
        )?;
    }
    Ok(layout)
}

/// Rejects anything but a user public nkey (`U` + 55 base32 characters, valid checksum).
///
/// # Errors
/// When `key` is not a user public key.
pub fn check_user_key(key: &str) -> anyhow::Result<()> {
    match KeyPair::from_public_key(key) {
        Ok(k) if k.key_pair_type() == nkeys::KeyPairType::User => Ok(()),
        _ => bail!("{key:?} is not a NATS user public key (U...)"),
    }
}

/// The `remotes` list a leaf's `nats-config/leaf.conf` includes from `link/remotes.conf`, next
/// to the configuration file: none (not linked yet) or one remote dialling `url` with the link
/// credentials `creds`, bound to the leaf's own `account`.
pub fn remotes_conf(link: Option<(&str, &Path, &str)>) -> String {
    match link {
        None => "# Not linked yet: gateway-leafnode writes the remote once the interconnect is approved.\nremotes: []\n".to_owned(),
        Some((url, creds, account)) => format!(
            "# Written by gateway-leafnode after the interconnect was approved.\nremotes: [\n  {{ url: {url:?}, credentials: {:?}, account: {account:?} }}\n]\n",
            creds.display().to_string()
        ),
    }
}

/// A seed-dialed leaf's `link/remotes.conf`: the leafnode listener the seed's dialer connects
/// to, and no remote of its own.
pub fn leaf_listener_conf(listen: &str) -> String {
    format!(
        "# Written by gateway-leafnode: the seed's dialer connects here once the interconnect is approved.\nlisten: {listen:?}\nno_advertise: true\nremotes: []\n"
    )
}

/// One seed-dialed cluster in the dialer's `dial/remotes.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialerRemote {
    pub cluster: String,
    /// `nats-leaf://` URL of the leaf's listener, and the user the leaf signed for the dialer.
    pub leaf_url: String,
    pub leaf_creds: PathBuf,
    /// `nats-leaf://` URL of the seed's leafnode listener, and the cluster's link user there.
    pub seed_url: String,
    pub seed_creds: PathBuf,
    /// The cluster's own account on the dialer (`DIAL-<cluster>`): nothing else passes through it.
    pub account: String,
}

/// The dialer's `dial/remotes.conf` (included by `nats-config/dialer.conf`): per cluster a
/// remote to the leaf (the dialer is its hub) and one to the seed, both bound to the cluster's
/// own account, so that the seed's leafnode port checks the link user's permissions on
/// everything that comes from the leaf.
pub fn dialer_remotes_conf(remotes: &[DialerRemote]) -> String {
    let mut text = "# Written by the seed's gateway-leafnode: per seed-dialed cluster, its leaf and the seed.\nremotes: [\n".to_owned();
    for r in remotes {
        text.push_str(&format!(
            "  # {}\n  {{ url: {:?}, credentials: {:?}, account: {:?}, hub: true }}\n  {{ url: {:?}, credentials: {:?}, account: {:?} }}\n",
            r.cluster,
            r.leaf_url,
            r.leaf_creds.display().to_string(),
            r.account,
            r.seed_url,
            r.seed_creds.display().to_string(),
            r.account,
        ));
    }
    text.push_str("]\n");
    text
}

/// The keys of one seed-dialed link, derived from the operator's signing key, the cluster and
/// its request id: the same after a gateway restart, new for every request.
#[derive(Debug)]
pub struct DialerKeys {
    /// `DIAL-<cluster>`, the dialer's account the link passes through.
    pub account: KeyPair,
    /// The user the dialer connects to the leaf with (the leaf signs its JWT).
    pub leaf_user: KeyPair,
    /// The cluster's link user on the seed, what the dialer connects to the seed with.
    pub link_user: KeyPair,
}

/// What a leaf's gateway signs the seed's dialer user with: its own account's signing key
/// (`leaves/<cluster>/account-signing.nk` of [`init`]).
#[derive(Debug)]
pub struct LeafSigner {
    account: Account,
}

impl LeafSigner {
    /// Loads the signing key in `path` for the account `account_public_key`.
    ///
    /// # Errors
    /// When the file is missing or the keys are not an account's.
    pub fn load(path: &Path, account_public_key: &str) -> anyhow::Result<Self> {
        let identity = KeyPair::from_public_key(account_public_key)
            .map_err(|e| anyhow::anyhow!("{account_public_key:?} is no account key: {e}"))?;
        let signing = read_seed(path)?;
        if identity.key_pair_type() != nkeys::KeyPairType::Account
            || signing.key_pair_type() != nkeys::KeyPairType::Account
        {
            bail!("{} holds no account signing key", path.display());
        }
        Ok(Self {
            account: Account {
                name: "LEAF".to_owned(),
                identity,
                signing,
                jetstream: true,
                revocations: BTreeMap::new(),
            },
        })
    }

    /// The JWT of the seed's dialer user on this leaf (the `dial` row of [`perms::USERS`]), for
    /// the key the seed named, valid until `exp`.
    ///
    /// # Errors
    /// When the cluster id or key is invalid, or signing fails.
    pub fn dial_jwt(
        &self,
        cluster: &str,
        user_public_key: &str,
        exp: i64,
    ) -> anyhow::Result<String> {
        self.account.cluster_user_jwt(
            (Home::Leaf, "dial"),
            &format!("seed-dialer-{cluster}"),
            cluster,
            user_public_key,
            exp,
        )
    }
}

/// What the seed's gateway-leafnode signs with: the Canopy account's signing key (link users)
/// and the operator's signing key (the Canopy account JWT with its revocations). [`init`]
/// writes them to `seed/gateway-keys/`.
#[derive(Debug)]
pub struct LinkSigner {
    pub operator_signing: KeyPair,
    pub canopy: Account,
}

impl LinkSigner {
    /// Loads `dir` (`operator-signing.nk`, `CANOPY-signing.nk`, `CANOPY.pub`).
    ///
    /// # Errors
    /// When a file is missing or holds no valid key.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let public = std::fs::read_to_string(dir.join("CANOPY.pub"))
            .with_context(|| format!("failed to read {}", dir.join("CANOPY.pub").display()))?;
        let identity = KeyPair::from_public_key(public.trim()).map_err(|e| {
            anyhow::anyhow!(
                "{} holds no account key: {e}",
                dir.join("CANOPY.pub").display()
            )
        })?;
        Ok(Self {
            operator_signing: read_seed(&dir.join("operator-signing.nk"))?,
            canopy: Account {
                name: "CANOPY".to_owned(),
                identity,
                signing: read_seed(&dir.join("CANOPY-signing.nk"))?,
                jetstream: true,
                revocations: BTreeMap::new(),
            },
        })
    }

    /// The JWT of `cluster`'s link user (its own subjects and delivery prefix only), for the key
    /// the leaf generated, valid until `exp`.
    ///
    /// # Errors
    /// When the cluster id or key is invalid, or signing fails.
    pub fn link_jwt(
        &self,
        cluster: &str,
        user_public_key: &str,
        exp: i64,
    ) -> anyhow::Result<String> {
        self.canopy.cluster_user_jwt(
            (Home::Seed, "link"),
            &format!("link-{cluster}"),
            cluster,
            user_public_key,
            exp,
        )
    }

    /// The keys of `cluster`'s seed-dialed link for its request `request_id` ([`DialerKeys`]).
    ///
    /// # Errors
    /// When the signing key cannot be encoded.
    pub fn dialer_keys(&self, cluster: &str, request_id: &str) -> anyhow::Result<DialerKeys> {
        use sha2::{Digest as _, Sha256};
        let secret = self
            .operator_signing
            .seed()
            .map_err(|e| anyhow::anyhow!("failed to encode the operator signing key: {e}"))?;
        let derive = |purpose: &str, kind: nkeys::KeyPairType| {
            let mut h = Sha256::new();
            for part in ["canopy-dialer", &secret, purpose, cluster, request_id] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
            KeyPair::new_from_raw(kind, h.finalize().into())
                .map_err(|e| anyhow::anyhow!("failed to derive a {purpose} key: {e}"))
        };
        Ok(DialerKeys {
            account: derive("account", nkeys::KeyPairType::Account)?,
            leaf_user: derive("leaf-user", nkeys::KeyPairType::User)?,
            link_user: derive("link-user", nkeys::KeyPairType::User)?,
        })
    }

    /// The JWT of `cluster`'s account on the dialer (`DIAL-<cluster>`: no JetStream, no users),
    /// issued at `iat`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn dialer_account_jwt(
        &self,
        cluster: &str,
        account: &KeyPair,
        iat: i64,
    ) -> anyhow::Result<String> {
        check_cluster(cluster)?;
        account_jwt_signed(
            &self.operator_signing,
            &AccountParts {
                name: &format!("DIAL-{cluster}"),
                public_key: &account.public_key(),
                signing_public_key: None,
                jetstream: false,
                revocations: &BTreeMap::new(),
            },
            iat,
        )
    }

    /// The Canopy account JWT refusing `revoked` users (public key → revoked at, unix seconds),
    /// issued at `iat` (a resolver takes only a newer one).
    ///
    /// # Errors
    /// When signing fails.
    pub fn canopy_account_jwt(
        &self,
        revoked: &BTreeMap<String, i64>,
        iat: i64,
    ) -> anyhow::Result<String> {
        account_jwt_signed(
            &self.operator_signing,
            &AccountParts {
                name: &self.canopy.name,
                public_key: &self.canopy.public_key(),
                signing_public_key: Some(&self.canopy.signing.public_key()),
                jetstream: true,
                revocations: revoked,
            },
            iat,
        )
    }
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
            "leaves/a/account-signing.nk",
            "dialer/nats.env",
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
        assert!(!tmp.path().join("leaves/a/dial.creds").exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("dialer/resolver"))
                .unwrap()
                .count(),
            1,
            "the dialer starts with SYS only"
        );
    }

    #[test]
    fn dialer_keys_are_stable_per_request_and_the_leaf_signs_its_user_in_its_own_account() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::generate();
        let layout = init(tmp.path(), &auth, &["a".into()]).unwrap();
        let signer = LinkSigner::load(&layout.gateway_keys()).unwrap();
        let k1 = signer.dialer_keys("a", "r1").unwrap();
        let k1_again = signer.dialer_keys("a", "r1").unwrap();
        let k2 = signer.dialer_keys("a", "r2").unwrap();
        let other = signer.dialer_keys("b", "r1").unwrap();
        assert_eq!(k1.link_user.public_key(), k1_again.link_user.public_key());
        assert_eq!(k1.account.public_key(), k1_again.account.public_key());
        assert_ne!(k1.link_user.public_key(), k2.link_user.public_key());
        assert_ne!(k1.leaf_user.public_key(), other.leaf_user.public_key());
        assert!(k1.account.public_key().starts_with('A'));
        assert!(k1.leaf_user.public_key().starts_with('U'));

        let account: jwt::Claims<AccountClaims> =
            jwt::decode(&signer.dialer_account_jwt("a", &k1.account, 1).unwrap()).unwrap();
        assert_eq!(account.sub, k1.account.public_key());
        assert_eq!(
            account.nats.limits.disk_storage, 0,
            "no JetStream on the dialer"
        );

        let leaf = LeafSigner::load(
            &layout.leaf_dir("a").join("account-signing.nk"),
            &layout.leaf_accounts["a"],
        )
        .unwrap();
        let dial: jwt::Claims<UserClaims> =
            jwt::decode(&leaf.dial_jwt("a", &k1.leaf_user.public_key(), 99).unwrap()).unwrap();
        assert_eq!(dial.sub, k1.leaf_user.public_key());
        assert_eq!(dial.nats.issuer_account, layout.leaf_accounts["a"]);
        assert_eq!(
            dial.nats.allowed_connection_types,
            vec!["LEAFNODE".to_owned()]
        );
        assert!(
            dial.nats
                .permissions
                .publish
                .allow
                .contains(&"canopy.down.a.>".to_owned())
        );
        assert!(LeafSigner::load(&layout.leaf_dir("a").join("agent.creds"), "x").is_err());
    }

    #[test]
    fn the_dialer_binds_both_remotes_of_a_cluster_to_its_own_account() {
        let text = dialer_remotes_conf(&[DialerRemote {
            cluster: "a".into(),
            leaf_url: "nats-leaf://leaf:7422".into(),
            leaf_creds: "/d/a.leaf.creds".into(),
            seed_url: "nats-leaf://seed:7422".into(),
            seed_creds: "/d/a.seed.creds".into(),
            account: "ADIAL".into(),
        }]);
        assert_eq!(text.matches("account: \"ADIAL\"").count(), 2);
        assert_eq!(text.matches("hub: true").count(), 1);
        assert!(dialer_remotes_conf(&[]).contains("remotes: [\n]"));
        assert!(leaf_listener_conf("0.0.0.0:7422").contains("listen: \"0.0.0.0:7422\""));
    }
}
