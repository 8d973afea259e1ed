//! The fake API server, driven by the real kube-rs client.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use canopy_testkit::{FakeKube, Fixture, eventually};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Resource, ResourceExt as _};
use serde_json::json;

use crate::{client, serve};

const WAIT: Duration = Duration::from_secs(10);

/// Pages through `api` with `limit` and returns every item's `namespace/name`, asserting that
/// no item shows up twice and that `remainingItemCount` counts down correctly.
async fn page_all<K>(api: &Api<K>, limit: u32) -> anyhow::Result<Vec<String>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(limit);
    loop {
        let page = api.list(&params).await?;
        assert!(page.items.len() <= limit as usize);
        seen.extend(page.items.iter().map(|o| {
            format!(
                "{}/{}",
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default()
            )
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                assert!(
                    page.metadata.remaining_item_count.is_some_and(|n| n > 0),
                    "a page with a continue token says how many remain"
                );
                params = params.continue_token(&token);
            }
            None => {
                assert_eq!(page.metadata.remaining_item_count, None);
                break;
            }
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an object was listed twice");
    Ok(seen)
}

#[tokio::test]
async fn version_and_discovery_work_with_the_real_client() {
    let (_kube, client, _) = serve("prod-eu").await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.34.1");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    assert!(version.platform.contains('/'));

    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let apps = discovery.get("apps").unwrap();
    assert!(
        apps.recommended_resources()
            .iter()
            .any(|(r, _)| r.kind == "Deployment")
    );
    let core = discovery.get("").unwrap();
    assert!(
        core.recommended_resources()
            .iter()
            .any(|(r, caps)| r.kind == "Pod" && caps.scope == kube::discovery::Scope::Namespaced)
    );
    let rbac = discovery.get("rbac.authorization.k8s.io").unwrap();
    assert!(
        rbac.recommended_resources()
            .iter()
            .any(|(r, caps)| r.kind == "ClusterRole"
                && caps.scope == kube::discovery::Scope::Cluster)
    );
}

#[tokio::test]
async fn paging_with_continue_tokens_yields_every_pod_once() {
    let (_kube, client, fixture) = serve("prod-eu").await.unwrap();
    let pods = page_all(&Api::<Pod>::all(client.clone()), 2).await.unwrap();
    let expected: BTreeSet<String> = fixture
        .of_kind("Pod")
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(pods.len(), expected.len());
    assert_eq!(pods.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let mut sorted = pods.clone();
    sorted.sort();
    assert_eq!(pods, sorted, "stable order by namespace/name");

    // Cluster-scoped and grouped resources page the same way.
    assert_eq!(
        page_all(&Api::<Node>::all(client.clone()), 2)
            .await
            .unwrap()
            .len(),
        3
    );
    let deployments = page_all(&Api::<Deployment>::all(client), 3).await.unwrap();
    assert_eq!(deployments.len(), fixture.of_kind("Deployment").count());
}

#[tokio::test]
async fn first_page_reports_the_remaining_count() {
    let (_kube, client, fixture) = serve("dev-ap").await.unwrap();
    let page = Api::<Pod>::all(client)
        .list(&ListParams::default().limit(4))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 4);
    let total = fixture.of_kind("Pod").count();
    assert_eq!(
        page.metadata.remaining_item_count,
        Some(i64::try_from(total - 4).unwrap())
    );
    assert!(page.items.iter().all(|p| p.metadata.uid.is_some()));
    assert!(page.metadata.resource_version.is_some());
}

#[tokio::test]
async fn namespaced_lists_stay_in_their_namespace() {
    let (_kube, client, fixture) = serve("prod-eu").await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "payments")
        .list(&ListParams::default())
        .await
        .unwrap();
    let expected = fixture
        .of_kind("Pod")
        .filter(|p| p["metadata"]["namespace"] == "payments")
        .count();
    assert!(expected > 0);
    assert_eq!(pods.items.len(), expected);
    assert!(
        pods.items
            .iter()
            .all(|p| p.namespace().as_deref() == Some("payments"))
    );

    let deployments = page_all(
        &Api::<Deployment>::namespaced(client.clone(), "checkout"),
        1,
    )
    .await
    .unwrap();
    assert_eq!(deployments, vec!["checkout/checkout-web".to_string()]);

    let empty = Api::<Pod>::namespaced(client, "no-such-namespace")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty());
}

