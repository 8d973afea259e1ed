//! The agent against a real nats-server and the fake Kubernetes API server (real kube client).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // shared test helpers

mod agent;
mod audits;
mod faulty_kube;
mod health;
mod resilience;
mod support;
