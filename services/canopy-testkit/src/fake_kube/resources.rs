//! The resource types the fake API server serves (built-in kinds plus any kind a fixture brings)
//! and the discovery documents describing them.

use serde_json::{Value, json};

/// Kubernetes version the fake server reports.
pub(crate) const GIT_VERSION: &str = "v1.34.1";

/// One served resource type.
#[derive(Clone, Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub subresources: Vec<String>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// The `APIResource` entries for this type and its subresources.
    fn api_resources(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": self.short_names,
            "storageVersionHash": storage_hash(&self.plural),
        })];
        for sub in &self.subresources {
            let (kind, verbs, group, version) = match sub.as_str() {
                "scale" => (
                    "Scale",
                    json!(["get", "patch", "update"]),
                    Some("autoscaling"),
                    Some("v1"),
                ),
                "log" => ("Pod", json!(["get"]), None, None),
                _ => (
                    self.kind.as_str(),
                    json!(["get", "patch", "update"]),
                    None,
                    None,
                ),
            };
            let mut entry = json!({
                "name": format!("{}/{sub}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let (Some(g), Some(v)) = (group, version) {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            out.push(entry);
        }
        out
    }
}

/// (group, version, kind, plural, namespaced, short names, subresources)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTIN: &[Builtin] = &[
    (
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        &["status"],
    ),
    ("", "v1", "Node", "nodes", false, &["no"], &["status"]),
    ("", "v1", "Pod", "pods", true, &["po"], &["status", "log"]),
    ("", "v1", "Service", "services", true, &["svc"], &["status"]),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        &[],
    ),
    ("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]),
    ("", "v1", "Secret", "secrets", true, &[], &[]),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        &["status"],
    ),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        &["status"],
    ),
    ("", "v1", "Endpoints", "endpoints", true, &["ep"], &[]),
    ("", "v1", "Event", "events", true, &["ev"], &[]),
    (
        "",
        "v1",
        "LimitRange",
        "limitranges",
        true,
        &["limits"],
        &[],
    ),
    (
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
        &["status"],
    ),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        &["status"],
    ),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        &[],
    ),
    ("batch", "v1", "Job", "jobs", true, &[], &["status"]),
    (
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        true,
        &["cj"],
        &["status"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        &["status"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
        &[],
        &[],
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        &[],
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        &["status"],
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
        &["status"],
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        &[],
    ),
];

/// All served types; index = type id used by the store.
#[derive(Debug)]
pub(crate) struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    pub fn builtin() -> Self {
        let types = BUILTIN
            .iter()
            .map(
                |(group, version, kind, plural, namespaced, short, subs)| ResourceType {
                    group: (*group).into(),
                    version: (*version).into(),
                    kind: (*kind).into(),
                    plural: (*plural).into(),
                    namespaced: *namespaced,
                    short_names: short.iter().map(|s| (*s).to_string()).collect(),
                    subresources: subs.iter().map(|s| (*s).to_string()).collect(),
                },
            )
            .collect();
        Self { types }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn get(&self, id: usize) -> Option<&ResourceType> {
        self.types.get(id)
    }

    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        let (group, version) = split_api_version(api_version);
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.kind == kind)
    }

    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type for `api_version`/`kind`, registering an unknown kind (a CRD in a fixture) with
    /// a guessed plural and the scope its first object shows.
    pub fn ensure(&mut self, api_version: &str, kind: &str, namespaced: bool) -> usize {
        if let Some(id) = self.by_kind(api_version, kind) {
            return id;
        }
        let (group, version) = split_api_version(api_version);
        self.types.push(ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: pluralize(kind),
            namespaced,
            short_names: Vec::new(),
            subresources: vec!["status".into()],
        });
        self.types.len() - 1
    }

    /// Groups other than core, with their versions, in first-seen order.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) if !versions.contains(&t.version) => {
                    versions.push(t.version.clone())
                }
                Some(_) => {}
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        groups
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    // === discovery documents ===

    /// `GET /api` (`APIVersions`).
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
        })
    }

    /// `GET /apis` (`APIGroupList`).
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(g, vs)| group_json(&g, &vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>` (`APIGroup`).
    pub fn group(&self, group: &str) -> Option<Value> {
        let (g, vs) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let mut doc = group_json(&g, &vs);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>` (`APIResourceList`).
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let resources: Vec<Value> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(ResourceType::api_resources)
            .collect();
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    /// Aggregated discovery (`APIGroupDiscoveryList`, apidiscovery.k8s.io/v2) for the core group
    /// (`core = true`, served at `/api`) or every other group (`/apis`).
    pub fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".into()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|version| {
                        let resources: Vec<Value> = self
                            .types
                            .iter()
                            .filter(|t| &t.group == group && &t.version == version)
                            .map(aggregated_resource)
                            .collect();
                        json!({"version": version, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                let mut metadata = json!({"creationTimestamp": null});
                if !group.is_empty() {
                    metadata["name"] = json!(group);
                }
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

fn aggregated_resource(t: &ResourceType) -> Value {
    let subresources: Vec<Value> = t
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, kind) = match sub.as_str() {
                "scale" => ("autoscaling", "v1", "Scale"),
                _ => (t.group.as_str(), t.version.as_str(), t.kind.as_str()),
            };
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": if sub == "log" { json!(["get"]) } else { json!(["get", "patch", "update"]) },
            })
        })
        .collect();
    json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular(),
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": t.short_names,
        "subresources": subresources,
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// English plural the way Kubernetes lower-cases CRD kinds; the metrics API's kinds are served
/// under the names of what they measure (`metrics.k8s.io/v1beta1` `pods`, `nodes`).
fn pluralize(kind: &str) -> String {
    match kind {
        "PodMetrics" => return "pods".to_owned(),
        "NodeMetrics" => return "nodes".to_owned(),
        _ => {}
    }
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// A stable short hash shaped like the API server's `storageVersionHash`.
fn storage_hash(plural: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in plural.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..11)
        .map(|i| char::from(alphabet[usize::try_from((h >> (i * 5)) & 63).unwrap_or(0)]))
        .collect::<String>()
        + "="
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(pluralize("Widget"), "widgets");
        assert_eq!(pluralize("Policy"), "policies");
        assert_eq!(pluralize("Gateway"), "gateways");
        assert_eq!(pluralize("Ingress"), "ingresses");
    }

    #[test]
    fn discovery_lists_every_builtin_group() {
        let r = Registry::builtin();
        let names: Vec<String> = r.group_list()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect();
        for g in [
            "apps",
            "batch",
            "networking.k8s.io",
            "rbac.authorization.k8s.io",
            "policy",
            "autoscaling",
            "storage.k8s.io",
        ] {
            assert!(names.contains(&g.to_string()), "{g}");
        }
        let core = r.resource_list("", "v1").unwrap();
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "pods/log")
        );
        assert!(r.resource_list("apps", "v2").is_none());
    }
}
