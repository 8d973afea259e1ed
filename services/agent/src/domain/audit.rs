//! Pure rules of the agent's audits: the effective policy and its derogations, what a finding
//! carries beyond the engine's (application, fingerprint, exemption), how one audit is cut into
//! `AuditStarted`, size-bounded `FindingsChunk`s and `AuditCompleted`, and which watched changes
//! call for an incremental or a full audit. No I/O here; time comes in as a value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use canopy_audit::{Auditor, Finding, Policy, PolicyError, Severity};
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    self as pb, AuditCompleted, AuditResult, AuditScope, AuditStarted, AuditTrigger, Envelope,
    FindingsChunk, ObjectCount, ObjectRef, envelope::Body,
};
use canopy_kit::subject::ClusterId;
use chrono::{DateTime, Utc};
use prost::Message as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The label that names an object's application.
pub const APP_LABEL: &str = "app.kubernetes.io/name";

/// Room kept for the envelope's own fields and protobuf framing beyond the measured size.
const SLACK: usize = 512;

// === effective policy ===

/// Where a derogation applies: every field that is set must match (empty: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub cluster_labels: BTreeMap<String, String>,
    pub cluster_id: String,
    pub namespace: String,
    pub workload_kind: String,
    pub workload_name: String,
    pub container: String,
}

/// An exemption of one check within a scope, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derogation {
    pub id: String,
    pub check: String,
    pub scope: Scope,
    pub expires_at: DateTime<Utc>,
}

/// What this cluster audits with: the fleet policy of `version` (0: the built-in default) and
/// the derogations that apply to this cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub version: u64,
    pub policy: Policy,
    pub derogations: Vec<Derogation>,
}

/// The cluster an audit runs in: its id and labels (derogation scopes match on both).
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    pub id: ClusterId,
    pub labels: BTreeMap<String, String>,
}

impl Derogation {
    /// Does this derogation exempt `f` in `cluster` at `now`? An expired one exempts nothing.
    pub fn exempts(&self, f: &Finding, cluster: &ClusterIdentity, now: DateTime<Utc>) -> bool {
        let s = &self.scope;
        let set = |v: &str| !v.is_empty();
        now < self.expires_at
            && self.check.eq_ignore_ascii_case(f.check)
            && (!set(&s.cluster_id) || s.cluster_id == cluster.id.as_str())
            && s.cluster_labels
                .iter()
                .all(|(k, v)| cluster.labels.get(k) == Some(v))
            && (!set(&s.namespace) || f.resource.namespace.as_deref() == Some(&s.namespace))
            && (!set(&s.workload_kind) || s.workload_kind.eq_ignore_ascii_case(&f.resource.kind))
            && (!set(&s.workload_name) || s.workload_name == f.resource.name)
            && (!set(&s.container) || f.container.as_deref() == Some(&s.container))
    }
}

impl EffectivePolicy {
    /// The derogation that exempts `f`, if any: of several, the one that lasts longest (then
    /// the smallest id), so that the choice does not depend on their order.
    pub fn exemption(
        &self,
        f: &Finding,
        cluster: &ClusterIdentity,
        now: DateTime<Utc>,
    ) -> Option<&Derogation> {
        self.derogations
            .iter()
            .filter(|d| d.exempts(f, cluster, now))
            .max_by(|a, b| a.expires_at.cmp(&b.expires_at).then(b.id.cmp(&a.id)))
    }
}

// === per-finding facts ===

fn label<'a>(meta: Option<&'a Value>, key: &str) -> Option<&'a str> {
    meta?
        .get("labels")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The pod template's metadata of a workload (`spec.template`, or `spec.jobTemplate.spec.template`
/// for CronJobs).
fn template_meta(obj: &Value) -> Option<&Value> {
    let spec = obj.get("spec")?;
    spec.get("template")
        .or_else(|| spec.get("jobTemplate")?.get("spec")?.get("template"))?
        .get("metadata")
}

