"""The Pulumi program: validate the stack config, then register the nodes, Calico and the pingtest."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from components.manifest import ManifestDownloadError, load_checked_manifest
from components.netcheck import NetworkCheck, NetworkCheckArgs
from components.network import CalicoNetwork, CalicoNetworkArgs
from components.nodes import NodeSetup, NodeSetupArgs
from components.pingtest import PingTest, PingTestArgs
from components.settings import KEY_PREFIX, ConfigError, Settings, parse_settings
from components.stackconfig import apply_defaults, load_schema
from components.transform import TransformParams, settings_hash

# Stack output names; tests import them.
OUTPUT_VERSION = "calicoVersion"
OUTPUT_POD_CIDR = "podCidr"
OUTPUT_BLOCK_SIZE = "blockSize"
OUTPUT_ENCAPSULATION = "encapsulation"
OUTPUT_POD_MTU = "podMtu"
OUTPUT_MANIFEST_SHA256 = "manifestSha256"
OUTPUT_NODE_NAMES = "nodeNames"
OUTPUT_PINGTEST = "pingtestDeployment"
OUTPUT_NODE_FACTS = "nodeFacts"
OUTPUT_NETWORK_CHECK = "networkCheck"


def _config_keys_set() -> set[str]:
    """Return every `calico:` key of the stack, declared or not, so misspelled keys are reported."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return {key.removeprefix(KEY_PREFIX) for key in keys if key.startswith(KEY_PREFIX)}


def read_config() -> tuple[dict[str, Any], set[str], list[str]]:
    """Read every calico: key with its typed getter.

    Returns the values with Pulumi.yaml's defaults applied, the keys stored as secrets, and the
    problems the typed getters found (a non-integer for an integer key, say).
    """
    schema = load_schema()
    config = pulumi.Config("calico")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, declaration in schema.items():
        if key == "sshPrivateKey":
            # Only whether it is set and stored encrypted matters here; the value is read as a secret later.
            raw = runtime_config.get_config(f"{KEY_PREFIX}{key}")
            if raw:
                values[key] = "[secret]"
            continue
        try:
            if declaration.type == "integer":
                value: Any = config.get_int(key)
            elif declaration.type == "boolean":
                value = config.get_bool(key)
            elif declaration.type == "string":
                value = config.get(key)
            else:
                value = config.get_object(key)
        except (pulumi.ConfigTypeError, ValueError) as error:
            problems.append(f"{KEY_PREFIX}{key}: {error} Fix: pulumi config set {KEY_PREFIX}{key} <value>")
            continue
        if value is not None:
            values[key] = value
    for key in _config_keys_set() - set(schema):
        values[key] = runtime_config.get_config(f"{KEY_PREFIX}{key}")
    secret_keys = {key for key in schema if runtime_config.is_config_secret(f"{KEY_PREFIX}{key}")}
    return apply_defaults(schema, values), secret_keys, problems


def load_settings() -> Settings:
    """Return the validated settings, or raise ConfigError listing every problem."""
    values, secret_keys, problems = read_config()
    try:
        settings = parse_settings(values, declared_keys=load_schema(), secret_keys=secret_keys)
    except ConfigError as error:
        raise ConfigError(problems + error.problems) from error
    if problems:
        raise ConfigError(problems)
    return settings


def run() -> None:
    """Validate everything, then register every resource; a bad setting registers nothing."""
    try:
        settings = load_settings()
        manifest, _ = load_checked_manifest(settings.manifest, settings.version)
    except (ConfigError, ManifestDownloadError) as error:
        raise pulumi.RunError(str(error)) from error

    ssh_key = pulumi.Config("calico").require_secret("sshPrivateKey") if settings.ssh_private_key_set else None
    # docs/nodes.md names the per-node commands after this component: nodes-<node>-preflight.
    nodes = NodeSetup("nodes", NodeSetupArgs(settings=settings, ssh_private_key=ssh_key))

    # No Calico object reaches the cluster before every node has passed its preflight.
    params = TransformParams.from_settings(settings)
    calico = CalicoNetwork("calico", CalicoNetworkArgs(manifest=manifest, params=params, wait_for=nodes.preflights))

    pingtest_name: pulumi.Output[str] | None = None
    network_check: pulumi.Output[str] | str = "not run: calico:pingtest.enabled is false"
    if settings.pingtest.enabled:
        pingtest = PingTest(
            "pingtest",
            PingTestArgs(pingtest=settings.pingtest, settings_hash=settings_hash(params), calico=calico.resources),
        )
        pingtest_name = pingtest.deployment.metadata.name
        # The check waits on the Job from calico:nodes[0], which must be a control-plane node.
        first_node = settings.nodes[0].name
        check = NetworkCheck(
            "netcheck",
            NetworkCheckArgs(
                settings=settings,
                pingtest=pingtest.deployment,
                calico=calico.resources,
                ssh_private_key=ssh_key,
                node_facts=nodes.facts.apply(lambda facts: facts[first_node]),
            ),
        )
        network_check = check.summary

    pulumi.export(OUTPUT_VERSION, settings.version)
    pulumi.export(OUTPUT_POD_CIDR, str(settings.pod_cidr))
    pulumi.export(OUTPUT_BLOCK_SIZE, settings.block_size)
    pulumi.export(OUTPUT_ENCAPSULATION, settings.encapsulation)
    pulumi.export(OUTPUT_POD_MTU, settings.mtu)
    pulumi.export(OUTPUT_MANIFEST_SHA256, manifest.sha256)
    pulumi.export(OUTPUT_NODE_NAMES, [node.name for node in settings.nodes])
    pulumi.export(OUTPUT_PINGTEST, pingtest_name)
    pulumi.export(OUTPUT_NODE_FACTS, nodes.facts)
    pulumi.export(OUTPUT_NETWORK_CHECK, network_check)
