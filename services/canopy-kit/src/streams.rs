//! Stream definitions (DESIGN §3) and their idempotent creation at start-up.
//!
//! A stream that already exists with other settings is reported as drifted and left as it is:
//! silently changing retention or subjects of a live event log could lose data.

use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamError, GetStreamError, GetStreamErrorKind},
    stream::{Config, DiscardPolicy, External, RetentionPolicy, Source, StorageType},
};
use thiserror::Error;
use tracing::{info, warn};

use crate::subject::{self, ClusterId};

pub const EVENTS: &str = "EVENTS";
pub const FLEET_EVENTS: &str = "FLEET_EVENTS";
pub const COMMANDS: &str = "COMMANDS";
pub const CONTROL: &str = "CONTROL";
pub const AUDIT_TRAIL: &str = "AUDIT_TRAIL";
pub const DEAD_LETTER: &str = "DEAD_LETTER";
pub const POLICIES: &str = "POLICIES";

/// JetStream domain of the seed's hub server.
pub const SEED_DOMAIN: &str = "seed";

const DAY: Duration = Duration::from_secs(24 * 3600);
const DEDUP_WINDOW: Duration = Duration::from_secs(120);

fn base(name: &str, subjects: Vec<String>, max_age: Duration, description: &str) -> Config {
    Config {
        name: name.to_owned(),
        subjects,
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_age,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: 1,
        description: Some(description.to_owned()),
        ..Default::default()
    }
}

/// The leaf's `EVENTS`: everything the cluster's agent and gateway publish, kept long enough to
/// cover a week-long outage of the link to the seed.
pub fn leaf_events(cluster: &ClusterId, max_bytes: i64) -> Config {
    Config {
        max_bytes,
        ..base(
            EVENTS,
            vec![subject::cluster_events(cluster)],
            7 * DAY,
            "Events of this cluster, sourced by the seed's FLEET_EVENTS",
        )
    }
}

/// Where the seed delivers what a leaf sources from it (`canopy.down.<cluster>`): the leaf's
/// link user may receive only its own prefix.
pub fn downlink_prefix(cluster: &ClusterId) -> String {
    format!("canopy.down.{cluster}")
}

/// The leaf's `COMMANDS`: sources the seed's `COMMANDS`, filtered to this cluster.
pub fn leaf_commands(cluster: &ClusterId, seed_domain: &str) -> Config {
    Config {
        sources: Some(vec![Source {
            name: COMMANDS.to_owned(),
            filter_subject: Some(subject::cluster_commands(cluster)),
            external: Some(External {
                api_prefix: format!("$JS.{seed_domain}.API"),
                delivery_prefix: Some(downlink_prefix(cluster)),
            }),
            ..Default::default()
        }]),
        ..base(
            COMMANDS,
            Vec::new(),
            DAY,
            "Commands for this cluster, sourced from the seed",
        )
    }
}

/// The leaf's `POLICIES`: sources the seed's `POLICIES`, filtered to this cluster; keeps the
/// newest effective policy, with no age limit, so an agent that starts cut off from the seed
/// still applies the last policy it was given.
pub fn leaf_policies(cluster: &ClusterId, seed_domain: &str) -> Config {
    Config {
        sources: Some(vec![Source {
            name: POLICIES.to_owned(),
            filter_subject: Some(subject::cluster_policies(cluster)),
            external: Some(External {
                api_prefix: format!("$JS.{seed_domain}.API"),
                delivery_prefix: Some(downlink_prefix(cluster)),
            }),
            ..Default::default()
        }]),
        max_messages_per_subject: 1,
        ..base(
            POLICIES,
            Vec::new(),
            Duration::ZERO,
            "This cluster's effective audit policy, sourced from the seed",
        )
    }
}

