//! Given / when / then over the fleet state: events in, decisions out, time injected.

use canopy_kit::proto::event::v1::{
    AgentStarted, Heartbeat, LinkEstablished, LinkLost, NodeHealth, PodProblem,
};

use super::*;

const S: i64 = 1000;

fn settings() -> Settings {
    let mut s = Settings {
        recovery_hold_ms: 2 * S,
        ..Settings::default()
    };
    // Audits and inventory never go stale here (see the freshness tests).
    s.rules.audit_max_age_ms = i64::MAX / 4;
    s.rules.inventory_max_age_ms = i64::MAX / 4;
    s.policies.insert(Playbook::RolloutRestart, Policy::Auto);
    s
}

fn hb() -> Body {
    Body::Heartbeat(Heartbeat {
        heartbeat_interval_seconds: 1,
        ..Default::default()
    })
}

fn crash_report(deployments: &[&str]) -> Body {
    Body::HealthReported(HealthReported {
        nodes: vec![NodeHealth {
            name: "w1".into(),
            ready: true,
            ..Default::default()
        }],
        pods: deployments
            .iter()
            .map(|d| PodProblem {
                namespace: "shop".into(),
                name: format!("{d}-1"),
                owner_kind: "Deployment".into(),
                owner_name: (*d).into(),
                reason: "CrashLoopBackOff".into(),
                restarts: 9,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn healthy_report() -> Body {
    crash_report(&[])
}

/// Applies decisions as the stream would deliver them back (they are skipped as own).
fn echo(f: &mut Fleet, decisions: &[Decision], at: i64) {
    for d in decisions {
        let cluster = d.cluster.clone().unwrap_or_else(|| "a".into());
        f.apply(&cluster, at, &d.event_id, &d.body);
    }
}

fn changes(d: &[Decision]) -> Vec<(i32, i32)> {
    d.iter()
        .filter_map(|d| match &d.body {
            Body::HealthChanged(h) => Some((h.previous, h.current)),
            _ => None,
        })
        .collect()
}

fn of<'a>(d: &'a [Decision], name: &str) -> Vec<&'a Body> {
    d.iter()
        .filter(|d| format!("{:?}", d.body).starts_with(&format!("{name}(")))
        .map(|d| &d.body)
        .collect()
}

const H: i32 = ClusterHealth::Healthy as i32;
const D: i32 = ClusterHealth::Degraded as i32;
const U: i32 = ClusterHealth::Unreachable as i32;
const L: i32 = ClusterHealth::LinkDown as i32;

#[test]
fn silence_of_three_intervals_is_unreachable_and_recovery_holds() {
    let mut f = Fleet::new(settings());
    f.apply(
        "a",
        0,
        "e1",
        &Body::AgentStarted(AgentStarted {
            heartbeat_interval_seconds: 1,
            ..Default::default()
        }),
    );
    assert_eq!(changes(&f.tick(100)), [(0, H)]);
    // Heartbeat at 1 s, then silence.
    f.apply("a", S, "e2", &hb());
    assert!(
        f.tick(3 * S + 900).is_empty(),
        "2.9 s of silence is not yet 3 intervals"
    );
    assert_eq!(changes(&f.tick(4 * S + 100)), [(H, U)]);
    // One heartbeat back: not trusted before the recovery hold.
    f.apply("a", 5 * S, "e3", &hb());
    assert!(f.tick(5 * S + 100).is_empty());
    f.apply("a", 6 * S, "e4", &hb());
    assert!(f.tick(6 * S + 500).is_empty());
    f.apply("a", 7 * S, "e5", &hb());
    assert_eq!(changes(&f.tick(7 * S + 200)), [(U, H)]);
}

#[test]
fn a_flapping_heartbeat_does_not_flap_the_state() {
    let mut f = Fleet::new(settings());
    f.apply("a", 0, "e0", &hb());
    f.tick(0);
    f.tick(5 * S);
    assert_eq!(f.cluster("a").unwrap().health, U);
    // Alive for 1 s, silent for 4 s, again and again: never long enough to recover.
    let mut flips = 0;
    for round in 0..5 {
        let t = 10 * S + round * 5 * S;
        f.apply("a", t, &format!("r{round}"), &hb());
        flips += changes(&f.tick(t + 500)).len();
        flips += changes(&f.tick(t + 4 * S + 500)).len();
    }
    assert_eq!(flips, 0);
}

#[test]
fn a_lost_link_is_link_down_not_unreachable() {
    let mut f = Fleet::new(settings());
    f.apply("a", 0, "e0", &hb());
    f.tick(100);
    f.apply("a", 500, "l1", &Body::LinkLost(LinkLost::default()));
    assert_eq!(changes(&f.tick(600)), [(H, L)]);
    // Silence while the link is down stays link-down.
    assert!(f.tick(60 * S).is_empty());
    f.apply(
        "a",
        61 * S,
        "l2",
        &Body::LinkEstablished(LinkEstablished::default()),
    );
    f.apply("a", 61 * S, "h", &hb());
    assert!(f.tick(61 * S + 100).is_empty(), "recovery hold");
    f.apply("a", 62 * S, "h2", &hb());
    f.apply("a", 63 * S, "h3", &hb());
    assert_eq!(changes(&f.tick(63 * S + 200)), [(L, H)]);
}

#[test]
fn a_crash_loop_is_diagnosed_remediated_once_and_cleared() {
    let mut f = Fleet::new(settings());
    f.apply("a", 0, "h", &hb());
    f.apply("a", 0, "r1", &crash_report(&["api"]));
    let d = f.tick(100);
    let kinds: Vec<&str> = d
        .iter()
        .map(|d| canopy_kit::envelope::event_type(&d.body).1)
        .collect();
    assert_eq!(
        kinds,
        ["raised", "changed", "proposed", "approved", "requested"],
        "{d:?}"
    );
    let Body::CommandRequested(cmd) = &d[4].body else {
        panic!()
    };
    let Body::RemediationProposed(p) = &d[2].body else {
        panic!()
    };
    assert_eq!(cmd.remediation_id, p.remediation_id);
    assert!(p.auto);
    echo(&mut f, &d, 100);
    // The same report again, and later ones: nothing new.
    f.apply("a", 500, "h2", &hb());
    f.apply("a", 500, "r2", &crash_report(&["api"]));
    assert!(f.tick(600).is_empty());
    // Healed: cleared, then healthy.
    f.apply("a", 900, "r3", &healthy_report());
    let d = f.tick(1000);
    let kinds: Vec<&str> = d
        .iter()
        .map(|d| canopy_kit::envelope::event_type(&d.body).1)
        .collect();
    assert_eq!(kinds, ["cleared", "changed"]);
    assert_eq!(changes(&d), [(D, H)]);
}

#[test]
fn a_rebuilt_doctor_repeats_nothing() {
    let mut first = Fleet::new(settings());
    let mut log: Vec<(String, i64, String, Body)> = vec![
        ("a".into(), 0, "h".into(), hb()),
        ("a".into(), 0, "r1".into(), crash_report(&["api"])),
    ];
    for (c, t, id, b) in &log {
        first.apply(c, *t, id, b);
    }
    let decided = first.tick(100);
    assert!(!decided.is_empty());
    for d in &decided {
        log.push((
            d.cluster.clone().unwrap_or_else(|| "a".into()),
            100,
            d.event_id.clone(),
            d.body.clone(),
        ));
    }
    // A new doctor folds the same log: it decides nothing more.
    let mut second = Fleet::new(settings());
    for (c, t, id, b) in &log {
        second.apply(c, *t, id, b);
    }
    assert!(second.tick(200).is_empty(), "{:?}", second.tick(200));
    // Even if it crashed between proposal and command: the command id is the same one.
    let mut third = Fleet::new(settings());
    for (c, t, id, b) in log
        .iter()
        .filter(|(_, _, _, b)| !matches!(b, Body::CommandRequested(_)))
    {
        third.apply(c, *t, id, b);
    }
    let again = third.tick(300);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event_id, decided.last().unwrap().event_id);
}

#[test]
fn propose_waits_for_approval_and_withdraws_when_healed() {
    let mut s = settings();
    s.policies.insert(Playbook::RolloutRestart, Policy::Propose);
    let mut f = Fleet::new(s);
    f.apply("a", 0, "h", &hb());
    f.apply("a", 0, "r1", &crash_report(&["api"]));
    let d = f.tick(100);
    let Some(Body::RemediationProposed(p)) = d
        .iter()
        .map(|d| &d.body)
        .find(|b| matches!(b, Body::RemediationProposed(_)))
    else {
        panic!()
    };
    assert!(!p.auto);
    assert!(
        !d.iter()
            .any(|d| matches!(d.body, Body::CommandRequested(_)))
    );
    assert!(f.tick(200).is_empty(), "no command without approval");
    f.apply(
        "a",
        300,
        "ok",
        &Body::RemediationApproved(RemediationApproved {
            remediation_id: p.remediation_id.clone(),
            approved_by: "alice".into(),
        }),
    );
    let d = f.tick(400);
    assert_eq!(d.len(), 1);
    assert!(matches!(d[0].body, Body::CommandRequested(_)));

    // A second crash loop, never approved, heals: its proposal is withdrawn.
    f.apply("a", 500, "r2", &crash_report(&["api", "cart"]));
    let d = f.tick(600);
    assert!(
        d.iter()
            .any(|d| matches!(d.body, Body::RemediationProposed(_)))
    );
    f.apply("a", 700, "r3", &healthy_report());
    let d = f.tick(800);
    assert!(
        d.iter()
            .any(|d| matches!(&d.body, Body::RemediationRejected(r) if r.rejected_by == "doctor")),
        "{d:?}"
    );
}

#[test]
fn rate_limit_suppresses_beyond_n_per_hour() {
    let mut s = settings();
    s.max_actions_per_hour = 2;
    let mut f = Fleet::new(s);
    f.apply("a", 0, "h", &hb());
    f.apply("a", 0, "r", &crash_report(&["a1", "a2", "a3"]));
    let d = f.tick(100);
    assert_eq!(of(&d, "CommandRequested").len(), 2);
    let suppressed = of(&d, "RemediationSuppressed");
    assert_eq!(suppressed.len(), 1);
    let Body::RemediationSuppressed(s) = suppressed[0] else {
        panic!()
    };
    assert!(s.reason.starts_with("rate limit"), "{}", s.reason);
    // An hour later the budget is back for new diagnoses.
    f.apply("a", 3_700 * S, "h2", &hb());
    f.apply(
        "a",
        3_700 * S,
        "r2",
        &crash_report(&["a1", "a2", "a3", "a4"]),
    );
    let d = f.tick(3_700 * S + 100);
    assert_eq!(of(&d, "CommandRequested").len(), 1);
}

#[test]
fn blast_radius_caps_cordons() {
    let mut s = settings();
    s.policies.insert(Playbook::CordonNode, Policy::Auto);
    s.max_cordoned_percent = 34;
    let mut f = Fleet::new(s);
    let nodes = (1..=3)
        .map(|i| NodeHealth {
            name: format!("w{i}"),
            ready: i == 1,
            ..Default::default()
        })
        .collect();
    f.apply("a", 0, "h", &hb());
    f.apply(
        "a",
        0,
        "r",
        &Body::HealthReported(HealthReported {
            nodes,
            ..Default::default()
        }),
    );
    let d = f.tick(100);
    assert_eq!(
        of(&d, "CommandRequested").len(),
        1,
        "one of three nodes at most"
    );
    let suppressed = of(&d, "RemediationSuppressed");
    assert_eq!(suppressed.len(), 1);
    let Body::RemediationSuppressed(s) = suppressed[0] else {
        panic!()
    };
    assert!(s.reason.starts_with("blast radius"), "{}", s.reason);
}

#[test]
fn decision_ids_are_stable() {
    let run = || {
        let mut f = Fleet::new(settings());
        f.apply("a", 0, "h", &hb());
        f.apply("a", 0, "r", &crash_report(&["api"]));
        f.tick(100)
            .into_iter()
            .map(|d| d.event_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

// === freshness ===

fn fresh_settings() -> Settings {
    let mut s = settings();
    s.rules.audit_max_age_ms = 10 * S;
    s.max_actions_per_hour = 100;
    s
}

fn audit_done(scope: AuditScope, command_id: &str) -> Body {
    Body::AuditCompleted(canopy_kit::proto::event::v1::AuditCompleted {
        audit_id: format!("audit-{command_id}"),
        scope: scope as i32,
        command_id: command_id.to_owned(),
        ..Default::default()
    })
}

fn kinds(d: &[Decision]) -> Vec<&'static str> {
    d.iter()
        .map(|d| canopy_kit::envelope::event_type(&d.body).1)
        .collect()
}

fn commands(d: &[Decision]) -> Vec<CommandRequested> {
    d.iter()
        .filter_map(|d| match &d.body {
            Body::CommandRequested(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stale_audit_is_rerun_once_per_stale_period() {
    let mut f = Fleet::new(fresh_settings());
    let mut log: Vec<(i64, String, Body)> = vec![
        (
            0,
            "s".into(),
            Body::AgentStarted(AgentStarted {
                heartbeat_interval_seconds: 1,
                ..Default::default()
            }),
        ),
        (500, "a0".into(), audit_done(AuditScope::Full, "")),
    ];
    for (t, id, b) in &log {
        f.apply("a", *t, id, b);
    }
    let mut decided = Vec::new();
    let mut requested: Vec<(i64, String)> = Vec::new();
    // Heartbeats every second; an incremental audit does not make it fresh.
    for sec in 1..=24 {
        let t = sec * S;
        let mut events = vec![(t, format!("h{sec}"), hb())];
        if sec == 8 {
            events.push((t, "inc".into(), audit_done(AuditScope::Incremental, "")));
        }
        // The agent runs each requested audit two seconds later.
        let due: Vec<String> = requested
            .iter()
            .filter(|(at, _)| at + 2 * S == t)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due {
            events.push((t, format!("done-{id}"), audit_done(AuditScope::Full, &id)));
        }
        for (t, id, b) in events {
            f.apply("a", t, &id, &b);
            log.push((t, id, b));
        }
        let d = f.tick(t + 100);
        for c in commands(&d) {
            assert_eq!(c.kind, CommandKind::RunAudit as i32);
            assert_eq!(c.requested_by, "doctor");
            requested.push((t, c.command_id.clone()));
        }
        echo(&mut f, &d, t + 100);
        for x in &d {
            log.push((t + 100, x.event_id.clone(), x.body.clone()));
        }
        decided.extend(d.into_iter().map(|d| (sec, d)));
    }
    // Stale 10 s after the audit at 0.5 s (at 11 s), rerun, fresh at 13 s; stale again 10 s
    // later (at 23 s).
    let at: Vec<i64> = requested.iter().map(|(t, _)| t / S).collect();
    assert_eq!(at, [11, 23], "{decided:?}");
    assert_ne!(requested[0].1, requested[1].1);
    let first: Vec<&str> = decided
        .iter()
        .filter(|(s, _)| *s == 11)
        .map(|(_, d)| canopy_kit::envelope::event_type(&d.body).1)
        .collect();
    assert_eq!(
        first,
        ["raised", "changed", "proposed", "approved", "requested"]
    );
    let Some(Body::DiagnosisRaised(r)) = decided
        .iter()
        .map(|(_, d)| &d.body)
        .find(|b| matches!(b, Body::DiagnosisRaised(_)))
    else {
        panic!()
    };
    assert_eq!(r.rule, "audit-stale");
    assert_eq!(r.suggested_playbook, "rerun-audit");
    let cleared: Vec<i64> = decided
        .iter()
        .filter(|(_, d)| matches!(d.body, Body::DiagnosisCleared(_)))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(cleared, [13]);

    // A doctor rebuilt from that log decides nothing more until the next stale period.
    let mut again = Fleet::new(fresh_settings());
    for (t, id, b) in &log {
        again.apply("a", *t, id, b);
    }
    assert!(again.tick(24 * S + 200).is_empty());
    again.apply(
        "a",
        25 * S,
        "done-2",
        &audit_done(AuditScope::Full, &requested[1].1),
    );
    again.apply("a", 25 * S, "h25", &hb());
    let d = again.tick(25 * S + 100);
    assert_eq!(kinds(&d), ["cleared", "changed"]);
}

#[test]
fn a_failed_audit_is_rerun_at_once_and_a_failed_rerun_is_not_repeated() {
    let mut f = Fleet::new(fresh_settings());
    f.apply("a", 0, "s", &Body::AgentStarted(AgentStarted::default()));
    f.apply("a", 0, "a0", &audit_done(AuditScope::Full, ""));
    f.apply("a", 1000, "h", &hb());
    assert!(
        f.tick(1100)
            .iter()
            .all(|d| !matches!(d.body, Body::DiagnosisRaised(_)))
    );
    let failed = |id: &str| {
        Body::CommandFailed(canopy_kit::proto::event::v1::CommandFailed {
            command_id: id.into(),
            kind: CommandKind::RunAudit as i32,
            reason: "kubernetes".into(),
            error: "failed to list pods".into(),
            ..Default::default()
        })
    };
    f.apply("a", 2000, "f1", &failed("operator-1"));
    f.apply("a", 2000, "h2", &hb());
    let d = f.tick(2100);
    assert_eq!(
        kinds(&d),
        ["raised", "changed", "proposed", "approved", "requested"]
    );
    let Body::DiagnosisRaised(r) = &d[0].body else {
        panic!()
    };
    assert_eq!(
        r.summary,
        "the last audit of a failed: failed to list pods (kubernetes)"
    );
    let cmd = commands(&d).remove(0);
    echo(&mut f, &d, 2100);
    // The rerun fails too: the diagnosis holds, nothing is asked again.
    f.apply("a", 3000, "f2", &failed(&cmd.command_id));
    for sec in 3..30 {
        f.apply("a", sec * S, &format!("h{sec}"), &hb());
        assert!(f.tick(sec * S + 100).is_empty(), "at {sec} s");
    }
    // A full audit at last: cleared.
    f.apply("a", 30 * S, "a1", &audit_done(AuditScope::Full, ""));
    f.apply("a", 30 * S, "h30", &hb());
    assert_eq!(kinds(&f.tick(30 * S + 100)), ["cleared", "changed"]);
}

#[test]
fn a_stale_inventory_is_refreshed_and_a_silent_cluster_is_left_alone() {
    let mut s = fresh_settings();
    s.rules.inventory_max_age_ms = 5 * S;
    s.rules.audit_max_age_ms = i64::MAX / 4;
    let mut f = Fleet::new(s);
    let chunk = |last: bool| {
        Body::InventorySnapshot(canopy_kit::proto::event::v1::InventorySnapshot {
            snapshot_id: "s".into(),
            last_chunk: last,
            ..Default::default()
        })
    };
    f.apply("a", 0, "s", &Body::AgentStarted(AgentStarted::default()));
    f.apply("a", 0, "i0", &chunk(true));
    // A snapshot that never completes does not count.
    f.apply("a", 4 * S, "i1", &chunk(false));
    f.apply("a", 6 * S, "h", &hb());
    let d = f.tick(6 * S);
    let cmds = commands(&d);
    assert_eq!(cmds.len(), 1, "{d:?}");
    assert_eq!(cmds[0].kind, CommandKind::RefreshInventory as i32);
    echo(&mut f, &d, 6 * S);
    f.apply("a", 7 * S, "i2", &chunk(true));
    f.apply("a", 7 * S, "h2", &hb());
    assert_eq!(kinds(&f.tick(7 * S + 100)), ["cleared", "changed"]);

    // Another cluster whose heartbeats stopped: unreachable, never inventory-stale.
    f.apply("b", 0, "bs", &Body::AgentStarted(AgentStarted::default()));
    f.apply("b", 0, "bi", &chunk(true));
    f.apply("b", S, "bh", &hb());
    let d = f.tick(20 * S);
    assert!(
        d.iter()
            .all(|d| !matches!(d.body, Body::DiagnosisRaised(_))),
        "{d:?}"
    );
}
