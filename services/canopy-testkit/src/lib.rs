//! Dev-only test plumbing: real nats-server and Postgres on free ports, a fake Kubernetes API
//! server with fixtures, and `assert_eventually!`.
//!
//! Everything here starts processes on free loopback ports inside temp dirs and stops them on
//! drop, so tests stay parallel-safe and never touch the machine's shared servers.
#![forbid(unsafe_code)]

pub mod eventually;
pub mod fake_kube;
pub mod fixture;
pub mod nats;
pub mod postgres;
pub mod tcp_proxy;

pub mod http;
mod proc;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use eventually::{eventually, wait_until};
pub use fake_kube::{FakeKube, FakeKubeOptions, RecordedRequest};
pub use fixture::Fixture;
pub use nats::{NatsOpts, NatsProcess};
pub use postgres::Postgres;
pub use tcp_proxy::TcpProxy;

/// Ports already handed out by this process: the kernel may give the same ephemeral port to two
/// back-to-back binds once the first listener is closed, and parallel tests would then collide.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free TCP port on 127.0.0.1, never the same twice in one process.
///
/// # Errors
/// When no port can be bound on the loopback interface.
pub fn try_free_port() -> std::io::Result<u16> {
    let mut last_err = None;
    for _ in 0..64 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => {
                let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
                if seen.insert(addr.port()) {
                    return Ok(addr.port());
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no unused loopback port found in 64 tries",
        )
    }))
}

/// A free TCP port on 127.0.0.1 (binds `127.0.0.1:0`), never the same twice in one process.
///
/// Panics when the loopback interface cannot be bound: this is a test helper and a test cannot
/// do anything useful without a port (use [`try_free_port`] to handle the error).
#[allow(clippy::panic)]
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(e) => panic!("no free port on 127.0.0.1: {e}"),
    }
}

/// The root of the Canopy workspace (the folder holding the `[workspace]` Cargo.toml).
///
/// Starts from `CARGO_MANIFEST_DIR` at run time (set by cargo for any workspace crate's tests,
/// whether it sits one or two levels down), then from this crate's own manifest dir, and walks up
/// to the first `Cargo.toml` with a `[workspace]` table; falls back to two levels above this
/// crate.
pub fn workspace_root() -> PathBuf {
    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    runtime
        .iter()
        .chain(std::iter::once(&own))
        .find_map(|start| find_workspace_root(start))
        .unwrap_or_else(|| {
            own.parent()
                .and_then(Path::parent)
                .map_or_else(|| own.clone(), Path::to_path_buf)
        })
}

fn find_workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|line| line.trim() == "[workspace]")
            .then(|| dir.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        let port = free_port();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
        assert!(root.join("services/canopy-testkit").is_dir());
    }

    #[test]
    fn workspace_root_is_found_from_any_member_depth() {
        let root = workspace_root();
        assert_eq!(
            find_workspace_root(&root.join("services/agent")),
            Some(root.clone())
        );
        assert_eq!(
            find_workspace_root(&root.join("loadtest")),
            Some(root.clone())
        );
        assert_eq!(find_workspace_root(&root), Some(root));
    }
}
