//! `make demo`: a local seed with three simulated leaf clusters, on embedded defaults.
//!
//! Everything runs on loopback; data and logs go to `.state/demo/` (emptied at each start).
//! Ctrl-C stops every process cleanly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use canopy_e2e::{LeafSpec, Stack, StackOptions};
use canopy_testkit::Fixture;

/// (cluster, fixture, env label, whether the seed dials it).
const CLUSTERS: [(&str, &str, &str, bool); 3] = [
    ("prod-eu", "prod-eu", "prod", false),
    ("staging-us", "staging-us", "staging", false),
    // Reached the other way round: the seed's dialer connects to its listener.
    ("dev-ap", "dev-ap", "dev", true),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = canopy_testkit::workspace_root();
    let state = root.join(".state").join("demo");
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("failed to empty {}", state.display()))?;
    }
    let api: SocketAddr = std::env::var("CANOPY_DEMO_API")
        .unwrap_or_else(|_| "127.0.0.1:50051".to_owned())
        .parse()
        .context("CANOPY_DEMO_API must be host:port")?;
    if std::net::TcpListener::bind(api).is_err() {
        anyhow::bail!(
            "{api} is in use (another demo running?); stop it or set CANOPY_DEMO_API=127.0.0.1:PORT"
        );
    }
    let mut leaves = Vec::new();
    for (cluster, fixture, env, seed_dials) in CLUSTERS {
        let spec = LeafSpec::new(cluster, Fixture::load(fixture)?).with_label("env", env);
        leaves.push(if seed_dials { spec.seed_dialed() } else { spec });
    }
    let mut opts = StackOptions::new(leaves);
    opts.state_dir = Some(state.clone());
    opts.heartbeat_interval = Duration::from_secs(5);
    opts.inventory_interval = Duration::from_secs(60);
    // Audits every 2 minutes (the agent's default is 10) and on every watched change.
    opts.audit_interval = Duration::from_secs(120);
    opts.api_listen = Some(api);
    // Zero trust also on a laptop: a new NATS operator and accounts, and token auth on the api.
    opts.fresh_operator = true;
    opts.api_auth = true;
    // The admin approves the leaves' requests through the api: on the audit trail.
    opts.approve_through_api = true;
    opts.health_interval = Duration::from_secs(10);
    opts.doctor_args = vec!["--recovery-hold".to_owned(), "15s".to_owned()];

    eprintln!(
        "starting Postgres, the seed nats-server and its dialer, 3 leaf clusters and the services (state in {})",
        state.display()
    );
    let started = Instant::now();
    let stack = tokio::select! {
        stack = Stack::start(opts) => stack?,
        _ = shutdown_signal() => anyhow::bail!("interrupted during start-up"),
    };
    for leaf in &stack.leaves {
        let request = stack.request_id(&leaf.cluster).await?;
        let how = if leaf.seed_dialed {
            "the seed's dialer dials it"
        } else {
            "it dials the seed"
        };
        eprintln!(
            "  approved the interconnect request {request} of {} through the api at start-up: its link is up ({how})",
            leaf.cluster
        );
    }
    eprintln!(
        "all services ready in {:.1}s; waiting for the clusters to report",
        started.elapsed().as_secs_f64()
    );
    let reported = tokio::select! {
        r = wait_for_clusters(&stack) => r,
        _ = shutdown_signal() => Ok(BTreeMap::new()),
    };
    match reported {
        Ok(counts) if !counts.is_empty() => {
            for (cluster, objects) in counts {
                eprintln!("  {cluster}: {objects} objects in the inventory");
            }
            match postures(&stack).await {
                Ok(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
                Err(e) => eprintln!("  the first audits are not in yet: {e:#}"),
            }
            match approve_ingress_secrets(&stack).await {
                Ok(id) => eprintln!(
                    "  granted derogation {id}: prod-eu's ingress-nginx may read TLS secrets (RBAC-SECRETS exempted for 90 days)"
                ),
                Err(e) => eprintln!("  could not grant the demo derogation: {e:#}"),
            }
            match sick_leaf(&stack).await {
                Ok(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
                Err(e) => eprintln!("  the doctor has not judged dev-ap yet: {e:#}"),
            }
            print_usage(&stack);
            shutdown_signal().await;
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "the clusters did not all report: {e:#}\nlogs are in {}/logs",
            state.display()
        ),
    }
    eprintln!("stopping...");
    stack.shutdown().await?;
    eprintln!("stopped");
    Ok(())
}

async fn wait_for_clusters(stack: &Stack) -> anyhow::Result<BTreeMap<String, u64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = canopy_proto::api::v1::fleet_service_client::FleetServiceClient::new(
        canopy_e2e::admin_channel(stack).await?,
    );
    loop {
        let clusters = canopy_e2e::list_clusters(&mut client)
            .await
            .unwrap_or_default();
        let ready: BTreeMap<String, u64> = clusters
            .iter()
            .filter(|c| c.inventory_objects > 0)
            .map(|c| (c.id.clone(), c.inventory_objects))
            .collect();
        if ready.len() == CLUSTERS.len() {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {} clusters have an inventory after 60s",
                ready.len(),
                CLUSTERS.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each cluster's score once its first audit is in (at most 60 s).
async fn postures(stack: &Stack) -> anyhow::Result<Vec<String>> {
    use canopy_proto::api::v1::{
        GetPostureRequest, findings_service_client::FindingsServiceClient,
    };
    let mut client = FindingsServiceClient::new(canopy_e2e::admin_channel(stack).await?);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    for (cluster, _, _, _) in CLUSTERS {
        loop {
            let p = client
                .get_posture(GetPostureRequest {
                    cluster_id: cluster.to_owned(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if p.clusters > 0 {
                let open = p.counts.unwrap_or_default().open;
                let n = |s: &str| open.get(s).copied().unwrap_or(0);
                lines.push(format!(
                    "  {cluster}: posture {}/100, open findings: {} critical, {} high, {} medium, {} low",
                    p.score,
                    n("critical"),
                    n("high"),
                    n("medium"),
                    n("low")
                ));
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("no completed audit of {cluster} after 60s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(lines)
}

/// prod-eu's ingress controller reads TLS secrets by design: the demo records that exception.
async fn approve_ingress_secrets(stack: &Stack) -> anyhow::Result<String> {
    use canopy_proto::api::v1::{
        GrantDerogationRequest, policy_service_client::PolicyServiceClient,
    };
    use canopy_proto::event::v1::DerogationScope;
    let mut client = PolicyServiceClient::new(canopy_e2e::admin_channel(stack).await?);
    let expires = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 90 * 86_400,
        nanos: 0,
    };
    let granted = client
        .grant_derogation(GrantDerogationRequest {
            check: "RBAC-SECRETS".into(),
            scope: Some(DerogationScope {
                cluster_id: "prod-eu".into(),
                workload_kind: "ClusterRole".into(),
                workload_name: "ingress-nginx".into(),
                ..Default::default()
            }),
            reason: "the ingress controller serves TLS certificates stored in secrets".into(),
            approver: "platform security".into(),
            expires_at: Some(expires),
        })
        .await?
        .into_inner();
    Ok(granted.derogation.unwrap_or_default().derogation_id)
}

/// dev-ap is sick on purpose (its fixture has a crash-looping Deployment, a NotReady node, an
/// unschedulable pod and a DaemonSet short of pods): what the doctor says about it (at most 60 s).
async fn sick_leaf(stack: &Stack) -> anyhow::Result<Vec<String>> {
    use canopy_proto::api::v1::{
        GetFleetHealthRequest, health_service_client::HealthServiceClient,
    };
    let mut client = HealthServiceClient::new(canopy_e2e::admin_channel(stack).await?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fleet = client
            .get_fleet_health(GetFleetHealthRequest {
                cluster_id: "dev-ap".to_owned(),
            })
            .await?
            .into_inner();
        if let Some(c) = fleet.clusters.first().filter(|c| !c.diagnoses.is_empty()) {
            let mut lines = vec![format!(
                "  dev-ap is sick on purpose; the doctor says: {}",
                c.reason
            )];
            lines.extend(c.diagnoses.iter().map(|d| {
                format!(
                    "    - {}{}",
                    d.summary,
                    if d.suggested_playbook.is_empty() {
                        String::new()
                    } else {
                        format!(" (proposed fix: {})", d.suggested_playbook)
                    }
                )
            }));
            return Ok(lines);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no diagnosis after 60s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_usage(stack: &Stack) {
    let bin = canopy_e2e::bin_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    println!();
    println!(
        "Canopy is running: a seed and 3 leaf clusters ({}).",
        CLUSTERS.map(|c| c.0).join(", ")
    );
    println!();
    println!("In another shell:");
    println!("  export PATH={bin}:$PATH");
    let token_file = stack.dir.join("admin.token");
    if let Some(token) = &stack.admin_token {
        match std::fs::write(&token_file, format!("{token}\n")) {
            Ok(()) => println!(
                "  export CANOPY_TOKEN_FILE={}   # admin API token (role admin, 7 days)",
                token_file.display()
            ),
            Err(e) => eprintln!("could not store the admin token: {e}"),
        }
    }
    if stack.api_addr.to_string() != "127.0.0.1:50051" {
        println!("  export CANOPY_API={}", stack.api_url());
    }
    println!("  canopyctl clusters list");
    println!("  canopyctl health                            # why dev-ap is degraded");
    println!("  canopyctl diagnoses list --cluster dev-ap");
    println!(
        "  canopyctl remediations list                 # then: canopyctl remediations approve ID"
    );
    println!("  canopyctl recommendations list");
    println!("  canopyctl clusters get staging-us");
    println!("  canopyctl events watch                      # live events of every cluster");
    println!("  canopyctl events watch --cluster dev-ap --type heartbeat --from-seq 1");
    println!("  canopyctl posture                           # fleet score and history");
    println!("  canopyctl posture --cluster staging-us");
    println!("  canopyctl findings list --cluster staging-us --min-severity high");
    println!("  canopyctl findings list --standard pss:baseline -o json");
    println!("  canopyctl findings list --cluster prod-eu --state exempted");
    println!("  canopyctl audits list");
    println!("  canopyctl policy get > policy.yaml          # edit, then:");
    println!("  canopyctl policy set -f policy.yaml --expected-version 0");
    println!("  canopyctl derogations list");
    println!(
        "  canopyctl derogations grant --check HOST-NET --cluster-label env=staging --reason ... --approver ... --expires-in 7d"
    );
    println!("  canopyctl audit services/canopy-testkit/fixtures/staging-us   # offline, for CI");
    println!("  canopyctl run audit --cluster staging-us --wait   # ends with the audit's summary");
    println!("  canopyctl run audit --selector env=prod --wait --timeout 1m");
    println!("  canopyctl commands list");
    println!(
        "  canopyctl schedules create --name nightly --cron \"0 3 * * *\" --kind audit --selector env=prod"
    );
    println!();
    println!(
        "gRPC api: {}  (grpcurl -plaintext {} list)",
        stack.api_url(),
        stack.api_addr
    );
    if let Some(token) = &stack.admin_token {
        println!("admin API token: {token}");
    }
    if let Some(keys) = &stack.api_token_keys {
        println!(
            "more tokens: canopyctl token issue --keys {} --subject NAME --role viewer|operator|admin",
            keys.display()
        );
    }
    println!(
        "NATS runs in operator mode: credentials of every service in {} (canopyctl nats init)",
        stack.nats_auth.dir.display()
    );
    println!("Postgres: {}", stack.database_url);
    println!(
        "seed nats-server: {}  monitoring: {}",
        stack.seed.client_url(),
        stack.seed.monitor_url()
    );
    for leaf in &stack.leaves {
        println!(
            "  leaf {:<11} nats {}  kube {}",
            leaf.cluster,
            leaf.nats.client_url(),
            leaf.kube.url()
        );
    }
    println!("health and metrics:");
    for service in stack.services() {
        println!(
            "  {:<28} http://{}/metrics",
            service.name(),
            service.http_addr()
        );
    }
    println!("logs: {}/logs", stack.dir.display());
    println!();
    println!("Ctrl-C stops everything.");
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