/// The seed's `POLICIES`: the newest effective policy of every cluster
/// (`canopy.pol.<cluster>.effective`), published by cnc.
pub fn policies() -> Config {
    Config {
        max_messages_per_subject: 1,
        ..base(
            POLICIES,
            vec![format!("{}.>", subject::POLICY_PREFIX)],
            Duration::ZERO,
            "Effective audit policy per cluster: canopy.pol.<cluster>.effective",
        )
    }
}

/// The seed's `FLEET_EVENTS`: no subjects of its own, one source per leaf (see `leaf_source`).
pub fn fleet_events() -> Config {
    base(
        FLEET_EVENTS,
        Vec::new(),
        30 * DAY,
        "Events of every cluster, sourced from each leaf's EVENTS",
    )
}

/// The source that copies one leaf's `EVENTS` into `FLEET_EVENTS`, filtered to that cluster's
/// own subjects so that a leaf cannot inject another cluster's events.
pub fn leaf_source(cluster: &ClusterId) -> Source {
    Source {
        name: EVENTS.to_owned(),
        filter_subject: Some(subject::cluster_events(cluster)),
        external: Some(External {
            api_prefix: format!("$JS.{cluster}.API"),
            delivery_prefix: Some(format!("canopy.deliver.{cluster}")),
        }),
        ..Default::default()
    }
}

/// The cluster a `FLEET_EVENTS` source copies from, if it is one of Canopy's leaf sources.
pub fn source_cluster(source: &Source) -> Option<String> {
    let api = &source.external.as_ref()?.api_prefix;
    let cluster = api.strip_prefix("$JS.")?.strip_suffix(".API")?;
    (source.name == EVENTS).then(|| cluster.to_owned())
}

pub fn seed_commands() -> Config {
    base(
        COMMANDS,
        vec![format!("{}.>", subject::COMMAND_PREFIX)],
        7 * DAY,
        "Commands to clusters: canopy.cmd.<cluster>.<kind>",
    )
}

pub fn control() -> Config {
    base(
        CONTROL,
        vec![format!("{}.>", subject::CONTROL_PREFIX)],
        365 * DAY,
        "Control-plane events: canopy.ctl.<area>.<event>",
    )
}

/// `AUDIT_TRAIL`: one year, and neither deletes nor purges are allowed by the server.
pub fn audit_trail() -> Config {
    Config {
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..base(
            AUDIT_TRAIL,
            vec![format!("{}.>", subject::AUDIT_PREFIX)],
            365 * DAY,
            "Every action, kept one year: no delete, no purge",
        )
    }
}

pub fn dead_letter() -> Config {
    base(
        DEAD_LETTER,
        vec![format!("{}.>", subject::DLQ_PREFIX)],
        30 * DAY,
        "Events a service could not process, with the reason",
    )
}

/// Every stream of the seed.
pub fn seed_streams() -> Vec<Config> {
    vec![
        fleet_events(),
        seed_commands(),
        control(),
        audit_trail(),
        dead_letter(),
        policies(),
    ]
}

#[derive(Debug, Error)]
pub enum EnsureError {
    #[error("failed to read stream {name}: {source}")]
    Info {
        name: String,
        source: GetStreamError,
    },
    #[error("failed to create stream {name}: {source}")]
    Create {
        name: String,
        source: CreateStreamError,
    },
}

/// What `ensure` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Unchanged,
    /// The stream exists with other settings, each described by one line; it was not changed.
    Drifted(Vec<String>),
}

/// Creates the stream when it is missing; otherwise compares the settings Canopy owns and
/// reports drift without changing anything. Sources are compared only when the wanted config
/// names some (FLEET_EVENTS' sources are managed at run time by the gateway).
pub async fn ensure(js: &jetstream::Context, wanted: &Config) -> Result<Ensured, EnsureError> {
    match js.get_stream(&wanted.name).await {
        Ok(stream) => {
            let drift = drift(wanted, &stream.cached_info().config);
            if drift.is_empty() {
                Ok(Ensured::Unchanged)
            } else {
                warn!(stream = %wanted.name, ?drift, "stream exists with other settings; left unchanged");
                Ok(Ensured::Drifted(drift))
            }
        }
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(wanted.clone())
                .await
                .map_err(|source| EnsureError::Create {
                    name: wanted.name.clone(),
                    source,
                })?;
            info!(stream = %wanted.name, "stream created");
            Ok(Ensured::Created)
        }
        Err(source) => Err(EnsureError::Info {
            name: wanted.name.clone(),
            source,
        }),
    }
}

