//! Canopy's one Kubernetes security audit engine, shared by the cluster agent (objects listed
//! from the API) and `canopyctl audit` (manifest files in CI).
//!
//! - [`catalogue`]: every check of `CHECKS.md` (id, severity, kinds, upstream references).
//! - [`Auditor`]: the pure engine — per-object checks as objects stream in, cross-object checks
//!   at [`Auditor::finish`].
//! - [`manifest`]: reading YAML/JSON manifests (the only module with I/O besides [`cli`]).
//! - [`report`]: text, JSON and SARIF output.
//! - [`cli`]: the `canopyctl audit` command.
//! - `generate` (feature `generate`, and in unit tests): realistic generated objects for
//!   benchmarks.
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod cli;
mod engine;
#[doc(hidden)]
pub mod fast_yaml;
mod finding;
#[cfg(any(test, feature = "generate"))]
pub mod generate;
pub mod manifest;
mod policy;
pub mod report;

pub use catalogue::{
    CATALOGUE, Catalogue, CheckDef, CheckId, PSS_POLICY_VERSION, PssLevel, Severity, WORKLOAD_KINDS,
};
pub use engine::{Auditor, IGNORE_ANNOTATION, audit_object};
pub use finding::{Finding, ResourceRef, sort_findings};
pub use policy::{LevelFilter, Policy, PolicyError};