/// The application an object belongs to: `app.kubernetes.io/name` of its pod template (for
/// workloads) or of the object, else its namespace; empty for cluster-scoped objects without
/// the label.
pub fn application(obj: &Value) -> String {
    let meta = obj.get("metadata");
    label(template_meta(obj), APP_LABEL)
        .or_else(|| label(meta, APP_LABEL))
        .or_else(|| meta?.get("namespace")?.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("")
        .to_owned()
}

/// The identity of a finding across audits: hex SHA-256 of the cluster, check, object
/// (apiVersion, kind, namespace, name) and field path.
pub fn fingerprint(cluster: &str, f: &Finding) -> String {
    let r = &f.resource;
    let mut h = Sha256::new();
    for part in [
        cluster,
        f.check,
        &r.api_version,
        &r.kind,
        r.namespace.as_deref().unwrap_or(""),
        &r.name,
        &f.path,
    ] {
        h.update(part.as_bytes());
        // A separator that cannot occur in any part keeps ("ab","c") apart from ("a","bc").
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

pub fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// (kind, namespace, name): how an object is recognised among the re-audited ones.
pub type ObjectKey = (String, String, String);

pub fn object_ref(api_version: &str, kind: &str, obj: &Value) -> ObjectRef {
    let meta = obj.get("metadata");
    let text = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    ObjectRef {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: text("namespace"),
        name: text("name"),
    }
}

fn key_of(r: &ObjectRef) -> ObjectKey {
    (r.kind.clone(), r.namespace.clone(), r.name.clone())
}

/// Pods, ReplicaSets and Jobs owned by a workload controller: the engine audits their owner's
/// template instead and reports nothing on them (unless the policy audits controlled pods), so
/// their changes need no audit.
pub fn controlled(kind: &str, obj: &Value) -> bool {
    matches!(kind, "Pod" | "ReplicaSet" | "Job")
        && obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|owners| {
                owners.iter().any(|o| {
                    o.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| canopy_audit::WORKLOAD_KINDS.contains(&k) && k != "Pod")
                })
            })
}

// === one audit ===

/// Why and how an audit runs.
#[derive(Debug, Clone)]
pub struct AuditSpec {
    pub audit_id: String,
    pub trigger: AuditTrigger,
    pub scope: AuditScope,
    pub command_id: String,
    pub started_at: DateTime<Utc>,
    pub max_chunk_bytes: usize,
}

/// What an audit reports, as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub objects: u64,
    pub findings: u64,
    pub exempted: u64,
    pub open_by_severity: BTreeMap<String, u64>,
}

/// One audit in progress: objects go in as they are listed, full `FindingsChunk`s come out;
/// between objects it holds only the engine's compact cross-object facts, one chunk and the
/// object counts per (namespace, application).
pub struct AuditRun {
    auditor: Auditor<Arc<str>>,
    rep: Reporter,
    counts: HashMap<(String, Arc<str>), u64>,
    /// Incremental audits: the re-audited objects.
    objects: Vec<ObjectRef>,
    kinds_skipped: Vec<String>,
}

/// Turns engine findings into event findings and chunks, and keeps the summary.
struct Reporter {
    cluster: ClusterIdentity,
    spec: AuditSpec,
    policy: Arc<EffectivePolicy>,
    chunker: FindingsChunker,
    summary: Summary,
    /// Incremental audits: keys of the re-audited objects (other objects' findings are left out).
    only: HashSet<ObjectKey>,
}

impl AuditRun {
    /// A new audit with `policy`; fails only when the policy does not compile.
    pub fn new(
        cluster: ClusterIdentity,
        spec: AuditSpec,
        policy: Arc<EffectivePolicy>,
    ) -> Result<Self, PolicyError> {
        let auditor = Auditor::with_policy(&policy.policy)?;
        let chunker = FindingsChunker::new(
            cluster.id.clone(),
            spec.audit_id.clone(),
            spec.max_chunk_bytes,
        );
        Ok(Self {
            auditor,
            rep: Reporter {
                cluster,
                spec,
                policy,
                chunker,
                summary: Summary::default(),
                only: HashSet::new(),
            },
            counts: HashMap::new(),
            objects: Vec::new(),
            kinds_skipped: Vec::new(),
        })
    }

    pub fn audit_id(&self) -> &str {
        &self.rep.spec.audit_id
    }

    pub fn summary(&self) -> &Summary {
        &self.rep.summary
    }

