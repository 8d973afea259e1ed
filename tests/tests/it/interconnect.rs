//! Interconnects end to end, on real nats-servers: a leaf links only once an admin approved its
//! request, with credentials signed for the key it generated and sealed to it; a rejected leaf
//! never links; a revoked leaf loses its link and its credentials are refused; the same through
//! a trunk.

use std::time::Duration;

use canopy_auth::nats::jwt;
use canopy_e2e::{LeafSpec, Stack, StackOptions, stream_events};
use canopy_kit::proto::event::v1::{ClusterRevoked, InterconnectRejected, envelope::Body};
use canopy_kit::subject::ClusterId;
use canopy_testkit::{Fixture, wait_until};

const LONG: Duration = Duration::from_secs(60);

async fn publish_control(stack: &Stack, cluster: &str, body: Body) -> anyhow::Result<()> {
    let client = stack.seed.connect().await?;
    let js = canopy_kit::nats::jetstream(client, None);
    let env = canopy_kit::envelope::new(&ClusterId::parse(cluster)?, "test-admin", body);
    canopy_kit::publish::publish(&js, &env).await?;
    Ok(())
}

/// Whether FLEET_EVENTS has a source for `cluster`.
async fn sourced(stack: &Stack, cluster: &str) -> anyhow::Result<bool> {
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let mut s = js.get_stream("FLEET_EVENTS").await?;
    let info = s.info().await?;
    Ok(info
        .config
        .sources
        .iter()
        .flatten()
        .any(|src| canopy_kit::streams::source_cluster(src).as_deref() == Some(cluster)))
}

/// How many events of `cluster` FLEET_EVENTS holds.
async fn fleet_events_of(stack: &Stack, cluster: &str) -> anyhow::Result<u64> {
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let s = js.get_stream("FLEET_EVENTS").await?;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("canopy.evt.{cluster}.>"),
            ..Default::default()
        })
        .await?;
    Ok(consumer.cached_info().num_pending)
}

/// Records `cluster`'s revocation and waits until its link and its FLEET_EVENTS source are gone.
async fn revoke_and_wait_unlinked(stack: &Stack, cluster: &str) -> anyhow::Result<()> {
    publish_control(
        stack,
        cluster,
        Body::ClusterRevoked(ClusterRevoked {
            revoked_by: "admin".into(),
            reason: "decommissioned".into(),
        }),
    )
    .await?;
    wait_until(LONG, &format!("{cluster}'s link dropped"), || async {
        Ok(!linked(stack, cluster).await?)
    })
    .await?;
    wait_until(LONG, &format!("{cluster}'s source removed"), || async {
        Ok(!sourced(stack, cluster).await?)
    })
    .await
}

async fn linked(stack: &Stack, cluster: &str) -> anyhow::Result<bool> {
    let addr = stack.trunk.as_ref().unwrap_or(&stack.seed).monitor_addr();
    Ok(canopy_e2e::leafz_names(addr)
        .await?
        .iter()
        .any(|n| n == cluster))
}

