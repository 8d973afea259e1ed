//! What a check reports: [`Finding`], the object it is about ([`ResourceRef`]) and their order.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::catalogue::{CheckId, Severity};

/// The Kubernetes object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceRef {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects and for manifests that leave the namespace to the
    /// caller (`kubectl apply -n`).
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One failed check on one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check id (`HOST-PID`, ...).
    pub check: &'static str,
    /// Severity after the policy's overrides.
    pub severity: Severity,
    /// The upstream controls this finding violates (a subset of the check's standards).
    pub standards: &'static [&'static str],
    /// The object (shared by all findings of the object).
    pub resource: Arc<ResourceRef>,
    /// The container concerned, if the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The exact field path that failed, e.g.
    /// `spec.template.spec.containers[0].securityContext.privileged`. Map keys that contain dots
    /// are written in brackets: `metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]`.
    pub path: String,
    pub message: String,
    pub remediation: &'static str,
}

impl Finding {
    /// The typed id of [`Finding::check`].
    pub fn check_id(&self) -> Option<CheckId> {
        // The engine's findings carry the catalogue's own id string: found by address first.
        crate::catalogue::CATALOGUE
            .iter()
            .find(|c| std::ptr::eq(c.id, self.check))
            .map(|c| c.check)
            .or_else(|| CheckId::parse(self.check))
    }

    /// The deterministic order of findings: namespace, kind, name, check, path (then the
    /// remaining fields, so that the order is total).
    pub fn order(a: &Finding, b: &Finding) -> Ordering {
        a.resource
            .namespace
            .cmp(&b.resource.namespace)
            .then_with(|| a.resource.kind.cmp(&b.resource.kind))
            .then_with(|| a.resource.name.cmp(&b.resource.name))
            .then_with(|| a.check.cmp(b.check))
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.resource.api_version.cmp(&b.resource.api_version))
            .then_with(|| a.container.cmp(&b.container))
            .then_with(|| a.message.cmp(&b.message))
    }
}

/// Sorts findings in the deterministic order of [`Finding::order`] (stable).
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(Finding::order);
}
