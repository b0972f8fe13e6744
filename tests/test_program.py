"""The whole program under Pulumi's mocks, with Pulumi.dev.yaml as its config."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import program
from components.transform import SETTINGS_HASH_ANNOTATION
from tests.conftest import MANIFESTS, SHARED_MISSING_REASON, ProgramRun, RecordingMocks, stack_config

Runner = Callable[..., ProgramRun]
NEWEST = MANIFESTS / "v3.31.7" / "calico.yaml"

SMALL_MANIFEST = """\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: calico-kube-controllers, namespace: kube-system}
spec: {maxUnavailable: 1, selector: {matchLabels: {k8s-app: calico-kube-controllers}}}
---
kind: ConfigMap
apiVersion: v1
metadata: {name: calico-config, namespace: kube-system}
data:
  typha_service_name: "none"
  calico_backend: "bird"
  veth_mtu: "0"
  cni_network_config: |-
    {"name": "k8s-pod-network", "cniVersion": "0.3.1",
     "plugins": [{"type": "calico", "mtu": __CNI_MTU__, "ipam": {"type": "calico-ipam"}}]}
---
kind: DaemonSet
apiVersion: apps/v1
metadata: {name: calico-node, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      initContainers:
        - name: install-cni
          image: quay.io/calico/cni:v3.31.7
      containers:
        - name: calico-node
          image: quay.io/calico/node:v3.31.7
          env:
            - {name: CALICO_IPV4POOL_IPIP, value: "Always"}
            - {name: CALICO_IPV4POOL_VXLAN, value: "Never"}
"""


def small_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "calico.yaml"
    path.write_text(SMALL_MANIFEST, encoding="utf-8")
    return path


def env_of(run: ProgramRun) -> dict[str, Any]:
    daemonset = run.mocks.named("kube-system/calico-node", "kubernetes:apps/v1:DaemonSet")
    containers = daemonset.inputs["spec"]["template"]["spec"]["containers"]
    node = next(c for c in containers if c["name"] == "calico-node")
    return {entry["name"]: entry.get("value") for entry in node["env"]}


def test_registers_calico_and_pingtest(program_runner: Runner, tmp_path: Path) -> None:
    values = stack_config() | {"manifest": str(small_manifest(tmp_path))}
    run = program_runner(values)
    env = env_of(run)
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    assert env["CALICO_IPV4POOL_BLOCK_SIZE"] == "26"
    assert env["CALICO_IPV4POOL_VXLAN"] == "Always", "the dev stack uses VXLAN"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"
    config_map = run.mocks.named("kube-system/calico-config")
    assert config_map.inputs["data"]["veth_mtu"] == "1450"
    assert run.monitor.registrations["calico"].typ == "calico:network:CalicoNetwork"
    assert run.monitor.registrations["calico-manifest"].parent == "calico"
    assert run.monitor.registrations["kube-system/calico-node"].parent == "calico-manifest"
    assert run.monitor.registrations["pingtest-deployment"].parent == "pingtest"


def test_calico_waits_for_every_preflight(program_runner: Runner, tmp_path: Path) -> None:
    run = program_runner(stack_config() | {"manifest": str(small_manifest(tmp_path))})
    for calico_object in ("kube-system/calico-node", "kube-system/calico-config"):
        for node in ("pi-1", "pi-2", "pi-3"):
            preflight = f"nodes-{node}-preflight"
            assert run.depends_on(calico_object, preflight), f"{calico_object} does not wait for {preflight}"


def test_node_facts_exported(program_runner: Runner, tmp_path: Path) -> None:
    run = program_runner(stack_config() | {"manifest": str(small_manifest(tmp_path))})
    facts = run.outputs[program.OUTPUT_NODE_FACTS]
    assert sorted(facts) == ["pi-1", "pi-2", "pi-3"]
    assert facts["pi-1"]["architecture"] == "arm64"


def test_pingtest_after_calico(program_runner: Runner, tmp_path: Path) -> None:
    run = program_runner(stack_config() | {"manifest": str(small_manifest(tmp_path))})
    for calico_object in ("kube-system/calico-node", "kube-system/calico-config"):
        assert run.depends_on("pingtest-deployment", calico_object), f"pingtest does not wait for {calico_object}"
    deployment = run.mocks.named("pingtest-deployment")
    spread = deployment.inputs["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert deployment.inputs["spec"]["template"]["spec"]["containers"][0]["command"] == ["sleep", "infinity"]
    assert deployment.inputs["metadata"]["labels"] == {"app": "pingtest"}


def test_outputs(program_runner: Runner, tmp_path: Path) -> None:
    manifest = small_manifest(tmp_path)
    run = program_runner(stack_config() | {"manifest": str(manifest)})
    assert run.outputs[program.OUTPUT_VERSION] == "v3.31.7"
    assert run.outputs[program.OUTPUT_POD_CIDR] == "10.244.0.0/16"
    assert run.outputs[program.OUTPUT_BLOCK_SIZE] == 26
    assert run.outputs[program.OUTPUT_ENCAPSULATION] == "VXLAN"
    assert run.outputs[program.OUTPUT_POD_MTU] == 1450
    assert run.outputs[program.OUTPUT_MANIFEST_SHA256] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert run.outputs[program.OUTPUT_NODE_NAMES] == ["pi-1", "pi-2", "pi-3"]
    assert run.outputs[program.OUTPUT_PINGTEST] == "pingtest"


def test_pingtest_disabled(program_runner: Runner, tmp_path: Path) -> None:
    values = stack_config() | {"manifest": str(small_manifest(tmp_path)), "pingtest": {"enabled": False}}
    run = program_runner(values)
    assert not run.mocks.of_type("kubernetes:apps/v1:Deployment") or all(
        r.name != "pingtest-deployment" for r in run.mocks.of_type("kubernetes:apps/v1:Deployment")
    )


def test_mtu_change_rolls_calico_node_and_pingtest(program_runner: Runner, tmp_path: Path) -> None:
    base = stack_config() | {"manifest": str(small_manifest(tmp_path))}
    before = program_runner(base | {"mtu": 1450})
    after = program_runner(base | {"mtu": 1400})

    def annotation(run: ProgramRun, name: str) -> str:
        typ = "kubernetes:apps/v1:DaemonSet" if name.startswith("kube-system/") else "kubernetes:apps/v1:Deployment"
        return run.mocks.named(name, typ).inputs["spec"]["template"]["metadata"]["annotations"][
            SETTINGS_HASH_ANNOTATION
        ]

    for name in ("kube-system/calico-node", "pingtest-deployment"):
        assert annotation(before, name) != annotation(after, name), f"{name}'s pod template does not change"


def test_bad_config_registers_nothing(program_runner: Runner) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as raised:
        program_runner(stack_config() | {"podCidr": "10.96.0.0/16"}, mocks=mocks)
    assert "calico:podCidr" in str(raised.value)
    assert "calico:serviceCidr" in str(raised.value)
    assert mocks.resources == [], "nothing may be registered when the config is invalid"


def test_manifest_with_wrong_tag_registers_nothing(program_runner: Runner, tmp_path: Path) -> None:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as raised:
        program_runner(stack_config() | {"manifest": str(small_manifest(tmp_path)), "version": "v3.29.7"}, mocks=mocks)
    assert "v3.31.7" in str(raised.value)
    assert mocks.resources == []


@pytest.mark.skipif(not NEWEST.is_file(), reason=SHARED_MISSING_REASON)
def test_pinned_manifest_from_cache(program_runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pinned download path, served from a pre-filled cache: the program must need no network.
    digest = hashlib.sha256(NEWEST.read_bytes()).hexdigest()
    shutil.copyfile(NEWEST, tmp_path / f"{digest}.yaml")
    monkeypatch.setenv("CALICO_MANIFEST_CACHE", str(tmp_path))
    run = program_runner(stack_config())
    calico_objects = [r.name for r in run.monitor.all_registrations if r.parent == "calico-manifest"]
    assert len(calico_objects) == 39, "every object of the v3.31.7 manifest, and only those"
    assert env_of(run)["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    assert run.outputs[program.OUTPUT_MANIFEST_SHA256] == digest


def test_network_check_after_pingtest(program_runner: Runner, tmp_path: Path) -> None:
    def stdout(args: Any) -> str:
        if args.name.endswith("-preflight"):
            return '{"architecture": "arm64", "adminConf": true, "kubectl": "/usr/bin/kubectl", "warnings": []}'
        if args.name == "netcheck-await":
            return "PASS pod-ip-in-pool ...\nsummary: 11 passed, 0 failed, 1 skipped; the network check passed\n"
        return ""

    run = program_runner(
        stack_config() | {"manifest": str(small_manifest(tmp_path))}, mocks=RecordingMocks(command_stdout=stdout)
    )
    assert run.depends_on("netcheck-await", "pingtest-deployment"), "the check must wait for the pingtest pods"
    assert run.depends_on("netcheck-await", "kube-system/calico-node"), "the check must wait for calico-node"
    assert run.outputs[program.OUTPUT_NETWORK_CHECK] == "11 passed, 0 failed, 1 skipped; the network check passed"


def test_network_check_off_without_pingtest(program_runner: Runner, tmp_path: Path) -> None:
    values = stack_config() | {"manifest": str(small_manifest(tmp_path)), "pingtest": {"enabled": False}}
    run = program_runner(values)
    assert "netcheck-job" not in run.monitor.registrations
    assert run.outputs[program.OUTPUT_NETWORK_CHECK].startswith("not run")
