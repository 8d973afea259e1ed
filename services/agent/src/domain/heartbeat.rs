//! Heartbeat sequencing: one gap-free sequence per agent instance, and the size last seen when
//! the Kubernetes API does not answer.

use std::time::Duration;

use canopy_kit::proto::event::v1::Heartbeat;

/// What one look at the Kubernetes API found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub kubernetes_version: String,
    pub nodes: u64,
    pub pods: u64,
}

/// Produces the heartbeats of one agent instance: 1, 2, 3, ... with no number skipped or reused,
/// whether or not the API answered (a heartbeat says the agent is alive; the counts are the
/// latest known).
#[derive(Debug, Clone)]
pub struct Heartbeats {
    instance: String,
    agent_version: String,
    interval_seconds: u32,
    last: Observation,
    sequence: u64,
}

impl Heartbeats {
    /// Starts a sequence for `instance`; `kubernetes_version` is the one read at start-up.
    pub fn new(
        instance: String,
        agent_version: String,
        interval: Duration,
        kubernetes_version: String,
    ) -> Self {
        Self {
            instance,
            agent_version,
            interval_seconds: interval_seconds(interval),
            last: Observation {
                kubernetes_version,
                nodes: 0,
                pods: 0,
            },
            sequence: 0,
        }
    }

    /// The next heartbeat, with `seen` when the API answered, else the last known figures.
    pub fn next(&mut self, seen: Option<Observation>) -> Heartbeat {
        if let Some(seen) = seen {
            self.last = seen;
        }
        self.sequence += 1;
        Heartbeat {
            agent_instance_id: self.instance.clone(),
            sequence: self.sequence,
            agent_version: self.agent_version.clone(),
            kubernetes_version: self.last.kubernetes_version.clone(),
            node_count: saturate(self.last.nodes),
            pod_count: saturate(self.last.pods),
            heartbeat_interval_seconds: self.interval_seconds,
        }
    }

    /// The sequence number of the last heartbeat produced (0 before the first).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// The heartbeat interval in whole seconds as the proto carries them, rounded up: readers judge
/// staleness by it, so it must not understate the interval, and 0 would read as "unknown".
pub fn interval_seconds(interval: Duration) -> u32 {
    let secs = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(version: &str, nodes: u64, pods: u64) -> Option<Observation> {
        Some(Observation {
            kubernetes_version: version.into(),
            nodes,
            pods,
        })
    }

    fn heartbeats() -> Heartbeats {
        Heartbeats::new(
            "i-1".into(),
            "0.1.0".into(),
            Duration::from_secs(10),
            "v1.34.0".into(),
        )
    }

    #[test]
    fn sequences_start_at_one_and_have_no_gaps_whether_or_not_the_api_answers() {
        let mut h = heartbeats();
        assert_eq!(h.sequence(), 0);
        let seqs: Vec<u64> = [seen("v1.34.0", 3, 10), None, None, seen("v1.34.0", 3, 11)]
            .into_iter()
            .map(|s| h.next(s).sequence)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(h.sequence(), 4);
    }

    #[test]
    fn without_an_answer_the_last_known_figures_are_reported() {
        let mut h = heartbeats();
        let first = h.next(None);
        assert_eq!(
            (first.kubernetes_version.as_str(), first.node_count),
            ("v1.34.0", 0)
        );
        h.next(seen("v1.34.2", 5, 120));
        let stale = h.next(None);
        assert_eq!(stale.kubernetes_version, "v1.34.2");
        assert_eq!((stale.node_count, stale.pod_count), (5, 120));
        assert_eq!(stale.agent_instance_id, "i-1");
        assert_eq!(stale.agent_version, "0.1.0");
        assert_eq!(stale.heartbeat_interval_seconds, 10);
    }

    #[test]
    fn counts_saturate_and_intervals_round_up_to_whole_seconds() {
        let mut h = Heartbeats::new(
            "i".into(),
            "v".into(),
            Duration::from_millis(200),
            String::new(),
        );
        let hb = h.next(seen("v", u64::MAX, 7));
        assert_eq!((hb.node_count, hb.pod_count), (u32::MAX, 7));
        assert_eq!(hb.heartbeat_interval_seconds, 1);
        assert_eq!(interval_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(interval_seconds(Duration::from_secs(10)), 10);
    }
}
