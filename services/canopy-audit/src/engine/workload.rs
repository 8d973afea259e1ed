//! Per-object checks on pod specs: Pods and the pod templates of every workload kind.
//!
//! The `pss:` checks implement the upstream `k8s.io/pod-security-admission` policy package
//! (`staging/src/k8s.io/pod-security-admission/policy/check_*.go` in kubernetes/kubernetes) at
//! policy version [`crate::PSS_POLICY_VERSION`]; each function cites the file it follows. Like
//! upstream's `visitContainers`, container-level checks visit `initContainers`, `containers` and
//! `ephemeralContainers` alike (native sidecars get no special treatment upstream either).
//!
//! Speed: the pod spec, every container and every securityContext are read in one pass over
//! their map entries into [`PodView`] / [`Ctr`] / [`SecCtx`]; the checks then read struct fields
//! instead of searching maps again, and build strings only for findings.

use serde_json::Value;

use super::patterns::{image_parts, runtime_socket, secret_like_name};
use super::{Obj, Sink, key_path};
use crate::catalogue::{CheckId, std_refs};

fn as_obj(v: &Value) -> Option<&Obj> {
    v.as_object()
}

fn as_arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The security-relevant fields of a pod- or container-level securityContext.
#[derive(Default)]
pub(crate) struct SecCtx<'a> {
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<&'a Value>,
    pub read_only_root_filesystem: Option<bool>,
    pub capabilities: Option<&'a Obj>,
    pub seccomp_profile: Option<&'a Obj>,
    pub app_armor_profile: Option<&'a Obj>,
    pub se_linux_options: Option<&'a Obj>,
    pub proc_mount: Option<&'a str>,
    pub host_process: Option<bool>,
    /// Pod level only.
    pub sysctls: &'a [Value],
}

impl<'a> SecCtx<'a> {
    fn read(sc: Option<&'a Obj>) -> SecCtx<'a> {
        let mut s = SecCtx::default();
        let Some(sc) = sc else { return s };
        for (k, v) in sc {
            match k.as_str() {
                "privileged" => s.privileged = v.as_bool(),
                "allowPrivilegeEscalation" => s.allow_privilege_escalation = v.as_bool(),
                "runAsNonRoot" => s.run_as_non_root = v.as_bool(),
                "runAsUser" => s.run_as_user = Some(v),
                "readOnlyRootFilesystem" => s.read_only_root_filesystem = v.as_bool(),
                "capabilities" => s.capabilities = as_obj(v),
                "seccompProfile" => s.seccomp_profile = as_obj(v),
                "appArmorProfile" => s.app_armor_profile = as_obj(v),
                "seLinuxOptions" => s.se_linux_options = as_obj(v),
                "procMount" => s.proc_mount = v.as_str(),
                "windowsOptions" => {
                    s.host_process = v.get("hostProcess").and_then(Value::as_bool);
                }
                "sysctls" => s.sysctls = as_arr(v),
                _ => {}
            }
        }
        s
    }

    fn runs_as_uid_zero(&self) -> bool {
        self.run_as_user.and_then(Value::as_i64) == Some(0)
    }
}

/// One container of a pod spec.
pub(crate) struct Ctr<'a> {
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub list: &'static str,
    pub idx: usize,
    pub name: &'a str,
    pub image: Option<&'a str>,
    pub image_pull_policy: Option<&'a str>,
    pub ports: &'a [Value],
    pub env: &'a [Value],
    pub resources: Option<&'a Obj>,
    pub readiness_probe: Option<&'a Value>,
    pub liveness_probe: Option<&'a Value>,
    pub startup_probe: Option<&'a Value>,
    pub lifecycle: Option<&'a Obj>,
    pub volume_mounts: &'a [Value],
    pub sc: SecCtx<'a>,
}

impl<'a> Ctr<'a> {
    fn read(list: &'static str, idx: usize, c: &'a Obj) -> Ctr<'a> {
        let mut ctr = Ctr {
            list,
            idx,
            name: "",
            image: None,
            image_pull_policy: None,
            ports: &[],
            env: &[],
            resources: None,
            readiness_probe: None,
            liveness_probe: None,
            startup_probe: None,
            lifecycle: None,
            volume_mounts: &[],
            sc: SecCtx::default(),
        };
        for (k, v) in c {
            match k.as_str() {
                "name" => ctr.name = v.as_str().unwrap_or(""),
                "image" => ctr.image = v.as_str(),
                "imagePullPolicy" => ctr.image_pull_policy = v.as_str(),
                "ports" => ctr.ports = as_arr(v),
                "env" => ctr.env = as_arr(v),
                "resources" => ctr.resources = as_obj(v),
                "readinessProbe" => ctr.readiness_probe = Some(v).filter(|v| !v.is_null()),
                "livenessProbe" => ctr.liveness_probe = Some(v).filter(|v| !v.is_null()),
                "startupProbe" => ctr.startup_probe = Some(v).filter(|v| !v.is_null()),
                "lifecycle" => ctr.lifecycle = as_obj(v),
                "volumeMounts" => ctr.volume_mounts = as_arr(v),
                "securityContext" => ctr.sc = SecCtx::read(as_obj(v)),
                _ => {}
            }
        }
        ctr
    }

    /// `{sp}.{list}[{idx}]{suffix}`, built without the formatting machinery (every container
    /// finding has one).
    fn path(&self, sp: &str, suffix: &str) -> String {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut n = self.idx;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let idx = std::str::from_utf8(&digits[start..]).unwrap_or_default();
        let mut p =
            String::with_capacity(sp.len() + self.list.len() + idx.len() + suffix.len() + 3);
        for part in [sp, ".", self.list, "[", idx, "]", suffix] {
            p.push_str(part);
        }
        p
    }

    fn is_ephemeral(&self) -> bool {
        self.list == "ephemeralContainers"
    }
}

