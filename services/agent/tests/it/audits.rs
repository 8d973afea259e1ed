//! Audits against the fake Kubernetes API: the start-up audit reports what the engine finds in
//! the fixture, a watched change is re-audited alone, and a new effective policy (disabled
//! check, derogation) triggers a full audit that applies it.

use std::collections::BTreeSet;

use async_nats::jetstream;
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AuditCompleted, AuditScope, AuditTrigger, Derogation, DerogationScope, EffectivePolicy,
    Envelope, Finding, Policy, envelope::Body,
};
use canopy_kit::subject::ClusterId;
use canopy_testkit::{FakeKube, Fixture, NatsProcess, eventually};
use serde_json::json;

use crate::support::{Agent, WAIT, all_events as events};

/// The kinds the agent audits (and lists).
const AUDITED: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ConfigMap",
    "Ingress",
    "NetworkPolicy",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

/// One audit as found in the stream.
struct Audit {
    started: bool,
    findings: Vec<Finding>,
    chunks: Vec<u32>,
    completed: Option<AuditCompleted>,
}

fn audits(events: &[(usize, Envelope)]) -> Vec<(String, Audit)> {
    let mut out: Vec<(String, Audit)> = Vec::new();
    fn slot(out: &mut Vec<(String, Audit)>, id: &str) -> usize {
        if let Some(i) = out.iter().position(|(a, _)| a == id) {
            return i;
        }
        out.push((
            id.to_owned(),
            Audit {
                started: false,
                findings: Vec::new(),
                chunks: Vec::new(),
                completed: None,
            },
        ));
        out.len() - 1
    }
    for (_, e) in events {
        match &e.body {
            Some(Body::AuditStarted(s)) => {
                let i = slot(&mut out, &s.audit_id);
                out[i].1.started = true;
            }
            Some(Body::FindingsChunk(c)) => {
                let i = slot(&mut out, &c.audit_id);
                out[i].1.chunks.push(c.chunk_index);
                out[i].1.findings.extend(c.findings.iter().cloned());
            }
            Some(Body::AuditCompleted(c)) => {
                let i = slot(&mut out, &c.audit_id);
                out[i].1.completed = Some(c.clone());
            }
            _ => {}
        }
    }
    out
}

type Key = (String, String, String, String, String);

fn key(f: &Finding) -> Key {
    let r = f.resource.clone().unwrap_or_default();
    (f.check.clone(), r.kind, r.namespace, r.name, f.path.clone())
}

/// What the engine finds in the fixture's audited objects, as files would give them.
fn expected(fixture: &Fixture) -> BTreeSet<Key> {
    let mut auditor = canopy_audit::Auditor::new();
    let mut out = BTreeSet::new();
    let objects = fixture
        .objects()
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| AUDITED.contains(&k)));
    let mut all = Vec::new();
    for o in objects {
        all.extend(auditor.add(o));
    }
    all.extend(auditor.finish());
    for f in all {
        out.insert((
            f.check.to_owned(),
            f.resource.kind.clone(),
            f.resource.namespace.clone().unwrap_or_default(),
            f.resource.name.clone(),
            f.path.clone(),
        ));
    }
    out
}

async fn completed_audits(
    js: &jetstream::Context,
    want: impl Fn(&AuditCompleted) -> bool,
) -> anyhow::Result<Vec<(String, Audit)>> {
    eventually(WAIT, "an audit", || async {
        let all = audits(&events(js).await?);
        Ok(all
            .iter()
            .any(|(_, a)| a.completed.as_ref().is_some_and(&want))
            .then_some(all))
    })
    .await
}

