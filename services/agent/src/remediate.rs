//! Remediation commands against the Kubernetes API: rollout restart (the pod template's
//! `kubectl.kubernetes.io/restartedAt` annotation, as `kubectl rollout restart` sets it), delete
//! a pod, cordon a node (`spec.unschedulable`), scale a workload (its `scale` subresource).

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;
use thiserror::Error;

use canopy_kit::proto::event::v1::{CommandKind, WorkloadRef, command_params::Params};

/// Why a remediation was not carried out.
#[derive(Debug, Error)]
pub enum RemediateError {
    /// The command's parameters do not describe something this playbook acts on.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Kubernetes(String),
}

impl RemediateError {
    /// The machine-readable reason of `CommandFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_owned(),
        version: "v1".to_owned(),
        api_version: if group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{group}/v1")
        },
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

fn workload(w: &WorkloadRef, scalable_only: bool) -> Result<ApiResource, RemediateError> {
    let plural = match w.kind.as_str() {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" if !scalable_only => "daemonsets",
        other => {
            return Err(RemediateError::Invalid(format!(
                "cannot act on a {other:?} (Deployment, StatefulSet{} only)",
                if scalable_only { "" } else { ", DaemonSet" }
            )));
        }
    };
    if w.namespace.is_empty() || w.name.is_empty() {
        return Err(RemediateError::Invalid(
            "the workload's namespace and name are required".into(),
        ));
    }
    Ok(resource("apps", &w.kind, plural))
}

fn kube_error(what: &str) -> impl FnOnce(kube::Error) -> RemediateError + '_ {
    move |e| RemediateError::Kubernetes(format!("failed to {what}: {e}"))
}

/// Carries out one remediation command; `Ok` holds what was done, for people.
///
/// # Errors
/// Invalid parameters, or the Kubernetes API refusing or failing the call.
pub async fn execute(
    kube: &kube::Client,
    kind: CommandKind,
    params: Option<&Params>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, RemediateError> {
    let pp = PatchParams::default();
    match (kind, params) {
        (CommandKind::RolloutRestart, Some(Params::RolloutRestart(w))) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(kube.clone(), &w.namespace, &workload(w, false)?);
            let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": at}}}}});
            api.patch(&w.name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(kube_error("patch the pod template"))?;
            Ok(format!(
                "restarted {} {}/{} (restartedAt {at})",
                w.kind, w.namespace, w.name
            ))
        }
        (CommandKind::DeletePod, Some(Params::DeletePod(p))) => {
            if p.namespace.is_empty() || p.name.is_empty() {
                return Err(RemediateError::Invalid(
                    "the pod's namespace and name are required".into(),
                ));
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(kube.clone(), &p.namespace, &resource("", "Pod", "pods"));
            api.delete(&p.name, &DeleteParams::default())
                .await
                .map_err(kube_error("delete the pod"))?;
            Ok(format!("deleted pod {}/{}", p.namespace, p.name))
        }
        (CommandKind::CordonNode, Some(Params::CordonNode(n))) => {
            if n.name.is_empty() {
                return Err(RemediateError::Invalid(
                    "the node's name is required".into(),
                ));
            }
            let api: Api<DynamicObject> =
                Api::all_with(kube.clone(), &resource("", "Node", "nodes"));
            api.patch(
                &n.name,
                &pp,
                &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
            )
            .await
            .map_err(kube_error("cordon the node"))?;
            Ok(format!("cordoned node {}", n.name))
        }
        (CommandKind::ScaleWorkload, Some(Params::ScaleWorkload(s))) => {
            let w = s
                .workload
                .as_ref()
                .ok_or_else(|| RemediateError::Invalid("the workload is required".into()))?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(kube.clone(), &w.namespace, &workload(w, true)?);
            api.patch_subresource(
                "scale",
                &w.name,
                &pp,
                &Patch::Merge(&json!({"spec": {"replicas": s.replicas}})),
            )
            .await
            .map_err(kube_error("scale the workload"))?;
            Ok(format!(
                "scaled {} {}/{} to {} replicas",
                w.kind, w.namespace, w.name, s.replicas
            ))
        }
        (kind, _) => Err(RemediateError::Invalid(format!(
            "{} is not a remediation, or its parameters are missing",
            canopy_kit::envelope::command_kind_token(kind as i32)
        ))),
    }
}