/// A pod spec, read once, and where it sits in its object.
pub(crate) struct PodView<'a> {
    /// Path of the pod spec: `spec`, `spec.template.spec`, `spec.jobTemplate.spec.template.spec`
    /// or (PodTemplate) `template.spec`.
    pub sp: &'static str,
    /// The pod (template) metadata.
    pub meta: Option<&'a Obj>,
    /// Path of the pod (template) metadata.
    pub mp: &'static str,
    /// `spec.os.name == "windows"`: upstream exempts these pods from the Linux-only Restricted
    /// checks (allowPrivilegeEscalation, capabilities_restricted, seccompProfile_restricted, 1.25+).
    pub windows: bool,
    /// `spec.hostUsers == false`: upstream relaxes runAsNonRoot, runAsUser (Restricted) and
    /// procMount (Baseline) for pods in a user namespace (policy 1.35+, `policy/helpers.go`
    /// `relaxPolicyForUserNamespacePod`).
    pub user_ns: bool,
    pub host_pid: Option<bool>,
    pub host_ipc: Option<bool>,
    pub host_network: Option<bool>,
    pub automount_token: Option<bool>,
    pub service_account: Option<&'a str>,
    pub restart_policy: Option<&'a str>,
    pub volumes: &'a [Value],
    pub psc: SecCtx<'a>,
    pub containers: Vec<Ctr<'a>>,
}

impl<'a> PodView<'a> {
    /// Finds and reads the pod spec of a Pod or of a workload's pod template.
    pub fn locate(o: &'a Obj, kind: &str, meta: Option<&'a Obj>) -> Option<PodView<'a>> {
        let (spec, sp, pmeta, mp) = match kind {
            "Pod" => (o.get("spec").and_then(as_obj)?, "spec", meta, "metadata"),
            // A PodTemplate holds its template at the top level, beside its metadata.
            "PodTemplate" => {
                let t = o.get("template").and_then(as_obj)?;
                (
                    t.get("spec").and_then(as_obj)?,
                    "template.spec",
                    t.get("metadata").and_then(as_obj),
                    "template.metadata",
                )
            }
            "CronJob" => {
                let t = o
                    .get("spec")?
                    .get("jobTemplate")?
                    .get("spec")?
                    .get("template")
                    .and_then(as_obj)?;
                (
                    t.get("spec").and_then(as_obj)?,
                    "spec.jobTemplate.spec.template.spec",
                    t.get("metadata").and_then(as_obj),
                    "spec.jobTemplate.spec.template.metadata",
                )
            }
            _ => {
                let t = o.get("spec")?.get("template").and_then(as_obj)?;
                (
                    t.get("spec").and_then(as_obj)?,
                    "spec.template.spec",
                    t.get("metadata").and_then(as_obj),
                    "spec.template.metadata",
                )
            }
        };
        let mut pod = PodView {
            sp,
            meta: pmeta,
            mp,
            windows: false,
            user_ns: false,
            host_pid: None,
            host_ipc: None,
            host_network: None,
            automount_token: None,
            service_account: None,
            restart_policy: None,
            volumes: &[],
            psc: SecCtx::default(),
            containers: Vec::new(),
        };
        let mut lists: [&[Value]; 3] = [&[], &[], &[]];
        let mut legacy_sa = None;
        for (k, v) in spec {
            match k.as_str() {
                "initContainers" => lists[0] = as_arr(v),
                "containers" => lists[1] = as_arr(v),
                "ephemeralContainers" => lists[2] = as_arr(v),
                "hostPID" => pod.host_pid = v.as_bool(),
                "hostIPC" => pod.host_ipc = v.as_bool(),
                "hostNetwork" => pod.host_network = v.as_bool(),
                "hostUsers" => pod.user_ns = v.as_bool() == Some(false),
                "os" => {
                    pod.windows = v.get("name").and_then(Value::as_str) == Some("windows");
                }
                "automountServiceAccountToken" => pod.automount_token = v.as_bool(),
                "serviceAccountName" => pod.service_account = v.as_str().filter(|s| !s.is_empty()),
                "serviceAccount" => legacy_sa = v.as_str().filter(|s| !s.is_empty()),
                "restartPolicy" => pod.restart_policy = v.as_str(),
                "volumes" => pod.volumes = as_arr(v),
                "securityContext" => pod.psc = SecCtx::read(as_obj(v)),
                _ => {}
            }
        }
        pod.service_account = pod.service_account.or(legacy_sa);
        let n = lists.iter().map(|l| l.len()).sum();
        pod.containers.reserve_exact(n);
        for (list, items) in ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .zip(lists)
        {
            for (idx, c) in items.iter().enumerate() {
                if let Some(c) = c.as_object() {
                    pod.containers.push(Ctr::read(list, idx, c));
                }
            }
        }
        Some(pod)
    }

    fn annotations(&self) -> Option<&'a Obj> {
        self.meta
            .and_then(|m| m.get("annotations"))
            .and_then(as_obj)
    }

    fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations()
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    fn annotation_path(&self, key: &str) -> String {
        key_path(&format!("{}.annotations", self.mp), key)
    }
}

