//! Pure rules of commands and schedules in the api: a request's id (derived from its
//! idempotency key), target and deadline checks, a command's status from its runs, paging, and
//! schedule checks. No I/O here; time comes in as a value.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;
use uuid::Uuid;

use canopy_kit::cron::{CronError, CronSpec};
use canopy_kit::labels;
use canopy_kit::proto::event::v1::{CommandTarget, command_target::Target};
use canopy_kit::subject::ClusterId;

pub const DEFAULT_TIMEOUT_MS: u64 = 5 * 60 * 1000;
pub const MAX_TIMEOUT: Duration = Duration::days(7);
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;
pub const MAX_KEY_LEN: usize = 256;
pub const DEFAULT_SCHEDULE_DEADLINE_SECONDS: u32 = 300;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("command {0:?} not found")]
    NotFound(String),
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The id of a new command: derived from the caller and the idempotency key when there is one
/// (the same key gives the same id), else a fresh UUID v7.
pub fn command_id(requested_by: &str, idempotency_key: &str) -> Result<String, CommandError> {
    if idempotency_key.is_empty() {
        return Ok(Uuid::now_v7().to_string());
    }
    if idempotency_key.len() > MAX_KEY_LEN {
        return Err(invalid(
            "idempotency_key",
            format!("longer than {MAX_KEY_LEN} bytes"),
        ));
    }
    Ok(Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("canopy/command/{requested_by}/{idempotency_key}").as_bytes(),
    )
    .to_string())
}

/// A command id given by a caller.
pub fn parse_command_id(value: &str) -> Result<String, CommandError> {
    Uuid::from_str(value)
        .map(|u| u.to_string())
        .map_err(|_| invalid("command_id", format!("{value:?} is not a UUID")))
}

/// The deadline: the one given (in the future, at most seven days ahead) or now + timeout.
pub fn deadline(
    now: DateTime<Utc>,
    given: Option<DateTime<Utc>>,
    timeout_ms: u64,
) -> Result<DateTime<Utc>, CommandError> {
    let d = match given {
        Some(d) => d,
        None => {
            let ms = if timeout_ms == 0 {
                DEFAULT_TIMEOUT_MS
            } else {
                timeout_ms
            };
            let ms = i64::try_from(ms).map_err(|_| invalid("timeout_ms", "too large"))?;
            if Duration::milliseconds(ms) > MAX_TIMEOUT {
                return Err(invalid("timeout_ms", "at most seven days"));
            }
            now + Duration::milliseconds(ms)
        }
    };
    if d <= now {
        return Err(invalid("deadline", "must be in the future"));
    }
    if d - now > MAX_TIMEOUT {
        return Err(invalid("deadline", "at most seven days ahead"));
    }
    Ok(d)
}

/// A target names one valid cluster id, or a selector of valid labels.
pub fn check_target(target: Option<&CommandTarget>) -> Result<(), CommandError> {
    match target.and_then(|t| t.target.as_ref()) {
        None => Err(invalid("target", "a cluster_id or a selector is required")),
        Some(Target::ClusterId(c)) => ClusterId::parse(c)
            .map(|_| ())
            .map_err(|e| invalid("target.cluster_id", e.to_string())),
        Some(Target::Selector(s)) => labels::validate_all(&s.match_labels)
            .map_err(|e| invalid("target.selector", e.to_string())),
    }
}

/// A run as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub state: String,
    pub rank: i16,
    pub reason: String,
}

/// The status of a command from its rejection and its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
}

impl Status {
    /// Nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }
}

/// Ranks below this are not ended (dispatched 10, accepted 20).
const ENDED_RANK: i16 = 30;

pub fn status(rejected_reason: &str, runs: &[RunSummary]) -> Status {
    if !rejected_reason.is_empty() {
        return Status::Rejected;
    }
    // Rank 0: only probe results arrived so far.
    let runs: Vec<&RunSummary> = runs.iter().filter(|r| r.rank > 0).collect();
    if runs.is_empty() {
        return Status::Pending;
    }
    if runs.iter().any(|r| r.rank < ENDED_RANK) {
        return Status::Running;
    }
    let late = |r: &&&RunSummary| {
        r.state == "timed_out" || (r.state == "failed" && r.reason == "deadline_passed")
    };
    if runs
        .iter()
        .any(|r| (r.state == "failed" || r.state == "rejected") && !late(&r))
    {
        Status::Failed
    } else if runs.iter().any(|r| late(&r)) {
        Status::TimedOut
    } else {
        Status::Succeeded
    }
}

/// ListCommands: filters and the page (token: the CONTROL sequence to continue below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsQuery {
    pub cluster_id: String,
    pub kind: i32,
    pub schedule_id: String,
    pub size: u32,
    pub before_seq: Option<i64>,
}

