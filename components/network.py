"""CalicoNetwork: the upstream calico.yaml, transformed with the stack's settings and applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.manifest import LoadedManifest
from components.transform import TransformParams, transform_object


@dataclass
class CalicoNetworkArgs:
    """Inputs of CalicoNetwork."""

    manifest: LoadedManifest
    """The verified calico.yaml."""
    params: TransformParams
    """Pool, MTU and encapsulation settings the transformations write into the manifest."""
    wait_for: Sequence[pulumi.Resource]
    """Resources every Calico object waits for: the node preflights."""


class CalicoNetwork(pulumi.ComponentResource):
    """The Calico objects of the manifest install, registered through ConfigFile."""

    resources: pulumi.Output[list[pulumi.Resource]]
    """Every Kubernetes object of the manifest, for depends_on."""

    def __init__(self, name: str, args: CalicoNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("calico:network:CalicoNetwork", name, None, opts)
        wait_for = list(args.wait_for)
        params = args.params

        def transform(obj: dict[str, Any], resource_opts: pulumi.ResourceOptions) -> None:
            # ConfigFile hands each object to this hook before it registers it, and expects the
            # change in place, so the pure transformation's result replaces the object's content.
            transformed, notes = transform_object(obj, params)
            obj.clear()
            obj.update(transformed)
            for note in notes:
                pulumi.log.warn(note, resource=self)
            # ConfigFile gives its children only `parent`, so the ordering is set per object:
            # nothing reaches the cluster before every node passed its preflight.
            if wait_for:
                resource_opts.depends_on = wait_for

        config_file = k8s.yaml.ConfigFile(
            f"{name}-manifest",
            file=str(args.manifest.path),
            transformations=[transform],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.resources = config_file.resources.apply(lambda found: list(found.values()))
        self.register_outputs({"manifestSha256": args.manifest.sha256})