/// Runs every per-object workload check.
pub(crate) fn audit(pod: &PodView<'_>, kind: &str, meta: Option<&Obj>, s: &mut Sink<'_, '_>) {
    host_namespaces(pod, s);
    host_ports(pod, s);
    volumes(pod, s);
    sysctls(pod, s);
    windows_host_process(pod, s);
    probe_host(pod, s);
    privileged(pod, s);
    privilege_escalation(pod, s);
    run_as_non_root(pod, s);
    run_as_user(pod, s);
    read_only_root_fs(pod, s);
    capabilities(pod, s);
    seccomp(pod, s);
    apparmor(pod, s);
    selinux(pod, s);
    proc_mount(pod, s);
    images(pod, s);
    resources(pod, s);
    probes(pod, kind, s);
    naked_pod(kind, meta, s);
    env_secrets(pod, s);
}

/// `check_hostNamespaces.go` (baseline `hostNamespaces`): hostNetwork, hostPID, hostIPC must be
/// undefined or false.
fn host_namespaces(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    for (key, value, id, what) in [
        (
            "hostPID",
            pod.host_pid,
            CheckId::HostPid,
            "the host PID namespace",
        ),
        (
            "hostIPC",
            pod.host_ipc,
            CheckId::HostIpc,
            "the host IPC namespace",
        ),
        (
            "hostNetwork",
            pod.host_network,
            CheckId::HostNet,
            "the host network namespace",
        ),
    ] {
        if value == Some(true) && s.on(id) {
            s.emit(
                id,
                None,
                format!("{}.{key}", pod.sp),
                format!("{key} is true: the pod shares {what}"),
            );
        }
    }
}

/// `check_hostPorts.go` (baseline `hostPorts`): `C[*].ports[*].hostPort` must be undefined or 0.
fn host_ports(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::HostPort) {
        return;
    }
    for c in &pod.containers {
        for (j, port) in c.ports.iter().enumerate() {
            let hp = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 {
                s.emit(
                    CheckId::HostPort,
                    Some(c.name),
                    c.path(pod.sp, &format!(".ports[{j}].hostPort")),
                    format!("container {:?} binds host port {hp}", c.name),
                );
            }
        }
    }
}

/// Volume source types the Restricted profile allows (`check_restrictedVolumes.go`; `image` was
/// added upstream in 1.33 by kubernetes#130394, patched into the 1.0 policy).
const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// HOSTPATH (`check_hostPathVolumes.go`, baseline `hostPathVolumes`), HOSTPATH-RW,
/// RUNTIME-SOCKET and VOLUME-TYPES (`check_restrictedVolumes.go`, restricted `restrictedVolumes`).
fn volumes(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    let restricted = s.on(CheckId::VolumeTypes);
    let mut host_path_volumes: Vec<&str> = Vec::new();
    for (i, v) in pod.volumes.iter().enumerate() {
        let Some(v) = v.as_object() else { continue };
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        for (key, source) in v {
            if key == "name" {
                continue;
            }
            if key == "hostPath" {
                host_path_volumes.push(name);
                let path = source.get("path").and_then(Value::as_str).unwrap_or("");
                if s.on(CheckId::Hostpath) {
                    s.emit(
                        CheckId::Hostpath,
                        None,
                        format!("{}.volumes[{i}].hostPath", pod.sp),
                        format!("volume {name:?} mounts host path {path:?}"),
                    );
                }
                if runtime_socket(path) && s.on(CheckId::RuntimeSocket) {
                    s.emit(
                        CheckId::RuntimeSocket,
                        None,
                        format!("{}.volumes[{i}].hostPath.path", pod.sp),
                        format!(
                            "volume {name:?} exposes the container runtime socket through host path {path:?}"
                        ),
                    );
                }
            }
            // A volume with no source at all is defaulted to emptyDir by the API server.
            if restricted && !RESTRICTED_VOLUME_TYPES.contains(&key.as_str()) {
                s.emit(
                    CheckId::VolumeTypes,
                    None,
                    format!("{}.volumes[{i}].{key}", pod.sp),
                    format!("volume {name:?} uses the restricted volume type {key}"),
                );
            }
        }
    }
    if host_path_volumes.is_empty() || !s.on(CheckId::HostpathRw) {
        return;
    }
    for c in &pod.containers {
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let Some(m) = m.as_object() else { continue };
            let vol = m.get("name").and_then(Value::as_str).unwrap_or("");
            let read_only = m.get("readOnly").and_then(Value::as_bool) == Some(true);
            if host_path_volumes.contains(&vol) && !read_only {
                s.emit(
                    CheckId::HostpathRw,
                    Some(c.name),
                    c.path(pod.sp, &format!(".volumeMounts[{j}].readOnly")),
                    format!(
                        "container {:?} mounts hostPath volume {vol:?} writable",
                        c.name
                    ),
                );
            }
        }
    }
}

