//! The audit loop: a full audit at start-up, every `--audit-interval`, after each change of the
//! effective policy and on request (a RunAudit command); between them, watched changes re-audit
//! only the objects that changed (incremental audits), or everything when a change affects other
//! objects' verdicts. One audit runs at a time; its events go to EVENTS in order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use canopy_kit::proto::event::v1::{AuditResult, AuditScope, AuditTrigger, Envelope};
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::adapters::kube::{self as k8s, KINDS, Kind};
use crate::adapters::policy::{self, Current};
use crate::adapters::publisher::{Published, publish_until_stored};
use crate::adapters::watch::{self as kube_watch, Watched, stamp};
use crate::config::Config;
use crate::domain::audit::{
    AuditRun, AuditSpec, Change, ClusterIdentity, EffectivePolicy, FULL_KINDS, INCREMENTAL_KINDS,
    Pending,
};
use crate::requests::{Inbox, Request};

/// How long the first audit waits for the effective policy to be read from POLICIES.
const POLICY_WAIT: Duration = Duration::from_secs(5);
/// Changed objects kept for an incremental audit; beyond, a full audit is run instead.
const MAX_PENDING: usize = 10_000;
/// Watch events waiting for the loop (watches pause while it is full).
const WATCH_QUEUE: usize = 1024;
/// Attempts at one page of a list before the audit is abandoned.
const PAGE_ATTEMPTS: u32 = 3;

/// Starts the effective-policy follower and the audit loop; the handle ends when both stopped.
pub fn start(
    cfg: &Config,
    kube: &kube::Client,
    js: &jetstream::Context,
    requests: Inbox<AuditResult>,
    shutdown: &CancellationToken,
    drain: &CancellationToken,
) -> JoinHandle<()> {
    let (policy_tx, policy) = watch::channel(None);
    let follower = tokio::spawn(policy::follow(
        js.clone(),
        cfg.cluster_id.clone(),
        policy_tx,
        shutdown.clone(),
    ));
    let audits = AuditLoop {
        cluster: ClusterIdentity {
            id: cfg.cluster_id.clone(),
            labels: cfg.labels.iter().cloned().collect(),
        },
        interval: cfg.audit_interval,
        debounce: cfg.audit_debounce,
        page_size: cfg.page_size,
        max_chunk_bytes: cfg.max_chunk_bytes as usize,
        kube: kube.clone(),
        js: js.clone(),
        policy,
        requests,
    };
    let (shutdown, drain) = (shutdown.clone(), drain.clone());
    tokio::spawn(async move {
        audits.run(shutdown, drain).await;
        let _ = follower.await;
    })
}

/// What the audit loop needs.
pub struct AuditLoop {
    pub cluster: ClusterIdentity,
    pub interval: Duration,
    pub debounce: Duration,
    pub page_size: u32,
    pub max_chunk_bytes: usize,
    pub kube: kube::Client,
    pub js: jetstream::Context,
    pub policy: Current,
    pub requests: Inbox<AuditResult>,
}

/// Why a full audit runs.
enum Why {
    Trigger(AuditTrigger),
    Command(Request<AuditResult>),
}

/// The kinds a full audit lists: those the engine reads.
fn audit_kinds() -> impl Iterator<Item = &'static Kind> {
    KINDS
        .iter()
        .filter(|k| INCREMENTAL_KINDS.contains(&k.kind) || FULL_KINDS.contains(&k.kind))
}

