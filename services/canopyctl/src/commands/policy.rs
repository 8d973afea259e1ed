//! `canopyctl policy get|set`: the fleet's audit policy as a YAML file.

use std::collections::BTreeMap;
use std::io::Read as _;

use serde::{Deserialize, Serialize};

use canopy_proto::api::v1::{
    GetPolicyRequest, PolicyState, SetPolicyRequest, policy_service_client::PolicyServiceClient,
};
use canopy_proto::event::v1::{Policy, Severity};

use super::Context;
use crate::cli::{OutputFormat, PolicyCommand, SetPolicyArgs};
use crate::error::CliError;
use crate::output::{self, rfc3339};

/// The policy file: what `policy get` prints and `policy set` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    /// Check ids that are switched off.
    pub disabled_checks: Vec<String>,
    /// Check id → critical, high, medium or low.
    pub severity_overrides: BTreeMap<String, String>,
    /// Allowed registries or repository prefixes; empty switches REGISTRY-ALLOW off.
    pub registry_allow_list: Vec<String>,
    /// Honour `canopy.dev/ignore: CHECK,...` annotations on objects.
    pub honour_ignore_annotations: bool,
    /// baseline, restricted or all.
    pub level: String,
}

fn severity_name(v: i32) -> String {
    match Severity::try_from(v).unwrap_or(Severity::Unspecified) {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Unspecified => "unspecified",
    }
    .to_owned()
}

impl PolicyFile {
    pub fn from_proto(p: &Policy) -> Self {
        let mut disabled = p.disabled_checks.clone();
        disabled.sort();
        Self {
            disabled_checks: disabled,
            severity_overrides: p
                .severity_overrides
                .iter()
                .map(|(k, v)| (k.clone(), severity_name(*v)))
                .collect(),
            registry_allow_list: p.registry_allow_list.clone(),
            honour_ignore_annotations: p.honour_ignore_annotations,
            level: if p.level.is_empty() {
                "all".to_owned()
            } else {
                p.level.clone()
            },
        }
    }

    pub fn to_proto(&self) -> Result<Policy, String> {
        let mut overrides = std::collections::HashMap::new();
        for (check, sev) in &self.severity_overrides {
            let v = match sev.to_ascii_lowercase().as_str() {
                "critical" => Severity::Critical,
                "high" => Severity::High,
                "medium" => Severity::Medium,
                "low" => Severity::Low,
                other => {
                    return Err(format!(
                        "severity_overrides.{check}: {other:?} is not critical, high, medium or low"
                    ));
                }
            };
            overrides.insert(check.clone(), v as i32);
        }
        Ok(Policy {
            disabled_checks: self.disabled_checks.clone(),
            severity_overrides: overrides,
            registry_allow_list: self.registry_allow_list.clone(),
            honour_ignore_annotations: self.honour_ignore_annotations,
            level: self.level.clone(),
        })
    }
}

#[derive(Debug, Serialize)]
struct PolicyJson {
    version: u64,
    changed_by: String,
    changed_at: Option<String>,
    reason: String,
    control_sequence: u64,
    policy: PolicyFile,
}

fn render(ctx: &Context, s: &PolicyState) -> String {
    let file = PolicyFile::from_proto(&s.policy.clone().unwrap_or_default());
    match ctx.output {
        OutputFormat::Json => output::json(
            &PolicyJson {
                version: s.version,
                changed_by: s.changed_by.clone(),
                changed_at: rfc3339(s.changed_at.as_ref()),
                reason: s.reason.clone(),
                control_sequence: s.control_sequence,
                policy: file,
            },
            true,
        ),
        OutputFormat::Table => {
            let mut head = format!("# version {}", s.version);
            if s.version == 0 {
                head.push_str(" (the built-in default: every check on)");
            } else {
                head.push_str(&format!(
                    ", changed by {} at {}",
                    s.changed_by,
                    rfc3339(s.changed_at.as_ref()).unwrap_or_else(|| "-".into())
                ));
                if !s.reason.is_empty() {
                    head.push_str(&format!(": {}", s.reason));
                }
            }
            let yaml = serde_yaml::to_string(&file).unwrap_or_default();
            format!("{head}\n{yaml}")
        }
    }
}

fn read_file(args: &SetPolicyArgs) -> Result<PolicyFile, CliError> {
    let path = args.file.display().to_string();
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("cannot read the policy from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))?
    };
    serde_yaml::from_str(&text).map_err(|e| CliError::Usage(format!("{path}: {e}")))
}

pub async fn run(ctx: &Context, cmd: PolicyCommand) -> Result<(), CliError> {
    let mut client = PolicyServiceClient::new(ctx.unary_channel().await?);
    match cmd {
        PolicyCommand::Get => {
            let state = client.get_policy(GetPolicyRequest {}).await?.into_inner();
            output::emit(&render(ctx, &state))?;
        }
        PolicyCommand::Set(args) => {
            let file = read_file(&args)?;
            let policy = file.to_proto().map_err(CliError::Usage)?;
            let state = client
                .set_policy(SetPolicyRequest {
                    policy: Some(policy),
                    expected_version: args.expected_version,
                    reason: args.reason,
                })
                .await?
                .into_inner();
            match ctx.output {
                OutputFormat::Json => output::emit(&render(ctx, &state))?,
                OutputFormat::Table => output::emit(&format!(
                    "policy version {} stored; the agents re-audit with it\n",
                    state.version
                ))?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_file_round_trips_and_rejects_unknown_fields() {
        let text = "disabled_checks: [PROBES]\nseverity_overrides: {PRIVILEGED: high}\nlevel: restricted\n";
        let f: PolicyFile = serde_yaml::from_str(text).unwrap();
        let p = f.to_proto().unwrap();
        assert_eq!(p.severity_overrides["PRIVILEGED"], Severity::High as i32);
        assert_eq!(PolicyFile::from_proto(&p), f);
        assert!(serde_yaml::from_str::<PolicyFile>("disabled: [X]").is_err());
        let bad: PolicyFile = serde_yaml::from_str("severity_overrides: {X: urgent}").unwrap();
        assert!(bad.to_proto().unwrap_err().contains("urgent"));
    }
}