/// The safe sysctls of `check_sysctls.go` (baseline `sysctls`): the union of
/// `sysctlsAllowedV1Dot0` … `V1Dot37` (1.27: ip_local_reserved_ports; 1.29: tcp_keepalive_*,
/// tcp_fin_timeout; 1.32: tcp_rmem, tcp_wmem; 1.37: tcp_slow_start_after_idle, tcp_notsent_lowat).
pub(crate) const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// `check_sysctls.go` (baseline `sysctls`): only `spec.securityContext.sysctls[*].name` (the API
/// has no container-level sysctls).
fn sysctls(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if pod.psc.sysctls.is_empty() || !s.on(CheckId::UnsafeSysctl) {
        return;
    }
    for (i, sysctl) in pod.psc.sysctls.iter().enumerate() {
        let name = sysctl.get("name").and_then(Value::as_str).unwrap_or("");
        if !SAFE_SYSCTLS.contains(&name) {
            s.emit(
                CheckId::UnsafeSysctl,
                None,
                format!("{}.securityContext.sysctls[{i}].name", pod.sp),
                format!("sysctl {name:?} is not in the safe set"),
            );
        }
    }
}

/// `check_windowsHostProcess.go` (baseline `windowsHostProcess`): pod- and container-level
/// `windowsOptions.hostProcess` must be undefined or false.
fn windows_host_process(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::WinHostprocess) {
        return;
    }
    if pod.psc.host_process == Some(true) {
        s.emit(
            CheckId::WinHostprocess,
            None,
            format!("{}.securityContext.windowsOptions.hostProcess", pod.sp),
            "the pod runs as a Windows HostProcess".to_owned(),
        );
    }
    for c in &pod.containers {
        if c.sc.host_process == Some(true) {
            s.emit(
                CheckId::WinHostprocess,
                Some(c.name),
                c.path(pod.sp, ".securityContext.windowsOptions.hostProcess"),
                format!("container {:?} runs as a Windows HostProcess", c.name),
            );
        }
    }
}

/// `check_hostProbesAndhostLifecycle.go` (baseline `hostProbesAndHostLifecycle`, 1.34+):
/// `.host` of liveness/readiness/startup probes and postStart/preStop handlers (httpGet and
/// tcpSocket) must be empty or undefined.
fn probe_host(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::ProbeHost) {
        return;
    }
    for c in &pod.containers {
        let lifecycle = |h: &str| c.lifecycle.and_then(|l| l.get(h));
        let handlers = [
            ("livenessProbe", c.liveness_probe),
            ("readinessProbe", c.readiness_probe),
            ("startupProbe", c.startup_probe),
            ("lifecycle.postStart", lifecycle("postStart")),
            ("lifecycle.preStop", lifecycle("preStop")),
        ];
        for (where_, handler) in handlers {
            let Some(handler) = handler else { continue };
            for action in ["httpGet", "tcpSocket"] {
                let host = handler
                    .get(action)
                    .and_then(|a| a.get("host"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !host.is_empty() {
                    s.emit(
                        CheckId::ProbeHost,
                        Some(c.name),
                        c.path(pod.sp, &format!(".{where_}.{action}.host")),
                        format!("container {:?} {where_} targets host {host:?}", c.name),
                    );
                }
            }
        }
    }
}

/// `check_privileged.go` (baseline `privileged`): `C[*].securityContext.privileged` must be
/// undefined or false.
fn privileged(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    for c in &pod.containers {
        if c.sc.privileged == Some(true) && s.on(CheckId::Privileged) {
            s.emit(
                CheckId::Privileged,
                Some(c.name),
                c.path(pod.sp, ".securityContext.privileged"),
                format!("container {:?} is privileged", c.name),
            );
        }
    }
}

/// `check_allowPrivilegeEscalation.go` (restricted `allowPrivilegeEscalation`, 1.25):
/// every container must set `allowPrivilegeEscalation: false`; Windows pods are exempt.
fn privilege_escalation(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if pod.windows || !s.on(CheckId::PrivEsc) {
        return;
    }
    for c in &pod.containers {
        let v = c.sc.allow_privilege_escalation;
        if v != Some(false) {
            let msg = match v {
                Some(true) => format!("container {:?} sets allowPrivilegeEscalation: true", c.name),
                _ => format!(
                    "container {:?} does not set allowPrivilegeEscalation: false",
                    c.name
                ),
            };
            s.emit(
                CheckId::PrivEsc,
                Some(c.name),
                c.path(pod.sp, ".securityContext.allowPrivilegeEscalation"),
                msg,
            );
        }
    }
}

/// `check_runAsNonRoot.go` (restricted `runAsNonRoot`, 1.35): the pod must not set
/// `runAsNonRoot: false`; a container must not set it false, and a container that does not set
/// it inherits the pod's value, which then must be true. Skipped when `hostUsers: false`.
fn run_as_non_root(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if pod.user_ns || !s.on(CheckId::RunAsRoot) {
        return;
    }
    let pod_value = pod.psc.run_as_non_root;
    if pod_value == Some(false) {
        s.emit(
            CheckId::RunAsRoot,
            None,
            format!("{}.securityContext.runAsNonRoot", pod.sp),
            "the pod sets runAsNonRoot: false".to_owned(),
        );
    }
    for c in &pod.containers {
        let msg = match (c.sc.run_as_non_root, pod_value) {
            (Some(true), _) => continue,
            (Some(false), _) => format!("container {:?} sets runAsNonRoot: false", c.name),
            // Inherits the pod's value; an explicit pod-level false is reported once above.
            (None, None) => format!(
                "neither the pod nor container {:?} sets runAsNonRoot: true",
                c.name
            ),
            (None, Some(_)) => continue,
        };
        s.emit(
            CheckId::RunAsRoot,
            Some(c.name),
            c.path(pod.sp, ".securityContext.runAsNonRoot"),
            msg,
        );
    }
}

/// `check_runAsUser.go` (restricted `runAsUser`, 1.35): `runAsUser` must not be 0 at pod or
/// container level. Skipped when `hostUsers: false`.
fn run_as_user(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if pod.user_ns || !s.on(CheckId::Uid0) {
        return;
    }
    if pod.psc.runs_as_uid_zero() {
        s.emit(
            CheckId::Uid0,
            None,
            format!("{}.securityContext.runAsUser", pod.sp),
            "the pod sets runAsUser: 0".to_owned(),
        );
    }
    for c in &pod.containers {
        if c.sc.runs_as_uid_zero() {
            s.emit(
                CheckId::Uid0,
                Some(c.name),
                c.path(pod.sp, ".securityContext.runAsUser"),
                format!("container {:?} sets runAsUser: 0", c.name),
            );
        }
    }
}

/// RO-ROOTFS (Polaris `notReadOnlyRootFilesystem`). Windows pods are exempt: the API rejects
/// `readOnlyRootFilesystem` when `spec.os.name` is windows.
fn read_only_root_fs(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if pod.windows || !s.on(CheckId::RoRootfs) {
        return;
    }
    for c in &pod.containers {
        if c.sc.read_only_root_filesystem != Some(true) {
            s.emit(
                CheckId::RoRootfs,
                Some(c.name),
                c.path(pod.sp, ".securityContext.readOnlyRootFilesystem"),
                format!("container {:?} has a writable root filesystem", c.name),
            );
        }
    }
}

/// The Baseline allowed `capabilities.add` set (`check_capabilities_baseline.go`,
/// `capabilities_allowed_1_0`), matched exactly as upstream does.
pub(crate) const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Capabilities Polaris (`dangerousCapabilities`) and Kubescape (C-0046) call dangerous.
const DANGEROUS_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_BOOT",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "PERFMON",
    "BPF",
    "SETPCAP",
];

