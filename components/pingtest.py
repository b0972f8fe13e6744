"""The pingtest: busybox pods spread one per node, the targets of the network check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.settings import Pingtest
from components.transform import SETTINGS_HASH_ANNOTATION

PINGTEST_NAME = "pingtest"
PINGTEST_NAMESPACE = "default"
PINGTEST_LABELS = {"app": "pingtest"}


def pingtest_deployment(pingtest: Pingtest, settings_hash: str) -> dict[str, Any]:
    """Build the pingtest Deployment as a Kubernetes object.

    The settings hash also goes into the pod template, so pods are recreated when the pod MTU or the
    pool changes: an existing pod keeps the MTU its interface was created with.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": PINGTEST_NAME, "namespace": PINGTEST_NAMESPACE, "labels": dict(PINGTEST_LABELS)},
        "spec": {
            "replicas": pingtest.replicas,
            "selector": {"matchLabels": dict(PINGTEST_LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(PINGTEST_LABELS),
                    "annotations": {SETTINGS_HASH_ANNOTATION: settings_hash},
                },
                "spec": {
                    # One pod per node: the check needs pods on different nodes to test the overlay.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "DoNotSchedule",
                            "labelSelector": {"matchLabels": dict(PINGTEST_LABELS)},
                        }
                    ],
                    # kubeadm taints the control-plane node; small clusters need it to host a pod too.
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # `sleep` as PID 1 ignores SIGTERM; without this each rollout waits 30 s per pod.
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "busybox",
                            "image": pingtest.image,
                            "command": ["sleep", "infinity"],
                            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                        }
                    ],
                },
            },
        },
    }


@dataclass
class PingTestArgs:
    """Inputs of PingTest."""

    pingtest: Pingtest
    """The calico:pingtest settings."""
    settings_hash: str
    """Hash of the network settings, put into the pod template."""
    calico: pulumi.Input[Sequence[pulumi.Resource]]
    """The Calico objects; the pods need a working CNI, so they are created after these."""


class PingTest(pulumi.ComponentResource):
    """The pingtest Deployment."""

    deployment: k8s.apps.v1.Deployment

    def __init__(self, name: str, args: PingTestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("calico:pingtest:PingTest", name, None, opts)
        manifest = pingtest_deployment(args.pingtest, args.settings_hash)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.calico),
        )
        self.register_outputs({"deployment": self.deployment.metadata["name"]})
