//! The audit trail's hash chain: the canonical encoding a record's hash covers, and the walk
//! that finds the first broken link. No I/O here.
//!
//! `hash = hex(SHA-256(encoding))` where the encoding is the ASCII tag `canopy-trail-v1`
//! followed by these fields, each as its UTF-8 bytes preceded by their length as an 8-byte
//! big-endian integer:
//!
//! 1. `previous_hash` (empty for the first record)
//! 2. `index`, in decimal
//! 3. `action_id`
//! 4. the envelope's `occurred_at` as `<unix seconds>.<nanoseconds, 9 digits>`
//! 5. `actor`
//! 6. the number of `roles`, in decimal, then each role as its own field
//! 7. `method`
//! 8. `target`
//! 9. `outcome`: `succeeded`, `denied`, `invalid`, `failed` (or `unspecified`)
//! 10. `detail`
//! 11. `request_digest`
//!
//! Length prefixes make the encoding unambiguous: no two different records encode alike.

use canopy_kit::proto::event::v1::{ActionOutcome, ActionRecorded};
use sha2::{Digest, Sha256};

const TAG: &[u8] = b"canopy-trail-v1";

/// The name of an outcome in the hash, the read model and the CLI.
pub fn outcome_name(outcome: i32) -> &'static str {
    match ActionOutcome::try_from(outcome).unwrap_or(ActionOutcome::Unspecified) {
        ActionOutcome::Unspecified => "unspecified",
        ActionOutcome::Succeeded => "succeeded",
        ActionOutcome::Denied => "denied",
        ActionOutcome::Invalid => "invalid",
        ActionOutcome::Failed => "failed",
    }
}

/// The outcome named `name` (as [`outcome_name`] writes it).
pub fn outcome_from_name(name: &str) -> Option<ActionOutcome> {
    Some(match name {
        "succeeded" => ActionOutcome::Succeeded,
        "denied" => ActionOutcome::Denied,
        "invalid" => ActionOutcome::Invalid,
        "failed" => ActionOutcome::Failed,
        _ => return None,
    })
}

/// The canonical encoding of `record` recorded at `at` (seconds, nanoseconds); `record.hash`
/// is not part of it.
pub fn canonical(record: &ActionRecorded, at: (i64, i32)) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(TAG);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(record.previous_hash.as_bytes());
    field(record.index.to_string().as_bytes());
    field(record.action_id.as_bytes());
    field(format!("{}.{:09}", at.0, at.1).as_bytes());
    field(record.actor.as_bytes());
    field(record.roles.len().to_string().as_bytes());
    for role in &record.roles {
        field(role.as_bytes());
    }
    field(record.method.as_bytes());
    field(record.target.as_bytes());
    field(outcome_name(record.outcome).as_bytes());
    field(record.detail.as_bytes());
    field(record.request_digest.as_bytes());
    out
}

/// Hex SHA-256 of [`canonical`].
pub fn hash(record: &ActionRecorded, at: (i64, i32)) -> String {
    hex::encode(Sha256::digest(canonical(record, at)))
}

/// Hex SHA-256 of arbitrary bytes (request digests).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One stored message of the trail, as the verifier sees it.
#[derive(Debug, Clone)]
pub enum Stored {
    Record {
        seq: u64,
        record: Box<ActionRecorded>,
        at: (i64, i32),
    },
    /// A message on the trail's subject that is not a valid ActionRecorded envelope.
    Undecodable { seq: u64, error: String },
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The chain position where it breaks.
    pub index: u64,
    pub seq: u64,
    /// `index`, `previous_hash`, `hash` or `undecodable`.
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub checked: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub last_hash: String,
    pub broken: Option<Broken>,
}

/// Walks records in stream order and stops at the first broken link.
///
/// The oldest record kept starts the chain: when it is index 1 its `previous_hash` must be
/// empty; a later index means older records aged out (365 days), and its `previous_hash` is
/// taken as given. Every other record must carry the next index and the previous record's
/// hash, and its own hash must be the hash of its fields.
#[derive(Debug, Default)]
pub struct Walk {
    verdict: Verdict,
}

