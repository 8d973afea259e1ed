//! The calls remediation makes (rollout restart, cordon, delete pod), JSON patch, bad input as
//! `Status` errors, the request log and the kubeconfig.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::serve;

const WAIT: Duration = Duration::from_secs(10);
const CRASHING_POD: &str = "orders-api-9h97czspms-pdq59";
const NODE: &str = "ip-10-20-3-40.ap-southeast-1.compute.internal";

/// One raw HTTP/1.1 request (for bodies and content types the typed client will not send);
/// returns the status code and the body parsed as JSON.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?
        .parse()?;
    Ok((code, serde_json::from_str(body)?))
}

#[tokio::test]
async fn rollout_restart_cordon_and_pod_delete_work_and_are_recorded() {
    let (kube, client, _) = serve("dev-ap").await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "dev");
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();
    kube.clear_requests();

    // kubectl rollout restart: a strategic merge patch of the pod template's annotations.
    let deployments = Api::<Deployment>::namespaced(client.clone(), "dev");
    let before = deployments.get("orders-api").await.unwrap();
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-23T00:00:00Z"
    }}}}});
    let after = deployments
        .patch(
            "orders-api",
            &PatchParams::default(),
            &Patch::Strategic(&restart),
        )
        .await
        .unwrap();
    let template = &after.spec.as_ref().unwrap().template;
    assert_eq!(
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt"))
            .map(String::as_str),
        Some("2026-11-23T00:00:00Z")
    );
    assert_eq!(
        template.spec.as_ref().unwrap().containers,
        before
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers,
        "the patch leaves the containers alone"
    );

    // kubectl cordon: a merge patch of spec.unschedulable on the node.
    let node = Api::<Node>::all(client.clone())
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(node.spec.and_then(|s| s.unschedulable), Some(true));
    assert_eq!(
        kube.get("v1", "Node", None, NODE).unwrap()["spec"]["unschedulable"],
        true
    );

    // Deleting the crash-looping pod removes it and tells watchers.
    pods.delete(CRASHING_POD, &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt(CRASHING_POD).await.unwrap().is_none());
    let deleted = loop {
        match tokio::time::timeout(WAIT, watch.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Deleted(pod) => break pod,
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(deleted.name_any(), CRASHING_POD);

    let restarts = kube.requests_matching("patch", "/apis/apps/v1/namespaces/dev/deployments/");
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(
        restarts[0].path,
        "/apis/apps/v1/namespaces/dev/deployments/orders-api"
    );
    assert_eq!(restarts[0].body.as_ref(), Some(&restart));
    let cordons = kube.requests_matching("PATCH", "/api/v1/nodes/");
    assert_eq!(cordons.len(), 1);
    assert_eq!(
        cordons[0].body,
        Some(json!({"spec": {"unschedulable": true}}))
    );
    let deletes = kube.requests_matching("DELETE", "/api/v1/namespaces/dev/pods/");
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].path.ends_with(CRASHING_POD));
    assert!(kube.requests_matching("DELETE", "/apis/").is_empty());
}

#[tokio::test]
async fn json_patch_and_bad_input_get_status_answers() {
    let (kube, _client, _) = serve("dev-ap").await.unwrap();
    let addr = kube.addr();
    let path = "/apis/apps/v1/namespaces/dev/deployments/orders-api";

    let (code, body) = raw(
        addr,
        "PATCH",
        path,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/replicas","value":7},{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 7);
    assert_eq!(body["metadata"]["labels"]["patched"], "yes");

    for (method, path, content_type, payload, want_code, want_reason) in [
        (
            "PATCH",
            path,
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/spec/nope/deeper"}]"#,
            422,
            "Invalid",
        ),
        (
            "PATCH",
            path,
            "text/plain",
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        (
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            "application/json",
            "{not json",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/dev/configmaps",
            "application/json",
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?limit=lots",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/pods?fieldSelector=status.phase%3D%3D%3DRunning",
            "application/json",
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/apis/nope.example.com/v1/widgets",
            "application/json",
            "",
            404,
            "NotFound",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/dev/pods/no-such-pod",
            "application/json",
            "",
            404,
            "NotFound",
        ),
    ] {
        let (code, status) = raw(addr, method, path, content_type, payload)
            .await
            .unwrap();
        let what = format!("{method} {path} {payload}");
        assert_eq!(code, want_code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["apiVersion"], "v1", "{what}");
        assert_eq!(status["status"], "Failure", "{what}");
        assert_eq!(status["reason"], want_reason, "{what}");
        assert_eq!(status["code"], want_code, "{what}");
    }
    // The failed JSON patch left the object as it was.
    let stored = kube
        .get("apps/v1", "Deployment", Some("dev"), "orders-api")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 7);
}

#[tokio::test]
async fn the_kubeconfig_points_a_client_at_the_fake() {
    let (kube, _client, fixture) = serve("prod-eu").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = kube.kubeconfig(dir.path()).unwrap();
    assert!(path.starts_with(dir.path()));

    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("prod-eu"));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        kube.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(namespaces.items.len(), fixture.of_kind("Namespace").count());
}

#[tokio::test]
async fn refused_requests_get_403_and_are_recorded_while_others_pass() {
    let (kube, client, _) = serve("dev-ap").await.unwrap();
    kube.refuse(
        "patch",
        "/apis/apps/v1/namespaces/dev/deployments/orders-api",
    );
    kube.clear_requests();
    let deployments = Api::<Deployment>::namespaced(client, "dev");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-23T00:00:00Z"
    }}}}});
    let err = deployments
        .patch(
            "orders-api",
            &PatchParams::default(),
            &Patch::Strategic(&restart),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    // Reading is still allowed, and the object is unchanged.
    let stored = deployments.get("orders-api").await.unwrap();
    assert!(
        stored
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_none_or(|a| !a.contains_key("kubectl.kubernetes.io/restartedAt"))
    );
    let patches = kube.requests_matching("PATCH", "/apis/apps/v1/namespaces/dev/deployments/");
    assert_eq!(patches.len(), 1, "the refused call is recorded");
}
