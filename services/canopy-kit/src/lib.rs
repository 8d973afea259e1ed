//! Shared plumbing of every Canopy service: no business rules live here.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod cron;
pub mod envelope;
pub mod health;
pub mod labels;
pub mod nats;
pub mod publish;
pub mod service;
pub mod shutdown;
pub mod streams;
pub mod subject;
pub mod telemetry;

pub use canopy_proto as proto;
