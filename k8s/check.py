#!/usr/bin/env python3
"""Static checks of k8s/ (Python 3 standard library + PyYAML; renders nothing).

    python3 k8s/check.py                      check the tree
    kubectl kustomize k8s/overlays/seed | python3 k8s/check.py -
                                              also check rendered manifests from stdin

Tree checks:
  - every kustomization's resources, components, generator files/envs and patch paths exist,
    and every manifest file sits in some kustomization (no orphans);
  - every overlay includes base/common (default-deny NetworkPolicy + DNS) and a Namespace
    labelled pod-security.kubernetes.io/enforce: restricted;
  - the overlays' nats configs (and the seed's dialer.conf) are identical to nats-config/*.conf
    (k8s/sync-nats-config.sh);
Object checks (tree and stdin):
  - every container: liveness and readiness probes, cpu and memory requests and limits, the
    restricted securityContext (runAsNonRoot, runAsUser 65532, allowPrivilegeEscalation false,
    readOnlyRootFilesystem true, capabilities drop ALL and add nothing, seccomp RuntimeDefault),
    an image pinned to a version tag or digest (never :latest or untagged), no secret-looking
    env var with a literal value;
  - every pod: no service account token automount (pod or ServiceAccount says false);
  - every Role/ClusterRole: read-only verbs, no wildcards, no secrets, no pods/exec or attach.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check.py needs PyYAML (pip install pyyaml)")

K8S = Path(__file__).resolve().parent
REPO = K8S.parent
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
RUN_TO_COMPLETION = {"Job", "CronJob"}
READ_VERBS = {"get", "list", "watch"}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|DATABASE_URL", re.I)
NATS_ROLES = ("seed", "leaf", "trunk")


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def check(self, ok: bool, where: str, what: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{where}: {what}")


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def load_docs(text: str, where: str, r: Report) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        r.check(False, where, f"invalid YAML: {e}")
        return []
    r.check(True, where, "parses")
    return docs


# --- kustomizations ----------------------------------------------------------------------------


def kustomization_in(d: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (d / name).is_file():
            return d / name
    return None


def strip_key(entry: str) -> str:
    """`key=path` of a generator's files: the path."""
    return entry.split("=", 1)[1] if "=" in entry else entry


def check_kustomization(path: Path, r: Report, referenced: set[Path]) -> dict:
    docs = load_docs(path.read_text(), rel(path), r)
    k = docs[0] if docs else {}
    d = path.parent
    for key in ("resources", "components"):
        for entry in k.get(key) or []:
            target = (d / entry).resolve()
            if target.is_dir():
                r.check(kustomization_in(target) is not None, rel(path),
                        f"{key}: {entry} has no kustomization")
            else:
                r.check(target.is_file(), rel(path), f"{key}: {entry} does not exist")
                referenced.add(target)
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in k.get(key) or []:
            for entry in (gen.get("files") or []) + (gen.get("envs") or []):
                target = (d / strip_key(entry)).resolve()
                r.check(target.is_file(), rel(path), f"{key} {gen.get('name')}: {entry} does not exist")
    for patch in k.get("patches") or []:
        if "path" in patch:
            target = (d / patch["path"]).resolve()
            r.check(target.is_file(), rel(path), f"patch {patch['path']} does not exist")
            referenced.add(target)
        else:
            r.check("patch" in patch, rel(path), "patch without path or patch")
    return k


def check_tree(r: Report) -> list[tuple[str, dict]]:
    """Checks the kustomize layout; returns the objects of every manifest file."""
    referenced: set[Path] = set()
    kustomizations = sorted(p for p in K8S.rglob("*") if p.name in KUSTOMIZATION_NAMES)
    r.check(bool(kustomizations), "k8s", "no kustomization found")
    parsed = {p: check_kustomization(p, r, referenced) for p in kustomizations}

    objects: list[tuple[str, dict]] = []
    for f in sorted(K8S.rglob("*.y*ml")):
        if f.name in KUSTOMIZATION_NAMES:
            continue
        r.check(f.resolve() in referenced, rel(f), "not listed in any kustomization")
        for doc in load_docs(f.read_text(), rel(f), r):
            objects.append((rel(f), doc))

    overlays = K8S / "overlays"
    for role in NATS_ROLES:
        d = overlays / role
        kpath = kustomization_in(d)
        r.check(kpath is not None, rel(d), "overlay missing")
        if kpath is None:
            continue
        k = parsed[kpath]
        r.check("../../base/common" in (k.get("components") or []), rel(kpath),
                "does not include ../../base/common (default-deny, DNS)")
        r.check(bool(k.get("namespace")), rel(kpath), "sets no namespace")
        namespaces = [doc for f, doc in objects
                      if Path(REPO / f).parent == d and doc.get("kind") == "Namespace"]
        r.check(any(doc["metadata"].get("name") == k.get("namespace") for doc in namespaces),
                rel(kpath), f"no Namespace {k.get('namespace')} in the overlay")
        # The nats config copies (the seed's overlay also runs the dialer).
        for conf in (role, "dialer") if role == "seed" else (role,):
            src, copy = REPO / "nats-config" / f"{conf}.conf", d / f"{conf}.conf"
            r.check(copy.is_file() and src.is_file() and copy.read_bytes() == src.read_bytes(),
                    rel(copy), f"differs from nats-config/{conf}.conf (run k8s/sync-nats-config.sh)")
    return objects