    /// `AuditStarted`.
    pub fn started(&self) -> Envelope {
        let spec = &self.rep.spec;
        self.rep.envelope(Body::AuditStarted(AuditStarted {
            audit_id: spec.audit_id.clone(),
            trigger: spec.trigger as i32,
            scope: spec.scope as i32,
            policy_version: self.rep.policy.version,
            command_id: spec.command_id.clone(),
        }))
    }

    /// Audits one listed (or re-audited) object; returns the chunks that filled up.
    /// `obj` must carry `apiVersion` and `kind`.
    pub fn add(&mut self, obj: &Value) -> Vec<Envelope> {
        let app: Arc<str> = Arc::from(application(obj));
        if self.rep.spec.scope == AuditScope::Incremental {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
            let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let r = object_ref(api_version, kind, obj);
            self.rep.only.insert(key_of(&r));
            self.objects.push(r);
        } else {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            *self.counts.entry((ns, app.clone())).or_insert(0) += 1;
        }
        self.rep.summary.objects += 1;
        let findings = self.auditor.add_tagged(obj, app.clone());
        findings
            .iter()
            .filter_map(|f| self.rep.push(f, &app))
            .collect()
    }

    /// Feeds an object the changed ones need for their cross-object checks (a NetworkPolicy or
    /// ServiceAccount of their namespace) without reporting on it.
    pub fn add_context(&mut self, obj: &Value) {
        let _ = self.auditor.add_tagged(obj, Arc::from(""));
    }

    /// An object that was deleted: listed in the incremental audit with no findings.
    pub fn deleted(&mut self, r: ObjectRef) {
        self.rep.only.insert(key_of(&r));
        self.objects.push(r);
        self.rep.summary.objects += 1;
    }

    /// A kind the Kubernetes API refused to list: its checks did not run.
    pub fn skip_kind(&mut self, kind: &str) {
        self.kinds_skipped.push(kind.to_owned());
    }

    /// Runs the cross-object checks and returns the remaining chunks, `AuditCompleted` last,
    /// and the result a command gets. `finished_at` dates the duration.
    pub fn finish(self, finished_at: DateTime<Utc>) -> (Vec<Envelope>, AuditResult) {
        let Self {
            auditor,
            mut rep,
            counts,
            objects,
            kinds_skipped,
        } = self;
        let mut out: Vec<Envelope> = auditor
            .finish_tagged()
            .iter()
            .filter_map(|(f, app)| rep.push(f, app))
            .collect();
        let mut counts: Vec<ObjectCount> = counts
            .into_iter()
            .map(|((namespace, app), objects)| ObjectCount {
                namespace,
                application: app.to_string(),
                objects,
            })
            .collect();
        counts.sort_by(|a, b| (&a.namespace, &a.application).cmp(&(&b.namespace, &b.application)));
        for c in counts {
            out.extend(rep.chunker.push_count(c));
        }
        out.extend(rep.chunker.flush_if_any());
        let duration = (finished_at - rep.spec.started_at)
            .num_milliseconds()
            .clamp(0, i64::from(u32::MAX));
        let s = &rep.summary;
        let open_by_severity: HashMap<String, u64> =
            s.open_by_severity.clone().into_iter().collect();
        let completed = AuditCompleted {
            audit_id: rep.spec.audit_id.clone(),
            trigger: rep.spec.trigger as i32,
            scope: rep.spec.scope as i32,
            policy_version: rep.policy.version,
            command_id: rep.spec.command_id.clone(),
            chunks: rep.chunker.chunks(),
            objects_audited: s.objects,
            findings: s.findings,
            exempted: s.exempted,
            open_by_severity: open_by_severity.clone(),
            objects,
            started_at: Some(timestamp(rep.spec.started_at)),
            duration_ms: u32::try_from(duration).unwrap_or(u32::MAX),
            kinds_skipped,
        };
        let result = AuditResult {
            audit_id: rep.spec.audit_id.clone(),
            objects_audited: s.objects,
            findings: s.findings,
            exempted: s.exempted,
            open_by_severity,
        };
        out.push(rep.envelope(Body::AuditCompleted(completed)));
        (out, result)
    }
}

impl Reporter {
    fn envelope(&self, body: Body) -> Envelope {
        let mut env = envelope::new(&self.cluster.id, "agent", body);
        // Every event of an audit shares one correlation id: the audit's.
        env.correlation_id.clone_from(&self.spec.audit_id);
        env.causation_id.clone_from(&self.spec.command_id);
        env
    }

