//! End-to-end tests over the built binaries (`cargo build --workspace --bins` first; `make test`
//! does it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // shared test helpers

mod audit;
mod commands;
mod health;
mod interconnect;
mod interconnects_api;
mod isolation;
mod mesh;
mod trail;
