"""The node side of the stack: a preflight and a verified calicoctl install on every node, over SSH.

For each node, `NodeSetup` registers two `pulumi_command.remote.Command` resources:

- `<name>-<node>-preflight` runs scripts/preflight.sh. It changes nothing, prints the node's facts as
  JSON and fails when the node cannot run Calico as configured (32-bit OS, NIC MTU below
  calico:nodeMtu, node address inside the pod CIDR, sudo that asks for a password, missing overlay
  kernel module, no calicoctl checksum for the node's architecture, a tool the install needs missing,
  an install directory that is missing or writable by others than root).
- `<name>-<node>-calicoctl` runs scripts/install.sh after the preflight, and scripts/remove.sh on
  delete. Its triggers are the release, the architecture, the URL template, the expected sha256 and
  the install directory, so only a change of one of them reinstalls.

The script texts are built by the pure functions `preflight_script`, `install_script` and
`remove_command`; the tests run exactly those texts against real sshd hosts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import remote

from components import versions
from components.settings import ENCAPSULATIONS, Node, Settings

NODE_SETUP_TYPE = "calico:nodes:NodeSetup"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
COMMON_SCRIPT = "common.sh"

# calicoctl reads this file when no --config is given.
CALICOCTL_CONFIG = "/etc/calico/calicoctl.cfg"
# kubeadm writes the cluster-admin kubeconfig here on control-plane nodes only.
KUBECONFIG_PATH = "/etc/kubernetes/admin.conf"
# Record of the files the installs of this program put on the node, so that a delete removes those and
# nothing else. Lines "binary <path> <install id> <sha256>", "config <path> <sha256>", "directory <path>", and
# "backup <path> <kept path>" for a calicoctl the node had before. Binary paths have the links of their
# directory resolved.
INSTALL_RECORD = "/etc/calico/calicoctl-install.record"

# pulumi-command 1.x dials DIAL_ERROR_LIMIT + 1 times, each bounded by PER_DIAL_TIMEOUT_SECONDS, with
# 0.1 s and 0.15 s pauses between them, so an unreachable node fails after at most DIAL_DEADLINE_SECONDS.
PER_DIAL_TIMEOUT_SECONDS = 10
DIAL_ERROR_LIMIT = 2
DIAL_DEADLINE_SECONDS = (DIAL_ERROR_LIMIT + 1) * PER_DIAL_TIMEOUT_SECONDS + 1

# The scripts arrive on stdin, so the provider's error message shows these short commands, not the script.
PREFLIGHT_COMMAND = "sh -s preflight"
INSTALL_COMMAND = "sh -s install"

RELEASE_SHA256SUMS = "release SHA256SUMS"

# The overlay to suggest when a node lacks the kernel module of the configured one.
_ALTERNATIVES = {"vxlan": ("IPIP", "ipip"), "ipip": ("VXLAN", "vxlan")}


class NodeScriptError(Exception):
    """A node script's output that the program cannot use; the message names the node."""


@dataclass(frozen=True)
class CalicoctlSource:
    """Download URL and checksum of one node's calicoctl."""

    url: str
    """Download URL of the binary."""
    sha256: str | None
    """Expected sha256, or None when it comes from the release's SHA256SUMS (or is unknown)."""
    checksum_source: str
    """Origin of `sha256`, for messages."""
    sha256sums_url: str | None
    """The release's SHA256SUMS asset when `sha256` is None and the release publishes one."""


def calicoctl_source(settings: Settings, architecture: str) -> CalicoctlSource:
    """Return the URL and checksum of calicoctl for `settings.version` on one architecture.

    The checksum is calico:calicoctlSha256.<arch> when set, else the project's pin, else (upstream
    download only) the release's SHA256SUMS. Without any of them the sha256 and the SHA256SUMS URL are
    both None, and the node scripts fail naming calico:calicoctlSha256.<arch>.
    """
    version = settings.version
    if settings.calicoctl_url:
        url = settings.calicoctl_url.replace("{version}", version).replace("{arch}", architecture)
    else:
        url = versions.calicoctl_release_url(version, architecture)
    configured = settings.calicoctl_sha256.get(architecture)
    if configured:
        return CalicoctlSource(url, configured, f"calico:calicoctlSha256.{architecture}", None)
    pinned = versions.CALICOCTL_SHA256.get(version, {}).get(architecture)
    if pinned:
        return CalicoctlSource(url, pinned, f"the project's pin for {version} linux-{architecture}", None)
    if not settings.calicoctl_url and versions.release_publishes_sha256sums(version):
        sums_url = versions.calicoctl_release_sha256sums_url(version)
        return CalicoctlSource(url, None, f"the release's SHA256SUMS ({sums_url})", sums_url)
    return CalicoctlSource(url, None, "none", None)


