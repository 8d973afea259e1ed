//! Interconnects end to end through the api with token authentication: requests recorded on
//! CONTROL (as the seed's gateway records them) are listed pending first; an admin approves one
//! (with `canopyctl`) and rejects another, which publishes `InterconnectApproved` /
//! `InterconnectRejected` by the caller's token subject and shows in the read model at once;
//! viewers and operators cannot decide; malformed and unknown ids are refused; the approved
//! cluster is revoked (`ClusterRevoked` on CONTROL).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_auth::token::{Role, TokenConfig, issue};
use canopy_e2e::{AuthChannel, LeafSpec, Stack, StackOptions, channel_with_token};
use canopy_kit::envelope::{self, Plane};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use canopy_proto::api::v1::{
    ApproveInterconnectRequest, Interconnect, ListInterconnectsRequest, RejectInterconnectRequest,
    RevokeClusterRequest, interconnect_service_client::InterconnectServiceClient,
};
use canopy_proto::event::v1::{Envelope, InterconnectRequested, LinkDirection, envelope::Body};
use canopy_testkit::{Fixture, eventually};
use futures::StreamExt as _;
use serde_json::Value;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);
const APPROVE: &str = "0193a4b2-7c1e-7d4f-9a3b-000000000001";
const REJECT: &str = "0193a4b2-7c1e-7d4f-9a3b-000000000002";

type Client = InterconnectServiceClient<AuthChannel>;

async fn client_as(stack: &Stack, subject: &str, role: Role) -> anyhow::Result<Client> {
    let keys = TokenConfig::load(stack.api_token_keys.as_deref().context("api auth is on")?)?;
    let token = issue(
        &keys,
        None,
        subject,
        role,
        BTreeMap::new(),
        Duration::from_secs(3600),
    )?;
    Ok(InterconnectServiceClient::new(
        channel_with_token(&stack.api_url(), Some(&token)).await?,
    ))
}

fn request(cluster: &str, id: &str, direction: LinkDirection) -> anyhow::Result<Envelope> {
    Ok(envelope::new(
        &ClusterId::parse(cluster)?,
        "gateway-leafnode",
        Body::InterconnectRequested(InterconnectRequested {
            request_id: id.to_owned(),
            link_user_public_key: format!("U{}", cluster.to_uppercase()),
            xkey_public_key: format!("X{}", cluster.to_uppercase()),
            labels: [("env".to_owned(), "edge".to_owned())].into(),
            direction: direction as i32,
            trunk: String::new(),
            leaf_url: if direction == LinkDirection::SeedDials {
                format!("nats-leaf://{cluster}.example:7422")
            } else {
                String::new()
            },
            gateway_version: "0.1.0".to_owned(),
            seed_user_jwt: String::new(),
        }),
    ))
}

