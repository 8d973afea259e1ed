//! Pure rules of the gateway: which stream sources the seed needs, and how a source's state
//! reads as link health.

use std::collections::BTreeSet;

use async_nats::jetstream::stream::Source;
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;

/// The sources FLEET_EVENTS must have: the existing ones plus one per approved leaf that has
/// none yet. Returns `None` when nothing is missing. Sources are never removed here: removal
/// is revocation, an explicit decision.
pub fn missing_sources(
    existing: &[Source],
    approved: &[ClusterId],
) -> Option<(Vec<Source>, Vec<ClusterId>)> {
    let have: BTreeSet<String> = existing
        .iter()
        .filter_map(streams::source_cluster)
        .collect();
    let added: Vec<ClusterId> = approved
        .iter()
        .filter(|c| !have.contains(c.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if added.is_empty() {
        return None;
    }
    let mut all = existing.to_vec();
    all.extend(added.iter().map(streams::leaf_source));
    Some((all, added))
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
    fn adds_only_missing_sources_once() {
        let existing = vec![streams::leaf_source(&c("a"))];
        let (all, added) = missing_sources(&existing, &[c("a"), c("b"), c("b")]).unwrap();
        assert_eq!(added, vec![c("b")]);
        assert_eq!(all.len(), 2);
        assert_eq!(streams::source_cluster(&all[1]).as_deref(), Some("b"));
        assert!(missing_sources(&all, &[c("a"), c("b")]).is_none());
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
