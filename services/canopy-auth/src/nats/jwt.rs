//! NATS JWTs (v2 claims) signed with `nkeys`: operator, account and user claims as own serde
//! types, encoded as `base64url(header).base64url(claims).base64url(ed25519 signature)`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// A publish or subscribe permission: subjects allowed and denied (deny wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Publish and subscribe permissions of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(rename = "pub", default)]
    pub publish: Permission,
    #[serde(rename = "sub", default)]
    pub subscribe: Permission,
}

/// The `nats` part of a user JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(flatten)]
    pub permissions: Permissions,
    /// `STANDARD`, `LEAFNODE`, ...; empty allows every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<String>,
    /// CIDRs the user may connect from; empty allows any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    /// The account's identity key when a signing key issued the JWT.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// Account limits, JetStream limits flattened in as nats-server expects them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    pub imports: i64,
    pub exports: i64,
    pub wildcards: bool,
    pub conn: i64,
    pub leaf: i64,
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
}

impl AccountLimits {
    /// No limits; JetStream enabled without limits when `jetstream`.
    pub fn unlimited(jetstream: bool) -> Self {
        let js = if jetstream { -1 } else { 0 };
        Self {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            mem_storage: js,
            disk_storage: js,
            streams: js,
            consumer: js,
        }
    }
}

/// The `nats` part of an account JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountClaims {
    pub limits: AccountLimits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// User public key → unix time: users whose JWT was issued at or before it are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    pub default_permissions: Permissions,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// The `nats` part of an operator JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorClaims {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    pub system_account: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// The registered claims around a `nats` part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims<N> {
    pub jti: String,
    pub iat: i64,
    pub iss: String,
    pub name: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub nats: N,
}

/// Signs `claims` with `signer` (its public key becomes `iss`) and returns the JWT.
///
/// # Errors
/// When the claims cannot be serialised or the key cannot sign.
pub fn encode<N: Serialize>(
    signer: &KeyPair,
    subject: &str,
    name: &str,
    iat: i64,
    exp: Option<i64>,
    nats: N,
) -> anyhow::Result<String> {
    let mut claims = Claims {
        jti: String::new(),
        iat,
        iss: signer.public_key(),
        name: name.to_owned(),
        sub: subject.to_owned(),
        exp,
        nats,
    };
    let unsigned = serde_json::to_vec(&claims).context("failed to serialise JWT claims")?;
    claims.jti = BASE32_NOPAD.encode(&Sha256::digest(&unsigned));
    let body = serde_json::to_vec(&claims).context("failed to serialise JWT claims")?;
    let signing_input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(HEADER.as_bytes()),
        BASE64URL_NOPAD.encode(&body)
    );
    let sig = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("failed to sign a JWT: {e}"))?;
    Ok(format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&sig)))
}

/// Verifies the signature of `jwt` against its `iss` and returns the claims.
///
/// # Errors
/// When the JWT is malformed or the signature does not match.
pub fn decode<N: for<'de> Deserialize<'de>>(jwt: &str) -> anyhow::Result<Claims<N>> {
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("a NATS JWT has three parts");
    };
    let body = BASE64URL_NOPAD
        .decode(c.as_bytes())
        .context("JWT claims are not base64url")?;
    let claims: Claims<N> = serde_json::from_slice(&body).context("unreadable JWT claims")?;
    let sig = BASE64URL_NOPAD
        .decode(s.as_bytes())
        .context("JWT signature is not base64url")?;
    let issuer = KeyPair::from_public_key(&claims.iss)
        .map_err(|e| anyhow::anyhow!("bad JWT issuer: {e}"))?;
    issuer
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|e| anyhow::anyhow!("JWT signature does not verify: {e}"))?;
    Ok(claims)
}

/// The text of a `.creds` file: the user JWT and the user's seed in the usual armour.
pub fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT and seed of a `.creds` file's text.
///
/// # Errors
/// When either block is missing.
pub fn parse_creds(text: &str) -> anyhow::Result<(String, String)> {
    fn block(text: &str, begin: &str) -> Option<String> {
        let start = text.find(begin)? + begin.len();
        let rest = &text[start..];
        let line = rest
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("---"))?;
        Some(line.to_owned())
    }
    let jwt = block(text, "-----BEGIN NATS USER JWT-----").context("no user JWT in creds")?;
    let seed = block(text, "-----BEGIN USER NKEY SEED-----").context("no user seed in creds")?;
    Ok((jwt, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_claims_verify_and_tampering_is_detected() {
        let op = KeyPair::new_operator();
        let jwt = encode(
            &op,
            &op.public_key(),
            "op",
            1,
            None,
            OperatorClaims {
                signing_keys: vec![],
                system_account: "A".into(),
                kind: "operator".into(),
                version: 2,
            },
        )
        .unwrap();
        let claims: Claims<OperatorClaims> = decode(&jwt).unwrap();
        assert_eq!(claims.iss, op.public_key());
        assert_eq!(claims.nats.system_account, "A");
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = BASE64URL_NOPAD.encode(
            br#"{"jti":"x","iat":1,"iss":"O","name":"op","sub":"O","nats":{"system_account":"B","type":"operator","version":2}}"#,
        );
        parts[1] = &other;
        assert!(decode::<OperatorClaims>(&parts.join(".")).is_err());
    }

    #[test]
    fn creds_round_trip() {
        let text = creds_file("a.b.c", "SUXYZ");
        assert_eq!(
            parse_creds(&text).unwrap(),
            ("a.b.c".to_owned(), "SUXYZ".to_owned())
        );
    }
}
