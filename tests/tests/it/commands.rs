//! Commands end to end: `canopyctl run audit --cluster … --wait` ends with the audit's summary;
//! a selector reaches every matching cluster and no other; an idempotency key gives one command;
//! a command sent while the leaf's link is cut runs once the link is back, and one whose deadline
//! passes meanwhile times out and is never run; a copy of a finished command delivered again is
//! not run again; an agent killed mid-command reports the run interrupted instead of running it
//! again; liveness probes run against real local TCP and HTTP servers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_e2e::{LeafSpec, Stack, StackOptions, fleet_client, list_clusters};
use canopy_kit::envelope::{self, Plane};
use canopy_kit::streams;
use canopy_proto::api::v1::{
    self as api, CommandStatus, RunState, command_service_client::CommandServiceClient,
};
use canopy_proto::event::v1::{
    Command, CommandTarget, LabelSelector, LivenessEndpoint, LivenessPool, ProbeProtocol,
    command_target::Target, envelope::Body,
};
use canopy_testkit::{Fixture, eventually};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(90);
/// A cut leafnode link comes back and resumes its sources within this.
const RELINK: Duration = Duration::from_secs(150);

async fn client(stack: &Stack) -> anyhow::Result<CommandServiceClient<Channel>> {
    Ok(CommandServiceClient::connect(stack.api_url()).await?)
}

fn to_cluster(c: &str) -> Option<CommandTarget> {
    Some(CommandTarget {
        target: Some(Target::ClusterId(c.to_owned())),
    })
}

fn to_selector(k: &str, v: &str) -> Option<CommandTarget> {
    Some(CommandTarget {
        target: Some(Target::Selector(LabelSelector {
            match_labels: [(k.to_owned(), v.to_owned())].into(),
        })),
    })
}

fn audit(target: Option<CommandTarget>, timeout: Duration, key: &str) -> api::RunCommandRequest {
    api::RunCommandRequest {
        target,
        deadline: None,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        idempotency_key: key.to_owned(),
    }
}

/// Waits until every cluster has reported to the api (and so to cnc's state).
async fn wait_for_clusters(stack: &Stack, n: usize) -> anyhow::Result<()> {
    eventually(WAIT, "every cluster to report", || async {
        let mut fleet = fleet_client(&stack.api_url()).await?;
        let listed = list_clusters(&mut fleet).await?;
        Ok((listed
            .iter()
            .filter(|c| !c.agent_instance_id.is_empty())
            .count()
            >= n)
            .then_some(()))
    })
    .await
}

/// The command once `done` holds for it.
async fn command_when(
    client: &mut CommandServiceClient<Channel>,
    id: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&api::CommandView) -> bool,
) -> anyhow::Result<api::CommandView> {
    eventually(timeout, what, || {
        let mut client = client.clone();
        let id = id.to_owned();
        let done = &done;
        async move {
            let v = client
                .get_command(api::GetCommandRequest { command_id: id })
                .await?
                .into_inner();
            Ok(done(&v).then_some(v))
        }
    })
    .await
}

fn status(v: &api::CommandView) -> CommandStatus {
    CommandStatus::try_from(v.status).unwrap_or(CommandStatus::Unspecified)
}

fn run_of<'a>(v: &'a api::CommandView, cluster: &str) -> Option<&'a api::CommandRun> {
    v.runs.iter().find(|r| r.cluster_id == cluster)
}

fn state(r: Option<&api::CommandRun>) -> RunState {
    r.and_then(|r| RunState::try_from(r.state).ok())
        .unwrap_or(RunState::Unspecified)
}

/// Bodies in FLEET_EVENTS from `cluster` that belong to `command_id` (command reports, audits
/// it started, liveness results).
async fn events_of(
    js: &jetstream::Context,
    cluster: &str,
    command_id: &str,
) -> anyhow::Result<Vec<Body>> {
    let stream = js.get_stream(streams::FLEET_EVENTS).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subjects: vec![
                format!("canopy.evt.{cluster}.command.>"),
                format!("canopy.evt.{cluster}.audit.started"),
                format!("canopy.evt.{cluster}.liveness.checked"),
            ],
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    for _ in 0..pending {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("FLEET_EVENTS stopped delivering")?
            .context("the consumer ended")??;
        let env = envelope::decode_on(Plane::Evt, &m.subject, &m.payload)?;
        let ours = match &env.body {
            Some(Body::CommandAccepted(c)) => c.command_id == command_id,
            Some(Body::CommandSucceeded(c)) => c.command_id == command_id,
            Some(Body::CommandFailed(c)) => c.command_id == command_id,
            Some(Body::AuditStarted(a)) => a.command_id == command_id,
            Some(Body::LivenessChecked(l)) => l.command_id == command_id,
            _ => false,
        };
        if ours && let Some(b) = env.body {
            out.push(b);
        }
    }
    Ok(out)
}

