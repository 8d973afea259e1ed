//! Per-object checks on non-workload kinds: ConfigMap (CM-SECRET), Ingress (INGRESS-TLS) and
//! Role/ClusterRole rules (RBAC-WILDCARD, RBAC-EXEC-ATTACH, RBAC-SECRETS).

use serde_json::Value;

use super::patterns::{credential_in_value, secret_like_name};
use super::{Obj, Sink, arr, key_path, obj, opt_obj, string};
use crate::catalogue::{CheckId, std_refs};

/// CM-SECRET: keys named like credentials with a value, or values that contain a credential.
pub(crate) fn config_map(o: &Obj, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::CmSecret) {
        return;
    }
    let Some(data) = obj(o, "data") else { return };
    for (key, value) in data {
        let Some(v) = value.as_str() else { continue };
        let found = credential_in_value(v).map(|what| format!("key {key:?} contains {what}"));
        let found = found.or_else(|| {
            (secret_like_name(key) && !v.trim().is_empty())
                .then(|| format!("key {key:?} looks like a credential"))
        });
        if let Some(message) = found {
            s.emit(CheckId::CmSecret, None, key_path("data", key), message);
        }
    }
}

/// INGRESS-TLS: `spec.tls` missing or empty.
pub(crate) fn ingress(o: &Obj, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::IngressTls) {
        return;
    }
    let has_tls = obj(o, "spec").is_some_and(|spec| !arr(spec, "tls").is_empty());
    if !has_tls {
        s.emit(
            CheckId::IngressTls,
            None,
            "spec.tls".to_owned(),
            "the Ingress serves plain HTTP (no spec.tls)".to_owned(),
        );
    }
}

/// Built-in roles (the `system:` ones and those labelled `kubernetes.io/bootstrapping:
/// rbac-defaults`, i.e. cluster-admin, admin, edit, view) are part of Kubernetes itself: the
/// findings go to whoever binds them, not to their definition.
pub(crate) fn builtin_role(name: &str, meta: Option<&Obj>) -> bool {
    name.starts_with("system:")
        || opt_obj(meta, "labels")
            .and_then(|l| string(l, "kubernetes.io/bootstrapping"))
            .is_some_and(|v| v == "rbac-defaults")
}

fn strings<'a>(rule: &'a Obj, key: &str) -> impl Iterator<Item = (usize, &'a str)> + use<'a> {
    arr(rule, key)
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_str().map(|s| (i, s)))
}

fn has(rule: &Obj, key: &str, want: &[&str]) -> bool {
    strings(rule, key).any(|(_, v)| want.contains(&v))
}

/// Does this rule grant `*` verbs on `*` resources in `*` API groups (cluster-admin
/// equivalent)?
pub(crate) fn admin_rule(rule: &Obj) -> bool {
    has(rule, "apiGroups", &["*"]) && has(rule, "resources", &["*"]) && has(rule, "verbs", &["*"])
}

/// RBAC-WILDCARD, RBAC-EXEC-ATTACH and RBAC-SECRETS on the rules of a Role or ClusterRole.
pub(crate) fn role(o: &Obj, kind: &str, meta: Option<&Obj>, s: &mut Sink<'_, '_>) {
    let name = meta.and_then(|m| string(m, "name")).unwrap_or("");
    if builtin_role(name, meta) {
        return;
    }
    let wildcard = s.on(CheckId::RbacWildcard);
    let exec = s.on(CheckId::RbacExecAttach);
    let secrets = s.on(CheckId::RbacSecrets);
    for (i, rule) in arr(o, "rules").iter().enumerate() {
        let Some(rule) = rule.as_object() else {
            continue;
        };
        if wildcard {
            for field in ["apiGroups", "resources", "verbs"] {
                if has(rule, field, &["*"]) {
                    s.emit(
                        CheckId::RbacWildcard,
                        None,
                        format!("rules[{i}].{field}"),
                        format!("rule {i} grants \"*\" in {field}"),
                    );
                }
            }
        }
        // pods/exec, pods/attach and secrets live in the core ("") API group.
        let core = has(rule, "apiGroups", &["", "*"]);
        if !core {
            continue;
        }
        if exec && has(rule, "verbs", &["get", "create", "*"]) {
            let refs = if kind == "ClusterRole" {
                std_refs::CR_EXEC
            } else {
                std_refs::R_EXEC
            };
            for (j, r) in strings(rule, "resources") {
                if r == "pods/exec" || r == "pods/attach" || r == "pods/*" {
                    s.emit_with(
                        CheckId::RbacExecAttach,
                        refs,
                        None,
                        format!("rules[{i}].resources[{j}]"),
                        format!("rule {i} allows {r} (exec/attach into pods)"),
                    );
                }
            }
        }
        let scoped = rule
            .get("resourceNames")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty());
        if secrets && !scoped && has(rule, "verbs", &["get", "list", "watch", "*"]) {
            for (j, r) in strings(rule, "resources") {
                if r == "secrets" {
                    s.emit(
                        CheckId::RbacSecrets,
                        None,
                        format!("rules[{i}].resources[{j}]"),
                        format!("rule {i} can read every secret in its scope"),
                    );
                }
            }
        }
    }
}
