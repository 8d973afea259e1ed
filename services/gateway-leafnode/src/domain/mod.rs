//! Pure rules of the gateway: which stream sources the seed needs, and how a source's state
//! reads as link health.

pub mod interconnect;

use std::collections::BTreeSet;

use async_nats::jetstream::stream::Source;
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;

/// The sources FLEET_EVENTS must have: the existing ones without those of `revoked` clusters,
/// plus one per approved leaf that has none yet. Returns `None` when nothing changes, else the
/// new list with the clusters added and removed. Sources of clusters neither approved nor
/// revoked are kept: removal is revocation, an explicit decision.
pub fn wanted_sources(
    existing: &[Source],
    approved: &[ClusterId],
    revoked: &[ClusterId],
) -> Option<(Vec<Source>, Vec<ClusterId>, Vec<ClusterId>)> {
    let revoked_set: BTreeSet<&str> = revoked.iter().map(ClusterId::as_str).collect();
    let mut removed = Vec::new();
    let kept: Vec<Source> = existing
        .iter()
        .filter(|s| match streams::source_cluster(s) {
            Some(c) if revoked_set.contains(c.as_str()) => {
                removed.push(ClusterId::parse(&c).ok());
                false
            }
            _ => true,
        })
        .cloned()
        .collect();
    let removed: Vec<ClusterId> = removed.into_iter().flatten().collect();
    let have: BTreeSet<String> = kept.iter().filter_map(streams::source_cluster).collect();
    let added: Vec<ClusterId> = approved
        .iter()
        .filter(|c| !have.contains(c.as_str()) && !revoked_set.contains(c.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if added.is_empty() && removed.is_empty() {
        return None;
    }
    let mut all = kept;
    all.extend(added.iter().map(streams::leaf_source));
    Some((all, added, removed))
}

/// Link state as seen from the seed's source of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The source is receiving; `lag` messages are still to be copied.
    Up { lag: u64 },
    /// The source has not heard from the leaf for longer than the allowed silence.
    Down,
}

/// Reads a source's `active` (nanoseconds since the last contact, negative when never) and
/// `error` fields. The source heartbeats every few seconds while the link is up, so silence
/// beyond `max_silence_ns` or an error means the link is down.
pub fn link_state(active_ns: i64, lag: u64, has_error: bool, max_silence_ns: i64) -> LinkState {
    if has_error || active_ns < 0 || active_ns > max_silence_ns {
        LinkState::Down
    } else {
        LinkState::Up { lag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str) -> ClusterId {
        ClusterId::parse(id).unwrap()
    }

    #[test]
    fn adds_only_missing_sources_once_and_removes_revoked_ones() {
        let existing = vec![streams::leaf_source(&c("a"))];
        let (all, added, removed) =
            wanted_sources(&existing, &[c("a"), c("b"), c("b")], &[]).unwrap();
        assert_eq!(added, vec![c("b")]);
        assert!(removed.is_empty());
        assert_eq!(all.len(), 2);
        assert_eq!(streams::source_cluster(&all[1]).as_deref(), Some("b"));
        assert!(wanted_sources(&all, &[c("a"), c("b")], &[]).is_none());
        let (left, added, removed) = wanted_sources(&all, &[c("b")], &[c("a")]).unwrap();
        assert!(added.is_empty());
        assert_eq!(removed, vec![c("a")]);
        assert_eq!(left.len(), 1);
        assert!(wanted_sources(&left, &[c("b")], &[c("a")]).is_none());
    }

    #[test]
    fn silence_or_error_is_a_down_link() {
        let s = 15_000_000_000;
        assert_eq!(link_state(1_000, 3, false, s), LinkState::Up { lag: 3 });
        assert_eq!(link_state(s + 1, 0, false, s), LinkState::Down);
        assert_eq!(link_state(-1, 0, false, s), LinkState::Down);
        assert_eq!(link_state(1_000, 0, true, s), LinkState::Down);
    }
}