fn dangerous_capability(cap: &str) -> bool {
    let bare = cap
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("CAP_"))
        .map_or(cap, |_| &cap[4..]);
    DANGEROUS_CAPABILITIES
        .iter()
        .any(|d| d.eq_ignore_ascii_case(bare))
}

/// DANGEROUS-CAPS; CAPS-BASELINE (`check_capabilities_baseline.go`, baseline
/// `capabilities_baseline`); CAPS-DROP-ALL (`check_capabilities_restricted.go`, restricted
/// `capabilities_restricted`, 1.25: must drop `ALL`, may add only `NET_BIND_SERVICE`; Windows
/// pods exempt).
fn capabilities(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    let dangerous = s.on(CheckId::DangerousCaps);
    let baseline = s.on(CheckId::CapsBaseline);
    let restricted = !pod.windows && s.on(CheckId::CapsDropAll);
    if !(dangerous || baseline || restricted) {
        return;
    }
    for c in &pod.containers {
        let caps = c.sc.capabilities;
        let add = caps
            .and_then(|caps| caps.get("add"))
            .map_or(&[][..], as_arr);
        for (k, cap) in add.iter().enumerate() {
            let Some(cap) = cap.as_str() else { continue };
            let path = || c.path(pod.sp, &format!(".securityContext.capabilities.add[{k}]"));
            if dangerous && dangerous_capability(cap) {
                s.emit(
                    CheckId::DangerousCaps,
                    Some(c.name),
                    path(),
                    format!("container {:?} adds the dangerous capability {cap}", c.name),
                );
            }
            if baseline && !BASELINE_CAPABILITIES.contains(&cap) {
                s.emit(
                    CheckId::CapsBaseline,
                    Some(c.name),
                    path(),
                    format!(
                        "container {:?} adds {cap}, outside the Baseline allowed set",
                        c.name
                    ),
                );
            }
            if restricted && cap != "NET_BIND_SERVICE" {
                s.emit(
                    CheckId::CapsDropAll,
                    Some(c.name),
                    path(),
                    format!(
                        "container {:?} adds {cap}; Restricted allows only NET_BIND_SERVICE",
                        c.name
                    ),
                );
            }
        }
        if restricted {
            let drops_all = caps
                .and_then(|caps| caps.get("drop"))
                .map_or(&[][..], as_arr)
                .iter()
                .any(|d| d.as_str() == Some("ALL"));
            if !drops_all {
                s.emit(
                    CheckId::CapsDropAll,
                    Some(c.name),
                    c.path(pod.sp, ".securityContext.capabilities.drop"),
                    format!("container {:?} does not drop ALL capabilities", c.name),
                );
            }
        }
    }
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Where a seccomp setting was read.
enum SeccompSource<'a> {
    /// The `seccompProfile` field.
    Field,
    /// The legacy alpha annotation with this key.
    Annotation(&'a str),
}

/// A seccomp setting.
struct Seccomp<'a> {
    valid: bool,
    value: &'a str,
    source: SeccompSource<'a>,
}