/// The differences between the wanted and the actual settings that Canopy owns.
pub fn drift(wanted: &Config, actual: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, w: String, a: String| {
        if w != a {
            out.push(format!("{what}: wanted {w}, found {a}"));
        }
    };
    let mut ws = wanted.subjects.clone();
    let mut as_ = actual.subjects.clone();
    ws.sort();
    as_.sort();
    cmp("subjects", format!("{ws:?}"), format!("{as_:?}"));
    cmp(
        "retention",
        format!("{:?}", wanted.retention),
        format!("{:?}", actual.retention),
    );
    cmp(
        "storage",
        format!("{:?}", wanted.storage),
        format!("{:?}", actual.storage),
    );
    cmp(
        "discard",
        format!("{:?}", wanted.discard),
        format!("{:?}", actual.discard),
    );
    cmp(
        "max_age",
        format!("{:?}", wanted.max_age),
        format!("{:?}", actual.max_age),
    );
    cmp(
        "max_bytes",
        wanted.max_bytes.to_string(),
        actual.max_bytes.to_string(),
    );
    cmp(
        "duplicate_window",
        format!("{:?}", wanted.duplicate_window),
        format!("{:?}", actual.duplicate_window),
    );
    cmp(
        "deny_delete",
        wanted.deny_delete.to_string(),
        actual.deny_delete.to_string(),
    );
    cmp(
        "deny_purge",
        wanted.deny_purge.to_string(),
        actual.deny_purge.to_string(),
    );
    cmp(
        "max_messages_per_subject",
        wanted.max_messages_per_subject.to_string(),
        actual.max_messages_per_subject.to_string(),
    );
    cmp(
        "allow_rollup",
        wanted.allow_rollup.to_string(),
        actual.allow_rollup.to_string(),
    );
    if let Some(w) = &wanted.sources {
        let key = |s: &Source| {
            format!(
                "{}|{:?}|{:?}",
                s.name,
                s.filter_subject,
                s.external.as_ref().map(|e| &e.api_prefix)
            )
        };
        let mut wk: Vec<_> = w.iter().map(key).collect();
        let mut ak: Vec<_> = actual.sources.iter().flatten().map(key).collect();
        wk.sort();
        ak.sort();
        cmp("sources", format!("{wk:?}"), format!("{ak:?}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_trail_is_immutable_for_a_year() {
        let c = audit_trail();
        assert!(c.deny_delete && c.deny_purge && !c.allow_rollup);
        assert_eq!(c.max_age, 365 * DAY);
    }

    #[test]
    fn drift_names_each_changed_setting() -> Result<(), crate::subject::SubjectError> {
        let c = ClusterId::parse("a")?;
        let wanted = leaf_events(&c, -1);
        assert!(drift(&wanted, &wanted).is_empty());
        let mut actual = wanted.clone();
        actual.max_age = DAY;
        actual.subjects = vec!["canopy.evt.>".into()];
        let d = drift(&wanted, &actual);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("subjects"));
        assert!(d[1].starts_with("max_age"));
        Ok(())
    }

    #[test]
    fn leaf_sources_are_scoped_to_their_cluster() -> Result<(), crate::subject::SubjectError> {
        let c = ClusterId::parse("leaf-a")?;
        let s = leaf_source(&c);
        assert_eq!(s.filter_subject.as_deref(), Some("canopy.evt.leaf-a.>"));
        assert_eq!(source_cluster(&s).as_deref(), Some("leaf-a"));
        Ok(())
    }
}
