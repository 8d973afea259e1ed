//! Pod Security Standards checks: pass and fail fixtures for every field variant (pod level,
//! container, init container, ephemeral container, annotations, overrides, exemptions).

use serde_json::{Value, json};

use crate::common::*;

struct Case {
    name: &'static str,
    check: &'static str,
    edits: Vec<(&'static str, Value)>,
    removes: Vec<&'static str>,
    want: Vec<&'static str>,
}

fn case(
    name: &'static str,
    check: &'static str,
    edits: Vec<(&'static str, Value)>,
    want: Vec<&'static str>,
) -> Case {
    Case {
        name,
        check,
        edits,
        removes: Vec::new(),
        want,
    }
}

/// Runs every case on the Pod fixture and, with the same pod spec and pod metadata, on the pod
/// template of every other workload kind: each must report exactly the expected paths, moved
/// under that kind's pod spec / template metadata.
fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    let mut runs = 0;
    for c in cases {
        let mut p = pod_with(&c.edits);
        for r in &c.removes {
            remove(&mut p, r);
        }
        let mut pod_meta = p["metadata"].clone();
        for key in ["name", "namespace", "ownerReferences"] {
            remove(&mut pod_meta, &format!("/{key}"));
        }
        for (kind, sp, mp) in KINDS {
            let obj = if *kind == "Pod" {
                p.clone()
            } else {
                workload(kind, pod_meta.clone(), p["spec"].clone())
            };
            let got = check_paths(&obj, c.check);
            let mut want: Vec<String> = c.want.iter().map(|w| relocate(w, sp, mp)).collect();
            want.sort();
            runs += 1;
            if got != want {
                failures.push(format!(
                    "{} [{}] on {kind}: got {got:?}, want {want:?}",
                    c.name, c.check
                ));
            }
        }
    }
    assert!(runs > 0);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const C0: &str = "/spec/containers/0";
const I0: &str = "/spec/initContainers/0";
const E0: &str = "/spec/ephemeralContainers/0";

fn p(base: &str, rest: &str) -> &'static str {
    Box::leak(format!("{base}{rest}").into_boxed_str())
}

#[test]
fn compliant_pod_is_clean() {
    let netpol = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "ns"}, "spec": {"podSelector": {}}});
    let f = audit(&[compliant_pod(), netpol]);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn host_namespaces() {
    run(vec![
        case(
            "hostPID",
            "HOST-PID",
            vec![("/spec/hostPID", json!(true))],
            vec!["spec.hostPID"],
        ),
        case(
            "hostPID false",
            "HOST-PID",
            vec![("/spec/hostPID", json!(false))],
            vec![],
        ),
        case(
            "hostIPC",
            "HOST-IPC",
            vec![("/spec/hostIPC", json!(true))],
            vec!["spec.hostIPC"],
        ),
        case(
            "hostIPC false",
            "HOST-IPC",
            vec![("/spec/hostIPC", json!(false))],
            vec![],
        ),
        case(
            "hostNetwork",
            "HOST-NET",
            vec![("/spec/hostNetwork", json!(true))],
            vec!["spec.hostNetwork"],
        ),
        case(
            "hostNetwork false",
            "HOST-NET",
            vec![("/spec/hostNetwork", json!(false))],
            vec![],
        ),
    ]);
}

#[test]
fn host_ports() {
    let port = |hp: i64| json!([{"containerPort": 80}, {"containerPort": 81, "hostPort": hp}]);
    run(vec![
        case(
            "container",
            "HOST-PORT",
            vec![(p(C0, "/ports"), port(8080))],
            vec!["spec.containers[0].ports[1].hostPort"],
        ),
        case(
            "init",
            "HOST-PORT",
            vec![(p(I0, "/ports"), port(8080))],
            vec!["spec.initContainers[0].ports[1].hostPort"],
        ),
        case(
            "ephemeral",
            "HOST-PORT",
            vec![(p(E0, "/ports"), port(8080))],
            vec!["spec.ephemeralContainers[0].ports[1].hostPort"],
        ),
        case(
            "zero",
            "HOST-PORT",
            vec![(p(C0, "/ports"), port(0))],
            vec![],
        ),
    ]);
}