/// The seccomp profile from the field, or — when the field is unset — from the legacy alpha
/// annotation. The API server copies annotation values into the unset fields when it creates a
/// pod (`applySeccompVersionSkew` in `pkg/api/pod/util.go`, KEP-135), so an annotation-only
/// manifest ends up with the equivalent field: `runtime/default` and `docker/default` →
/// RuntimeDefault, `localhost/…` → Localhost, anything else (`unconfined`) → not allowed.
fn seccomp_of<'a>(
    field: Option<&'a Obj>,
    annotation: Option<(&'a str, &'a str)>,
) -> Option<Seccomp<'a>> {
    if let Some(profile) = field {
        let t = profile.get("type").and_then(Value::as_str).unwrap_or("");
        return Some(Seccomp {
            valid: t == "RuntimeDefault" || t == "Localhost",
            value: t,
            source: SeccompSource::Field,
        });
    }
    let (key, v) = annotation?;
    Some(Seccomp {
        valid: v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/"),
        value: v,
        source: SeccompSource::Annotation(key),
    })
}

/// The legacy container annotation of container `name`, if any.
fn container_seccomp_annotation<'a>(
    annotations: Option<&'a Obj>,
    name: &str,
) -> Option<(&'a str, &'a str)> {
    let annotations = annotations?;
    // Few pods carry annotations at all; scan rather than building the key for a lookup.
    annotations.iter().find_map(|(k, v)| {
        let rest = k.strip_prefix(SECCOMP_CONTAINER_ANNOTATION_PREFIX)?;
        (rest == name).then_some((k.as_str(), v.as_str()?))
    })
}

/// SECCOMP-UNCONFINED (`check_seccompProfile_baseline.go`, baseline `seccompProfile_baseline`,
/// 1.19: pod and container `seccompProfile.type` must be RuntimeDefault, Localhost or undefined)
/// and SECCOMP-UNSET (`check_seccompProfile_restricted.go`, restricted
/// `seccompProfile_restricted`, 1.25: the pod must set an allowed type or every container must;
/// Windows pods exempt). An explicitly bad value is reported once, as SECCOMP-UNCONFINED.
fn seccomp(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    let baseline = s.on(CheckId::SeccompUnconfined);
    let restricted = !pod.windows && s.on(CheckId::SeccompUnset);
    if !(baseline || restricted) {
        return;
    }
    let annotations = pod.annotations();
    let pod_annotation = pod
        .annotation(SECCOMP_POD_ANNOTATION)
        .map(|v| (SECCOMP_POD_ANNOTATION, v));
    let pod_profile = seccomp_of(pod.psc.seccomp_profile, pod_annotation);
    if let Some(p) = pod_profile.as_ref().filter(|p| !p.valid && baseline) {
        let path = match p.source {
            SeccompSource::Field => format!("{}.securityContext.seccompProfile.type", pod.sp),
            SeccompSource::Annotation(key) => pod.annotation_path(key),
        };
        s.emit(
            CheckId::SeccompUnconfined,
            None,
            path,
            format!("the pod sets seccomp profile {:?}", p.value),
        );
    }
    let pod_covers = pod_profile.is_some();
    for c in &pod.containers {
        let annotation = container_seccomp_annotation(annotations, c.name);
        match seccomp_of(c.sc.seccomp_profile, annotation) {
            Some(p) if !p.valid => {
                if baseline {
                    let path = match p.source {
                        SeccompSource::Field => {
                            c.path(pod.sp, ".securityContext.seccompProfile.type")
                        }
                        SeccompSource::Annotation(key) => pod.annotation_path(key),
                    };
                    s.emit(
                        CheckId::SeccompUnconfined,
                        Some(c.name),
                        path,
                        format!("container {:?} sets seccomp profile {:?}", c.name, p.value),
                    );
                }
            }
            Some(_) => {}
            // Inherits the pod's profile: valid, or explicitly bad and reported above.
            None if pod_covers => {}
            None => {
                if restricted {
                    s.emit(
                        CheckId::SeccompUnset,
                        Some(c.name),
                        c.path(pod.sp, ".securityContext.seccompProfile.type"),
                        format!(
                            "neither the pod nor container {:?} sets seccompProfile.type to RuntimeDefault or Localhost",
                            c.name
                        ),
                    );
                }
            }
        }
    }
}

