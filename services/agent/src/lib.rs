//! The agent: inventories and audits its cluster through the Kubernetes API and publishes
//! `AgentStarted`, heartbeats, chunked inventory snapshots and audits into its leaf's `EVENTS`
//! stream, applying the effective policy it reads from its leaf's `POLICIES`.
#![forbid(unsafe_code)]

mod adapters;
mod app;
mod audit;
mod commands;
pub mod config;
pub mod domain;
mod health;
pub mod liveness;
pub mod remediate;
pub mod requests;

pub use app::{App, run};

/// The kinds an inventory snapshot lists, in listing order.
pub fn inventoried_kinds() -> Vec<&'static str> {
    adapters::kube::KINDS.iter().map(|k| k.kind).collect()
}
