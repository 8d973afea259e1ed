//! gateway-leafnode: links leaf clusters to the seed (interconnects, stream sources, link
//! health).

mod app;
pub mod config;
pub mod dialer;
pub mod domain;
pub mod interconnect;
pub mod leaf_link;
pub mod links;

pub use app::{App, reconcile_sources, run};