/// An AppArmor profile type that is neither RuntimeDefault nor Localhost.
fn bad_apparmor_type(profile: Option<&Obj>) -> Option<&str> {
    profile.and_then(|p| {
        let t = p.get("type").and_then(Value::as_str).unwrap_or("");
        (t != "RuntimeDefault" && t != "Localhost").then_some(t)
    })
}

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `check_appArmorProfile.go` (baseline `appArmorProfile`): pod and container
/// `appArmorProfile.type` must be RuntimeDefault, Localhost or undefined, and the legacy
/// `container.apparmor.security.beta.kubernetes.io/*` annotations must be empty,
/// `runtime/default` or `localhost/*`. Both channels are checked, as upstream does.
fn apparmor(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::Apparmor) {
        return;
    }
    if let Some(t) = bad_apparmor_type(pod.psc.app_armor_profile) {
        s.emit(
            CheckId::Apparmor,
            None,
            format!("{}.securityContext.appArmorProfile.type", pod.sp),
            format!("the pod sets AppArmor profile {t:?}"),
        );
    }
    for c in &pod.containers {
        if let Some(t) = bad_apparmor_type(c.sc.app_armor_profile) {
            s.emit(
                CheckId::Apparmor,
                Some(c.name),
                c.path(pod.sp, ".securityContext.appArmorProfile.type"),
                format!("container {:?} sets AppArmor profile {t:?}", c.name),
            );
        }
    }
    let Some(annotations) = pod.annotations() else {
        return;
    };
    for (key, value) in annotations {
        let Some(container) = key.strip_prefix(APPARMOR_ANNOTATION_PREFIX) else {
            continue;
        };
        let v = value.as_str().unwrap_or("");
        let allowed = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
        if !allowed {
            s.emit(
                CheckId::Apparmor,
                Some(container),
                pod.annotation_path(key),
                format!("container {container:?} has AppArmor annotation {v:?}"),
            );
        }
    }
}

/// SELinux types the Baseline profile allows (`check_seLinuxOptions.go`,
/// `selinuxAllowedTypes1_31`; `""` means undefined).
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// `check_seLinuxOptions.go` (baseline `seLinuxOptions`, 1.31): pod and container
/// `seLinuxOptions.type` in the allowed set; `user` and `role` undefined or empty.
fn selinux(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::Selinux) {
        return;
    }
    let mut check = |opts: Option<&Obj>, c: Option<&Ctr<'_>>| {
        let Some(opts) = opts else { return };
        let base = || match c {
            Some(c) => c.path(pod.sp, ".securityContext.seLinuxOptions"),
            None => format!("{}.securityContext.seLinuxOptions", pod.sp),
        };
        let who = || match c {
            Some(c) => format!("container {:?}", c.name),
            None => "the pod".to_owned(),
        };
        let t = opts.get("type").and_then(Value::as_str).unwrap_or("");
        if !SELINUX_TYPES.contains(&t) {
            s.emit(
                CheckId::Selinux,
                c.map(|c| c.name),
                format!("{}.type", base()),
                format!("{} sets SELinux type {t:?}", who()),
            );
        }
        for field in ["user", "role"] {
            let v = opts.get(field).and_then(Value::as_str).unwrap_or("");
            if !v.is_empty() {
                s.emit(
                    CheckId::Selinux,
                    c.map(|c| c.name),
                    format!("{}.{field}", base()),
                    format!("{} sets SELinux {field} {v:?}", who()),
                );
            }
        }
    };
    check(pod.psc.se_linux_options, None);
    for c in &pod.containers {
        check(c.sc.se_linux_options, Some(c));
    }
}

/// PROCMOUNT: `check_procMount_baseline.go` (baseline `procMount`, 1.35: `procMount` undefined
/// or `Default`, except that pods with `hostUsers: false` may set anything) and
/// `check_procMount_restricted.go` (restricted `procMount_restricted`, 1.35: `Default` or
/// undefined, user namespace or not). A user-namespace pod's finding therefore carries only the
/// Restricted reference and is filtered out at `--level baseline`.
fn proc_mount(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    for c in &pod.containers {
        let Some(pm) = c.sc.proc_mount else { continue };
        if pm != "Default" && s.on(CheckId::Procmount) {
            let standards = if pod.user_ns {
                std_refs::PROCMOUNT_USERNS
            } else {
                CheckId::Procmount.def().standards
            };
            s.emit_with(
                CheckId::Procmount,
                standards,
                Some(c.name),
                c.path(pod.sp, ".securityContext.procMount"),
                format!("container {:?} sets procMount: {pm}", c.name),
            );
        }
    }
}

/// IMAGE-TAG, PULL-POLICY, REGISTRY-ALLOW.
fn images(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    let tag = s.on(CheckId::ImageTag);
    let pull = s.on(CheckId::PullPolicy);
    let registry = s.on(CheckId::RegistryAllow);
    if !(tag || pull || registry) {
        return;
    }
    for c in &pod.containers {
        let image = c.image.unwrap_or("");
        if !image.is_empty() && (tag || registry) {
            let parts = image_parts(image);
            if tag && !parts.digest && matches!(parts.tag, None | Some("latest")) {
                let msg = match parts.tag {
                    None => format!("container {:?} image {image:?} has no tag", c.name),
                    Some(_) => format!("container {:?} image {image:?} uses :latest", c.name),
                };
                s.emit(
                    CheckId::ImageTag,
                    Some(c.name),
                    c.path(pod.sp, ".image"),
                    msg,
                );
            }
            if registry && !s.registry_allowed(parts.registry, parts.repository) {
                s.emit(
                    CheckId::RegistryAllow,
                    Some(c.name),
                    c.path(pod.sp, ".image"),
                    format!(
                        "container {:?} image {image:?} comes from registry {} outside the allow list",
                        c.name, parts.registry
                    ),
                );
            }
        }
        if pull && c.image_pull_policy != Some("Always") {
            let msg = match c.image_pull_policy {
                Some(p) => format!("container {:?} imagePullPolicy is {p}", c.name),
                None => format!(
                    "container {:?} does not set imagePullPolicy: Always",
                    c.name
                ),
            };
            s.emit(
                CheckId::PullPolicy,
                Some(c.name),
                c.path(pod.sp, ".imagePullPolicy"),
                msg,
            );
        }
    }
}