impl CommandsQuery {
    pub fn new(
        cluster_id: &str,
        kind: i32,
        schedule_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Self, CommandError> {
        if !cluster_id.is_empty() {
            ClusterId::parse(cluster_id).map_err(|e| invalid("cluster_id", e.to_string()))?;
        }
        let before_seq = if page_token.is_empty() {
            None
        } else {
            Some(
                page_token
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| invalid("page_token", "not a token this api gave"))?,
            )
        };
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            kind,
            schedule_id: schedule_id.to_owned(),
            size: match page_size {
                0 => DEFAULT_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE),
            },
            before_seq,
        })
    }
}

// === schedules ===

/// A checked cron expression and time zone.
pub fn cron_spec(expr: &str, time_zone: &str) -> Result<CronSpec, CommandError> {
    CronSpec::parse(expr, time_zone).map_err(|e| match e {
        CronError::TimeZone(_) => invalid("time_zone", e.to_string()),
        _ => invalid("cron", e.to_string()),
    })
}

/// Labels of a selector, sorted (for display).
pub fn sorted(labels: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_kit::proto::event::v1::LabelSelector;

    fn run(state: &str, rank: i16, reason: &str) -> RunSummary {
        RunSummary {
            state: state.into(),
            rank,
            reason: reason.into(),
        }
    }

    #[test]
    fn the_same_key_gives_the_same_id_and_no_key_a_new_one() -> Result<(), CommandError> {
        assert_eq!(command_id("a", "k1")?, command_id("a", "k1")?);
        assert_ne!(command_id("a", "k1")?, command_id("a", "k2")?);
        assert_ne!(command_id("a", "k1")?, command_id("b", "k1")?);
        assert_ne!(command_id("a", "")?, command_id("a", "")?);
        assert!(command_id("a", &"x".repeat(300)).is_err());
        Ok(())
    }

    #[test]
    fn deadlines_are_in_the_future_and_within_a_week() -> Result<(), CommandError> {
        let now = Utc::now();
        assert_eq!(
            deadline(now, None, 0)?,
            now + Duration::milliseconds(300_000)
        );
        assert_eq!(
            deadline(now, None, 1500)?,
            now + Duration::milliseconds(1500)
        );
        assert!(deadline(now, Some(now - Duration::seconds(1)), 0).is_err());
        assert!(deadline(now, Some(now + Duration::days(8)), 0).is_err());
        assert!(deadline(now, None, 8 * 24 * 3600 * 1000).is_err());
        Ok(())
    }

    #[test]
    fn targets_are_checked() {
        assert!(check_target(None).is_err());
        let t = |target| CommandTarget {
            target: Some(target),
        };
        assert!(check_target(Some(&t(Target::ClusterId("Bad_Id".into())))).is_err());
        assert!(check_target(Some(&t(Target::ClusterId("prod-eu".into())))).is_ok());
        let sel = |k: &str, v: &str| {
            Target::Selector(LabelSelector {
                match_labels: [(k.to_owned(), v.to_owned())].into(),
            })
        };
        assert!(check_target(Some(&t(sel("env", "prod")))).is_ok());
        assert!(check_target(Some(&t(sel("env", "a b")))).is_err());
    }

    #[test]
    fn the_status_follows_the_runs() {
        assert_eq!(status("no_match", &[]), Status::Rejected);
        assert_eq!(status("", &[]), Status::Pending);
        assert_eq!(status("", &[run("accepted", 0, "")]), Status::Pending);
        assert_eq!(
            status("", &[run("succeeded", 40, ""), run("accepted", 20, "")]),
            Status::Running
        );
        assert_eq!(
            status("", &[run("succeeded", 40, ""), run("succeeded", 40, "")]),
            Status::Succeeded
        );
        assert_eq!(
            status("", &[run("succeeded", 40, ""), run("timed_out", 35, "")]),
            Status::TimedOut
        );
        assert_eq!(
            status("", &[run("failed", 30, "deadline_passed")]),
            Status::TimedOut
        );
        assert_eq!(
            status(
                "",
                &[run("timed_out", 35, ""), run("failed", 40, "kubernetes")]
            ),
            Status::Failed
        );
        assert!(Status::Failed.is_final() && !Status::Running.is_final());
    }

    #[test]
    fn cron_errors_name_their_field() {
        assert!(matches!(
            cron_spec("0 3 * * *", "Mars/Olympus"),
            Err(CommandError::Invalid {
                field: "time_zone",
                ..
            })
        ));
        assert!(matches!(
            cron_spec("0 3 * *", ""),
            Err(CommandError::Invalid { field: "cron", .. })
        ));
        assert!(cron_spec("0 3 * * 1-5", "Europe/Paris").is_ok());
    }
}