# --- objects -----------------------------------------------------------------------------------


def pod_spec(obj: dict) -> dict | None:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def check_container(c: dict, pod: dict, kind: str, where: str, r: Report, init: bool) -> None:
    w = f"{where} container {c.get('name')}"
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}

    def eff(key):
        return csc[key] if key in csc else psc.get(key)

    if not init and kind not in RUN_TO_COMPLETION:
        r.check("livenessProbe" in c, w, "no livenessProbe")
        r.check("readinessProbe" in c, w, "no readinessProbe")
    res = c.get("resources") or {}
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            r.check(resource in (res.get(bound) or {}), w, f"no {resource} {bound[:-1]}")
    r.check(eff("runAsNonRoot") is True, w, "runAsNonRoot is not true")
    r.check(eff("runAsUser") == 65532, w, f"runAsUser is {eff('runAsUser')}, not 65532")
    r.check(csc.get("allowPrivilegeEscalation") is False, w, "allowPrivilegeEscalation is not false")
    r.check(csc.get("readOnlyRootFilesystem") is True, w, "readOnlyRootFilesystem is not true")
    r.check(csc.get("privileged") is not True, w, "privileged")
    caps = csc.get("capabilities") or {}
    r.check("ALL" in (caps.get("drop") or []), w, "capabilities do not drop ALL")
    r.check(not caps.get("add"), w, f"capabilities add {caps.get('add')}")
    r.check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", w,
            "seccompProfile is not RuntimeDefault")
    image = c.get("image") or ""
    r.check(image_pinned(image), w, f"image {image!r} is not pinned (:latest or no tag)")
    for env in c.get("env") or []:
        if SECRET_NAME.search(env.get("name", "")):
            r.check("value" not in env, w, f"env {env['name']} has a literal value; use secretKeyRef")


def check_objects(objects: list[tuple[str, dict]], r: Report) -> None:
    sa_no_automount = {(doc.get("metadata") or {}).get("name")
                       for _, doc in objects
                       if doc.get("kind") == "ServiceAccount" and doc.get("automountServiceAccountToken") is False}
    for where, obj in objects:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        w = f"{where}: {kind} {name}"
        if kind in WORKLOAD_KINDS:
            pod = pod_spec(obj) or {}
            r.check(bool(pod.get("containers")), w, "no containers")
            for c in pod.get("containers") or []:
                check_container(c, pod, kind, w, r, init=False)
            for c in pod.get("initContainers") or []:
                check_container(c, pod, kind, w, r, init=True)
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                r.check(pod.get(key) is not True, w, f"{key}")
            for v in pod.get("volumes") or []:
                r.check("hostPath" not in v, w, f"hostPath volume {v.get('name')}")
            automount = pod.get("automountServiceAccountToken")
            sa = pod.get("serviceAccountName", "default")
            r.check(automount is False or (automount is None and sa in sa_no_automount), w,
                    "service account token automounted (set automountServiceAccountToken: false)")
        elif kind in ("Role", "ClusterRole"):
            for rule in obj.get("rules") or []:
                verbs, resources = set(rule.get("verbs") or []), set(rule.get("resources") or [])
                groups = set(rule.get("apiGroups") or [])
                r.check("*" not in verbs | resources | groups, w, f"wildcard in {rule}")
                r.check(verbs <= READ_VERBS, w, f"verbs beyond get/list/watch: {sorted(verbs - READ_VERBS)}")
                r.check(not ("" in groups and "secrets" in resources), w, "grants access to secrets")
                r.check(not resources & {"pods/exec", "pods/attach"}, w, "grants pods/exec or pods/attach")
        elif kind == "Namespace":
            labels = (obj.get("metadata") or {}).get("labels") or {}
            r.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", w,
                    "not labelled pod-security.kubernetes.io/enforce: restricted")


def main(argv: list[str]) -> int:
    r = Report()
    objects = check_tree(r)
    if "-" in argv[1:]:
        objects += [("<stdin>", doc) for doc in load_docs(sys.stdin.read(), "<stdin>", r)]
    check_objects(objects, r)
    workloads = sum(1 for _, o in objects if o.get("kind") in WORKLOAD_KINDS)
    for f in r.failures:
        print(f"FAIL {f}")
    print(f"checked {len(objects)} objects ({workloads} workloads)")
    print(f"k8s: {r.passed} passed, {len(r.failures)} failed")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