def checksum_architectures(settings: Settings) -> str:
    """Return the architectures whose calicoctl can be verified, or "release" when SHA256SUMS covers all."""
    if not settings.calicoctl_url and versions.release_publishes_sha256sums(settings.version):
        return "release"
    known = set(settings.calicoctl_sha256) | set(versions.CALICOCTL_SHA256.get(settings.version, {}))
    return " ".join(sorted(known))


def install_triggers(settings: Settings, architecture: str) -> list[str]:
    """Return the values whose change reinstalls calicoctl on a node, and nothing else."""
    source = calicoctl_source(settings, architecture)
    return [
        settings.version,
        architecture,
        settings.calicoctl_url or "",
        source.sha256 or RELEASE_SHA256SUMS,
        settings.calicoctl_install_dir,
    ]


def install_id(settings: Settings, architecture: str) -> str:
    """Return a short hash of the install triggers, which distinguishes installs in the install record."""
    encoded = json.dumps(install_triggers(settings, architecture)).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _render(script: str, assignments: Mapping[str, str]) -> str:
    # common.sh contains the functions the node scripts share, and each node gets one self-contained text.
    body = (SCRIPTS_DIR / COMMON_SCRIPT).read_text(encoding="utf-8") + (SCRIPTS_DIR / script).read_text(
        encoding="utf-8"
    )
    lines = ["#!/bin/sh", f"# {script} of the calico Pulumi program, with its settings as shell assignments."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in assignments.items()]
    # The body is one brace group: the shell reads all of it before running anything, and no command in
    # it can read the rest of the script from stdin.
    return "\n".join(lines) + "\n{\n" + body + "} </dev/null\n"


def preflight_script(settings: Settings, node: Node) -> str:
    """Return the preflight script text for one node."""
    module = ENCAPSULATIONS[settings.encapsulation].kernel_module or ""
    alternative_encapsulation, alternative_module = _ALTERNATIVES.get(module, ("", ""))
    return _render(
        "preflight.sh",
        {
            "NODE_NAME": node.name,
            "NODE_HOST": node.host,
            "NODE_MTU": str(settings.node_mtu),
            "POD_CIDR": str(settings.pod_cidr),
            "ENCAPSULATION": settings.encapsulation,
            "KERNEL_MODULE": module,
            "ALTERNATIVE_ENCAPSULATION": alternative_encapsulation,
            "ALTERNATIVE_MODULE": alternative_module,
            "AUTODETECTION_METHOD": settings.ip_autodetection_method or "",
            "CHECKSUM_ARCHITECTURES": checksum_architectures(settings),
            "INSTALL_DIR": settings.calicoctl_install_dir,
            "CALICOCTL_VERSION": settings.version,
            "KUBECONFIG_PATH": KUBECONFIG_PATH,
        },
    )


def install_script(settings: Settings, node: Node, architecture: str) -> str:
    """Return the calicoctl install script text for one node of the given architecture."""
    source = calicoctl_source(settings, architecture)
    return _render(
        "install.sh",
        {
            "NODE_NAME": node.name,
            "CALICOCTL_VERSION": settings.version,
            "ARCH": architecture,
            "CALICOCTL_URL": source.url,
            "EXPECTED_SHA256": source.sha256 or "",
            "CHECKSUM_SOURCE": source.checksum_source,
            "SHA256SUMS_URL": source.sha256sums_url or "",
            "INSTALL_DIR": settings.calicoctl_install_dir,
            "INSTALL_ID": install_id(settings, architecture),
            "CALICOCTL_CONFIG": CALICOCTL_CONFIG,
            "KUBECONFIG_PATH": KUBECONFIG_PATH,
            "INSTALL_RECORD": INSTALL_RECORD,
        },
    )


def remove_script(settings: Settings, node: Node, architecture: str) -> str:
    """Return the script text that undoes the install of `install_script` with the same arguments."""
    return _render(
        "remove.sh",
        {
            "NODE_NAME": node.name,
            "INSTALL_DIR": settings.calicoctl_install_dir,
            "INSTALL_ID": install_id(settings, architecture),
            "CALICOCTL_CONFIG": CALICOCTL_CONFIG,
            "INSTALL_RECORD": INSTALL_RECORD,
        },
    )


def remove_command(settings: Settings, node: Node, architecture: str) -> str:
    """Return the delete command of a node's install.

    It carries the whole script instead of reading stdin, because what the provider sends on stdin
    during a delete is the install script of the stored state.
    """
    return f"sh -c {shlex.quote(remove_script(settings, node, architecture))} calicoctl-remove"


def _last_lines(text: str, count: int = 10) -> str:
    return "\n".join(text.splitlines()[-count:])


