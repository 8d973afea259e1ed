//! FleetService over read models projected by the real ingestion.

use std::collections::HashMap;

use tonic::Code;

use canopy_kit::proto::api::v1::{
    GetClusterRequest, ListClustersRequest, fleet_service_client::FleetServiceClient,
};

use crate::stack::{Stack, heartbeat};

#[tokio::test]
async fn lists_and_gets_projected_clusters() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // alpha lost heartbeat 3; beta's AgentStarted is not in the log, only a heartbeat.
    stack
        .seed_cluster(
            "alpha",
            &[1, 2, 4],
            &[("Pod", "p1"), ("Pod", "p2"), ("Node", "n1")],
        )
        .await?;
    let last = stack.publish(&heartbeat("beta", 1)).await?;
    stack.projected(last).await?;

    let mut fleet = FleetServiceClient::new(stack.channel().await?);
    let list = fleet
        .list_clusters(ListClustersRequest::default())
        .await?
        .into_inner();
    let ids: Vec<&str> = list.clusters.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(list.next_page_token, "");

    let alpha = &list.clusters[0];
    assert_eq!(alpha.agent_instance_id, "alpha-i1");
    assert_eq!(alpha.agent_version, "0.1.0");
    assert_eq!(alpha.kubernetes_version, "v1.31.2");
    assert_eq!((alpha.node_count, alpha.pod_count), (3, 40));
    assert_eq!(alpha.heartbeat_interval_seconds, 10);
    assert_eq!(alpha.last_heartbeat_seq, 4);
    assert_eq!(alpha.heartbeats_received, 3);
    assert_eq!(alpha.heartbeats_missed, 1);
    assert_eq!(alpha.inventory_objects, 3);
    assert!(alpha.first_seen_at.is_some() && alpha.agent_started_at.is_some());
    assert!(alpha.last_heartbeat_at.is_some() && alpha.inventory_at.is_some());
    assert!(
        alpha.inventory_by_kind.is_empty(),
        "kinds are for GetCluster only"
    );

    let beta = &list.clusters[1];
    assert_eq!(beta.agent_instance_id, "beta-i1");
    assert_eq!(beta.agent_started_at, None);
    assert_eq!((beta.inventory_objects, beta.inventory_at), (0, None));

    let got = fleet
        .get_cluster(GetClusterRequest {
            cluster_id: "alpha".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        got.inventory_by_kind,
        HashMap::from([("Pod".to_owned(), 2), ("Node".to_owned(), 1)])
    );
    assert_eq!(got.heartbeats_missed, 1);
    assert_eq!(got.last_heartbeat_at, alpha.last_heartbeat_at);
    Ok(())
}

#[tokio::test]
async fn rejects_bad_requests_and_reports_unknown_clusters() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut fleet = FleetServiceClient::new(stack.channel().await?);
    let get = |id: &str| GetClusterRequest {
        cluster_id: id.into(),
    };

    let err = fleet.get_cluster(get("nowhere")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nowhere"), "{}", err.message());

    for bad in ["Bad_Id", "", "a.b", "-a"] {
        let err = fleet.get_cluster(get(bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            err.message().contains("cluster_id"),
            "{bad:?}: {}",
            err.message()
        );
    }
    let err = fleet.get_cluster(get("Bad_Id")).await.unwrap_err();
    assert!(
        err.message().contains("lowercase letters, digits and '-'"),
        "{}",
        err.message()
    );

    let err = fleet
        .list_clusters(ListClustersRequest {
            page_size: 10,
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn pages_through_clusters_in_id_order() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // Published out of order; ids chosen so that byte order differs from a locale's order.
    let ids = ["c-2", "c1", "a-9", "b", "c-10", "a10", "c0"];
    let mut last = 0;
    for id in ids {
        last = stack.publish(&heartbeat(id, 1)).await?;
    }
    stack.projected(last).await?;
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort_unstable();

    let mut fleet = FleetServiceClient::new(stack.channel().await?);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_clusters(ListClustersRequest {
                page_size: 3,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        sizes.push(page.clusters.len());
        seen.extend(page.clusters.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, expected);
    assert_eq!(sizes, [3, 3, 1]);

    for page_size in [0, 5000] {
        let all = fleet
            .list_clusters(ListClustersRequest {
                page_size,
                page_token: String::new(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(all.clusters.len(), ids.len(), "page_size {page_size}");
        assert_eq!(all.next_page_token, "");
    }
    Ok(())
}
