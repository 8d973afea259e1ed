//! Cron expressions of schedules (five fields, read in an IANA time zone), shared by the api
//! (which checks them) and cnc (which fires them).

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CronError {
    #[error(
        "{0:?} needs five fields (minute hour day-of-month month day-of-week), or six with seconds first"
    )]
    Fields(String),
    #[error("{expr:?}: {reason}")]
    Expression { expr: String, reason: String },
    #[error("{0:?} is not an IANA time zone")]
    TimeZone(String),
}

/// A checked cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
}

impl CronSpec {
    /// Reads a five-field expression (minute hour day-of-month month day-of-week), or a
    /// six-field one with seconds first, in `time_zone` (empty: UTC).
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, CronError> {
        let full = match expr.split_whitespace().count() {
            // The cron crate reads seconds first.
            5 => format!("0 {expr}"),
            6 => expr.to_owned(),
            _ => return Err(CronError::Fields(expr.to_owned())),
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| CronError::Expression {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
        let tz = if time_zone.is_empty() {
            chrono_tz::UTC
        } else {
            time_zone
                .parse::<chrono_tz::Tz>()
                .map_err(|_| CronError::TimeZone(time_zone.to_owned()))?
        };
        Ok(Self { schedule, tz })
    }

    /// The first tick strictly after `after`, in UTC.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Every tick in `(after, until]`, oldest first, at most `limit` of them.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.tz))
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t <= until)
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn reads_five_fields_in_a_time_zone() {
        assert!(matches!(
            CronSpec::parse("* * * *", ""),
            Err(CronError::Fields(_))
        ));
        assert!(matches!(
            CronSpec::parse("0 0 * * * * 2030", ""),
            Err(CronError::Fields(_))
        ));
        let seconds = CronSpec::parse("*/5 * * * * *", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            seconds.next_after(at("2026-01-10T12:00:01Z")),
            Some(at("2026-01-10T12:00:05Z"))
        );
        assert!(matches!(
            CronSpec::parse("61 * * * *", ""),
            Err(CronError::Expression { .. })
        ));
        assert!(matches!(
            CronSpec::parse("0 3 * * *", "Mars/Olympus"),
            Err(CronError::TimeZone(_))
        ));
        let paris = CronSpec::parse("0 3 * * *", "Europe/Paris").unwrap_or_else(|e| panic!("{e}"));
        // 03:00 in Paris in winter is 02:00 UTC, in summer 01:00 UTC.
        assert_eq!(
            paris.next_after(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-11T02:00:00Z"))
        );
        assert_eq!(
            paris.next_after(at("2026-07-10T12:00:00Z")),
            Some(at("2026-07-11T01:00:00Z"))
        );
        let every = CronSpec::parse("*/15 * * * *", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            every.ticks_between(at("2026-01-10T12:00:00Z"), at("2026-01-10T13:00:00Z"), 10),
            vec![
                at("2026-01-10T12:15:00Z"),
                at("2026-01-10T12:30:00Z"),
                at("2026-01-10T12:45:00Z"),
                at("2026-01-10T13:00:00Z"),
            ]
        );
    }
}
