//! The audit engine: [`Auditor`] runs per-object checks as objects stream in and the cross-object
//! checks at [`Auditor::finish`], keeping only compact facts in between. Pure: no I/O.

mod cross;
mod objects;
mod patterns;
mod workload;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::catalogue::{CheckId, WORKLOAD_KINDS};
use crate::finding::{Finding, ResourceRef};
use crate::policy::{CompiledPolicy, Policy, PolicyError};

type Obj = Map<String, Value>;

/// The annotation that lists checks to skip on an object (honoured only when the policy allows).
pub const IGNORE_ANNOTATION: &str = "canopy.dev/ignore";

/// The audit engine.
///
/// `T` is an opaque tag the caller attaches to each object (e.g. its source file and line); it
/// comes back with the cross-object findings of [`Auditor::finish_tagged`]. Use `Auditor<()>` and
/// [`Auditor::add`] / [`Auditor::finish`] when there is nothing to attach.
///
/// Memory: per-object findings are returned immediately; between `add` and `finish` the auditor
/// keeps only compact facts (ServiceAccounts with automount disabled, NetworkPolicy selectors,
/// admin-equivalent roles, and for each workload that still needs them its reference, label set
/// and ServiceAccount name) — never whole objects.
#[derive(Debug)]
pub struct Auditor<T = ()> {
    policy: CompiledPolicy,
    cross: cross::CrossState<T>,
    objects: u64,
}

impl Auditor<()> {
    /// An auditor with the default policy (every check on).
    pub fn new() -> Self {
        Auditor {
            policy: default_compiled(),
            cross: cross::CrossState::default(),
            objects: 0,
        }
    }

    /// Audits one object; returns its per-object findings, sorted.
    pub fn add(&mut self, obj: &Value) -> Vec<Finding> {
        self.add_tagged(obj, ())
    }

    /// Runs the cross-object checks; returns their findings, sorted.
    pub fn finish(self) -> Vec<Finding> {
        self.finish_tagged().into_iter().map(|(f, ())| f).collect()
    }
}

impl Default for Auditor<()> {
    fn default() -> Self {
        Self::new()
    }
}

fn default_compiled() -> CompiledPolicy {
    match Policy::default().compile() {
        Ok(p) => p,
        // The default policy names no check and no registry, so it always compiles.
        Err(_) => CompiledPolicy {
            enabled: u64::MAX,
            severity: crate::catalogue::CATALOGUE
                .iter()
                .map(|c| c.severity)
                .collect(),
            registries: Vec::new(),
            honour_ignore: false,
            level: crate::policy::LevelFilter::All,
            audit_controlled_pods: false,
        },
    }
}

impl<T: Clone> Auditor<T> {
    /// An auditor for this policy.
    pub fn with_policy(policy: &Policy) -> Result<Self, PolicyError> {
        Ok(Auditor {
            policy: policy.compile()?,
            cross: cross::CrossState::default(),
            objects: 0,
        })
    }

    /// The effective severity of every check (after the policy's overrides), in
    /// [`crate::CATALOGUE`] order.
    pub fn severities(&self) -> Vec<crate::Severity> {
        crate::catalogue::CATALOGUE
            .iter()
            .map(|c| self.policy.severity(c.check))
            .collect()
    }

    /// The number of Kubernetes objects (values with a string `kind`) seen so far.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// Audits one object; returns its per-object findings, sorted. Cross-object facts are kept
    /// with `tag` until [`Auditor::finish_tagged`].
    pub fn add_tagged(&mut self, obj: &Value, tag: T) -> Vec<Finding> {
        let Some(o) = obj.as_object() else {
            return Vec::new();
        };
        let Some(kind) = o.get("kind").and_then(Value::as_str) else {
            return Vec::new();
        };
        self.objects += 1;
        let meta = o.get("metadata").and_then(Value::as_object);
        let mut sink = Sink::new(&self.policy, o, kind, meta);
        match kind {
            "Pod"
            | "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
            | "PodTemplate" => {
                let audited = self.policy.audit_controlled_pods || !controlled(kind, meta);
                if let Some(pod) = workload::PodView::locate(o, kind, meta).filter(|_| audited) {
                    sink.add_ignores(pod.meta);
                    workload::audit(&pod, kind, meta, &mut sink);
                    self.cross.add_workload(&pod, &mut sink, tag);
                }
            }
            "ConfigMap" => objects::config_map(o, &mut sink),
            "Ingress" => objects::ingress(o, &mut sink),
            "Role" | "ClusterRole" => {
                objects::role(o, kind, meta, &mut sink);
                self.cross.add_role(o, kind, meta);
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                self.cross.add_binding(o, kind, meta, &mut sink, tag);
            }
            "ServiceAccount" => self.cross.add_service_account(o, meta),
            "NetworkPolicy" => self.cross.add_network_policy(o, meta),
            _ => {}
        }
        sink.into_sorted()
    }

    /// Runs the cross-object checks (`SA-AUTOMOUNT`, `NETPOL-MISSING`, `RBAC-CLUSTER-ADMIN`
    /// through admin-equivalent roles) and returns their findings with the tag of the object
    /// each is about, sorted.
    pub fn finish_tagged(self) -> Vec<(Finding, T)> {
        let mut out = self.cross.finish(&self.policy);
        out.sort_by(|a, b| Finding::order(&a.0, &b.0));
        out
    }

