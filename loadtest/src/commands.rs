//! `loadtest commands`: cnc's command path on a real nats-server, with simulated clusters.
//!
//! One nats-server (JetStream) holds the seed's CONTROL, COMMANDS and FLEET_EVENTS; cnc runs in
//! process. Simulated clusters are announced with `AgentStarted` (label `sim=yes`) and answer
//! every `Command` on COMMANDS at once with `CommandAccepted` then `CommandSucceeded` (a no-op
//! run), published straight into FLEET_EVENTS — no leaf servers, no api, no ingestion. Measured:
//! the round trip of a no-op command to one cluster (`CommandRequested` stored on CONTROL →
//! cnc → COMMANDS → `CommandSucceeded` back in FLEET_EVENTS), and the time for a fan-out to
//! every simulated cluster (one selector request) to be accepted by all of them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use canopy_kit::envelope::{self, Plane};
use canopy_kit::proto::event::v1::{
    AgentStarted, CommandAccepted, CommandKind, CommandParams, CommandRequested, CommandSucceeded,
    CommandTarget, Envelope, LabelSelector, RunAuditParams, command_params::Params,
    command_target::Target, envelope::Body,
};
use canopy_kit::{streams, subject::ClusterId};
use clap::Parser as _;
use futures::StreamExt as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Output;
use crate::stats::percentile;

/// p99 of the no-op round trip on loopback, in milliseconds.
const TARGET_P99_MS: f64 = 50.0;
/// A fan-out to 1,000 clusters acknowledged by all, in seconds.
const TARGET_FAN_OUT_S: f64 = 2.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated clusters (the fan-out reaches all of them).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clusters: u32,
    /// No-op commands sent one after the other for the round-trip figures.
    #[arg(long, default_value_t = 300)]
    pub round_trips: u32,
    /// Fan-outs to every cluster (the figure is each one's time).
    #[arg(long, default_value_t = 3)]
    pub fan_outs: u32,
    /// RunAudit round trips with the three demo clusters (real api, cnc, leaf servers, agents;
    /// needs the services built in the same profile as loadtest); 0 skips them.
    #[arg(long, default_value_t = 30)]
    pub demo_round_trips: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

fn cluster(i: u32) -> String {
    format!("sim-{i:04}")
}

/// What the observer saw in FLEET_EVENTS.
#[derive(Debug)]
enum Seen {
    Accepted(String),
    Succeeded(String),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let nats = canopy_testkit::NatsProcess::standalone_in_temp().await?;
    let client = async_nats::connect(nats.client_url()).await?;
    let js = jetstream::new(client.clone());
    // Simulated clusters publish straight into FLEET_EVENTS (on a real seed it only sources).
    let mut fleet = streams::fleet_events();
    fleet.subjects = vec!["canopy.evt.>".into()];
    js.create_stream(fleet).await?;
    for s in [streams::control(), streams::seed_commands()] {
        streams::ensure(&js, &s).await?;
    }
    announce(&js, args.clusters).await?;

    let stop = CancellationToken::new();
    let agents = tokio::spawn(simulate_agents(js.clone(), stop.clone()));
    let cfg = canopy_cnc::config::Config::try_parse_from([
        "canopy-cnc",
        "--nats-url",
        &nats.client_url(),
        "--http-addr",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ])?;
    let cnc = tokio::spawn(canopy_cnc::run(cfg, stop.clone()));
    let (tx, mut seen) = mpsc::unbounded_channel();
    let observer = tokio::spawn(observe(js.clone(), tx, stop.clone()));

    // Warm-up: cnc has replayed the clusters and answers.
    let first = request(&js, Target::ClusterId(cluster(0))).await?;
    wait_for(
        &mut seen,
        Duration::from_secs(60),
        |s| matches!(s, Seen::Succeeded(id) if *id == first),
    )
    .await
    .context("cnc did not dispatch the warm-up command")?;