fn count(bodies: &[Body], f: impl Fn(&Body) -> bool) -> usize {
    bodies.iter().filter(|b| f(b)).count()
}

async fn canopyctl(stack: &Stack, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(canopy_e2e::binary("canopyctl")?);
    cmd.arg("--api").arg(stack.api_url());
    if let Some(token) = &stack.admin_token {
        cmd.env("CANOPY_TOKEN", token);
    }
    Ok(cmd.args(args).output().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_audit_reaches_one_cluster_or_every_matching_one_once() -> anyhow::Result<()> {
    let leaves = vec![
        LeafSpec::new("prod-eu", Fixture::load("prod-eu")?)
            .with_label("env", "prod")
            .with_label("canary", "yes"),
        LeafSpec::new("staging-us", Fixture::load("staging-us")?).with_label("env", "staging"),
        LeafSpec::new("dev-ap", Fixture::load("dev-ap")?)
            .with_label("env", "dev")
            .with_label("canary", "yes"),
    ];
    let stack = Stack::start(StackOptions::new(leaves)).await?;
    wait_for_clusters(&stack, 3).await?;

    // One cluster, through the CLI: --wait ends with the audit's summary.
    let out = canopyctl(
        &stack,
        &[
            "run",
            "audit",
            "--cluster",
            "staging-us",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run audit failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("staging-us  succeeded  audited ")),
        "{stdout}"
    );

    // A selector: every cluster with canary=yes, and no other.
    let mut client = client(&stack).await?;
    let r = client
        .run_audit(audit(to_selector("canary", "yes"), WAIT, ""))
        .await?
        .into_inner();
    let v = command_when(
        &mut client,
        &r.command_id,
        WAIT,
        "the fan-out to end",
        |v| status(v) == CommandStatus::Succeeded,
    )
    .await?;
    let reached: BTreeSet<&str> = v.runs.iter().map(|r| r.cluster_id.as_str()).collect();
    assert_eq!(reached, BTreeSet::from(["dev-ap", "prod-eu"]));
    for run in &v.runs {
        assert!(run.summary.starts_with("audited "), "{run:?}");
        let result: serde_json::Value = serde_json::from_str(&run.result_json)?;
        assert!(
            result["objects_audited"].as_u64().unwrap_or(0) > 0,
            "{result}"
        );
    }
    // The CLI's selector form reaches the same clusters.
    let out = canopyctl(
        &stack,
        &[
            "run",
            "audit",
            "--selector",
            "canary=yes",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for c in ["prod-eu", "dev-ap"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{c}  succeeded  audited "))),
            "{stdout}"
        );
    }
    assert!(!stdout.contains("staging-us"), "{stdout}");

    // The same idempotency key twice: one command, run once per cluster.
    let first = client
        .run_audit(audit(to_cluster("prod-eu"), WAIT, "nightly-2026-11-30"))
        .await?
        .into_inner();
    let second = client
        .run_audit(audit(to_cluster("prod-eu"), WAIT, "nightly-2026-11-30"))
        .await?
        .into_inner();
    assert_eq!(first.command_id, second.command_id);
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.control_sequence, second.control_sequence);
    command_when(
        &mut client,
        &first.command_id,
        WAIT,
        "the keyed command to end",
        |v| status(v) == CommandStatus::Succeeded,
    )
    .await?;
    // And once more after it ran: still the same command, nothing new runs.
    let third = client
        .run_audit(audit(to_cluster("prod-eu"), WAIT, "nightly-2026-11-30"))
        .await?
        .into_inner();
    assert_eq!(third.command_id, first.command_id);
    assert!(third.duplicate);
    let js = jetstream::new(stack.seed.connect().await?);
    let events = events_of(&js, "prod-eu", &first.command_id).await?;
    assert_eq!(count(&events, |b| matches!(b, Body::CommandAccepted(_))), 1);
    assert_eq!(count(&events, |b| matches!(b, Body::AuditStarted(_))), 1);

    // An unknown cluster is refused with its reason, and the CLI exits non-zero.
    let out = canopyctl(
        &stack,
        &[
            "run",
            "audit",
            "--cluster",
            "nowhere",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rejected (unknown_cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `commands list` shows them, newest first.
    let out = canopyctl(&stack, &["commands", "list", "--cluster", "prod-eu"]).await?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains(&first.command_id), "{listed}");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_wait_out_a_cut_link_and_expire_unrun() -> anyhow::Result<()> {
    let leaves = vec![LeafSpec::new("staging-us", Fixture::load("staging-us")?)];
    let mut stack = Stack::start(StackOptions::new(leaves)).await?;
    wait_for_clusters(&stack, 1).await?;
    let mut client = client(&stack).await?;

    stack.leaf_mut("staging-us")?.link.cut();
    let lasting = client
        .run_audit(audit(
            to_cluster("staging-us"),
            Duration::from_secs(600),
            "",
        ))
        .await?
        .into_inner();
    let brief = client
        .run_audit(audit(to_cluster("staging-us"), Duration::from_secs(3), ""))
        .await?
        .into_inner();
    // The short one times out on the seed while the leaf cannot be reached.
    let v = command_when(&mut client, &brief.command_id, WAIT, "the time-out", |v| {
        status(v) == CommandStatus::TimedOut
    })
    .await?;
    assert_eq!(state(run_of(&v, "staging-us")), RunState::TimedOut);
    let v = client
        .get_command(api::GetCommandRequest {
            command_id: lasting.command_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        state(run_of(&v, "staging-us")),
        RunState::Dispatched,
        "nothing reached the cut-off leaf"
    );

    stack.leaf_mut("staging-us")?.link.restore();
    let v = command_when(
        &mut client,
        &lasting.command_id,
        RELINK,
        "the stored command to run after the link came back",
        |v| status(v) == CommandStatus::Succeeded,
    )
    .await?;
    let run = run_of(&v, "staging-us").context("no run")?;
    assert!(run.summary.starts_with("audited "), "{run:?}");

    // The expired one reached the agent too, and was refused, never run.
    let js = jetstream::new(stack.seed.connect().await?);
    let events = eventually(
        WAIT,
        "the agent's refusal of the expired command",
        || async {
            let events = events_of(&js, "staging-us", &brief.command_id).await?;
            Ok(events
                .iter()
                .any(|b| matches!(b, Body::CommandFailed(f) if f.reason == "deadline_passed"))
                .then_some(events))
        },
    )
    .await?;
    assert_eq!(count(&events, |b| matches!(b, Body::CommandAccepted(_))), 0);
    assert_eq!(count(&events, |b| matches!(b, Body::AuditStarted(_))), 0);
    let v = client
        .get_command(api::GetCommandRequest {
            command_id: brief.command_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(status(&v), CommandStatus::TimedOut);
    stack.shutdown().await
}

/// Answers every HTTP request with 200.
async fn http_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    Ok(port)
}

/// Accepts connections and never answers; counts them.
async fn silent_server() -> anyhow::Result<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicU64::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    Ok((port, accepted))
}

fn endpoint(name: &str, port: u16, protocol: ProbeProtocol) -> LivenessEndpoint {
    LivenessEndpoint {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: u32::from(port),
        protocol: protocol as i32,
        ..Default::default()
    }
}

fn liveness(cluster: &str, pool: LivenessPool, timeout: Duration) -> api::CheckLivenessRequest {
    api::CheckLivenessRequest {
        target: to_cluster(cluster),
        deadline: None,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        idempotency_key: String::new(),
        pool: Some(pool),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_run_at_most_once_across_redelivery_and_agent_restart() -> anyhow::Result<()> {
    let leaves = vec![LeafSpec::new("dev-ap", Fixture::load("dev-ap")?)];
    let mut stack = Stack::start(StackOptions::new(leaves)).await?;
    wait_for_clusters(&stack, 1).await?;
    let mut client = client(&stack).await?;
    let seed = jetstream::new(stack.seed.connect().await?);

    // Liveness against real servers: an HTTP one, a TCP one, a closed port.
    let web = http_server().await?;
    let (tcp, _) = silent_server().await?;
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let pool = LivenessPool {
        name: "shop".into(),
        endpoints: vec![
            endpoint("web", web, ProbeProtocol::Http),
            endpoint("db", tcp, ProbeProtocol::Tcp),
            endpoint("gone", closed, ProbeProtocol::Tcp),
        ],
        timeout_ms: 1000,
        concurrency: 2,
    };
    let r = client
        .check_liveness(liveness("dev-ap", pool, WAIT))
        .await?
        .into_inner();
    let v = command_when(
        &mut client,
        &r.command_id,
        WAIT,
        "the liveness check",
        |v| status(v) == CommandStatus::Succeeded,
    )
    .await?;
    let run = run_of(&v, "dev-ap").context("no run")?;
    assert_eq!(run.summary, "2/3 endpoints of \"shop\" alive; down: gone");
    let events = events_of(&seed, "dev-ap", &r.command_id).await?;
    let checked = events
        .iter()
        .find_map(|b| match b {
            Body::LivenessChecked(l) => Some(l.clone()),
            _ => None,
        })
        .context("no LivenessChecked")?;
    let alive: Vec<(&str, bool)> = checked
        .results
        .iter()
        .map(|p| (p.endpoint.as_str(), p.alive))
        .collect();
    assert_eq!(alive, vec![("web", true), ("db", true), ("gone", false)]);
    assert_eq!(checked.results[0].status, 200);

    // Redelivery: an audit runs; then a second copy of its command (another message id, as a
    // re-dispatch after the duplicate window would be) reaches the leaf and is not run again.
    let done = client
        .run_audit(audit(to_cluster("dev-ap"), WAIT, ""))
        .await?
        .into_inner();
    command_when(&mut client, &done.command_id, WAIT, "the audit", |v| {
        status(v) == CommandStatus::Succeeded
    })
    .await?;
    let cluster = canopy_kit::subject::ClusterId::parse("dev-ap")?;
    let mut deadline = envelope::now();
    deadline.seconds += 600;
    let copy = envelope::new(
        &cluster,
        "test",
        Body::Command(Command {
            command_id: done.command_id.clone(),
            kind: canopy_proto::event::v1::CommandKind::RunAudit as i32,
            params: None,
            deadline: Some(deadline),
            requested_by: "test".into(),
        }),
    );
    canopy_kit::publish::publish(&seed, &copy).await?;
    let leaf = stack.leaf_mut("dev-ap")?;
    let leaf_js = jetstream::new(leaf.nats.connect().await?);
    eventually(WAIT, "the agent to take the copy", || {
        let leaf_js = leaf_js.clone();
        async move {
            let mut stream = leaf_js.get_stream(streams::COMMANDS).await?;
            let last = stream.info().await?.state.last_sequence;
            let mut consumer: jetstream::consumer::PullConsumer = stream
                .get_consumer("agent")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = consumer.info().await?;
            Ok(
                (last >= 2 && info.ack_floor.stream_sequence >= last && info.num_ack_pending == 0)
                    .then_some(()),
            )
        }
    })
    .await?;
    let events = events_of(&seed, "dev-ap", &done.command_id).await?;
    assert_eq!(count(&events, |b| matches!(b, Body::CommandAccepted(_))), 1);
    assert_eq!(count(&events, |b| matches!(b, Body::AuditStarted(_))), 1);
    assert_eq!(
        count(&events, |b| matches!(b, Body::CommandSucceeded(_))),
        1
    );

    // An agent killed mid-command: the probe hangs on a silent server; the restarted agent
    // reports the run interrupted and does not probe again.
    let (silent, connections) = silent_server().await?;
    let hanging = LivenessPool {
        name: "slow".into(),
        endpoints: vec![endpoint("silent", silent, ProbeProtocol::Http)],
        timeout_ms: 60_000,
        concurrency: 1,
    };
    let r = client
        .check_liveness(liveness("dev-ap", hanging, Duration::from_secs(300)))
        .await?
        .into_inner();
    command_when(
        &mut client,
        &r.command_id,
        WAIT,
        "the check to be accepted",
        |v| state(run_of(v, "dev-ap")) == RunState::Accepted,
    )
    .await?;
    eventually(WAIT, "the probe to connect", || async {
        Ok((connections.load(Ordering::SeqCst) >= 1).then_some(()))
    })
    .await?;
    let leaf = stack.leaf_mut("dev-ap")?;
    leaf.agent.kill().await?;
    leaf.agent.start().await?;
    let v = command_when(
        &mut client,
        &r.command_id,
        WAIT,
        "the run to be reported interrupted",
        |v| status(v) == CommandStatus::Failed,
    )
    .await?;
    let run = run_of(&v, "dev-ap").context("no run")?;
    assert_eq!(run.reason, "interrupted", "{run:?}");
    // The message is redelivered to the new agent after its ack wait; it must find the run
    // settled. Wait for the leaf consumer to have acked everything, then count.
    eventually(
        Duration::from_secs(120),
        "the redelivered command to be settled",
        || {
            let leaf_js = leaf_js.clone();
            async move {
                let mut stream = leaf_js.get_stream(streams::COMMANDS).await?;
                let last = stream.info().await?.state.last_sequence;
                let mut consumer: jetstream::consumer::PullConsumer = stream
                    .get_consumer("agent")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let info = consumer.info().await?;
                Ok(
                    (info.ack_floor.stream_sequence >= last && info.num_ack_pending == 0)
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    assert_eq!(connections.load(Ordering::SeqCst), 1, "the check ran again");
    let events = events_of(&seed, "dev-ap", &r.command_id).await?;
    assert_eq!(count(&events, |b| matches!(b, Body::CommandAccepted(_))), 1);
    assert_eq!(count(&events, |b| matches!(b, Body::LivenessChecked(_))), 0);
    assert_eq!(
        count(
            &events,
            |b| matches!(b, Body::CommandFailed(f) if f.reason == "interrupted"
                && f.kind == canopy_proto::event::v1::CommandKind::CheckLiveness as i32)
        ),
        1
    );
    stack.shutdown().await
}

/// The ticks a schedule fired, as the read model holds them, oldest first.
async fn fired(
    client: &mut CommandServiceClient<Channel>,
    schedule_id: &str,
) -> anyhow::Result<Vec<(chrono::DateTime<chrono::Utc>, String)>> {
    let list = client
        .list_commands(api::ListCommandsRequest {
            schedule_id: schedule_id.to_owned(),
            page_size: 500,
            ..Default::default()
        })
        .await?
        .into_inner()
        .commands;
    let mut out = Vec::new();
    for c in list {
        let t = c
            .scheduled_for
            .context("a fired command without its tick")?;
        let t = chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos)?)
            .context("bad tick")?;
        out.push((t, c.command_id));
    }
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_fire_every_tick_once_across_a_cnc_restart() -> anyhow::Result<()> {
    use canopy_proto::api::v1::schedule_service_client::ScheduleServiceClient;
    const EVERY: i64 = 2;
    let leaves = vec![LeafSpec::new("staging-us", Fixture::load("staging-us")?)];
    let mut stack = Stack::start(StackOptions::new(leaves)).await?;
    wait_for_clusters(&stack, 1).await?;
    let mut client = client(&stack).await?;
    let mut schedules = ScheduleServiceClient::connect(stack.api_url()).await?;
    let s = schedules
        .create_schedule(api::CreateScheduleRequest {
            name: "fast-audit".into(),
            cron: format!("*/{EVERY} * * * * *"),
            time_zone: "Europe/Paris".into(),
            kind: canopy_proto::event::v1::CommandKind::RunAudit as i32,
            target: to_cluster("staging-us"),
            params: None,
            deadline_seconds: 60,
        })
        .await?
        .into_inner();
    let out = canopyctl(&stack, &["schedules", "list"]).await?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains(&s.schedule_id),
        "{listed}"
    );

    eventually(WAIT, "three ticks to fire", || {
        let mut client = client.clone();
        let id = s.schedule_id.clone();
        async move { Ok((fired(&mut client, &id).await?.len() >= 3).then_some(())) }
    })
    .await?;
    stack.cnc.stop().await?;
    let stopped_at = chrono::Utc::now();
    // cnc is down for a few ticks: waiting lets them pass, it synchronises nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.cnc.start().await?;
    let restarted_at = chrono::Utc::now();
    eventually(WAIT, "the ticks after the restart to fire", || {
        let mut client = client.clone();
        let id = s.schedule_id.clone();
        async move {
            let ticks = fired(&mut client, &id).await?;
            Ok(ticks
                .last()
                .is_some_and(|(t, _)| *t > restarted_at + chrono::Duration::seconds(EVERY * 2))
                .then_some(()))
        }
    })
    .await?;
    let out = canopyctl(&stack, &["schedules", "delete", &s.schedule_id]).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted_at = chrono::Utc::now();
    // Ticks after the deletion would fire within this time: none must.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks = fired(&mut client, &s.schedule_id).await?;
    let ids: BTreeSet<&String> = ticks.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    for pair in ticks.windows(2) {
        assert_eq!(
            (pair[1].0 - pair[0].0).num_seconds(),
            EVERY,
            "a tick was missed or doubled: {ticks:?}"
        );
    }
    let last = ticks.last().context("no tick")?.0;
    assert!(
        last <= deleted_at + chrono::Duration::seconds(1),
        "fired after its deletion: {last} > {deleted_at}"
    );
    // The ticks while cnc was down were fired late, once.
    assert!(
        ticks
            .iter()
            .any(|(t, _)| *t > stopped_at && *t < restarted_at),
        "{ticks:?}"
    );
    let out = canopyctl(&stack, &["schedules", "list"]).await?;
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&s.schedule_id));
    stack.shutdown().await
}
