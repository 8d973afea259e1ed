//! API bearer tokens: JWTs checked with `jsonwebtoken` (issuer, audience, expiry, not-before),
//! several keys at once for rotation (each HS256, RS256 or EdDSA), a role and an optional
//! scope by cluster labels.
//!
//! The key file (JSON) the api and `canopyctl token issue` read:
//!
//! ```json
//! { "issuer": "canopy", "audience": "canopy-api",
//!   "keys": [ { "kid": "2026-11", "alg": "HS256", "secret": "<at least 32 bytes>" },
//!             { "kid": "ed-1", "alg": "EdDSA", "public_key_pem": "-----BEGIN PUBLIC KEY-----...",
//!               "private_key_pem": "..." } ] }
//! ```
//!
//! The api needs only what verifies (secrets, public keys); the issuer also needs private keys.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Roles, each including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// # Errors
    /// When `s` is not a role.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => bail!("unknown role {other:?} (viewer, operator, admin)"),
        }
    }
}

/// The claims of a Canopy API token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub role: Role,
    /// Cluster labels the holder is limited to (all must match); empty = the whole fleet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scope: BTreeMap<String, String>,
}

/// One key of the key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySpec {
    pub kid: String,
    /// `HS256`, `RS256` or `EdDSA`.
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
}

/// The key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<KeySpec>,
}

impl TokenConfig {
    /// # Errors
    /// When the file is missing or not a valid key file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let cfg: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a token key file", path.display()))?;
        if cfg.keys.is_empty() {
            bail!("{} has no keys", path.display());
        }
        Ok(cfg)
    }

    /// A new key file with one random HS256 key.
    pub fn generate_hs256(issuer: &str, audience: &str, kid: &str) -> Self {
        let secret: String = (0..2).map(|_| uuid_like()).collect::<Vec<_>>().join("");
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: vec![KeySpec {
                kid: kid.to_owned(),
                alg: "HS256".into(),
                secret: Some(secret),
                public_key_pem: None,
                private_key_pem: None,
            }],
        }
    }
}

fn uuid_like() -> String {
    use sha2::Digest as _;
    let seed = nkeys::KeyPair::new_user().seed().unwrap_or_default();
    hex_lower(&sha2::Sha256::digest(seed.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn algorithm(alg: &str) -> anyhow::Result<Algorithm> {
    match alg {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => bail!("unsupported token algorithm {other:?} (HS256, RS256, EdDSA)"),
    }
}

/// Why a token was refused. The message is safe to return to the caller.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key or algorithm")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued for another issuer or audience")]
    WrongIssuerOrAudience,
    #[error("token claims invalid")]
    BadClaims,
}

struct VerifyKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks tokens against every configured key.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Longest token accepted (bytes); anything longer is malformed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

impl Verifier {
    /// # Errors
    /// When a key cannot be read.
    pub fn new(cfg: &TokenConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for k in &cfg.keys {
            let alg = algorithm(&k.alg)?;
            let key = match alg {
                Algorithm::HS256 => {
                    let secret = k
                        .secret
                        .as_deref()
                        .with_context(|| format!("key {} (HS256) has no secret", k.kid))?;
                    if secret.len() < 32 {
                        bail!(
                            "key {} (HS256): the secret must be at least 32 bytes",
                            k.kid
                        );
                    }
                    DecodingKey::from_secret(secret.as_bytes())
                }
                Algorithm::RS256 => DecodingKey::from_rsa_pem(
                    k.public_key_pem
                        .as_deref()
                        .with_context(|| format!("key {} has no public_key_pem", k.kid))?
                        .as_bytes(),
                )
                .with_context(|| format!("key {}: bad RSA public key", k.kid))?,
                _ => DecodingKey::from_ed_pem(
                    k.public_key_pem
                        .as_deref()
                        .with_context(|| format!("key {} has no public_key_pem", k.kid))?
                        .as_bytes(),
                )
                .with_context(|| format!("key {}: bad Ed25519 public key", k.kid))?,
            };
            keys.push(VerifyKey {
                kid: k.kid.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            bail!("no token keys configured");
        }
        Ok(Self {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            keys,
        })
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// A [`TokenError`] saying why, never which key or claim value was expected.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        // `alg: none` and unknown algorithms fail here: jsonwebtoken knows no `none`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| header.kid.as_ref().is_none_or(|kid| *kid == k.kid))
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut last = TokenError::BadSignature;
        for k in candidates {
            let mut v = Validation::new(k.alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            v.validate_nbf = true;
            v.leeway = 5;
            match jsonwebtoken::decode::<TokenClaims>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => TokenError::BadSignature,
                        K::ExpiredSignature => return Err(TokenError::Expired),
                        K::ImmatureSignature => return Err(TokenError::NotYetValid),
                        K::InvalidIssuer | K::InvalidAudience => {
                            return Err(TokenError::WrongIssuerOrAudience);
                        }
                        K::MissingRequiredClaim(_) | K::Json(_) => {
                            return Err(TokenError::BadClaims);
                        }
                        K::InvalidToken | K::Base64(_) | K::Utf8(_) => {
                            return Err(TokenError::Malformed);
                        }
                        _ => TokenError::BadSignature,
                    };
                }
            }
        }
        Err(last)
    }
}

/// Signs a token with key `kid` (the first key able to sign when `None`).
///
/// # Errors
/// When no key can sign.
pub fn issue(
    cfg: &TokenConfig,
    kid: Option<&str>,
    subject: &str,
    role: Role,
    scope: BTreeMap<String, String>,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let key = cfg
        .keys
        .iter()
        .filter(|k| kid.is_none_or(|want| want == k.kid))
        .find(|k| k.secret.is_some() || k.private_key_pem.is_some())
        .context("no key in the key file can sign (a secret or private_key_pem is needed)")?;
    let alg = algorithm(&key.alg)?;
    let enc = match alg {
        Algorithm::HS256 => {
            EncodingKey::from_secret(key.secret.as_deref().unwrap_or_default().as_bytes())
        }
        Algorithm::RS256 => EncodingKey::from_rsa_pem(
            key.private_key_pem
                .as_deref()
                .context("no private_key_pem")?
                .as_bytes(),
        )?,
        _ => EncodingKey::from_ed_pem(
            key.private_key_pem
                .as_deref()
                .context("no private_key_pem")?
                .as_bytes(),
        )?,
    };
    let now = chrono::Utc::now().timestamp();
    let claims = TokenClaims {
        sub: subject.to_owned(),
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone(),
        exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        nbf: now,
        iat: now,
        role,
        scope,
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(&header, &claims, &enc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TokenConfig {
        TokenConfig::generate_hs256("canopy", "canopy-api", "k1")
    }

    #[test]
    fn issued_tokens_verify_and_rotation_accepts_both_keys() {
        let old = cfg();
        let mut both = cfg();
        both.keys.extend(old.keys.clone());
        let v = Verifier::new(&both).unwrap();
        let t_new = issue(
            &both,
            Some("k1"),
            "alice",
            Role::Admin,
            BTreeMap::new(),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&t_new).unwrap().sub, "alice");
        let t_old = issue(
            &old,
            None,
            "bob",
            Role::Viewer,
            BTreeMap::new(),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&t_old).unwrap().role, Role::Viewer);
        let other = Verifier::new(&cfg()).unwrap();
        assert_eq!(other.verify(&t_new), Err(TokenError::BadSignature));
    }
}