    let mut rtt = Vec::with_capacity(args.round_trips as usize);
    for i in 0..args.round_trips {
        let started = Instant::now();
        let id = request(&js, Target::ClusterId(cluster(i % args.clusters))).await?;
        wait_for(
            &mut seen,
            Duration::from_secs(30),
            |s| matches!(s, Seen::Succeeded(got) if *got == id),
        )
        .await?;
        rtt.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    rtt.sort_by(f64::total_cmp);

    let mut fan_outs = Vec::new();
    for _ in 0..args.fan_outs {
        let started = Instant::now();
        let id = request(
            &js,
            Target::Selector(LabelSelector {
                match_labels: [("sim".to_owned(), "yes".to_owned())].into(),
            }),
        )
        .await?;
        let mut accepted = 0u32;
        let deadline = Instant::now() + Duration::from_secs(120);
        while accepted < args.clusters {
            wait_for(
                &mut seen,
                deadline.saturating_duration_since(Instant::now()),
                |s| matches!(s, Seen::Accepted(got) if *got == id),
            )
            .await
            .with_context(|| format!("only {accepted} clusters accepted the fan-out"))?;
            accepted += 1;
        }
        fan_outs.push(started.elapsed().as_secs_f64());
    }
    stop.cancel();
    let _ = tokio::join!(agents, cnc, observer);
    let mut audits = if args.demo_round_trips > 0 {
        demo_round_trips(args.demo_round_trips).await?
    } else {
        Vec::new()
    };
    audits.sort_by(f64::total_cmp);
    let audit_p50 = percentile(&audits, 50.0).unwrap_or(0.0);
    let audit_p99 = percentile(&audits, 99.0).unwrap_or(0.0);

    let p50 = percentile(&rtt, 50.0).unwrap_or(0.0);
    let p99 = percentile(&rtt, 99.0).unwrap_or(0.0);
    let worst_fan_out = fan_outs.iter().copied().fold(0.0, f64::max);
    match args.output {
        Output::Json => println!(
            "{}",
            json!({
                "round_trips": args.round_trips,
                "round_trip_ms": { "p50": p50, "p99": p99, "max": rtt.last().copied().unwrap_or(0.0) },
                "round_trip_p99_target_ms": TARGET_P99_MS,
                "clusters": args.clusters,
                "fan_out_acknowledged_s": fan_outs,
                "fan_out_target_s": TARGET_FAN_OUT_S,
                "demo_run_audit_round_trips": audits.len(),
                "demo_run_audit_ms": { "p50": audit_p50, "p99": audit_p99 },
            })
        ),
        Output::Text => {
            println!(
                "commands: no-op round trip (CommandRequested -> cnc -> COMMANDS -> CommandSucceeded), {} in a row",
                args.round_trips
            );
            println!(
                "  p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms   (target: p99 < {TARGET_P99_MS} ms) {}",
                rtt.last().copied().unwrap_or(0.0),
                verdict(p99 < TARGET_P99_MS)
            );
            println!(
                "commands: fan-out to {} simulated clusters, acknowledged (CommandAccepted) by all",
                args.clusters
            );
            let each: Vec<String> = fan_outs.iter().map(|s| format!("{s:.2} s")).collect();
            println!(
                "  {}   (target: < {TARGET_FAN_OUT_S} s for 1,000) {}",
                each.join(", "),
                verdict(worst_fan_out < TARGET_FAN_OUT_S)
            );
            if !audits.is_empty() {
                println!(
                    "commands: RunAudit round trip with the 3 demo clusters (api -> ... -> agent audit -> CommandSucceeded at the seed), {} in a row",
                    audits.len()
                );
                println!("  p50 {audit_p50:.1} ms, p99 {audit_p99:.1} ms");
            }
        }
    }
    Ok(())
}

/// RunAudit through the api to each demo cluster in turn, timed until its `CommandSucceeded`
/// is in the seed's FLEET_EVENTS.
async fn demo_round_trips(n: u32) -> anyhow::Result<Vec<f64>> {
    use canopy_e2e::{LeafSpec, Stack, StackOptions};
    use canopy_proto::api::v1::{RunCommandRequest, command_service_client::CommandServiceClient};
    use canopy_testkit::Fixture;

    let demo = [
        ("prod-eu", "prod"),
        ("staging-us", "staging"),
        ("dev-ap", "dev"),
    ];
    let leaves = demo
        .iter()
        .map(|(c, env)| Ok(LeafSpec::new(c, Fixture::load(c)?).with_label("env", env)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stack = Stack::start(StackOptions::new(leaves)).await?;
    let result = async {
        let js = jetstream::new(async_nats::connect(stack.seed.client_url()).await?);
        let (tx, mut seen) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let observer = tokio::spawn(observe(js, tx, stop.clone()));
        let mut client = CommandServiceClient::connect(stack.api_url()).await?;
        let run = |cluster: &str| RunCommandRequest {
            target: Some(CommandTarget {
                target: Some(Target::ClusterId(cluster.to_owned())),
            }),
            deadline: None,
            timeout_ms: 60_000,
            idempotency_key: String::new(),
        };
        // The clusters have reported once cnc dispatches to each of them.
        for (cluster, _) in demo {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let id = client
                    .run_audit(run(cluster))
                    .await?
                    .into_inner()
                    .command_id;
                if wait_for(
                    &mut seen,
                    Duration::from_secs(10),
                    |s| matches!(s, Seen::Succeeded(got) if *got == id),
                )
                .await
                .is_ok()
                {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "{cluster} never answered");
            }
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (cluster, _) = demo[i as usize % demo.len()];
            let started = Instant::now();
            let id = client
                .run_audit(run(cluster))
                .await?
                .into_inner()
                .command_id;
            wait_for(
                &mut seen,
                Duration::from_secs(60),
                |s| matches!(s, Seen::Succeeded(got) if *got == id),
            )
            .await
            .with_context(|| format!("the audit of {cluster} did not succeed"))?;
            out.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        stop.cancel();
        let _ = observer.await;
        anyhow::Ok(out)
    }
    .await;
    stack.shutdown().await?;
    result
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// AgentStarted of every simulated cluster, labelled `sim=yes`.
async fn announce(js: &jetstream::Context, clusters: u32) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(clusters as usize);
    for i in 0..clusters {
        let id = ClusterId::parse(&cluster(i))?;
        let env = envelope::new(
            &id,
            "loadtest",
            Body::AgentStarted(AgentStarted {
                agent_instance_id: format!("sim-{i}"),
                agent_version: "loadtest".into(),
                labels: [("sim".to_owned(), "yes".to_owned())].into(),
                ..Default::default()
            }),
        );
        acks.push(canopy_kit::publish::send(js, &env).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Publishes a no-op request (a RunAudit that the simulated agents answer at once).
async fn request(js: &jetstream::Context, target: Target) -> anyhow::Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut deadline = envelope::now();
    deadline.seconds += 300;
    let mut env = envelope::new_for(
        None,
        "loadtest",
        Body::CommandRequested(CommandRequested {
            command_id: id.clone(),
            kind: CommandKind::RunAudit as i32,
            target: Some(CommandTarget {
                target: Some(target),
            }),
            params: Some(CommandParams {
                params: Some(Params::RunAudit(RunAuditParams {})),
            }),
            deadline: Some(deadline),
            requested_by: "loadtest".into(),
            ..Default::default()
        }),
    );
    env.event_id = id.clone();
    canopy_kit::publish::publish(js, &env).await?;
    Ok(id)
}

/// Every simulated cluster: answers each command with Accepted then Succeeded, at once.
async fn simulate_agents(js: jetstream::Context, stop: CancellationToken) -> anyhow::Result<()> {
    let consumer = js
        .get_stream(streams::COMMANDS)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "canopy.cmd.>".into(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let (acks_tx, mut acks_rx) = mpsc::channel(4096);
    // Acks are awaited apart so that publishing never waits for them.
    let waiter = tokio::spawn(async move {
        while let Some(ack) = acks_rx.recv().await {
            let ack: async_nats::jetstream::context::PublishAckFuture = ack;
            let _ = ack.await;
        }
    });
    loop {
        let m = tokio::select! {
            () = stop.cancelled() => break,
            m = messages.next() => m,
        };
        let Some(m) = m else { break };
        let m = m?;
        let env = envelope::decode_on(Plane::Cmd, &m.subject, &m.payload)?;
        let Some(Body::Command(cmd)) = env.body else {
            continue;
        };
        let id = ClusterId::parse(&env.cluster_id)?;
        let reply = |body| -> Envelope { envelope::new(&id, "sim-agent", body) };
        for env in [
            reply(Body::CommandAccepted(CommandAccepted {
                command_id: cmd.command_id.clone(),
                kind: cmd.kind,
            })),
            reply(Body::CommandSucceeded(CommandSucceeded {
                command_id: cmd.command_id.clone(),
                kind: cmd.kind,
                summary: "no-op".into(),
                ..Default::default()
            })),
        ] {
            let ack = canopy_kit::publish::send(&js, &env).await?;
            if acks_tx.send(ack).await.is_err() {
                break;
            }
        }
    }
    drop(acks_tx);
    let _ = waiter.await;
    Ok(())
}

/// Command reports as they are stored in FLEET_EVENTS.
async fn observe(
    js: jetstream::Context,
    tx: mpsc::UnboundedSender<Seen>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = js
        .get_stream(streams::FLEET_EVENTS)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "canopy.evt.*.command.>".into(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut reported: HashSet<(String, String, bool)> = HashSet::new();
    loop {
        let m = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(m) = m else { return Ok(()) };
        let m = m?;
        let env = envelope::decode_on(Plane::Evt, &m.subject, &m.payload)?;
        let seen = match env.body {
            Some(Body::CommandAccepted(a)) => (a.command_id, false),
            Some(Body::CommandSucceeded(s)) => (s.command_id, true),
            _ => continue,
        };
        // One report per (cluster, command, kind) counts.
        if !reported.insert((env.cluster_id, seen.0.clone(), seen.1)) {
            continue;
        }
        let msg = if seen.1 {
            Seen::Succeeded(seen.0)
        } else {
            Seen::Accepted(seen.0)
        };
        if tx.send(msg).is_err() {
            return Ok(());
        }
    }
}

async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    timeout: Duration,
    want: impl Fn(&Seen) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out")?
            .context("the observer stopped")?;
        if want(&next) {
            return Ok(());
        }
    }
}
