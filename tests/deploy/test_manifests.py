"""The Kubernetes manifests in deploy/kubernetes, checked offline.

Why: a manifest is only tried for real on a cluster, where a typo in a field name, a
Service that selects no pod or a Secret no one created shows up as an outage. Here every
resource is validated against a pinned Kubernetes version's schema with unknown fields
as errors (`kubernetes-validate`, strict), and the references between resources are
followed: selectors, ConfigMaps and Secrets, volumes, `$(VAR)`s and the `cloche`
command lines.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cloche.config import Settings
from tests.deploy import cloche_cli

KUBERNETES = "1.33"  # the oldest minor still in wide use by managed clusters at the time of writing
DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
CLOCHE = "/opt/cloche/.venv/bin/cloche"
COMMON_LABELS = {"app.kubernetes.io/name": "cloche", "app.kubernetes.io/part-of": "cloche"}

Resource = dict[str, Any]


def _resources() -> list[tuple[str, Resource]]:
    out = []
    for path in sorted(DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return out


RESOURCES = _resources()


def _one(kind: str, name: str) -> Resource:
    found = [r for _, r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _workloads() -> list[Resource]:
    return [r for _, r in RESOURCES if r["kind"] in ("Deployment", "DaemonSet")]


def _pod_labels(kind: str, name: str) -> dict[str, str]:
    return _one(kind, name)["spec"]["template"]["metadata"]["labels"]


def _containers(pod: Resource) -> list[Resource]:
    return pod.get("initContainers", []) + pod["containers"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_kustomization_lists_every_file_and_each_holds_one_kind() -> None:
    kustomization = yaml.safe_load((DIR / "kustomization.yaml").read_text())
    files = {p.name for p in DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    for name in files:
        kinds = {r["kind"] for file, r in RESOURCES if file == name}
        assert len(kinds) == 1, f"{name} holds {kinds}"


@pytest.mark.parametrize(("file", "resource"), RESOURCES, ids=[f"{f}:{r['kind']}/{r['metadata']['name']}"
                                                              for f, r in RESOURCES])  # fmt: skip
def test_every_resource_validates_strictly(file: str, resource: Resource) -> None:
    try:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{file}: {exc.caught.message} at {'.'.join(map(str, exc.caught.absolute_path))}")


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The check above can fail: a misspelt probe is an error, not a field ignored."""
    broken = copy.deepcopy(_one("Deployment", "cloche-server"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_every_resource_is_labelled_and_in_the_namespace() -> None:
    for file, r in RESOURCES:
        meta = r["metadata"]
        assert COMMON_LABELS.items() <= meta["labels"].items(), f"{file}: {r['kind']}/{meta['name']}"
        if r["kind"] != "Namespace":
            assert meta["namespace"] == "cloche", f"{file}: {r['kind']}/{meta['name']}"
    for w in _workloads():
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = w["spec"]["template"]["metadata"]["labels"]
        assert pod == w["metadata"]["labels"], w["metadata"]["name"]
        assert w["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "cloche",
                                                        "app.kubernetes.io/component": component}  # fmt: skip


def test_the_service_reaches_the_server_pods_on_a_named_port() -> None:
    service = _one("Service", "cloche-server")
    assert _selects(service["spec"]["selector"], _pod_labels("Deployment", "cloche-server"))
    assert not _selects(service["spec"]["selector"], _pod_labels("DaemonSet", "cloche-node"))
    ports = {p["name"] for c in _one("Deployment", "cloche-server")["spec"]["template"]["spec"]["containers"]
             for p in c["ports"]}  # fmt: skip
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


@pytest.mark.parametrize(("pdb", "kind", "budget"), [("cloche-server", "Deployment", {"minAvailable": 1}),
                                                     ("cloche-node", "DaemonSet", {"maxUnavailable": 1})])  # fmt: skip
def test_each_disruption_budget_covers_its_workload_alone(pdb: str, kind: str, budget: dict[str, int]) -> None:
    spec = _one("PodDisruptionBudget", pdb)["spec"]
    assert {k: spec.get(k) for k in budget} == budget
    selector = spec["selector"]["matchLabels"]
    for w in _workloads():
        covered = _selects(selector, w["spec"]["template"]["metadata"]["labels"])
        assert covered == (w["kind"] == kind and w["metadata"]["name"] == pdb), w["metadata"]["name"]


def _pod_references(pod: Resource) -> set[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap and Secret a pod spec uses."""
    refs: set[tuple[str, str, str | None]] = set()
    for c in _containers(pod):
        for source in c.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    refs.add((kind, source[field]["name"], None))
        for var in c.get("env", []):
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in var.get("valueFrom", {}):
                    ref = var["valueFrom"][field]
                    refs.add((kind, ref["name"], ref["key"]))
    for volume in pod.get("volumes", []):
        for field, kind, name in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
            if field in volume:
                source = volume[field]
                refs |= {(kind, source[name], item["key"]) for item in source.get("items", [])}
                refs.add((kind, source[name], None))
    return refs


def _keys(r: Resource) -> set[str]:
    return set(r.get("data", {})) | set(r.get("stringData", {}))


def test_every_configmap_and_secret_a_pod_uses_exists_with_its_keys() -> None:
    for w in _workloads():
        refs = _pod_references(w["spec"]["template"]["spec"])
        assert {kind for kind, _, _ in refs} == {"ConfigMap", "Secret"}, w["metadata"]["name"]
        for kind, name, key in refs:
            if key is not None:
                assert key in _keys(_one(kind, name)), f"{w['metadata']['name']}: {kind}/{name} has no {key}"
            else:
                _one(kind, name)


def test_every_volume_is_declared_and_used() -> None:
    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        declared = {v["name"] for v in pod["volumes"]}
        mounted = {m["name"] for c in _containers(pod) for m in c["volumeMounts"]}
        assert mounted == declared, w["metadata"]["name"]


def _environment(pod: Resource, container: Resource) -> set[str]:
    names = {v["name"] for v in container.get("env", [])}
    for source in container.get("envFrom", []):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in source:
                names |= _keys(_one(kind, source[field]["name"]))
    return names


def test_every_variable_in_a_command_line_is_defined() -> None:
    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        for c in _containers(pod):
            used = set(re.findall(r"\$\((\w+)\)", " ".join(c["command"] + c["args"])))
            assert used <= _environment(pod, c), f"{w['metadata']['name']}: {used - _environment(pod, c)}"


def test_settings_name_real_cloche_settings() -> None:
    """A CLOCHE_* key that is no setting would be ignored silently."""
    fields = {f"CLOCHE_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    for kind, name in (("ConfigMap", "cloche-settings"), ("Secret", "cloche-env")):
        keys = {k for k in _keys(_one(kind, name)) if k.startswith("CLOCHE_")}
        assert keys and keys <= fields, f"{kind}/{name}: {sorted(keys - fields)}"
    for w in _workloads():
        for c in _containers(w["spec"]["template"]["spec"]):
            env = {v["name"] for v in c.get("env", []) if v["name"].startswith("CLOCHE_")}
            assert env <= fields, f"{w['metadata']['name']}: {sorted(env - fields)}"


def _cloche_argv(command: list[str]) -> list[str] | None:
    """What follows `cloche` in a command line or exec hook (also `sh -c "exec cloche ..."`),
    or None when it runs no cloche."""
    if command[:2] == ["/bin/sh", "-c"] and len(command) == 3:
        command = shlex.split(command[2])
    return command[command.index(CLOCHE) + 1 :] if CLOCHE in command else None


def _variables(argv: list[str]) -> list[str]:
    """Arguments with `$(NAME)` (Kubernetes) and `$NAME` (a shell) both written `$NAME`."""
    return [re.sub(r"\$\((\w+)\)", r"$\1", a) for a in argv]


def test_command_lines_name_real_cloche_commands() -> None:
    seen = set()
    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        for c in _containers(pod):
            argv = _cloche_argv(c["command"] + c.get("args", []))
            assert argv is not None or c in pod.get("initContainers", []), f"{c['name']} runs no cloche"
            if argv is not None:
                cloche_cli.check(argv, w["metadata"]["name"])
                seen.add(cloche_cli.split(argv)[0])
            pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if pre_stop:
                hook = _cloche_argv(pre_stop)
                assert hook is not None, f"{w['metadata']['name']} preStop runs no cloche"
                cloche_cli.check(hook, f"{w['metadata']['name']} preStop")
                seen.add(cloche_cli.split(hook)[0])
    assert seen == set(cloche_cli.CONTRACT)


def test_nodes_drain_before_they_stop() -> None:
    """A rolling upgrade moves a node's agents first: preStop drains the node `node run`
    registered (same --node-id, same etcd), one node at a time."""
    node = _one("DaemonSet", "cloche-node")
    assert node["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    pod = node["spec"]["template"]["spec"]
    container = pod["containers"][0]
    run = _variables(_cloche_argv(container["command"] + container["args"]) or [])
    drain = _variables(_cloche_argv(container["lifecycle"]["preStop"]["exec"]["command"]) or [])
    assert cloche_cli.split(drain)[0] == ("node", "drain")
    for option in ("--node-id", "--etcd"):
        assert drain[drain.index(option) + 1] == run[run.index(option) + 1], option
        assert drain[drain.index(option) + 1].lstrip("$") in _environment(pod, container), option
    assert float(drain[drain.index("--timeout-s") + 1]) < pod["terminationGracePeriodSeconds"]


def _mounts(workload: Resource, container: Resource) -> dict[str, tuple[str, bool]]:
    """Mount path -> (the claim behind it or the volume's name, read-only) for a container."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    out = {}
    for m in container["volumeMounts"]:
        volume = volumes[m["name"]]
        source = volume["persistentVolumeClaim"]["claimName"] if "persistentVolumeClaim" in volume else m["name"]
        out[m["mountPath"]] = (source, m.get("readOnly", False))
    return out


def test_each_node_credential_reaches_the_servers() -> None:
    """A node publishes its credential to CLUSTER_DIR/node-credentials/<id> and the servers
    read it there: one ReadWriteMany claim, written by the nodes, read by the servers."""
    claim = _one("PersistentVolumeClaim", "cloche-node-credentials")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for kind, name, read_only in (("DaemonSet", "cloche-node", False), ("Deployment", "cloche-server", True)):
        workload = _one(kind, name)
        container = workload["spec"]["template"]["spec"]["containers"][0]
        argv = container["args"]
        credentials = argv[argv.index("--cluster-dir") + 1] + "/node-credentials"
        assert _mounts(workload, container)[credentials] == ("cloche-node-credentials", read_only), name


def test_the_node_gets_the_host_it_manages() -> None:
    pod = _one("DaemonSet", "cloche-node")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["privileged"] is True
    host_paths = {v["hostPath"]["path"]: v["name"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/var/lib/cloche-node", "/run/cloche", "/dev"} <= set(host_paths)
    data = mounts[host_paths["/var/lib/cloche-node"]]
    assert container["args"][container["args"].index("--data-dir") + 1] == data["mountPath"]
    assert data["mountPropagation"] == "Bidirectional"


def test_the_server_runs_without_privilege() -> None:
    pod = _one("Deployment", "cloche-server")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for c in _containers(pod):
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}, c["name"]  # fmt: skip
    assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in v for v in pod["volumes"])
    assert _one("Deployment", "cloche-server")["spec"]["replicas"] == 2
