//! Cross-object checks and the compact facts they keep between [`super::Auditor::add_tagged`] and
//! `finish`: SA-AUTOMOUNT (pod vs ServiceAccount), NETPOL-MISSING (pod labels vs NetworkPolicy
//! podSelectors) and RBAC-CLUSTER-ADMIN through admin-equivalent roles.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::objects::{admin_rule, builtin_role};
use super::workload::PodView;
use super::{Obj, Sink, arr, boolean, make_finding, obj, opt_obj, string};
use crate::catalogue::{CheckId, std_refs};
use crate::finding::{Finding, ResourceRef};
use crate::policy::CompiledPolicy;

/// A workload whose SA-AUTOMOUNT or NETPOL-MISSING verdict needs other objects. Kept small:
/// the (shared) reference, the ServiceAccount name and the labels in one string.
struct PendingWorkload<T> {
    resource: Arc<ResourceRef>,
    sp: &'static str,
    mp: &'static str,
    /// The ServiceAccount name, when the pod leaves automountServiceAccountToken unset.
    service_account: Option<Cow<'static, str>>,
    /// The pod labels, when NETPOL-MISSING is on.
    labels: Option<Labels>,
    tag: T,
}

/// A label set in one allocation: `key\0value\0` pairs sorted by key.
struct Labels(Box<str>);

impl Labels {
    fn new(labels: Option<&Obj>) -> Labels {
        // serde_json maps iterate in key order (BTreeMap); sort anyway in case the
        // `preserve_order` feature is on somewhere in the build.
        let mut pairs: Vec<(&str, &str)> = labels
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        pairs.sort_unstable();
        let mut s = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
        for (k, v) in pairs {
            s.push_str(k);
            s.push('\0');
            s.push_str(v);
            s.push('\0');
        }
        Labels(s.into_boxed_str())
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split('\0');
        std::iter::from_fn(move || {
            let k = parts.next()?;
            let v = parts.next()?;
            Some((k, v))
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// A binding to a role other than cluster-admin; it is reported if that role turns out to grant
/// `*` on `*` in `*`.
struct PendingBinding<T> {
    resource: Arc<ResourceRef>,
    role: RoleKey,
    subjects: String,
    standards: &'static [&'static str],
    tag: T,
}

/// (kind, namespace — "" for ClusterRoles, name).
type RoleKey = (&'static str, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A NetworkPolicy `spec.podSelector` (a metav1.LabelSelector).
#[derive(Debug, Clone)]
struct Selector {
    requirements: Vec<Requirement>,
    /// An operator the API does not know, or In/NotIn without values: the API server would
    /// reject the object, and such a selector selects nothing.
    invalid: bool,
}

impl Selector {
    fn parse(sel: Option<&Obj>) -> Selector {
        let mut requirements = Vec::new();
        let mut invalid = false;
        let Some(sel) = sel else {
            // A missing podSelector reads as the empty selector: every pod of the namespace.
            return Selector {
                requirements,
                invalid,
            };
        };
        if let Some(labels) = obj(sel, "matchLabels") {
            for (k, v) in labels {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.as_str().unwrap_or("").to_owned()],
                });
            }
        }
        for e in arr(sel, "matchExpressions") {
            let Some(e) = e.as_object() else {
                invalid = true;
                continue;
            };
            let key = string(e, "key").unwrap_or("").to_owned();
            let values: Vec<String> = arr(e, "values")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let op = match string(e, "operator").unwrap_or("") {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => {
                    invalid = true;
                    continue;
                }
            };
            if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                invalid = true;
            }
            requirements.push(Requirement { key, op, values });
        }
        Selector {
            requirements,
            invalid,
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        if self.invalid {
            return false;
        }
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match (&r.op, value) {
                (Op::In, Some(v)) => r.values.iter().any(|x| x == v),
                (Op::In, None) => false,
                (Op::NotIn, Some(v)) => !r.values.iter().any(|x| x == v),
                (Op::NotIn, None) => true,
                (Op::Exists, v) => v.is_some(),
                (Op::DoesNotExist, v) => v.is_none(),
            }
        })
    }
}

/// Facts kept between `add` and `finish`.
pub(crate) struct CrossState<T> {
    /// ServiceAccounts with `automountServiceAccountToken: false`, by namespace.
    sa_disabled: HashMap<String, HashSet<String>>,
    /// NetworkPolicy pod selectors, by namespace.
    netpols: HashMap<String, Vec<Selector>>,
    /// Roles and ClusterRoles that grant `*` on `*` in `*`.
    admin_roles: HashSet<RoleKey>,
    workloads: Vec<PendingWorkload<T>>,
    bindings: Vec<PendingBinding<T>>,
}

impl<T> Default for CrossState<T> {
    fn default() -> Self {
        CrossState {
            sa_disabled: HashMap::new(),
            netpols: HashMap::new(),
            admin_roles: HashSet::new(),
            workloads: Vec::new(),
            bindings: Vec::new(),
        }
    }
}

