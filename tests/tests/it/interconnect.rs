//! Interconnects end to end, on real nats-servers: a leaf links only once an admin approved its
//! request, with credentials signed for the key it generated and sealed to it; a rejected leaf
//! never links; a revoked leaf loses its link and its credentials are refused; the same through
//! a trunk; and a leaf the seed dials (through its dialer), next to one that dials the seed.

use std::time::Duration;

use anyhow::Context as _;
use canopy_auth::nats::jwt;
use canopy_e2e::{LeafSpec, Stack, StackOptions, stream_events};
use canopy_kit::proto::event::v1::{
    ClusterRevoked, InterconnectRejected, LinkDirection, LinkEstablished, envelope::Body,
};
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

/// The first interconnect request of `cluster` recorded on CONTROL.
async fn recorded_request(
    js: &async_nats::jetstream::Context,
    cluster: &str,
) -> anyhow::Result<canopy_kit::proto::event::v1::InterconnectRequested> {
    let requested = stream_events(js, "CONTROL", "canopy.ctl.interconnect.requested").await?;
    requested
        .into_iter()
        .find_map(|e| match e.body {
            Some(Body::InterconnectRequested(r)) if e.cluster_id == cluster => Some(r),
            _ => None,
        })
        .with_context(|| format!("no request of {cluster} on CONTROL"))
}

/// The request id a leaf's gateway asks with once it gave up `old` (kept in its link dir).
async fn new_request_id(link_dir: &std::path::Path, old: &str) -> anyhow::Result<String> {
    canopy_testkit::eventually(LONG, "a new interconnect request", || {
        let path = link_dir.join("request-id");
        async move {
            Ok(std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && s != old))
        }
    })
    .await
}