/// RES-REQUESTS and RES-LIMITS: cpu and memory on containers and init containers (ephemeral
/// containers cannot have resources).
fn resources(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    let req = s.on(CheckId::ResRequests);
    let lim = s.on(CheckId::ResLimits);
    if !(req || lim) {
        return;
    }
    for c in pod.containers.iter().filter(|c| !c.is_ephemeral()) {
        for (on, id, section, noun, cpu_refs, mem_refs) in [
            (
                req,
                CheckId::ResRequests,
                "requests",
                "request",
                std_refs::REQ_CPU,
                std_refs::REQ_MEM,
            ),
            (
                lim,
                CheckId::ResLimits,
                "limits",
                "limit",
                std_refs::LIM_CPU,
                std_refs::LIM_MEM,
            ),
        ] {
            if !on {
                continue;
            }
            let m = c.resources.and_then(|r| r.get(section));
            for (resource, refs) in [("cpu", cpu_refs), ("memory", mem_refs)] {
                let set = m
                    .and_then(|m| m.get(resource))
                    .is_some_and(|v| !v.is_null());
                if !set {
                    s.emit_with(
                        id,
                        refs,
                        Some(c.name),
                        c.path(pod.sp, &format!(".resources.{section}.{resource}")),
                        format!("container {:?} has no {resource} {noun}", c.name),
                    );
                }
            }
        }
    }
}

/// PROBES: readiness and liveness probes on `spec.containers[*]`, except for run-to-completion
/// workloads (Jobs, CronJobs, Pods with restartPolicy Never/OnFailure).
fn probes(pod: &PodView<'_>, kind: &str, s: &mut Sink<'_, '_>) {
    let run_to_completion = matches!(kind, "Job" | "CronJob")
        || matches!(pod.restart_policy, Some("Never" | "OnFailure"));
    if run_to_completion || !s.on(CheckId::Probes) {
        return;
    }
    for c in pod.containers.iter().filter(|c| c.list == "containers") {
        for (probe, present, refs) in [
            (
                "readinessProbe",
                c.readiness_probe.is_some(),
                std_refs::PROBE_READINESS,
            ),
            (
                "livenessProbe",
                c.liveness_probe.is_some(),
                std_refs::PROBE_LIVENESS,
            ),
        ] {
            if !present {
                s.emit_with(
                    CheckId::Probes,
                    refs,
                    Some(c.name),
                    c.path(pod.sp, &format!(".{probe}")),
                    format!("container {:?} has no {probe}", c.name),
                );
            }
        }
    }
}

/// NAKED-POD: a Pod without ownerReferences.
fn naked_pod(kind: &str, meta: Option<&Obj>, s: &mut Sink<'_, '_>) {
    if kind != "Pod" || !s.on(CheckId::NakedPod) {
        return;
    }
    let owned = meta
        .and_then(|m| m.get("ownerReferences"))
        .is_some_and(|o| !as_arr(o).is_empty());
    if !owned {
        s.emit(
            CheckId::NakedPod,
            None,
            "metadata.ownerReferences".to_owned(),
            "the pod has no controller".to_owned(),
        );
    }
}

/// ENV-SECRET-LITERAL: a literal `env[*].value` on a variable named like a secret. The value is
/// never copied into the finding.
fn env_secrets(pod: &PodView<'_>, s: &mut Sink<'_, '_>) {
    if !s.on(CheckId::EnvSecretLiteral) {
        return;
    }
    for c in &pod.containers {
        for (i, e) in c.env.iter().enumerate() {
            let Some(value) = e.get("value").and_then(Value::as_str) else {
                continue;
            };
            let reference = value.starts_with("$(") && value.ends_with(')');
            if value.trim().is_empty() || reference {
                continue;
            }
            let name = e.get("name").and_then(Value::as_str).unwrap_or("");
            if secret_like_name(name) {
                s.emit(
                    CheckId::EnvSecretLiteral,
                    Some(c.name),
                    c.path(pod.sp, &format!(".env[{i}].value")),
                    format!(
                        "container {:?} sets {name} literally; it looks like a secret",
                        c.name
                    ),
                );
            }
        }
    }
}

// === impl Sink (workload helpers) ===

impl Sink<'_, '_> {
    /// Is an image from this registry/repository allowed by the policy's allow list? Entries
    /// are registries (`ghcr.io`) or repository prefixes (`ghcr.io/acme`), lower case.
    fn registry_allowed(&self, registry: &str, repository: &str) -> bool {
        let library = registry == "docker.io" && !repository.contains('/');
        self.policy.registries.iter().any(|entry| {
            if entry.eq_ignore_ascii_case(registry) {
                return true;
            }
            // Compare `entry` with `registry/[library/]repository` without building it.
            let Some(rest) = strip_prefix_ci(entry, registry).and_then(|r| r.strip_prefix('/'))
            else {
                return false;
            };
            let rest = if library {
                match rest.strip_prefix("library") {
                    Some("") => return true,
                    Some(r) => match r.strip_prefix('/') {
                        Some(r) => r,
                        None => return false,
                    },
                    None => return false,
                }
            } else {
                rest
            };
            match strip_prefix_ci(repository, rest) {
                Some(after) => after.is_empty() || after.starts_with('/'),
                None => false,
            }
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}
