//! Canopy's own credentials: NATS decentralized JWT auth (operator → accounts → users, signed
//! with `nkeys`), the per-service permission table, and the on-disk layout `canopyctl nats init`
//! writes.
#![forbid(unsafe_code)]

pub mod nats;
pub mod token;