#[test]
fn host_path_volumes() {
    let vol = |path: &str| json!([{"name": "cfg", "configMap": {"name": "c"}}, {"name": "h", "hostPath": {"path": path}}]);
    run(vec![
        case(
            "hostPath",
            "HOSTPATH",
            vec![("/spec/volumes", vol("/data"))],
            vec!["spec.volumes[1].hostPath"],
        ),
        case(
            "no hostPath",
            "HOSTPATH",
            vec![("/spec/volumes", json!([{"name": "e", "emptyDir": {}}]))],
            vec![],
        ),
        case(
            "writable mount",
            "HOSTPATH-RW",
            vec![
                ("/spec/volumes", vol("/data")),
                (
                    p(C0, "/volumeMounts"),
                    json!([{"name": "cfg", "mountPath": "/c"}, {"name": "h", "mountPath": "/h"}]),
                ),
            ],
            vec!["spec.containers[0].volumeMounts[1].readOnly"],
        ),
        case(
            "readOnly false",
            "HOSTPATH-RW",
            vec![
                ("/spec/volumes", vol("/data")),
                (
                    p(I0, "/volumeMounts"),
                    json!([{"name": "h", "mountPath": "/h", "readOnly": false}]),
                ),
            ],
            vec!["spec.initContainers[0].volumeMounts[0].readOnly"],
        ),
        case(
            "ephemeral writable",
            "HOSTPATH-RW",
            vec![
                ("/spec/volumes", vol("/data")),
                (
                    p(E0, "/volumeMounts"),
                    json!([{"name": "h", "mountPath": "/h"}]),
                ),
            ],
            vec!["spec.ephemeralContainers[0].volumeMounts[0].readOnly"],
        ),
        case(
            "readOnly mount",
            "HOSTPATH-RW",
            vec![
                ("/spec/volumes", vol("/data")),
                (
                    p(C0, "/volumeMounts"),
                    json!([{"name": "h", "mountPath": "/h", "readOnly": true}]),
                ),
            ],
            vec![],
        ),
        case(
            "writable non-hostPath",
            "HOSTPATH-RW",
            vec![
                ("/spec/volumes", vol("/data")),
                (
                    p(C0, "/volumeMounts"),
                    json!([{"name": "cfg", "mountPath": "/c"}]),
                ),
            ],
            vec![],
        ),
    ]);
}

#[test]
fn runtime_sockets() {
    let mut cases = Vec::new();
    for path in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/var/run/containerd/containerd.sock",
        "/var/run/crio/crio.sock",
        "/run/crio/crio.sock",
        "/var/run",
        "/var/run/",
        "/run/containerd",
        "/var/run/crio",
        "/",
    ] {
        cases.push(case(
            "socket",
            "RUNTIME-SOCKET",
            vec![(
                "/spec/volumes",
                json!([{"name": "s", "hostPath": {"path": path, "type": "Socket"}}]),
            )],
            vec!["spec.volumes[0].hostPath.path"],
        ));
    }
    for path in ["/var/log", "/etc/ssl/certs", "/var/lib/kubelet"] {
        cases.push(case(
            "not a socket",
            "RUNTIME-SOCKET",
            vec![(
                "/spec/volumes",
                json!([{"name": "s", "hostPath": {"path": path}}]),
            )],
            vec![],
        ));
    }
    run(cases);
}

#[test]
fn restricted_volume_types() {
    let mut cases = Vec::new();
    for ok in [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ] {
        let mut vol = json!({"name": "v"});
        set(&mut vol, &format!("/{ok}"), json!({}));
        cases.push(case(
            "allowed",
            "VOLUME-TYPES",
            vec![("/spec/volumes", json!([vol]))],
            vec![],
        ));
    }
    for bad in [
        "hostPath",
        "nfs",
        "gitRepo",
        "iscsi",
        "rbd",
        "cephfs",
        "awsElasticBlockStore",
        "flexVolume",
        "glusterfs",
    ] {
        let mut vol = json!({"name": "v"});
        set(&mut vol, &format!("/{bad}"), json!({"path": "/x"}));
        let want: &'static str = Box::leak(format!("spec.volumes[0].{bad}").into_boxed_str());
        cases.push(case(
            "restricted",
            "VOLUME-TYPES",
            vec![("/spec/volumes", json!([vol]))],
            vec![want],
        ));
    }
    // A volume without a source is defaulted to emptyDir by the API server.
    cases.push(case(
        "no source",
        "VOLUME-TYPES",
        vec![("/spec/volumes", json!([{"name": "v"}]))],
        vec![],
    ));
    run(cases);
}