impl<T> std::fmt::Debug for CrossState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossState")
            .field(
                "service_accounts_disabled",
                &self.sa_disabled.values().map(HashSet::len).sum::<usize>(),
            )
            .field(
                "network_policies",
                &self.netpols.values().map(Vec::len).sum::<usize>(),
            )
            .field("admin_roles", &self.admin_roles.len())
            .field("pending_workloads", &self.workloads.len())
            .field("pending_bindings", &self.bindings.len())
            .finish()
    }
}

fn ns_key(meta: Option<&Obj>) -> String {
    meta.and_then(|m| string(m, "namespace"))
        .unwrap_or("")
        .to_owned()
}

impl<T: Clone> CrossState<T> {
    /// SA-AUTOMOUNT and NETPOL-MISSING facts of a workload. A pod-level
    /// `automountServiceAccountToken` decides SA-AUTOMOUNT at once (the pod's value wins over its
    /// ServiceAccount's); otherwise the verdict waits for the ServiceAccount.
    pub fn add_workload(&mut self, pod: &PodView<'_>, s: &mut Sink<'_, '_>, tag: T) {
        let mut service_account = None;
        if s.on(CheckId::SaAutomount) {
            match pod.automount_token {
                Some(true) => s.emit(
                    CheckId::SaAutomount,
                    None,
                    format!("{}.automountServiceAccountToken", pod.sp),
                    "the pod sets automountServiceAccountToken: true".to_owned(),
                ),
                Some(false) => {}
                None => {
                    service_account = Some(match pod.service_account {
                        None | Some("default") => Cow::Borrowed("default"),
                        Some(sa) => Cow::Owned(sa.to_owned()),
                    });
                }
            }
        }
        let labels = s
            .on(CheckId::NetpolMissing)
            .then(|| Labels::new(opt_obj(pod.meta, "labels")));
        if service_account.is_none() && labels.is_none() {
            return;
        }
        self.workloads.push(PendingWorkload {
            resource: s.resource(),
            sp: pod.sp,
            mp: pod.mp,
            service_account,
            labels,
            tag,
        });
    }

    pub fn add_service_account(&mut self, o: &Obj, meta: Option<&Obj>) {
        let name = meta.and_then(|m| string(m, "name")).unwrap_or("");
        let ns = ns_key(meta);
        match boolean(o, "automountServiceAccountToken") {
            Some(false) => {
                self.sa_disabled
                    .entry(ns)
                    .or_default()
                    .insert(name.to_owned());
            }
            _ => {
                if let Some(set) = self.sa_disabled.get_mut(&ns) {
                    set.remove(name);
                }
            }
        }
    }

    pub fn add_network_policy(&mut self, o: &Obj, meta: Option<&Obj>) {
        let selector = Selector::parse(opt_obj(obj(o, "spec"), "podSelector"));
        self.netpols.entry(ns_key(meta)).or_default().push(selector);
    }

    pub fn add_role(&mut self, o: &Obj, kind: &str, meta: Option<&Obj>) {
        let admin = arr(o, "rules")
            .iter()
            .filter_map(Value::as_object)
            .any(admin_rule);
        if !admin {
            return;
        }
        let name = meta
            .and_then(|m| string(m, "name"))
            .unwrap_or("")
            .to_owned();
        let key = if kind == "ClusterRole" {
            ("ClusterRole", String::new(), name)
        } else {
            ("Role", ns_key(meta), name)
        };
        self.admin_roles.insert(key);
    }