async fn list(client: &mut Client, status: &str) -> Result<Vec<Interconnect>, tonic::Status> {
    Ok(client
        .list_interconnects(ListInterconnectsRequest {
            status: status.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .interconnects)
}

/// Every interconnect event on CONTROL, in order, with its envelope's cluster.
async fn control_events(js: &jetstream::Context) -> anyhow::Result<Vec<(String, Body)>> {
    let consumer = js
        .get_stream(streams::CONTROL)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "canopy.ctl.interconnect.>".to_owned(),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    for _ in 0..pending {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("CONTROL stopped delivering")?
            .context("the consumer ended")??;
        let env = envelope::decode_on(Plane::Ctl, &m.subject, &m.payload)?;
        out.push((env.cluster_id, env.body.context("no body")?));
    }
    Ok(out)
}

async fn canopyctl(
    stack: &Stack,
    token: &str,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    Ok(
        tokio::process::Command::new(canopy_e2e::binary("canopyctl")?)
            .env_remove("CANOPY_OUTPUT")
            .env("CANOPY_TOKEN", token)
            .arg("--api")
            .arg(stack.api_url())
            .args(args)
            .output()
            .await?,
    )
}

fn code(r: Result<impl std::fmt::Debug, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_approve_reject_and_revoke_interconnects() -> anyhow::Result<()> {
    let mut opts = StackOptions::new(vec![LeafSpec::new("prod-eu", Fixture::load("prod-eu")?)]);
    opts.api_auth = true;
    // The leaf links with pre-minted credentials: CONTROL holds only this test's interconnects.
    opts.interconnect = false;
    let stack = Stack::start(opts).await?;
    let js = jetstream::new(stack.seed.connect().await?);

    // Two leaves ask, as the seed's gateway records it.
    canopy_kit::publish::publish(&js, &request("edge-1", APPROVE, LinkDirection::LeafDials)?)
        .await?;
    canopy_kit::publish::publish(&js, &request("edge-2", REJECT, LinkDirection::SeedDials)?)
        .await?;

    let mut admin = client_as(&stack, "ada", Role::Admin).await?;
    let mut operator = client_as(&stack, "otto", Role::Operator).await?;
    let mut viewer = client_as(&stack, "vera", Role::Viewer).await?;
    let pending = eventually(WAIT, "both requests listed pending", || {
        let mut admin = admin.clone();
        async move {
            let l = list(&mut admin, "pending").await?;
            Ok((l.len() == 2).then_some(l))
        }
    })
    .await?;
    // Newest first among the pending ones.
    assert_eq!(pending[0].request_id, REJECT);
    assert_eq!(pending[0].cluster_id, "edge-2");
    assert_eq!(pending[0].direction, LinkDirection::SeedDials as i32);
    assert_eq!(pending[0].leaf_url, "nats-leaf://edge-2.example:7422");
    assert_eq!(pending[1].request_id, APPROVE);
    assert_eq!(pending[1].link_user_public_key, "UEDGE-1");
    assert_eq!(
        pending[1].labels.get("env").map(String::as_str),
        Some("edge")
    );

    // Operators may list but not decide; viewers may do neither.
    assert_eq!(list(&mut operator, "").await?.len(), 2);
    assert_eq!(code(list(&mut viewer, "").await), Code::PermissionDenied);
    for c in [&mut operator, &mut viewer] {
        let r = c
            .approve_interconnect(ApproveInterconnectRequest {
                request_id: APPROVE.to_owned(),
            })
            .await;
        assert_eq!(code(r), Code::PermissionDenied);
        let r = c
            .revoke_cluster(RevokeClusterRequest {
                cluster_id: "edge-1".to_owned(),
                reason: String::new(),
            })
            .await;
        assert_eq!(code(r), Code::PermissionDenied);
    }

    // Malformed and unknown ids.
    let r = admin
        .approve_interconnect(ApproveInterconnectRequest {
            request_id: "not an id!".to_owned(),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = admin
        .reject_interconnect(RejectInterconnectRequest {
            request_id: "0193a4b2-7c1e-7d4f-9a3b-00000000ffff".to_owned(),
            reason: String::new(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = list(&mut admin, "open").await;
    assert_eq!(code(r), Code::InvalidArgument);

    // canopyctl lists them and approves one, as the admin whose token it sends.
    let keys = TokenConfig::load(stack.api_token_keys.as_deref().context("keys")?)?;
    let ada = issue(
        &keys,
        None,
        "ada",
        Role::Admin,
        BTreeMap::new(),
        Duration::from_secs(3600),
    )?;
    let out = canopyctl(&stack, &ada, &["interconnects", "list"]).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("REQUEST ID"), "{text}");
    assert!(
        lines[1].starts_with(REJECT)
            && lines[1].contains(" edge-2 ")
            && lines[1].contains(" pending "),
        "{text}"
    );
    assert!(
        lines[2].starts_with(APPROVE) && lines[2].contains(" leaf-dials "),
        "{text}"
    );
    let out = canopyctl(
        &stack,
        &ada,
        &["-o", "json", "interconnects", "approve", APPROVE],
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approved: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["decided_by"], "ada");
    assert_eq!(approved["cluster"], "edge-1");
    assert!(approved["decided_at"].is_string(), "{approved}");

    // The other is rejected through the API.
    let rejected = admin
        .reject_interconnect(RejectInterconnectRequest {
            request_id: REJECT.to_owned(),
            reason: "unknown site".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (
            rejected.status.as_str(),
            rejected.decided_by.as_str(),
            rejected.reason.as_str()
        ),
        ("rejected", "ada", "unknown site")
    );
    // Decided requests cannot be decided again.
    let r = admin
        .approve_interconnect(ApproveInterconnectRequest {
            request_id: REJECT.to_owned(),
        })
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let out = canopyctl(&stack, &ada, &["interconnects", "approve", APPROVE]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Revocation: only a valid cluster id with an approved request.
    for (cluster, expected) in [
        ("Edge_1", Code::InvalidArgument),
        ("edge-9", Code::NotFound),
        ("edge-2", Code::FailedPrecondition),
    ] {
        let r = admin
            .revoke_cluster(RevokeClusterRequest {
                cluster_id: cluster.to_owned(),
                reason: String::new(),
            })
            .await;
        assert_eq!(code(r), expected, "{cluster}");
    }
    let out = canopyctl(
        &stack,
        &ada,
        &["clusters", "revoke", "edge-1", "--reason", "decommissioned"],
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "interconnect request {APPROVE} of cluster edge-1: revoked by ada (decommissioned)\n"
        )
    );
    let revoked = list(&mut admin, "revoked").await?;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].request_id, APPROVE);

    // CONTROL holds exactly the requests and the three decisions, by the caller's subject.
    let events = control_events(&js).await?;
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|(cluster, body)| {
            let what = match body {
                Body::InterconnectRequested(r) => format!("requested {}", r.request_id),
                Body::InterconnectApproved(a) => {
                    format!("approved {} by {}", a.request_id, a.approved_by)
                }
                Body::InterconnectRejected(r) => {
                    format!(
                        "rejected {} by {}: {}",
                        r.request_id, r.rejected_by, r.reason
                    )
                }
                Body::ClusterRevoked(r) => format!("revoked by {}: {}", r.revoked_by, r.reason),
                other => format!("{other:?}"),
            };
            (cluster.clone(), what)
        })
        .collect();
    let expected = [
        ("edge-1", format!("requested {APPROVE}")),
        ("edge-2", format!("requested {REJECT}")),
        ("edge-1", format!("approved {APPROVE} by ada")),
        ("edge-2", format!("rejected {REJECT} by ada: unknown site")),
        ("edge-1", "revoked by ada: decommissioned".to_owned()),
    ]
    .map(|(c, w)| (c.to_owned(), w));
    assert_eq!(summary, expected);
    stack.shutdown().await
}