#[test]
fn sysctls() {
    let mut cases = Vec::new();
    for safe in [
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
    ] {
        cases.push(case(
            "safe",
            "UNSAFE-SYSCTL",
            vec![(
                "/spec/securityContext/sysctls",
                json!([{"name": safe, "value": "1"}]),
            )],
            vec![],
        ));
    }
    for unsafe_ in [
        "kernel.msgmax",
        "net.core.somaxconn",
        "vm.swappiness",
        "kernel.shm_rmid_forced_x",
    ] {
        cases.push(case("unsafe", "UNSAFE-SYSCTL",
            vec![("/spec/securityContext/sysctls", json!([{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": unsafe_, "value": "1"}]))],
            vec!["spec.securityContext.sysctls[1].name"]));
    }
    run(cases);
}

#[test]
fn windows_host_process() {
    let opt = json!({"hostProcess": true});
    run(vec![
        case(
            "pod",
            "WIN-HOSTPROCESS",
            vec![("/spec/securityContext/windowsOptions", opt.clone())],
            vec!["spec.securityContext.windowsOptions.hostProcess"],
        ),
        case(
            "container",
            "WIN-HOSTPROCESS",
            vec![(p(C0, "/securityContext/windowsOptions"), opt.clone())],
            vec!["spec.containers[0].securityContext.windowsOptions.hostProcess"],
        ),
        case(
            "init",
            "WIN-HOSTPROCESS",
            vec![(p(I0, "/securityContext/windowsOptions"), opt.clone())],
            vec!["spec.initContainers[0].securityContext.windowsOptions.hostProcess"],
        ),
        case(
            "ephemeral",
            "WIN-HOSTPROCESS",
            vec![(p(E0, "/securityContext/windowsOptions"), opt.clone())],
            vec!["spec.ephemeralContainers[0].securityContext.windowsOptions.hostProcess"],
        ),
        case(
            "false",
            "WIN-HOSTPROCESS",
            vec![(
                "/spec/securityContext/windowsOptions",
                json!({"hostProcess": false}),
            )],
            vec![],
        ),
    ]);
}

#[test]
fn probe_and_lifecycle_hosts() {
    run(vec![
        case(
            "liveness httpGet",
            "PROBE-HOST",
            vec![(p(C0, "/livenessProbe/httpGet/host"), json!("10.0.0.1"))],
            vec!["spec.containers[0].livenessProbe.httpGet.host"],
        ),
        case(
            "readiness tcpSocket",
            "PROBE-HOST",
            vec![(
                p(C0, "/readinessProbe"),
                json!({"tcpSocket": {"port": 80, "host": "evil"}}),
            )],
            vec!["spec.containers[0].readinessProbe.tcpSocket.host"],
        ),
        case(
            "startup",
            "PROBE-HOST",
            vec![(
                p(C0, "/startupProbe"),
                json!({"httpGet": {"port": 80, "host": "h"}}),
            )],
            vec!["spec.containers[0].startupProbe.httpGet.host"],
        ),
        case(
            "postStart httpGet",
            "PROBE-HOST",
            vec![(
                p(C0, "/lifecycle/postStart"),
                json!({"httpGet": {"port": 80, "host": "h"}}),
            )],
            vec!["spec.containers[0].lifecycle.postStart.httpGet.host"],
        ),
        case(
            "preStop tcpSocket",
            "PROBE-HOST",
            vec![(
                p(C0, "/lifecycle/preStop"),
                json!({"tcpSocket": {"port": 80, "host": "h"}}),
            )],
            vec!["spec.containers[0].lifecycle.preStop.tcpSocket.host"],
        ),
        case(
            "init",
            "PROBE-HOST",
            vec![(
                p(I0, "/startupProbe"),
                json!({"httpGet": {"port": 80, "host": "h"}}),
            )],
            vec!["spec.initContainers[0].startupProbe.httpGet.host"],
        ),
        case(
            "ephemeral",
            "PROBE-HOST",
            vec![(
                p(E0, "/lifecycle/preStop"),
                json!({"httpGet": {"port": 80, "host": "h"}}),
            )],
            vec!["spec.ephemeralContainers[0].lifecycle.preStop.httpGet.host"],
        ),
        case(
            "empty host",
            "PROBE-HOST",
            vec![(p(C0, "/livenessProbe/httpGet/host"), json!(""))],
            vec![],
        ),
        case(
            "exec",
            "PROBE-HOST",
            vec![(
                p(C0, "/lifecycle/preStop"),
                json!({"exec": {"command": ["true"]}}),
            )],
            vec![],
        ),
    ]);
}

#[test]
fn privileged() {
    run(vec![
        case(
            "container",
            "PRIVILEGED",
            vec![(p(C0, "/securityContext/privileged"), json!(true))],
            vec!["spec.containers[0].securityContext.privileged"],
        ),
        case(
            "init",
            "PRIVILEGED",
            vec![(p(I0, "/securityContext/privileged"), json!(true))],
            vec!["spec.initContainers[0].securityContext.privileged"],
        ),
        case(
            "ephemeral",
            "PRIVILEGED",
            vec![(p(E0, "/securityContext/privileged"), json!(true))],
            vec!["spec.ephemeralContainers[0].securityContext.privileged"],
        ),
        case(
            "false",
            "PRIVILEGED",
            vec![(p(C0, "/securityContext/privileged"), json!(false))],
            vec![],
        ),
    ]);
}

#[test]
fn allow_privilege_escalation() {
    let mut unset = case(
        "unset",
        "PRIV-ESC",
        vec![],
        vec!["spec.containers[0].securityContext.allowPrivilegeEscalation"],
    );
    unset.removes = vec!["/spec/containers/0/securityContext/allowPrivilegeEscalation"];
    let mut no_sc = case(
        "no securityContext (init)",
        "PRIV-ESC",
        vec![],
        vec!["spec.initContainers[0].securityContext.allowPrivilegeEscalation"],
    );
    no_sc.removes = vec!["/spec/initContainers/0/securityContext"];
    let mut windows = case(
        "windows exempt",
        "PRIV-ESC",
        vec![("/spec/os", json!({"name": "windows"}))],
        vec![],
    );
    windows.removes = vec!["/spec/containers/0/securityContext/allowPrivilegeEscalation"];
    let mut linux = case(
        "linux not exempt",
        "PRIV-ESC",
        vec![("/spec/os", json!({"name": "linux"}))],
        vec!["spec.containers[0].securityContext.allowPrivilegeEscalation"],
    );
    linux.removes = vec!["/spec/containers/0/securityContext/allowPrivilegeEscalation"];
    run(vec![
        case(
            "true",
            "PRIV-ESC",
            vec![(
                p(C0, "/securityContext/allowPrivilegeEscalation"),
                json!(true),
            )],
            vec!["spec.containers[0].securityContext.allowPrivilegeEscalation"],
        ),
        case(
            "ephemeral true",
            "PRIV-ESC",
            vec![(
                p(E0, "/securityContext/allowPrivilegeEscalation"),
                json!(true),
            )],
            vec!["spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation"],
        ),
        case("false", "PRIV-ESC", vec![], vec![]),
        unset,
        no_sc,
        windows,
        linux,
    ]);
}

#[test]
fn run_as_non_root() {
    let all = vec![
        "spec.containers[0].securityContext.runAsNonRoot",
        "spec.ephemeralContainers[0].securityContext.runAsNonRoot",
        "spec.initContainers[0].securityContext.runAsNonRoot",
    ];
    let mut pod_unset = case(
        "pod unset, containers unset",
        "RUN-AS-ROOT",
        vec![],
        all.clone(),
    );
    pod_unset.removes = vec!["/spec/securityContext/runAsNonRoot"];
    let mut containers_set = case(
        "pod unset, every container true",
        "RUN-AS-ROOT",
        vec![
            (p(C0, "/securityContext/runAsNonRoot"), json!(true)),
            (p(I0, "/securityContext/runAsNonRoot"), json!(true)),
            (p(E0, "/securityContext/runAsNonRoot"), json!(true)),
        ],
        vec![],
    );
    containers_set.removes = vec!["/spec/securityContext/runAsNonRoot"];
    let mut one_missing = case(
        "pod unset, init container unset",
        "RUN-AS-ROOT",
        vec![
            (p(C0, "/securityContext/runAsNonRoot"), json!(true)),
            (p(E0, "/securityContext/runAsNonRoot"), json!(true)),
        ],
        vec!["spec.initContainers[0].securityContext.runAsNonRoot"],
    );
    one_missing.removes = vec!["/spec/securityContext/runAsNonRoot"];
    let mut user_ns = case(
        "hostUsers false relaxes",
        "RUN-AS-ROOT",
        vec![("/spec/hostUsers", json!(false))],
        vec![],
    );
    user_ns.removes = vec!["/spec/securityContext/runAsNonRoot"];
    let mut host_users_true = case(
        "hostUsers true does not",
        "RUN-AS-ROOT",
        vec![("/spec/hostUsers", json!(true))],
        all.clone(),
    );
    host_users_true.removes = vec!["/spec/securityContext/runAsNonRoot"];
    run(vec![
        case("pod true", "RUN-AS-ROOT", vec![], vec![]),
        case(
            "pod false (containers inherit, reported once)",
            "RUN-AS-ROOT",
            vec![("/spec/securityContext/runAsNonRoot", json!(false))],
            vec!["spec.securityContext.runAsNonRoot"],
        ),
        case(
            "pod false, container true",
            "RUN-AS-ROOT",
            vec![
                ("/spec/securityContext/runAsNonRoot", json!(false)),
                (p(C0, "/securityContext/runAsNonRoot"), json!(true)),
            ],
            vec!["spec.securityContext.runAsNonRoot"],
        ),
        case(
            "container false overrides pod true",
            "RUN-AS-ROOT",
            vec![(p(C0, "/securityContext/runAsNonRoot"), json!(false))],
            vec!["spec.containers[0].securityContext.runAsNonRoot"],
        ),
        case(
            "ephemeral false overrides pod true",
            "RUN-AS-ROOT",
            vec![(p(E0, "/securityContext/runAsNonRoot"), json!(false))],
            vec!["spec.ephemeralContainers[0].securityContext.runAsNonRoot"],
        ),
        pod_unset,
        containers_set,
        one_missing,
        user_ns,
        host_users_true,
    ]);
}

#[test]
fn run_as_user() {
    run(vec![
        case(
            "pod 0",
            "UID-0",
            vec![("/spec/securityContext/runAsUser", json!(0))],
            vec!["spec.securityContext.runAsUser"],
        ),
        case(
            "container 0",
            "UID-0",
            vec![(p(C0, "/securityContext/runAsUser"), json!(0))],
            vec!["spec.containers[0].securityContext.runAsUser"],
        ),
        case(
            "init 0",
            "UID-0",
            vec![(p(I0, "/securityContext/runAsUser"), json!(0))],
            vec!["spec.initContainers[0].securityContext.runAsUser"],
        ),
        case(
            "ephemeral 0",
            "UID-0",
            vec![(p(E0, "/securityContext/runAsUser"), json!(0))],
            vec!["spec.ephemeralContainers[0].securityContext.runAsUser"],
        ),
        case(
            "both 0",
            "UID-0",
            vec![
                ("/spec/securityContext/runAsUser", json!(0)),
                (p(C0, "/securityContext/runAsUser"), json!(0)),
            ],
            vec![
                "spec.containers[0].securityContext.runAsUser",
                "spec.securityContext.runAsUser",
            ],
        ),
        case(
            "non-zero",
            "UID-0",
            vec![
                ("/spec/securityContext/runAsUser", json!(1000)),
                (p(C0, "/securityContext/runAsUser"), json!(1001)),
            ],
            vec![],
        ),
        case(
            "container non-zero does not excuse pod 0",
            "UID-0",
            vec![
                ("/spec/securityContext/runAsUser", json!(0)),
                (p(C0, "/securityContext/runAsUser"), json!(1001)),
            ],
            vec!["spec.securityContext.runAsUser"],
        ),
        case(
            "hostUsers false relaxes",
            "UID-0",
            vec![
                ("/spec/hostUsers", json!(false)),
                ("/spec/securityContext/runAsUser", json!(0)),
            ],
            vec![],
        ),
    ]);
}

#[test]
fn capabilities_baseline() {
    let mut cases = Vec::new();
    for ok in [
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
    ] {
        cases.push(case(
            "allowed",
            "CAPS-BASELINE",
            vec![(p(C0, "/securityContext/capabilities/add"), json!([ok]))],
            vec![],
        ));
    }
    cases.push(case(
        "SYS_TIME",
        "CAPS-BASELINE",
        vec![(
            p(C0, "/securityContext/capabilities/add"),
            json!(["CHOWN", "SYS_TIME"]),
        )],
        vec!["spec.containers[0].securityContext.capabilities.add[1]"],
    ));
    cases.push(case(
        "NET_RAW",
        "CAPS-BASELINE",
        vec![(
            p(I0, "/securityContext/capabilities/add"),
            json!(["NET_RAW"]),
        )],
        vec!["spec.initContainers[0].securityContext.capabilities.add[0]"],
    ));
    cases.push(case(
        "ephemeral ALL",
        "CAPS-BASELINE",
        vec![(p(E0, "/securityContext/capabilities/add"), json!(["ALL"]))],
        vec!["spec.ephemeralContainers[0].securityContext.capabilities.add[0]"],
    ));
    // Upstream matches exactly: the CAP_ prefixed spelling is not in the allowed set.
    cases.push(case(
        "CAP_ prefix",
        "CAPS-BASELINE",
        vec![(
            p(C0, "/securityContext/capabilities/add"),
            json!(["CAP_CHOWN"]),
        )],
        vec!["spec.containers[0].securityContext.capabilities.add[0]"],
    ));
    run(cases);
}

#[test]
fn capabilities_restricted() {
    let mut no_caps = case(
        "no capabilities",
        "CAPS-DROP-ALL",
        vec![],
        vec!["spec.containers[0].securityContext.capabilities.drop"],
    );
    no_caps.removes = vec!["/spec/containers/0/securityContext/capabilities"];
    let mut windows = case(
        "windows exempt",
        "CAPS-DROP-ALL",
        vec![("/spec/os/name", json!("windows"))],
        vec![],
    );
    windows.removes = vec!["/spec/containers/0/securityContext/capabilities"];
    run(vec![
        case("drop ALL", "CAPS-DROP-ALL", vec![], vec![]),
        case(
            "drop other",
            "CAPS-DROP-ALL",
            vec![(
                p(C0, "/securityContext/capabilities/drop"),
                json!(["NET_RAW"]),
            )],
            vec!["spec.containers[0].securityContext.capabilities.drop"],
        ),
        case(
            "drop lower-case all",
            "CAPS-DROP-ALL",
            vec![(p(I0, "/securityContext/capabilities/drop"), json!(["all"]))],
            vec!["spec.initContainers[0].securityContext.capabilities.drop"],
        ),
        case(
            "ephemeral no drop",
            "CAPS-DROP-ALL",
            vec![(p(E0, "/securityContext/capabilities"), json!({}))],
            vec!["spec.ephemeralContainers[0].securityContext.capabilities.drop"],
        ),
        case(
            "add NET_BIND_SERVICE",
            "CAPS-DROP-ALL",
            vec![(
                p(C0, "/securityContext/capabilities/add"),
                json!(["NET_BIND_SERVICE"]),
            )],
            vec![],
        ),
        case(
            "add CHOWN",
            "CAPS-DROP-ALL",
            vec![(
                p(C0, "/securityContext/capabilities/add"),
                json!(["NET_BIND_SERVICE", "CHOWN"]),
            )],
            vec!["spec.containers[0].securityContext.capabilities.add[1]"],
        ),
        no_caps,
        windows,
    ]);
}

#[test]
fn dangerous_capabilities() {
    run(vec![
        case(
            "SYS_ADMIN",
            "DANGEROUS-CAPS",
            vec![(
                p(C0, "/securityContext/capabilities/add"),
                json!(["SYS_ADMIN"]),
            )],
            vec!["spec.containers[0].securityContext.capabilities.add[0]"],
        ),
        case(
            "CAP_NET_ADMIN",
            "DANGEROUS-CAPS",
            vec![(
                p(I0, "/securityContext/capabilities/add"),
                json!(["CHOWN", "CAP_NET_ADMIN"]),
            )],
            vec!["spec.initContainers[0].securityContext.capabilities.add[1]"],
        ),
        case(
            "ephemeral SYS_PTRACE",
            "DANGEROUS-CAPS",
            vec![(
                p(E0, "/securityContext/capabilities/add"),
                json!(["SYS_PTRACE"]),
            )],
            vec!["spec.ephemeralContainers[0].securityContext.capabilities.add[0]"],
        ),
        case(
            "ALL",
            "DANGEROUS-CAPS",
            vec![(p(C0, "/securityContext/capabilities/add"), json!(["ALL"]))],
            vec!["spec.containers[0].securityContext.capabilities.add[0]"],
        ),
        case(
            "harmless",
            "DANGEROUS-CAPS",
            vec![(
                p(C0, "/securityContext/capabilities/add"),
                json!(["CHOWN", "NET_BIND_SERVICE"]),
            )],
            vec![],
        ),
    ]);
}

#[test]
fn seccomp_baseline() {
    let ann = "/metadata/annotations/seccomp.security.alpha.kubernetes.io~1pod";
    let cann = "/metadata/annotations/container.seccomp.security.alpha.kubernetes.io~1app";
    let mut pod_annotation = case(
        "pod annotation unconfined",
        "SECCOMP-UNCONFINED",
        vec![(ann, json!("unconfined"))],
        vec!["metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]"],
    );
    pod_annotation.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut container_annotation = case(
        "container annotation unconfined",
        "SECCOMP-UNCONFINED",
        vec![(cann, json!("unconfined"))],
        vec!["metadata.annotations[container.seccomp.security.alpha.kubernetes.io/app]"],
    );
    container_annotation.removes = vec!["/spec/securityContext/seccompProfile"];
    run(vec![
        case(
            "pod Unconfined",
            "SECCOMP-UNCONFINED",
            vec![(
                "/spec/securityContext/seccompProfile/type",
                json!("Unconfined"),
            )],
            vec!["spec.securityContext.seccompProfile.type"],
        ),
        case(
            "container Unconfined",
            "SECCOMP-UNCONFINED",
            vec![(
                p(C0, "/securityContext/seccompProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.containers[0].securityContext.seccompProfile.type"],
        ),
        case(
            "init Unconfined",
            "SECCOMP-UNCONFINED",
            vec![(
                p(I0, "/securityContext/seccompProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.initContainers[0].securityContext.seccompProfile.type"],
        ),
        case(
            "ephemeral Unconfined",
            "SECCOMP-UNCONFINED",
            vec![(
                p(E0, "/securityContext/seccompProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.ephemeralContainers[0].securityContext.seccompProfile.type"],
        ),
        case(
            "Localhost",
            "SECCOMP-UNCONFINED",
            vec![(
                p(C0, "/securityContext/seccompProfile"),
                json!({"type": "Localhost", "localhostProfile": "p.json"}),
            )],
            vec![],
        ),
        pod_annotation,
        container_annotation,
        case(
            "annotation runtime/default",
            "SECCOMP-UNCONFINED",
            vec![
                (ann, json!("runtime/default")),
                (cann, json!("docker/default")),
            ],
            vec![],
        ),
        case(
            "annotation localhost/",
            "SECCOMP-UNCONFINED",
            vec![(cann, json!("localhost/profile.json"))],
            vec![],
        ),
        // The field wins over the legacy annotation (the API server only copies into unset fields).
        case(
            "field wins over annotation",
            "SECCOMP-UNCONFINED",
            vec![
                (ann, json!("unconfined")),
                (cann, json!("unconfined")),
                (
                    p(C0, "/securityContext/seccompProfile"),
                    json!({"type": "RuntimeDefault"}),
                ),
            ],
            vec![],
        ),
        // A container annotation applies to its container even when the pod field is set.
        case(
            "container annotation under pod field",
            "SECCOMP-UNCONFINED",
            vec![(cann, json!("unconfined"))],
            vec!["metadata.annotations[container.seccomp.security.alpha.kubernetes.io/app]"],
        ),
    ]);
}

#[test]
fn seccomp_restricted() {
    let every = vec![
        "spec.containers[0].securityContext.seccompProfile.type",
        "spec.ephemeralContainers[0].securityContext.seccompProfile.type",
        "spec.initContainers[0].securityContext.seccompProfile.type",
    ];
    let mut unset = case("nothing set", "SECCOMP-UNSET", vec![], every.clone());
    unset.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut containers = case(
        "every container Localhost/RuntimeDefault",
        "SECCOMP-UNSET",
        vec![
            (
                p(C0, "/securityContext/seccompProfile"),
                json!({"type": "Localhost", "localhostProfile": "x"}),
            ),
            (
                p(I0, "/securityContext/seccompProfile"),
                json!({"type": "RuntimeDefault"}),
            ),
            (
                p(E0, "/securityContext/seccompProfile"),
                json!({"type": "RuntimeDefault"}),
            ),
        ],
        vec![],
    );
    containers.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut partial = case(
        "one container set",
        "SECCOMP-UNSET",
        vec![(
            p(C0, "/securityContext/seccompProfile"),
            json!({"type": "RuntimeDefault"}),
        )],
        vec![
            "spec.ephemeralContainers[0].securityContext.seccompProfile.type",
            "spec.initContainers[0].securityContext.seccompProfile.type",
        ],
    );
    partial.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut annotation = case(
        "pod annotation runtime/default",
        "SECCOMP-UNSET",
        vec![(
            "/metadata/annotations/seccomp.security.alpha.kubernetes.io~1pod",
            json!("runtime/default"),
        )],
        vec![],
    );
    annotation.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut container_annotation = case(
        "container annotation",
        "SECCOMP-UNSET",
        vec![(
            "/metadata/annotations/container.seccomp.security.alpha.kubernetes.io~1app",
            json!("runtime/default"),
        )],
        vec![
            "spec.ephemeralContainers[0].securityContext.seccompProfile.type",
            "spec.initContainers[0].securityContext.seccompProfile.type",
        ],
    );
    container_annotation.removes = vec!["/spec/securityContext/seccompProfile"];
    let mut windows = case(
        "windows exempt",
        "SECCOMP-UNSET",
        vec![("/spec/os/name", json!("windows"))],
        vec![],
    );
    windows.removes = vec!["/spec/securityContext/seccompProfile"];
    run(vec![
        case("pod RuntimeDefault", "SECCOMP-UNSET", vec![], vec![]),
        // An explicit bad value is SECCOMP-UNCONFINED's, not reported twice.
        case(
            "pod Unconfined",
            "SECCOMP-UNSET",
            vec![(
                "/spec/securityContext/seccompProfile/type",
                json!("Unconfined"),
            )],
            vec![],
        ),
        unset,
        containers,
        partial,
        annotation,
        container_annotation,
        windows,
    ]);
}

#[test]
fn apparmor() {
    let ann = |c: &str| -> &'static str {
        Box::leak(
            format!("/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1{c}")
                .into_boxed_str(),
        )
    };
    run(vec![
        case(
            "pod Unconfined",
            "APPARMOR",
            vec![(
                "/spec/securityContext/appArmorProfile",
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.securityContext.appArmorProfile.type"],
        ),
        case(
            "container Unconfined",
            "APPARMOR",
            vec![(
                p(C0, "/securityContext/appArmorProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.containers[0].securityContext.appArmorProfile.type"],
        ),
        case(
            "init Unconfined",
            "APPARMOR",
            vec![(
                p(I0, "/securityContext/appArmorProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.initContainers[0].securityContext.appArmorProfile.type"],
        ),
        case(
            "ephemeral Unconfined",
            "APPARMOR",
            vec![(
                p(E0, "/securityContext/appArmorProfile"),
                json!({"type": "Unconfined"}),
            )],
            vec!["spec.ephemeralContainers[0].securityContext.appArmorProfile.type"],
        ),
        case(
            "RuntimeDefault and Localhost",
            "APPARMOR",
            vec![
                (
                    "/spec/securityContext/appArmorProfile",
                    json!({"type": "RuntimeDefault"}),
                ),
                (
                    p(C0, "/securityContext/appArmorProfile"),
                    json!({"type": "Localhost", "localhostProfile": "k8s-apparmor"}),
                ),
            ],
            vec![],
        ),
        case(
            "annotation unconfined",
            "APPARMOR",
            vec![(ann("app"), json!("unconfined"))],
            vec!["metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]"],
        ),
        case(
            "annotation for init container",
            "APPARMOR",
            vec![(ann("init"), json!("unconfined"))],
            vec!["metadata.annotations[container.apparmor.security.beta.kubernetes.io/init]"],
        ),
        case(
            "annotation allowed values",
            "APPARMOR",
            vec![
                (ann("app"), json!("runtime/default")),
                (ann("init"), json!("localhost/k8s-nginx")),
                (ann("debug"), json!("")),
            ],
            vec![],
        ),
    ]);
}

#[test]
fn selinux() {
    let mut cases = Vec::new();
    for ok in [
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
        "",
    ] {
        cases.push(case(
            "allowed type",
            "SELINUX",
            vec![(
                "/spec/securityContext/seLinuxOptions",
                json!({"type": ok, "level": "s0:c123,c456"}),
            )],
            vec![],
        ));
    }
    cases.extend(vec![
        case(
            "pod spc_t",
            "SELINUX",
            vec![(
                "/spec/securityContext/seLinuxOptions",
                json!({"type": "spc_t"}),
            )],
            vec!["spec.securityContext.seLinuxOptions.type"],
        ),
        case(
            "container type",
            "SELINUX",
            vec![(
                p(C0, "/securityContext/seLinuxOptions"),
                json!({"type": "unconfined_t"}),
            )],
            vec!["spec.containers[0].securityContext.seLinuxOptions.type"],
        ),
        case(
            "init user",
            "SELINUX",
            vec![(
                p(I0, "/securityContext/seLinuxOptions"),
                json!({"user": "system_u"}),
            )],
            vec!["spec.initContainers[0].securityContext.seLinuxOptions.user"],
        ),
        case(
            "ephemeral role",
            "SELINUX",
            vec![(
                p(E0, "/securityContext/seLinuxOptions"),
                json!({"role": "system_r"}),
            )],
            vec!["spec.ephemeralContainers[0].securityContext.seLinuxOptions.role"],
        ),
        case(
            "pod user and role",
            "SELINUX",
            vec![(
                "/spec/securityContext/seLinuxOptions",
                json!({"user": "u", "role": "r", "type": "container_t"}),
            )],
            vec![
                "spec.securityContext.seLinuxOptions.role",
                "spec.securityContext.seLinuxOptions.user",
            ],
        ),
    ]);
    run(cases);
}

#[test]
fn proc_mount() {
    run(vec![
        case(
            "Unmasked",
            "PROCMOUNT",
            vec![(p(C0, "/securityContext/procMount"), json!("Unmasked"))],
            vec!["spec.containers[0].securityContext.procMount"],
        ),
        case(
            "init Unmasked",
            "PROCMOUNT",
            vec![(p(I0, "/securityContext/procMount"), json!("Unmasked"))],
            vec!["spec.initContainers[0].securityContext.procMount"],
        ),
        case(
            "ephemeral Unmasked",
            "PROCMOUNT",
            vec![(p(E0, "/securityContext/procMount"), json!("Unmasked"))],
            vec!["spec.ephemeralContainers[0].securityContext.procMount"],
        ),
        case(
            "Default",
            "PROCMOUNT",
            vec![(p(C0, "/securityContext/procMount"), json!("Default"))],
            vec![],
        ),
    ]);
    // hostUsers: false relaxes the Baseline check but not procMount_restricted.
    let userns = pod_with(&[
        ("/spec/hostUsers", json!(false)),
        (p(C0, "/securityContext/procMount"), json!("Unmasked")),
    ]);
    let f = audit(std::slice::from_ref(&userns));
    let f: Vec<_> = f.iter().filter(|f| f.check == "PROCMOUNT").collect();
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].standards,
        ["pss:restricted:procMount_restricted", "polaris:procMount"]
    );
    let plain = pod_with(&[(p(C0, "/securityContext/procMount"), json!("Unmasked"))]);
    let f = audit(std::slice::from_ref(&plain));
    let f: Vec<_> = f.iter().filter(|f| f.check == "PROCMOUNT").collect();
    assert!(f[0].standards.contains(&"pss:baseline:procMount"));
    let baseline = canopy_audit::Policy {
        level: canopy_audit::LevelFilter::Baseline,
        ..Default::default()
    };
    assert!(
        paths(
            &audit_with(&baseline, std::slice::from_ref(&userns)),
            "PROCMOUNT"
        )
        .is_empty()
    );
    assert_eq!(
        paths(&audit_with(&baseline, &[plain]), "PROCMOUNT").len(),
        1
    );
    let restricted = canopy_audit::Policy {
        level: canopy_audit::LevelFilter::Restricted,
        ..Default::default()
    };
    assert_eq!(
        paths(&audit_with(&restricted, &[userns]), "PROCMOUNT").len(),
        1
    );
}
