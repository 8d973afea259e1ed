//! Integration tests of canopy-audit: one binary, one module per area.
//!
//! Each module is `#[cfg(test)]` so that the workspace's test-only clippy allowances
//! (`unwrap`, `expect`, `panic`) apply to its helpers too.

#[cfg(test)]
mod checks;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod common;
#[cfg(test)]
mod cross;
#[cfg(test)]
#[path = "../../src/generate.rs"]
mod generate;
#[cfg(test)]
mod manifests;
#[cfg(test)]
mod policy;
#[cfg(test)]
mod pss;
#[cfg(test)]
mod report;
#[cfg(test)]
mod throughput;
#[cfg(test)]
mod workloads;
