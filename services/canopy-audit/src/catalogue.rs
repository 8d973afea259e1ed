//! The check catalogue: every check of `CHECKS.md` with its id, severity, kinds, upstream references.
//!
//! Upstream references are spelled as `CHECKS.md` spells them (`pss:<level>:<checkID>`,
//! `polaris:<checkId>`, `kubescape:C-XXXX`). The Pod Security Standards references follow the
//! `pod-security-admission` check IDs at policy version [`PSS_POLICY_VERSION`].

use serde::{Deserialize, Serialize};

/// The Pod Security Standards policy version the `pss:` checks implement ("latest" upstream at the
/// time of writing: the `sysctls` allow-list gained two entries at v1.37, every other check's newest
/// revision is v1.35 or older).
pub const PSS_POLICY_VERSION: &str = "v1.37";

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// All severities, most severe first.
    pub const ALL_DESC: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The CVSS-like number GitHub code scanning reads from a rule's `security-severity`
    /// (critical > 9.0, high 7.0–8.9, medium 4.0–6.9, low 0.1–3.9).
    pub fn security_severity(self) -> f32 {
        match self {
            Severity::Low => 3.0,
            Severity::Medium => 5.5,
            Severity::High => 8.0,
            Severity::Critical => 9.5,
        }
    }

    /// The SARIF result level for this severity.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Critical | Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low => "note",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!("unknown severity {other:?}")),
        }
    }
}

/// The Pod Security Standards profile a check belongs to, for `--level` filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PssLevel {
    /// A Baseline control (and therefore also part of Restricted).
    Baseline,
    /// A Restricted-only control.
    Restricted,
    /// Not a Pod Security Standards control (Polaris, Kubescape, CIS best practice).
    None,
}

/// Stable identifiers of the checks. The discriminant is the index into [`CATALOGUE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CheckId {
    HostPid,
    HostIpc,
    HostNet,
    HostPort,
    Hostpath,
    HostpathRw,
    RuntimeSocket,
    VolumeTypes,
    UnsafeSysctl,
    WinHostprocess,
    ProbeHost,
    Privileged,
    PrivEsc,
    RunAsRoot,
    Uid0,
    RoRootfs,
    DangerousCaps,
    CapsBaseline,
    CapsDropAll,
    SeccompUnconfined,
    SeccompUnset,
    Apparmor,
    Selinux,
    Procmount,
    ImageTag,
    PullPolicy,
    RegistryAllow,
    ResRequests,
    ResLimits,
    Probes,
    NakedPod,
    EnvSecretLiteral,
    CmSecret,
    SaAutomount,
    NetpolMissing,
    IngressTls,
    RbacClusterAdmin,
    RbacWildcard,
    RbacExecAttach,
    RbacSecrets,
}

impl CheckId {
    /// The catalogue entry of this check.
    pub fn def(self) -> &'static CheckDef {
        // The discriminants are the indices of CATALOGUE (tested in `catalogue_order`).
        &CATALOGUE[self as usize]
    }

    /// The stable string id (`HOST-PID`, ...).
    pub fn as_str(self) -> &'static str {
        self.def().id
    }

    pub(crate) fn bit(self) -> u64 {
        1u64 << (self as u8)
    }

    /// Looks a check up by its string id (case-insensitive).
    pub fn parse(id: &str) -> Option<CheckId> {
        let id = id.trim();
        CATALOGUE
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .map(|c| c.check)
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, Serialize)]
pub struct CheckDef {
    #[serde(skip)]
    pub check: CheckId,
    /// Stable id, e.g. `HOST-PID`.
    pub id: &'static str,
    /// Default severity (a [`crate::Policy`] may override it).
    pub severity: Severity,
    /// The Kubernetes kinds the check reads.
    pub kinds: &'static [&'static str],
    /// One-line title.
    pub title: &'static str,
    /// The field(s) it tests and how.
    pub tests: &'static str,
    /// What to do about a finding.
    pub remediation: &'static str,
    /// Upstream references (`pss:…`, `polaris:…`, `kubescape:…`). A finding may carry a subset
    /// when only part of them apply (e.g. only the cpu half of `RES-REQUESTS`).
    pub standards: &'static [&'static str],
    /// Pod Security Standards profile, for `--level` filtering.
    pub pss_level: PssLevel,
}