    fn push(&mut self, f: &Finding, app: &str) -> Option<Envelope> {
        if self.spec.scope == AuditScope::Incremental {
            let r = &f.resource;
            let key = (
                r.kind.clone(),
                r.namespace.clone().unwrap_or_default(),
                r.name.clone(),
            );
            if !self.only.contains(&key) {
                return None;
            }
        }
        let exemption = self
            .policy
            .exemption(f, &self.cluster, self.spec.started_at);
        self.summary.findings += 1;
        if exemption.is_some() {
            self.summary.exempted += 1;
        } else {
            *self
                .summary
                .open_by_severity
                .entry(f.severity.as_str().to_owned())
                .or_insert(0) += 1;
        }
        let finding = pb::Finding {
            check: f.check.to_owned(),
            severity: severity(f.severity) as i32,
            standards: f.standards.iter().map(|s| (*s).to_owned()).collect(),
            resource: Some(ObjectRef {
                api_version: f.resource.api_version.clone(),
                kind: f.resource.kind.clone(),
                namespace: f.resource.namespace.clone().unwrap_or_default(),
                name: f.resource.name.clone(),
            }),
            container: f.container.clone().unwrap_or_default(),
            path: f.path.clone(),
            message: f.message.clone(),
            remediation: f.remediation.to_owned(),
            application: app.to_owned(),
            derogation_id: exemption.map(|d| d.id.clone()).unwrap_or_default(),
            exempted_until: exemption.map(|d| timestamp(d.expires_at)),
            fingerprint: fingerprint(self.cluster.id.as_str(), f),
        };
        self.chunker.push_finding(finding)
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

// === chunks ===

/// Cuts an audit's findings (and object counts) into `FindingsChunk`s under a byte bound.
#[derive(Debug)]
pub struct FindingsChunker {
    cluster: ClusterId,
    audit_id: String,
    max_bytes: usize,
    next_index: u32,
    findings: Vec<pb::Finding>,
    counts: Vec<ObjectCount>,
    bytes: usize,
}

impl FindingsChunker {
    pub fn new(cluster: ClusterId, audit_id: String, max_bytes: usize) -> Self {
        Self {
            cluster,
            audit_id,
            max_bytes,
            next_index: 0,
            findings: Vec::new(),
            counts: Vec::new(),
            bytes: 0,
        }
    }

    fn budget(&self) -> usize {
        self.max_bytes
            .saturating_sub(SLACK + 2 * self.audit_id.len() + 64)
    }

    /// Chunks published so far.
    pub fn chunks(&self) -> u32 {
        self.next_index
    }

    fn make_room(&mut self, len: usize) -> Option<Envelope> {
        let full = self.bytes + len > self.budget() && self.bytes > 0;
        full.then(|| self.flush())
    }

    /// Adds a finding; returns the full chunk it did not fit in. A finding too large for any
    /// chunk has its message cut (it is made of field names, never of secret values).
    pub fn push_finding(&mut self, mut f: pb::Finding) -> Option<Envelope> {
        let mut len = framed(f.encoded_len());
        if len > self.budget() {
            let keep = self.budget() / 4;
            f.message = f.message.chars().take(keep).collect();
            f.path = f.path.chars().take(keep).collect();
            len = framed(f.encoded_len());
        }
        let full = self.make_room(len);
        self.bytes += len;
        self.findings.push(f);
        full
    }

    pub fn push_count(&mut self, c: ObjectCount) -> Option<Envelope> {
        let len = framed(c.encoded_len());
        let full = self.make_room(len);
        self.bytes += len;
        self.counts.push(c);
        full
    }

    /// The chunk in hand, if it holds anything.
    pub fn flush_if_any(&mut self) -> Option<Envelope> {
        (self.bytes > 0).then(|| self.flush())
    }

    fn flush(&mut self) -> Envelope {
        let index = self.next_index;
        self.next_index += 1;
        self.bytes = 0;
        let mut env = envelope::new(
            &self.cluster,
            "agent",
            Body::FindingsChunk(FindingsChunk {
                audit_id: self.audit_id.clone(),
                chunk_index: index,
                findings: std::mem::take(&mut self.findings),
                object_counts: std::mem::take(&mut self.counts),
            }),
        );
        env.correlation_id.clone_from(&self.audit_id);
        env
    }
}

fn framed(n: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(n as u64) + n
}

// === watched changes ===

/// What a watched change calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Re-audit the object alone (with its namespace's NetworkPolicies and ServiceAccounts).
    Incremental,
    /// Other objects' verdicts depend on it: audit everything.
    Full,
    /// Nothing the audit reads changed.
    None,
}

/// Kinds whose changes re-audit the object alone.
pub const INCREMENTAL_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ConfigMap",
    "Ingress",
];

