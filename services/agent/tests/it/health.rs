//! Health reports from the fake Kubernetes API (a cluster sick on purpose, metrics served or
//! not), and the remediation calls against it, each recorded by the fake server.

use async_nats::jetstream::{self, consumer::pull};
use canopy_agent::remediate::{self, RemediateError};
use canopy_kit::proto::event::v1::{
    CommandKind, CordonNodeParams, DeletePodParams, HealthReported, ScaleWorkloadParams,
    WorkloadRef, command_params::Params, envelope::Body,
};
use canopy_kit::streams;
use canopy_testkit::{FakeKube, Fixture, NatsProcess, eventually};
use futures::StreamExt as _;

use crate::support::{Agent, WAIT};

/// The newest `HealthReported` in EVENTS, if any.
async fn latest_health(js: &jetstream::Context) -> anyhow::Result<Option<HealthReported>> {
    let stream = js.get_stream(streams::EVENTS).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: "canopy.evt.*.health.reported".to_owned(),
            deliver_policy: jetstream::consumer::DeliverPolicy::Last,
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(None);
    }
    let mut messages = consumer.messages().await?;
    let Some(m) = tokio::time::timeout(WAIT, messages.next()).await? else {
        return Ok(None);
    };
    let m = m?;
    match canopy_kit::envelope::decode(&m.subject, &m.payload)?.body {
        Some(Body::HealthReported(h)) => Ok(Some(h)),
        _ => Ok(None),
    }
}

#[tokio::test]
async fn a_sick_cluster_reports_what_is_wrong() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let kube = FakeKube::start(Fixture::sick("prod-eu")?).await?;
    let agent = Agent::start(&nats, &kube.url(), &["--health-interval", "300ms"]).await;
    let js = jetstream::new(nats.connect().await?);
    let h = eventually(WAIT, "a health report", || latest_health(&js)).await?;
    agent.stop().await;

    let not_ready: Vec<_> = h
        .nodes
        .iter()
        .filter(|n| !n.ready)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(not_ready, ["worker-3"]);
    assert!(h.nodes.iter().any(|n| n.memory_pressure));
    let crash: Vec<_> = h
        .pods
        .iter()
        .filter(|p| p.reason == "CrashLoopBackOff")
        .map(|p| (p.owner_kind.as_str(), p.owner_name.as_str(), p.restarts))
        .collect();
    assert_eq!(
        crash,
        [("Deployment", "api", 14), ("Deployment", "api", 14)]
    );
    assert!(
        h.pods
            .iter()
            .any(|p| p.name == "batch-import" && p.reason == "Unschedulable")
    );
    let short: Vec<_> = h
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.desired, w.available))
        .collect();
    assert_eq!(short, [("api", 2, 0)]);
    assert_eq!(h.pvcs.len(), 1);
    assert_eq!(h.pvcs[0].name, "orders-data");
    // Only the certificate that expires within the 30-day window; the 10-year one is fine.
    let certs: Vec<_> = h.certificates.iter().map(|c| c.secret.as_str()).collect();
    assert_eq!(certs, ["shop-tls"]);
    assert!(h.certificates[0].subject.contains("shop.example.com"));
    assert!(h.metrics_available);
    let web = h
        .usage
        .iter()
        .find(|u| u.name == "web")
        .expect("usage of web");
    assert_eq!(
        (web.replicas, web.cpu_usage_millis, web.cpu_request_millis),
        (2, 483, 500)
    );
    Ok(())
}

#[tokio::test]
async fn without_a_metrics_api_the_report_says_so() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let kube = FakeKube::start(Fixture::load("prod-eu")?).await?;
    let agent = Agent::start(&nats, &kube.url(), &["--health-interval", "300ms"]).await;
    let js = jetstream::new(nats.connect().await?);
    let h = eventually(WAIT, "a health report", || latest_health(&js)).await?;
    agent.stop().await;
    assert!(!h.metrics_available);
    assert!(h.usage.is_empty());
    assert!(!h.nodes.is_empty());
    Ok(())
}

fn client_for(kube: &FakeKube) -> kube::Client {
    kube::Client::try_from(kube::Config::new(kube.url().parse().unwrap())).unwrap()
}

#[tokio::test]
async fn remediations_call_the_kubernetes_api_once_each() -> anyhow::Result<()> {
    let kube = FakeKube::start(Fixture::sick("prod-eu")?).await?;
    let client = client_for(&kube);
    let now = chrono::Utc::now();
    let api = WorkloadRef {
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "api".into(),
    };

    let done = remediate::execute(
        &client,
        CommandKind::RolloutRestart,
        Some(&Params::RolloutRestart(api.clone())),
        now,
    )
    .await?;
    assert!(done.starts_with("restarted Deployment shop/api"), "{done}");
    let patches = kube.requests_matching("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api");
    assert_eq!(patches.len(), 1);
    let d = kube
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert!(
        d.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .is_some()
    );

    remediate::execute(
        &client,
        CommandKind::CordonNode,
        Some(&Params::CordonNode(CordonNodeParams {
            name: "worker-3".into(),
        })),
        now,
    )
    .await?;
    let node = kube.get("v1", "Node", None, "worker-3").unwrap();
    assert_eq!(
        node.pointer("/spec/unschedulable"),
        Some(&serde_json::json!(true))
    );

    remediate::execute(
        &client,
        CommandKind::ScaleWorkload,
        Some(&Params::ScaleWorkload(ScaleWorkloadParams {
            workload: Some(WorkloadRef {
                name: "web".into(),
                ..api.clone()
            }),
            replicas: 3,
        })),
        now,
    )
    .await?;
    assert_eq!(
        kube.requests_matching(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale"
        )
        .len(),
        1
    );
    let web = kube
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(web.pointer("/spec/replicas"), Some(&serde_json::json!(3)));

    remediate::execute(
        &client,
        CommandKind::DeletePod,
        Some(&Params::DeletePod(DeletePodParams {
            namespace: "shop".into(),
            name: "batch-import".into(),
        })),
        now,
    )
    .await?;
    assert!(
        kube.get("v1", "Pod", Some("shop"), "batch-import")
            .is_none()
    );

    // Refusals: a kind that cannot be scaled, a pod that is not there.
    let e = remediate::execute(
        &client,
        CommandKind::ScaleWorkload,
        Some(&Params::ScaleWorkload(ScaleWorkloadParams {
            workload: Some(WorkloadRef {
                kind: "DaemonSet".into(),
                ..api.clone()
            }),
            replicas: 3,
        })),
        now,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RemediateError::Invalid(_)), "{e}");
    let e = remediate::execute(
        &client,
        CommandKind::DeletePod,
        Some(&Params::DeletePod(DeletePodParams {
            namespace: "shop".into(),
            name: "gone".into(),
        })),
        now,
    )
    .await
    .unwrap_err();
    assert_eq!(e.reason(), "kubernetes");
    Ok(())
}
