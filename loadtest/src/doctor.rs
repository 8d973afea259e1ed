//! `loadtest doctor`: the doctor binary against a real nats-server, fed heartbeats of many
//! simulated clusters (1,000 at one heartbeat per second each by default, i.e. 1,000
//! heartbeats/s). Measures the doctor's CPU per 1,000 heartbeats/s (from `/proc/<pid>/stat`
//! over a steady window) and the detection latency: how long after a cluster's last heartbeat
//! its `HealthChanged` to unreachable appears, against the threshold of three intervals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, stream};
use canopy_kit::proto::event::v1::{ClusterHealth, Envelope, Heartbeat, envelope::Body};
use canopy_kit::{envelope, streams, subject::ClusterId};
use futures::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Output;
use crate::stats::percentile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated clusters, each sending one heartbeat per --interval.
    #[arg(long, default_value_t = 1000)]
    pub clusters: u32,
    /// Heartbeat interval of every simulated cluster, in whole seconds.
    #[arg(long, default_value_t = 1)]
    pub interval: u32,
    /// Steady-state window the doctor's CPU is measured over.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Clusters that go silent to measure detection latency.
    #[arg(long, default_value_t = 20)]
    pub silenced: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

fn cluster_name(i: u32) -> String {
    format!("sim-{i:04}")
}