/// Kinds other objects' verdicts depend on (NETPOL-MISSING, SA-AUTOMOUNT, RBAC through roles).
pub const FULL_KINDS: &[&str] = &[
    "NetworkPolicy",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

pub fn reaction(kind: &str) -> Reaction {
    if INCREMENTAL_KINDS.contains(&kind) {
        Reaction::Incremental
    } else if FULL_KINDS.contains(&kind) {
        Reaction::Full
    } else {
        Reaction::None
    }
}

/// A digest of what the audit reads of an object: everything but `status` and the metadata the
/// server maintains, so that status updates (most watch events) are recognised as no change.
pub fn audit_digest(obj: &Value) -> u64 {
    let mut h = Sha256::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "status" => {}
                "metadata" => {
                    for key in ["labels", "annotations", "ownerReferences"] {
                        if let Some(v) = v.get(key) {
                            h.update(key.as_bytes());
                            h.update(v.to_string().as_bytes());
                        }
                    }
                }
                _ => {
                    h.update(k.as_bytes());
                    h.update(v.to_string().as_bytes());
                }
            }
        }
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Applied(Value),
    Deleted(ObjectRef),
}

/// Changes waiting for the next incremental audit, newest per object; past `max` objects a
/// full audit is cheaper and bounds memory.
#[derive(Debug, Default)]
pub struct Pending {
    changes: BTreeMap<ObjectKey, Change>,
    full: bool,
    max: usize,
    /// What the audit read of each object last time it was seen (by a hash of its key), to
    /// ignore status updates: 16 bytes per object.
    digests: HashMap<u64, u64>,
}

impl Pending {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Records a watch event; returns true when it calls for an audit.
    pub fn record(&mut self, kind: &str, change: Change) -> bool {
        let reaction = reaction(kind);
        if reaction == Reaction::None {
            return false;
        }
        let key = match &change {
            Change::Applied(obj) => {
                if reaction == Reaction::Incremental && controlled(kind, obj) {
                    return false;
                }
                let key = key_of(&object_ref("", kind, obj));
                let digest = audit_digest(obj);
                if self.digests.insert(key_hash(&key), digest) == Some(digest) {
                    return false;
                }
                key
            }
            Change::Deleted(r) => {
                let key = key_of(r);
                self.digests.remove(&key_hash(&key));
                key
            }
        };
        if reaction == Reaction::Full {
            self.full = true;
            self.changes.clear();
            return true;
        }
        if self.full {
            return true;
        }
        self.changes.insert(key, change);
        if self.changes.len() > self.max {
            self.full = true;
            self.changes.clear();
        }
        true
    }

    /// A full audit was asked for (by a change, or because too many objects changed).
    pub fn wants_full(&self) -> bool {
        self.full
    }

    pub fn is_empty(&self) -> bool {
        !self.full && self.changes.is_empty()
    }

    /// The changes for an incremental audit, emptying the set.
    pub fn take(&mut self) -> Vec<Change> {
        self.full = false;
        std::mem::take(&mut self.changes).into_values().collect()
    }

    /// A full audit starts: everything pending is covered by it.
    pub fn clear(&mut self) {
        self.full = false;
        self.changes.clear();
    }

    /// Remembers what a full audit read of an object, so that a later status-only watch event
    /// is not taken for a change.
    pub fn seen(&mut self, kind: &str, obj: &Value) {
        if reaction(kind) != Reaction::None && !controlled(kind, obj) {
            let key = key_of(&object_ref("", kind, obj));
            self.digests.insert(key_hash(&key), audit_digest(obj));
        }
    }
}

