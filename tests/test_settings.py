"""Validation of the stack config: every rule, table-driven, asserting on the words of each message."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import settings as settings_module
from components.settings import ConfigError, parse_settings
from components.stackconfig import apply_defaults, load_schema, read_stack_file
from tests.conftest import SHARED_MISSING_REASON, load_shared_cases, stack_config

SCHEMA = load_schema()


def parse(overrides: dict[str, Any], *, secret_keys: tuple[str, ...] = (), drop: tuple[str, ...] = ()):
    values = stack_config()
    values.update(overrides)
    for key in drop:
        values.pop(key, None)
    return parse_settings(apply_defaults(SCHEMA, values), declared_keys=SCHEMA, secret_keys=secret_keys)


def problems_of(overrides: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(overrides, **kwargs)
    return raised.value.problems


def test_dev_stack_is_valid() -> None:
    settings = parse({})
    assert settings.pod_cidr == ipaddress.ip_network("10.244.0.0/16")
    assert settings.encapsulation == "VXLAN"
    assert settings.mtu == 1450, "VXLAN on a 1500-byte network leaves 1450"
    assert [node.name for node in settings.nodes] == ["pi-1", "pi-2", "pi-3"]
    assert all(node.user == "pi" for node in settings.nodes), "calico:sshUser applies to nodes without a user"
    assert settings.version == "v3.31.7"


@pytest.mark.parametrize(
    ("encapsulation", "node_mtu", "expected"),
    [
        ("IPIP", 9000, 8980),
        ("IPIP", 1500, 1480),
        ("IPIPCrossSubnet", 1500, 1480),
        ("VXLAN", 1500, 1450),
        ("VXLANCrossSubnet", 9000, 8950),
        ("None", 1500, 1500),
    ],
)
def test_pod_mtu_derived(encapsulation: str, node_mtu: int, expected: int) -> None:
    settings = parse({"encapsulation": encapsulation, "nodeMtu": node_mtu, "mtu": 0})
    assert settings.mtu == expected


def test_explicit_mtu_kept() -> None:
    assert parse({"encapsulation": "VXLAN", "mtu": 1400}).mtu == 1400


# (case, overrides, words every matching message must contain)
INVALID_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("cidr-not-parsed", {"podCidr": "10.244.0/16x"}, ["calico:podCidr", "not a CIDR", "pulumi config set"]),
    ("cidr-host-bits", {"podCidr": "10.244.0.1/16"}, ["calico:podCidr", "host bits", "10.244.0.0/16"]),
    ("service-cidr-host-bits", {"serviceCidr": "10.96.0.1/12"}, ["calico:serviceCidr", "10.96.0.0/12"]),
    (
        "pod-inside-service",
        {"podCidr": "10.96.0.0/16"},
        ["calico:podCidr", "calico:serviceCidr", "inside", "kubeadm config print init-defaults | grep Subnet"],
    ),
    ("pod-around-service", {"podCidr": "10.0.0.0/8"}, ["calico:podCidr", "calico:serviceCidr", "contains"]),
    ("pod-ipv6", {"podCidr": "fd00:10:244::/56"}, ["calico:podCidr", "IPv6"]),
    ("pool-smaller-than-block", {"podCidr": "10.244.0.0/28", "blockSize": 26}, ["calico:podCidr", "calico:blockSize"]),
    ("block-size-too-small", {"blockSize": 19}, ["calico:blockSize", "between 20 and 32"]),
    ("block-size-too-large", {"blockSize": 33}, ["calico:blockSize", "between 20 and 32"]),
    ("block-size-not-integer", {"blockSize": "big"}, ["calico:blockSize", "integer"]),
    ("mtu-below-minimum", {"mtu": 500}, ["calico:mtu", "576"]),
    ("mtu-vxlan-equal-to-nic", {"encapsulation": "VXLAN", "nodeMtu": 1500, "mtu": 1500}, ["calico:mtu", "1450"]),
    ("mtu-ipip-too-large", {"encapsulation": "IPIP", "nodeMtu": 1500, "mtu": 1490}, ["calico:mtu", "1480"]),
    ("node-mtu-too-small", {"nodeMtu": 100}, ["calico:nodeMtu", "576"]),
    ("encapsulation-unknown", {"encapsulation": "GRE"}, ["calico:encapsulation", "IPIP, IPIPCrossSubnet, VXLAN"]),
    ("encapsulation-case", {"encapsulation": "vxlan"}, ["calico:encapsulation", "set calico:encapsulation VXLAN"]),
    ("nodes-empty", {"nodes": []}, ["calico:nodes", "empty"]),
    ("nodes-not-list", {"nodes": "pi-1"}, ["calico:nodes", "list"]),
    (
        "nodes-duplicate-name",
        {"nodes": [{"name": "pi-1", "host": "192.0.2.11"}, {"name": "pi-1", "host": "192.0.2.12"}]},
        ["calico:nodes[1].name", "pi-1", "unique"],
    ),
    (
        "nodes-duplicate-host",
        {"nodes": [{"name": "pi-1", "host": "192.0.2.11"}, {"name": "pi-2", "host": "192.0.2.11"}]},
        ["calico:nodes[1].host", "192.0.2.11"],
    ),
    ("node-without-host", {"nodes": [{"name": "pi-1"}]}, ["calico:nodes[0].host", "required"]),
    ("node-bad-name", {"nodes": [{"name": "Pi_1", "host": "192.0.2.11"}]}, ["calico:nodes[0].name"]),
    ("node-bad-port", {"nodes": [{"name": "pi-1", "host": "192.0.2.11", "port": 70000}]}, ["calico:nodes[0].port"]),
    ("node-unknown-field", {"nodes": [{"name": "pi-1", "host": "192.0.2.11", "adress": "x"}]}, ["nodes[0].adress"]),
    (
        "pod-cidr-contains-node",
        {"podCidr": "192.0.0.0/16"},
        ["calico:podCidr", "pi-1", "192.0.2.11"],
    ),
    (
        "ssh-key-plain-text",
        {"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----"},
        ["calico:sshPrivateKey", "--secret"],
    ),
    ("version-unknown-no-manifest", {"version": "v3.26.1"}, ["calico:version", "calico:manifest", "v3.31.7"]),
    ("version-without-v", {"version": "3.31.7"}, ["calico:version", "v3.31.7"]),
    (
        "manifest-url-not-pinned",
        {"manifest": "https://mirror.example/calico.yaml"},
        ["calico:manifest", "calico:manifestSha256"],
    ),
    ("manifest-http", {"manifest": "http://mirror.example/calico.yaml"}, ["calico:manifest", "https"]),
    ("manifest-missing-file", {"manifest": "/nonexistent/calico.yaml"}, ["calico:manifest", "no such file"]),
    ("manifest-sha-format", {"manifestSha256": "abc"}, ["calico:manifestSha256", "64 hexadecimal"]),
    ("autodetection-unknown", {"ipAutodetectionMethod": "eth0"}, ["calico:ipAutodetectionMethod", "interface="]),
    ("autodetection-bad-cidr", {"ipAutodetectionMethod": "cidr=10.0.0.0/33"}, ["calico:ipAutodetectionMethod"]),
    ("install-dir-relative", {"calicoctlInstallDir": "bin"}, ["calico:calicoctlInstallDir", "absolute"]),
    ("calicoctl-url-no-arch", {"calicoctlUrl": "https://m.example/calicoctl-{version}"}, ["calico:calicoctlUrl"]),
    ("calicoctl-sha-bad-arch", {"calicoctlSha256": {"armv7": "0" * 64}}, ["calico:calicoctlSha256.armv7"]),
    ("misspelled-key", {"podCIDR": "10.244.0.0/16"}, ["calico:podCIDR", "calico:podCidr"]),
    ("pingtest-replicas-zero", {"pingtest": {"replicas": 0}}, ["calico:pingtest.replicas", "enabled"]),
    ("pingtest-unknown-field", {"pingtest": {"replica": 2}}, ["calico:pingtest.replica", "replicas"]),
    ("pingtest-image-untagged", {"pingtest": {"image": "busybox"}}, ["calico:pingtest.image", "tag"]),
    ("pingtest-image-empty-tag", {"pingtest": {"image": "busybox:"}}, ["calico:pingtest.image", "tag"]),
    ("pingtest-replicas-huge", {"pingtest": {"replicas": 10**9}}, ["calico:pingtest.replicas", "100"]),
    ("pingtest-one-pod-many-nodes", {"pingtest": {"replicas": 1}}, ["calico:pingtest.replicas", "3 nodes"]),
    ("pod-cidr-loopback", {"podCidr": "127.0.0.0/16"}, ["calico:podCidr", "loopback"]),
    ("pod-cidr-link-local", {"podCidr": "169.254.0.0/16"}, ["calico:podCidr", "link-local"]),
    ("pod-cidr-multicast", {"podCidr": "224.0.0.0/16"}, ["calico:podCidr", "multicast"]),
    ("pod-cidr-this-network", {"podCidr": "0.0.0.0/8"}, ["calico:podCidr", "this network"]),
    ("service-cidr-ipv6", {"serviceCidr": "fd00::/108"}, ["calico:serviceCidr", "IPv6"]),
    (
        "node-in-service-cidr",
        {"nodes": [{"name": "pi-1", "host": "10.96.0.1"}]},
        ["calico:serviceCidr", "pi-1", "10.96.0.1"],
    ),
    ("node-host-broadcast", {"nodes": [{"name": "pi-1", "host": "255.255.255.255"}]}, ["calico:nodes[0].host"]),
    ("node-host-unspecified", {"nodes": [{"name": "pi-1", "host": "0.0.0.0"}]}, ["calico:nodes[0].host"]),
    ("node-host-multicast", {"nodes": [{"name": "pi-1", "host": "224.0.0.1"}]}, ["calico:nodes[0].host"]),
    ("node-host-octal", {"nodes": [{"name": "pi-1", "host": "192.0.2.011"}]}, ["calico:nodes[0].host", "IPv4"]),
    ("node-host-number", {"nodes": [{"name": "pi-1", "host": "12345"}]}, ["calico:nodes[0].host", "IPv4"]),
    ("node-host-hex", {"nodes": [{"name": "pi-1", "host": "0x7f.1"}]}, ["calico:nodes[0].host", "IPv4"]),
    ("node-name-newline", {"nodes": [{"name": "pi-1\n", "host": "192.0.2.11"}]}, ["calico:nodes[0].name"]),
    ("node-user-newline", {"nodes": [{"name": "pi-1", "host": "192.0.2.11", "user": "root\n"}]}, ["nodes[0].user"]),
    (
        "node-host-key-newline",
        {"nodes": [{"name": "pi-1", "host": "192.0.2.11", "hostKey": "ssh-ed25519 AAAA\ntouch /x"}]},
        ["calico:nodes[0].hostKey"],
    ),
    (
        "nodes-duplicate-host-case",
        {"nodes": [{"name": "a", "host": "Node1.example"}, {"name": "b", "host": "node1.example"}]},
        ["calico:nodes[1].host"],
    ),
    (
        "nodes-duplicate-ipv6-spelling",
        {"nodes": [{"name": "a", "host": "2001:db8::1"}, {"name": "b", "host": "2001:DB8:0::1"}]},
        ["calico:nodes[1].host"],
    ),
    (
        "fewer-blocks-than-nodes",
        {"podCidr": "10.244.0.0/26", "blockSize": 26},
        ["calico:podCidr", "calico:blockSize", "3 nodes"],
    ),
    ("sha-trailing-newline", {"calicoctlSha256": {"amd64": "a" * 64 + "\n"}}, ["calico:calicoctlSha256.amd64"]),
    ("calicoctl-url-newline", {"calicoctlUrl": "https://m.example/{arch}\n/x"}, ["calico:calicoctlUrl"]),
    ("calicoctl-url-hash", {"calicoctlUrl": "https://m.example/{arch}#x"}, ["calico:calicoctlUrl"]),
    ("install-dir-double-slash", {"calicoctlInstallDir": "/usr//local/bin"}, ["calico:calicoctlInstallDir", "normal"]),
    ("install-dir-trailing-slash", {"calicoctlInstallDir": "/usr/local/bin/"}, ["calico:calicoctlInstallDir"]),
    ("install-dir-dot-dot", {"calicoctlInstallDir": "/usr/../etc"}, ["calico:calicoctlInstallDir"]),
    ("install-dir-proc", {"calicoctlInstallDir": "/proc/x"}, ["calico:calicoctlInstallDir", "system"]),
    ("install-dir-etc", {"calicoctlInstallDir": "/etc"}, ["calico:calicoctlInstallDir", "system"]),
    (
        "autodetection-ipv6-cidr",
        {"ipAutodetectionMethod": "cidr=2001:db8::/64"},
        ["calico:ipAutodetectionMethod", "IPv6"],
    ),
    ("autodetection-lookahead", {"ipAutodetectionMethod": "interface=(?!eth0).*"}, ["RE2"]),
    ("autodetection-can-reach-shell", {"ipAutodetectionMethod": "can-reach=$(touch /x)"}, ["can-reach"]),
    ("ssh-user-boolean", {"sshUser": False}, ["calico:sshUser", "string"]),
]


@pytest.mark.parametrize(
    ("overrides", "words"), [case[1:] for case in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_setting_rejected(overrides: dict[str, Any], words: list[str]) -> None:
    problems = problems_of(overrides)
    matching = [problem for problem in problems if all(word in problem for word in words)]
    assert matching, f"no message contains all of {words}; messages: {problems}"
    assert all("Fix:" in problem for problem in problems), f"a message lacks its fix: {problems}"


def test_invalid_ssh_user_reported_once() -> None:
    problems = problems_of({"sshUser": False})
    assert not any("nodes[" in p for p in problems), f"nodes without a user repeat the sshUser problem: {problems}"


def test_valid_odd_inputs_accepted() -> None:
    settings = parse(
        {
            "nodes": [
                {"name": "pi-1", "host": "pi-1.lan"},
                {"name": "pi-2", "host": "2001:db8::2"},
                {"name": "pi-3", "host": "127.0.0.1", "port": 2222},
            ],
            "ipAutodetectionMethod": "can-reach=pi-1.lan",
            "calicoctlInstallDir": "/opt/calico/bin",
        }
    )
    assert [node.host for node in settings.nodes] == ["pi-1.lan", "2001:db8::2", "127.0.0.1"]
    assert settings.calicoctl_install_dir == "/opt/calico/bin"


def test_one_pingtest_pod_on_one_node() -> None:
    settings = parse({"pingtest": {"replicas": 1}, "nodes": [{"name": "pi-1", "host": "192.0.2.11"}]})
    assert settings.pingtest.replicas == 1, "a one-node cluster needs only one pingtest pod"


def test_pod_cidr_missing() -> None:
    problems = problems_of({}, drop=("podCidr",))
    assert any("calico:podCidr" in p and "required" in p for p in problems), problems


def test_every_problem_reported_together() -> None:
    problems = problems_of({"podCidr": "10.96.0.0/16", "blockSize": 40, "encapsulation": "GRE", "nodes": []})
    keys = ["calico:podCidr", "calico:blockSize", "calico:encapsulation", "calico:nodes"]
    for key in keys:
        assert any(problem.startswith(key) for problem in problems), f"{key} missing from {problems}"


def test_secret_ssh_key_accepted() -> None:
    settings = parse({"sshPrivateKey": "[secret]"}, secret_keys=("sshPrivateKey",))
    assert settings.ssh_private_key_set


def test_unpinned_version_with_local_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "calico.yaml"
    manifest.write_text("kind: ConfigMap\n", encoding="utf-8")
    settings = parse(
        {"version": "v3.26.1", "manifest": str(manifest), "calicoctlSha256": {"arm64": "a" * 64}},
    )
    assert settings.manifest.location == str(manifest)
    assert settings.manifest.is_url is False


def test_pinned_url_needs_no_sha() -> None:
    url = "https://raw.githubusercontent.com/projectcalico/calico/v3.24.0/manifests/calico.yaml"
    settings = parse({"version": "v3.24.0", "manifest": url})
    assert settings.manifest.sha256 == "ef82b77d790bb7c4fd0e2b5f1463c19fae00ff3dedf46b584f3abc46af3052c4"


def test_partial_pingtest_completed_from_default() -> None:
    settings = parse({"pingtest": {"replicas": 2}})
    assert settings.pingtest.replicas == 2
    assert settings.pingtest.enabled is True, "fields the user left out come from Pulumi.yaml's default"


def test_stack_file_secure_value_is_secret(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((Path(settings_module.__file__).parents[1] / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.s.yaml").write_text(
        yaml.safe_dump({"config": {"calico:sshPrivateKey": {"secure": "AAABAxyz"}, "calico:podCidr": "10.244.0.0/16"}})
    )
    values = read_stack_file("s", tmp_path)
    assert values.secret_keys == frozenset({"sshPrivateKey"})
    assert values.values["podCidr"] == "10.244.0.0/16"


CONFIG_CASES = load_shared_cases("config")


def _case_overrides(case: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("calico:"): value for key, value in case["input"].items()}


@pytest.mark.skipif(not CONFIG_CASES, reason=SHARED_MISSING_REASON)
def test_shared_config_cases_all_known() -> None:
    known = {
        "mtu-vxlan-equal-to-nic",
        "jumbo-frames-ipip",
        "pod-cidr-inside-service-cidr",
        "pod-cidr-contains-node-lan",
        "pool-smaller-than-block",
        "cidr-with-host-bits",
    }
    assert {case["id"] for case in CONFIG_CASES} <= known, "a new config case needs its expectations below"


# Words each shared config case's error must contain, from the case's `expect` line.
SHARED_EXPECTATIONS: dict[str, list[str]] = {
    "mtu-vxlan-equal-to-nic": ["calico:mtu", "1450"],
    "pod-cidr-inside-service-cidr": [
        "Service subnet, not the pod subnet",
        "calico:podCidr",
        "calico:serviceCidr",
        "10.96.0.0/12",
        "kubeadm config print init-defaults | grep Subnet",
    ],
    "pod-cidr-contains-node-lan": ["calico:podCidr", "pi-1", "192.168.1.21"],
    "pool-smaller-than-block": ["calico:podCidr", "calico:blockSize"],
    "cidr-with-host-bits": ["calico:podCidr", "10.244.0.0/16"],
}


@pytest.mark.skipif(not CONFIG_CASES, reason=SHARED_MISSING_REASON)
@pytest.mark.parametrize("case", CONFIG_CASES, ids=[case["id"] for case in CONFIG_CASES])
def test_shared_config_case(case: dict[str, Any]) -> None:
    overrides = _case_overrides(case)
    if case["id"] == "jumbo-frames-ipip":
        assert parse(overrides).mtu == 8980
        return
    problems = problems_of(overrides)
    words = SHARED_EXPECTATIONS[case["id"]]
    assert any(all(word in p for word in words) for p in problems), f"{case['id']}: {words} not in {problems}"
    if case["id"] == "pod-cidr-contains-node-lan":
        assert not any("pi-2" in p for p in problems), "only the first node whose address it contains is named"