/// Every kind that carries a pod spec ("W" in `CHECKS.md`): the kinds whose pod spec the
/// upstream Pod Security admission evaluates (`DefaultPodSpecExtractor` in
/// `pod-security-admission/admission/admission.go`), `PodTemplate` included.
pub const WORKLOAD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "PodTemplate",
];

const W: &[&str] = WORKLOAD_KINDS;
const W_SA: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "PodTemplate",
    "ServiceAccount",
];
const W_NETPOL: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
    "PodTemplate",
    "NetworkPolicy",
];
const BINDINGS: &[&str] = &["RoleBinding", "ClusterRoleBinding", "Role", "ClusterRole"];
const ROLES: &[&str] = &["Role", "ClusterRole"];

// Per-finding subsets of the standards of a check, where only part of them apply.
pub(crate) mod std_refs {
    pub const PROCMOUNT_USERNS: &[&str] =
        &["pss:restricted:procMount_restricted", "polaris:procMount"];
    pub const REQ_CPU: &[&str] = &["polaris:cpuRequestsMissing"];
    pub const REQ_MEM: &[&str] = &["polaris:memoryRequestsMissing"];
    pub const LIM_CPU: &[&str] = &["polaris:cpuLimitsMissing"];
    pub const LIM_MEM: &[&str] = &["polaris:memoryLimitsMissing"];
    pub const PROBE_READINESS: &[&str] = &["polaris:readinessProbeMissing"];
    pub const PROBE_LIVENESS: &[&str] = &["polaris:livenessProbeMissing"];
    pub const CRB_ADMIN: &[&str] = &["polaris:clusterrolebindingClusterAdmin", "kubescape:C-0035"];
    pub const RB_ADMIN: &[&str] = &[
        "polaris:rolebindingClusterAdminClusterRole",
        "kubescape:C-0035",
    ];
    pub const CR_EXEC: &[&str] = &["polaris:clusterrolePodExecAttach", "kubescape:C-0002"];
    pub const R_EXEC: &[&str] = &["polaris:rolePodExecAttach", "kubescape:C-0002"];
}

macro_rules! check {
    ($check:ident, $id:literal, $sev:ident, $kinds:expr, $pss:ident, $title:literal, $tests:literal, $fix:literal, [$($std:literal),* $(,)?]) => {
        CheckDef {
            check: CheckId::$check,
            id: $id,
            severity: Severity::$sev,
            kinds: $kinds,
            title: $title,
            tests: $tests,
            remediation: $fix,
            standards: &[$($std),*],
            pss_level: PssLevel::$pss,
        }
    };
}

