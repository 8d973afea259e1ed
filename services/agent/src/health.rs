//! The health loop: every `--health-interval`, lists what the health report needs from the
//! Kubernetes API (and the metrics API when it is served) and queues a `HealthReported`.

use std::time::Duration;

use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{Envelope, envelope::Body};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::adapters::kube::{self as k8s, Kind};
use crate::config::Config;
use crate::domain::health::{self, Listed, Settings};

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

const NODES: Kind = kind("", "v1", "Node", "nodes");
const PODS: Kind = kind("", "v1", "Pod", "pods");
const DEPLOYMENTS: Kind = kind("apps", "v1", "Deployment", "deployments");
const STATEFULSETS: Kind = kind("apps", "v1", "StatefulSet", "statefulsets");
const DAEMONSETS: Kind = kind("apps", "v1", "DaemonSet", "daemonsets");
const REPLICASETS: Kind = kind("apps", "v1", "ReplicaSet", "replicasets");
const PVCS: Kind = kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims");
const SECRETS: Kind = kind("", "v1", "Secret", "secrets");
const POD_METRICS: Kind = kind("metrics.k8s.io", "v1beta1", "PodMetrics", "pods");

/// Reports health every `cfg.health_interval` into the agent's event queue, until `shutdown`.
pub async fn health_loop(
    cfg: Config,
    kube: kube::Client,
    tx: mpsc::Sender<Envelope>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.health_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Like the heartbeat: a hung API server must not hold the loop past a few intervals.
    let budget = (cfg.health_interval * 3).clamp(Duration::from_secs(2), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let listed = tokio::select! {
            () = shutdown.cancelled() => return,
            listed = tokio::time::timeout(budget, list(&kube, cfg.page_size)) => listed,
        };
        let listed = match listed {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => {
                metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => "health")
                    .increment(1);
                warn!(
                    error = format!("{e:#}"),
                    "failed to read the cluster's health; no report this time"
                );
                continue;
            }
            Err(_) => {
                warn!(
                    ?budget,
                    "the cluster's health was not read in time; no report this time"
                );
                continue;
            }
        };
        let settings = Settings {
            now: chrono::Utc::now(),
            cert_window: chrono::Duration::from_std(cfg.cert_expiry_window)
                .unwrap_or(chrono::Duration::days(30)),
            restart_threshold: cfg.crashloop_restarts,
            stuck_after: chrono::Duration::minutes(5),
        };
        let report = health::report(&listed, &settings);
        debug!(
            nodes = report.nodes.len(),
            pods = report.pods.len(),
            workloads = report.workloads.len(),
            "health reported"
        );
        let env = envelope::new(&cfg.cluster_id, "agent", Body::HealthReported(report));
        if tx.try_send(env).is_err() {
            metrics::counter!("canopy_agent_health_dropped_total").increment(1);
            warn!("event queue full; health report dropped");
        } else {
            metrics::counter!("canopy_agent_health_reports_total").increment(1);
        }
    }
}

/// Lists what the report needs. A kind the API refuses for good (403/404) is read as empty; the
/// metrics API answering 404/403 means "not served" (`pod_metrics: None`), not an error.
async fn list(kube: &kube::Client, page_size: u32) -> anyhow::Result<Listed> {
    let (nodes, pods, deployments, statefulsets, daemonsets, replicasets, pvcs, secrets) = tokio::try_join!(
        all(kube, &NODES, page_size),
        all(kube, &PODS, page_size),
        all(kube, &DEPLOYMENTS, page_size),
        all(kube, &STATEFULSETS, page_size),
        all(kube, &DAEMONSETS, page_size),
        all(kube, &REPLICASETS, page_size),
        all(kube, &PVCS, page_size),
        all(kube, &SECRETS, page_size),
    )?;
    let pod_metrics = match list_pages(kube, &POD_METRICS, page_size).await {
        Ok(m) => Some(m),
        Err(e) if k8s::refused(&e).is_some() => None,
        Err(e) => {
            debug!(error = format!("{e:#}"), "metrics API not usable");
            None
        }
    };
    Ok(Listed {
        nodes,
        pods,
        deployments,
        statefulsets,
        daemonsets,
        replicasets,
        pvcs,
        secrets,
        pod_metrics,
    })
}

async fn all(kube: &kube::Client, kind: &Kind, page_size: u32) -> anyhow::Result<Vec<Value>> {
    match list_pages(kube, kind, page_size).await {
        Err(e) if k8s::refused(&e).is_some() => Ok(Vec::new()),
        other => other,
    }
}

async fn list_pages(
    kube: &kube::Client,
    kind: &Kind,
    page_size: u32,
) -> anyhow::Result<Vec<Value>> {
    let mut pager = k8s::Pager::new(kube, kind, page_size);
    let mut out = Vec::new();
    while let Some(page) = pager.next_page().await? {
        out.extend(page);
    }
    Ok(out)
}
