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
    /// refresh-inventory. Unnamed playbooks propose.
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

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Config {
    /// The domain's settings.
    pub fn settings(&self) -> Settings {
        let mut policies: BTreeMap<Playbook, Policy> = Playbook::ALL
            .into_iter()
            .map(|p| (p, Policy::Propose))
            .collect();
        policies.extend(self.playbooks.iter().copied());
        Settings {
            missed_heartbeats: self.missed_heartbeats,
            recovery_hold_ms: millis(self.recovery_hold),
            clear_hold_ms: millis(self.clear_hold),
            rules: RuleSettings {
                saturated_cpu_percent: self.saturated_cpu_percent,
                scale_max_replicas: self.scale_max_replicas,
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
        assert_eq!(s.recovery_hold_ms, 20_000);
        for bad in ["restart=auto", "scale=sometimes", "scale"] {
            assert!(Config::try_parse_from(["canopy-doctor", "--playbook", bad]).is_err());
        }
    }
}
