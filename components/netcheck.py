"""The network check: a Kubernetes Job that tests pod networking, awaited over SSH on a control-plane node.

The Job runs components/scripts/netcheck.sh in the check image. Its name carries a hash of the settings it
tests. A change to the Calico version, a manifest setting (pod CIDR, encapsulation, MTU, block size, IP
autodetection), the node names or the pingtest settings therefore registers a new Job, which replaces the old one.
The Job is not awaited by Pulumi: a remote Command on calico:nodes[0] waits for it with kubectl (bounded),
prints its report and exits non-zero when a scenario failed. pulumi-command puts a failed command's output
into the error, so the failing scenarios reach the user, and a passing run's summary line becomes the
`summary` output. docs/network-check.md explains why Pulumi's own Job await is not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components.nodes import connection_args
from components.pingtest import PINGTEST_LABELS, PINGTEST_NAME, PINGTEST_NAMESPACE
from components.settings import Node, Settings
from components.transform import TransformParams, settings_hash

SCRIPT_PATH = Path(__file__).parent / "scripts" / "netcheck.sh"
NAMESPACE = PINGTEST_NAMESPACE
CHECK_NAME = "netcheck"
PINGTEST_SERVICE = PINGTEST_NAME
PINGTEST_SELECTOR = PINGTEST_LABELS
SCRIPT_MOUNT = "/opt/netcheck"
CHECK_LABELS = {"app": "netcheck"}
SETTINGS_ANNOTATION = "calico-pulumi/netcheck-settings"
KUBECONFIG = "/etc/kubernetes/admin.conf"

# Seconds to wait for each ping, DNS or TCP reply, and attempts while there is no reply at all.
REPLY_TIMEOUT_SECONDS = 2
ATTEMPTS = 3
# How long the check waits for the pingtest pods to run after a rollout.
DISCOVERY_TIMEOUT_SECONDS = 120
# Time the Job allows for pulling the check image (netshoot, about 200 MB), which can take minutes on a
# Raspberry Pi. NOTE: an estimate, not measured on a cluster. Raise it for slow registries.
IMAGE_PULL_SECONDS = 480
# Slack in the script's budget for its own work between probes (listing pods, reading files, starting tools).
SCRIPT_SLACK_SECONDS = 30
# The command on the node waits this much longer than the Job may live, so it reads the Job's own result.
AWAIT_MARGIN_SECONDS = 60

SUMMARY_PREFIX = "summary: "


class NetworkCheckError(Exception):
    """The network check cannot run with these settings or nodes."""


def read_script() -> str:
    """Return the text of netcheck.sh."""
    return SCRIPT_PATH.read_text(encoding="utf-8")


def _short_hash(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


def checked_settings(settings: Settings) -> dict[str, Any]:
    """Return the settings the check depends on. A change to any of them runs the check again.

    Every manifest setting (the transform hash covers the block size and IP autodetection too) and the
    node list roll calico-node or the pingtest pods, so each of them needs a fresh check.
    """
    pingtest = settings.pingtest
    return {
        "version": settings.version,
        "podCidr": str(settings.pod_cidr),
        "encapsulation": settings.encapsulation,
        "mtu": settings.mtu,
        "manifest": settings_hash(TransformParams.from_settings(settings)),
        "nodes": [node.name for node in settings.nodes],
        "pingtest": {
            "enabled": pingtest.enabled,
            "replicas": pingtest.replicas,
            "image": pingtest.image,
            "checkImage": pingtest.check_image,
        },
    }


def script_budget_seconds(replicas: int) -> int:
    """Return the longest the script may run: discovery, then every probe going unanswered.

    The script stops probing when the budget is spent and reports the rest as not probed, so the Job
    always ends with a summary. Each pingtest pod costs at most a retried ping, a retried don't-fragment
    ping and one single-attempt ping; DNS and the Service cost one retried probe each.
    """
    probe = ATTEMPTS * REPLY_TIMEOUT_SECONDS
    per_pod = 2 * probe + REPLY_TIMEOUT_SECONDS
    return DISCOVERY_TIMEOUT_SECONDS + replicas * per_pod + 2 * probe + SCRIPT_SLACK_SECONDS


def job_deadline_seconds(replicas: int) -> int:
    """Return the Job's activeDeadlineSeconds: the image pull and the script's whole budget."""
    return IMAGE_PULL_SECONDS + script_budget_seconds(replicas)


def await_timeout_seconds(replicas: int) -> int:
    """Return how long the command on the node waits for the Job, longer than the Job may live."""
    return job_deadline_seconds(replicas) + AWAIT_MARGIN_SECONDS


@dataclass(frozen=True)
class NetworkCheckObjects:
    """The Kubernetes objects of the check, as plain dictionaries."""

    service_account: dict[str, Any]
    role: dict[str, Any]
    role_binding: dict[str, Any]
    pingtest_service: dict[str, Any]
    """Headless Service of the pingtest pods: `pingtest.default.svc` resolves to every pod's IP."""
    script: dict[str, Any]
    """ConfigMap holding netcheck.sh."""
    job: dict[str, Any]

    @property
    def job_name(self) -> str:
        return str(self.job["metadata"]["name"])