    /// Like [`Auditor::finish_tagged`], but hands each finding to `emit` as soon as it is made,
    /// in the order the objects were added, instead of collecting and sorting them: memory then
    /// does not grow with the number of cross-object findings (a large cluster has one
    /// `SA-AUTOMOUNT` or `NETPOL-MISSING` finding per workload at worst).
    pub fn finish_each(self, emit: impl FnMut(Finding, T)) {
        self.cross.finish_each(&self.policy, emit);
    }
}

/// Audits a single object with the per-object checks only (no cross-object facts).
pub fn audit_object(policy: &Policy, obj: &Value) -> Result<Vec<Finding>, PolicyError> {
    let mut a: Auditor<()> = Auditor::with_policy(policy)?;
    Ok(a.add_tagged(obj, ()))
}

/// Is this Pod / ReplicaSet / Job owned by a workload controller whose template we audit anyway?
fn controlled(kind: &str, meta: Option<&Obj>) -> bool {
    if !matches!(kind, "Pod" | "ReplicaSet" | "Job") {
        return false;
    }
    meta.and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners.iter().any(|o| {
                o.get("kind").and_then(Value::as_str).is_some_and(|k| {
                    WORKLOAD_KINDS.contains(&k) && !matches!(k, "Pod" | "PodTemplate")
                })
            })
        })
}

// === impl Sink ===

/// Collects the findings of one object, applying the policy (enabled checks, ignore
/// annotations, level filter, severity overrides) before building any string.
pub(crate) struct Sink<'p, 'o> {
    policy: &'p CompiledPolicy,
    api_version: &'o str,
    kind: &'o str,
    namespace: Option<&'o str>,
    name: &'o str,
    resource: Option<Arc<ResourceRef>>,
    ignore: u64,
    out: Vec<Finding>,
}

impl<'p, 'o> Sink<'p, 'o> {
    fn new(policy: &'p CompiledPolicy, o: &'o Obj, kind: &'o str, meta: Option<&'o Obj>) -> Self {
        let api_version = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let name = meta
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut sink = Sink {
            policy,
            api_version,
            kind,
            namespace,
            name,
            resource: None,
            ignore: 0,
            out: Vec::new(),
        };
        sink.add_ignores(meta);
        sink
    }

    /// Adds the checks listed in a `canopy.dev/ignore` annotation of `meta` (if the policy
    /// honours them).
    fn add_ignores(&mut self, meta: Option<&Obj>) {
        if !self.policy.honour_ignore {
            return;
        }
        let Some(list) = meta
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(IGNORE_ANNOTATION))
            .and_then(Value::as_str)
        else {
            return;
        };
        for id in list.split(',') {
            if let Some(c) = CheckId::parse(id) {
                self.ignore |= c.bit();
            }
        }
    }

    /// Is this check enabled for this object?
    pub fn on(&self, id: CheckId) -> bool {
        self.policy.enabled & id.bit() != 0 && self.ignore & id.bit() == 0
    }

    /// The object's reference, built on first use and shared by its findings.
    pub fn resource(&mut self) -> Arc<ResourceRef> {
        self.resource
            .get_or_insert_with(|| {
                Arc::new(ResourceRef {
                    api_version: self.api_version.to_owned(),
                    kind: self.kind.to_owned(),
                    namespace: self.namespace.map(str::to_owned),
                    name: self.name.to_owned(),
                })
            })
            .clone()
    }

    /// Emits a finding with the check's full standards.
    pub fn emit(&mut self, id: CheckId, container: Option<&str>, path: String, message: String) {
        self.emit_with(id, id.def().standards, container, path, message);
    }

    /// Emits a finding that carries only `standards` (a subset of the check's).
    pub fn emit_with(
        &mut self,
        id: CheckId,
        standards: &'static [&'static str],
        container: Option<&str>,
        path: String,
        message: String,
    ) {
        if !self.on(id) || !self.policy.level.admits(standards) {
            return;
        }
        let resource = self.resource();
        self.out.push(make_finding(
            self.policy,
            id,
            standards,
            resource,
            container.map(str::to_owned),
            path,
            message,
        ));
    }

    fn into_sorted(mut self) -> Vec<Finding> {
        self.out.sort_by(Finding::order);
        self.out
    }
}

pub(crate) fn make_finding(
    policy: &CompiledPolicy,
    id: CheckId,
    standards: &'static [&'static str],
    resource: Arc<ResourceRef>,
    container: Option<String>,
    path: String,
    message: String,
) -> Finding {
    Finding {
        check: id.as_str(),
        severity: policy.severity(id),
        standards,
        resource,
        container,
        path,
        message,
        remediation: id.def().remediation,
    }
}

// === value helpers ===

pub(crate) fn obj<'a>(m: &'a Obj, key: &str) -> Option<&'a Obj> {
    m.get(key).and_then(Value::as_object)
}

pub(crate) fn arr<'a>(m: &'a Obj, key: &str) -> &'a [Value] {
    m.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn string<'a>(m: &'a Obj, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

pub(crate) fn boolean(m: &Obj, key: &str) -> Option<bool> {
    m.get(key).and_then(Value::as_bool)
}

pub(crate) fn opt_obj<'a>(m: Option<&'a Obj>, key: &str) -> Option<&'a Obj> {
    m.and_then(|m| obj(m, key))
}

/// Writes a map key into a field path: `.key`, or `[key]` when the key is not a plain
/// identifier (annotations, ConfigMap keys).
pub(crate) fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{key}]")
    }
}
