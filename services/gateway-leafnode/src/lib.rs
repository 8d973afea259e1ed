//! gateway-leafnode: links leaf clusters to the seed (stream sources, link health).

mod app;
pub mod config;
pub mod domain;
pub mod links;

pub use app::{App, reconcile_sources, run};