def parse_facts(node: Node, stdout: str | None) -> dict[str, Any]:
    """Return the facts a node's preflight printed; raise NodeScriptError naming the node otherwise."""
    text = stdout or ""
    # A login script of the user may print lines of its own, so the facts are the last JSON line.
    json_lines = [line for line in text.splitlines() if line.startswith("{")]
    if not json_lines:
        raise NodeScriptError(
            f"the preflight of node {node.name} ({node.host}) printed no facts; its output ended with:\n"
            f"{_last_lines(text) or '(nothing)'}"
        )
    try:
        facts = json.loads(json_lines[-1])
    except json.JSONDecodeError as error:
        raise NodeScriptError(
            f"the preflight of node {node.name} ({node.host}) printed facts that are not valid JSON ({error}):\n"
            f"{json_lines[-1][:500]}"
        ) from error
    if not isinstance(facts, dict) or facts.get("architecture") not in versions.ARCHITECTURES:
        raise NodeScriptError(
            f"the preflight of node {node.name} ({node.host}) reported no supported architecture:\n"
            f"{json_lines[-1][:500]}"
        )
    return facts


def connection_args(node: Node, private_key: pulumi.Input[str] | None) -> remote.ConnectionArgs:
    """Return the SSH connection of one node; `private_key` None means the SSH agent of SSH_AUTH_SOCK."""
    return remote.ConnectionArgs(
        host=node.host,
        port=node.port,
        user=node.user,
        private_key=private_key,
        host_key=node.host_key,
        per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        dial_error_limit=DIAL_ERROR_LIMIT,
    )


def _check_credentials(private_key: pulumi.Input[str] | None) -> None:
    if private_key is not None or os.environ.get("SSH_AUTH_SOCK"):
        return
    message = (
        "calico:sshPrivateKey is empty and SSH_AUTH_SOCK is not set, so no SSH key can log in to the nodes. "
        "Fix: pulumi config set --secret calico:sshPrivateKey < ~/.ssh/id_ed25519, or start ssh-agent and "
        "ssh-add the key before pulumi up."
    )
    # A preview runs nothing on the nodes, so it only warns.
    if pulumi.runtime.is_dry_run():
        pulumi.log.warn(message)
        return
    raise pulumi.RunError(message)


@dataclass
class NodeSetupArgs:
    """Inputs of NodeSetup."""

    settings: Settings
    """The validated stack settings; their nodes are the ones set up."""
    ssh_private_key: pulumi.Input[str] | None
    """Private key for every node (made a secret here), or None for the SSH agent (SSH_AUTH_SOCK)."""


class NodeSetup(pulumi.ComponentResource):
    """The preflight and the calicoctl install of every node, run in parallel."""

    preflights: list[pulumi.Resource]
    """Every node's preflight; the Calico objects depend on these."""
    installs: list[pulumi.Resource]
    """Every node's calicoctl install."""
    facts: pulumi.Output[dict[str, Any]]
    """Node name to the facts its preflight reported."""

    def __init__(self, name: str, args: NodeSetupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(NODE_SETUP_TYPE, name, None, opts)
        settings = args.settings
        _check_credentials(args.ssh_private_key)
        private_key = None if args.ssh_private_key is None else pulumi.Output.secret(args.ssh_private_key)

        self.preflights = []
        self.installs = []
        node_facts: list[pulumi.Output[dict[str, Any]]] = []
        for node in settings.nodes:
            connection = connection_args(node, private_key)
            preflight = remote.Command(
                f"{name}-{node.name}-preflight",
                remote.CommandArgs(
                    connection=connection,
                    create=PREFLIGHT_COMMAND,
                    stdin=preflight_script(settings, node),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            facts = preflight.stdout.apply(functools.partial(_read_facts, node, preflight))
            architecture = facts.apply(_architecture)
            install = remote.Command(
                f"{name}-{node.name}-calicoctl",
                remote.CommandArgs(
                    connection=connection,
                    create=INSTALL_COMMAND,
                    stdin=architecture.apply(functools.partial(install_script, settings, node)),
                    delete=architecture.apply(functools.partial(remove_command, settings, node)),
                    triggers=architecture.apply(functools.partial(install_triggers, settings)),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[preflight]),
            )
            self.preflights.append(preflight)
            self.installs.append(install)
            node_facts.append(facts)

        names = [node.name for node in settings.nodes]
        self.facts = pulumi.Output.all(*node_facts).apply(functools.partial(_facts_by_name, names))
        self.register_outputs({"facts": self.facts})


def _read_facts(node: Node, preflight: pulumi.Resource, stdout: str | None) -> dict[str, Any]:
    facts = parse_facts(node, stdout)
    for warning in facts.get("warnings", []):
        pulumi.log.warn(str(warning), resource=preflight)
    return facts


def _architecture(facts: Mapping[str, Any]) -> str:
    return str(facts["architecture"])


def _facts_by_name(names: Sequence[str], facts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return dict(zip(names, facts, strict=True))