#[tokio::test]
async fn a_leaf_links_only_once_approved_a_rejected_one_never_and_a_revoked_one_loses_its_link()
-> anyhow::Result<()> {
    let mut opts = StackOptions::new(vec![
        LeafSpec::new("prod-eu", Fixture::load("prod-eu")?).with_label("env", "prod"),
        LeafSpec::new("staging-us", Fixture::load("staging-us")?),
    ]);
    opts.approve_interconnects = false;
    let stack = Stack::start(opts).await?;

    // Both asked, with the public keys they generated; neither is linked or sourced.
    let a_id = stack.request_id("prod-eu").await?;
    let b_id = stack.request_id("staging-us").await?;
    stack.wait_requested("prod-eu", &a_id).await?;
    stack.wait_requested("staging-us", &b_id).await?;
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let requested = stream_events(&js, "CONTROL", "canopy.ctl.interconnect.requested").await?;
    let a_req = requested
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::InterconnectRequested(r)) if e.cluster_id == "prod-eu" => Some(r.clone()),
            _ => None,
        })
        .expect("prod-eu's request is on CONTROL");
    let a_dir = stack.leaves[0].link_dir.clone().expect("link dir");
    let a_user =
        nkeys::KeyPair::from_seed(std::fs::read_to_string(a_dir.join("link-user.nk"))?.trim())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(a_req.link_user_public_key, a_user.public_key());
    assert!(a_req.xkey_public_key.starts_with('X'));
    assert_eq!(a_req.labels.get("env").map(String::as_str), Some("prod"));
    assert!(!linked(&stack, "prod-eu").await?);
    assert!(!sourced(&stack, "prod-eu").await?);
    assert!(!a_dir.join("link.creds").exists());
    assert_eq!(fleet_events_of(&stack, "prod-eu").await?, 0);

    // Approved: prod-eu links and its events arrive.
    stack.approve_interconnect("prod-eu", "admin").await?;
    stack.wait_linked("prod-eu", LONG).await?;
    wait_until(LONG, "prod-eu's events in FLEET_EVENTS", || async {
        Ok(fleet_events_of(&stack, "prod-eu").await? > 0)
    })
    .await?;
    assert!(sourced(&stack, "prod-eu").await?);
    // The link credentials: the leaf's own key, the Canopy account, its own subjects only, 0600.
    let creds_path = a_dir.join("link.creds");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&creds_path)?.permissions().mode() & 0o777,
        0o600
    );
    let (token, seed) = jwt::parse_creds(&std::fs::read_to_string(&creds_path)?)?;
    assert_eq!(
        seed.trim(),
        a_user.seed().map_err(|e| anyhow::anyhow!("{e}"))?
    );
    let claims: jwt::Claims<jwt::UserClaims> = jwt::decode(&token)?;
    assert_eq!(claims.sub, a_user.public_key());
    assert_eq!(claims.nats.issuer_account, stack.nats_auth.canopy_account);
    assert!(claims.exp.is_some(), "link credentials expire");
    let publish = &claims.nats.permissions.publish.allow;
    assert!(publish.contains(&"canopy.deliver.prod-eu.>".to_owned()));
    assert!(
        publish
            .iter()
            .all(|p| !p.contains("staging-us") && p != ">")
    );
    assert_eq!(
        claims.nats.allowed_connection_types,
        vec!["LEAFNODE".to_owned()]
    );
    // The seed's gateway reports the link.
    wait_until(LONG, "LinkEstablished of prod-eu", || async {
        let links = stream_events(&js, "CONTROL", "canopy.ctl.link.established").await?;
        Ok(links.iter().any(|e| e.cluster_id == "prod-eu"))
    })
    .await?;

    // Rejected: staging-us is told so and never links.
    publish_control(
        &stack,
        "staging-us",
        Body::InterconnectRejected(InterconnectRejected {
            request_id: b_id.clone(),
            rejected_by: "admin".into(),
            reason: "unknown cluster".into(),
        }),
    )
    .await?;
    let b_log = stack.leaves[1].gateway.log_file().to_path_buf();
    wait_until(LONG, "staging-us told it was rejected", || {
        let b_log = b_log.clone();
        async move { Ok(std::fs::read_to_string(b_log)?.contains("interconnect rejected")) }
    })
    .await?;
    assert!(!linked(&stack, "staging-us").await?);
    assert!(!sourced(&stack, "staging-us").await?);
    let b_dir = stack.leaves[1].link_dir.clone().expect("link dir");
    assert!(!b_dir.join("link.creds").exists());

    // Revoked: the link drops, the source goes, the seed's resolver refuses the link user.
    revoke_and_wait_unlinked(&stack, "prod-eu").await?;
    let sys = async_nats::ConnectOptions::new()
        .credentials_file(stack.nats_auth.seed_creds("sys"))
        .await?
        .connect(stack.seed.client_url())
        .await?;
    let lookup = sys
        .request(
            format!(
                "$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP",
                stack.nats_auth.canopy_account
            ),
            "".into(),
        )
        .await?;
    let account: jwt::Claims<serde_json::Value> =
        jwt::decode(std::str::from_utf8(&lookup.payload)?)?;
    assert!(
        account.nats["revocations"]
            .get(a_user.public_key())
            .is_some(),
        "the Canopy account revokes prod-eu's link user: {}",
        account.nats
    );
    // The old credentials cannot link again: the leaf (which keeps retrying every second until
    // its gateway removes them) stays unlinked, and the gateway asks anew with new keys.
    let new_id = canopy_testkit::eventually(LONG, "a new request from prod-eu", || {
        let dir = a_dir.clone();
        let old = a_id.clone();
        async move {
            Ok(std::fs::read_to_string(dir.join("request-id"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && *s != old))
        }
    })
    .await?;
    stack.wait_requested("prod-eu", &new_id).await?;
    assert!(!linked(&stack, "prod-eu").await?);
    stack.shutdown().await
}

#[tokio::test]
async fn leaves_link_through_a_trunk_and_a_revocation_reaches_the_trunk() -> anyhow::Result<()> {
    let mut opts = StackOptions::new(vec![LeafSpec::new("prod-eu", Fixture::load("prod-eu")?)]);
    opts.trunk = Some("trunk-eu".to_owned());
    // Start-up approves the request (sent through the trunk) and waits for the leaf's link to
    // the trunk.
    let stack = Stack::start(opts).await?;
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let requested = stream_events(&js, "CONTROL", "canopy.ctl.interconnect.requested").await?;
    assert!(requested.iter().any(|e| matches!(&e.body,
        Some(Body::InterconnectRequested(r)) if r.trunk == "trunk-eu")));
    // The trunk holds the leaf's link, the seed the trunk's.
    let trunk = stack.trunk.as_ref().expect("trunk");
    assert!(
        canopy_e2e::leafz_names(trunk.monitor_addr())
            .await?
            .contains(&"prod-eu".to_owned())
    );
    assert!(
        canopy_e2e::leafz_names(stack.seed.monitor_addr())
            .await?
            .contains(&"trunk-eu".to_owned())
    );
    // Events flow leaf → trunk → seed.
    wait_until(
        LONG,
        "prod-eu's events in FLEET_EVENTS through the trunk",
        || async { Ok(fleet_events_of(&stack, "prod-eu").await? > 0) },
    )
    .await?;

    revoke_and_wait_unlinked(&stack, "prod-eu").await?;
    stack.shutdown().await
}
