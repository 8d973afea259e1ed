//! Link events: the seed side watches each leaf's link and publishes `LinkLost` /
//! `LinkEstablished` on CONTROL when it changes, with hysteresis (a state is committed only after
//! it was observed on several checks in a row). The observation is the leafnode connection of
//! the seed's nats-server (`/leafz` of its monitoring endpoint: a connection whose remote
//! `server_name` is the cluster id) when `--monitor-url` is given, else the state of the
//! cluster's FLEET_EVENTS source.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{LinkDirection, LinkEstablished, LinkLost, envelope::Body};
use canopy_kit::subject::ClusterId;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::{info, warn};

/// How a watched cluster's link is made: who dials, and the trunk it goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub direction: LinkDirection,
    /// The trunk's name; empty for a direct link (the seed's own dialer counts as direct).
    pub via: String,
}

impl Route {
    /// A leaf that dials the seed itself (also a statically configured `--leaf`).
    pub fn leaf_dials() -> Self {
        Self {
            direction: LinkDirection::LeafDials,
            via: String::new(),
        }
    }

    /// Whether the seed's nats-server does not hold the leaf's connection itself (a trunk or
    /// the dialer relays it): then only the cluster's FLEET_EVENTS source tells whether it is up.
    pub fn relayed(&self) -> bool {
        !self.via.is_empty() || self.direction == LinkDirection::SeedDials
    }
}

/// Commits a link state after `after` equal observations in a row.
#[derive(Debug)]
pub struct Debounce {
    up_after: u32,
    down_after: u32,
    links: BTreeMap<String, Tracker>,
}

#[derive(Debug, Default)]
struct Tracker {
    committed: Option<bool>,
    streak_up: bool,
    streak: u32,
    last_up_ms: Option<i64>,
}

/// A committed change of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub cluster: String,
    pub up: bool,
    /// When the link was last observed up (for `LinkLost.last_contact`).
    pub last_up_ms: Option<i64>,
}

impl Debounce {
    pub fn new(up_after: u32, down_after: u32) -> Self {
        Self {
            up_after: up_after.max(1),
            down_after: down_after.max(1),
            links: BTreeMap::new(),
        }
    }

    /// Records one observation at `now_ms`; the change when the committed state moves.
    pub fn observe(&mut self, cluster: &str, up: bool, now_ms: i64) -> Option<Change> {
        let t = self.links.entry(cluster.to_owned()).or_default();
        if up {
            t.last_up_ms = Some(now_ms);
        }
        if t.streak > 0 && t.streak_up == up {
            t.streak = t.streak.saturating_add(1);
        } else {
            t.streak_up = up;
            t.streak = 1;
        }
        let needed = if up { self.up_after } else { self.down_after };
        if t.committed != Some(up) && t.streak >= needed {
            t.committed = Some(up);
            return Some(Change {
                cluster: cluster.to_owned(),
                up,
                last_up_ms: t.last_up_ms,
            });
        }
        None
    }
}

#[derive(Debug, Deserialize)]
struct Leafz {
    #[serde(default)]
    leafs: Option<Vec<LeafConn>>,
}

#[derive(Debug, Deserialize)]
struct LeafConn {
    #[serde(default)]
    name: String,
}

/// The server names of the leafnode connections of the seed's nats-server.
///
/// # Errors
/// When the monitoring endpoint does not answer with `/leafz` JSON.
pub async fn connected_leaves(monitor: SocketAddr) -> anyhow::Result<BTreeSet<String>> {
    let body = tokio::time::timeout(Duration::from_secs(2), get(monitor, "/leafz"))
        .await
        .context("/leafz did not answer within 2s")??;
    let leafz: Leafz = serde_json::from_str(&body).context("unreadable /leafz reply")?;
    Ok(leafz
        .leafs
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.name)
        .collect())
}

/// A plain HTTP/1.0 GET (the monitoring endpoint is local and plain http).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("failed to connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("failed to send the request")?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .context("failed to read the response")?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {addr}");
    };
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "GET {path} on {addr}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

/// `http://host:port` → the socket address.
///
/// # Errors
/// When the URL is not a plain http URL with an IP address and port.
pub fn monitor_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--monitor-url {url:?} must start with http://"))?;
    rest.trim_end_matches('/')
        .parse()
        .with_context(|| format!("--monitor-url {url:?} must be http://IP:PORT"))
}

/// Publishes the change on CONTROL; `route` fills in how an established link is made (`None`:
/// the cluster is no longer watched, so it is not known).
///
/// # Errors
/// When the cluster id is invalid or CONTROL does not store the event.
pub async fn publish(
    js: &jetstream::Context,
    change: &Change,
    route: Option<&Route>,
) -> anyhow::Result<()> {
    let cluster = ClusterId::parse(&change.cluster).map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = if change.up {
        Body::LinkEstablished(LinkEstablished {
            direction: route.map_or(LinkDirection::Unspecified, |r| r.direction) as i32,
            via: route.map(|r| r.via.clone()).unwrap_or_default(),
        })
    } else {
        Body::LinkLost(LinkLost {
            reason: "no leafnode connection from the cluster's leaf".to_owned(),
            last_contact: change.last_up_ms.map(|ms| prost_types::Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
            }),
        })
    };
    let env = envelope::new(&cluster, "gateway-leafnode", body);
    canopy_kit::publish::publish(js, &env)
        .await
        .context("failed to publish the link event")?;
    if change.up {
        info!(
            cluster = %change.cluster,
            direction = route.map_or("unknown", |r| r.direction.as_str_name()),
            via = route.map_or("", |r| r.via.as_str()),
            "link established"
        );
    } else {
        warn!(cluster = %change.cluster, "link lost");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leaf_dialing_the_seed_directly_is_seen_in_leafz() {
        assert!(!Route::leaf_dials().relayed());
        let trunked = Route {
            direction: LinkDirection::LeafDials,
            via: "trunk-eu".into(),
        };
        assert!(trunked.relayed());
        let dialed = Route {
            direction: LinkDirection::SeedDials,
            via: String::new(),
        };
        assert!(dialed.relayed());
    }

    #[test]
    fn commits_only_after_a_streak_and_ignores_flaps() {
        let mut d = Debounce::new(2, 2);
        assert_eq!(d.observe("a", true, 0), None);
        assert_eq!(
            d.observe("a", true, 1),
            Some(Change {
                cluster: "a".into(),
                up: true,
                last_up_ms: Some(1)
            })
        );
        // One missed check, then back: no event.
        assert_eq!(d.observe("a", false, 2), None);
        assert_eq!(d.observe("a", true, 3), None);
        assert_eq!(d.observe("a", false, 4), None);
        assert_eq!(
            d.observe("a", false, 5),
            Some(Change {
                cluster: "a".into(),
                up: false,
                last_up_ms: Some(3)
            })
        );
        assert_eq!(d.observe("a", false, 6), None, "committed once");
    }

    #[test]
    fn monitor_urls() {
        assert_eq!(monitor_addr("http://127.0.0.1:8222").unwrap().port(), 8222);
        assert!(monitor_addr("https://x:1").is_err());
        assert!(monitor_addr("127.0.0.1:8222").is_err());
    }
}
