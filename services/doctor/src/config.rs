//! doctor's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_kit::config::{HttpArgs, NatsArgs, TelemetryArgs};

use crate::domain::rules::{Playbook, RuleSettings};
use crate::domain::{Policy, Settings};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "canopy-doctor",
    version,
    about = "Fleet health: which clusters are sick, why, and what is done about it"
)]
pub struct Config {
    /// Heartbeat intervals without a heartbeat after which a cluster is unreachable.
    #[arg(long, env = "CANOPY_DOCTOR_MISSED_HEARTBEATS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub missed_heartbeats: u32,
    /// How long a recovered signal must hold before an unreachable or link-down cluster is
    /// judged healthy or degraded again (hysteresis).
    #[arg(long, env = "CANOPY_DOCTOR_RECOVERY_HOLD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub recovery_hold: Duration,
    /// How long a finding must stay absent from the reports before its diagnosis clears.
    #[arg(long, env = "CANOPY_DOCTOR_CLEAR_HOLD", default_value = "0s", value_parser = humantime::parse_duration)]
    pub clear_hold: Duration,
    /// How often the fleet is judged.
    #[arg(long, env = "CANOPY_DOCTOR_TICK", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Policy per playbook, `playbook=off|propose|auto` (repeatable or comma-separated);
    /// playbooks: rollout-restart, delete-pod, cordon-node, scale, rerun-audit,
    /// refresh-inventory. Unnamed playbooks propose, except rerun-audit and refresh-inventory
    /// (they only read the cluster), which are auto.
    #[arg(long = "playbook", env = "CANOPY_DOCTOR_PLAYBOOKS", value_delimiter = ',', value_parser = parse_policy)]
    pub playbooks: Vec<(Playbook, Policy)>,
    /// Remediations per cluster per rolling hour (approved, or proposed and pending).
    #[arg(long, env = "CANOPY_DOCTOR_MAX_ACTIONS_PER_HOUR", default_value_t = 3)]
    pub max_actions_per_hour: u32,
    /// Percent of a cluster's nodes that may be cordoned at most, pending cordons included.
    #[arg(long, env = "CANOPY_DOCTOR_MAX_CORDONED_PERCENT", default_value_t = 34, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_cordoned_percent: u32,
    /// Replicas a scale remediation never goes above.
    #[arg(long, env = "CANOPY_DOCTOR_SCALE_MAX_REPLICAS", default_value_t = 10)]
    pub scale_max_replicas: u32,
    /// CPU usage over requests (percent) from which a workload is saturated.
    #[arg(
        long,
        env = "CANOPY_DOCTOR_SATURATED_CPU_PERCENT",
        default_value_t = 90
    )]
    pub saturated_cpu_percent: u64,
    /// A cluster whose last full audit completed longer ago than this (while its heartbeats
    /// arrive) is diagnosed `audit-stale` (playbook rerun-audit).
    #[arg(long, env = "CANOPY_DOCTOR_AUDIT_MAX_AGE", default_value = "1h", value_parser = positive_duration)]
    pub audit_max_age: Duration,
    /// A cluster whose last complete inventory snapshot is older than this is diagnosed
    /// `inventory-stale` (playbook refresh-inventory).
    #[arg(long, env = "CANOPY_DOCTOR_INVENTORY_MAX_AGE", default_value = "30m", value_parser = positive_duration)]
    pub inventory_max_age: Duration,
    /// Deadline of a remediation command.
    #[arg(long, env = "CANOPY_DOCTOR_COMMAND_DEADLINE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub command_deadline: Duration,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn parse_policy(s: &str) -> Result<(Playbook, Policy), String> {
    let (p, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected playbook=off|propose|auto"))?;
    let playbook = Playbook::parse(p.trim()).ok_or_else(|| format!("unknown playbook {p:?}"))?;
    let policy = Policy::parse(v.trim()).ok_or_else(|| format!("unknown policy {v:?}"))?;
    Ok((playbook, policy))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(d)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Config {
    /// The domain's settings.
    pub fn settings(&self) -> Settings {
        let mut policies: BTreeMap<Playbook, Policy> = Playbook::ALL
            .into_iter()
            .map(|p| (p, p.default_policy()))
            .collect();
        policies.extend(self.playbooks.iter().copied());
        Settings {
            missed_heartbeats: self.missed_heartbeats,
            recovery_hold_ms: millis(self.recovery_hold),
            clear_hold_ms: millis(self.clear_hold),
            rules: RuleSettings {
                saturated_cpu_percent: self.saturated_cpu_percent,
                scale_max_replicas: self.scale_max_replicas,
                audit_max_age_ms: millis(self.audit_max_age),
                inventory_max_age_ms: millis(self.inventory_max_age),
                ..RuleSettings::default()
            },
            policies,
            max_actions_per_hour: self.max_actions_per_hour,
            max_cordoned_percent: self.max_cordoned_percent,
            command_deadline_ms: millis(self.command_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn policies_parse_and_default_to_propose() {
        let cfg = Config::try_parse_from([
            "canopy-doctor",
            "--playbook",
            "rollout-restart=auto,cordon-node=off",
        ])
        .unwrap();
        let s = cfg.settings();
        assert_eq!(s.policies[&Playbook::RolloutRestart], Policy::Auto);
        assert_eq!(s.policies[&Playbook::CordonNode], Policy::Off);
        assert_eq!(s.policies[&Playbook::Scale], Policy::Propose);
        assert_eq!(s.policies[&Playbook::RerunAudit], Policy::Auto);
        assert_eq!(s.policies[&Playbook::RefreshInventory], Policy::Auto);
        assert_eq!(s.rules.audit_max_age_ms, 3_600_000);
        assert_eq!(s.rules.inventory_max_age_ms, 1_800_000);
        let off = Config::try_parse_from([
            "canopy-doctor",
            "--playbook",
            "rerun-audit=off",
            "--audit-max-age",
            "90s",
        ])
        .unwrap()
        .settings();
        assert_eq!(off.policies[&Playbook::RerunAudit], Policy::Off);
        assert_eq!(off.rules.audit_max_age_ms, 90_000);
        assert!(Config::try_parse_from(["canopy-doctor", "--inventory-max-age", "0s"]).is_err());
        assert_eq!(s.recovery_hold_ms, 20_000);
        for bad in ["restart=auto", "scale=sometimes", "scale"] {
            assert!(Config::try_parse_from(["canopy-doctor", "--playbook", bad]).is_err());
        }
    }
}
