//! canopy-api: serves the fleet to users over gRPC, reading Postgres read models and
//! FLEET_EVENTS; it never writes Postgres.
#![forbid(unsafe_code)]

mod adapters;
mod app;
pub mod auth;
pub mod config;
pub mod domain;
mod target;

pub use app::{App, run};
