//! Sealing link credentials to the one leaf that asked for them (nkeys xkeys: curve25519 with
//! xsalsa20poly1305). The leaf sends only the public half of a curve key it generated; what the
//! seed seals to it can be opened by that key alone, whoever else reads the reply.

use anyhow::bail;
use nkeys::XKey;

/// A fresh curve key pair (`X...` public key).
pub fn generate() -> XKey {
    XKey::new()
}

/// Parses an `X...` public key.
///
/// # Errors
/// When `key` is not a curve public key.
pub fn public_key(key: &str) -> anyhow::Result<XKey> {
    match XKey::from_public_key(key) {
        Ok(k) => Ok(k),
        Err(_) => bail!("{key:?} is not a curve (xkey) public key (X...)"),
    }
}

/// Loads a curve key pair from its seed (`SX...`).
///
/// # Errors
/// When `seed` is not an xkey seed.
pub fn from_seed(seed: &str) -> anyhow::Result<XKey> {
    XKey::from_seed(seed.trim()).map_err(|e| anyhow::anyhow!("not an xkey seed: {e}"))
}

/// The seed text of `key`.
///
/// # Errors
/// When `key` holds no private half.
pub fn seed(key: &XKey) -> anyhow::Result<String> {
    key.seed()
        .map_err(|e| anyhow::anyhow!("failed to encode an xkey seed: {e}"))
}

/// `plain` sealed by `sender` to `recipient` (an `X...` public key).
///
/// # Errors
/// When `recipient` is not a curve public key or sealing fails.
pub fn seal(plain: &[u8], sender: &XKey, recipient: &str) -> anyhow::Result<Vec<u8>> {
    let to = public_key(recipient)?;
    sender
        .seal(plain, &to)
        .map_err(|e| anyhow::anyhow!("failed to seal: {e}"))
}

/// Opens what `sender` (an `X...` public key) sealed to `recipient`.
///
/// # Errors
/// When it was not sealed by `sender` to `recipient`, or was altered.
pub fn open(sealed: &[u8], recipient: &XKey, sender: &str) -> anyhow::Result<Vec<u8>> {
    let from = public_key(sender)?;
    recipient
        .open(sealed, &from)
        .map_err(|e| anyhow::anyhow!("failed to open sealed credentials: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_tampering_is_detected() {
        let seed_side = generate();
        let leaf = generate();
        let other = generate();
        let sealed = seal(b"jwt", &seed_side, &leaf.public_key()).unwrap();
        assert_eq!(
            open(&sealed, &leaf, &seed_side.public_key()).unwrap(),
            b"jwt"
        );
        assert!(open(&sealed, &other, &seed_side.public_key()).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&bad, &leaf, &seed_side.public_key()).is_err());
        assert!(seal(b"x", &seed_side, "UABC").is_err());
        let again = from_seed(&seed(&leaf).unwrap()).unwrap();
        assert_eq!(again.public_key(), leaf.public_key());
    }
}
