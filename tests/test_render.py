"""The offline render, end to end as a subprocess, on real manifests and on bad stacks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, SHARED_MISSING_REASON, real_manifest_paths

REAL_MANIFESTS = real_manifest_paths()


def render(*arguments: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "components.render", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def node_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    daemonset = find(objects, "DaemonSet", "calico-node")
    container = next(c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == "calico-node")
    return {entry["name"]: entry.get("value") for entry in container["env"]}


def project_with_stack(tmp_path: Path, stack: str, config: dict[str, Any]) -> Path:
    shutil.copyfile(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    return tmp_path


DEV = {
    "calico:podCidr": "10.244.0.0/16",
    "calico:encapsulation": "VXLAN",
    "calico:nodes": [{"name": "pi-1", "host": "192.0.2.11"}],
}


@pytest.mark.skipif(not REAL_MANIFESTS, reason=SHARED_MISSING_REASON)
@pytest.mark.parametrize("manifest", REAL_MANIFESTS, ids=[p.parent.name for p in REAL_MANIFESTS])
def test_render_dev_stack(manifest: Path) -> None:
    result = render("--stack", "dev", "--manifest", str(manifest))
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    env = node_env(objects)
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16", "the dev stack's pod CIDR"
    assert env["CALICO_IPV4POOL_VXLAN"] == "Always", "the dev stack's encapsulation"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"
    assert find(objects, "ConfigMap", "calico-config")["data"]["veth_mtu"] == "1450", "the dev stack's MTU"
    assert find(objects, "Deployment", "pingtest")["spec"]["replicas"] == 3
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert len(jobs) == 1, "the network check's Job is rendered too"
    assert jobs[0]["metadata"]["name"].startswith("netcheck-")


@pytest.mark.skipif(not REAL_MANIFESTS, reason=SHARED_MISSING_REASON)
def test_render_writes_output_file(tmp_path: Path) -> None:
    output = tmp_path / "rendered.yaml"
    result = render("--stack", "dev", "--manifest", str(REAL_MANIFESTS[0]), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "policy/v1" in result.stderr, "the PodDisruptionBudget note reaches the user"
    assert node_env(list(yaml.safe_load_all(output.read_text())))["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"


def test_render_pod_cidr_in_service_cidr(tmp_path: Path) -> None:
    project = project_with_stack(tmp_path, "bad", DEV | {"calico:podCidr": "10.96.0.0/16"})
    result = render("--stack", "bad", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "calico:podCidr" in result.stderr
    assert "calico:serviceCidr" in result.stderr
    assert result.stdout == "", "nothing is rendered from a bad config"


@pytest.mark.parametrize(
    "content",
    [b"- a\n", b"config: [calico:podCidr]\n", b"config:\n  calico:podCidr: [10.244.0.0/16\n", b"plain\n", b"\xff\xfe"],
    ids=["list", "config-list", "unclosed", "scalar", "not-utf8"],
)
def test_render_malformed_stack_file(tmp_path: Path, content: bytes) -> None:
    project = project_with_stack(tmp_path, "odd", DEV)
    (project / "Pulumi.odd.yaml").write_bytes(content)
    result = render("--stack", "odd", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "Pulumi.odd.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_json_string_nodes(tmp_path: Path) -> None:
    config = DEV | {"calico:nodes": '[{"name": "pi-1", "host": "192.0.2.11"}]', "calico:manifest": "missing.yaml"}
    project = project_with_stack(tmp_path, "json", config)
    result = render("--stack", "json", cwd=project)
    assert "calico:nodes" not in result.stderr, "a JSON string for an object key is parsed as the program does"
    assert "calico:manifest" in result.stderr, "validation still runs: the manifest file is missing"


def test_render_unwritable_output() -> None:
    fixture = REPO / "tests" / "fixtures" / "manifest-helm3.yaml"
    result = render("--stack", "dev", "--manifest", str(fixture), "--output", "/nonexistent/dir/out.yaml")
    assert result.returncode == 2, result.stderr
    assert "--output" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_unknown_stack(tmp_path: Path) -> None:
    project = project_with_stack(tmp_path, "dev", DEV)
    result = render("--stack", "prod", cwd=project)
    assert result.returncode == 2
    assert "Pulumi.prod.yaml" in result.stderr


def test_render_unreachable_manifest_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}/calico.yaml"
    project = project_with_stack(tmp_path, "net", DEV | {"calico:manifest": url, "calico:manifestSha256": "a" * 64})
    started = time.monotonic()
    result = render("--stack", "net", cwd=project, timeout=60)
    assert time.monotonic() - started < 30, "the download must fail within its timeout"
    assert result.returncode == 1, result.stderr
    assert url in result.stderr
    assert "calico:manifest" in result.stderr


@pytest.mark.skipif(not REAL_MANIFESTS, reason=SHARED_MISSING_REASON)
def test_render_literal_mtu_rejected(tmp_path: Path) -> None:
    text = REAL_MANIFESTS[-1].read_text(encoding="utf-8")
    assert '"mtu": __CNI_MTU__' in text
    manifest = tmp_path / "calico.yaml"
    manifest.write_text(text.replace('"mtu": __CNI_MTU__', '"mtu": 1500'), encoding="utf-8")
    result = render("--stack", "dev", "--manifest", str(manifest))
    assert result.returncode == 2, result.stderr
    assert "calico-config" in result.stderr
    assert "cni_network_config" in result.stderr


def test_render_not_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "calico.yaml"
    manifest.write_text("{% helm %}\ndatastore: kubernetes\n{% endhelm %}\n", encoding="utf-8")
    result = render("--stack", "dev", "--manifest", str(manifest))
    assert result.returncode == 2, result.stderr
    assert str(manifest) in result.stderr, "the message says where the file came from"