fn heartbeat(cluster: &ClusterId, sequence: u64, interval: u32) -> Envelope {
    envelope::new(
        cluster,
        "loadtest",
        Body::Heartbeat(Heartbeat {
            agent_instance_id: format!("{cluster}-loadtest"),
            sequence,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            kubernetes_version: "v1.34.1".to_owned(),
            node_count: 3,
            pod_count: 40,
            heartbeat_interval_seconds: interval,
        }),
    )
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let hz = 100.0;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.silenced == 0 || args.silenced >= args.clusters {
        bail!("--silenced must be between 1 and --clusters - 1");
    }
    let nats = canopy_testkit::NatsProcess::standalone_in_temp().await?;
    let js = jetstream::new(nats.connect().await?);
    for s in streams::seed_streams() {
        streams::ensure(&js, &s).await?;
    }
    // The simulated clusters publish into one local stream that FLEET_EVENTS sources, as it
    // sources the leaves' EVENTS in the mesh.
    js.get_or_create_stream(stream::Config {
        name: "LOADTEST_EVENTS".into(),
        subjects: vec!["canopy.evt.>".into()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await?;
    let mut fleet = js.get_stream(streams::FLEET_EVENTS).await?;
    let mut config = fleet.info().await?.config.clone();
    config.sources = Some(vec![stream::Source {
        name: "LOADTEST_EVENTS".into(),
        ..Default::default()
    }]);
    js.update_stream(config).await?;

    let tmp = tempfile::tempdir()?;
    let mut doctor = canopy_e2e::Service::new(
        "doctor",
        "canopy-doctor",
        &[],
        vec![("CANOPY_NATS_URL".into(), nats.client_url())],
        tmp.path(),
    )?;
    doctor.start().await?;
    let pid = doctor.pid().context("the doctor is not running")?;

    let ids: Vec<ClusterId> = (0..args.clusters)
        .map(|i| ClusterId::parse(&cluster_name(i)))
        .collect::<Result<_, _>>()?;
    let silenced: Vec<ClusterId> = ids[..args.silenced as usize].to_vec();
    let stop_all = CancellationToken::new();
    let stop_silenced = CancellationToken::new();
    // Last heartbeat published per silenced cluster (stored-ack time).
    let last_beat = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publisher = {
        let (js, ids, stop_all, stop_silenced, last_beat, sent) = (
            js.clone(),
            ids.clone(),
            stop_all.clone(),
            stop_silenced.clone(),
            last_beat.clone(),
            sent.clone(),
        );
        let interval = Duration::from_secs(u64::from(args.interval));
        let silenced_n = args.silenced as usize;
        tokio::spawn(async move {
            // Spread each cluster's beat evenly over the interval, 100 slots.
            let slots = 100usize;
            let per_slot = ids.len().div_ceil(slots);
            let mut tick = tokio::time::interval(interval / slots as u32);
            let mut seq = 0u64;
            let mut slot = 0usize;
            loop {
                tokio::select! {
                    () = stop_all.cancelled() => return anyhow::Ok(()),
                    _ = tick.tick() => {}
                }
                if slot == 0 {
                    seq += 1;
                }
                let from = slot * per_slot;
                let mut acks = Vec::new();
                for (i, id) in ids.iter().enumerate().skip(from).take(per_slot) {
                    if i < silenced_n && stop_silenced.is_cancelled() {
                        continue;
                    }
                    acks.push((
                        i,
                        canopy_kit::publish::send(
                            &js,
                            &heartbeat(id, seq, interval.as_secs() as u32),
                        )
                        .await?,
                    ));
                }
                for (i, ack) in acks {
                    ack.await?;
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i < silenced_n {
                        last_beat
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .insert(ids[i].to_string(), Instant::now());
                    }
                }
                slot = (slot + 1) % slots;
            }
        })
    };

    // Warm-up: every cluster judged healthy once.
    let client = nats.connect().await?;
    let mut changes = client.subscribe("canopy.ctl.health.changed").await?;
    eprintln!(
        "doctor running; {} simulated clusters at one heartbeat per {}s; warming up",
        args.clusters, args.interval
    );
    let mut healthy = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while healthy.len() < args.clusters as usize {
        let m = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            changes.next(),
        )
        .await
        .context("not every cluster was judged healthy within 120 s")?
        .context("subscription ended")?;
        let env = envelope::decode(&m.subject, &m.payload)?;
        if let Some(Body::HealthChanged(h)) = env.body
            && h.current == ClusterHealth::Healthy as i32
        {
            healthy.insert(env.cluster_id);
        }
    }

    // Steady state: CPU over the window.
    let (cpu0, t0, sent0) = (
        cpu_seconds(pid)?,
        Instant::now(),
        sent.load(std::sync::atomic::Ordering::Relaxed),
    );
    tokio::time::sleep(args.window).await;
    let (cpu1, t1, sent1) = (
        cpu_seconds(pid)?,
        Instant::now(),
        sent.load(std::sync::atomic::Ordering::Relaxed),
    );
    let wall = (t1 - t0).as_secs_f64();
    let rate = (sent1 - sent0) as f64 / wall;
    let cpu_share = (cpu1 - cpu0) / wall;
    let cpu_per_1k = cpu_share / (rate / 1000.0);

    // Detection: silence some clusters, time their HealthChanged to unreachable.
    eprintln!("silencing {} clusters", args.silenced);
    stop_silenced.cancel();
    let mut latencies = Vec::new();
    let wanted: std::collections::BTreeSet<String> =
        silenced.iter().map(ToString::to_string).collect();
    let deadline = Instant::now() + Duration::from_secs(u64::from(args.interval) * 3 + 30);
    while latencies.len() < wanted.len() {
        let m = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            changes.next(),
        )
        .await
        .context("not every silenced cluster was judged unreachable in time")?
        .context("subscription ended")?;
        let seen = Instant::now();
        let env = envelope::decode(&m.subject, &m.payload)?;
        if let Some(Body::HealthChanged(h)) = env.body
            && h.current == ClusterHealth::Unreachable as i32
            && wanted.contains(&env.cluster_id)
        {
            let last = last_beat
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .get(&env.cluster_id)
                .copied()
                .context("no heartbeat recorded")?;
            latencies.push((seen - last).as_secs_f64() * 1000.0);
        }
    }
    stop_all.cancel();
    publisher.await??;
    doctor.stop().await?;
    latencies.sort_by(f64::total_cmp);
    let threshold_ms = f64::from(args.interval) * 3000.0;
    let report = json!({
        "clusters": args.clusters,
        "heartbeat_interval_s": args.interval,
        "heartbeats_per_s": (rate * 10.0).round() / 10.0,
        "window_s": (wall * 10.0).round() / 10.0,
        "doctor_cpu_share_of_one_core": (cpu_share * 1000.0).round() / 1000.0,
        "doctor_cpu_per_1000_heartbeats_per_s": (cpu_per_1k * 1000.0).round() / 1000.0,
        "detection_threshold_ms": threshold_ms,
        "detection_latency_ms": {
            "p50": percentile(&latencies, 50.0).map(f64::round),
            "p99": percentile(&latencies, 99.0).map(f64::round),
            "max": latencies.last().copied().unwrap_or(0.0).round(),
        },
        "detection_beyond_threshold_ms_max": (latencies.last().copied().unwrap_or(0.0) - threshold_ms).round(),
    });
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            println!(
                "doctor: {} clusters, {:.0} heartbeats/s over {:.1}s",
                args.clusters, rate, wall
            );
            println!(
                "  CPU: {:.1}% of one core, i.e. {:.3} cores per 1,000 heartbeats/s",
                cpu_share * 100.0,
                cpu_per_1k
            );
            println!(
                "  detection (last heartbeat -> unreachable; threshold {threshold_ms:.0} ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                percentile(&latencies, 50.0).unwrap_or(0.0),
                percentile(&latencies, 99.0).unwrap_or(0.0),
                latencies.last().copied().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