async fn linked(stack: &Stack, cluster: &str) -> anyhow::Result<bool> {
    Ok(canopy_e2e::leafz_names(stack.link_monitor(cluster))
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
    let a_req = recorded_request(&js, "prod-eu").await?;
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
    // The seed's gateway reports the link, and how it is made.
    let link = link_established(&js, "prod-eu").await?;
    assert_eq!(link.direction(), LinkDirection::LeafDials);
    assert_eq!(link.via, "");

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
    let account = account_on_seed(&stack, &stack.nats_auth.canopy_account).await?;
    assert!(
        account["revocations"].get(a_user.public_key()).is_some(),
        "the Canopy account revokes prod-eu's link user: {account}"
    );
    // The old credentials cannot link again: the leaf (which keeps retrying every second until
    // its gateway removes them) stays unlinked, and the gateway asks anew with new keys.
    let new_id = new_request_id(&a_dir, &a_id).await?;
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
    let link = link_established(&js, "prod-eu").await?;
    assert_eq!(link.direction(), LinkDirection::LeafDials);
    assert_eq!(link.via, "trunk-eu");

    revoke_and_wait_unlinked(&stack, "prod-eu").await?;
    stack.shutdown().await
}

/// The first `LinkEstablished` the seed's gateway published for `cluster`, once there is one.
async fn link_established(
    js: &async_nats::jetstream::Context,
    cluster: &str,
) -> anyhow::Result<LinkEstablished> {
    canopy_testkit::eventually(LONG, &format!("LinkEstablished of {cluster}"), || async {
        let links = stream_events(js, "CONTROL", "canopy.ctl.link.established").await?;
        Ok(links.into_iter().find_map(|e| match e.body {
            Some(Body::LinkEstablished(l)) if e.cluster_id == cluster => Some(l),
            _ => None,
        }))
    })
    .await
}

/// The claims of the account `account` as the seed's resolver holds them.
async fn account_on_seed(stack: &Stack, account: &str) -> anyhow::Result<serde_json::Value> {
    let sys = async_nats::ConnectOptions::new()
        .credentials_file(stack.nats_auth.seed_creds("sys"))
        .await?
        .connect(stack.seed.client_url())
        .await?;
    let lookup = sys
        .request(
            format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"),
            "".into(),
        )
        .await?;
    let claims: jwt::Claims<serde_json::Value> =
        jwt::decode(std::str::from_utf8(&lookup.payload)?)?;
    Ok(claims.nats)
}

#[tokio::test]
async fn the_seed_dials_a_leaf_that_asks_for_it_and_holds_it_to_its_own_subjects()
-> anyhow::Result<()> {
    use canopy_proto::api::v1::{
        self as api, CommandStatus, command_service_client::CommandServiceClient,
    };
    use futures::StreamExt as _;

    let mut opts = StackOptions::new(vec![
        LeafSpec::new("dev-ap", Fixture::load("dev-ap")?).seed_dialed(),
        LeafSpec::new("prod-eu", Fixture::load("prod-eu")?),
    ]);
    opts.approve_interconnects = false;
    let stack = Stack::start(opts).await?;
    let dialer = stack.dialer.as_ref().expect("a dialer runs");
    let dir = stack.leaves[0].link_dir.clone().expect("link dir");

    // The request says seed-dials and where; nothing is dialed before an admin approves.
    let id = stack.request_id("dev-ap").await?;
    stack.wait_requested("dev-ap", &id).await?;
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let request = recorded_request(&js, "dev-ap").await?;
    assert_eq!(request.direction, LinkDirection::SeedDials as i32);
    let proxy_port = stack.leaves[0].link.port();
    assert_eq!(
        request.leaf_url,
        format!("nats-leaf://127.0.0.1:{proxy_port}")
    );
    assert!(!linked(&stack, "dev-ap").await?);
    assert!(!dir.join("seed-user.jwt").exists());

    // Approved (both): the leaf signs the dialer's user in its own account, for the key the
    // seed derived for this request; the dialer dials it and links it to the seed.
    stack.approve_interconnect("dev-ap", "admin").await?;
    stack.approve_interconnect("prod-eu", "admin").await?;
    stack.wait_linked("dev-ap", LONG).await?;
    stack.wait_linked("prod-eu", LONG).await?;
    let signer = canopy_auth::nats::LinkSigner::load(&stack.nats_auth.gateway_keys())?;
    let keys = signer.dialer_keys("dev-ap", &id)?;
    let signed: jwt::Claims<jwt::UserClaims> =
        jwt::decode(&std::fs::read_to_string(dir.join("seed-user.jwt"))?)?;
    assert_eq!(signed.sub, keys.leaf_user.public_key());
    assert_eq!(
        signed.nats.issuer_account,
        stack.nats_auth.leaf_accounts["dev-ap"]
    );
    assert_eq!(signed.nats.allowed_connection_types, ["LEAFNODE"]);
    assert!(signed.exp.is_some(), "the dialer's user expires");
    // The dialer holds the leaf and the seed in the cluster's own account; the seed sees the
    // dialer, never the leaf itself.
    let (status, leafz) = canopy_testkit::http::get(dialer.monitor_addr(), "/leafz", LONG).await?;
    assert_eq!(status, 200);
    let leafz: serde_json::Value = serde_json::from_str(&leafz)?;
    let accounts: Vec<(&str, &str)> = leafz["leafs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["name"].as_str()?, l["account"].as_str()?)))
        .collect();
    let dial_account = keys.account.public_key();
    assert!(
        accounts.contains(&("dev-ap", dial_account.as_str())),
        "{accounts:?}"
    );
    assert!(
        accounts.contains(&("seed", dial_account.as_str())),
        "{accounts:?}"
    );
    let on_seed = canopy_e2e::leafz_names(stack.seed.monitor_addr()).await?;
    assert!(on_seed.contains(&"dialer".to_owned()), "{on_seed:?}");
    assert!(!on_seed.contains(&"dev-ap".to_owned()), "{on_seed:?}");

    // Events flow leaf → dialer → seed, and a command goes the other way and comes back done.
    wait_until(LONG, "dev-ap's events in FLEET_EVENTS", || async {
        Ok(fleet_events_of(&stack, "dev-ap").await? > 0)
    })
    .await?;
    let link = link_established(&js, "dev-ap").await?;
    assert_eq!(link.direction(), LinkDirection::SeedDials);
    assert_eq!(link.via, "", "the seed's own dialer is a direct link");
    let commands = CommandServiceClient::connect(stack.api_url()).await?;
    let command_id = canopy_testkit::eventually(LONG, "an audit command accepted", || {
        let mut commands = commands.clone();
        async move {
            let reply = commands
                .run_audit(api::RunCommandRequest {
                    target: Some(canopy_proto::event::v1::CommandTarget {
                        target: Some(canopy_proto::event::v1::command_target::Target::ClusterId(
                            "dev-ap".into(),
                        )),
                    }),
                    deadline: None,
                    timeout_ms: 60_000,
                    idempotency_key: "seed-dials-audit".into(),
                })
                .await;
            // The api knows the cluster once its first events are projected.
            Ok(reply.ok().map(|r| r.into_inner().command_id))
        }
    })
    .await?;
    canopy_testkit::eventually(LONG, "the audit on dev-ap succeeded", || {
        let mut commands = commands.clone();
        let command_id = command_id.clone();
        async move {
            let v = commands
                .get_command(api::GetCommandRequest { command_id })
                .await?
                .into_inner();
            Ok((v.status == CommandStatus::Succeeded as i32).then_some(()))
        }
    })
    .await?;

    // Whatever the leaf's server does, the seed holds what comes from it to dev-ap's link
    // user: a delivery forged for prod-eu is dropped, dev-ap's own passes (same path, in order).
    let seed = stack.seed.connect().await?;
    let mut own = seed.subscribe("canopy.deliver.dev-ap.probe").await?;
    let mut forged = seed.subscribe("canopy.deliver.prod-eu.probe").await?;
    seed.flush().await?;
    let leaf_admin = stack.leaves[0].nats.connect().await?;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        // Until the subscriptions' interest has reached the leaf, both are dropped.
        leaf_admin
            .publish("canopy.deliver.prod-eu.probe", "forged".into())
            .await?;
        leaf_admin
            .publish("canopy.deliver.dev-ap.probe", "own".into())
            .await?;
        leaf_admin.flush().await?;
        tokio::select! {
            biased;
            m = forged.next() => panic!("a forged delivery reached the seed: {m:?}"),
            m = own.next() => {
                assert!(m.is_some());
                // Anything forged before it would have been read first.
                use futures::FutureExt as _;
                assert!(forged.next().now_or_never().is_none(), "a forged delivery reached the seed");
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                assert!(tokio::time::Instant::now() < deadline, "dev-ap's own probe never arrived");
            }
        }
    }
    // The leaf's server cannot reach the seed's JetStream API beyond its own consumers either.
    let leaf_js = async_nats::jetstream::with_domain(leaf_admin.clone(), "seed");
    let refused =
        tokio::time::timeout(Duration::from_secs(5), leaf_js.get_stream("FLEET_EVENTS")).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a seed-dialed leaf read FLEET_EVENTS' info"
    );

    // Revoked: the dialer drops the leaf, its credentials go, and the link user it held on
    // the seed is refused from now on; the leaf asks anew with new keys.
    revoke_and_wait_unlinked(&stack, "dev-ap").await?;
    let dial_dir = stack.dir.join("nats-conf").join("dialer").join("dial");
    wait_until(LONG, "the dialer's credentials of dev-ap removed", || {
        let dial_dir = dial_dir.clone();
        async move { Ok(!dial_dir.join("dev-ap.leaf.creds").exists()) }
    })
    .await?;
    assert!(!std::fs::read_to_string(dial_dir.join("remotes.conf"))?.contains("dev-ap"));
    let canopy = account_on_seed(&stack, &stack.nats_auth.canopy_account).await?;
    assert!(
        canopy["revocations"]
            .get(keys.link_user.public_key())
            .is_some(),
        "the dialer's link user of dev-ap is revoked: {canopy}"
    );
    let new_id = new_request_id(&dir, &id).await?;
    stack.wait_requested("dev-ap", &new_id).await?;
    assert!(!dir.join("seed-user.jwt").exists());
    // prod-eu, which dials the seed itself, kept its link throughout.
    assert!(linked(&stack, "prod-eu").await?);
    stack.shutdown().await
}

