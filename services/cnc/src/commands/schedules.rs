//! Pure rules of cron schedules: the live schedules and the last tick each one fired, folded
//! from CONTROL (`ScheduleCreated`, `ScheduleDeleted`, and the `CommandRequested`s that carry a
//! schedule id), and which ticks are due. A tick fires as a `CommandRequested` whose id is
//! derived from (schedule, tick): fired again after a crash, the stream's duplicate window drops
//! it; after a restart, the replayed request says the tick was fired. Ticks missed while cnc was
//! down fire on restart when they are within the catch-up window, and are skipped otherwise.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::warn;
use uuid::Uuid;

use canopy_kit::cron::CronSpec;
use canopy_kit::proto::event::v1::{CommandRequested, ScheduleCreated, envelope::Body};

use super::domain::to_time;

/// Ticks one schedule fires at most in one go (a long catch-up window with a fast cron).
const MAX_TICKS: usize = 100;

#[derive(Debug, Clone)]
struct Live {
    created: ScheduleCreated,
    spec: CronSpec,
    created_at: DateTime<Utc>,
    last_fired: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct Schedules {
    live: BTreeMap<String, Live>,
    /// Ticks fired before the schedule's creation was read (cannot happen in stream order, kept
    /// for safety) and of deleted schedules are simply ignored.
    deleted: std::collections::BTreeSet<String>,
}

/// The id of the command a schedule fires for a tick.
pub fn command_id(schedule_id: &str, tick: DateTime<Utc>) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy/schedule/{schedule_id}/{}", tick.timestamp_millis()).as_bytes(),
    )
    .to_string()
}

impl Schedules {
    /// A CONTROL event stored at `at`.
    pub fn apply(&mut self, at: DateTime<Utc>, body: &Body) {
        match body {
            Body::ScheduleCreated(s) if !self.deleted.contains(&s.schedule_id) => {
                match CronSpec::parse(&s.cron, &s.time_zone) {
                    Ok(spec) => {
                        self.live.entry(s.schedule_id.clone()).or_insert(Live {
                            created: s.clone(),
                            spec,
                            created_at: at,
                            last_fired: None,
                        });
                    }
                    Err(e) => {
                        warn!(schedule_id = %s.schedule_id, error = %e, "schedule with an unreadable cron expression ignored");
                    }
                }
            }
            Body::ScheduleDeleted(d) => {
                self.live.remove(&d.schedule_id);
                self.deleted.insert(d.schedule_id.clone());
            }
            Body::CommandRequested(r) if !r.schedule_id.is_empty() => {
                if let (Some(live), Some(tick)) = (
                    self.live.get_mut(&r.schedule_id),
                    to_time(r.scheduled_for.as_ref()),
                ) {
                    live.last_fired = Some(live.last_fired.map_or(tick, |t| t.max(tick)));
                }
            }
            _ => {}
        }
    }

    /// The requests due at `now`: every tick after the last fired one (or the creation), not
    /// older than `catch_up`, oldest first.
    pub fn due(&self, now: DateTime<Utc>, catch_up: chrono::Duration) -> Vec<CommandRequested> {
        let mut out = Vec::new();
        for live in self.live.values() {
            // Ticks older than the window are passed over: they count as gone by.
            let oldest = now - catch_up - chrono::Duration::milliseconds(1);
            let from = live.last_fired.unwrap_or(live.created_at).max(oldest);
            for tick in live.spec.ticks_between(from, now, MAX_TICKS) {
                out.push(request(&live.created, tick));
            }
        }
        out
    }