/// The catalogue, in [`CheckId`] order.
pub static CATALOGUE: &[CheckDef] = &[
    check!(
        HostPid,
        "HOST-PID",
        Critical,
        W,
        Baseline,
        "Pod shares the host PID namespace",
        "spec.hostPID == true",
        "Remove spec.hostPID (or set it to false).",
        [
            "pss:baseline:hostNamespaces",
            "polaris:hostPIDSet",
            "kubescape:C-0038"
        ]
    ),
    check!(
        HostIpc,
        "HOST-IPC",
        Critical,
        W,
        Baseline,
        "Pod shares the host IPC namespace",
        "spec.hostIPC == true",
        "Remove spec.hostIPC (or set it to false).",
        [
            "pss:baseline:hostNamespaces",
            "polaris:hostIPCSet",
            "kubescape:C-0038"
        ]
    ),
    check!(
        HostNet,
        "HOST-NET",
        High,
        W,
        Baseline,
        "Pod uses the host network namespace",
        "spec.hostNetwork == true",
        "Remove spec.hostNetwork (or set it to false) and expose the pod through a Service.",
        [
            "pss:baseline:hostNamespaces",
            "polaris:hostNetworkSet",
            "kubescape:C-0041"
        ]
    ),
    check!(
        HostPort,
        "HOST-PORT",
        Medium,
        W,
        Baseline,
        "Container binds a host port",
        "C[*].ports[*].hostPort set and non-zero",
        "Remove hostPort and expose the port through a Service.",
        [
            "pss:baseline:hostPorts",
            "polaris:hostPortSet",
            "kubescape:C-0044"
        ]
    ),
    check!(
        Hostpath,
        "HOSTPATH",
        High,
        W,
        Baseline,
        "Pod mounts a hostPath volume",
        "any spec.volumes[*].hostPath",
        "Replace the hostPath volume with a PersistentVolumeClaim, configMap, secret or emptyDir.",
        [
            "pss:baseline:hostPathVolumes",
            "polaris:hostPathSet",
            "kubescape:C-0048"
        ]
    ),
    check!(
        HostpathRw,
        "HOSTPATH-RW",
        High,
        W,
        None,
        "hostPath volume mounted writable",
        "a hostPath volume mounted by a container without readOnly: true",
        "Set readOnly: true on every volumeMount of a hostPath volume (or drop the hostPath).",
        ["kubescape:C-0045"]
    ),
    check!(
        RuntimeSocket,
        "RUNTIME-SOCKET",
        Critical,
        W,
        None,
        "Container runtime socket mounted",
        "hostPath to the docker, containerd or CRI-O socket or a parent directory of it",
        "Do not mount the container runtime socket; use the Kubernetes API or a dedicated node agent.",
        ["kubescape:C-0074"]
    ),
    check!(
        VolumeTypes,
        "VOLUME-TYPES",
        Medium,
        W,
        Restricted,
        "Volume type not allowed by the Restricted profile",
        "volume type outside configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret",
        "Use one of configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected or secret; reach other storage through a PersistentVolume.",
        ["pss:restricted:restrictedVolumes"]
    ),
    check!(
        UnsafeSysctl,
        "UNSAFE-SYSCTL",
        High,
        W,
        Baseline,
        "Pod sets an unsafe sysctl",
        "spec.securityContext.sysctls[*].name outside the safe set",
        "Only set the namespaced safe sysctls; configure node-level sysctls on the node.",
        ["pss:baseline:sysctls"]
    ),
    check!(
        WinHostprocess,
        "WIN-HOSTPROCESS",
        Critical,
        W,
        Baseline,
        "Windows HostProcess container",
        "windowsOptions.hostProcess == true at pod or container level",
        "Remove windowsOptions.hostProcess (or set it to false).",
        ["pss:baseline:windowsHostProcess", "polaris:hostProcess"]
    ),
    check!(
        ProbeHost,
        "PROBE-HOST",
        Medium,
        W,
        Baseline,
        "Probe or lifecycle handler targets another host",
        "non-empty .host in probes / lifecycle handlers (httpGet, tcpSocket)",
        "Remove the host field so probes and hooks target the pod itself.",
        ["pss:baseline:hostProbesAndHostLifecycle"]
    ),
    check!(
        Privileged,
        "PRIVILEGED",
        Critical,
        W,
        Baseline,
        "Privileged container",
        "C[*].securityContext.privileged == true",
        "Remove securityContext.privileged (or set it to false); grant only the capabilities needed.",
        [
            "pss:baseline:privileged",
            "polaris:runAsPrivileged",
            "kubescape:C-0057"
        ]
    ),
    check!(
        PrivEsc,
        "PRIV-ESC",
        High,
        W,
        Restricted,
        "Privilege escalation allowed",
        "C[*].securityContext.allowPrivilegeEscalation not explicitly false",
        "Set securityContext.allowPrivilegeEscalation: false on every container.",
        [
            "pss:restricted:allowPrivilegeEscalation",
            "polaris:privilegeEscalationAllowed",
            "kubescape:C-0016"
        ]
    ),
    check!(
        RunAsRoot,
        "RUN-AS-ROOT",
        High,
        W,
        Restricted,
        "Container may run as root",
        "effective runAsNonRoot (container overrides pod) not true",
        "Set securityContext.runAsNonRoot: true at pod level (and do not set it to false on containers).",
        [
            "pss:restricted:runAsNonRoot",
            "polaris:runAsRootAllowed",
            "kubescape:C-0013"
        ]
    ),
    check!(
        Uid0,
        "UID-0",
        High,
        W,
        Restricted,
        "Runs as UID 0",
        "runAsUser == 0 at pod or container level",
        "Set runAsUser to a non-zero UID (or leave it unset and rely on the image's non-root user).",
        ["pss:restricted:runAsUser"]
    ),
    check!(
        RoRootfs,
        "RO-ROOTFS",
        Medium,
        W,
        None,
        "Writable root filesystem",
        "C[*].securityContext.readOnlyRootFilesystem != true",
        "Set securityContext.readOnlyRootFilesystem: true and mount an emptyDir where the process writes.",
        ["polaris:notReadOnlyRootFilesystem", "kubescape:C-0017"]
    ),
    check!(
        DangerousCaps,
        "DANGEROUS-CAPS",
        High,
        W,
        None,
        "Dangerous capability added",
        "capabilities.add has ALL, SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_MODULE, SYS_PTRACE, SYS_RAWIO, SYS_BOOT, MAC_ADMIN, MAC_OVERRIDE, PERFMON, BPF, SETPCAP",
        "Remove the capability from securityContext.capabilities.add.",
        ["polaris:dangerousCapabilities", "kubescape:C-0046"]
    ),
    check!(
        CapsBaseline,
        "CAPS-BASELINE",
        High,
        W,
        Baseline,
        "Capability outside the Baseline allowed set",
        "capabilities.add outside AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT",
        "Only add capabilities from the Baseline allowed set.",
        ["pss:baseline:capabilities_baseline"]
    ),
    check!(
        CapsDropAll,
        "CAPS-DROP-ALL",
        Medium,
        W,
        Restricted,
        "Capabilities not dropped",
        "capabilities.drop lacks ALL, or capabilities.add has anything but NET_BIND_SERVICE",
        "Set securityContext.capabilities.drop: [\"ALL\"] and add back at most NET_BIND_SERVICE.",
        [
            "pss:restricted:capabilities_restricted",
            "polaris:insecureCapabilities"
        ]
    ),
    check!(
        SeccompUnconfined,
        "SECCOMP-UNCONFINED",
        High,
        W,
        Baseline,
        "Seccomp disabled",
        "seccompProfile.type other than RuntimeDefault/Localhost (field or legacy annotation)",
        "Set seccompProfile.type to RuntimeDefault (or Localhost) instead of Unconfined.",
        ["pss:baseline:seccompProfile_baseline"]
    ),
    check!(
        SeccompUnset,
        "SECCOMP-UNSET",
        Medium,
        W,
        Restricted,
        "No seccomp profile",
        "no RuntimeDefault/Localhost seccomp profile for every container (pod level or container level)",
        "Set spec.securityContext.seccompProfile.type: RuntimeDefault.",
        [
            "pss:restricted:seccompProfile_restricted",
            "polaris:linuxHardening",
            "kubescape:C-0055"
        ]
    ),
    check!(
        Apparmor,
        "APPARMOR",
        Medium,
        W,
        Baseline,
        "AppArmor disabled or overridden",
        "appArmorProfile.type other than RuntimeDefault/Localhost, or legacy annotation other than runtime/default / localhost/*",
        "Use the RuntimeDefault (or a Localhost) AppArmor profile.",
        ["pss:baseline:appArmorProfile"]
    ),
    check!(
        Selinux,
        "SELINUX",
        Medium,
        W,
        Baseline,
        "Custom SELinux options",
        "seLinuxOptions.type outside container_t, container_init_t, container_kvm_t, container_engine_t, or user/role set",
        "Remove seLinuxOptions.user/role and use an allowed seLinuxOptions.type (or none).",
        ["pss:baseline:seLinuxOptions"]
    ),
    check!(
        Procmount,
        "PROCMOUNT",
        Medium,
        W,
        Baseline,
        "Unmasked /proc",
        "securityContext.procMount other than Default",
        "Remove securityContext.procMount (or set it to Default).",
        [
            "pss:baseline:procMount",
            "pss:restricted:procMount_restricted",
            "polaris:procMount"
        ]
    ),
    check!(
        ImageTag,
        "IMAGE-TAG",
        Medium,
        W,
        None,
        "Image not pinned",
        "image without tag or with :latest (digest pins pass)",
        "Pin the image to a version tag or, better, a digest (@sha256:…).",
        ["polaris:tagNotSpecified"]
    ),
    check!(
        PullPolicy,
        "PULL-POLICY",
        Low,
        W,
        None,
        "imagePullPolicy not Always",
        "C[*].imagePullPolicy != Always",
        "Set imagePullPolicy: Always.",
        ["polaris:pullPolicyNotAlways", "kubescape:C-0075"]
    ),
    check!(
        RegistryAllow,
        "REGISTRY-ALLOW",
        Medium,
        W,
        None,
        "Image from a registry outside the allow list",
        "image registry not in the policy's allow list (skipped when the list is empty)",
        "Pull the image from an allowed registry (mirror it there).",
        ["kubescape:C-0078"]
    ),
    check!(
        ResRequests,
        "RES-REQUESTS",
        Low,
        W,
        None,
        "Resource requests missing",
        "cpu or memory request missing (containers and initContainers)",
        "Set resources.requests.cpu and resources.requests.memory.",
        [
            "polaris:cpuRequestsMissing",
            "polaris:memoryRequestsMissing"
        ]
    ),
    check!(
        ResLimits,
        "RES-LIMITS",
        Medium,
        W,
        None,
        "Resource limits missing",
        "cpu or memory limit missing (containers and initContainers)",
        "Set resources.limits.cpu and resources.limits.memory.",
        ["polaris:cpuLimitsMissing", "polaris:memoryLimitsMissing"]
    ),
    check!(
        Probes,
        "PROBES",
        Low,
        W,
        None,
        "Readiness or liveness probe missing",
        "readinessProbe or livenessProbe missing on spec.containers[*] (not for Jobs, CronJobs, run-to-completion Pods, init containers)",
        "Add a readinessProbe and a livenessProbe.",
        [
            "polaris:readinessProbeMissing",
            "polaris:livenessProbeMissing"
        ]
    ),
    check!(
        NakedPod,
        "NAKED-POD",
        Low,
        &["Pod"],
        None,
        "Pod without a controller",
        "Pod without metadata.ownerReferences",
        "Run the pod through a Deployment, StatefulSet, DaemonSet or Job.",
        ["kubescape:C-0073"]
    ),
    check!(
        EnvSecretLiteral,
        "ENV-SECRET-LITERAL",
        High,
        W,
        None,
        "Secret-looking environment variable with a literal value",
        "env[*].value set literally on a variable whose name looks like a secret (PASSWORD, SECRET, TOKEN, API_KEY, …)",
        "Move the value into a Secret and reference it with valueFrom.secretKeyRef.",
        ["polaris:sensitiveContainerEnvVar", "kubescape:C-0012"]
    ),
    check!(
        CmSecret,
        "CM-SECRET",
        High,
        &["ConfigMap"],
        None,
        "Credential in a ConfigMap",
        "data keys that look like credentials, or values containing AKIA…, ghp_…, -----BEGIN … PRIVATE KEY-----, xox?-…, AIza…, user:password@ URLs, password=… lines",
        "Move the credential into a Secret (and rotate it: it has been exposed).",
        ["polaris:sensitiveConfigmapContent", "kubescape:C-0012"]
    ),
    check!(
        SaAutomount,
        "SA-AUTOMOUNT",
        Medium,
        W_SA,
        None,
        "Service account token automounted",
        "automountServiceAccountToken not false on the pod and not false on its ServiceAccount (the pod's value wins)",
        "Set automountServiceAccountToken: false on the pod or its ServiceAccount unless it calls the API.",
        ["polaris:automountServiceAccountToken", "kubescape:C-0034"]
    ),
    check!(
        NetpolMissing,
        "NETPOL-MISSING",
        Medium,
        W_NETPOL,
        None,
        "No NetworkPolicy selects the pod",
        "no NetworkPolicy in the pod's namespace has a podSelector matching the pod's labels",
        "Add a NetworkPolicy (a default-deny with podSelector: {} at least) to the namespace.",
        ["polaris:missingNetworkPolicy", "kubescape:C-0260"]
    ),
    check!(
        IngressTls,
        "INGRESS-TLS",
        Low,
        &["Ingress"],
        None,
        "Ingress without TLS",
        "Ingress spec.tls missing or empty",
        "Add spec.tls with a certificate for the Ingress hosts.",
        ["polaris:tlsSettingsMissing"]
    ),
    check!(
        RbacClusterAdmin,
        "RBAC-CLUSTER-ADMIN",
        Critical,
        BINDINGS,
        None,
        "Binding grants cluster-admin",
        "(Cluster)RoleBinding to cluster-admin or to a role granting * on * in *, for subjects other than system:*",
        "Bind a narrower role; keep cluster-admin for break-glass accounts.",
        [
            "polaris:clusterrolebindingClusterAdmin",
            "polaris:rolebindingClusterAdminClusterRole",
            "kubescape:C-0035"
        ]
    ),
    check!(
        RbacWildcard,
        "RBAC-WILDCARD",
        High,
        ROLES,
        None,
        "Wildcard in RBAC rule",
        "\"*\" in rules[*].apiGroups, resources or verbs",
        "List the API groups, resources and verbs explicitly.",
        ["kubescape:C-0187"]
    ),
    check!(
        RbacExecAttach,
        "RBAC-EXEC-ATTACH",
        High,
        ROLES,
        None,
        "Role allows exec/attach into pods",
        "pods/exec or pods/attach with get, create or *",
        "Remove pods/exec and pods/attach from the role; use a break-glass role for debugging.",
        [
            "polaris:clusterrolePodExecAttach",
            "polaris:rolePodExecAttach",
            "kubescape:C-0002"
        ]
    ),
    check!(
        RbacSecrets,
        "RBAC-SECRETS",
        High,
        ROLES,
        None,
        "Role can read secrets",
        "get, list, watch or * on secrets (core group), without resourceNames",
        "Restrict secret access with resourceNames, or drop it.",
        ["kubescape:C-0015"]
    ),
];

