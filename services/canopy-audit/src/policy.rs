//! What to audit: [`Policy`] (enabled checks, severity overrides, registry allow-list, annotations)
//! and its validated, compiled form used by the engine.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalogue::{CATALOGUE, CheckId, PssLevel, Severity};

/// Which Pod Security Standards profile to report.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LevelFilter {
    /// Only findings that violate a Baseline control.
    Baseline,
    /// Only findings that violate a Baseline or Restricted control.
    Restricted,
    /// Every finding, including non-PSS best practices.
    #[default]
    All,
}

impl LevelFilter {
    /// Does a finding carrying these standards pass the filter?
    pub fn admits(self, standards: &[&str]) -> bool {
        match self {
            LevelFilter::All => true,
            LevelFilter::Baseline => standards.iter().any(|s| s.starts_with("pss:baseline:")),
            LevelFilter::Restricted => standards.iter().any(|s| s.starts_with("pss:")),
        }
    }

    fn admits_level(self, level: PssLevel) -> bool {
        match self {
            LevelFilter::All => true,
            LevelFilter::Baseline => level == PssLevel::Baseline,
            LevelFilter::Restricted => level != PssLevel::None,
        }
    }
}

/// What the auditor checks and how it reports.
///
/// The default enables every check, honours no `canopy.dev/ignore` annotation, has an empty
/// registry allow-list (so `REGISTRY-ALLOW` is skipped) and reports every level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Check ids that are switched off.
    pub disabled_checks: BTreeSet<String>,
    /// Severity overrides by check id.
    pub severity_overrides: BTreeMap<String, Severity>,
    /// Allowed image registries (`registry.example.com`) or repository prefixes
    /// (`registry.example.com/team`). Empty: `REGISTRY-ALLOW` is skipped. Images without a
    /// registry are `docker.io/library/…` / `docker.io/…`.
    pub registry_allow_list: Vec<String>,
    /// Honour `canopy.dev/ignore: CHECK-ID,...` annotations on objects (and pod templates).
    pub honour_ignore_annotations: bool,
    /// Which Pod Security Standards level to report.
    pub level: LevelFilter,
    /// Also audit Pods, ReplicaSets and Jobs that a workload controller owns (their template is
    /// already audited on the owner, so by default they are skipped to avoid duplicate findings
    /// when the agent lists a live cluster).
    pub audit_controlled_pods: bool,
}

/// A policy that names something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown check id {0:?}")]
    UnknownCheck(String),
    #[error("empty registry in the allow list")]
    EmptyRegistry,
}

/// A validated policy in the form the engine reads on every object.
#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    pub enabled: u64,
    pub severity: Vec<Severity>,
    pub registries: Vec<String>,
    pub honour_ignore: bool,
    pub level: LevelFilter,
    pub audit_controlled_pods: bool,
}

impl Policy {
    /// Validates the check ids and registries.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.compile().map(|_| ())
    }

    pub(crate) fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        let mut enabled = 0u64;
        for c in CATALOGUE {
            if self.level.admits_level(c.pss_level) {
                enabled |= c.check.bit();
            }
        }
        for id in &self.disabled_checks {
            let c = CheckId::parse(id).ok_or_else(|| PolicyError::UnknownCheck(id.clone()))?;
            enabled &= !c.bit();
        }
        let mut registries = Vec::with_capacity(self.registry_allow_list.len());
        for r in &self.registry_allow_list {
            let r = r.trim().trim_end_matches('/').to_ascii_lowercase();
            if r.is_empty() {
                return Err(PolicyError::EmptyRegistry);
            }
            registries.push(r);
        }
        if registries.is_empty() {
            enabled &= !CheckId::RegistryAllow.bit();
        }
        let mut severity: Vec<Severity> = CATALOGUE.iter().map(|c| c.severity).collect();
        for (id, sev) in &self.severity_overrides {
            let c = CheckId::parse(id).ok_or_else(|| PolicyError::UnknownCheck(id.clone()))?;
            if let Some(slot) = severity.get_mut(c as usize) {
                *slot = *sev;
            }
        }
        Ok(CompiledPolicy {
            enabled,
            severity,
            registries,
            honour_ignore: self.honour_ignore_annotations,
            level: self.level,
            audit_controlled_pods: self.audit_controlled_pods,
        })
    }
}

impl CompiledPolicy {
    pub fn severity(&self, id: CheckId) -> Severity {
        self.severity
            .get(id as usize)
            .copied()
            .unwrap_or(id.def().severity)
    }
}
