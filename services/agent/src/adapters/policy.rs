//! The cluster's effective policy from the leaf's POLICIES stream: the newest one at start (read
//! locally, so it works while the link to the seed is down), then every update; and the one
//! translation of `EffectivePolicy` (protobuf) into the audit domain.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use canopy_audit::{CheckId, LevelFilter, Policy, Severity};
use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{self as pb, envelope::Body};
use canopy_kit::streams;
use canopy_kit::subject::{self, ClusterId};
use chrono::DateTime;
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::domain::audit::{Derogation, EffectivePolicy, Scope};

/// The policy known so far: `None` until POLICIES was read once (or found missing).
pub type Current = watch::Receiver<Option<Arc<EffectivePolicy>>>;

/// Follows `canopy.pol.<cluster>.effective` on the leaf's POLICIES until `shutdown`, publishing
/// each new effective policy on `tx`. While POLICIES does not exist yet (the leaf gateway
/// creates it) the built-in default applies.
pub async fn follow(
    js: jetstream::Context,
    cluster: ClusterId,
    tx: watch::Sender<Option<Arc<EffectivePolicy>>>,
    shutdown: CancellationToken,
) {
    let subject = subject::policy(&cluster);
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow_once(&js, &subject, &tx) => outcome,
        };
        if let Err(e) = outcome {
            // Until the first answer, audits go ahead with what is known (the default).
            tx.send_if_modified(|p| {
                if p.is_none() {
                    *p = Some(Arc::new(EffectivePolicy::default()));
                    true
                } else {
                    false
                }
            });
            debug!(error = format!("{e:#}"), retry_in = ?backoff, "effective policy not followed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn follow_once(
    js: &jetstream::Context,
    subject: &str,
    tx: &watch::Sender<Option<Arc<EffectivePolicy>>>,
) -> anyhow::Result<()> {
    let stream = js.get_stream(streams::POLICIES).await?;
    // The stored one first, at once: an ordered consumer would take as long to say "nothing".
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => apply(tx, &m.subject, &m.payload),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            tx.send_if_modified(|p| {
                let fresh = p.is_none();
                if fresh {
                    *p = Some(Arc::new(EffectivePolicy::default()));
                }
                fresh
            });
        }
        Err(e) => return Err(e.into()),
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m?;
        apply(tx, &m.subject, &m.payload);
    }
    anyhow::bail!("the POLICIES consumer ended")
}

fn apply(tx: &watch::Sender<Option<Arc<EffectivePolicy>>>, subject: &str, payload: &[u8]) {
    let effective = match envelope::decode_on(Plane::Pol, subject, payload) {
        Ok(pb::Envelope {
            body: Some(Body::EffectivePolicy(p)),
            ..
        }) => from_proto(&p),
        Ok(_) => return,
        Err(e) => {
            warn!(error = %e, "effective policy does not decode; keeping the current one");
            return;
        }
    };
    tx.send_if_modified(|current| {
        if current.as_deref() == Some(&effective) {
            return false;
        }
        info!(
            version = effective.version,
            derogations = effective.derogations.len(),
            "effective policy received"
        );
        *current = Some(Arc::new(effective));
        true
    });
}

fn severity(v: i32) -> Option<Severity> {
    match pb::Severity::try_from(v).ok()? {
        pb::Severity::Low => Some(Severity::Low),
        pb::Severity::Medium => Some(Severity::Medium),
        pb::Severity::High => Some(Severity::High),
        pb::Severity::Critical => Some(Severity::Critical),
        pb::Severity::Unspecified => None,
    }
}

/// The audit domain's view of an effective policy. Check ids this build does not know (a newer
/// api) and derogations without an expiry are left out, with a warning, rather than rejecting
/// the whole policy.
pub fn from_proto(p: &pb::EffectivePolicy) -> EffectivePolicy {
    let given = p.policy.clone().unwrap_or_default();
    let known = |id: &String| {
        let ok = CheckId::parse(id).is_some();
        if !ok {
            warn!(check = %id, "policy names a check this agent does not know; ignored");
        }
        ok
    };
    let policy = Policy {
        disabled_checks: given
            .disabled_checks
            .iter()
            .filter(|c| known(c))
            .cloned()
            .collect::<BTreeSet<_>>(),
        severity_overrides: given
            .severity_overrides
            .iter()
            .filter(|(c, _)| known(c))
            .filter_map(|(c, s)| Some((c.clone(), severity(*s)?)))
            .collect(),
        registry_allow_list: given
            .registry_allow_list
            .iter()
            .filter(|r| !r.trim().is_empty())
            .cloned()
            .collect(),
        honour_ignore_annotations: given.honour_ignore_annotations,
        level: match given.level.as_str() {
            "baseline" => LevelFilter::Baseline,
            "restricted" => LevelFilter::Restricted,
            _ => LevelFilter::All,
        },
        audit_controlled_pods: false,
    };
    let derogations = p
        .derogations
        .iter()
        .filter_map(|d| {
            let expires = d.expires_at.as_ref().and_then(|t| {
                DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            });
            let Some(expires_at) = expires else {
                warn!(derogation = %d.derogation_id, "derogation without expiry; ignored");
                return None;
            };
            let s = d.scope.clone().unwrap_or_default();
            Some(Derogation {
                id: d.derogation_id.clone(),
                check: d.check.clone(),
                scope: Scope {
                    cluster_labels: s.cluster_labels.into_iter().collect(),
                    cluster_id: s.cluster_id,
                    namespace: s.namespace,
                    workload_kind: s.workload_kind,
                    workload_name: s.workload_name,
                    container: s.container,
                },
                expires_at,
            })
        })
        .collect();
    EffectivePolicy {
        version: p.policy_version,
        policy,
        derogations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_checks_and_undated_derogations_are_left_out_not_fatal() {
        let p = pb::EffectivePolicy {
            policy_version: 4,
            policy: Some(pb::Policy {
                disabled_checks: vec!["PULL-POLICY".into(), "FUTURE-CHECK".into()],
                severity_overrides: [
                    ("PRIVILEGED".to_owned(), pb::Severity::Low as i32),
                    ("NOPE".to_owned(), pb::Severity::High as i32),
                ]
                .into(),
                registry_allow_list: vec!["ghcr.io".into(), " ".into()],
                honour_ignore_annotations: true,
                level: "restricted".into(),
            }),
            derogations: vec![
                pb::Derogation {
                    derogation_id: "d1".into(),
                    check: "HOST-NET".into(),
                    expires_at: Some(prost_types::Timestamp {
                        seconds: 2_000_000_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                pb::Derogation {
                    derogation_id: "d2".into(),
                    ..Default::default()
                },
            ],
            control_sequence: 9,
        };
        let e = from_proto(&p);
        assert_eq!(e.version, 4);
        assert_eq!(
            e.policy.disabled_checks.iter().collect::<Vec<_>>(),
            ["PULL-POLICY"]
        );
        assert_eq!(e.policy.severity_overrides.len(), 1);
        assert_eq!(e.policy.registry_allow_list, ["ghcr.io"]);
        assert_eq!(e.policy.level, LevelFilter::Restricted);
        assert!(e.policy.validate().is_ok());
        assert_eq!(e.derogations.len(), 1);
        assert_eq!(e.derogations[0].id, "d1");
    }
}