    /// RBAC-CLUSTER-ADMIN: a binding of `cluster-admin` is reported at once; a binding of any
    /// other role waits to learn whether that role is admin-equivalent. Bindings named
    /// `system:*` and `system:*` subjects (e.g. the built-in `system:masters` group) are Kubernetes'
    /// own and are not reported.
    pub fn add_binding(
        &mut self,
        o: &Obj,
        kind: &str,
        meta: Option<&Obj>,
        s: &mut Sink<'_, '_>,
        tag: T,
    ) {
        if !s.on(CheckId::RbacClusterAdmin) {
            return;
        }
        let name = meta.and_then(|m| string(m, "name")).unwrap_or("");
        if name.starts_with("system:") {
            return;
        }
        let role_ref = obj(o, "roleRef");
        let role_kind = role_ref.and_then(|r| string(r, "kind")).unwrap_or("");
        let role_name = role_ref.and_then(|r| string(r, "name")).unwrap_or("");
        let subjects: Vec<String> = arr(o, "subjects")
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|sub| {
                let n = string(sub, "name").unwrap_or("");
                if n.is_empty() || n.starts_with("system:") {
                    return None;
                }
                let k = string(sub, "kind").unwrap_or("");
                Some(match string(sub, "namespace") {
                    Some(ns) if !ns.is_empty() => format!("{k} {ns}/{n}"),
                    _ => format!("{k} {n}"),
                })
            })
            .collect();
        if subjects.is_empty() {
            return;
        }
        let subjects = subjects.join(", ");
        let standards = if kind == "ClusterRoleBinding" {
            std_refs::CRB_ADMIN
        } else {
            std_refs::RB_ADMIN
        };
        if role_kind == "ClusterRole" && role_name == "cluster-admin" {
            s.emit_with(
                CheckId::RbacClusterAdmin,
                standards,
                None,
                "roleRef.name".to_owned(),
                format!("binds cluster-admin to {subjects}"),
            );
            return;
        }
        if builtin_role(role_name, None) {
            return;
        }
        let role = if role_kind == "ClusterRole" {
            ("ClusterRole", String::new(), role_name.to_owned())
        } else {
            ("Role", ns_key(meta), role_name.to_owned())
        };
        self.bindings.push(PendingBinding {
            resource: s.resource(),
            role,
            subjects,
            standards,
            tag,
        });
    }

    /// Decides every pending verdict; returns the findings.
    pub fn finish(self, policy: &CompiledPolicy) -> Vec<(Finding, T)> {
        let mut out = Vec::new();
        self.finish_each(policy, |f, t| out.push((f, t)));
        out
    }

    /// Decides every pending verdict, handing each finding to `emit` as soon as it is made, in
    /// the order the objects were added (workloads, then bindings).
    pub fn finish_each(self, policy: &CompiledPolicy, mut emit: impl FnMut(Finding, T)) {
        // The messages are assembled piece by piece: there is a finding per workload at worst.
        for w in self.workloads {
            let ns = w.resource.namespace.as_deref().unwrap_or("");
            let automount = w.service_account.as_ref().and_then(|sa| {
                let disabled = self
                    .sa_disabled
                    .get(ns)
                    .is_some_and(|set| set.contains(sa.as_ref()));
                if disabled {
                    return None;
                }
                let mut message = String::from(
                    "automountServiceAccountToken is disabled neither on the pod nor on ServiceAccount ",
                );
                if !ns.is_empty() {
                    message.push_str(ns);
                    message.push('/');
                }
                message.push_str(sa);
                Some(make_finding(
                    policy,
                    CheckId::SaAutomount,
                    CheckId::SaAutomount.def().standards,
                    w.resource.clone(),
                    None,
                    [w.sp, ".automountServiceAccountToken"].concat(),
                    message,
                ))
            });
            let netpol = w.labels.as_ref().and_then(|labels| {
                let covered = self
                    .netpols
                    .get(ns)
                    .is_some_and(|sels| sels.iter().any(|sel| sel.matches(labels)));
                if covered {
                    return None;
                }
                let mut message = String::from("no NetworkPolicy in ");
                if ns.is_empty() {
                    message.push_str("its namespace");
                } else {
                    message.push_str("namespace ");
                    message.push_str(ns);
                }
                message.push_str(" selects the pod (labels {");
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        message.push_str(", ");
                    }
                    for part in [k, "=", v] {
                        message.push_str(part);
                    }
                }
                message.push_str("})");
                Some(make_finding(
                    policy,
                    CheckId::NetpolMissing,
                    CheckId::NetpolMissing.def().standards,
                    w.resource.clone(),
                    None,
                    [w.mp, ".labels"].concat(),
                    message,
                ))
            });
            match (automount, netpol) {
                (Some(a), Some(n)) => {
                    emit(a, w.tag.clone());
                    emit(n, w.tag);
                }
                (Some(f), None) | (None, Some(f)) => emit(f, w.tag),
                (None, None) => {}
            }
        }
        for b in self.bindings {
            if self.admin_roles.contains(&b.role) {
                let (kind, _, name) = &b.role;
                emit(
                    make_finding(
                        policy,
                        CheckId::RbacClusterAdmin,
                        b.standards,
                        b.resource,
                        None,
                        "roleRef.name".to_owned(),
                        format!(
                            "binds {kind} {name}, which grants * on * in * (cluster-admin equivalent), to {}",
                            b.subjects
                        ),
                    ),
                    b.tag,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(json: serde_json::Value) -> Selector {
        Selector::parse(json.as_object())
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        Labels::new(Some(&map))
    }

    #[test]
    fn labels_encoding() {
        let l = labels(&[("b", ""), ("a", "1")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "")]);
        assert_eq!(l.get("b"), Some(""));
        assert_eq!(l.get("c"), None);
        assert_eq!(labels(&[]).iter().count(), 0);
    }

    #[test]
    fn selector_semantics() {
        let app = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel(serde_json::json!({})).matches(&app));
        assert!(Selector::parse(None).matches(&app));
        assert!(sel(serde_json::json!({"matchLabels": {"app": "web"}})).matches(&app));
        assert!(!sel(serde_json::json!({"matchLabels": {"app": "db"}})).matches(&app));
        let expr = |op: &str, values: &[&str]| {
            sel(
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}),
            )
        };
        assert!(expr("In", &["front", "back"]).matches(&app));
        assert!(!expr("In", &["back"]).matches(&app));
        assert!(expr("NotIn", &["back"]).matches(&app));
        assert!(!expr("NotIn", &["front"]).matches(&app));
        assert!(expr("NotIn", &["x"]).matches(&labels(&[])));
        assert!(expr("Exists", &[]).matches(&app));
        assert!(!expr("DoesNotExist", &[]).matches(&app));
        assert!(expr("DoesNotExist", &[]).matches(&labels(&[("app", "web")])));
        assert!(!expr("Bogus", &[]).matches(&app));
        assert!(!expr("In", &[]).matches(&app));
    }
}