    /// Records a fired tick (or a skipped one).
    pub fn fired(&mut self, schedule_id: &str, tick: DateTime<Utc>) {
        if let Some(live) = self.live.get_mut(schedule_id) {
            live.last_fired = Some(live.last_fired.map_or(tick, |t| t.max(tick)));
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn request(s: &ScheduleCreated, tick: DateTime<Utc>) -> CommandRequested {
    CommandRequested {
        command_id: command_id(&s.schedule_id, tick),
        kind: s.kind,
        target: s.target.clone(),
        params: s.params.clone(),
        deadline: Some(timestamp(
            tick + chrono::Duration::seconds(i64::from(s.deadline_seconds.max(1))),
        )),
        idempotency_key: String::new(),
        requested_by: format!("schedule:{}", s.schedule_id),
        schedule_id: s.schedule_id.clone(),
        scheduled_for: Some(timestamp(tick)),
        remediation_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::{CommandKind, ScheduleDeleted};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn every_minute() -> Body {
        Body::ScheduleCreated(ScheduleCreated {
            schedule_id: "s1".into(),
            name: "audit".into(),
            cron: "* * * * *".into(),
            time_zone: "UTC".into(),
            kind: CommandKind::RunAudit as i32,
            deadline_seconds: 30,
            ..Default::default()
        })
    }

    fn ticks(reqs: &[CommandRequested]) -> Vec<DateTime<Utc>> {
        reqs.iter()
            .filter_map(|r| to_time(r.scheduled_for.as_ref()))
            .collect()
    }

    const WINDOW: chrono::Duration = chrono::Duration::minutes(10);

    #[test]
    fn each_tick_fires_once_and_a_replayed_log_fires_nothing_twice() {
        let mut s = Schedules::default();
        s.apply(at("2026-01-10T12:00:30Z"), &every_minute());
        assert!(s.due(at("2026-01-10T12:00:59Z"), WINDOW).is_empty());
        let due = s.due(at("2026-01-10T12:01:00Z"), WINDOW);
        assert_eq!(ticks(&due), vec![at("2026-01-10T12:01:00Z")]);
        assert_eq!(due[0].requested_by, "schedule:s1");
        assert_eq!(
            to_time(due[0].deadline.as_ref()),
            Some(at("2026-01-10T12:01:30Z"))
        );
        s.fired("s1", at("2026-01-10T12:01:00Z"));
        assert!(s.due(at("2026-01-10T12:01:30Z"), WINDOW).is_empty());

        // A restarted cnc replays the creation and the fired request: nothing is due again, and
        // the tick's id is the same anyway.
        let mut replayed = Schedules::default();
        replayed.apply(at("2026-01-10T12:00:30Z"), &every_minute());
        replayed.apply(
            at("2026-01-10T12:01:00Z"),
            &Body::CommandRequested(due[0].clone()),
        );
        assert!(replayed.due(at("2026-01-10T12:01:30Z"), WINDOW).is_empty());
        assert_eq!(
            due[0].command_id,
            command_id("s1", at("2026-01-10T12:01:00Z"))
        );
    }

    #[test]
    fn ticks_missed_while_down_fire_within_the_catch_up_window_only() {
        let mut s = Schedules::default();
        s.apply(at("2026-01-10T12:00:30Z"), &every_minute());
        s.fired("s1", at("2026-01-10T12:01:00Z"));
        // Down from 12:01:10 to 12:04:10: three ticks missed, all within 10 minutes.
        let due = s.due(at("2026-01-10T12:04:10Z"), WINDOW);
        assert_eq!(
            ticks(&due),
            vec![
                at("2026-01-10T12:02:00Z"),
                at("2026-01-10T12:03:00Z"),
                at("2026-01-10T12:04:00Z")
            ]
        );
        // With a two-minute window the oldest is skipped.
        let due = s.due(at("2026-01-10T12:04:10Z"), chrono::Duration::minutes(2));
        assert_eq!(
            ticks(&due),
            vec![at("2026-01-10T12:03:00Z"), at("2026-01-10T12:04:00Z")]
        );
    }

    #[test]
    fn a_deleted_schedule_fires_no_more() {
        let mut s = Schedules::default();
        s.apply(at("2026-01-10T12:00:30Z"), &every_minute());
        s.apply(
            at("2026-01-10T12:00:40Z"),
            &Body::ScheduleDeleted(ScheduleDeleted {
                schedule_id: "s1".into(),
                deleted_by: "a".into(),
            }),
        );
        assert!(s.due(at("2026-01-10T12:05:00Z"), WINDOW).is_empty());
        // A creation replayed after its deletion stays deleted.
        s.apply(at("2026-01-10T12:00:30Z"), &every_minute());
        assert!(s.is_empty());
    }
}
