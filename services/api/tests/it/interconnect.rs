//! InterconnectService against the real ingestion: requests listed pending first with their
//! filters, decisions published on CONTROL and visible in the reply, refusals for malformed,
//! unknown and already decided requests, revocation of an approved cluster, a retried decision
//! stored once.

use async_nats::jetstream;
use futures::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::api::v1::{
    ApproveInterconnectRequest, Interconnect, ListInterconnectsRequest, RejectInterconnectRequest,
    RevokeClusterRequest, interconnect_service_client::InterconnectServiceClient,
};
use canopy_kit::proto::event::v1::{InterconnectRequested, LinkDirection, envelope::Body};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use canopy_testkit::eventually;

use crate::stack::{Stack, WAIT};

type Client = InterconnectServiceClient<Channel>;

async fn request(stack: &Stack, cluster: &str, id: &str) -> anyhow::Result<u64> {
    let env = envelope::new(
        &ClusterId::parse(cluster)?,
        "gateway-leafnode",
        Body::InterconnectRequested(InterconnectRequested {
            request_id: id.to_owned(),
            link_user_public_key: format!("U-{id}"),
            xkey_public_key: format!("X-{id}"),
            labels: [("site".to_owned(), cluster.to_owned())].into(),
            direction: LinkDirection::LeafDials as i32,
            gateway_version: "0.1.0".to_owned(),
            ..Default::default()
        }),
    );
    Ok(canopy_kit::publish::publish(&stack.js, &env).await?)
}

async fn list(
    c: &mut Client,
    status: &str,
    cluster: &str,
    limit: u32,
) -> anyhow::Result<Vec<Interconnect>> {
    Ok(c.list_interconnects(ListInterconnectsRequest {
        status: status.to_owned(),
        cluster_id: cluster.to_owned(),
        limit,
    })
    .await?
    .into_inner()
    .interconnects)
}

