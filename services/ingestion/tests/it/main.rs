//! Ingestion against a real nats-server and a real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // shared test helpers

mod audits;
mod common;
mod interconnects;
mod projection;
mod remediations;
mod trail;
