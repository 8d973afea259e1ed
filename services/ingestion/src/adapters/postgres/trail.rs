//! Writes the audit trail's read model, a batch per statement. A record already written (a
//! redelivery) is left as it is.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::domain::trail::{TrailRow, outcome_name};

/// Tables of this module (each must be in `READ_MODELS`).
#[cfg(test)]
pub const TABLES: &[&str] = &["audit_trail"];

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub async fn apply(tx: &mut Transaction<'_, Postgres>, rows: Vec<TrailRow>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut seq = Vec::with_capacity(n);
    let mut action_id = Vec::with_capacity(n);
    let mut at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    // Postgres has no arrays of arrays of different lengths: roles travel comma-joined.
    let mut roles = Vec::with_capacity(n);
    let mut method = Vec::with_capacity(n);
    let mut target = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut detail = Vec::with_capacity(n);
    let mut digest = Vec::with_capacity(n);
    let mut previous = Vec::with_capacity(n);
    let mut hash = Vec::with_capacity(n);
    let mut index = Vec::with_capacity(n);
    for r in rows {
        let rec = r.record;
        seq.push(big(r.seq));
        action_id.push(rec.action_id);
        at.push(r.at);
        actor.push(rec.actor);
        roles.push(rec.roles.join(","));
        method.push(rec.method);
        target.push(rec.target);
        outcome.push(outcome_name(rec.outcome).to_owned());
        detail.push(rec.detail);
        digest.push(rec.request_digest);
        previous.push(rec.previous_hash);
        hash.push(rec.hash);
        index.push(big(rec.index));
    }
    sqlx::query(
        "INSERT INTO audit_trail (seq, action_id, recorded_at, actor, roles, method, target,
                                  outcome, detail, request_digest, previous_hash, hash, chain_index)
         SELECT s, a, t, ac, CASE WHEN ro = '' THEN '{}'::text[] ELSE string_to_array(ro, ',') END,
                m, ta, o, d, rd, p, h, i
         FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                     $12::text[], $13::bigint[])
              AS u(s, a, t, ac, ro, m, ta, o, d, rd, p, h, i)
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(&seq)
    .bind(&action_id)
    .bind(&at)
    .bind(&actor)
    .bind(&roles)
    .bind(&method)
    .bind(&target)
    .bind(&outcome)
    .bind(&detail)
    .bind(&digest)
    .bind(&previous)
    .bind(&hash)
    .bind(&index)
    .execute(&mut **tx)
    .await
    .context("failed to write the audit trail")?;
    Ok(())
}