impl AuditLoop {
    /// Runs until `shutdown`; events in flight are stored until `drain`.
    pub async fn run(mut self, shutdown: CancellationToken, drain: CancellationToken) {
        let (tx, mut watched) = mpsc::channel(WATCH_QUEUE);
        let watchers: Vec<_> = audit_kinds()
            .map(|k| {
                tokio::spawn(kube_watch::watch_kind(
                    self.kube.clone(),
                    *k,
                    tx.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        drop(tx);
        // The first audit waits (briefly) for the stored effective policy.
        let _ = tokio::time::timeout(POLICY_WAIT, self.policy.wait_for(Option::is_some)).await;
        self.policy.mark_unchanged();
        let mut pending = Pending::new(MAX_PENDING);
        let mut due: Option<Why> = Some(Why::Trigger(AuditTrigger::Startup));
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut quiet_until: Option<Instant> = None;
        loop {
            if let Some(why) = due.take() {
                pending.clear();
                quiet_until = None;
                if !self.full(why, &mut pending, &shutdown, &drain).await {
                    break;
                }
                tick.reset();
                continue;
            }
            let settle = async {
                match quiet_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(request) = self.requests.recv() => due = Some(Why::Command(request)),
                Ok(()) = self.policy.changed() => due = Some(Why::Trigger(AuditTrigger::Policy)),
                _ = tick.tick() => due = Some(Why::Trigger(AuditTrigger::Interval)),
                // Before the watch events: a busy cluster must not starve the pending audit.
                () = settle => {
                    quiet_until = None;
                    if pending.wants_full() {
                        due = Some(Why::Trigger(AuditTrigger::Watch));
                    } else if !pending.is_empty() {
                        let changes = pending.take();
                        if !self.incremental(changes, &shutdown, &drain).await {
                            break;
                        }
                    }
                }
                Some(w) = watched.recv() => {
                    let wants = match w {
                        Watched::Change { kind, change } => pending.record(kind, change),
                        Watched::Resync { kind } => {
                            info!(kind, "a watch lost track of changes; auditing everything");
                            due = Some(Why::Trigger(AuditTrigger::Watch));
                            false
                        }
                    };
                    if wants && quiet_until.is_none() {
                        quiet_until = Some(Instant::now() + self.debounce);
                    }
                }
            }
        }
        for w in watchers {
            w.abort();
        }
    }

    fn policy_now(&self) -> Arc<EffectivePolicy> {
        self.policy.borrow().clone().unwrap_or_default()
    }

    fn spec(&self, trigger: AuditTrigger, scope: AuditScope, command_id: String) -> AuditSpec {
        AuditSpec {
            audit_id: Uuid::now_v7().to_string(),
            trigger,
            scope,
            command_id,
            started_at: Utc::now(),
            max_chunk_bytes: self.max_chunk_bytes,
        }
    }

    /// A full audit; false when the agent stopped midway.
    async fn full(
        &mut self,
        why: Why,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) -> bool {
        // A policy change that arrived before this audit is covered by it.
        self.policy.mark_unchanged();
        let (trigger, command_id, reply) = match why {
            Why::Trigger(t) => (t, String::new(), None),
            Why::Command(r) => (AuditTrigger::Command, r.command_id, Some(r.reply)),
        };
        let spec = self.spec(trigger, AuditScope::Full, command_id);
        let outcome = self.list_and_audit(spec, pending, shutdown, drain).await;
        let (answer, go_on) = match outcome {
            Ok(Some(result)) => (Ok(result), true),
            Ok(None) => (
                Err("the agent stopped before the audit was complete".to_owned()),
                false,
            ),
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "audit abandoned; its findings stay as the previous audit left them"
                );
                metrics::counter!("canopy_agent_audits_failed_total").increment(1);
                (Err(format!("{e:#}")), true)
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
        go_on
    }

    async fn list_and_audit(
        &self,
        spec: AuditSpec,
        pending: &mut Pending,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) -> anyhow::Result<Option<AuditResult>> {
        let trigger = spec.trigger;
        let mut run = AuditRun::new(self.cluster.clone(), spec, self.policy_now())
            .context("the effective policy does not compile")?;
        if !publish_all(&self.js, [run.started()], drain).await? {
            return Ok(None);
        }
        for kind in audit_kinds() {
            let api_version = kind.api_version();
            let mut pager = k8s::Pager::new(&self.kube, kind, self.page_size);
            loop {
                let page = tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    page = next_page(&mut pager, kind) => page,
                };
                let page = match page {
                    Ok(Some(page)) => page,
                    Ok(None) => break,
                    Err(e) => {
                        if let Some(code) = k8s::refused(&e) {
                            warn!(
                                kind = kind.kind,
                                code, "kind not audited: refused by the API"
                            );
                            run.skip_kind(kind.kind);
                            break;
                        }
                        return Err(e).with_context(|| format!("failed to list {}", kind.plural));
                    }
                };
                for mut obj in page {
                    stamp(&mut obj, &api_version, kind.kind);
                    pending.seen(kind.kind, &obj);
                    let chunks = run.add(&obj);
                    if !chunks.is_empty() && !publish_all(&self.js, chunks, drain).await? {
                        return Ok(None);
                    }
                }
            }
        }
        let audit_id = run.audit_id().to_owned();
        let objects = run.summary().objects;
        let (events, result) = run.finish(Utc::now());
        if !publish_all(&self.js, events, drain).await? {
            return Ok(None);
        }
        metrics::counter!("canopy_agent_audits_total", "scope" => "full").increment(1);
        metrics::counter!("canopy_agent_audit_findings_total").increment(result.findings);
        info!(
            %audit_id,
            trigger = trigger.as_str_name(),
            objects,
            findings = result.findings,
            exempted = result.exempted,
            "full audit published"
        );
        Ok(Some(result))
    }

    /// An incremental audit of `changes`; false when the agent stopped midway.
    async fn incremental(
        &self,
        changes: Vec<Change>,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) -> bool {
        let spec = self.spec(AuditTrigger::Watch, AuditScope::Incremental, String::new());
        match self.audit_changes(spec, changes, shutdown, drain).await {
            Ok(done) => done,
            Err(e) => {
                warn!(error = format!("{e:#}"), "incremental audit abandoned");
                metrics::counter!("canopy_agent_audits_failed_total").increment(1);
                true
            }
        }
    }

    async fn audit_changes(
        &self,
        spec: AuditSpec,
        changes: Vec<Change>,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let mut run = AuditRun::new(self.cluster.clone(), spec, self.policy_now())
            .context("the effective policy does not compile")?;
        // Cross-object checks of a changed workload need its namespace's NetworkPolicies and
        // ServiceAccounts.
        let namespaces: BTreeSet<String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Applied(obj) => obj
                    .pointer("/metadata/namespace")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                Change::Deleted(_) => None,
            })
            .collect();
        let mut context = Vec::new();
        for kind in ["NetworkPolicy", "ServiceAccount"] {
            let Some(kind) = k8s::kind_named(kind) else {
                continue;
            };
            let api_version = kind.api_version();
            for ns in &namespaces {
                let mut pager = k8s::Pager::namespaced(&self.kube, kind, ns, self.page_size);
                loop {
                    let page = tokio::select! {
                        () = shutdown.cancelled() => return Ok(false),
                        page = next_page(&mut pager, kind) => page,
                    };
                    match page {
                        Ok(Some(page)) => context.extend(page.into_iter().map(|mut o| {
                            stamp(&mut o, &api_version, kind.kind);
                            o
                        })),
                        Ok(None) => break,
                        Err(e) if k8s::refused(&e).is_some() => {
                            run.skip_kind(kind.kind);
                            break;
                        }
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("failed to list {}", kind.plural));
                        }
                    }
                }
            }
        }
        for obj in &context {
            run.add_context(obj);
        }
        let mut events = vec![run.started()];
        for change in changes {
            match change {
                Change::Applied(obj) => events.extend(run.add(&obj)),
                Change::Deleted(r) => run.deleted(r),
            }
        }
        let audit_id = run.audit_id().to_owned();
        let objects = run.summary().objects;
        let (rest, result) = run.finish(Utc::now());
        events.extend(rest);
        if !publish_all(&self.js, events, drain).await? {
            return Ok(false);
        }
        metrics::counter!("canopy_agent_audits_total", "scope" => "incremental").increment(1);
        info!(%audit_id, objects, findings = result.findings, "incremental audit published");
        Ok(true)
    }
}

