//! Watches of the audited kinds through the Kubernetes watch API: each change (added, modified,
//! deleted) goes to the audit loop; when the server has forgotten the history a watch resumes
//! from (410 Gone), changes may have been missed and the loop is told to audit everything.

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::kube::Kind;
use crate::domain::audit::{Change, object_ref};

/// What a watch tells the audit loop.
#[derive(Debug)]
pub enum Watched {
    Change {
        kind: &'static str,
        change: Change,
    },
    /// Changes of `kind` may have been missed (the watch had to list again).
    Resync {
        kind: &'static str,
    },
}

/// Watches `kind` cluster-wide until `shutdown`, sending its changes on `tx`.
pub async fn watch_kind(
    client: kube::Client,
    kind: Kind,
    tx: mpsc::Sender<Watched>,
    shutdown: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource());
    let api_version = kind.api_version();
    let mut backoff = Duration::from_millis(500);
    let mut version: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = watch_once(&api, &kind, &api_version, &mut version, &tx) => outcome,
        };
        if tx.is_closed() {
            return;
        }
        match outcome {
            Ok(()) => {
                backoff = Duration::from_millis(500);
                failures = 0;
                continue;
            }
            Err(e) if gone(&e) => {
                version = None;
                let _ = tx.send(Watched::Resync { kind: kind.kind }).await;
                continue;
            }
            Err(e) => {
                failures += 1;
                // A kind refused for good keeps failing: say it once, then only at debug level.
                if failures == 1 || failures.is_multiple_of(100) {
                    warn!(
                        kind = kind.kind,
                        error = format!("{e:#}"),
                        "watch failed; retrying"
                    );
                } else {
                    debug!(
                        kind = kind.kind,
                        error = format!("{e:#}"),
                        "watch failed; retrying"
                    );
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The server no longer has the version the watch resumes from.
fn gone(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 410)
}

/// One watch call: lists for a starting version when there is none (a resync), then forwards
/// events until the server ends the call.
async fn watch_once(
    api: &Api<DynamicObject>,
    kind: &Kind,
    api_version: &str,
    version: &mut Option<String>,
    tx: &mpsc::Sender<Watched>,
) -> anyhow::Result<()> {
    use futures::TryStreamExt as _;
    let from = match version.clone() {
        Some(v) => v,
        None => {
            let list = api.list(&ListParams::default().limit(1)).await?;
            let v = list.metadata.resource_version.unwrap_or_default();
            *version = Some(v.clone());
            v
        }
    };
    let stream = api
        .watch(&WatchParams::default().timeout(290), &from)
        .await?;
    futures::pin_mut!(stream);
    while let Some(event) = stream.try_next().await? {
        let (change, rv) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let rv = o.metadata.resource_version.clone();
                let mut value = serde_json::to_value(&o)?;
                stamp(&mut value, api_version, kind.kind);
                (Change::Applied(value), rv)
            }
            WatchEvent::Deleted(o) => {
                let rv = o.metadata.resource_version.clone();
                let mut value = serde_json::to_value(&o)?;
                stamp(&mut value, api_version, kind.kind);
                (
                    Change::Deleted(object_ref(api_version, kind.kind, &value)),
                    rv,
                )
            }
            WatchEvent::Bookmark(b) => {
                *version = Some(b.metadata.resource_version);
                continue;
            }
            WatchEvent::Error(status) if status.code == 410 => {
                *version = None;
                let _ = tx.send(Watched::Resync { kind: kind.kind }).await;
                return Ok(());
            }
            WatchEvent::Error(status) => {
                anyhow::bail!("watch error {}: {}", status.code, status.message)
            }
        };
        if let Some(rv) = rv {
            *version = Some(rv);
        }
        if tx
            .send(Watched::Change {
                kind: kind.kind,
                change,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Lists and watches may leave `apiVersion` and `kind` out of each object; the engine needs them.
pub fn stamp(obj: &mut Value, api_version: &str, kind: &str) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".to_owned(), Value::from(api_version));
        m.insert("kind".to_owned(), Value::from(kind));
    }
}
