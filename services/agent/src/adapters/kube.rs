//! Kubernetes API access with kube-rs: the client, the inventoried kinds, paged lists and cheap
//! counts.

use anyhow::Context as _;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectList};
use serde_json::Value;

/// One inventoried kind.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

/// What an inventory snapshot lists, in this order.
pub const KINDS: &[Kind] = &[
    kind("", "v1", "Namespace", "namespaces"),
    kind("", "v1", "Node", "nodes"),
    kind("", "v1", "Pod", "pods"),
    kind("apps", "v1", "Deployment", "deployments"),
    kind("apps", "v1", "StatefulSet", "statefulsets"),
    kind("apps", "v1", "DaemonSet", "daemonsets"),
    kind("apps", "v1", "ReplicaSet", "replicasets"),
    kind("batch", "v1", "Job", "jobs"),
    kind("batch", "v1", "CronJob", "cronjobs"),
    kind("", "v1", "Service", "services"),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses"),
    kind(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    kind("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
    kind("", "v1", "ServiceAccount", "serviceaccounts"),
    kind("", "v1", "ConfigMap", "configmaps"),
    kind("", "v1", "Secret", "secrets"),
];

/// A client for `api_url` (plain http allowed), else in-cluster config, else kubeconfig.
///
/// # Errors
/// When the URL is invalid or no configuration can be found.
pub async fn client(api_url: Option<&str>) -> anyhow::Result<kube::Client> {
    let config = match api_url {
        Some(url) => kube::Config::new(
            url.parse()
                .with_context(|| format!("invalid --api-url {url:?}"))?,
        ),
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found (in-cluster or kubeconfig); set --api-url",
        )?,
    };
    kube::Client::try_from(config).context("failed to build the Kubernetes client")
}

/// The API server's `gitVersion`, e.g. `v1.34.1`.
///
/// # Errors
/// When the API server does not answer.
pub async fn version(client: &kube::Client) -> anyhow::Result<String> {
    Ok(client
        .apiserver_version()
        .await
        .context("failed to read the Kubernetes version")?
        .git_version)
}

/// Pages through every object of `kind`, cluster-wide, `page_size` at a time.
pub struct Pager {
    api: Api<DynamicObject>,
    page_size: u32,
    next: Option<String>,
    done: bool,
}

impl Pager {
    pub fn new(client: &kube::Client, kind: &Kind, page_size: u32) -> Self {
        Self {
            api: Api::all_with(client.clone(), &kind.resource()),
            page_size,
            next: None,
            done: false,
        }
    }

    /// Pages through the objects of `kind` in one namespace.
    pub fn namespaced(client: &kube::Client, kind: &Kind, namespace: &str, page_size: u32) -> Self {
        Self {
            api: Api::namespaced_with(client.clone(), namespace, &kind.resource()),
            page_size,
            next: None,
            done: false,
        }
    }

    /// The next page as JSON objects, or `None` after the last.
    ///
    /// # Errors
    /// When the list call fails.
    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done {
            return Ok(None);
        }
        let mut params = ListParams::default().limit(self.page_size);
        if let Some(token) = &self.next {
            params = params.continue_token(token);
        }
        let list: ObjectList<DynamicObject> = self.api.list(&params).await?;
        self.next = list.metadata.continue_.filter(|t| !t.is_empty());
        self.done = self.next.is_none();
        let items = list
            .items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .context("failed to re-encode a listed object")?;
        Ok(Some(items))
    }
}

/// How many objects of `kind` exist: one list call with `limit=1` and its
/// `remainingItemCount`; paging through when the server does not tell.
///
/// # Errors
/// When a list call fails.
pub async fn count(client: &kube::Client, kind: &Kind) -> anyhow::Result<u64> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
    let first = api.list(&ListParams::default().limit(1)).await?;
    let has_more = first
        .metadata
        .continue_
        .as_deref()
        .is_some_and(|t| !t.is_empty());
    if !has_more {
        return Ok(first.items.len() as u64);
    }
    if let Some(remaining) = first.metadata.remaining_item_count {
        return Ok(first.items.len() as u64 + u64::try_from(remaining).unwrap_or(0));
    }
    let mut pager = Pager::new(client, kind, 500);
    let mut n = 0;
    while let Some(page) = pager.next_page().await? {
        n += page.len() as u64;
    }
    Ok(n)
}

/// The kind named `name` of [`KINDS`].
pub fn kind_named(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == name)
}

/// Whether a failed call is worth repeating soon: transport failures, timeouts, 429 and 5xx
/// are; a refusal (403, 404) or an expired continue token (410) is not.
pub fn retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// The HTTP code when the API refused a kind for good — not permitted to this agent (403) or
/// not served by this cluster (404) — rather than failing for now.
pub fn refused(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16) -> anyhow::Error {
        anyhow::Error::from(kube::Error::Api(Box::new(Status {
            code,
            ..Status::failure("denied", "Forbidden")
        })))
    }

    #[test]
    fn forbidden_and_unserved_kinds_are_refusals_other_failures_are_not() {
        assert_eq!(refused(&api_error(403)), Some(403));
        assert_eq!(refused(&api_error(404)), Some(404));
        assert_eq!(refused(&api_error(500)), None);
        assert_eq!(
            refused(&api_error(403).context("failed to list secrets")),
            Some(403)
        );
        assert_eq!(refused(&anyhow::anyhow!("connection refused")), None);
    }

    #[test]
    fn server_and_transport_failures_are_retried_refusals_and_expired_tokens_are_not() {
        assert!(retryable(&api_error(500)));
        assert!(retryable(&api_error(503)));
        assert!(retryable(&api_error(429)));
        assert!(retryable(&anyhow::anyhow!("connection refused")));
        assert!(!retryable(&api_error(403)));
        assert!(!retryable(&api_error(410)));
        assert!(!retryable(
            &api_error(404).context("failed to list networkpolicies")
        ));
    }
}