/// Stores events one by one, in order; `Ok(false)` when stopped first.
async fn publish_all(
    js: &jetstream::Context,
    events: impl IntoIterator<Item = Envelope>,
    drain: &CancellationToken,
) -> anyhow::Result<bool> {
    for env in events {
        match publish_until_stored(js, &env, drain).await {
            Published::Stored => {}
            Published::Stopped => return Ok(false),
            Published::Invalid => anyhow::bail!("an audit event does not validate"),
        }
    }
    Ok(true)
}

/// The next page of `kind`, trying a failing page again a few times before giving up on it.
async fn next_page(
    pager: &mut k8s::Pager,
    kind: &Kind,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match pager.next_page().await {
            Ok(page) => return Ok(page),
            Err(e) => {
                metrics::counter!("canopy_agent_kubernetes_errors_total", "kind" => kind.kind)
                    .increment(1);
                if attempt >= PAGE_ATTEMPTS || !k8s::retryable(&e) {
                    return Err(e);
                }
                warn!(kind = kind.kind, attempt, error = format!("{e:#}"), retry_in = ?backoff, "failed to list a page; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use async_nats::jetstream;
    use canopy_kit::proto::event::v1::{AuditScope, AuditTrigger, envelope::Body};
    use canopy_kit::streams;
    use canopy_kit::subject::ClusterId;
    use canopy_testkit::{FakeKube, Fixture, NatsProcess};
    use futures::StreamExt as _;
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use super::AuditLoop;
    use crate::adapters::kube as k8s;
    use crate::domain::audit::ClusterIdentity;
    use crate::requests;

    /// What a RunAudit command gets: a full audit with its command id and trigger COMMAND, and
    /// the audit's summary as the answer.
    #[tokio::test]
    async fn a_requested_audit_answers_with_its_summary_and_carries_the_command()
    -> anyhow::Result<()> {
        let nats = NatsProcess::standalone_in_temp().await?;
        let kube = FakeKube::start(Fixture::load("dev-ap")?).await?;
        let js = jetstream::new(nats.connect().await?);
        let cluster = ClusterId::parse("dev-ap")?;
        streams::ensure(&js, &streams::leaf_events(&cluster, -1)).await?;
        let (requester, inbox) = requests::channel();
        let (_policy_tx, policy) = watch::channel(Some(std::sync::Arc::default()));
        let audits = AuditLoop {
            cluster: ClusterIdentity {
                id: cluster,
                labels: Default::default(),
            },
            interval: Duration::from_secs(3600),
            debounce: Duration::from_secs(1),
            page_size: 100,
            max_chunk_bytes: 64 * 1024,
            kube: k8s::client(Some(&kube.url())).await?,
            js: js.clone(),
            policy,
            requests: inbox,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(audits.run(stop.clone(), CancellationToken::new()));
        let result = tokio::time::timeout(Duration::from_secs(60), requester.ask("cmd-1"))
            .await?
            .map_err(anyhow::Error::msg)?;
        assert!(result.objects_audited > 0 && result.findings > 0);
        stop.cancel();
        task.await?;
        assert!(
            requester.ask("cmd-2").await.is_err(),
            "a stopped loop takes no request"
        );

        let consumer = js
            .get_stream(streams::EVENTS)
            .await?
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: "canopy.evt.dev-ap.audit.completed".into(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut commanded = None;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        {
            let m = m?;
            let env = canopy_kit::envelope::decode(&m.subject, &m.payload)?;
            if let Some(Body::AuditCompleted(c)) = env.body
                && c.trigger == AuditTrigger::Command as i32
            {
                assert_eq!(env.causation_id, "cmd-1");
                commanded = Some(c);
            }
        }
        let c = commanded.expect("an audit completed for the command");
        assert_eq!(c.command_id, "cmd-1");
        assert_eq!(c.scope, AuditScope::Full as i32);
        assert_eq!(c.audit_id, result.audit_id);
        assert_eq!(c.findings, result.findings);
        Ok(())
    }
}