fn ids(list: &[Interconnect]) -> Vec<(&str, &str)> {
    list.iter()
        .map(|i| (i.request_id.as_str(), i.status.as_str()))
        .collect()
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

/// Interconnect decisions stored on CONTROL, as (envelope cluster, body).
async fn decisions(js: &jetstream::Context) -> anyhow::Result<Vec<(String, Body)>> {
    let consumer = js
        .get_stream(streams::CONTROL)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subjects: vec![
                "canopy.ctl.interconnect.approved".to_owned(),
                "canopy.ctl.interconnect.rejected".to_owned(),
                "canopy.ctl.interconnect.revoked".to_owned(),
            ],
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    for _ in 0..pending {
        let m = tokio::time::timeout(WAIT, messages.next())
            .await?
            .expect("a message")?;
        let env = envelope::decode_on(Plane::Ctl, &m.subject, &m.payload)?;
        out.push((env.cluster_id, env.body.expect("a body")));
    }
    Ok(out)
}

#[tokio::test]
async fn lists_decides_and_revokes_interconnects() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut c = InterconnectServiceClient::new(stack.channel().await?);
    // CONTROL exists once ingestion has started; requests as the seed's gateway records them.
    eventually(WAIT, "CONTROL to exist", || async {
        Ok(stack.js.get_stream(streams::CONTROL).await.ok().map(|_| ()))
    })
    .await?;
    request(&stack, "edge-1", "r1").await?;
    request(&stack, "edge-1", "r2").await?;
    request(&stack, "edge-2", "r3").await?;
    let last = request(&stack, "edge-3", "r4").await?;
    eventually(WAIT, "four requests listed", || {
        let mut c = c.clone();
        async move { Ok((list(&mut c, "", "", 0).await?.len() == 4).then_some(())) }
    })
    .await?;
    assert!(last >= 4);

    // Pending first, newest first; the older request of edge-1 is superseded.
    let all = list(&mut c, "", "", 0).await?;
    assert_eq!(
        ids(&all),
        [
            ("r4", "pending"),
            ("r3", "pending"),
            ("r2", "pending"),
            ("r1", "superseded")
        ]
    );
    assert_eq!(
        all[0].labels.get("site").map(String::as_str),
        Some("edge-3")
    );
    assert_eq!(all[0].direction, LinkDirection::LeafDials as i32);
    assert_eq!(
        ids(&list(&mut c, "pending", "edge-1", 0).await?),
        [("r2", "pending")]
    );
    assert_eq!(list(&mut c, "", "", 2).await?.len(), 2);
    assert_eq!(
        refused(
            c.list_interconnects(ListInterconnectsRequest {
                status: "open".into(),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        refused(
            c.list_interconnects(ListInterconnectsRequest {
                cluster_id: "Edge 1".into(),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );

    // Approving answers with the applied decision (auth is off: the actor is anonymous).
    let approved = c
        .approve_interconnect(ApproveInterconnectRequest {
            request_id: "r2".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (approved.status.as_str(), approved.decided_by.as_str()),
        ("approved", "anonymous")
    );
    assert!(approved.decided_at.is_some());
    let rejected = c
        .reject_interconnect(RejectInterconnectRequest {
            request_id: "r3".into(),
            reason: "  unknown site ".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (rejected.status.as_str(), rejected.reason.as_str()),
        ("rejected", "unknown site")
    );

    // Refusals: malformed, unknown, no longer pending.
    let approve = |id: &str| ApproveInterconnectRequest {
        request_id: id.to_owned(),
    };
    assert_eq!(
        refused(c.approve_interconnect(approve("")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        refused(c.approve_interconnect(approve("r 2")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        refused(c.approve_interconnect(approve("r9")).await),
        Code::NotFound
    );
    assert_eq!(
        refused(c.approve_interconnect(approve("r1")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        refused(c.approve_interconnect(approve("r3")).await),
        Code::FailedPrecondition
    );
    let r = c
        .reject_interconnect(RejectInterconnectRequest {
            request_id: "r2".into(),
            reason: String::new(),
        })
        .await;
    assert_eq!(refused(r), Code::FailedPrecondition);

    // Revocation needs a valid cluster with an approved request.
    let revoke = |cluster: &str| RevokeClusterRequest {
        cluster_id: cluster.to_owned(),
        reason: "decommissioned".to_owned(),
    };
    assert_eq!(
        refused(c.revoke_cluster(revoke("-edge")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        refused(c.revoke_cluster(revoke("edge-9")).await),
        Code::NotFound
    );
    assert_eq!(
        refused(c.revoke_cluster(revoke("edge-2")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        refused(c.revoke_cluster(revoke("edge-3")).await),
        Code::FailedPrecondition
    );
    let revoked = c.revoke_cluster(revoke("edge-1")).await?.into_inner();
    assert_eq!(
        (
            revoked.request_id.as_str(),
            revoked.status.as_str(),
            revoked.reason.as_str()
        ),
        ("r2", "revoked", "decommissioned")
    );
    assert_eq!(
        refused(c.revoke_cluster(revoke("edge-1")).await),
        Code::FailedPrecondition
    );

    // CONTROL holds each decision once, about the request's cluster.
    let stored: Vec<(String, String)> = decisions(&stack.js)
        .await?
        .into_iter()
        .map(|(cluster, body)| {
            let what = match body {
                Body::InterconnectApproved(a) => {
                    format!("approved {} by {}", a.request_id, a.approved_by)
                }
                Body::InterconnectRejected(r) => format!("rejected {}: {}", r.request_id, r.reason),
                Body::ClusterRevoked(r) => format!("revoked by {}: {}", r.revoked_by, r.reason),
                other => format!("{other:?}"),
            };
            (cluster, what)
        })
        .collect();
    assert_eq!(
        stored,
        [
            ("edge-1".to_owned(), "approved r2 by anonymous".to_owned()),
            ("edge-2".to_owned(), "rejected r3: unknown site".to_owned()),
            (
                "edge-1".to_owned(),
                "revoked by anonymous: decommissioned".to_owned()
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_retried_decision_is_stored_once() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let c = InterconnectServiceClient::new(stack.channel().await?);
    eventually(WAIT, "CONTROL to exist", || async {
        Ok(stack.js.get_stream(streams::CONTROL).await.ok().map(|_| ()))
    })
    .await?;
    request(&stack, "edge-1", "r1").await?;
    eventually(WAIT, "the request listed", || {
        let mut c = c.clone();
        async move { Ok((list(&mut c, "pending", "", 0).await?.len() == 1).then_some(())) }
    })
    .await?;
    // Two approvals racing: both may pass the pending check, CONTROL keeps one.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) = tokio::join!(
        c1.approve_interconnect(ApproveInterconnectRequest {
            request_id: "r1".into()
        }),
        c2.approve_interconnect(ApproveInterconnectRequest {
            request_id: "r1".into()
        }),
    );
    let ok: Vec<Interconnect> = [a, b]
        .into_iter()
        .filter_map(|r| match r {
            Ok(r) => Some(r.into_inner()),
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                None
            }
        })
        .collect();
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|i| i.status == "approved"));
    assert_eq!(decisions(&stack.js).await?.len(), 1);
    Ok(())
}