fn key_hash(key: &ObjectKey) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use serde_json::json;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    fn cluster() -> ClusterIdentity {
        ClusterIdentity {
            id: ClusterId::parse("staging-us").unwrap(),
            labels: [("env".to_owned(), "staging".to_owned())].into(),
        }
    }

    fn deployment(ns: &str, name: &str, privileged: bool) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"namespace": ns, "name": name, "labels": {"team": "x"}},
            "spec": {"template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.example.com/app:1.0",
                    "securityContext": {"privileged": privileged}
                }]}
            }}
        })
    }

    fn spec(scope: AuditScope, max: usize) -> AuditSpec {
        AuditSpec {
            audit_id: "a-1".into(),
            trigger: AuditTrigger::Interval,
            scope,
            command_id: String::new(),
            started_at: t(0),
            max_chunk_bytes: max,
        }
    }

    fn derogation(id: &str, check: &str, scope: Scope, expires: i64) -> Derogation {
        Derogation {
            id: id.into(),
            check: check.into(),
            scope,
            expires_at: t(expires),
        }
    }

    fn findings_of(envs: &[Envelope]) -> Vec<pb::Finding> {
        envs.iter()
            .filter_map(|e| match &e.body {
                Some(Body::FindingsChunk(c)) => Some(c.findings.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn completed(envs: &[Envelope]) -> AuditCompleted {
        match &envs.last().unwrap().body {
            Some(Body::AuditCompleted(c)) => c.clone(),
            other => panic!("last event is not AuditCompleted: {other:?}"),
        }
    }

    fn run_full(policy: EffectivePolicy, objects: &[Value]) -> (Vec<Envelope>, AuditResult) {
        let mut run = AuditRun::new(
            cluster(),
            spec(AuditScope::Full, 64 * 1024),
            Arc::new(policy),
        )
        .unwrap();
        let mut out = vec![run.started()];
        for o in objects {
            out.extend(run.add(o));
        }
        let (rest, result) = run.finish(t(2));
        out.extend(rest);
        (out, result)
    }

    #[test]
    fn given_workloads_when_audited_then_findings_carry_application_fingerprint_and_chunks_add_up()
    {
        let objects = [
            deployment("shop", "cart", true),
            deployment("shop", "web", false),
        ];
        let (events, result) = run_full(EffectivePolicy::default(), &objects);
        let findings = findings_of(&events);
        let done = completed(&events);
        assert!(matches!(events[0].body, Some(Body::AuditStarted(_))));
        assert_eq!(done.chunks as usize, events.len() - 2);
        assert_eq!(done.findings as usize, findings.len());
        assert_eq!(done.objects_audited, 2);
        assert_eq!(result.findings, done.findings);
        let privileged: Vec<_> = findings
            .iter()
            .filter(|f| f.check == "PRIVILEGED")
            .collect();
        assert_eq!(privileged.len(), 1);
        let p = privileged[0];
        assert_eq!(p.application, "cart");
        assert_eq!(p.severity, pb::Severity::Critical as i32);
        assert_eq!(p.fingerprint.len(), 64);
        // Fingerprints identify (check, object, path): all distinct here.
        let mut fps: Vec<_> = findings.iter().map(|f| f.fingerprint.clone()).collect();
        fps.sort();
        fps.dedup();
        assert_eq!(fps.len(), findings.len());
        let open: u64 = done.open_by_severity.values().sum();
        assert_eq!(open, done.findings);
        // Every event of the audit shares the audit id as correlation id.
        assert!(events.iter().all(|e| e.correlation_id == "a-1"));
        // Object counts per (namespace, application) arrive in the chunks.
        let counts: Vec<ObjectCount> = events
            .iter()
            .filter_map(|e| match &e.body {
                Some(Body::FindingsChunk(c)) => Some(c.object_counts.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(counts.len(), 2);
        assert!(
            counts
                .iter()
                .all(|c| c.namespace == "shop" && c.objects == 1)
        );
    }

    #[test]
    fn given_a_matching_derogation_when_audited_then_the_finding_is_exempted_not_dropped() {
        let scope = Scope {
            namespace: "shop".into(),
            workload_kind: "deployment".into(),
            workload_name: "cart".into(),
            cluster_labels: [("env".to_owned(), "staging".to_owned())].into(),
            ..Scope::default()
        };
        let policy = EffectivePolicy {
            derogations: vec![derogation("d-1", "PRIVILEGED", scope, 100)],
            ..EffectivePolicy::default()
        };
        let (events, result) = run_full(policy, &[deployment("shop", "cart", true)]);
        let f = findings_of(&events)
            .into_iter()
            .find(|f| f.check == "PRIVILEGED")
            .unwrap();
        assert_eq!(f.derogation_id, "d-1");
        assert_eq!(f.exempted_until, Some(timestamp(t(100))));
        assert_eq!(result.exempted, 1);
        assert!(!result.open_by_severity.contains_key("critical"));
    }

    #[test]
    fn given_an_expired_or_foreign_derogation_then_nothing_is_exempted() {
        let f = canopy_audit::audit_object(&Policy::default(), &deployment("shop", "cart", true))
            .unwrap()
            .into_iter()
            .find(|f| f.check == "PRIVILEGED")
            .unwrap();
        let c = cluster();
        let any = Scope::default();
        assert!(derogation("d", "PRIVILEGED", any.clone(), 10).exempts(&f, &c, t(9)));
        assert!(!derogation("d", "PRIVILEGED", any.clone(), 10).exempts(&f, &c, t(10)));
        assert!(!derogation("d", "HOST-PID", any, 10).exempts(&f, &c, t(0)));
        for scope in [
            Scope {
                cluster_id: "prod-eu".into(),
                ..Scope::default()
            },
            Scope {
                cluster_labels: [("env".to_owned(), "prod".to_owned())].into(),
                ..Scope::default()
            },
            Scope {
                namespace: "other".into(),
                ..Scope::default()
            },
            Scope {
                workload_name: "web".into(),
                ..Scope::default()
            },
            Scope {
                container: "sidecar".into(),
                ..Scope::default()
            },
        ] {
            assert!(
                !derogation("d", "PRIVILEGED", scope.clone(), 10).exempts(&f, &c, t(0)),
                "{scope:?}"
            );
        }
        let exact = Scope {
            cluster_id: "staging-us".into(),
            container: "app".into(),
            ..Scope::default()
        };
        assert!(derogation("d", "privileged", exact, 10).exempts(&f, &c, t(0)));
        // Of two, the longest-lasting one is chosen, whatever their order.
        let p = EffectivePolicy {
            derogations: vec![
                derogation("short", "PRIVILEGED", Scope::default(), 5),
                derogation("long", "PRIVILEGED", Scope::default(), 50),
            ],
            ..EffectivePolicy::default()
        };
        assert_eq!(p.exemption(&f, &c, t(0)).unwrap().id, "long");
    }

    #[test]
    fn given_a_policy_when_audited_then_disabled_checks_and_overrides_apply() {
        let policy = EffectivePolicy {
            version: 3,
            policy: Policy {
                disabled_checks: ["PULL-POLICY".to_owned()].into(),
                severity_overrides: [("PRIVILEGED".to_owned(), Severity::Low)].into(),
                ..Policy::default()
            },
            derogations: Vec::new(),
        };
        let (events, _) = run_full(policy, &[deployment("shop", "cart", true)]);
        let findings = findings_of(&events);
        assert!(findings.iter().all(|f| f.check != "PULL-POLICY"));
        let p = findings.iter().find(|f| f.check == "PRIVILEGED").unwrap();
        assert_eq!(p.severity, pb::Severity::Low as i32);
        assert_eq!(completed(&events).policy_version, 3);
    }

    #[test]
    fn given_small_chunks_then_every_chunk_stays_under_the_bound_and_none_is_lost() {
        let objects: Vec<Value> = (0..200)
            .map(|i| deployment("ns", &format!("app-{i}"), true))
            .collect();
        let max = 8 * 1024;
        let mut run =
            AuditRun::new(cluster(), spec(AuditScope::Full, max), Arc::default()).unwrap();
        let mut events = vec![run.started()];
        for o in &objects {
            events.extend(run.add(o));
        }
        let (rest, _) = run.finish(t(1));
        events.extend(rest);
        let done = completed(&events);
        assert!(done.chunks > 10, "{}", done.chunks);
        let mut index = 0;
        for e in &events {
            if let Some(Body::FindingsChunk(c)) = &e.body {
                assert_eq!(c.chunk_index, index);
                index += 1;
                assert!(e.encoded_len() <= max, "{} bytes", e.encoded_len());
            }
        }
        assert_eq!(index, done.chunks);
        assert_eq!(findings_of(&events).len() as u64, done.findings);
    }

    #[test]
    fn given_an_incremental_audit_then_only_listed_objects_are_reported_and_deletions_listed() {
        let mut run = AuditRun::new(
            cluster(),
            spec(AuditScope::Incremental, 64 * 1024),
            Arc::default(),
        )
        .unwrap();
        // Context: a default-deny NetworkPolicy of the namespace (no finding of its own).
        run.add_context(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "shop", "name": "deny"},
            "spec": {"podSelector": {}}
        }));
        let mut events = run.add(&deployment("shop", "cart", true));
        run.deleted(ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "gone".into(),
        });
        let (rest, _) = run.finish(t(1));
        events.extend(rest);
        let done = completed(&events);
        assert_eq!(done.scope, AuditScope::Incremental as i32);
        let names: Vec<_> = done.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["cart", "gone"]);
        let findings = findings_of(&events);
        assert!(
            findings
                .iter()
                .all(|f| f.resource.as_ref().unwrap().name == "cart")
        );
        // The namespace's NetworkPolicy was taken into account.
        assert!(findings.iter().all(|f| f.check != "NETPOL-MISSING"));
        assert!(findings.iter().any(|f| f.check == "PRIVILEGED"));
    }

    #[test]
    fn application_prefers_the_pod_template_then_the_object_then_the_namespace() {
        assert_eq!(application(&deployment("shop", "cart", false)), "cart");
        let cm = json!({"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "c",
            "labels": {"app.kubernetes.io/name": "billing"}}});
        assert_eq!(application(&cm), "billing");
        let bare = json!({"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "c"}});
        assert_eq!(application(&bare), "shop");
        let cron = json!({"kind": "CronJob", "metadata": {"namespace": "ops", "name": "b"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {
                "app.kubernetes.io/name": "backup"}}}}}}});
        assert_eq!(application(&cron), "backup");
        let role = json!({"kind": "ClusterRole", "metadata": {"name": "r"}});
        assert_eq!(application(&role), "");
    }

    #[test]
    fn controlled_objects_are_those_the_engine_reports_nothing_on() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "shop", "name": "cart-1",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "cart-x"}]},
            "spec": {"containers": [{"name": "app", "image": "x", "securityContext": {"privileged": true}}]}
        });
        assert!(controlled("Pod", &pod));
        assert!(
            canopy_audit::audit_object(&Policy::default(), &pod)
                .unwrap()
                .is_empty()
        );
        pod["metadata"]["ownerReferences"] = json!([]);
        assert!(!controlled("Pod", &pod));
        assert!(
            !canopy_audit::audit_object(&Policy::default(), &pod)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn given_watch_events_then_status_updates_are_ignored_and_rbac_changes_ask_for_a_full_audit() {
        let mut p = Pending::new(3);
        let d = deployment("shop", "cart", false);
        p.seen("Deployment", &d);
        let mut status_only = d.clone();
        status_only["status"] = json!({"readyReplicas": 3});
        status_only["metadata"]["resourceVersion"] = json!("42");
        assert!(!p.record("Deployment", Change::Applied(status_only)));
        assert!(p.is_empty());
        assert!(p.record(
            "Deployment",
            Change::Applied(deployment("shop", "cart", true))
        ));
        assert!(!p.record("Secret", Change::Applied(json!({"kind": "Secret"}))));
        assert!(!p.wants_full());
        let taken = p.take();
        assert_eq!(taken.len(), 1);
        assert!(p.is_empty());
        assert!(p.record(
            "RoleBinding",
            Change::Applied(json!({"kind": "RoleBinding", "metadata": {"name": "b"}}))
        ));
        assert!(p.wants_full());
        p.clear();
        // Too many changed objects: a full audit instead.
        for i in 0..4 {
            p.record(
                "Deployment",
                Change::Applied(deployment("shop", &format!("d{i}"), false)),
            );
        }
        assert!(p.wants_full());
    }
}
