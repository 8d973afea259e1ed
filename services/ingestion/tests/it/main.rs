//! Ingestion against a real nats-server and a real Postgres.

mod common;
mod projection;
