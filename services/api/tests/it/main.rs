//! Integration tests of the api against real servers: nats-server, Postgres, and the real
//! ingestion projecting events into the read models.
// The whole crate is test code; clippy exempts only #[test] fns, not shared helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod auth;
mod events;
mod fleet;
mod health;
mod interconnect;
mod scopes;
mod stack;
mod trail;
