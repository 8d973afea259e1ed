//! The raw ceilings the pipeline is compared with, measured on the same servers in the same run:
//! async JetStream publish into a plain stream, and Postgres batch inserts with `UNNEST`.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;

/// A measured count over a wall-clock duration.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub count: u64,
    pub secs: f64,
}

impl Measured {
    pub fn per_s(&self) -> f64 {
        crate::stats::rate(self.count, self.secs)
    }
}

/// Publishes `count` copies of `payload` into a fresh file-backed stream, keeping up to
/// `window` acks in flight, and returns how long it took; the stream is deleted afterwards.
///
/// # Errors
/// When the stream cannot be created or a publish is not acknowledged.
pub async fn publish_to_plain_stream(
    js: &jetstream::Context,
    name: &str,
    payload: Bytes,
    count: u64,
    window: usize,
) -> anyhow::Result<Measured> {
    let subject = format!("loadtest.ceiling.{name}");
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| format!("failed to create the ceiling stream {name}"))?;
    let started = Instant::now();
    let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    for _ in 0..count {
        if in_flight.len() >= window.max(1)
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await
                .context("a ceiling publish was not acknowledged")?;
        }
        in_flight.push_back(
            js.publish(subject.clone(), payload.clone())
                .await
                .context("failed to publish to the ceiling stream")?,
        );
    }
    for ack in in_flight {
        ack.await
            .context("a ceiling publish was not acknowledged")?;
    }
    let secs = started.elapsed().as_secs_f64();
    js.delete_stream(name)
        .await
        .with_context(|| format!("failed to delete {name}"))?;
    Ok(Measured { count, secs })
}

/// Inserts `rows` rows shaped like the read models' (text keys, a counter, a timestamp, JSONB)
/// in transactions of `batch` rows with `INSERT … SELECT FROM UNNEST`, into a scratch table that
/// is dropped afterwards.
///
/// # Errors
/// When Postgres refuses a statement.
pub async fn postgres_unnest_insert(
    pool: &sqlx::PgPool,
    rows: u64,
    batch: usize,
) -> anyhow::Result<Measured> {
    sqlx::query(
        "CREATE TABLE loadtest_ceiling (cluster_id TEXT NOT NULL, seq BIGINT NOT NULL, \
         at TIMESTAMPTZ NOT NULL, doc JSONB NOT NULL, PRIMARY KEY (cluster_id, seq))",
    )
    .execute(pool)
    .await
    .context("failed to create the ceiling table")?;
    let batch = batch.max(1) as u64;
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut done = 0u64;
    while done < rows {
        let n = batch.min(rows - done);
        let clusters: Vec<String> = (done..done + n)
            .map(|i| format!("cluster-{}", i % 16))
            .collect();
        let seqs: Vec<i64> = (done..done + n).map(|i| i as i64).collect();
        let ats = vec![now; n as usize];
        let docs: Vec<serde_json::Value> = (done..done + n)
            .map(|i| serde_json::json!({"node_count": 3, "pod_count": i % 100}))
            .collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO loadtest_ceiling (cluster_id, seq, at, doc) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[], $4::jsonb[])",
        )
        .bind(&clusters)
        .bind(&seqs)
        .bind(&ats)
        .bind(&docs)
        .execute(&mut *tx)
        .await
        .context("failed to insert a ceiling batch")?;
        tx.commit().await?;
        done += n;
    }
    let secs = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE loadtest_ceiling")
        .execute(pool)
        .await?;
    Ok(Measured { count: rows, secs })
}
