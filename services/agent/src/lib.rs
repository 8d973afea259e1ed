//! The agent: inventories its cluster through the Kubernetes API and publishes `AgentStarted`,
//! heartbeats and chunked inventory snapshots into its leaf's `EVENTS` stream.
#![forbid(unsafe_code)]

mod adapters;
mod app;
pub mod config;
pub mod domain;
pub mod requests;

pub use app::{App, run};

/// The kinds an inventory snapshot lists, in listing order.
pub fn inventoried_kinds() -> Vec<&'static str> {
    adapters::kube::KINDS.iter().map(|k| k.kind).collect()
}