def _metadata(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": dict(CHECK_LABELS), **extra}


def _job_spec(settings: Settings, config_map_name: str) -> dict[str, Any]:
    container_args = [
        "bash",
        f"{SCRIPT_MOUNT}/netcheck.sh",
        "cluster",
        "--namespace", NAMESPACE,
        "--selector", ",".join(f"{key}={value}" for key, value in PINGTEST_SELECTOR.items()),
        "--expect-pods", str(settings.pingtest.replicas),
        # With more than one node, pingtest pods on a single node fail the other-node scenarios, not skip them.
        "--expect-nodes", str(len(settings.nodes)),
        "--discovery-timeout", str(DISCOVERY_TIMEOUT_SECONDS),
        "--pool", str(settings.pod_cidr),
        "--mtu", str(settings.mtu),
        "--timeout", str(REPLY_TIMEOUT_SECONDS),
        "--attempts", str(ATTEMPTS),
        "--deadline", str(script_budget_seconds(settings.pingtest.replicas)),
    ]  # fmt: skip

    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return {
        # One run per settings change: a failed check is a result, not a transient error to retry.
        "backoffLimit": 0,
        "activeDeadlineSeconds": job_deadline_seconds(settings.pingtest.replicas),
        "template": {
            "metadata": {"labels": dict(CHECK_LABELS)},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": CHECK_NAME,
                # Prefer a node that runs a pingtest pod, so the same-node scenario has a target.
                "affinity": {
                    "podAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "labelSelector": {"matchLabels": dict(PINGTEST_SELECTOR)},
                                    "topologyKey": "kubernetes.io/hostname",
                                },
                            }
                        ]
                    }
                },
                "tolerations": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "securityContext": {
                    # Lets ping open an ICMP datagram socket without CAP_NET_RAW, which some runtimes drop.
                    # Pod Security's baseline level allows this sysctl.
                    "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}],
                },
                "containers": [
                    {
                        "name": "netcheck",
                        "image": settings.pingtest.check_image,
                        "command": container_args,
                        "env": [
                            field_env("NETCHECK_POD_NAME", "metadata.name"),
                            field_env("NETCHECK_NODE_NAME", "spec.nodeName"),
                            field_env("NETCHECK_POD_IP", "status.podIP"),
                        ],
                        # `kubectl describe pod` then shows the report's end even after the log is gone.
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": [{"name": "script", "mountPath": SCRIPT_MOUNT, "readOnly": True}],
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                    }
                ],
                "volumes": [{"name": "script", "configMap": {"name": config_map_name, "defaultMode": 0o555}}],
            },
        },
    }