impl Walk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next stored message; `false` once the chain is broken (stop feeding).
    pub fn feed(&mut self, stored: Stored) -> bool {
        if self.verdict.broken.is_some() {
            return false;
        }
        let v = &mut self.verdict;
        let expected_index = if v.checked == 0 { 0 } else { v.last_index + 1 };
        let broken = |field, seq, index, expected: String, found: String| Broken {
            index,
            seq,
            field,
            expected,
            found,
        };
        let (seq, record, at) = match stored {
            Stored::Undecodable { seq, error } => {
                v.broken = Some(broken(
                    "undecodable",
                    seq,
                    expected_index.max(1),
                    "an ActionRecorded event".into(),
                    error,
                ));
                return false;
            }
            Stored::Record { seq, record, at } => (seq, record, at),
        };
        let problem = if v.checked > 0 && record.index != expected_index {
            Some(broken(
                "index",
                seq,
                expected_index,
                expected_index.to_string(),
                record.index.to_string(),
            ))
        } else if v.checked > 0 && record.previous_hash != v.last_hash {
            Some(broken(
                "previous_hash",
                seq,
                record.index,
                v.last_hash.clone(),
                record.previous_hash.clone(),
            ))
        } else if v.checked == 0 && record.index <= 1 && !record.previous_hash.is_empty() {
            Some(broken(
                "previous_hash",
                seq,
                record.index,
                String::new(),
                record.previous_hash.clone(),
            ))
        } else {
            let want = hash(&record, at);
            (want != record.hash)
                .then(|| broken("hash", seq, record.index, want, record.hash.clone()))
        };
        if let Some(p) = problem {
            v.broken = Some(p);
            return false;
        }
        if v.checked == 0 {
            v.first_index = record.index;
        }
        v.checked += 1;
        v.last_index = record.index;
        v.last_hash = record.hash.clone();
        true
    }

    pub fn finish(self) -> Verdict {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Stored> {
        let mut out = Vec::new();
        let mut prev = String::new();
        for i in 1..=n {
            let mut r = ActionRecorded {
                action_id: format!("a{i}"),
                actor: "alice".into(),
                roles: vec!["admin".into()],
                method: "/canopy.api.v1.PolicyService/SetPolicy".into(),
                target: String::new(),
                outcome: ActionOutcome::Succeeded as i32,
                detail: String::new(),
                request_digest: digest(b"x"),
                previous_hash: prev.clone(),
                hash: String::new(),
                index: i,
            };
            r.hash = hash(&r, (1_700_000_000 + i as i64, 5));
            prev = r.hash.clone();
            out.push(Stored::Record {
                seq: i + 10,
                record: Box::new(r),
                at: (1_700_000_000 + i as i64, 5),
            });
        }
        out
    }

    fn walk(records: Vec<Stored>) -> Verdict {
        let mut w = Walk::new();
        for r in records {
            if !w.feed(r) {
                break;
            }
        }
        w.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = walk(chain(5));
        assert_eq!(v.broken, None);
        assert_eq!((v.checked, v.first_index, v.last_index), (5, 1, 5));
        // A chain whose oldest records aged out still verifies from the oldest kept.
        let v = walk(chain(5).into_iter().skip(2).collect());
        assert_eq!((v.checked, v.first_index, v.broken), (3, 3, None));
    }

    #[test]
    fn the_first_broken_link_is_named() {
        // An edited field: the hash no longer matches.
        let mut c = chain(5);
        if let Stored::Record { record, .. } = &mut c[2] {
            record.actor = "mallory".into();
        }
        let b = walk(c).broken.unwrap();
        assert_eq!((b.index, b.field, b.seq), (3, "hash", 13));
        // A removed record: the index jumps.
        let mut c = chain(5);
        c.remove(1);
        let b = walk(c).broken.unwrap();
        assert_eq!((b.index, b.field), (2, "index"));
        assert_eq!(b.found, "3");
        // A forged record with its own consistent hash but a wrong previous hash.
        let mut c = chain(3);
        let mut forged = ActionRecorded {
            index: 4,
            previous_hash: "00".repeat(32),
            actor: "mallory".into(),
            ..Default::default()
        };
        forged.hash = hash(&forged, (1, 0));
        c.push(Stored::Record {
            seq: 99,
            record: Box::new(forged),
            at: (1, 0),
        });
        let b = walk(c).broken.unwrap();
        assert_eq!((b.index, b.field, b.seq), (4, "previous_hash", 99));
        // Something that is not a record at all.
        let mut c = chain(2);
        c.push(Stored::Undecodable {
            seq: 50,
            error: "garbage".into(),
        });
        let b = walk(c).broken.unwrap();
        assert_eq!((b.index, b.field), (3, "undecodable"));
        // Changing the time changes the hash.
        let Stored::Record { record, at, .. } = &chain(1)[0] else {
            unreachable!()
        };
        assert_ne!(hash(record, *at), hash(record, (at.0, at.1 + 1)));
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        let a = ActionRecorded {
            actor: "ab".into(),
            method: "c".into(),
            ..Default::default()
        };
        let b = ActionRecorded {
            actor: "a".into(),
            method: "bc".into(),
            ..Default::default()
        };
        assert_ne!(hash(&a, (0, 0)), hash(&b, (0, 0)));
    }
}
