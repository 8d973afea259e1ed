//! Policy distribution: effective policies per cluster on POLICIES, built from CONTROL and the
//! agents' labels, republished only when their content changes, also across a restart.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    AgentStarted, Derogation, DerogationGranted, DerogationRevoked, DerogationScope,
    EffectivePolicy, Envelope, Policy, PolicyChanged, envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use canopy_testkit::{NatsProcess, eventually};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn setup(nats: &NatsProcess) -> anyhow::Result<jetstream::Context> {
    let js = jetstream::new(nats.connect().await?);
    js.create_stream(streams::control()).await?;
    // On a seed FLEET_EVENTS only sources the leaves; here events are published into it.
    js.create_stream(stream::Config {
        subjects: vec!["canopy.evt.>".into()],
        ..streams::fleet_events()
    })
    .await?;
    Ok(js)
}

fn agent(cluster: &str, labels: &[(&str, &str)]) -> Envelope {
    envelope::new(
        &ClusterId::parse(cluster).unwrap(),
        "agent",
        Body::AgentStarted(AgentStarted {
            agent_instance_id: "i".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
    )
}

fn ctl(body: Body) -> Envelope {
    envelope::new_for(None, "api", body)
}

/// The stored effective policy of `cluster` and its POLICIES sequence.
async fn effective(
    js: &jetstream::Context,
    cluster: &str,
) -> anyhow::Result<Option<(u64, EffectivePolicy)>> {
    let stream = js.get_stream(streams::POLICIES).await?;
    match stream
        .get_last_raw_message_by_subject(&format!("canopy.pol.{cluster}.effective"))
        .await
    {
        Ok(m) => {
            let env = envelope::decode_on(Plane::Pol, &m.subject, &m.payload)?;
            match env.body {
                Some(Body::EffectivePolicy(e)) => Ok(Some((m.sequence, e))),
                _ => anyhow::bail!("not an effective policy"),
            }
        }
        Err(_) => Ok(None),
    }
}

async fn policies_last(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(streams::POLICIES)
        .await?
        .info()
        .await?
        .state
        .last_sequence)
}

fn start(js: &jetstream::Context) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(canopy_cnc::policy::run(js.clone(), stop.clone()));
    (stop, task)
}

#[tokio::test]
async fn each_cluster_gets_its_effective_policy_once_per_change() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let js = setup(&nats).await?;
    let publish = |e: Envelope| {
        let js = js.clone();
        async move { canopy_kit::publish::publish(&js, &e).await }
    };
    // History before cnc starts: replayed.
    publish(agent("prod-eu", &[("env", "prod")])).await?;
    publish(agent("staging-us", &[("env", "staging")])).await?;
    publish(ctl(Body::PolicyChanged(PolicyChanged {
        version: 1,
        policy: Some(Policy {
            disabled_checks: vec!["PROBES".into()],
            ..Default::default()
        }),
        ..Default::default()
    })))
    .await?;
    let in_an_hour = chrono::Utc::now().timestamp() + 3600;
    let grant = |id: &str, env: &str| {
        ctl(Body::DerogationGranted(DerogationGranted {
            derogation: Some(Derogation {
                derogation_id: id.into(),
                check: "HOST-NET".into(),
                scope: Some(DerogationScope {
                    cluster_labels: [("env".to_owned(), env.to_owned())].into(),
                    ..Default::default()
                }),
                expires_at: Some(prost_types::Timestamp {
                    seconds: in_an_hour,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        }))
    };
    publish(grant("d-prod", "prod")).await?;
    let (stop, task) = start(&js);
    let (prod, staging) = eventually(WAIT, "both clusters' policies", || async {
        Ok(
            match (
                effective(&js, "prod-eu").await?,
                effective(&js, "staging-us").await?,
            ) {
                (Some(p), Some(s)) => Some((p, s)),
                _ => None,
            },
        )
    })
    .await?;
    assert_eq!(prod.1.policy_version, 1);
    assert_eq!(prod.1.derogations.len(), 1);
    assert_eq!(prod.1.derogations[0].derogation_id, "d-prod");
    assert_eq!(staging.1.policy_version, 1);
    assert!(
        staging.1.derogations.is_empty(),
        "the derogation is scoped to env=prod"
    );
    assert_eq!(policies_last(&js).await?, 2, "one publication per cluster");

    // A derogation for staging changes staging's policy only.
    publish(grant("d-staging", "staging")).await?;
    let staging2 = eventually(WAIT, "staging's new policy", || async {
        Ok(effective(&js, "staging-us")
            .await?
            .filter(|(_, e)| e.derogations.len() == 1))
    })
    .await?;
    assert!(staging2.0 > staging.0);
    assert_eq!(effective(&js, "prod-eu").await?.unwrap().0, prod.0);
    stop.cancel();
    task.await?;

    // A restart replays everything and republishes nothing unchanged.
    let before = policies_last(&js).await?;
    let (stop, task) = start(&js);
    publish(ctl(Body::DerogationRevoked(DerogationRevoked {
        derogation_id: "d-prod".into(),
        ..Default::default()
    })))
    .await?;
    eventually(WAIT, "prod's derogation revoked", || async {
        Ok(effective(&js, "prod-eu")
            .await?
            .filter(|(_, e)| e.derogations.is_empty()))
    })
    .await?;
    // A new cluster gets the policy as soon as its agent announces itself.
    publish(agent("dev-ap", &[("env", "dev")])).await?;
    let dev = eventually(WAIT, "dev's policy", || async {
        effective(&js, "dev-ap").await
    })
    .await?;
    assert_eq!(dev.1.policy_version, 1);
    stop.cancel();
    task.await?;
    assert_eq!(
        policies_last(&js).await?,
        before + 2,
        "only prod (revocation) and dev (new) were published after the restart"
    );
    Ok(())
}