def build_objects(settings: Settings, script: str) -> NetworkCheckObjects:
    """Build the check's Kubernetes objects for `settings`, with `script` as netcheck.sh."""
    config_map_name = f"{CHECK_NAME}-script-{_short_hash(script)}"
    job_spec = _job_spec(settings, config_map_name)
    checked = checked_settings(settings)
    # The spec contains the script's hash, and the settings add the version, which the spec lacks.
    job_name = f"{CHECK_NAME}-{_short_hash({'settings': checked, 'spec': job_spec})}"
    settings_text = (
        f"version={settings.version} podCidr={settings.pod_cidr} encapsulation={settings.encapsulation} "
        f"mtu={settings.mtu} replicas={settings.pingtest.replicas} checkImage={settings.pingtest.check_image}"
    )
    return NetworkCheckObjects(
        service_account={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(CHECK_NAME)},
        role={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(CHECK_NAME),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        role_binding={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(CHECK_NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CHECK_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": CHECK_NAME, "namespace": NAMESPACE}],
        },
        pingtest_service={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": PINGTEST_SERVICE, "namespace": NAMESPACE, "labels": dict(PINGTEST_SELECTOR)},
            "spec": {"clusterIP": "None", "selector": dict(PINGTEST_SELECTOR)},
        },
        script={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(config_map_name),
            "data": {"netcheck.sh": script},
        },
        job={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(
                job_name,
                annotations={
                    # The command on calico:nodes[0] does the bounded wait and reports (see the module docstring).
                    "pulumi.com/skipAwait": "true",
                    SETTINGS_ANNOTATION: settings_text,
                },
            ),
            "spec": job_spec,
        },
    )


def await_command(job_name: str, timeout: int) -> str:
    """Return the shell command run on the control-plane node. netcheck.sh arrives on its stdin.

    The script goes to a temporary file first, so no command it runs can read the rest of it from stdin.
    A non-root SSH user runs it with sudo, since admin.conf is readable by root only.
    """
    arguments = shlex.join(
        [
            "await",
            "--namespace", NAMESPACE,
            "--job", job_name,
            "--timeout", str(timeout),
            "--kubeconfig", KUBECONFIG,
        ]
    )  # fmt: skip
    return (
        'script=$(mktemp) && trap \'rm -f "$script"\' EXIT && cat >"$script" && '
        f'if [ "$(id -u)" -eq 0 ]; then bash "$script" {arguments}; '
        f'else sudo -n bash "$script" {arguments}; fi'
    )


def require_control_plane(node: Node, facts: Mapping[str, Any]) -> None:
    """Raise NetworkCheckError unless the preflight facts show kubectl and admin.conf on `node`."""
    missing = []
    if not facts.get("kubectl"):
        missing.append("kubectl")
    if not facts.get("adminConf"):
        missing.append(KUBECONFIG)
    if missing:
        raise NetworkCheckError(
            f"calico:nodes[0] ({node.name}, {node.host}) lacks {' and '.join(missing)}, so it cannot await the "
            "network check. Fix: list a control-plane node (one kubeadm init ran on) first in calico:nodes."
        )


def _checked_await_command(node: Node, job_name: str, timeout: int, facts: Mapping[str, Any]) -> str:
    require_control_plane(node, facts)
    return await_command(job_name, timeout)


def summary_line(report: str | None) -> str:
    """Return the report's summary line without its prefix, or a note that the report has none."""
    lines = [line for line in (report or "").splitlines() if line.startswith(SUMMARY_PREFIX)]
    if not lines:
        return "the network check printed no summary line"
    return lines[-1].removeprefix(SUMMARY_PREFIX)


@dataclass
class NetworkCheckArgs:
    """Inputs of NetworkCheck."""

    settings: Settings
    pingtest: pulumi.Resource
    """The pingtest Deployment, which the check runs after."""
    calico: pulumi.Input[Sequence[pulumi.Resource]]
    """The Calico objects the check waits for."""
    ssh_private_key: pulumi.Input[str] | None
    """Private key for calico:nodes[0], or None to use the SSH agent."""
    node_facts: pulumi.Input[Mapping[str, Any]] | None = None
    """Preflight facts of calico:nodes[0]. When given, a node without kubectl or admin.conf fails early."""


class NetworkCheck(pulumi.ComponentResource):
    """The network check Job, the objects it needs, and the command that awaits its report."""

    summary: pulumi.Output[str]
    """The passing summary line, for example "11 passed, 0 failed, 1 skipped; the network check passed"."""
    job_name: str | None
    """Name of the check Job, or None when the pingtest is disabled."""

    def __init__(self, name: str, args: NetworkCheckArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("calico:netcheck:NetworkCheck", name, None, opts)
        settings = args.settings
        if not settings.pingtest.enabled:
            self.job_name = None
            self.summary = pulumi.Output.from_input("not run: calico:pingtest.enabled is false")
            self.register_outputs({"summary": self.summary})
            return

        objects = build_objects(settings, read_script())
        self.job_name = objects.job_name
        child = pulumi.ResourceOptions(parent=self)

        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-serviceaccount", metadata=objects.service_account["metadata"], opts=child
        )
        role = k8s.rbac.v1.Role(
            f"{name}-role", metadata=objects.role["metadata"], rules=objects.role["rules"], opts=child
        )
        role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-rolebinding",
            metadata=objects.role_binding["metadata"],
            role_ref=objects.role_binding["roleRef"],
            subjects=objects.role_binding["subjects"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, role]),
        )
        k8s.core.v1.Service(
            f"{name}-pingtest-service",
            metadata=objects.pingtest_service["metadata"],
            spec=objects.pingtest_service["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.pingtest]),
        )
        script = k8s.core.v1.ConfigMap(
            f"{name}-script", metadata=objects.script["metadata"], data=objects.script["data"], opts=child
        )

        job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=objects.job["metadata"],
            spec=objects.job["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                # The name is fixed, so a forced replacement (pulumi up --target-replace) must delete first.
                delete_before_replace=True,
                depends_on=pulumi.Output.from_input(args.calico).apply(
                    lambda calico: [*calico, args.pingtest, role_binding, script]
                ),
            ),
        )

        node = settings.nodes[0]
        timeout = await_timeout_seconds(settings.pingtest.replicas)
        create: pulumi.Input[str] = await_command(objects.job_name, timeout)
        if args.node_facts is not None:
            create = pulumi.Output.from_input(args.node_facts).apply(
                functools.partial(_checked_await_command, node, objects.job_name, timeout)
            )
        private_key = None if args.ssh_private_key is None else pulumi.Output.secret(args.ssh_private_key)
        await_job = command.remote.Command(
            f"{name}-await",
            connection=connection_args(node, private_key),
            create=create,
            stdin=read_script(),
            # A new Job means new settings, so the command must run again even if its text were unchanged.
            triggers=[objects.job_name],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )
        self.summary = await_job.stdout.apply(summary_line)
        self.register_outputs({"summary": self.summary, "job": objects.job_name})
