//! Pure fleet view: what the doctor knows of each cluster's liveness.

use std::collections::BTreeMap;

/// Newest heartbeat time (unix seconds) per cluster, as the events tell it.
#[derive(Debug, Default)]
pub struct FleetView {
    last_heartbeat: BTreeMap<String, i64>,
}

impl FleetView {
    /// Records a heartbeat; an older one (a redelivery, a late copy) does not move time back.
    pub fn heartbeat(&mut self, cluster: &str, at_unix: i64) {
        let e = self
            .last_heartbeat
            .entry(cluster.to_owned())
            .or_insert(at_unix);
        *e = (*e).max(at_unix);
    }

    pub fn clusters(&self) -> usize {
        self.last_heartbeat.len()
    }

    /// Seconds since the cluster's last heartbeat at `now_unix`.
    pub fn silence(&self, cluster: &str, now_unix: i64) -> Option<i64> {
        self.last_heartbeat
            .get(cluster)
            .map(|t| (now_unix - t).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_heartbeat() {
        let mut v = FleetView::default();
        v.heartbeat("a", 100);
        v.heartbeat("a", 90);
        v.heartbeat("b", 50);
        assert_eq!(v.clusters(), 2);
        assert_eq!(v.silence("a", 130), Some(30));
        assert_eq!(v.silence("c", 130), None);
    }
}