/// The value of `canopy_gateway_interconnect_requests_total{status}` on the seed's gateway.
async fn answered(stack: &Stack, status: &str) -> anyhow::Result<f64> {
    let (code, body) = canopy_testkit::http::get(
        stack.gateway.http_addr(),
        "/metrics",
        Duration::from_secs(5),
    )
    .await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let prefix = format!("canopy_gateway_interconnect_requests_total{{status=\"{status}\"}} ");
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(Ok(0.0), str::parse)?)
}

#[tokio::test]
async fn an_approval_outlives_the_interconnect_events_on_control() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::new(vec![LeafSpec::new(
        "prod-eu",
        Fixture::load("prod-eu")?,
    )]))
    .await?;
    // CONTROL keeps events 365 days: drop its interconnect events as their age would, then
    // restart the seed's gateway, which rebuilds its state from CONTROL and its bucket.
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    js.get_stream("CONTROL")
        .await?
        .purge()
        .filter("canopy.ctl.interconnect.>")
        .await?;
    assert!(
        stream_events(&js, "CONTROL", "canopy.ctl.interconnect.>")
            .await?
            .is_empty()
    );
    stack.gateway.stop().await?;
    stack.gateway.start().await?;
    // The leaf's next status requests are answered "approved", from the bucket: nothing is
    // recorded anew, the source and the link stay.
    wait_until(LONG, "a status request answered approved", || async {
        Ok(answered(&stack, "approved").await? >= 1.0)
    })
    .await?;
    assert_eq!(answered(&stack, "pending").await?, 0.0);
    assert!(
        stream_events(&js, "CONTROL", "canopy.ctl.interconnect.requested")
            .await?
            .is_empty(),
        "the approved leaf was recorded as a new request"
    );
    assert!(sourced(&stack, "prod-eu").await?);
    assert!(linked(&stack, "prod-eu").await?);
    // A revocation still applies, and removes the kept approval.
    revoke_and_wait_unlinked(&stack, "prod-eu").await?;
    // The seed gateway's bucket of approvals.
    let kv = js.get_key_value("canopy-interconnects").await?;
    wait_until(LONG, "the revoked approval removed from the bucket", || {
        let kv = kv.clone();
        async move { Ok(kv.get("prod-eu").await?.is_none()) }
    })
    .await?;
    stack.shutdown().await
}

