//! Outside dependencies of ingestion: Postgres read models and the NATS batch handler.
pub mod postgres;
pub mod projector;