#[tokio::test]
async fn missing_objects_are_real_404_statuses() {
    let (_kube, client, _) = serve("prod-eu").await.unwrap();
    let err = Api::<Pod>::namespaced(client.clone(), "payments")
        .get("no-such-pod")
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert!(status.is_not_found());
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("nope")
            .await
            .unwrap()
            .is_none()
    );
    let ns = Api::<Namespace>::all(client).get("payments").await.unwrap();
    assert_eq!(ns.name_any(), "payments");
}

#[tokio::test]
async fn selectors_filter_and_bad_input_is_a_400() {
    let (_kube, client, _) = serve("prod-eu").await.unwrap();
    let pods = Api::<Pod>::all(client.clone());
    let web = pods
        .list(&ListParams::default().labels("app=payments-api"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    assert!(
        web.items
            .iter()
            .all(|p| p.labels().get("app").map(String::as_str) == Some("payments-api"))
    );
    let set = pods
        .list(&ListParams::default().labels("app in (payments-api,checkout-web),team"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 4);

    let first = &web.items[0];
    let by_name = pods
        .list(&ListParams::default().fields(&format!("metadata.name={}", first.name_any())))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let in_ns = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().fields("metadata.namespace=kube-system"))
        .await
        .unwrap();
    assert!(!in_ns.items.is_empty());
    assert!(
        in_ns
            .items
            .iter()
            .all(|c| c.namespace().as_deref() == Some("kube-system"))
    );

    let paged = pods
        .list(&ListParams::default().labels("app=payments-api").limit(1))
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 1);
    let rest = pods
        .list(
            &ListParams::default()
                .labels("app=payments-api")
                .limit(1)
                .continue_token(paged.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].name_any(), paged.items[0].name_any());

    for params in [
        ListParams::default().labels("app in (a"),
        ListParams::default().continue_token("not-a-token"),
    ] {
        match pods.list(&params).await.unwrap_err() {
            kube::Error::Api(status) => {
                assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"))
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_sees_changes_made_after_it_started() {
    let (kube, client, _) = serve("prod-eu").await.unwrap();
    let api = Api::<ConfigMap>::namespaced(client, "payments");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    kube.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": "payments"}, "data": {"a": "1"}}))
        .unwrap();
    // Another namespace: must not show up in this watch.
    kube.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere", "namespace": "checkout"}})).unwrap();
    assert!(kube.delete("v1", "ConfigMap", Some("payments"), "late"));
    assert!(!kube.delete("v1", "ConfigMap", Some("payments"), "late"));

    let mut events = Vec::new();
    while events.len() < 2 {
        let event = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("stream open");
        match event {
            WatchEvent::Added(cm) => events.push(format!("ADDED {}", cm.name_any())),
            WatchEvent::Deleted(cm) => events.push(format!("DELETED {}", cm.name_any())),
            WatchEvent::Modified(cm) => events.push(format!("MODIFIED {}", cm.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(events, ["ADDED late", "DELETED late"]);
}

#[tokio::test]
async fn watch_from_zero_replays_the_current_state() {
    let (kube, client, fixture) = serve("dev-ap").await.unwrap();
    let api = Api::<Node>::all(client);
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = BTreeSet::new();
    while names.len() < fixture.of_kind("Node").count() {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(node) => {
                names.insert(node.name_any());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let node = names.first().unwrap().clone();
    kube.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"drained": "true"}}})).unwrap();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Modified(n) => {
            assert_eq!(n.labels().get("drained").map(String::as_str), Some("true"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn merge_patch_changes_the_object_and_is_recorded() {
    let (kube, client, _) = serve("prod-eu").await.unwrap();
    let api = Api::<Deployment>::namespaced(client, "payments");
    let before = api.get("payments-api").await.unwrap();
    let patch = json!({"metadata": {"labels": {"canary": "true"}}, "spec": {"replicas": 5}});
    let after = api
        .patch(
            "payments-api",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(
        after.labels().get("canary").map(String::as_str),
        Some("true")
    );
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(after.metadata.uid, before.metadata.uid);
    let rv = |d: &Deployment| {
        d.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&after) > rv(&before));
    let stored = kube
        .get("apps/v1", "Deployment", Some("payments"), "payments-api")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 5);
    assert_eq!(
        stored["metadata"]["labels"]["app"], "payments-api",
        "merge keeps untouched fields"
    );

    let requests = kube.requests();
    let recorded = requests
        .iter()
        .find(|r| {
            r.method == "PATCH"
                && r.path == "/apis/apps/v1/namespaces/payments/deployments/payments-api"
        })
        .unwrap();
    assert_eq!(recorded.body.as_ref(), Some(&patch));
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/deployments/payments-api"))
    );

    // Server-side apply is treated as a merge.
    let apply = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments-api"}, "spec": {"replicas": 2}});
    let after = api
        .patch(
            "payments-api",
            &PatchParams::apply("canopy-test"),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        after.labels().get("canary").map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn create_and_delete_through_the_client_bump_resource_versions() {
    let (kube, client, _) = serve("prod-eu").await.unwrap();
    let api = Api::<ConfigMap>::namespaced(client, "checkout");
    let start = kube.resource_version();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "fresh"}, "data": {"k": "v"}})).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.namespace().as_deref(), Some("checkout"));
    match api.create(&PostParams::default(), &cm).await.unwrap_err() {
        kube::Error::Api(status) => assert_eq!(status.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
    assert!(
        kube.get("v1", "ConfigMap", Some("checkout"), "fresh")
            .is_some()
    );
    api.delete("fresh", &DeleteParams::default()).await.unwrap();
    assert!(
        kube.get("v1", "ConfigMap", Some("checkout"), "fresh")
            .is_none()
    );
    assert!(kube.resource_version() >= start + 2);
    assert_eq!(
        kube.count_by_kind()["ConfigMap"],
        Fixture::load("prod-eu").unwrap().count_by_kind()["ConfigMap"]
    );
}

#[tokio::test]
async fn a_generated_100k_fixture_pages_through() {
    let fixture = Fixture::generated(100_000, 7);
    let expected = fixture.of_kind("Pod").count();
    assert!(fixture.len() >= 90_000, "{}", fixture.len());
    let kube = FakeKube::start(fixture).await.unwrap();
    let total: usize = kube.count_by_kind().values().sum();
    assert!(total >= 90_000);
    let pods = page_all(&Api::<Pod>::all(client(&kube).unwrap()), 500)
        .await
        .unwrap();
    assert_eq!(pods.len(), expected);
}

#[tokio::test]
async fn the_binary_serves_a_fixture_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy-fake-kube"))
        .args(["--fixture", "dev-ap", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 3);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(WAIT, "canopy-fake-kube to exit", || {
        let polled = child.try_wait();
        async move { Ok(polled?) }
    })
    .await
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn watching_from_a_version_older_than_the_history_is_gone() {
    let (_kube, client, _) = serve("prod-eu").await.unwrap();
    let mut stream = Api::<Pod>::all(client)
        .watch(&WatchParams::default().timeout(60), "1")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn stop_ends_open_watches() {
    let (kube, client, _) = serve("dev-ap").await.unwrap();
    let api = Api::<Pod>::namespaced(client, "dev");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();
    kube.stop();
    let end = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(end.as_ref().is_none_or(Result::is_err), "{end:?}");
}