#[tokio::test]
async fn the_start_up_audit_reports_exactly_what_the_engine_finds_in_the_fixture()
-> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("staging-us")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let agent = Agent::start(&nats, &kube.url(), &["--max-chunk-bytes", "8192"]).await;
    let js = jetstream::new(nats.connect().await?);
    let all = completed_audits(&js, |c| c.trigger == AuditTrigger::Startup as i32).await?;
    agent.stop().await;
    let (_, audit) = all
        .iter()
        .find(|(_, a)| {
            a.completed
                .as_ref()
                .is_some_and(|c| c.trigger == AuditTrigger::Startup as i32)
        })
        .unwrap();
    let done = audit.completed.as_ref().unwrap();
    assert!(audit.started);
    assert_eq!(done.scope, AuditScope::Full as i32);
    assert_eq!(
        audit.chunks,
        (0..done.chunks).collect::<Vec<_>>(),
        "chunks in order, none missing"
    );
    assert!(done.chunks > 1, "8 KiB chunks: several of them");
    assert_eq!(done.findings as usize, audit.findings.len());
    let audited = fixture
        .objects()
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| AUDITED.contains(&k)))
        .count();
    assert_eq!(done.objects_audited as usize, audited);
    assert!(done.kinds_skipped.is_empty());
    let got: BTreeSet<Key> = audit.findings.iter().map(key).collect();
    assert_eq!(got.len(), audit.findings.len(), "no finding twice");
    assert_eq!(got, expected(&fixture));
    // Every finding names its application and carries its fingerprint.
    for f in &audit.findings {
        assert_eq!(f.fingerprint.len(), 64);
        let r = f.resource.as_ref().unwrap();
        if !r.namespace.is_empty() {
            assert!(!f.application.is_empty(), "{f:?}");
        }
    }
    // Secret values never leave the cluster: no literal env value of the fixture appears.
    let text = format!("{:?}", audit.findings);
    for o in fixture.objects() {
        for c in o
            .pointer("/spec/template/spec/containers")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(v) = e["value"].as_str().filter(|v| v.len() > 6) {
                    assert!(!text.contains(v), "env value {v:?} leaked into findings");
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_changed_object_is_re_audited_alone_and_a_deleted_one_listed() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("staging-us")?;
    let kube = FakeKube::start(fixture.clone()).await?;
    let agent = Agent::start(&nats, &kube.url(), &["--audit-debounce", "200ms"]).await;
    let js = jetstream::new(nats.connect().await?);
    completed_audits(&js, |c| c.trigger == AuditTrigger::Startup as i32).await?;
    // Fix a privileged workload.
    let (ns, name) = fixture
        .of_kind("Deployment")
        .find_map(|d| {
            let privileged = d
                .pointer("/spec/template/spec/containers")?
                .as_array()?
                .iter()
                .any(|c| c.pointer("/securityContext/privileged") == Some(&json!(true)));
            privileged.then(|| {
                (
                    d["metadata"]["namespace"].as_str().unwrap().to_owned(),
                    d["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
        })
        .expect("the fixture has a privileged Deployment");
    let mut fixed = kube.get("apps/v1", "Deployment", Some(&ns), &name).unwrap();
    for c in fixed["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
    {
        c["securityContext"]["privileged"] = json!(false);
    }
    kube.apply(fixed)?;
    let cm = fixture.of_kind("ConfigMap").next().unwrap().clone();
    let cm_ns = cm["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let cm_name = cm["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(kube.delete("v1", "ConfigMap", Some(&cm_ns), &cm_name));
    let all = completed_audits(&js, |c| {
        c.scope == AuditScope::Incremental as i32
            && c.objects.iter().any(|o| o.name == name)
            && c.objects.iter().any(|o| o.name == cm_name)
    })
    .await;
    // The two changes may land in one incremental audit or two.
    let all = match all {
        Ok(all) => all,
        Err(_) => {
            completed_audits(&js, |c| {
                c.scope == AuditScope::Incremental as i32
                    && c.objects.iter().any(|o| o.name == cm_name)
            })
            .await?
        }
    };
    agent.stop().await;
    let incremental: Vec<&Audit> = all
        .iter()
        .map(|(_, a)| a)
        .filter(|a| {
            a.completed
                .as_ref()
                .is_some_and(|c| c.scope == AuditScope::Incremental as i32)
        })
        .collect();
    let listed: BTreeSet<String> = incremental
        .iter()
        .flat_map(|a| {
            a.completed
                .as_ref()
                .unwrap()
                .objects
                .iter()
                .map(|o| o.name.clone())
        })
        .collect();
    assert!(
        listed.contains(&name) && listed.contains(&cm_name),
        "{listed:?}"
    );
    for a in &incremental {
        let c = a.completed.as_ref().unwrap();
        assert_eq!(c.trigger, AuditTrigger::Watch as i32);
        let names: BTreeSet<&str> = c.objects.iter().map(|o| o.name.as_str()).collect();
        for f in &a.findings {
            let r = f.resource.as_ref().unwrap();
            assert!(
                names.contains(r.name.as_str()),
                "{f:?} is not about a listed object"
            );
            assert!(r.name != cm_name, "a deleted object has no findings");
            if r.name == name {
                assert_ne!(f.check, "PRIVILEGED", "the fix was not seen");
            }
        }
        assert!(
            c.objects.len() <= 3,
            "status-only updates are not re-audited: {:?}",
            c.objects
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_new_effective_policy_triggers_an_audit_that_applies_it() -> anyhow::Result<()> {
    let nats = NatsProcess::standalone_in_temp().await?;
    let fixture = Fixture::load("staging-us")?;
    let kube = FakeKube::start(fixture).await?;
    let js = jetstream::new(nats.connect().await?);
    // What the leaf gateway creates in a real leaf (here without a source).
    js.create_stream(jetstream::stream::Config {
        name: "POLICIES".into(),
        subjects: vec!["canopy.pol.>".into()],
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await?;
    let agent = Agent::start(&nats, &kube.url(), &["--label", "env=staging"]).await;
    let first = completed_audits(&js, |c| c.trigger == AuditTrigger::Startup as i32).await?;
    let start = first
        .iter()
        .find_map(|(_, a)| {
            a.completed
                .clone()
                .filter(|c| c.trigger == AuditTrigger::Startup as i32)
        })
        .unwrap();
    assert_eq!(start.policy_version, 0);
    assert!(
        first
            .iter()
            .any(|(_, a)| a.findings.iter().any(|f| f.check == "PULL-POLICY"))
    );
    let privileged = first
        .iter()
        .flat_map(|(_, a)| a.findings.iter())
        .find(|f| f.check == "PRIVILEGED")
        .cloned()
        .expect("staging-us has a privileged container");
    let r = privileged.resource.clone().unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let effective = EffectivePolicy {
        policy_version: 2,
        policy: Some(Policy {
            disabled_checks: vec!["PULL-POLICY".into()],
            ..Default::default()
        }),
        derogations: vec![Derogation {
            derogation_id: "d-1".into(),
            check: "PRIVILEGED".into(),
            scope: Some(DerogationScope {
                cluster_labels: [("env".to_owned(), "staging".to_owned())].into(),
                namespace: r.namespace.clone(),
                workload_kind: r.kind.clone(),
                workload_name: r.name.clone(),
                ..Default::default()
            }),
            reason: "test".into(),
            approver: "someone".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: expires.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        }],
        control_sequence: 7,
    };
    let env = envelope::new(
        &ClusterId::parse("prod-eu")?,
        "test",
        Body::EffectivePolicy(effective),
    );
    canopy_kit::publish::publish(&js, &env).await?;
    let all = completed_audits(&js, |c| c.trigger == AuditTrigger::Policy as i32).await?;
    agent.stop().await;
    let (_, audit) = all
        .iter()
        .find(|(_, a)| {
            a.completed
                .as_ref()
                .is_some_and(|c| c.trigger == AuditTrigger::Policy as i32)
        })
        .unwrap();
    let done = audit.completed.as_ref().unwrap();
    assert_eq!(done.policy_version, 2);
    assert!(audit.findings.iter().all(|f| f.check != "PULL-POLICY"));
    let exempted: Vec<&Finding> = audit
        .findings
        .iter()
        .filter(|f| !f.derogation_id.is_empty())
        .collect();
    assert!(!exempted.is_empty());
    for f in &exempted {
        assert_eq!(f.check, "PRIVILEGED");
        assert_eq!(f.resource.as_ref().unwrap().name, r.name);
        assert_eq!(
            f.exempted_until.as_ref().unwrap().seconds,
            expires.timestamp()
        );
    }
    assert_eq!(done.exempted as usize, exempted.len());
    Ok(())
}