/// Access to the catalogue.
pub struct Catalogue;

impl Catalogue {
    /// Every check, in a stable order.
    pub fn all() -> &'static [CheckDef] {
        CATALOGUE
    }

    /// The check with this id (case-insensitive).
    pub fn get(id: &str) -> Option<&'static CheckDef> {
        CheckId::parse(id).map(CheckId::def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_order() {
        for (i, c) in CATALOGUE.iter().enumerate() {
            assert_eq!(c.check as usize, i, "{} out of order", c.id);
        }
        assert_eq!(CATALOGUE.len(), 40);
        assert!(CATALOGUE.len() <= 64, "bitmasks are u64");
    }

    #[test]
    fn ids_unique_and_parse() {
        for c in CATALOGUE {
            assert_eq!(CheckId::parse(c.id), Some(c.check));
            assert_eq!(CheckId::parse(&c.id.to_lowercase()), Some(c.check));
        }
        assert_eq!(CheckId::parse("NOPE"), None);
    }

    #[test]
    fn pss_level_matches_standards() {
        for c in CATALOGUE {
            let baseline = c.standards.iter().any(|s| s.starts_with("pss:baseline:"));
            let restricted = c.standards.iter().any(|s| s.starts_with("pss:restricted:"));
            let expect = if baseline {
                PssLevel::Baseline
            } else if restricted {
                PssLevel::Restricted
            } else {
                PssLevel::None
            };
            assert_eq!(c.pss_level, expect, "{}", c.id);
        }
    }

    #[test]
    fn standards_are_well_formed() {
        for c in CATALOGUE {
            assert!(!c.standards.is_empty(), "{}", c.id);
            for s in c.standards {
                assert!(
                    s.starts_with("pss:baseline:")
                        || s.starts_with("pss:restricted:")
                        || s.starts_with("polaris:")
                        || s.starts_with("kubescape:C-")
                        || s.starts_with("cis:"),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn severity_order() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
    }
}