#[tokio::test]
async fn a_restarted_seed_dials_its_leaf_again_from_the_kept_approval() -> anyhow::Result<()> {
    use canopy_kit::proto::event::v1::ApprovedInterconnect;
    use prost::Message as _;

    let mut stack = Stack::start(StackOptions::new(vec![
        LeafSpec::new("dev-ap", Fixture::load("dev-ap")?).seed_dialed(),
    ]))
    .await?;
    let js = canopy_kit::nats::jetstream(stack.seed.connect().await?, None);
    let kv = js.get_key_value("canopy-interconnects").await?;
    // The approval is kept with the JWT the leaf signed for the dialer.
    let kept = canopy_testkit::eventually(LONG, "the dialer JWT kept with the approval", || {
        let kv = kv.clone();
        async move {
            let Some(v) = kv.get("dev-ap").await? else {
                return Ok(None);
            };
            let kept = ApprovedInterconnect::decode(v.as_ref())?;
            Ok(Some(kept).filter(|k| !k.dial_jwt.is_empty()))
        }
    })
    .await?;
    let request = kept.request.context("no request kept")?;
    assert_eq!(request.direction(), LinkDirection::SeedDials);
    let claims: jwt::Claims<serde_json::Value> = jwt::decode(&kept.dial_jwt)?;
    assert_eq!(claims.nats["allowed_connection_types"][0], "LEAFNODE");

    // The leaf's gateway is down: the leaf asks nothing while the seed side restarts as a new
    // pod would, its dialer with an empty dial dir (no remotes, no credentials).
    stack.leaf_mut("dev-ap")?.gateway.stop().await?;
    stack.gateway.stop().await?;
    let before = fleet_events_of(&stack, "dev-ap").await?;
    let dialer = stack.dialer.as_mut().context("no dialer")?;
    dialer.stop().await?;
    let dial_dir = stack.dir.join("nats-conf").join("dialer").join("dial");
    std::fs::remove_dir_all(&dial_dir)?;
    std::fs::create_dir_all(&dial_dir)?;
    std::fs::write(
        dial_dir.join("remotes.conf"),
        canopy_auth::nats::dialer_remotes_conf(&[]),
    )?;
    dialer.start().await?;
    assert!(!linked(&stack, "dev-ap").await?);
    stack.gateway.start().await?;
    // The seed's gateway dials the leaf again from what it kept.
    wait_until(LONG, "the dialer holds dev-ap again", || async {
        linked(&stack, "dev-ap").await
    })
    .await?;
    assert!(dial_dir.join("dev-ap.leaf.creds").is_file());
    // And the leaf's events flow again (the agent kept publishing to its own EVENTS).
    wait_until(
        LONG,
        "dev-ap's events sourced after the restart",
        || async {
            Ok(sourced(&stack, "dev-ap").await?
                && fleet_events_of(&stack, "dev-ap").await? > before)
        },
    )
    .await?;

    stack.leaf_mut("dev-ap")?.gateway.start().await?;
    stack.shutdown().await
}
