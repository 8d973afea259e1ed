//! Ingestion: the only writer of Postgres; projects FLEET_EVENTS into the read models.

mod adapters;
mod app;
pub mod config;
pub mod domain;

pub use adapters::postgres::READ_MODELS;
pub use app::{App, SOURCES, Source, rebuild, run};

/// Applies the read-model schema (idempotent).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("failed to migrate the read models: {e}"))
}
